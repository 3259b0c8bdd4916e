"""A picture of one decision (``adaframe predict --explain``): where the agent looked in a video, in what order, what it
believed after each look, and why it stopped there (the paper's Figure 1, for the user's own video).

Three rows: the video's timeline with the global memory's frames and the frames looked at, numbered in the order
chosen; those frames as thumbnails (each once); and after each step the most likely class's probability beside the
utility, with the step where adaptive lookahead stopped marked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from adaframe.recognize.result import Recognition
from adaframe.report.figures import pyplot, save_png
from adaframe.utils import AdaframeError


def stop_reason(utilities: Sequence[float], mu: float | None, max_steps: int) -> str:
    """Why the rollout of these utilities ended where it did (one line for the picture)."""
    steps = len(utilities)
    if mu is not None and steps and steps < max_steps:
        best = max(utilities)
        return (f"stopped after step {steps}: the utility {utilities[-1]:.3f} fell {best - utilities[-1]:.3f} below its best "
                f"{best:.3f}, more than mu = {mu:g} (looking on was not expected to pay)")
    return f"ran all K = {max_steps} steps" + ("" if mu is None else f" (the utility never fell more than mu = {mu:g} below its best)")


def first_looks(seconds: Sequence[float]) -> list[int]:
    """The steps that looked at a frame for the first time (a frame looked at again costs no backbone call)."""
    seen: set[float] = set()
    return [i for i, t in enumerate(seconds) if not (t in seen or seen.add(t))]  # type: ignore[func-returns-value]


def plot_decision(r: Recognition, thumbnails: Sequence[np.ndarray], duration: float, path: Path, mu: float | None,
                  max_steps: int) -> list[int]:
    """Draw ``r`` (an AdaFrame result) into the PNG ``path``; returns the steps shown as thumbnails (``first_looks``).

    Args:
        thumbnails: the frames looked at, one per frame used, in the order first looked at ([h, w, 3] uint8).
        duration: the video's length in seconds (the timeline's extent).
        mu, max_steps: the stopping rule it ran with (None: always K steps) and K.
    """
    if r.error is not None or r.utilities is None or r.step_top is None:
        raise AdaframeError(f"{r.path}: nothing to explain ({r.error or 'not an AdaFrame result'})")
    shown = first_looks(r.seconds)
    if len(thumbnails) != len(shown):
        raise AdaframeError(f"{r.path}: {len(thumbnails)} thumbnails for {len(shown)} frames used")
    plt = pyplot()
    steps = r.steps
    fig = plt.figure(figsize=(max(8.0, 1.6 * len(shown)), 7.5))
    grid = fig.add_gridspec(3, len(shown), height_ratios=[1.0, 1.3, 1.6], hspace=0.55)
    line = fig.add_subplot(grid[0, :])
    for t in r.memory_seconds or ():
        line.axvline(t, color="0.75", lw=1.5, zorder=1)
    line.plot(r.seconds, np.zeros(steps), color="tab:blue", lw=0.8, alpha=0.5, zorder=2)  # the path, in the order looked
    line.scatter(r.seconds, np.zeros(steps), s=160, color="tab:blue", zorder=3)
    for i, t in enumerate(r.seconds):
        line.annotate(str(i + 1), (t, 0), ha="center", va="center", color="white", fontsize=8, weight="bold", zorder=4)
    line.set(xlim=(-0.02 * duration, duration * 1.02), ylim=(-1, 1), yticks=[], xlabel="seconds")
    line.set_title(f"{Path(r.path).name}: {r.label} ({r.probability:.2f}) from {r.frames_used} frames in {steps} steps, "
                   f"{r.gflops:.2f} GFLOPs; grey: the global memory's {len(r.memory_seconds or ())} frames", fontsize=9)
    for j, (i, img) in enumerate(zip(shown, thumbnails)):
        ax = fig.add_subplot(grid[1, j])
        ax.imshow(img)
        ax.set_axis_off()
        cls, p = r.step_top[i]
        ax.set_title(f"step {i + 1}: {r.seconds[i]:g} s\n{cls} {p:.2f}", fontsize=8)
    curve = fig.add_subplot(grid[2, :])
    x = np.arange(1, steps + 1)
    curve.plot(x, [p for _, p in r.step_top], "o-", color="tab:green", label="probability of the most likely class")
    curve.plot(x, r.utilities, "s-", color="tab:orange", label="utility (expected gain of looking on)")
    curve.plot(x, np.maximum.accumulate(r.utilities), ":", color="tab:orange", lw=1, label="best utility so far")
    reason = stop_reason(list(r.utilities), mu, max_steps)
    if reason.startswith("stopped"):
        curve.axvline(steps, color="tab:red", ls="--", lw=1)
    curve.set(xlabel="step", xticks=x, xlim=(0.5, max(steps, 1) + 0.5))
    curve.set_title(reason, fontsize=9)
    curve.legend(fontsize=8, loc="best")
    save_png(fig, Path(path))
    return shown
