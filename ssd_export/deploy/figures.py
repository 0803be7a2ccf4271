"""The deploy report's figures (matplotlib, imported lazily; PNG files under ``DIR/figures/``).

- ``pr_curves.png``: one panel per class, the precision-recall curve of every evaluated artifact
  overlaid (from the curves each evaluation saved, thinned to at most a few hundred points);
- ``latency.png``: one panel per batch size, the median milliseconds of each stage (preprocess,
  inference, postprocess) stacked per artifact;
- ``detections.png``: the drawn detections of the same test images, one column per artifact.

Each function reads the report dict only (data first) and returns the path relative to ``DIR``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["write_figures"]

STAGE_COLORS = {"preprocess": "#4c78a8", "inference": "#f58518", "postprocess": "#54a24b"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the report's figures need matplotlib: pip install 'ssd300-toolkit[plot]'") from exc
    return plt


def _save(fig: Any, out: Path, name: str) -> str:
    from ssd_runtime.fileio import atomic_path

    path = out / "figures" / name
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return str(path.relative_to(out))


def pr_curves(out: Path, report: dict[str, Any]) -> str | None:
    """Precision-recall curves per class, every evaluated artifact overlaid."""
    evaluated = [(r["name"], json.loads(Path(r["evaluation"]["curves"]).read_text())) for r in report["artifacts"]
                 if r["evaluation"]]
    if not evaluated:
        return None
    plt = _pyplot()
    classes = list(evaluated[0][1]["curves"])
    cols = min(4, len(classes))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, classes):
        for i, (artifact, data) in enumerate(evaluated):
            curve = data["curves"].get(name) or {}
            ap = data["ap"].get(name)
            if curve.get("recall"):
                # later artifacts dashed: identical curves stay visible on top of each other
                ax.plot(curve["recall"], curve["precision"], linewidth=1.2, linestyle="-" if i == 0 else "--",
                        label=f"{artifact} ({ap:.3f})" if ap is not None else artifact)
        ax.set(title=name, xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        if ax.lines:
            ax.legend(fontsize=6, loc="lower left")
        else:
            ax.text(0.5, 0.5, "no detections", ha="center", va="center", fontsize=8)
    for ax in list(axes.flat)[len(classes):]:
        ax.axis("off")
    fig.suptitle("Precision-recall per class (AP in the legend)")
    fig.tight_layout()
    try:
        return _save(fig, out, "pr_curves.png")
    finally:
        plt.close(fig)


def latency(out: Path, report: dict[str, Any]) -> str | None:
    """Median latency per stage, stacked per artifact, one panel per batch size."""
    timed = [r for r in report["artifacts"] if r["bench"]]
    if not timed:
        return None
    plt = _pyplot()
    batches = sorted({e["batch_size"] for r in timed for e in r["bench"]["results"]})
    fig, axes = plt.subplots(1, len(batches), figsize=(1.2 + 1.1 * len(timed) * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes.flat, batches):
        names = [r["name"] for r in timed]
        bottom = [0.0] * len(timed)
        for stage, color in STAGE_COLORS.items():
            values = [next((e["stages"][stage]["p50_ms"] for e in r["bench"]["results"] if e["batch_size"] == batch), 0.0)
                      for r in timed]
            ax.bar(names, values, bottom=bottom, color=color, label=stage)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set(title=f"batch {batch}", ylabel="ms per batch (median)")
        ax.tick_params(axis="x", rotation=45)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    try:
        return _save(fig, out, "latency.png")
    finally:
        plt.close(fig)


def detections(out: Path, report: dict[str, Any]) -> str | None:
    """The drawn test images side by side: rows are images, columns artifacts."""
    from PIL import Image

    drawn = [r for r in report["artifacts"] if r["drawings"]]
    if not drawn:
        return None
    plt = _pyplot()
    count = max(len(r["drawings"]["images"]) for r in drawn)
    fig, axes = plt.subplots(count, len(drawn), figsize=(2.8 * len(drawn), 2.4 * count), squeeze=False)
    for col, r in enumerate(drawn):
        for row in range(count):
            ax = axes[row][col]
            ax.axis("off")
            if row < len(r["drawings"]["images"]):
                with Image.open(r["drawings"]["images"][row]) as image:
                    ax.imshow(image.convert("RGB"))
                if row == 0:
                    ax.set_title(r["name"], fontsize=9)
    fig.tight_layout()
    try:
        return _save(fig, out, "detections.png")
    finally:
        plt.close(fig)


def write_figures(out: Path, report: dict[str, Any]) -> dict[str, str | None]:
    """All three figures; paths relative to ``out`` (None where nothing was evaluated, timed or drawn)."""
    return {"pr_curves": pr_curves(out, report), "latency": latency(out, report), "detections": detections(out, report)}
