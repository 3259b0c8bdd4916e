"""mAP / AP against scikit-learn, top-1, the cost model and the FLOP counter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from adaframe.evaluate.metrics import CostModel, average_precision, mean_average_precision, top1
from adaframe.utils import measure_gflops


@pytest.mark.parametrize("decimals", [None, 1, 2])  # None: no ties; 1 decimal: many ties
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_vs_sklearn(seed, decimals):
    rng = np.random.default_rng(seed)
    scores = rng.random(80)
    if decimals is not None:
        scores = np.round(scores, decimals)
    positives = rng.random(80) < 0.3
    assert positives.any()
    assert average_precision(scores, positives) == pytest.approx(average_precision_score(positives, scores), abs=1e-12)


def test_average_precision_tie_order_does_not_matter():
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    y1 = np.array([1, 1, 0, 0, 1])
    y2 = np.array([1, 0, 0, 1, 1])  # same multiset of labels inside the tie
    assert average_precision(scores, y1) == pytest.approx(average_precision(scores, y2))
    # by hand: thresholds 0.9 (P=1, R=1/3), 0.5 (P=2/4, R=2/3), 0.1 (P=3/5, R=1)
    assert average_precision(scores, y1) == pytest.approx(1 / 3 * 1 + 1 / 3 * 0.5 + 1 / 3 * 0.6)


def test_average_precision_no_positive_is_nan():
    assert np.isnan(average_precision(np.array([0.3, 0.2]), np.array([False, False])))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mean_average_precision_vs_sklearn_with_ties_and_empty_class(seed):
    rng = np.random.default_rng(seed)
    n, c = 60, 5
    labels = rng.integers(0, c - 1, size=n)  # class c-1 has no positive and must be skipped
    scores = np.round(rng.random((n, c)), 1)  # ties
    scores[np.arange(n), labels] += rng.random(n) * 0.3  # some signal
    expected = np.mean([average_precision_score(labels == k, scores[:, k]) for k in range(c) if (labels == k).any()])
    assert len([k for k in range(c) if (labels == k).any()]) < c
    assert mean_average_precision(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_mean_average_precision_perfect_and_range():
    labels = np.array([0, 1, 2, 0, 1, 2])
    assert mean_average_precision(np.eye(3)[labels], labels) == pytest.approx(1.0)
    rng = np.random.default_rng(5)
    m = mean_average_precision(rng.random((6, 3)), labels)
    assert 0.0 < m <= 1.0


def test_top1():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert top1(scores, np.array([1, 0, 0, 0])) == pytest.approx(0.75)
    assert top1(scores, np.array([0, 1, 0, 1])) == pytest.approx(0.0)


def test_cost_model_per_video():
    cm = CostModel(backbone_gflops=2.0, memory_gflops_per_frame=0.5, head_gflops_per_step=0.01)
    frames, steps = np.array([1, 3, 10]), np.array([2, 3, 10])
    # by hand: 2*f + 16*0.5 + 0.01*s
    np.testing.assert_allclose(cm.per_video(frames, steps, 16), [2 + 8 + 0.02, 6 + 8 + 0.03, 20 + 8 + 0.1])
    np.testing.assert_allclose(cm.per_video(frames, steps, 0), [2.02, 6.03, 20.1])


def test_cost_model_defaults_are_the_papers():
    cm = CostModel()
    # ResNet-101 7.82 GFLOPs a frame; MobileNetV2 0.30 GFLOPs at 224 -> 0.075 at 112
    assert cm.per_video(np.array([10]), np.array([10]), 16)[0] == pytest.approx(78.2 + 16 * 0.075)


@pytest.mark.parametrize("a, b", [(16, 8), (100, 37), (1024, 12)])
def test_measure_gflops_linear(a, b):
    layer = torch.nn.Linear(a, b)
    x = torch.randn(1, a)
    assert measure_gflops(lambda: layer(x)) == pytest.approx(a * b / 1e9)


def test_backward_jump_fraction_golden():
    from adaframe.evaluate.metrics import backward_jump_fraction

    visited = np.array([
        [5, 7, 9, -1],   # forward only
        [5, 2, 8, 9],    # jumps back once
        [5, 5, 5, 5],    # stays: not a jump back
        [5, -1, -1, -1],  # one step
        [9, 8, -1, -1],  # back on its last step
    ])
    assert backward_jump_fraction(visited) == pytest.approx(2 / 5)
