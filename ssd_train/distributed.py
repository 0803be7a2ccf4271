"""Data-parallel training under torchrun: the process group and each process's share of a global batch."""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from torch.utils.data import Sampler

from ssd_train.data import epoch_order


@dataclass
class DistInfo:
    """This process's place in the run: ``rank`` of ``world`` processes, on GPU ``local_rank``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, evaluates and writes checkpoints."""
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (RANK/WORLD_SIZE set)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return DistInfo()
    import torch.distributed as dist

    backend = "nccl" if device == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


class GlobalBatchSampler(Sampler):
    """Yields ``(epoch, index)`` keys of one process's share of each global batch, from an iteration on.

    The order of an epoch is :func:`ssd_train.data.epoch_order` of (seed, epoch); global batch b of the
    epoch is order[b*G:(b+1)*G] (G = the global batch, incomplete batches dropped), and process ``rank`` of
    ``world`` takes its slice. One process and W processes therefore see the same global batches.
    """

    def __init__(self, num_items: int, global_batch: int, *, seed: int, rank: int = 0, world: int = 1) -> None:
        if num_items < global_batch:
            raise ValueError(f"the training set has {num_items} images, fewer than one batch of {global_batch}")
        self.num_items, self.global_batch, self.seed = num_items, global_batch, seed
        self.rank, self.world = rank, world
        self.per_rank = global_batch // world
        self.batches_per_epoch = num_items // global_batch
        self.start_iteration = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        iteration = self.start_iteration
        while True:
            epoch, batch = divmod(iteration, self.batches_per_epoch)
            order = epoch_order(self.num_items, self.seed, epoch)
            for b in range(batch, self.batches_per_epoch):
                chunk = order[b * self.global_batch : (b + 1) * self.global_batch]
                for index in chunk[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]:
                    yield (epoch, int(index))
            iteration = (epoch + 1) * self.batches_per_epoch
