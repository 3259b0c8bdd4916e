"""The report's figures: each writes a PNG, rejects bad inputs, and plots the right numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from adaframe.report.figures import (
    Point,
    Series,
    class_stop_shares,
    merge_coinciding,
    plot_class_stops,
    plot_stop_steps,
    plot_tradeoff,
    stop_step_summary,
)


def assert_png(path: Path, min_side: int = 300) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert min(image.shape[:2]) >= min_side and max(image.shape[:2]) <= 6000
    assert image[..., :3].std() > 0.01  # not a blank canvas
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left nothing behind


def test_plot_tradeoff_writes_png(tmp_path):
    series = [
        Series("AvgPooling", [Point(40.0, 66.0, "U10"), Point(12.0, 60.0, "U3"), Point(20.0, 63.0, "U5")]),
        Series("AdaFrame-10", [Point(30.0, 67.0, "mu=0.5"), Point(30.0, 67.0, "mu=0.7"), Point(25.0, 66.5, "mu=0.3")]),
        Series("FrameGlimpse", [Point(130.0, 60.2, "32 fr")], line=False),
    ] + [Series(f"single {i}", [Point(10.0 + i, 61.0 + i)], line=False) for i in range(9)]
    path = tmp_path / "figs" / "tradeoff.png"
    plot_tradeoff(series, path, "mAP vs GFLOPs")
    assert_png(path)


def test_merge_coinciding():
    merged = merge_coinciding([Point(30.0, 67.0, "mu=0.5"), Point(10.0, 60.0, "U3"), Point(30.0001, 67.001, "mu=0.7"),
                               Point(10.0, 60.0, "x")])
    assert [(p.gflops, p.map, p.label) for p in merged] == [(30.0, 67.0, "mu=0.5, 0.7"), (10.0, 60.0, "U3, x")]


@pytest.mark.parametrize("series", [
    [],
    [Series("empty", [])],
    [Series("zero cost", [Point(0.0, 60.0)])],
    [Series("nan", [Point(1.0, float("nan"))])],
])
def test_plot_tradeoff_rejects_bad_input(tmp_path, series):
    with pytest.raises(ValueError):
        plot_tradeoff(series, tmp_path / "x.png", "t")
    assert not (tmp_path / "x.png").exists()


def test_stop_step_summary_by_hand():
    steps = np.array([1, 1, 2, 4, 4, 4, 1, 2])
    correct = np.array([True, False, True, True, True, False, True, False])
    share, accuracy, counts = stop_step_summary(steps, correct, max_steps=5)
    np.testing.assert_array_equal(counts, [3, 2, 0, 3, 0])
    np.testing.assert_allclose(share, [3 / 8, 2 / 8, 0, 3 / 8, 0])
    np.testing.assert_allclose(accuracy, [2 / 3, 1 / 2, np.nan, 2 / 3, np.nan])


def test_plot_stop_steps_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    steps = rng.integers(1, 10, size=200)  # step 10 has no video
    plot_stop_steps(steps, rng.random(200) < 0.7, 10, tmp_path / "steps.png", "where videos stop")
    assert_png(tmp_path / "steps.png")


@pytest.mark.parametrize(("steps", "correct", "max_steps"), [
    ([1, 2, 3], [True, False], 3),  # shapes differ
    ([0, 1, 2], [True, True, False], 3),  # step 0
    ([1, 2, 4], [True, True, False], 3),  # step above max_steps
    ([1.5, 2, 3], [True, True, False], 3),  # not an integer
    ([], [], 3),  # no video
    ([1, 2], [True, False], 0),
])
def test_plot_stop_steps_rejects_bad_input(tmp_path, steps, correct, max_steps):
    with pytest.raises(ValueError):
        plot_stop_steps(np.array(steps), np.array(correct, dtype=bool), max_steps, tmp_path / "x.png", "t")


def test_class_stop_shares_by_hand():
    # class 0 stops at 3, 3 (mean 3); class 1 at 1, 2, 2, 3 (mean 2); class 2 none; class 3 at 1 (mean 1)
    steps = np.array([3, 1, 2, 3, 2, 3, 1])
    labels = np.array([0, 1, 1, 0, 1, 1, 3])
    shares, mean_step, order = class_stop_shares(steps, labels, num_classes=4, max_steps=3)
    np.testing.assert_array_equal(order, [3, 1, 0, 2])
    np.testing.assert_allclose(mean_step, [3.0, 2.0, np.nan, 1.0])
    np.testing.assert_allclose(shares, [[0, 0, 1], [0.25, 0.5, 0.25], [np.nan] * 3, [1, 0, 0]])


def test_class_stop_shares_ties_keep_class_order():
    _, _, order = class_stop_shares(np.array([2, 2, 1]), np.array([2, 0, 1]), num_classes=3, max_steps=2)
    np.testing.assert_array_equal(order, [1, 0, 2])


@pytest.mark.parametrize(("num_classes", "max_steps", "min_side"), [(6, 5, 300), (200, 25, 1000)])
def test_plot_class_stops_writes_png(tmp_path, num_classes, max_steps, min_side):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, num_classes - 1, size=50 * num_classes)  # the last class has no video
    steps = rng.integers(1, max_steps + 1, size=labels.size)
    classes = [f"class {i}" for i in range(num_classes)]
    plot_class_stops(steps, labels, classes, max_steps, tmp_path / "classes.png", "stops per class")
    assert_png(tmp_path / "classes.png", min_side)


@pytest.mark.parametrize(("steps", "labels", "classes"), [
    ([1, 2], [0], ["a", "b"]),  # shapes differ
    ([1, 2], [0, 2], ["a", "b"]),  # label out of range
    ([1, 2], [-1, 0], ["a", "b"]),  # negative label
    ([1, 5], [0, 1], ["a", "b"]),  # step above max_steps
    ([1, 2], [0, 0], []),  # no class
])
def test_plot_class_stops_rejects_bad_input(tmp_path, steps, labels, classes):
    with pytest.raises(ValueError):
        plot_class_stops(np.array(steps), np.array(labels), classes, 3, tmp_path / "x.png", "t")
