"""A one-step sampler in the spirit of OCSampler (Lin et al., CVPR 2022), adapted to the global memory: a policy
scores the memory's Td slots (the times ``(j + 0.5) / Td`` its frames were taken) from the memory alone and picks the
K best at once; a pooled frame classifier (the mean of a frame classifier's softmax) reads the K frames. Its loss is
``rl.losses.sampler_loss``; how it differs from OCSampler: docs/design.md, "Choices the paper leaves open".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from adaframe.models.frame_classifier import PENALTIES, FrameClassifier, check_penalties
from adaframe.models.memory import positional_encoding
from adaframe.models.standardize import Standardize
from adaframe.utils import AdaframeError


@dataclass
class SamplerConfig:
    feature_dim: int
    memory_dim: int
    num_classes: int
    memory_frames: int
    """Td: the slots the policy chooses among"""
    frames: int
    """K: the frames it picks in training (at most Td)"""
    hidden: int = 128
    """width of the policy's scoring network"""
    frame_penalties: tuple[float, ...] = PENALTIES
    """the L2 penalties of its bank of frame classifiers, one of which the val split picks (``models/frame_classifier.py``)"""

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.memory_dim, self.num_classes, self.hidden, self.memory_frames, self.frames) < 1:
            raise AdaframeError(f"the sampler needs a global memory and positive sizes: {self}")
        check_frames(self.frames, self.memory_frames)
        check_penalties(self.frame_penalties)


def check_frames(k: int, slots: int) -> None:
    if k > slots:
        raise AdaframeError(f"the sampler picks K of the global memory's {slots} slots: K = {k} is more (use --frames <= {slots})")


class OneStepSampler(nn.Module):
    """``select(memory, lengths, K)`` -> the K frames, ``probs(frames)`` -> the pooled classifier's video prediction."""

    def __init__(self, cfg: SamplerConfig):
        super().__init__()
        self.cfg = cfg
        self.frame_norm = Standardize(cfg.feature_dim, "frames")
        self.memory_norm = Standardize(cfg.memory_dim, "memory")
        self.classifier = FrameClassifier(cfg.feature_dim, cfg.num_classes, tuple(cfg.frame_penalties))
        # A slot's score reads the slot (its features and position) and the whole video (the mean over slots).
        self.policy = nn.Sequential(nn.Linear(2 * cfg.memory_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))

    def slot_logits(self, memory: torch.Tensor) -> torch.Tensor:
        """memory [B, Td, Dm] -> the policy's logits over the slots [B, Td]."""
        m = self.memory_norm(memory) + positional_encoding(memory.shape[1], memory.shape[2]).to(memory)  # [B, Td, Dm]
        video = m.mean(1, keepdim=True).expand_as(m)  # [B, Td, Dm]
        return self.policy(torch.cat([m, video], -1)).squeeze(-1) / math.sqrt(2.0)  # [B, Td]

    def frame_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [..., D] -> the (picked) classifier's logits [..., C]."""
        return self.classifier(self.frame_norm(frames))

    def frame_bank(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [..., D] -> every classifier's logits [..., G, C]."""
        return self.classifier.bank(self.frame_norm(frames))

    def frame_classifier(self) -> FrameClassifier:
        return self.classifier

    def probs(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, k, D] -> video probabilities [B, C]: the mean of the frames' softmaxes."""
        return torch.softmax(self.frame_logits(frames), -1).mean(1)

    def select(self, memory: torch.Tensor, lengths: torch.Tensor, k: int) -> torch.Tensor:
        """The K most likely slots' frames [B, K], in temporal order."""
        check_frames(k, memory.shape[1])
        slots = self.slot_logits(memory).topk(k, dim=1).indices.sort(dim=1).values  # [B, K]
        return slot_frames(slots, memory.shape[1], lengths)

    def flops_probe(self, memory_frames: int, device: torch.device | str = "cpu", steps: int = 1) -> Callable[[], object]:
        """The classifier on one frame and the policy over the memory (counted per frame: an overestimate)."""
        frame = torch.zeros(1, 1, self.cfg.feature_dim, device=device)
        memory = torch.zeros(1, memory_frames, self.cfg.memory_dim, device=device)
        return lambda: (self.probs(frame), self.slot_logits(memory))


def slot_frames(slots: torch.Tensor, td: int, lengths: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Slots [B, K] of Td -> frame indices [B, K]: the slot's centre ``floor((j + 0.5) T / Td)`` (integer arithmetic, as
    AdaFrame's slots), or ``offset`` in [0, 1) within its stretch."""
    t = lengths[:, None]  # [B, 1]
    if offset is None:
        return torch.minimum((2 * slots + 1) * t // (2 * td), t - 1)
    idx = torch.floor((slots.to(torch.float32) + offset) / td * t.to(torch.float32)).long()
    return torch.minimum(idx, t - 1)


def plackett_luce_log_prob(logits: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """log p of drawing ``chosen`` [B, K] in that order without replacement from softmax(``logits`` [B, Td]) -> [B]."""
    taken = torch.zeros_like(logits, dtype=torch.bool)
    log_prob = logits.new_zeros(logits.shape[0])
    for i in range(chosen.shape[1]):
        log_prob = log_prob + logits.gather(1, chosen[:, i:i + 1]).squeeze(1) - torch.logsumexp(logits.masked_fill(taken, float("-inf")), 1)
        taken = taken.scatter(1, chosen[:, i:i + 1], True)
    return log_prob
