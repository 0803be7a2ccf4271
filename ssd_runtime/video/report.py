"""A stream run's report as text: the progress line while it runs and the summary at its end."""
from __future__ import annotations

__all__ = ["format_progress", "format_stream_report"]


def format_progress(report: dict) -> str:
    """One line: frames in / processed / dropped, throughput and the latency p50 so far."""
    latency = report["latency"]["p50_ms"]
    return (f"{report['source']}: {report['frames_in']} frames in, {report['processed']} processed, "
            f"{report['dropped']} dropped, {report['throughput_fps'] or 0:.1f} fps"
            + (f", latency p50 {latency:.0f} ms" if latency is not None else ""))


def format_stream_report(report: dict) -> str:
    """The end-of-run summary: counts, throughput, why it ended, per-stage times and latency percentiles."""
    lines = [
        f"{report['source']} ({report['kind']}, {report['policy']}): ended by {report['ended_by']}"
        + (f" ({report['error']})" if report.get("error") else ""),
        f"frames: {report['frames_in']} in, {report['skipped']} skipped (every {report['every']}), "
        f"{report['dropped']} dropped, {report['processed']} processed in {report['seconds']:.2f} s: "
        f"{report['throughput_fps'] or 0:.2f} frames/s ({report['backend']}, batch {report['batch_size']})",
        f"{'stage':<12}{'mean ms':>9}{'p50':>9}{'p90':>9}{'p99':>9}",
    ]
    for name, row in [*report["stages"].items(), ("latency", report["latency"])]:
        if row["count"]:
            lines.append(f"{name:<12}" + "".join(f"{row[key]:>9.1f}" for key in ("mean_ms", "p50_ms", "p90_ms", "p99_ms")))
    for key in ("video_out", "jsonl_out"):
        if report.get(key):
            lines.append(f"{key.replace('_', ' ')}: {report[key]}")
    if report.get("reconnects"):
        lines.append(f"reconnects: {report['reconnects']}")
    return "\n".join(lines)
