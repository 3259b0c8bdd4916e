"""The PNG figures of the experiment report.

* :func:`plot_tradeoff`: mAP against GFLOPs per video for several methods (Figure 3 of the paper;
  also for comparing two stopping rules);
* :func:`plot_stop_steps`: how many videos stop at each step, and how accurate they are (Figure 4);
* :func:`plot_class_stops`: for each class, the share of its videos that stop at each step (Figure 5).

matplotlib is imported inside the functions, since it is slow to import.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from adaframe.utils import atomic_write

if TYPE_CHECKING:
    from types import ModuleType

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# 7 marker shapes against 10 colours: 7 and 10 are coprime, so series i and j (i != j, both < 70)
# never share both colour and marker.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_LABEL_FONTSIZE = 7
# Where a point's label may go: offset from the point in typographic points, and the text's alignment.
# Listed in order of preference; the first one that overprints nothing wins.
_LABEL_SPOTS = (
    (6, 0, "left", "center"), (5, 4, "left", "bottom"), (5, -4, "left", "top"),
    (0, 7, "center", "bottom"), (0, -7, "center", "top"), (-6, 0, "right", "center"),
    (-5, 4, "right", "bottom"), (-5, -4, "right", "top"),
    (0, 15, "center", "bottom"), (0, -15, "center", "top"), (14, 0, "left", "center"), (-14, 0, "right", "center"),
    (10, 11, "left", "bottom"), (10, -11, "left", "top"), (-10, 11, "right", "bottom"), (-10, -11, "right", "top"),
)


@dataclass
class Point:
    """One operating point: cost, accuracy and the label written beside it.

    Attributes:
        gflops: GFLOPs per video (> 0: the x axis is logarithmic).
        map: mAP in percent.
        label: Text written beside the point, e.g. "U5" or "mu=0.7"; "" for none.
    """

    gflops: float
    map: float
    label: str = ""


@dataclass
class Series:
    """The points of one method, drawn in one colour and marker.

    Attributes:
        name: The legend entry.
        points: Its operating points.
        line: Join the points, sorted by cost, with a line; False draws markers only.
    """

    name: str
    points: list[Point] = field(default_factory=list)
    line: bool = True

    @classmethod
    def of_rows(cls, name: str, rows: list[dict], label: Callable[[dict], str], line: bool = True) -> Series:
        """The series of evaluated settings (rows with ``gflops_per_video`` and ``mAP``), each labelled by ``label``."""
        return cls(name, [Point(r["gflops_per_video"], r["mAP"], label(r)) for r in rows], line)


def save_png(fig: Figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda p: fig.savefig(p, format="png", bbox_inches="tight"))
    plt.close(fig)


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _merge_labels(labels: list[str]) -> str:
    """One label for points that coincide: "mu=0.3", "mu=0.5" -> "mu=0.3, 0.5"; others joined with ", "."""
    labels = list(dict.fromkeys(lb for lb in labels if lb))  # drop empty and repeated labels, keep order
    if len(labels) > 1 and all("=" in lb for lb in labels) and len({lb.split("=")[0] for lb in labels}) == 1:
        return labels[0] + "".join(", " + lb.split("=", 1)[1] for lb in labels[1:])
    return ", ".join(labels)


def merge_coinciding(points: list[Point]) -> list[Point]:
    """Merge points with the same rounded cost (3 significant digits) and mAP (2 decimals) into one.

    Args:
        points: The points of one series.

    Returns:
        One point per distinct position, in order of first appearance, labelled with all their labels.
    """
    groups: dict[tuple[float, float], list[Point]] = {}
    for p in points:
        groups.setdefault((float(f"{p.gflops:.3g}"), round(p.map, 2)), []).append(p)
    return [Point(g[0].gflops, g[0].map, _merge_labels([p.label for p in g])) for g in groups.values()]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Readable ticks for a log axis from lo to hi: 1-2-5 steps, finer where the range is narrow."""
    from matplotlib.ticker import MaxNLocator

    for subs in ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [s * 10.0**e for e in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1) for s in subs]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) >= 3:
            return ticks
    return [t for t in MaxNLocator(4).tick_values(lo, hi) if lo <= t <= hi]


def _overlap(a: np.ndarray, boxes: np.ndarray) -> float:
    """Total area of box a ([x0, y0, x1, y1]) covered by boxes ([M, 4])."""
    if len(boxes) == 0:
        return 0.0
    w = np.clip(np.minimum(a[2], boxes[:, 2]) - np.maximum(a[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], boxes[:, 3]) - np.maximum(a[1], boxes[:, 1]), 0, None)
    return float((w * h).sum())


