"""Sharding an image list over processes: ``--shard i/N``, torchrun's ranks, and each shard's share.

A shard is one process's place among ``count`` processes. It comes from ``--shard i/N`` (processes
started by hand, on one machine or several) or from the variables torchrun sets for each process it
starts (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); the CLI reads the environment and passes it here.

Each shard takes a contiguous block of whole batches (:func:`shard_range`): every batch a shard runs
is a batch the single-process run runs too, so a backend whose arithmetic depends on the batch's
composition still gives bit-identical detections, and the merged mAP equals the single-process one.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

__all__ = [
    "Shard", "device_for", "parse_shard", "part_path", "part_paths", "resolve_shard", "shard_range", "wait_for_shards",
]

#: How long rank 0 waits at the end for the other ranks under torchrun. A rank whose share was already
#: written before a ``--resume`` finishes at once and waits for the others' whole run, hence hours, not
#: torch's 30-minute default; torchrun stops every rank when one fails, so nobody waits for a dead rank.
WAIT_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class Shard:
    """Process ``index`` of ``count``; ``torchrun``: started by torchrun (``local_rank`` = its GPU index)."""

    index: int = 0
    count: int = 1
    torchrun: bool = False
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= i < N (e.g. --shard 0/4 ... --shard 3/4)")

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def main(self) -> bool:
        """Shard 0: under torchrun, the process that merges the parts and reports the metric."""
        return self.index == 0

    @property
    def merges(self) -> bool:
        """This process merges every part (once they are written): the single process, or rank 0 under
        torchrun; a shard given by ``--shard i/N`` leaves the merge to a later command."""
        return not self.sharded or (self.torchrun and self.main)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"i/N"`` (0-based i) -> :class:`Shard`; anything else is a ValueError saying the form."""
    parts = text.split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/N with whole numbers, e.g. 0/2 and 1/2 for two processes") from None
    return Shard(index, count)


def resolve_shard(text: str | None, environ: Mapping[str, str]) -> Shard:
    """The shard of this process: ``--shard`` text, or torchrun's ``RANK``/``WORLD_SIZE`` in ``environ``.

    Both at once is an error (which one would hold?); neither is the single shard 0/1.
    """
    under_torchrun = "RANK" in environ and "WORLD_SIZE" in environ
    if text is not None:
        if under_torchrun and int(environ["WORLD_SIZE"]) > 1:
            raise ValueError(f"--shard {text} under torchrun (WORLD_SIZE={environ['WORLD_SIZE']}): torchrun "
                             "already gives each process its share; drop --shard")
        return parse_shard(text)
    if not under_torchrun:
        return Shard()
    return Shard(int(environ["RANK"]), int(environ["WORLD_SIZE"]), torchrun=True,
                 local_rank=int(environ.get("LOCAL_RANK", 0)))


def device_for(device: str, shard: Shard) -> str:
    """``cuda`` under torchrun -> ``cuda:<local rank>`` (one GPU per process); other devices as given."""
    if shard.torchrun and device == "cuda":
        return f"cuda:{shard.local_rank}"
    return device


def shard_range(num_items: int, batch_size: int, shard: Shard) -> range:
    """Indices of ``shard``'s share of ``num_items``: a contiguous block of whole batches of ``batch_size``.

    Batch b of the whole list is ``[b * batch_size, (b + 1) * batch_size)``; shard i of N takes
    batches ``[i * B // N, (i + 1) * B // N)`` of the B batches (shares differ by at most one batch).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batches = -(-num_items // batch_size)
    first = shard.index * batches // shard.count * batch_size
    last = (shard.index + 1) * batches // shard.count * batch_size
    return range(min(first, num_items), min(last, num_items))


def part_path(path: str | os.PathLike, shard: Shard) -> Path:
    """The part file of ``shard`` for the output ``path``: ``dets.jsonl`` -> ``dets.part1of4.jsonl``.

    The single shard 0/1 writes ``path`` itself.
    """
    path = Path(path)
    if not shard.sharded:
        return path
    return path.with_name(f"{path.stem}.part{shard.index}of{shard.count}{path.suffix}")


def part_paths(path: str | os.PathLike, count: int) -> list[Path]:
    """Every shard's part of the output ``path`` for ``count`` shards, in shard order (``path`` itself for one)."""
    return [part_path(path, Shard(i, count)) for i in range(count)]


def wait_for_shards(shard: Shard) -> None:
    """Under torchrun with several processes: return once every process has reached this call.

    A gloo barrier (CPU, whatever the backends' devices); torch is imported here only, as torchrun
    is torch's own launcher. Without torchrun (``--shard`` by hand) there is nobody to wait for.
    """
    if not (shard.torchrun and shard.sharded):
        return
    import torch.distributed as dist

    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("gloo", timeout=WAIT_TIMEOUT)
    dist.barrier()
    if owned:
        dist.destroy_process_group()
