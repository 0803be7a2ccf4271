"""Precision-recall plots of a VOC evaluation (matplotlib, imported lazily)."""
from __future__ import annotations

from pathlib import Path


def plot_precision_recall(result, path: str | Path) -> Path:
    """One PR curve per class of a :class:`ssd_runtime.metric.VOCResult`, written to ``path`` (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the precision-recall plot needs matplotlib: pip install 'ssd300-toolkit[plot]'") from exc
    fig, ax = plt.subplots(figsize=(7, 6))
    for c in result.classes:
        if len(c.recall):
            ax.plot(c.recall, c.precision, label=f"{c.name} ({c.ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"VOC {result.ap_method} mAP {result.map:.4f}")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
