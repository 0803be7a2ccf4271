"""What a training run reports while it runs: metrics.csv, TensorBoard, a progress bar, windowed losses.

:class:`LossMeter` keeps the loss sums of a log window and the first non-finite iteration on the training
device, so a step needs no host synchronisation; :class:`RunLog` writes the rows it makes.
"""
from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import torch

LOSS_PARTS = ("loss", "loc", "conf")


def stderr_note(text: str) -> None:
    """Print one line of a run's notes on stderr (stdout stays free for the ``--json`` summary)."""
    print(text, file=sys.stderr, flush=True)


class LossMeter:
    """Loss sums and images of the current log window, and the first non-finite step, on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(LOSS_PARTS), device=device)
        self.steps = 0
        self.images = 0
        self.window_start = time.perf_counter()
        self.bad_iteration = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_values = torch.zeros(len(LOSS_PARTS), device=device)

    def add(self, values: torch.Tensor, iteration: int, images: int) -> None:
        """Count one step: ``values`` (3,) float32 (total, loc, conf) of the step that made ``iteration`` (1-based)."""
        first_bad = (self.bad_iteration < 0) & ~torch.isfinite(values).all()
        self.bad_iteration = torch.where(first_bad, iteration, self.bad_iteration)
        self.bad_values = torch.where(first_bad, values, self.bad_values)
        self.sums += values
        self.steps += 1
        self.images += images

    def first_bad(self) -> tuple[int, list[float]] | None:
        """The first iteration whose loss was not finite and its (total, loc, conf), or None (one host sync)."""
        iteration = int(self.bad_iteration)
        return None if iteration < 0 else (iteration, self.bad_values.tolist())

    def row(self, iteration: int, lr: float) -> dict[str, float]:
        """The window's mean losses, learning rate and throughput as a metrics row; starts a new window."""
        now = time.perf_counter()
        row = dict(zip(LOSS_PARTS, (self.sums / self.steps).tolist()))
        row.update(iteration=iteration, lr=lr, images_per_s=self.images / max(now - self.window_start, 1e-9))
        self.sums.zero_()
        self.window_start, self.images, self.steps = now, 0, 0
        return row


class RunLog:
    """metrics.csv (one row per log step or evaluation), TensorBoard when it is installed, a tqdm bar.

    ``enabled=False`` (processes other than rank 0) makes every method a no-op. ``append`` continues an
    existing metrics.csv (a resumed run).
    """

    COLUMNS = ("iteration", *LOSS_PARTS, "lr", "images_per_s", "map")

    def __init__(self, path: Path, *, enabled: bool, append: bool, progress: bool, total: int, initial: int) -> None:
        self.enabled = enabled
        self.tensorboard = None
        self.bar = None
        if not enabled:
            return
        append = append and path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a" if append else "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.COLUMNS)
        if not append:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:
            pass
        if progress:
            self.bar = _progress_bar(total, initial)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def log(self, row: dict[str, float]) -> None:
        """Write a row (``iteration`` and any of COLUMNS); loss rows also go to the bar's postfix."""
        if not self.enabled:
            return
        self.writer.writerow({k: row.get(k, "") for k in self.COLUMNS})
        self.file.flush()
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "iteration":
                    self.tensorboard.add_scalar(key, value, row["iteration"])
        if self.bar is not None and "loss" in row:
            self.bar.set_postfix(loss=f"{row['loss']:.3f}", loc=f"{row['loc']:.3f}", conf=f"{row['conf']:.3f}",
                                 lr=f"{row['lr']:.2g}", img_s=f"{row['images_per_s']:.1f}")

    def note(self, text: str) -> None:
        """A line for the user (:func:`stderr_note`), from the main process only."""
        if self.enabled:
            stderr_note(text)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _progress_bar(total: int, initial: int):
    """A tqdm bar over the run's iterations, or None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="train", unit="it", dynamic_ncols=True)
