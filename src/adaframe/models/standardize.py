"""Fixed per-dimension standardisation of input features with statistics of the training split
(``data.features.feature_statistics``), stored in the checkpoint as buffers; every model standardises its frames (and
memory) this way. With the default buffers (mean 0, std 1) the module is the identity. Why: docs/design.md, "Choices
the paper leaves open" (input standardisation).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

class Standardize(nn.Module):
    """``(x - mean) / std`` per feature dimension; ``kind`` says which statistics it takes."""

    def __init__(self, dim: int, kind: Literal["frames", "memory"]):
        super().__init__()
        self.kind = kind
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def set_statistics(model: nn.Module, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Load ``data.features.feature_statistics`` into every ``Standardize`` of ``model``."""
    for m in model.modules():
        if isinstance(m, Standardize) and m.kind in stats:
            mean, std = stats[m.kind]
            m.mean.copy_(torch.from_numpy(mean))
            m.std.copy_(torch.from_numpy(std))
