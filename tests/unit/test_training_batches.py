"""Batch order and noise seeds: deterministic, resumable, the same over any process count."""

from __future__ import annotations

import pytest
import torch

from proseco.training.batches import BatchOrder, batch_plan, eval_seed, micro_seed


def test_batch_order_covers_each_epoch_once_and_is_deterministic():
    order = BatchOrder(10, global_batch_size=5, micro_batch_size=5, seed=3)
    epoch0 = torch.cat([order.indices(0, 0), order.indices(1, 0)])
    assert sorted(epoch0.tolist()) == list(range(10))
    again = BatchOrder(10, global_batch_size=5, micro_batch_size=5, seed=3)
    assert torch.equal(again.indices(7, 0), order.indices(7, 0))
    assert not torch.equal(BatchOrder(10, 5, 5, seed=4).indices(0, 0), order.indices(0, 0))


def test_processes_together_see_the_single_process_micro_batches():
    single = BatchOrder(37, global_batch_size=12, micro_batch_size=3, num_processes=1, seed=0)
    ranks = [BatchOrder(37, 12, 3, num_processes=2, process_index=r, seed=0) for r in range(2)]
    assert single.accumulation == 4 and ranks[0].accumulation == 2
    for step in (0, 5):  # step 5 straddles an epoch boundary (60 -> 72 of 37 per epoch)
        one = [single.indices(step, a).tolist() for a in range(4)]
        two = [r.indices(step, a).tolist() for r in ranks for a in range(2)]
        assert one == two
        assert [single.micro_index(a) for a in range(4)] == [
            r.micro_index(a) for r in ranks for a in range(2)
        ]


def test_global_batch_must_split_into_micro_batches():
    with pytest.raises(ValueError, match="not a multiple of micro_batch_size 3 x 2 processes"):
        BatchOrder(10, global_batch_size=8, micro_batch_size=3, num_processes=2)


def test_micro_seeds_differ_by_step_and_index():
    seeds = {micro_seed(0, s, i) for s in range(4) for i in range(4)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)


def test_eval_seeds_are_fixed_per_index_and_apart_from_training_seeds():
    assert eval_seed(0, 3) == eval_seed(0, 3) != eval_seed(0, 4)
    assert eval_seed(0, 0) not in {micro_seed(0, s, 0) for s in range(8)}


def test_batch_plan_splits_the_global_batch_over_processes():
    assert batch_plan(16, None, 4) == (4, 1)
    assert batch_plan(16, 2, 4) == (2, 2)
    with pytest.raises(ValueError, match="cannot be split over 3 processes"):
        batch_plan(16, None, 3)
    with pytest.raises(ValueError, match="not a multiple of train.micro_batch_size 3"):
        batch_plan(16, 3, 2)
