"""A linear frame classifier whose L2 penalty the val split chooses: a bank of classifiers, one per penalty, trained side by
side (each by the same loss plus its own penalty) and one of them, ``picked``, predicts.

Why: trained on every frame of its training videos, a linear classifier on standardised real CNN features (1280
dimensions, most frames showing nothing of the class) learns its training videos, not their classes; how strongly to
penalise its weights depends on the data, so val decides (docs/design.md: "Baselines that learn what they can").
The bank is cheap: a linear layer per penalty, on features the model reads anyway.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from adaframe.utils import AdaframeError

PENALTIES = (0.0, 0.01, 0.1, 1.0, 10.0)
"""L2 penalties ``lambda`` of the bank: the loss of classifier g is its cross-entropy (a mean over frames or videos) plus
``lambda_g / 2 * ||W_g||^2``; 0 is the unpenalised classifier of the paper's baselines"""


def check_penalties(penalties: tuple[float, ...]) -> None:
    if not penalties or any(not (p >= 0) for p in penalties):
        raise AdaframeError(f"frame_penalties must be one or more L2 penalties >= 0, not {penalties!r}")


class FrameClassifier(nn.Module):
    """``forward(x [..., D]) -> [..., C]``: the picked classifier's logits; ``bank(x) -> [..., G, C]``: every one's."""

    def __init__(self, dim: int, classes: int, penalties: tuple[float, ...] = PENALTIES):
        super().__init__()
        bound = 1 / math.sqrt(dim)  # nn.Linear's initialisation, per classifier
        self.weight = nn.Parameter(torch.empty(len(penalties), classes, dim).uniform_(-bound, bound))  # [G, C, D]
        self.bias = nn.Parameter(torch.empty(len(penalties), classes).uniform_(-bound, bound))  # [G, C]
        self.register_buffer("penalties", torch.tensor(penalties, dtype=torch.float32))  # [G]
        self.register_buffer("picked", torch.tensor(0))  # the classifier that predicts: set on val (``train.loop.pick_penalty``)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[self.picked], self.bias[self.picked])

    def bank(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., D] -> [..., G, C], every classifier's logits (for training and for the val split's choice)."""
        return torch.einsum("...d,gcd->...gc", x, self.weight) + self.bias

    def penalty(self) -> torch.Tensor:
        """``sum_g lambda_g / 2 * ||W_g||^2`` (biases unpenalised)."""
        return 0.5 * (self.penalties * self.weight.pow(2).sum((1, 2))).sum()

    def pick(self, g: int) -> None:
        self.picked.fill_(g)

    @property
    def picked_penalty(self) -> float:
        return float(self.penalties[self.picked])