def _place_labels(fig: Figure, ax: Axes, items: list[tuple[float, float, str, str]],
                  lines: list[np.ndarray], marker_px: float) -> None:
    """Write each label beside its point where it overprints the fewest labels, markers and lines.

    Greedy: labels are placed one after another, each at the first spot of ``_LABEL_SPOTS`` with
    the least overlap with the labels already placed, every marker, every line, the legend and the
    outside of the axes. Works in display pixels, so the layout must be final.
    """
    renderer = fig.canvas.get_renderer()
    to_px = fig.dpi / 72.0
    xy = ax.transData.transform(np.array([(x, y) for x, y, _, _ in items]).reshape(-1, 2))
    r = marker_px / 2 + 1
    markers = np.column_stack([xy[:, 0] - r, xy[:, 1] - r, xy[:, 0] + r, xy[:, 1] + r])
    # Lines as dense samples: a label box containing n samples costs n * 4 square pixels.
    samples = []
    for line in lines:
        d = ax.transData.transform(line)
        for a, b in itertools.pairwise(d):
            n = max(2, int(np.hypot(*(b - a)) / 2))
            samples.append(a + np.linspace(0, 1, n)[:, None] * (b - a))
    samples = np.concatenate(samples) if samples else np.zeros((0, 2))
    axes_box = ax.get_window_extent(renderer).extents
    legend = ax.get_legend()
    obstacles = [legend.get_window_extent(renderer).extents] if legend is not None else []
    placed: list[np.ndarray] = []
    for (x, y, text, color), (px, py) in zip(items, xy, strict=True):
        probe = ax.text(0, 0, text, fontsize=_LABEL_FONTSIZE)
        bb = probe.get_window_extent(renderer)
        probe.remove()
        w, h = bb.width + 2, bb.height + 2
        best, best_cost, best_box = _LABEL_SPOTS[0], np.inf, np.zeros(4)
        for rank, spot in enumerate(_LABEL_SPOTS):
            dx, dy, ha, va = spot
            x0 = px + dx * to_px - {"left": 0, "center": w / 2, "right": w}[ha]
            y0 = py + dy * to_px - {"bottom": 0, "center": h / 2, "top": h}[va]
            box = np.array([x0, y0, x0 + w, y0 + h])
            inside = (samples[:, 0] >= box[0]) & (samples[:, 0] <= box[2]) & (samples[:, 1] >= box[1]) & (
                samples[:, 1] <= box[3])
            clipped = max(0.0, w * h - _overlap(box, axes_box[None]))
            cost = (10 * _overlap(box, np.array(placed).reshape(-1, 4)) + 10 * _overlap(box, markers)
                    + 10 * _overlap(box, np.array(obstacles).reshape(-1, 4)) + 4 * inside.sum() + 5 * clipped
                    + rank)  # ties go to the preferred spot
            if cost < best_cost:
                best, best_cost, best_box = spot, cost, box
        dx, dy, ha, va = best
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), ha=ha, va=va,
                    fontsize=_LABEL_FONTSIZE, color=color, annotation_clip=False)
        placed.append(best_box)


