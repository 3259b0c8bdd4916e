"""Fixed per-dimension standardisation of input features, with statistics of the training set.

Backbone features are far from zero-mean, unit-scale: a ResNet's pooled ReLU outputs are all
positive, and their scale depends on the weights (pretrained, fine-tuned or random). Fed raw into
an LSTM, 2048 such inputs saturate its gates, and training stalls at chance (seen on the video
demo's features: cross-entropy stuck at ln C). The recurrent models (AdaFrame for frames and
memory, the LSTM baseline) therefore standardise their inputs with statistics computed once on
the training split and stored in the checkpoint as buffers. AvgPooling, a linear classifier, does
not need it. With the default buffers (mean 0, std 1) the module is the identity.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from adaframe.data.features import FeatureDataset


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature dimension; ``kind`` says which statistics it takes."""

    def __init__(self, dim: int, kind: Literal["frames", "memory"]):
        super().__init__()
        self.kind = kind
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def feature_statistics(dataset: FeatureDataset, max_videos: int = 2000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-dimension mean and std of the frames and the memory of (up to ``max_videos`` evenly spaced) videos.

    A dimension's std is floored at 1e-3 of the median std, so that a (nearly) constant dimension
    is not blown up into noise.
    """
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(len(dataset), max_videos)).round().astype(int))
    stats = {}
    for key in ("features", "memory"):
        n, s, ss = 0, 0.0, 0.0
        for i in picks:
            x = dataset[int(i)][key].astype(np.float64)  # [T or Td, D]
            n, s, ss = n + len(x), s + x.sum(0), ss + (x**2).sum(0)
        if n == 0:  # no memory (Td = 0)
            continue
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean**2, 0.0))
        std = np.maximum(std, 1e-3 * np.median(std) + 1e-12)
        stats["frames" if key == "features" else "memory"] = (mean.astype(np.float32), std.astype(np.float32))
    return stats


def set_statistics(model: nn.Module, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Load ``feature_statistics`` into every ``Standardize`` of ``model``."""
    for m in model.modules():
        if isinstance(m, Standardize) and m.kind in stats:
            mean, std = stats[m.kind]
            m.mean.copy_(torch.from_numpy(mean))
            m.std.copy_(torch.from_numpy(std))
