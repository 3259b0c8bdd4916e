"""The AdaFrame agent (Section 3.1): an LSTM that reads one frame a step and decides where to look next.

At step t the agent sees the backbone feature ``v_t`` of the frame it chose and a context
``u_t`` read from the global memory by attention. Its new state ``h_t`` feeds three heads:

* prediction ``f_p``: class scores ``s_t`` (softmax),
* selection ``f_s``: where to look next (``selection``, below),
* utility ``f_u``: a critic of the discounted future reward, from ``[h_t, u_t]``.

Two choices, each a named option (``AgentConfig``), separate the paper's agent from the default one:

``memory_read``
    ``lstm`` (the paper): ``u_t`` is queried with ``h_{t-1}`` and the LSTM reads ``[v_t, u_t]``.
    ``policy``: the LSTM reads ``v_t`` alone; ``u_t`` is queried with ``h_t`` and feeds only the
    selection and utility heads. The memory then tells the agent *where* to look, and the prediction
    rests on the frames it looked at. Read by the LSTM, the memory (a whole-video summary of every
    training video) lets the classifier fit the training set without looking at good frames: it
    memorises (training cross-entropy near 0, 10-30 mAP lower on val), the margin is near 1 after
    one step, and the policy gets no reward to learn from.
``selection``
    ``gaussian`` (the paper): ``sigmoid(f_s(h_t))`` is the mean of a Gaussian (std 0.1) over the
    relative position of the next frame; the first frame sits at ``start`` (the middle).
    ``slots``: a categorical choice among Td + 3 actions: the global memory's Td slots (the times its
    frames were taken, ``(j + 0.5) / Td``), scored by attention of a query from ``[h_t, u_t]`` on the
    memory; *scan*, the next position of a uniform scan (the centres of K equal segments, coarse to
    fine: the middle first); and *back* / *forward*, the frame just before or after the last one (a
    closer look at what it just saw). Actions that would look at nothing new are masked (slots that a
    frame already looked at overlaps, neighbours already looked at), so it never pays for a frame
    twice; the first frame is chosen the same way, from the memory alone. Jumping to a slot looks at
    the frame the memory saw in low resolution; the scan covers the times the memory did not see. The
    scan action starts likely (``scan_bias``; the other logits start at 0, with zero weights), so the
    untrained agent scans uniformly and learning moves it elsewhere only where that earns more reward.
    In training a chosen slot or scan position is drawn within its stretch of time (1/Td or 1/K), so
    the classifier sees varied frames, as the LSTM baseline does with random sampling.

``prediction``
    ``lstm`` (the paper): ``f_p(h_t)``. ``pooled``: AvgPooling's rule over the frames looked at so far, the mean
    of a frame classifier's softmax (``frame_head``, trained on K random frames of each training video,
    ``losses.subset_loss``). ``mix``: ``a * log(pooled) + b * f_p(h_t)``, with ``a, b > 0`` fitted on the val split
    after every epoch (``fit_mix``). An LSTM can learn each training video by its own look (a camera, a light that
    drifts through the video) instead of its class, and then fits the training set while it fails on new videos; a
    frame classifier, which sees one frame at a time, cannot. Which of the two generalises differs by data set, and only videos
    the classifier was not trained on can tell: the val split does. Rewards and utility follow the mixed
    prediction.

Both agents' selection and utility heads read ``u_t / sqrt(Dm)`` (``head_scale``), and the utility
starts at zero weights: a wide memory (1280-d MobileNetV2 features) otherwise made the critic's error,
and its gradient into the LSTM, swamp the classifier's.

Positions relative to a video's length become frame indices by ``models.positions``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from adaframe.distributed import exponential, rand, randn
from adaframe.models.positions import fixed_start, location_to_index
from adaframe.models.recurrent import Decision, Exploration, Looked, RecurrentAgent, State, Step
from adaframe.utils import AdaframeError

MemoryRead = Literal["lstm", "policy"]
Selection = Literal["gaussian", "slots"]
Prediction = Literal["lstm", "pooled", "mix"]


@dataclass
class AgentConfig:
    feature_dim: int
    memory_dim: int
    num_classes: int
    hidden: int = 1024
    std: float = 0.1
    """std of the Gaussian selection policy"""
    start: float = 0.5
    """relative position of the first frame (gaussian selection)"""
    memory_read: MemoryRead = "policy"
    """who reads the global memory: the LSTM ("lstm", the paper) or only the selection and utility heads"""
    selection: Selection = "slots"
    """the selection policy: the paper's Gaussian over positions, or a choice among memory slots and a uniform scan"""
    scan_bias: float = 3.0
    """slots selection: initial bias of the scan action's logit (3: the untrained agent mostly scans)"""
    prediction: Prediction = "mix"
    """what predicts the class: the LSTM's head ("lstm", the paper), the mean of a frame classifier's softmax over the
    frames looked at ("pooled", AvgPooling's rule), or both mixed with weights fitted on held-out videos ("mix")"""

    def __post_init__(self) -> None:
        if min(self.feature_dim, self.num_classes, self.hidden) < 1 or self.memory_dim < 0:
            raise AdaframeError(f"invalid AgentConfig dims: {self}")
        if self.std <= 0 or not 0.0 <= self.start <= 1.0:
            raise AdaframeError("std must be > 0 and start in [0, 1]")
        if self.memory_read not in ("lstm", "policy") or self.selection not in ("gaussian", "slots"):
            raise AdaframeError(f"unknown memory_read {self.memory_read!r} or selection {self.selection!r}")
        if self.prediction not in ("lstm", "pooled", "mix"):
            raise AdaframeError(f"unknown prediction {self.prediction!r} (expected lstm, pooled or mix)")


