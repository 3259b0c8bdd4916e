"""Baselines of Table 1 that see K frames picked without looking: AvgPooling and LSTM.

Both take frames gathered by ``data.sample_indices`` (uniform or random) or all frames, with a
mask [B, k] marking real frames (padding when a video is shorter than the batch maximum).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from adaframe.standardize import Standardize
from adaframe.utils import AdaframeError


@dataclass
class BaselineConfig:
    feature_dim: int
    num_classes: int
    hidden: int = 1024

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.num_classes, self.hidden) < 1:
            raise AdaframeError(f"invalid BaselineConfig dims: {self}")


class AvgPooling(nn.Module):
    """A frame classifier (the fine-tuned backbone's last layer) whose softmax is averaged over frames."""

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def forward_head(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [..., D] -> per-frame logits [..., C]."""
        return self.head(frames)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames [B, k, D], mask [B, k] -> video probabilities [B, C] (mean of frame softmaxes)."""
        probs = torch.softmax(self.forward_head(frames), dim=-1) * mask[..., None]  # [B, k, C]
        return probs.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


class LSTMBaseline(nn.Module):
    """An LSTM over the K frames in temporal order; the prediction is made at the last frame."""

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.norm = Standardize(cfg.feature_dim, "frames")
        self.lstm = nn.LSTM(cfg.feature_dim, cfg.hidden, batch_first=True)
        self.head = nn.Linear(cfg.hidden, cfg.num_classes)

    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames [B, k, D], mask [B, k] (a prefix of each row) -> logits [B, C] at each last real frame."""
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(self.norm(frames), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h [1, B, H], the state after each sequence's last real frame
        return self.forward_head(h[-1])
