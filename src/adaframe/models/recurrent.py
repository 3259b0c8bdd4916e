"""The contract of every recurrent agent (AdaFrame, FrameGlimpse, FastForward, with or without memory): an LSTM that
reads one frame a step, driven by the rollouts (``rl/rollout.py``) through five calls: ``encode(memory)`` and
``initial_state`` once; ``first(...)``, the first frame (a fixed start or a choice from the memory); at every step
``where(...)`` (what the agent knows of where it is) and ``step(frame, encoded, state, where) -> Step`` (class logits
from ``forward_head(h)``, the policy head's output, the utility); and ``act(step, ...) -> Decision`` (the next
frame, the decision's log-probability, a sampled stop). See docs/architecture.md, "The agent contract".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from adaframe.distributed import Shard
from adaframe.models.memory import GlobalMemory
from adaframe.models.standardize import Standardize

State = tuple[torch.Tensor, ...]  # (h, c) each [B, H], then whatever else an agent carries from step to step (one row a video)


@dataclass
class Step:
    """What one step of an agent outputs for the A videos it ran on."""

    logits: torch.Tensor  # [A, C]
    policy: torch.Tensor  # the policy head's output, read by ``act``: AdaFrame's selection, a stop agent's move
    utility: torch.Tensor  # [A] the critic's value of the state
    state: State
    stop_logit: torch.Tensor | None = None  # [A] logit of p(stop after this step); None: the agent has no stop head
    parts: torch.Tensor | None = None  # [A, P, C] AdaFrame's pooled, recurrent (and temporal) logits when ``logits`` mixes them


@dataclass
class Decision:
    """A policy's decision after a step (or before the first) for the A videos it ran on."""

    index: torch.Tensor  # [A] the frame to look at next
    log_prob: torch.Tensor  # [A] log pi of the decision; 0 where nothing was decided (a fixed start, a forced stop)
    stop: torch.Tensor | None = None  # [A] bool: a sampled stop (training of agents with a stop head)


