"""FrameGlimpse and FastForward (Section 4.2): agents that learn where to look *and when to stop*.

Both read one frame a step with an LSTM, with its relative position, predict the class at every step, and have a
stop head (``StopAgent.act``) and a utility head (the policy gradient's baseline). **FrameGlimpse** (Yeung et al., CVPR
2016) starts in the middle and moves anywhere (a Gaussian over the next relative position); **FastForward** (Fan et
al., IJCAI 2018) starts at the first frame and only jumps forward by one of ``jumps`` (fractions of the video's
length). The ``-G`` variants read the global memory as AdaFrame does (``memory_dim > 0``; without it ``u_t = 0``).
Details the papers leave open: docs/design.md, "Choices the paper leaves open".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal

from adaframe.distributed import exponential, rand, randn
from adaframe.models.positions import fixed_start, location_to_index
from adaframe.models.recurrent import Decision, Exploration, Looked, RecurrentAgent, State, Step
from adaframe.utils import AdaframeError

DEFAULT_JUMPS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2)


@dataclass
class StopAgentConfig:
    feature_dim: int
    memory_dim: int
    """0: no global memory (FrameGlimpse / FastForward); > 0: the -G variants"""
    num_classes: int
    hidden: int = 1024
    policy_std: float = 0.1
    """FrameGlimpse: std of the Gaussian location policy"""
    jumps: tuple[float, ...] = DEFAULT_JUMPS
    """FastForward: forward jumps as fractions of the video's length (at least one frame each)"""
    stop_bias: float = -2.0
    """initial bias of the stop head: p(stop) = 0.12, so early episodes are long enough to learn from"""

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.num_classes, self.hidden) < 1 or self.memory_dim < 0:
            raise AdaframeError(f"invalid StopAgentConfig dims: {self}")
        if self.policy_std <= 0 or not self.jumps or min(self.jumps) <= 0:
            raise AdaframeError("policy_std must be > 0 and jumps a non-empty tuple of positive fractions")
        self.jumps = tuple(float(j) for j in self.jumps)


class StopAgent(RecurrentAgent):
    """The parts FrameGlimpse and FastForward share; subclasses define the start and the move."""

    has_stop_head = True
    start: float = 0.5

    def __init__(self, cfg: StopAgentConfig):
        super().__init__(cfg, cfg.feature_dim + 1 + cfg.memory_dim)  # +1: where the frame is
        self.utility = nn.Linear(cfg.hidden + cfg.memory_dim, 1)
        self.stop = nn.Linear(cfg.hidden, 1)
        nn.init.constant_(self.stop.bias, cfg.stop_bias)
        self.move = self.move_head()

    def act(self, out: Step, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int,
            explore: Exploration | None, last: bool) -> Decision:
        """After each step, stop (Bernoulli of the stop head) or go on and move (the agent's move distribution); the
        decision's log-probability covers both. After the last step the stop is forced: its log-probability is 0, but
        the noise is still drawn, so that every step takes the same draws."""
        idx = looked.frames[rows, step]  # [A] the frame just looked at
        if explore is None:
            return Decision(self.next_index(self.greedy_action(out.policy), idx, lengths), torch.zeros_like(out.utility))
        stop_policy = Bernoulli(logits=out.stop_logit)
        p_stop = torch.sigmoid(out.stop_logit).detach()  # [A]
        stop = explore.draw(rand, p_stop.shape, p_stop.device) < p_stop  # Bernoulli(p_stop)
        move_policy = self.move_policy(out.policy)
        action = self.sample_action(out.policy, explore)
        if last:  # the stop is forced: nothing is decided
            log_prob = torch.zeros_like(p_stop)
        else:  # log pi(decision): stop, or go on *and* move
            log_p_stop = stop_policy.log_prob(stop.float())  # [A] log p(stop) or log p(go on)
            log_p_move = (~stop).float() * move_policy.log_prob(action)  # [A] the move counts only when it goes on
            log_prob = log_p_stop + log_p_move
        return Decision(self.next_index(action, idx, lengths), log_prob, stop)

    def move_head(self) -> nn.Module:
        raise NotImplementedError

    def first(self, encoded: torch.Tensor, lengths: torch.Tensor, looked: Looked, explore: Exploration | None) -> Decision:
        """The fixed start: no decision."""
        return fixed_start(self.start, lengths)

    def where(self, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int) -> torch.Tensor:
        """[A] the relative position of the frame just looked at, which the LSTM reads with it."""
        return looked.frames[rows, step].float() / lengths.float()

    def step(self, frame: torch.Tensor, encoded: torch.Tensor, state: State, where: torch.Tensor) -> Step:
        """frame [B, D], encoded [B, Td, Dm], state (h, c) [B, H], where [B]: the frame's position in [0, 1]."""
        u, _ = self.memory(encoded, state[0])
        h, c = self.lstm(torch.cat([self.frame_norm(frame), where[:, None], u], dim=-1), state)
        utility = self.utility(torch.cat([h, u], dim=-1)).squeeze(-1)
        logits, stop_logit = self.forward_head(h), self.stop(h).squeeze(-1)
        return Step(logits, self.move_output(h), utility, (h, c), stop_logit)

    def move_output(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def move_policy(self, move: torch.Tensor) -> torch.distributions.Distribution:
        raise NotImplementedError

    def sample_action(self, move: torch.Tensor, explore: Exploration) -> torch.Tensor:
        raise NotImplementedError

    def greedy_action(self, move: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def next_index(self, action: torch.Tensor, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The frame the action leads to from frame ``idx`` (all [A])."""
        raise NotImplementedError


class FrameGlimpse(StopAgent):
    """Look anywhere next (Gaussian over the relative position), stop when the stop head says so."""

    start = 0.5

    def move_head(self) -> nn.Module:
        return nn.Linear(self.cfg.hidden, 1)

    def move_output(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.move(h)).squeeze(-1)  # [B] mean location

    def move_policy(self, move: torch.Tensor) -> Normal:
        return Normal(move, self.cfg.policy_std)

    def sample_action(self, move: torch.Tensor, explore: Exploration) -> torch.Tensor:
        return (move + self.cfg.policy_std * explore.draw(randn, move.shape, move.device)).detach()

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

    def sample_action(self, move: torch.Tensor, explore: Exploration) -> torch.Tensor:
        # A categorical draw as argmax(p / Exp(1)) (what torch.multinomial does for one sample), so that the
        # noise can be drawn for the whole global batch.
        q = explore.draw(exponential, move.shape, move.device)  # [B, J]
        return (torch.softmax(move.detach(), -1) / q).argmax(-1)  # [B]

    def greedy_action(self, move: torch.Tensor) -> torch.Tensor:
        return move.argmax(-1)

    def next_index(self, action: torch.Tensor, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        jumps = torch.tensor(self.cfg.jumps, device=idx.device)[action]  # [B] fraction of the length
        step = torch.clamp(torch.round(jumps * lengths.float()).long(), min=1)
        return torch.minimum(idx + step, lengths - 1)  # at the end it stays on the last frame
