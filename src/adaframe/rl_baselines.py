"""FrameGlimpse and FastForward (Section 4.2): agents that learn where to look *and when to stop*.

Both read one frame a step with an LSTM, like AdaFrame, and predict the class at every step. What
differs from AdaFrame is how they move and how they stop:

* **FrameGlimpse** (Yeung et al., CVPR 2016): the observation is the frame's feature *and its
  relative position*; a location head picks the next position anywhere in the video (a Gaussian,
  as AdaFrame's selection head), and a binary *stop* head (Yeung's prediction indicator) ends the
  episode.
* **FastForward** (Fan et al., IJCAI 2018): starts at the first frame and only moves forward, by
  one of a fixed set of jumps (fractions of the video's length, so one set fits 30-s and 10-min
  videos), chosen by a categorical policy; a stop branch ends the episode.

The ``-G`` variants read AdaFrame's global memory the same way AdaFrame does (``memory_dim > 0``);
without it the context ``u_t`` is zero. Both are trained with REINFORCE on AdaFrame's reward
(there are no temporal boundaries to reward detections), minus a cost per extra step: the margin
reward is never negative, so without a price on frames stopping would never pay. A value head
(``utility``, as AdaFrame's) is the baseline of the policy gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal

from adaframe.agent import location_to_index
from adaframe.data import gather_frames
from adaframe.distributed import Shard, exponential, rand, randn
from adaframe.memory import GlobalMemory
from adaframe.standardize import Standardize
from adaframe.utils import AdaframeError

DEFAULT_JUMPS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)


@dataclass
class StopAgentConfig:
    feature_dim: int
    memory_dim: int
    """0: no global memory (FrameGlimpse / FastForward); > 0: the -G variants"""
    num_classes: int
    hidden: int = 1024
    std: float = 0.1
    """FrameGlimpse: std of the Gaussian location policy"""
    jumps: tuple[float, ...] = DEFAULT_JUMPS
    """FastForward: forward jumps as fractions of the video's length (at least one frame each)"""
    stop_bias: float = -2.0
    """initial bias of the stop head: p(stop) = 0.12, so early episodes are long enough to learn from"""

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.num_classes, self.hidden) < 1 or self.memory_dim < 0:
            raise AdaframeError(f"invalid StopAgentConfig dims: {self}")
        if self.std <= 0 or not self.jumps or min(self.jumps) <= 0:
            raise AdaframeError("std must be > 0 and jumps a non-empty tuple of positive fractions")
        self.jumps = tuple(float(j) for j in self.jumps)


@dataclass
class StopStep:
    logits: torch.Tensor  # [B, C]
    utility: torch.Tensor  # [B] value estimate, the REINFORCE baseline
    stop_logit: torch.Tensor  # [B] logit of p(stop after this step)
    move: torch.Tensor  # FrameGlimpse: [B] mean location in (0, 1); FastForward: [B, J] jump logits
    attention: torch.Tensor  # [B, Td]
    state: tuple[torch.Tensor, torch.Tensor]  # (h, c), each [B, H]


@dataclass
class StopRollout:
    """A K-step episode for a batch, with each video's sampled stop; steps after the stop are masked."""

    logits: torch.Tensor  # [B, K, C]
    utilities: torch.Tensor  # [B, K]
    log_probs: torch.Tensor  # [B, K] log pi of the decision after step t: stop, or go on and where
    alive: torch.Tensor  # [B, K] bool: step t was taken (t <= the stop step)
    indices: torch.Tensor  # [B, K]


