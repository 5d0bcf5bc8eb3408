"""Training rows come in epochs: each pass over the split sees every stretch of it once."""

import numpy as np

from lmsmith.schema.train import TrainConfig, plan_batch
from lmsmith.text.tokens_dir import open_tokens_dir
from lmsmith.train.data import EpochOrder, TokenWindows, TrainBatches


def test_one_epoch_reads_the_split_once_without_overlap_and_the_next_is_shuffled_anew():
    count, stride = 1000, 32  # 1000 window starts, windows of 32 tokens (plus the target)
    order = EpochOrder(count, stride, seed=3)
    first = order.windows(np.arange(order.per_epoch))
    second = order.windows(np.arange(order.per_epoch, 2 * order.per_epoch))
    for epoch in (first, second):
        starts = np.sort(epoch)
        assert np.all(np.diff(starts) == stride)  # no window overlaps another, none is missed
        assert 0 <= starts[0] < stride and starts[-1] < count
    assert not np.array_equal(first, second)
    covered = np.zeros(count + stride, dtype=int)
    for start in first:
        covered[start:start + stride] += 1
    assert covered.max() == 1 and covered.sum() == order.per_epoch * stride


def test_rows_are_a_pure_function_of_the_seed_whatever_was_asked_before():
    rows = np.arange(95, 140)  # straddles the end of the first epoch (31 windows each)
    fresh = EpochOrder(1000, 32, seed=3).windows(rows)
    walked = EpochOrder(1000, 32, seed=3)
    for start in range(0, 200, 16):
        walked.windows(np.arange(start, start + 16))
    assert np.array_equal(walked.windows(rows), fresh)
    assert not np.array_equal(EpochOrder(1000, 32, seed=4).windows(rows), fresh)


def test_a_split_shorter_than_two_windows_still_yields_valid_windows():
    order = EpochOrder(count=5, stride=32, seed=0)
    windows = order.windows(np.arange(20))
    assert order.per_epoch == 1
    assert windows.min() >= 0 and windows.max() < 5


def test_both_orders_are_a_function_of_seed_and_step_and_only_epochs_avoid_overlap(tokens_dir):
    windows = TokenWindows(open_tokens_dir(tokens_dir), "train", 16)
    plan = plan_batch(TrainConfig(batch_tokens=16 * 16, micro_batch=16), 16, 1)
    steps = windows.count // 16 // 16  # within the first epoch
    seen = {}
    for order in ("epochs", "random"):
        batches = TrainBatches(windows, plan, seed=0, rank=0, device="cpu", order=order)
        seen[order] = np.concatenate([batches.step_windows(s).ravel() for s in range(steps)])
        again = TrainBatches(windows, plan, seed=0, rank=0, device="cpu", order=order)
        assert np.array_equal(again.step_windows(3), batches.step_windows(3))
    gaps = np.diff(np.sort(seen["epochs"]))
    assert np.all(gaps >= 16) and np.all(gaps % 16 == 0)  # on one grid, never overlapping: no token twice
    assert np.any(np.diff(np.sort(seen["random"])) < 16)  # independent draws overlap