class SelectionPolicy(nn.Module):
    """AdaFrame's f_s and its policy: ``forward`` scores where to look next, ``choose`` turns the scores into a frame."""

    def act(self, out: Step, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int,
            explore: Exploration | None, last: bool) -> Decision | None:
        """The next frame after ``step``; nothing after the last step (a choice there would never be looked at)."""
        return None if last else self.choose(out.policy, looked, rows, lengths, step, explore)

    def choose(self, output: torch.Tensor, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int,
               explore: Exploration | None) -> Decision:
        raise NotImplementedError


class GaussianSelection(SelectionPolicy):
    """The paper's f_s: ``sigmoid(W h_t)`` is the mean of a Gaussian over the next relative position. When the LSTM
    does not read the memory (``memory_read`` "policy"), it reads ``[h_t, u_t]``, so that the memory still reaches it."""

    def __init__(self, cfg: AgentConfig):
        super().__init__()
        self.std = cfg.std
        self.reads_memory = cfg.memory_read == "policy"
        self.fc = nn.Linear(cfg.hidden + (cfg.memory_dim if self.reads_memory else 0), 1)

    def forward(self, h: torch.Tensor, u: torch.Tensor, encoded: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(torch.cat([h, u], dim=-1) if self.reads_memory else h)).squeeze(-1)  # [B]

    def choose(self, mean: torch.Tensor, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int,
               explore: Exploration | None) -> Decision:
        if explore is None:
            return Decision(location_to_index(mean, lengths), torch.zeros_like(mean))
        noise = explore.draw(randn, mean.shape, mean.device)
        action = (mean + self.std * noise).detach()
        return Decision(location_to_index(action, lengths), Normal(mean, self.std).log_prob(action))