class StopAgent(nn.Module):
    """The parts FrameGlimpse and FastForward share; subclasses define the start and the move."""

    start: float = 0.5

    def __init__(self, cfg: StopAgentConfig):
        super().__init__()
        self.cfg = cfg
        self.frame_norm = Standardize(cfg.feature_dim, "frames")
        self.memory = GlobalMemory(cfg.hidden, cfg.memory_dim)
        self.lstm = nn.LSTMCell(cfg.feature_dim + 1 + cfg.memory_dim, cfg.hidden)  # +1: where the frame is
        self.head = nn.Linear(cfg.hidden, cfg.num_classes)
        self.utility = nn.Linear(cfg.hidden + cfg.memory_dim, 1)
        self.stop = nn.Linear(cfg.hidden, 1)
        nn.init.constant_(self.stop.bias, cfg.stop_bias)
        self.move = self.move_head()

    def move_head(self) -> nn.Module:
        raise NotImplementedError

    def initial_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.zeros(batch, self.cfg.hidden, device=device)
        return h, h.clone()

    def start_indices(self, lengths: torch.Tensor) -> torch.Tensor:
        return location_to_index(torch.full(lengths.shape, self.start, device=lengths.device), lengths)

    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h)

    def step(self, frame: torch.Tensor, encoded_memory: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor],
             position: torch.Tensor) -> StopStep:
        """frame [B, D], encoded_memory [B, Td, Dm], state (h, c) [B, H], position [B] in [0, 1]."""
        u, beta = self.memory(encoded_memory, state[0])
        h, c = self.lstm(torch.cat([self.frame_norm(frame), position[:, None], u], dim=-1), state)
        utility = self.utility(torch.cat([h, u], dim=-1)).squeeze(-1)
        return StopStep(self.forward_head(h), utility, self.stop(h).squeeze(-1), self.move_output(h), beta, (h, c))

    def move_output(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def move_policy(self, move: torch.Tensor) -> torch.distributions.Distribution:
        raise NotImplementedError

    def sample_action(self, move: torch.Tensor, generator: torch.Generator | None, shard: Shard) -> torch.Tensor:
        raise NotImplementedError

    def next_index(self, action: torch.Tensor, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The frame the action leads to from frame ``idx`` (all [B])."""
        raise NotImplementedError

    def greedy_action(self, move: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, memory: torch.Tensor, steps: int,
                generator: torch.Generator | None = None, shard: Shard = Shard()) -> StopRollout:
        """Sample episodes of at most ``steps`` steps (training). Every video runs all steps, masked after its stop.

        Args:
            features: [B, T, D]; lengths: [B]; memory: [B, Td, Dm].
            shard: the rows of the global batch that ``features`` holds (data-parallel training).
        """
        b, device = features.shape[0], features.device
        encoded = self.memory.encode(memory)
        state = self.initial_state(b, device)
        idx = self.start_indices(lengths)
        alive = torch.ones(b, dtype=torch.bool, device=device)
        logits, utilities, log_probs, alives, indices = [], [], [], [], []
        for t in range(steps):
            frame = gather_frames(features, idx[:, None]).squeeze(1)  # [B, D]
            out = self.step(frame, encoded, state, idx.float() / lengths.float())
            state = out.state
            stop_policy = Bernoulli(logits=out.stop_logit)
            p_stop = torch.sigmoid(out.stop_logit).detach()  # [B]
            stop = shard.draw(rand, p_stop.shape, generator=generator, device=device) < p_stop  # Bernoulli(p_stop)
            move_policy = self.move_policy(out.move)
            action = self.sample_action(out.move, generator, shard)
            # log pi(decision): stop, or go on *and* move; the last step's stop is forced, not decided.
            lp = stop_policy.log_prob(stop.float()) + (~stop).float() * move_policy.log_prob(action)
            logits.append(out.logits)
            utilities.append(out.utility)
            log_probs.append(lp if t < steps - 1 else torch.zeros_like(lp))
            alives.append(alive)
            indices.append(idx)
            alive = alive & ~stop
            idx = self.next_index(action, idx, lengths)
        return StopRollout(torch.stack(logits, 1), torch.stack(utilities, 1), torch.stack(log_probs, 1),
                           torch.stack(alives, 1), torch.stack(indices, 1))


class FrameGlimpse(StopAgent):
    """Look anywhere next (Gaussian over the relative position), stop when the stop head says so."""

    start = 0.5

    def move_head(self) -> nn.Module:
        return nn.Linear(self.cfg.hidden, 1)

    def move_output(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.move(h)).squeeze(-1)  # [B] mean location

    def move_policy(self, move: torch.Tensor) -> Normal:
        return Normal(move, self.cfg.std)

    def sample_action(self, move: torch.Tensor, generator: torch.Generator | None, shard: Shard) -> torch.Tensor:
        return (move + self.cfg.std * shard.draw(randn, move.shape, generator=generator, device=move.device)).detach()

    def greedy_action(self, move: torch.Tensor) -> torch.Tensor:
        return move

    def next_index(self, action: torch.Tensor, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return location_to_index(action, lengths)


class FastForward(StopAgent):
    """Start at the first frame, jump forward by one of ``cfg.jumps``, stop when the stop branch says so."""

    start = 0.0

    def move_head(self) -> nn.Module:
        return nn.Linear(self.cfg.hidden, len(self.cfg.jumps))

    def move_output(self, h: torch.Tensor) -> torch.Tensor:
        return self.move(h)  # [B, J] logits

    def move_policy(self, move: torch.Tensor) -> Categorical:
        return Categorical(logits=move)

    def sample_action(self, move: torch.Tensor, generator: torch.Generator | None, shard: Shard) -> torch.Tensor:
        # A categorical draw as argmax(p / Exp(1)) (what torch.multinomial does for one sample), so that the
        # noise can be drawn for the whole global batch.
        q = shard.draw(exponential, move.shape, generator=generator, device=move.device)  # [B, J]
        return (torch.softmax(move.detach(), -1) / q).argmax(-1)  # [B]

    def greedy_action(self, move: torch.Tensor) -> torch.Tensor:
        return move.argmax(-1)

    def next_index(self, action: torch.Tensor, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        jumps = torch.tensor(self.cfg.jumps, device=idx.device)[action]  # [B] fraction of the length
        step = torch.clamp(torch.round(jumps * lengths.float()).long(), min=1)
        return torch.minimum(idx + step, lengths - 1)  # at the end it stays on the last frame
