"""Margins, margin rewards and discounted returns against hand-computed values and a naive loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaframe.rl.rewards import discounted_returns, margin_rewards, margins


def test_margins_golden():
    # logits = log p, so softmax(logits) = p exactly (p sums to 1).
    p = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]]], dtype=torch.float64)
    logits = p.log() + 7.0  # a constant shift must not matter
    # label 0: 0.5-0.3, 0.1-0.6, 0.25-0.5
    np.testing.assert_allclose(margins(logits, torch.tensor([0])).numpy(), [[0.2, -0.5, -0.25]], atol=1e-12)
    # label 2: 0.2-0.5, 0.3-0.6, 0.5-0.25
    np.testing.assert_allclose(margins(logits, torch.tensor([2])).numpy(), [[-0.3, -0.3, 0.25]], atol=1e-12)


def test_margins_batch_rows_use_their_own_label():
    p = torch.tensor([[[0.7, 0.2, 0.1]], [[0.7, 0.2, 0.1]]], dtype=torch.float64)
    m = margins(p.log(), torch.tensor([0, 1]))
    np.testing.assert_allclose(m.numpy(), [[0.5], [-0.5]], atol=1e-12)


def test_margins_two_classes_and_ties():
    # Two classes: m = p_gt - (1 - p_gt) = 2 p_gt - 1; equal logits give m = 0.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    np.testing.assert_allclose(margins(logits, torch.tensor([0])).numpy(), [[0.0, 0.5]], atol=1e-6)


@pytest.mark.parametrize(
    "m, expected",
    [
        # m0 = 0: a negative first margin earns nothing; then improvements over the best so far.
        ([-0.2, 0.3, 0.1, 0.5, 0.4], [0.0, 0.3, 0.0, 0.2, 0.0]),
        # all negative: never better than m0 = 0
        ([-0.5, -0.1, -0.3], [0.0, 0.0, 0.0]),
        # a drop then a rise: the rise is only paid above the earlier best (0.6)
        ([0.6, -0.4, 0.2, 0.8], [0.6, 0.0, 0.0, 0.2]),
        # a rise from a negative margin back to a value below 0 earns nothing
        ([-0.9, -0.2, 0.1], [0.0, 0.0, 0.1]),
        # equal margins are not paid twice
        ([0.3, 0.3, 0.3], [0.3, 0.0, 0.0]),
    ],
)
def test_margin_rewards_golden(m, expected):
    r = margin_rewards(torch.tensor([m], dtype=torch.float64))
    assert r.tolist() == [pytest.approx(expected, abs=1e-12)]


def test_margin_rewards_batch_is_row_wise():
    m = torch.tensor([[0.6, -0.4, 0.2, 0.8], [-0.2, 0.3, 0.1, 0.5]], dtype=torch.float64)
    r = margin_rewards(m)
    assert r[0].tolist() == pytest.approx([0.6, 0.0, 0.0, 0.2], abs=1e-12)
    assert r[1].tolist() == pytest.approx([0.0, 0.3, 0.0, 0.2], abs=1e-12)


def test_margin_rewards_sum_telescopes_to_best_margin():
    # sum_t r_t = max(0, max_t m_t) (each reward is the increase of the running max above 0)
    rng = np.random.default_rng(1)
    m = torch.from_numpy(rng.uniform(-1, 1, size=(50, 7)))
    r = margin_rewards(m)
    assert (r >= 0).all()
    expected = m.max(1).values.clamp(min=0)
    torch.testing.assert_close(r.sum(1), expected)


def naive_returns(r: np.ndarray, gamma: float) -> np.ndarray:
    b, k = r.shape
    q = np.zeros_like(r)
    for i in range(b):
        for t in range(k):
            q[i, t] = sum(gamma**j * r[i, t + j] for j in range(k - t))
    return q


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 1.0])
def test_discounted_returns_vs_naive(gamma):
    rng = np.random.default_rng(int(gamma * 10))
    r = rng.uniform(0, 1, size=(6, 9))
    q = discounted_returns(torch.from_numpy(r), gamma)
    np.testing.assert_allclose(q.numpy(), naive_returns(r, gamma), rtol=1e-12, atol=1e-12)


def test_discounted_returns_hand_values():
    r = torch.tensor([[1.0, 0.0, 2.0]], dtype=torch.float64)
    # Q_2 = 2, Q_1 = 0 + 0.5*2 = 1, Q_0 = 1 + 0.5*1 = 1.5
    assert discounted_returns(r, 0.5).tolist() == [pytest.approx([1.5, 1.0, 2.0])]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=8), min_size=1, max_size=4).filter(
    lambda rows: len({len(r) for r in rows}) == 1))
def test_margin_rewards_vs_naive(rows):
    m = torch.tensor(rows, dtype=torch.float64)
    want = [[max(0.0, r[t] - max([0.0] + r[:t])) for t in range(len(r))] for r in rows]
    np.testing.assert_allclose(margin_rewards(m).numpy(), np.array(want), atol=1e-12)


def test_prediction_and_transition_rewards_golden():
    from adaframe.rl.rewards import prediction_rewards, step_rewards, transition_rewards

    p = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]]], dtype=torch.float64)
    logits = p.log() - 3.0
    label = torch.tensor([0])
    np.testing.assert_allclose(prediction_rewards(logits, label).numpy(), [[0.5, 0.1, 0.25]], atol=1e-12)
    # p_0(gt) = 1/3 (uniform): 0.5 - 1/3, 0.1 - 0.5, 0.25 - 0.1
    np.testing.assert_allclose(transition_rewards(logits, label).numpy(), [[0.5 - 1 / 3, -0.4, 0.15]], atol=1e-12)
    # margin: m = 0.2, -0.5, -0.25 -> r = 0.2, 0, 0
    np.testing.assert_allclose(step_rewards(logits, label, "margin").numpy(), [[0.2, 0.0, 0.0]], atol=1e-12)
    # the transitions telescope: their sum is p_K(gt) - 1/C
    assert transition_rewards(logits, label).sum().item() == pytest.approx(0.25 - 1 / 3)
    with pytest.raises(ValueError, match="unknown reward"):
        step_rewards(logits, label, "accuracy")
