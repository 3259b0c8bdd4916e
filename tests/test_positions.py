"""Positions (models/positions.py): relative position -> frame index, the uniform scan's coarse-to-fine order, a fixed start."""

from __future__ import annotations

import pytest
import torch

from adaframe.models.positions import fixed_start, location_to_index, scan_order, scan_positions


def test_location_to_index_edges():
    loc = torch.tensor([0.0, 1.0, -0.5, 1.5, 0.999, 0.5, 0.25, -1e9, 1e9])
    lengths = torch.tensor([10, 10, 10, 10, 10, 10, 7, 3, 3])
    # by hand: floor(clamp(l) * T), T - 1 at l = 1
    assert location_to_index(loc, lengths).tolist() == [0, 9, 0, 9, 9, 5, 1, 0, 2]


def test_location_to_index_single_frame_video():
    loc = torch.tensor([0.0, 0.3, 1.0, 7.0, -3.0])
    assert location_to_index(loc, torch.ones(5, dtype=torch.long)).tolist() == [0] * 5


def test_location_to_index_is_monotone_and_covers_every_frame():
    loc = torch.linspace(-0.1, 1.1, 1001)
    idx = location_to_index(loc, torch.full((1001,), 13))
    assert (idx[1:] >= idx[:-1]).all()
    assert set(idx.tolist()) == set(range(13))


@pytest.mark.parametrize("k, want", [(1, [0]), (2, [0, 1]), (3, [1, 0, 2]), (5, [2, 0, 4, 1, 3]), (10, [4, 9, 0, 2, 6, 1, 3, 5, 7, 8])])
def test_scan_order_golden(k, want):
    # by hand: the grid (i + 0.5) / k; the one nearest 0.5 (the earlier on a tie), then always the one farthest from
    # those taken (the earlier on a tie). k=10: 0.45, then 0.95 (0.5 away), 0.05 (0.4), 0.25 (0.2, tied with 0.65 and
    # 0.75), 0.65 (0.2, tied with 0.75), then the 0.1-away ones from the left.
    assert list(scan_order(k)) == want
    torch.testing.assert_close(scan_positions(k), (torch.tensor(want, dtype=torch.float32) + 0.5) / k)


@pytest.mark.parametrize("k", [1, 4, 7, 16, 25])
def test_scan_order_is_a_permutation_starting_in_the_middle(k):
    order = scan_order(k)
    assert sorted(order) == list(range(k))
    assert abs((order[0] + 0.5) / k - 0.5) <= 0.5 / k  # the middle segment
    if k > 2:  # then the two ends, the farthest from the middle
        assert sorted(order[1:3]) == [0, k - 1]


def test_fixed_start_is_no_decision():
    d = fixed_start(0.5, torch.tensor([10, 7, 1]))
    assert d.index.tolist() == [5, 3, 0] and d.log_prob.tolist() == [0.0, 0.0, 0.0] and d.stop is None