@dataclass
class Exploration:
    """Sample the policy (training) with noise from ``generator``, drawn for the global batch (``Shard.draw``)."""

    generator: torch.Generator | None = None
    shard: Shard = Shard()

    def draw(self, fn: Callable[..., torch.Tensor], shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return self.shard.draw(fn, shape, generator=self.generator, device=device)


@dataclass
class Looked:
    """What each video of a batch has looked at, one row per video (the slots policy also reads its slots and scans)."""

    seen: torch.Tensor  # [B, Td] bool: memory slots whose stretch of time overlaps a frame already looked at
    scans: torch.Tensor  # [B] scan actions taken so far: the next scan goes to scan position ``scans``
    frames: torch.Tensor  # [B, K] frames looked at, in order; -1 for steps not taken yet
    scan: torch.Tensor  # [K] the uniform scan's positions, in its order (``positions.scan_positions``)

    @classmethod
    def start(cls, batch: int, slots: int, scan: torch.Tensor) -> "Looked":
        device, steps = scan.device, len(scan)
        return cls(torch.zeros(batch, slots, dtype=torch.bool, device=device), torch.zeros(batch, dtype=torch.long, device=device),
                   torch.full((batch, steps), -1, dtype=torch.long, device=device), scan)

    def mark(self, rows: torch.Tensor, idx: torch.Tensor, lengths: torch.Tensor, step: int) -> None:
        """Videos ``rows`` look at frames ``idx`` (of ``lengths`` frames) in ``step``: mark every slot the frame's
        stretch of time ``[idx / T, (idx + 1) / T)`` overlaps (one, or several in a video shorter than Td)."""
        self.frames[rows, step] = idx
        slots = self.seen.shape[1]
        if slots:
            first = idx * slots // lengths  # [A] integer arithmetic: no rounding at slot edges
            last = ((idx + 1) * slots + lengths - 1) // lengths - 1  # [A] inclusive
            j = torch.arange(slots, device=idx.device)[None, :]  # [1, Td]
            self.seen = self.seen.clone()  # a new tensor: autograd keeps the masks earlier steps used
            self.seen[rows] |= (j >= first[:, None]) & (j <= last[:, None])

    def blocked(self, rows: torch.Tensor, lengths: torch.Tensor, step: int, scan_exhausted: torch.Tensor | None = None) -> torch.Tensor:
        """[A, Td + 3] actions of the slots policy that would look at nothing new, after ``step``: seen slots, the scan
        where ``scan_exhausted`` [A] (every scan position looked at), and the frame before or after the last one when it
        was looked at already or lies outside the video."""
        frames = self.frames[rows]  # [A, K]
        neighbours = torch.stack([frames[:, step] - 1, frames[:, step] + 1], dim=1)  # [A, 2]
        done = (neighbours[:, :, None] == frames[:, None, :]).any(-1)  # [A, 2]
        outside = (neighbours < 0) | (neighbours >= lengths[:, None])
        scan = torch.zeros_like(done[:, :1]) if scan_exhausted is None else scan_exhausted[:, None]
        return torch.cat([self.seen[rows], scan, done | outside], dim=1)


class RecurrentAgent(nn.Module):
    """What AdaFrame, FrameGlimpse and FastForward share: the input standardisation, the global memory, the LSTM and
    the prediction head f_p. Subclasses add their policy and utility heads and define the five calls above."""

    has_stop_head: ClassVar[bool] = False
    """the agent decides when to stop (FrameGlimpse, FastForward); AdaFrame runs K steps or stops by a rule"""
    chooses_first: ClassVar[bool] = False
    """the first frame is a decision of the policy (credited in the policy gradient), not a fixed start"""

    def __init__(self, cfg: Any, lstm_inputs: int):
        super().__init__()
        self.cfg = cfg
        self.frame_norm = Standardize(cfg.feature_dim, "frames")
        self.memory = GlobalMemory(cfg.hidden, cfg.memory_dim)
        self.lstm = nn.LSTMCell(lstm_inputs, cfg.hidden)
        self.head = nn.Linear(cfg.hidden, cfg.num_classes)  # f_p

    def act(self, out: Step, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int,
            explore: Exploration | None, last: bool) -> Decision | None:
        """The policy's decision after ``step`` for videos ``rows`` (of ``lengths`` frames): the next frame, its
        log-probability, a sampled stop. ``explore`` None: the most likely action. ``last``: no frame follows (an agent
        may have nothing to decide then: None)."""
        raise NotImplementedError

    def initial_state(self, batch: int, device: torch.device, steps: int = 1) -> State:
        """The state before the first step of ``batch`` videos of at most ``steps`` steps: (h, c) [B, H] each."""
        h = torch.zeros(batch, self.cfg.hidden, device=device)
        return h, h.clone()

    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        """Class logits [B, C] from the LSTM state (the prediction head f_p)."""
        return self.head(h)

    def inference_positions(self, lengths: torch.Tensor, steps: int) -> torch.Tensor | None:
        """[B, K] fixed frames that inference looks at instead of the policy's choices, or None (the policy chooses)."""
        return None

    def encode(self, memory: torch.Tensor) -> torch.Tensor:
        """memory [B, Td, Dm] -> the global memory the steps read [B, Td, Dm] (``GlobalMemory.encode``)."""
        return self.memory.encode(memory)

    def first(self, encoded: torch.Tensor, lengths: torch.Tensor, looked: Looked, explore: Exploration | None) -> Decision:
        """The first frame of each video, before any step (``encoded``: [B, Td, Dm] from ``encode``)."""
        raise NotImplementedError

    def where(self, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int) -> torch.Tensor:
        """What the agent knows of where it is in ``step``, which ``step`` reads (``lengths``: the rows' frames)."""
        raise NotImplementedError

    def step(self, frame: torch.Tensor, encoded: torch.Tensor, state: State, where: torch.Tensor) -> Step:
        """One step: frame [A, D], encoded [A, Td, Dm], state (h, c) [A, H] each, ``where`` from ``self.where``."""
        raise NotImplementedError

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("an agent runs through rollout.rollout, one step at a time (see recurrent.py)")

    def flops_probe(self, memory_frames: int, device: torch.device | str = "cpu", steps: int = 1) -> Callable[[], object]:
        """One step at batch 1 on top of the backbone, for the FLOP counter: memory attention, LSTM and heads (of a
        rollout of ``steps`` steps)."""
        frame = torch.zeros(1, self.cfg.feature_dim, device=device)
        memory = torch.zeros(1, memory_frames, self.cfg.memory_dim, device=device)
        looked = Looked.start(1, memory_frames, torch.full((1,), 0.5, device=device))
        looked.frames[:, 0] = 0
        rows, lengths = torch.zeros(1, dtype=torch.long, device=device), torch.ones(1, dtype=torch.long, device=device)
        where = self.where(looked, rows, lengths, 0)
        return lambda: self.step(frame, self.encode(memory), self.initial_state(1, frame.device, steps), where)
