"""Metrics: mAP (per-class average precision, averaged), top-1, and the GFLOPs a video costs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of one class, as scikit-learn's ``average_precision_score``: sum_n (R_n - R_{n-1}) P_n.

    Tied scores form one threshold, so the value does not depend on the order of ties.
    Returns NaN when there is no positive.
    """
    positives = positives.astype(bool)
    n_pos = positives.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positives[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last_of_tie = np.r_[np.diff(s) != 0, True]  # a threshold ends where the score changes
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def backward_jump_fraction(visited: np.ndarray) -> float:
    """visited [N, K] (-1 after the stop) -> fraction of videos whose next frame was ever before the current one."""
    valid = (visited[:, 1:] >= 0) & (visited[:, :-1] >= 0)  # [N, K-1] both steps taken
    back = valid & (visited[:, 1:] < visited[:, :-1])
    return float(back.any(1).mean()) if len(visited) else float("nan")


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """scores [N, C], labels [N] -> mAP in [0, 1] over the classes that have a positive."""
    aps = [average_precision(scores[:, c], labels == c) for c in range(scores.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    return float(np.mean(aps)) if aps else float("nan")


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((scores.argmax(1) == labels).mean())


@dataclass
class CostModel:
    """GFLOPs (multiply-adds, the paper's convention) of recognising one video.

    ``per video = frames x backbone + memory frames x memory backbone + steps x head``.
    Defaults: ResNet-101 at 224x224 (7.82 GFLOPs a frame) and MobileNetV2 at 112x112 for the
    memory (0.30 GFLOPs at 224 scaled by (112/224)^2 = 0.075 a frame).
    """

    backbone_gflops: float = 7.82
    memory_gflops_per_frame: float = 0.075
    head_gflops_per_step: float = 0.0

    def per_video(self, frames: np.ndarray, steps: np.ndarray, memory_frames: int) -> np.ndarray:
        return frames * self.backbone_gflops + memory_frames * self.memory_gflops_per_frame + steps * self.head_gflops_per_step
