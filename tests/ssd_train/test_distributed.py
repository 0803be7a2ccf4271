"""GlobalBatchSampler: the same epoch order as EpochSampler, split across processes without changing it."""
import itertools

import numpy as np

from ssd_train.data import EpochSampler, epoch_order
from ssd_train.distributed import GlobalBatchSampler


def take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def test_global_batches_follow_the_epoch_order_of_epoch_sampler():
    num_items, batch, seed = 23, 4, 11
    sampler = GlobalBatchSampler(num_items, batch, seed=seed)
    used = sampler.batches_per_epoch * batch  # the incomplete last batch of an epoch is dropped
    keys = take(sampler, 3 * used)
    expected = [key for epoch in range(3) for key in list(EpochSampler(num_items, seed=seed, epoch=epoch))[:used]]
    assert keys == expected
    assert [i for _, i in keys[:used]] == epoch_order(num_items, seed, 0)[:used].tolist()
    assert sorted(epoch_order(num_items, seed, 1).tolist()) == list(range(num_items))
    assert not np.array_equal(epoch_order(num_items, seed, 0), epoch_order(num_items, seed + 1, 0))


def test_processes_share_each_global_batch_and_resume_mid_epoch():
    num_items, batch, seed = 20, 4, 2
    whole = take(GlobalBatchSampler(num_items, batch, seed=seed), 40)
    ranks = [take(GlobalBatchSampler(num_items, batch, seed=seed, rank=r, world=2), 20) for r in range(2)]
    merged = [key for b in range(10) for r in range(2) for key in ranks[r][2 * b : 2 * b + 2]]
    assert merged == whole
    resumed = GlobalBatchSampler(num_items, batch, seed=seed)
    resumed.start_iteration = 7  # epoch 1, batch 2
    assert take(resumed, 12) == whole[7 * batch : 10 * batch]
