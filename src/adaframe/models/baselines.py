"""Baselines of Table 1 that see K frames picked without looking: AvgPooling and LSTM.

Both take frames gathered by ``data.sample_indices`` (uniform or random) or all frames, with a
mask [B, k] marking real frames (padding when a video is shorter than the batch maximum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from adaframe.models.frame_classifier import PENALTIES, FrameClassifier, check_penalties
from adaframe.models.standardize import Standardize
from adaframe.utils import AdaframeError


@dataclass
class AvgPoolingConfig:
    feature_dim: int
    num_classes: int
    frame_penalties: tuple[float, ...] = PENALTIES
    """the L2 penalties of its bank of frame classifiers, one of which the val split picks (``models/frame_classifier.py``)"""

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.num_classes) < 1:
            raise AdaframeError(f"invalid AvgPoolingConfig dims: {self}")
        check_penalties(self.frame_penalties)


@dataclass
class LSTMConfig:
    feature_dim: int
    num_classes: int
    hidden: int = 1024

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.num_classes, self.hidden) < 1:
            raise AdaframeError(f"invalid LSTMConfig dims: {self}")


class Baseline(nn.Module):
    """The contract of both baselines: ``forward(frames [B, k, D], mask [B, k]) -> video logits [B, C]``, their
    probabilities, and one step at batch 1 for the FLOP counter."""

    cfg: AvgPoolingConfig | LSTMConfig

    def probs(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Video probabilities [B, C]: the softmax of the logits."""
        return torch.softmax(self(frames, mask), dim=-1)

    def flops_probe(self, memory_frames: int = 0, device: torch.device | str = "cpu", steps: int = 1) -> Callable[[], object]:
        raise NotImplementedError


class AvgPooling(Baseline):
    """A frame classifier (the fine-tuned backbone's last layer) whose softmax is averaged over frames. It reads frames
    standardised with the training split's statistics, as every model does, and its L2 penalty is chosen on val (why
    both: docs/design.md, "Baselines that learn what they can")."""

    def __init__(self, cfg: AvgPoolingConfig):
        super().__init__()
        self.cfg = cfg
        self.norm = Standardize(cfg.feature_dim, "frames")
        self.head = FrameClassifier(cfg.feature_dim, cfg.num_classes, tuple(cfg.frame_penalties))

    def forward_head(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [..., D] -> per-frame logits [..., C] (the picked classifier's)."""
        return self.head(self.norm(frames))

    def frame_bank(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [..., D] -> every classifier's per-frame logits [..., G, C]."""
        return self.head.bank(self.norm(frames))

    def frame_classifier(self) -> FrameClassifier:
        return self.head

    def probs(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames [B, k, D], mask [B, k] -> video probabilities [B, C]: the mean of the real frames' softmaxes."""
        probs = torch.softmax(self.forward_head(frames), dim=-1) * mask[..., None]  # [B, k, C]
        return probs.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """-> video logits [B, C]: the log of ``probs``, whose softmax is that mean (up to rounding: evaluation ranks
        videos by ``probs`` itself)."""
        return torch.log(self.probs(frames, mask))

    def flops_probe(self, memory_frames: int = 0, device: torch.device | str = "cpu", steps: int = 1) -> Callable[[], object]:
        """The frame classifier on one frame."""
        frame = torch.zeros(1, self.cfg.feature_dim, device=device)
        return lambda: self.forward_head(frame)


class LSTMBaseline(Baseline):
    """An LSTM over the K frames in temporal order; the prediction is made at the last frame."""

    def __init__(self, cfg: LSTMConfig):
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

    def flops_probe(self, memory_frames: int = 0, device: torch.device | str = "cpu", steps: int = 1) -> Callable[[], object]:
        """One LSTM cell step and the classifier (``nn.LSTM`` itself is invisible to the FLOP counter, so the step runs
        as ``torch.lstm_cell`` on the same weights)."""
        frame = torch.zeros(1, self.cfg.feature_dim, device=device)
        h = torch.zeros(1, self.cfg.hidden, device=device)
        lstm = self.lstm
        return lambda: self.forward_head(torch.lstm_cell(frame, (h, h), lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0,
                                                         lstm.bias_hh_l0)[0])