def plot_tradeoff(series: list[Series], path: Path, title: str, xlabel: str = "GFLOPs per video (log scale)") -> None:
    """Plot mAP (%) against GFLOPs per video, one colour and marker per series, each point labelled.

    Points of a series that coincide get one merged label; labels are placed so they do not
    overprint each other; the legend sits outside the axes, on the right.

    Args:
        series: The methods; each needs at least one point, with gflops > 0 and a finite mAP.
        path: Where to write the PNG.
        title: The figure's title.
        xlabel: The x axis label.

    Raises:
        ValueError: If there is no series, a series has no point, or a point has gflops <= 0
            or a non-finite value.
    """
    if not series:
        raise ValueError("plot_tradeoff: the list of series is empty")
    for s in series:
        if not s.points:
            raise ValueError(f"plot_tradeoff: series {s.name!r} has no points")
        for p in s.points:
            if not (np.isfinite(p.gflops) and np.isfinite(p.map) and p.gflops > 0):
                raise ValueError(f"plot_tradeoff: series {s.name!r} has a point with gflops={p.gflops}, "
                                 f"map={p.map}: gflops must be > 0 (log axis) and both finite")
    plt = pyplot()
    from matplotlib import ticker

    colors = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=150)
    markersize = 6.0
    items, lines = [], []
    for i, s in enumerate(series):
        color, marker = colors[i % 10], _MARKERS[i % len(_MARKERS)]
        pts = merge_coinciding(sorted(s.points, key=lambda p: p.gflops))
        x, y = [p.gflops for p in pts], [p.map for p in pts]
        ax.plot(x, y, marker=marker, linestyle="-" if s.line else "none", color=color, label=s.name,
                markersize=markersize, linewidth=1.3)
        if s.line and len(pts) > 1:
            lines.append(np.column_stack([x, y]))
        items += [(p.gflops, p.map, p.label, color) for p in pts if p.label]
    ax.set_xscale("log")
    ax.margins(x=0.08, y=0.1)  # room for the labels of the outermost points
    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_locator(ticker.FixedLocator(_log_ticks(lo, hi)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mAP (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    fig.tight_layout()
    fig.canvas.draw()  # fixes limits and layout: labels are placed in display pixels
    ax.set_autoscale_on(False)
    _place_labels(fig, ax, items, lines, markersize * fig.dpi / 72)
    save_png(fig, path)


def _check_steps(stop_steps: np.ndarray, max_steps: int, name: str) -> np.ndarray:
    steps = np.asarray(stop_steps)
    if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"{name}: max_steps must be a positive integer, got {max_steps!r}")
    if steps.ndim != 1 or steps.size == 0:
        raise ValueError(f"{name}: stop_steps must be a non-empty 1-D array, got shape {steps.shape}")
    if not np.issubdtype(steps.dtype, np.number) or not np.all(np.isfinite(steps)) or np.any(steps != np.round(steps)):
        raise ValueError(f"{name}: stop_steps must hold integers")
    if steps.min() < 1 or steps.max() > max_steps:
        raise ValueError(f"{name}: stop_steps must lie in 1..{max_steps}, got {steps.min()}..{steps.max()}")
    return steps.astype(np.int64)


def stop_step_summary(stop_steps: np.ndarray, correct: np.ndarray,
                      max_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stopping step: the share of videos that stop there and their top-1 accuracy.

    Args:
        stop_steps: [N] ints in 1..max_steps, the step at which each video stopped.
        correct: [N] bools, whether each video's top-1 prediction is right.
        max_steps: The largest step.

    Returns:
        share [K] (fractions summing to 1), accuracy [K] (fractions, NaN at steps with no video)
        and counts [K] (ints), for steps 1..K, K = max_steps.

    Raises:
        ValueError: On empty or mismatched inputs, or steps outside 1..max_steps.
    """
    steps = _check_steps(stop_steps, max_steps, "stop_step_summary")
    correct = np.asarray(correct)
    if correct.shape != steps.shape:
        raise ValueError(f"stop_step_summary: correct has shape {correct.shape}, stop_steps {steps.shape}")
    if not (correct.dtype == bool or np.isin(correct, (0, 1)).all()):
        raise ValueError("stop_step_summary: correct must hold booleans (or 0/1)")
    counts = np.bincount(steps - 1, minlength=max_steps)
    right = np.bincount(steps - 1, weights=correct.astype(np.float64), minlength=max_steps)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(counts > 0, right / counts, np.nan)
    return counts / counts.sum(), accuracy, counts


def plot_stop_steps(stop_steps: np.ndarray, correct: np.ndarray, max_steps: int, path: Path, title: str) -> None:
    """Bars: the share of videos stopping at each step; line (right axis): their top-1 accuracy.

    Args:
        stop_steps: [N] ints in 1..max_steps, the step at which each video stopped.
        correct: [N] bools, whether each video's top-1 prediction is right.
        max_steps: The largest step; every step 1..max_steps gets a place on the x axis.
        path: Where to write the PNG.
        title: The figure's title.

    Raises:
        ValueError: On empty or mismatched inputs, or steps outside 1..max_steps.
    """
    share, accuracy, counts = stop_step_summary(stop_steps, correct, max_steps)
    plt = pyplot()
    k = np.arange(1, max_steps + 1)
    fig, ax = plt.subplots(figsize=(max(6.0, min(14.0, 3 + 0.45 * max_steps)), 4.8), dpi=150)
    bar_color, line_color = "tab:blue", "tab:red"
    ax.bar(k, 100 * share, color=bar_color, alpha=0.75, width=0.7)
    ax.set_xlim(0.4, max_steps + 0.6)
    ax.set_ylim(0, 100 * share.max() * 1.08)
    # The video counts go under the step numbers, where neither the bars nor the line can hide them.
    if max_steps <= 15:
        ax.set_xticks(k, [f"{ki}\nn={n}" for ki, n in zip(k, counts, strict=True)], fontsize=8)
    elif max_steps <= 30:
        ax.set_xticks(k, [f"{ki}\n{n}" for ki, n in zip(k, counts, strict=True)], fontsize=7)
    else:
        ax.set_xticks(k, [f"{ki}: {n}" for ki, n in zip(k, counts, strict=True)], fontsize=6, rotation=90)
    ax.set_xlabel(f"step at which the video stops (step {max_steps}: ran all K steps, no early stop)"
                  + ("" if max_steps <= 15 else " (below: number of videos)" if max_steps <= 30 else " (after it: number of videos)"))
    ax.set_ylabel("videos stopping at this step (%), bars", color=bar_color)
    ax.tick_params(axis="y", colors=bar_color)
    ax2 = ax.twinx()
    seen = counts > 0
    ax2.plot(k[seen], 100 * accuracy[seen], "o-", color=line_color, markersize=5, linewidth=1.5)
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("top-1 accuracy of these videos (%), line", color=line_color)
    ax2.tick_params(axis="y", colors=line_color)
    ax.set_title(f"{title}\n({counts.sum()} videos)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    save_png(fig, path)


def class_stop_shares(stop_steps: np.ndarray, labels: np.ndarray, num_classes: int,
                      max_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: the share of its videos that stop at each step, and its mean stopping step.

    Args:
        stop_steps: [N] ints in 1..max_steps, the step at which each video stopped.
        labels: [N] class indices in 0..num_classes-1.
        num_classes: The number of classes C.
        max_steps: The largest step K.

    Returns:
        shares [C, K] (each row sums to 1; NaN rows for classes with no video), mean_step [C]
        (NaN for classes with no video) and order [C], the class indices sorted by mean step,
        earliest first (ties by index), classes with no video last.

    Raises:
        ValueError: On empty or mismatched inputs, steps outside 1..max_steps or labels out of range.
    """
    steps = _check_steps(stop_steps, max_steps, "class_stop_shares")
    labels = np.asarray(labels)
    if labels.shape != steps.shape:
        raise ValueError(f"class_stop_shares: labels has shape {labels.shape}, stop_steps {steps.shape}")
    if num_classes < 1:
        raise ValueError(f"class_stop_shares: num_classes must be positive, got {num_classes}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"class_stop_shares: labels must be integers in 0..{num_classes - 1}, "
                         f"got {labels.min()}..{labels.max()}")
    counts = np.zeros((num_classes, max_steps))
    np.add.at(counts, (labels, steps - 1), 1)
    totals = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / totals[:, None]
        mean_step = (counts * np.arange(1, max_steps + 1)).sum(axis=1) / totals
    order = np.lexsort((np.arange(num_classes), np.where(totals > 0, mean_step, np.inf)))
    return shares, mean_step, order


def plot_class_stops(stop_steps: np.ndarray, labels: np.ndarray, classes: list[str], max_steps: int, path: Path,
                     title: str) -> None:
    """Heat map: for each class (rows, by mean stopping step), the share of its videos stopping at each step.

    Cells carry their percentage when there are at most 20 classes and 12 steps.

    Args:
        stop_steps: [N] ints in 1..max_steps, the step at which each video stopped.
        labels: [N] class indices into ``classes``.
        classes: The class names.
        max_steps: The largest step; every step 1..max_steps gets a column.
        path: Where to write the PNG.
        title: The figure's title.

    Raises:
        ValueError: On empty or mismatched inputs, steps outside 1..max_steps or labels out of range.
    """
    if not classes:
        raise ValueError("plot_class_stops: the list of classes is empty")
    shares, mean_step, order = class_stop_shares(stop_steps, labels, len(classes), max_steps)
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    c = len(classes)
    fontsize = 8 if c <= 30 else 6 if c <= 80 else 4
    row_in = 0.32 if c <= 30 else fontsize / 72 * 1.5
    fig, ax = plt.subplots(figsize=(max(6.0, min(14.0, 3.5 + 0.5 * max_steps)), min(30.0, max(3.5, 1.6 + c * row_in))),
                           dpi=150)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    data = 100 * shares[order]
    vmax = float(np.nanmax(data)) if np.isfinite(data).any() else 100.0
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=vmax, aspect="auto", interpolation="nearest",
                   extent=(0.5, max_steps + 0.5, c - 0.5, -0.5))
    names = [f"{classes[i]} (no videos)" if np.isnan(mean_step[i]) else f"{classes[i]} (mean {mean_step[i]:.1f})"
             for i in order]
    ax.set_yticks(np.arange(c), names, fontsize=fontsize)
    if max_steps <= 30:
        ax.set_xticks(np.arange(1, max_steps + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=20))
    ax.set_xlabel("step at which the video stops")
    ax.set_ylabel("class, earliest mean stopping step at the top", fontsize=9)
    cb = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    cb.set_label("share of the class's videos")
    cb.ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    if c <= 20 and max_steps <= 12:
        for row, values in enumerate(data):
            for col, v in enumerate(values):
                if not np.isfinite(v) or v == 0:
                    continue
                r, g, b, _ = cmap(v / vmax if vmax > 0 else 0.0)
                color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(col + 1, row, f"{v:.0f}%" if v >= 0.5 else "<1%", ha="center", va="center", fontsize=7,
                        color=color)
    ax.tick_params(axis="y", length=0)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
