"""The AdaFrame agent (Section 3.1): an LSTM that reads one frame a step and decides where to look next.

At step t the agent sees the backbone feature ``v_t`` of the frame it chose and a context
``u_t`` read from the global memory with its previous state. Its new state ``h_t`` feeds three
heads:

* prediction ``f_p``: class scores ``s_t`` (softmax),
* selection ``f_s``: the mean of a Gaussian (std 0.1) over the relative position in [0, 1] of
  the next frame; the sample (the mean at test time) is clamped to [0, 1] and scaled by the
  video's own length, so the agent may jump anywhere, backward included,
* utility ``f_u``: a critic of the discounted future reward, from ``[h_t, u_t]``.

The first frame sits at a fixed relative position (``start``, the middle by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Normal

from adaframe.data import gather_frames
from adaframe.distributed import Shard, randn
from adaframe.memory import GlobalMemory
from adaframe.standardize import Standardize


@dataclass
class AgentConfig:
    feature_dim: int
    memory_dim: int
    num_classes: int
    hidden: int = 1024
    std: float = 0.1
    """std of the Gaussian selection policy"""
    start: float = 0.5
    """relative position of the first frame"""

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.num_classes, self.hidden) < 1 or self.memory_dim < 0:
            raise ValueError(f"invalid AgentConfig dims: {self}")
        if self.std <= 0 or not 0.0 <= self.start <= 1.0:
            raise ValueError("std must be > 0 and start in [0, 1]")


@dataclass
class Step:
    logits: torch.Tensor  # [B, C]
    location: torch.Tensor  # [B] mean of the next-location Gaussian, in (0, 1)
    utility: torch.Tensor  # [B]
    attention: torch.Tensor  # [B, Td]
    state: tuple[torch.Tensor, torch.Tensor]  # (h, c), each [B, H]


@dataclass
class Rollout:
    """A K-step episode for a batch; step t (0-based) looked at frame ``indices[:, t]``."""

    logits: torch.Tensor  # [B, K, C]
    utilities: torch.Tensor  # [B, K]
    log_probs: torch.Tensor  # [B, K] log pi of the location chosen *after* step t (the last is never used)
    indices: torch.Tensor  # [B, K] frame index looked at in each step


def location_to_index(location: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Relative location in [0, 1] -> frame index in [0, T-1] of each video's own length."""
    idx = torch.floor(location.clamp(0.0, 1.0) * lengths.to(location.dtype)).long()
    return torch.minimum(idx, lengths - 1)


class AdaFrame(nn.Module):
    def __init__(self, cfg: AgentConfig):
        super().__init__()
        self.cfg = cfg
        self.frame_norm = Standardize(cfg.feature_dim, "frames")
        self.memory = GlobalMemory(cfg.hidden, cfg.memory_dim)
        self.lstm = nn.LSTMCell(cfg.feature_dim + cfg.memory_dim, cfg.hidden)
        self.head = nn.Linear(cfg.hidden, cfg.num_classes)  # f_p
        self.select = nn.Linear(cfg.hidden, 1)  # f_s
        self.utility = nn.Linear(cfg.hidden + cfg.memory_dim, 1)  # f_u

    def initial_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.zeros(batch, self.cfg.hidden, device=device)
        return h, h.clone()

    def start_indices(self, lengths: torch.Tensor) -> torch.Tensor:
        return location_to_index(torch.full(lengths.shape, self.cfg.start, device=lengths.device), lengths)

    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        """Class logits from the LSTM state (the prediction head f_p)."""
        return self.head(h)

    def step(self, frame: torch.Tensor, encoded_memory: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> Step:
        """One step: frame [B, D], encoded_memory [B, Td, Dm], state (h, c) [B, H] each."""
        h_prev, _ = state
        u, beta = self.memory(encoded_memory, h_prev)  # u_t from W_h h_{t-1}
        h, c = self.lstm(torch.cat([self.frame_norm(frame), u], dim=-1), state)
        location = torch.sigmoid(self.select(h)).squeeze(-1)  # [B]
        utility = self.utility(torch.cat([h, u], dim=-1)).squeeze(-1)  # [B]
        return Step(self.forward_head(h), location, utility, beta, (h, c))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, memory: torch.Tensor, steps: int,
                explore: bool = True, generator: torch.Generator | None = None, shard: Shard = Shard()) -> Rollout:
        """Run ``steps`` steps on every video (training; see ``inference`` for early stopping).

        Args:
            features: [B, T, D] padded backbone features.
            lengths: [B] valid frames per video.
            memory: [B, Td, Dm] global-memory features (Td may be 0).
            explore: sample locations from the Gaussian policy (training); else take its mean.
            shard: the rows of the global batch that ``features`` holds (data-parallel training).
        """
        encoded = self.memory.encode(memory)
        state = self.initial_state(features.shape[0], features.device)
        idx = self.start_indices(lengths)
        logits, utilities, log_probs, indices = [], [], [], []
        for _ in range(steps):
            frame = gather_frames(features, idx[:, None]).squeeze(1)  # [B, D]
            out = self.step(frame, encoded, state)
            state = out.state
            if explore:
                policy = Normal(out.location, self.cfg.std)
                noise = shard.draw(randn, out.location.shape, generator=generator, device=out.location.device)
                action = (out.location + self.cfg.std * noise).detach()
                log_probs.append(policy.log_prob(action))
            else:
                action = out.location
                log_probs.append(torch.zeros_like(action))
            logits.append(out.logits)
            utilities.append(out.utility)
            indices.append(idx)
            idx = location_to_index(action, lengths)
        return Rollout(torch.stack(logits, 1), torch.stack(utilities, 1), torch.stack(log_probs, 1), torch.stack(indices, 1))