class SlotSelection(SelectionPolicy):
    """A categorical over Td + 3 actions: the global memory's slots not yet looked at, the next position of a uniform
    scan, and the frame just before or after the last one (a closer look at what it just saw)."""

    def __init__(self, cfg: AgentConfig):
        super().__init__()
        self.query = nn.Linear(cfg.hidden + cfg.memory_dim, cfg.memory_dim) if cfg.memory_dim else None
        self.moves = nn.Linear(cfg.hidden + cfg.memory_dim, 3)  # scan, back, forward
        # Zero weights: the untrained policy is the same for every video (mostly the scan), and its gradient into the
        # shared LSTM starts at zero and grows only as the policy learns.
        for layer in (self.query, self.moves):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.moves.bias[0] = cfg.scan_bias

    def forward(self, h: torch.Tensor, u: torch.Tensor, encoded: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        """-> logits [B, Td + 3]: the slots, then scan, back, forward; a blocked action gets -1e4."""
        z = torch.cat([h, u], dim=-1)  # [B, H + Dm]
        moves = self.moves(z)  # [B, 3]
        if self.query is not None and encoded.shape[1]:
            scores = torch.einsum("bd,btd->bt", self.query(z), encoded) / math.sqrt(encoded.shape[-1])  # [B, Td]
            moves = torch.cat([scores, moves], dim=-1)
        return moves.masked_fill(blocked, -1e4)

    def choose(self, logits: torch.Tensor, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int,
               explore: Exploration | None) -> Decision:
        """The action for videos ``rows`` after ``step`` (-1: before the first) from their logits [A, Td + 3]; a scan
        action advances the rows' scans."""
        slots, scan = logits.shape[1] - 3, looked.scan
        if explore is not None:
            # A categorical draw as argmax(p / Exp(1)) (torch.multinomial's), the noise drawn for the global batch.
            q = explore.draw(exponential, logits.shape, logits.device)  # [A, Td + 3]
            action = (torch.softmax(logits.detach(), -1) / q).argmax(-1)  # [A]
            log_prob = torch.log_softmax(logits, -1).gather(1, action[:, None]).squeeze(1)
        else:
            action, log_prob = logits.argmax(-1), logits.new_zeros(logits.shape[0])
        is_scan, is_slot = action == slots, action < slots
        scans = looked.scans[rows]
        at_scan = scan[scans.clamp(max=len(scan) - 1)]  # [A]
        at_slot = (action.clamp(max=max(slots - 1, 0)).to(logits.dtype) + 0.5) / max(slots, 1)  # [A]
        step_by = torch.where(action == slots + 1, -1, 1)  # back or forward
        at_neighbour = (looked.frames[rows, step] + step_by + 0.5).to(logits.dtype) / lengths.to(logits.dtype)  # [A]
        looked.scans[rows] = scans + is_scan.long()
        position = torch.where(is_scan, at_scan, torch.where(is_slot, at_slot, at_neighbour))
        if explore is not None:  # anywhere within the slot's stretch or the scan position's segment: the classifier sees varied frames
            width = torch.where(is_scan, 1.0 / len(scan), torch.where(is_slot, 1.0 / max(slots, 1), 0.0))
            position = position + width * (explore.draw(rand, position.shape, position.device) - 0.5)
        return Decision(location_to_index(position, lengths), log_prob)


class AdaFrame(RecurrentAgent):
    """The agent of Section 3.1 (see the module's docstring for its two options)."""

    def __init__(self, cfg: AgentConfig):
        super().__init__(cfg, cfg.feature_dim + (cfg.memory_dim if cfg.memory_read == "lstm" else 0))
        self.select = GaussianSelection(cfg) if cfg.selection == "gaussian" else SlotSelection(cfg)  # f_s
        self.utility = nn.Linear(cfg.hidden + cfg.memory_dim, 1)  # f_u
        self.frame_head = nn.Linear(cfg.feature_dim, cfg.num_classes) if cfg.prediction != "lstm" else None
        # (a, b) of the mix: pooled, recurrent. Fitted on val (fit_mix), saved with the weights.
        self.register_buffer("mix", torch.tensor([1.0, 0.0] if cfg.prediction == "pooled" else [1.0, 1.0]))
        # A critic that starts at 0: no reward expected, and no gradient into the LSTM before it has learned anything.
        nn.init.zeros_(self.utility.weight)
        nn.init.zeros_(self.utility.bias)

    @property
    def chooses_first(self) -> bool:  # type: ignore[override]
        return self.cfg.selection == "slots"

    @property
    def policy(self) -> SelectionPolicy:
        return self.select

    def initial_state(self, batch: int, device: torch.device) -> State:
        """(h, c), and with a frame classifier the sum of its softmaxes over the frames looked at [B, C] and their count [B]."""
        h, c = super().initial_state(batch, device)
        if self.frame_head is None:
            return h, c
        return h, c, torch.zeros(batch, self.cfg.num_classes, device=device), torch.zeros(batch, device=device)

    def frame_logits(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [..., D] -> the frame classifier's logits [..., C] (trained on random frames, ``losses.subset_loss``)."""
        return self.frame_head(self.frame_norm(frames))

    def where(self, looked: Looked, rows: torch.Tensor, lengths: torch.Tensor, step: int) -> torch.Tensor:
        """[A, Td + 3] the slots policy's actions that would look at nothing new (``Looked.blocked``)."""
        return looked.blocked(rows, lengths, step)

    def step(self, frame: torch.Tensor, encoded: torch.Tensor, state: State, where: torch.Tensor | None = None) -> Step:
        """One step: frame [B, D], encoded [B, Td, Dm], state (h, c) [B, H] each, ``where`` [B, Td + 3] (default: no
        action blocked)."""
        if where is None:
            where = torch.zeros(frame.shape[0], encoded.shape[1] + 3, dtype=torch.bool, device=frame.device)
        if self.cfg.memory_read == "lstm":
            u, beta = self.memory(encoded, state[0])  # u_t from W_h h_{t-1}
            h, c = self.lstm(torch.cat([self.frame_norm(frame), u], dim=-1), state[:2])
        else:
            h, c = self.lstm(self.frame_norm(frame), state[:2])
            u, beta = self.memory(encoded, h)  # u_t from W_h h_t: what the memory says after this frame
        u = self.head_scale(u)
        selection = self.select(h, u, encoded, where)
        utility = self.utility(torch.cat([h, u], dim=-1)).squeeze(-1)  # [B]
        recurrent = self.forward_head(h)  # [B, C]
        if self.frame_head is None:
            return Step(recurrent, selection, utility, beta, (h, c))
        summed, count = state[2] + torch.softmax(self.frame_logits(frame), -1), state[3] + 1  # [B, C], [B]
        pooled = torch.log((summed / count[:, None]).clamp(min=1e-12))  # [B, C] log of the mean softmax so far: AvgPooling's prediction
        return Step(mix_logits(pooled, recurrent, self.mix), selection, utility, beta, (h, c, summed, count), parts=torch.stack([pooled, recurrent], 1))

    def head_scale(self, u: torch.Tensor) -> torch.Tensor:
        """``u / sqrt(Dm)``: the memory's context enters the selection and utility heads at the scale of ``h`` (norm ~1),
        whatever the memory's width. Unscaled, a 1280-d MobileNetV2 context made one Adam step move the heads' outputs by
        ~2 (every weight moves by lr, and 1280 of them add up), and their losses swamped the classifier's."""
        return u / math.sqrt(max(self.cfg.memory_dim, 1))

    def first(self, encoded: torch.Tensor, lengths: torch.Tensor, looked: Looked, explore: Exploration | None) -> Decision:
        """Gaussian selection: the fixed ``start``. Slots: a choice from the memory read with ``h_0 = 0``."""
        if self.cfg.selection == "gaussian":
            return fixed_start(self.cfg.start, lengths)
        rows = torch.arange(encoded.shape[0], device=encoded.device)
        return self.select.choose(self.first_scores(encoded), looked, rows, lengths, -1, explore)

    def first_scores(self, encoded: torch.Tensor) -> torch.Tensor:
        """Slots selection: the logits of the first choice [B, Td + 3], from the memory read with ``h_0 = 0`` (no last
        frame to step back or forward from)."""
        b, slots = encoded.shape[:2]
        h = self.initial_state(b, encoded.device)[0]
        u = self.head_scale(self.memory(encoded, h)[0])
        blocked = torch.zeros(b, slots + 3, dtype=torch.bool, device=h.device)
        blocked[:, slots + 1:] = True
        return self.select(h, u, encoded, blocked)


def mix_logits(pooled: torch.Tensor, recurrent: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``a * pooled + b * recurrent`` (logits [..., C] each, ``weights`` [2] = (a, b)): the mixed prediction."""
    return weights[0] * pooled + weights[1] * recurrent


def fit_mix(parts: torch.Tensor, labels: torch.Tensor, iterations: int = 50) -> torch.Tensor:
    """The weights ``(a, b) > 0`` of ``softmax(a * pooled + b * recurrent)`` that minimise its cross-entropy over every
    step of held-out videos (a two-parameter logistic regression: Platt's and temperature scaling's idea, for two
    classifiers at once).

    Args:
        parts: [N, K, 2, C] the pooled and recurrent logits of each step (``Rollout.parts``; NaN after a stop).
        labels: [N].

    Returns:
        [2] (a, b).
    """
    ok = ~torch.isnan(parts[:, :, 0, 0])  # [N, K] steps taken
    pooled, recurrent = parts[:, :, 0][ok], parts[:, :, 1][ok]  # [M, C] each
    target = labels[:, None].expand_as(ok)[ok]  # [M]
    log_w = torch.zeros(2, requires_grad=True)  # log a, log b: both start at 1
    opt = torch.optim.LBFGS([log_w], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(mix_logits(pooled, recurrent, log_w.clamp(-10, 5).exp()), target)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return log_w.detach().clamp(-10, 5).exp()
