"""The rollouts of every agent, over one ``Episodes`` object: ``train_rollout`` (K steps, sampled actions) and
``rollout`` for evaluation and ``predict`` (most likely actions, early stop by a rule, finished videos leave the batch).

Frames come from ``frame_fn(rows, idx) -> [A, D]``: the features of frame ``idx[a]`` of video ``rows[a]``.
Training and evaluation gather them from stored features (``stored_frames``); ``predict`` decodes the frame
and runs the backbone on it right then, so only the frames the policy picks are computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

from adaframe.models.positions import scan_positions
from adaframe.models.recurrent import Decision, Exploration, Looked, RecurrentAgent, Step
from adaframe.utils import AdaframeError

FrameFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StopRule:
    """When a video leaves the batch before ``max_steps`` (evaluation and ``predict``).

    * ``utility``: AdaFrame's adaptive lookahead (Section 3.2): the best utility so far exceeds the
      current one by more than ``threshold`` (mu).
    * ``entropy``: the ablation: the prediction's entropy, divided by log C so that it lies in [0, 1],
      falls below ``threshold``.
    * ``learned``: FrameGlimpse / FastForward: their stop head gives p(stop) >= ``threshold``.

    A video stops once its rule has fired ``patience`` times.
    """

    by: Literal["utility", "entropy", "learned"]
    threshold: float
    patience: int = 1

    def __post_init__(self) -> None:
        if self.by not in ("utility", "entropy", "learned"):
            raise AdaframeError(f"unknown stop rule {self.by!r}")
        if not self.threshold >= 0 or self.patience < 1:
            raise AdaframeError(f"stop rule {self.by}: threshold must be >= 0 and patience >= 1")

    def describe(self) -> str:
        name = {"utility": "mu", "entropy": "entropy <", "learned": "p(stop) >="}[self.by]
        return f"{name} {self.threshold:g}" + (f", patience {self.patience}" if self.patience > 1 else "")


def default_stop(model: torch.nn.Module) -> StopRule | None:
    """FrameGlimpse and FastForward stop by their stop head unless told otherwise; AdaFrame runs K steps."""
    return StopRule("learned", 0.5) if getattr(model, "has_stop_head", False) else None


def check_stop_rule(model: torch.nn.Module, stop: StopRule | None) -> None:
    if stop is not None and not isinstance(model, RecurrentAgent):
        raise AdaframeError("stop rules (--mu, --entropy, --stop-threshold) apply to the step-by-step agents; this model "
                            "picks its frames in one step")
    if stop is not None and stop.by == "learned" and not getattr(model, "has_stop_head", False):
        raise AdaframeError("a learned stop needs a model with a stop head (frameglimpse, fastforward); "
                            "AdaFrame stops by its utility (--mu)")


@dataclass
class Rollout:
    """At most K steps of a batch of B videos. Step t of video b looked at frame ``indices[b, t]`` if ``alive[b, t]``.

    After a video's last step: in evaluation nothing is computed (logits and utilities NaN, indices -1); in
    training every video runs all K steps (a sampled stop only masks the rest: ``alive``), so that the batch's
    tensors keep their shape for the loss.
    """

    logits: torch.Tensor  # [B, K, C] class logits of each step (with a gradient where a loss reads them: every step of an
    #                       agent with a stop head, AdaFrame's last)
    probs: torch.Tensor | None  # [B, C] class probabilities at each video's last step (evaluation)
    utilities: torch.Tensor  # [B, K] the critic's value of each step's state
    log_probs: torch.Tensor  # [B, K] log pi of the decision made at step t: the next frame (a stop agent: or the stop);
    #                          0 at the last step (what it would pick is never looked at) and without exploration
    first_log_prob: torch.Tensor  # [B] log pi of the first frame's choice (0 for a fixed start)
    indices: torch.Tensor  # [B, K] the frame each step looked at
    alive: torch.Tensor  # [B, K] bool: the video took step t
    parts: torch.Tensor | None = None  # [B, K, P, C] the parts' logits of a mixed prediction (``Step.parts``)

    @property
    def steps(self) -> torch.Tensor:
        """[B] steps each video took."""
        return self.alive.sum(1)


def count_distinct(idx: torch.Tensor) -> torch.Tensor:
    """idx [B, k] with -1 for 'none' -> number of distinct non-negative entries per row [B]."""
    s = idx.sort(dim=1).values
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    return (new & (s >= 0)).sum(1)


def stored_frames(features: torch.Tensor) -> FrameFn:
    """``frame_fn`` over stored features [B, T, D]."""
    return lambda rows, idx: features[rows, idx]  # [A, D]


class Episodes:
    """The episodes of a batch of B videos, stepped together: what each has looked at (``Looked``), the agent's state,
    the rows still in the batch (``active``: a video a stop rule ended leaves it), the sampled stops (``alive``), the
    stop rule's strikes, where frames come from (``frame_fn``), and every step's record, returned as a ``Rollout``."""

    def __init__(self, model: RecurrentAgent, memory: torch.Tensor, lengths: torch.Tensor, frame_fn: FrameFn, max_steps: int,
                 sampled: bool):
        self.model, self.lengths, self.frame_fn, self.max_steps = model, lengths, frame_fn, max_steps
        self.b, device = lengths.shape[0], lengths.device
        self.encoded = model.encode(memory)  # [B, Td, Dm]
        self.state = model.initial_state(self.b, device, max_steps)  # (h, c, ...) each [B, ...]
        self.looked = Looked.start(self.b, self.encoded.shape[1], scan_positions(max_steps, device))
        self.active = torch.arange(self.b, device=device)  # [A] rows still in the batch
        self.alive = torch.ones(self.b, dtype=torch.bool, device=device)  # [B] rows not stopped by a sampled stop
        self.probs = None if sampled else torch.zeros(self.b, model.cfg.num_classes, device=device)  # [B, C] at the last step
        self.best_utility = torch.full((self.b,), float("-inf"), device=device)
        self.strikes = torch.zeros(self.b, dtype=torch.long, device=device)
        self.record: dict[str, list[torch.Tensor]] = {k: [] for k in ("logits", "parts", "utilities", "log_probs", "indices", "alive")}

    @property
    def whole(self) -> bool:
        """No video has left the batch (training always)."""
        return self.active.numel() == self.b

    def rows(self, x: torch.Tensor, fill: float | int | bool) -> torch.Tensor:
        """x [A, ...] of the active rows -> [B, ...], ``fill`` in the rows that left."""
        return x if self.whole else _scatter(x, self.active, self.b, fill)

    def look(self, idx: torch.Tensor, t: int) -> Step:
        """Step t: every active video looks at frame ``idx`` [B] of its own; the agent reads it, its state advances, and
        the step's prediction, utility, frame and ``alive`` are recorded."""
        model, active, whole = self.model, self.active, self.whole
        at, n = idx[active], self.lengths[active]  # [A]
        self.looked.mark(active, at, n, t)
        frame = self.frame_fn(active, at)  # [A, D]
        out = model.step(frame, self.encoded if whole else self.encoded[active], self.state if whole else tuple(s[active] for s in self.state),
                         model.where(self.looked, active, n, t))
        if whole:
            self.state = out.state
        else:  # no gradient: the rows that left keep their last state
            for s, new in zip(self.state, out.state):
                s[active] = new
        if self.probs is not None:
            self.probs[active] = torch.softmax(out.logits, dim=-1)  # [A, C]
        if not (t + 1 == self.max_steps or model.has_stop_head):  # no loss reads this step's prediction: no backward (zeros)
            out.logits, out.parts = out.logits.detach(), None if out.parts is None else out.parts.detach()
        self.record["logits"].append(self.rows(out.logits, float("nan")))
        if out.parts is not None:
            self.record["parts"].append(self.rows(out.parts, float("nan")))
        self.record["utilities"].append(self.rows(out.utility, float("nan")))
        self.record["indices"].append(idx.clone() if whole else _scatter(at, active, self.b, -1))
        self.record["alive"].append(self.rows(self.alive[active], False))
        return out

    def decide(self, decision: Decision | None, idx: torch.Tensor) -> torch.Tensor:
        """Record the policy's decision after a step (its log-probability, a sampled stop); returns the next frames [B]."""
        log_prob = torch.zeros(self.b, device=self.lengths.device)  # [B]: none, unless the policy decides
        if decision is not None:
            idx, log_prob = self.rows(decision.index, -1), self.rows(decision.log_prob, 0.0)
            if decision.stop is not None:
                self.alive = self.alive & ~decision.stop
        self.record["log_probs"].append(log_prob)
        return idx

    def apply(self, stop: StopRule, out: Step) -> bool:
        """A strike for every active video whose rule fired at this step; those with ``patience`` strikes leave the
        batch. Returns whether any video is left."""
        active = self.active
        if stop.by == "utility":
            self.best_utility[active] = torch.maximum(self.best_utility[active], out.utility)
            fired = self.best_utility[active] - out.utility > stop.threshold
        elif stop.by == "entropy":
            p = self.probs[active]  # type: ignore[index]  # [A, C]
            fired = -(p * p.clamp(min=1e-12).log()).sum(-1) / math.log(p.shape[-1]) < stop.threshold  # [A] entropy in [0, 1]
        else:
            fired = torch.sigmoid(out.stop_logit) >= stop.threshold
        self.strikes[active] += fired.long()
        self.active = active[self.strikes[active] < stop.patience]
        return self.active.numel() > 0

    def rollout(self, first_log_prob: torch.Tensor) -> Rollout:
        """Every step's record as [B, K, ...], the steps after every video left filled (NaN, -1, 0, False)."""
        def steps(values: list[torch.Tensor], fill: float | int | bool) -> torch.Tensor:
            x = torch.stack(values, 1)
            missing = self.max_steps - x.shape[1]
            return torch.cat([x, x.new_full((self.b, missing, *x.shape[2:]), fill)], 1) if missing else x

        r, nan = self.record, float("nan")
        return Rollout(steps(r["logits"], nan), self.probs, steps(r["utilities"], nan), steps(r["log_probs"], 0.0), first_log_prob,
                       steps(r["indices"], -1), steps(r["alive"], False), steps(r["parts"], nan) if r["parts"] else None)


def train_rollout(model: RecurrentAgent, memory: torch.Tensor, lengths: torch.Tensor, frame_fn: FrameFn, max_steps: int,
                  explore: Exploration) -> Rollout:
    """Training: K = ``max_steps`` steps of every video, the policy sampled. A stop agent's sampled stop only masks the
    steps after it (``Rollout.alive``), so that the batch's tensors keep their shape for the loss.

    Args:
        memory: [B, Td, Dm] global-memory features; lengths: [B] frames per video.
    """
    episodes = Episodes(model, memory, lengths, frame_fn, max_steps, sampled=True)
    first = model.first(episodes.encoded, lengths, episodes.looked, explore)  # the first frame (a decision, or a fixed start)
    idx = first.index  # [B]
    for t in range(max_steps):
        out = episodes.look(idx, t)  # read frame idx, predict, value the state
        decision = model.act(out, episodes.looked, episodes.active, lengths, t, explore, last=t + 1 == max_steps)
        idx = episodes.decide(decision, idx)  # the next frame, log pi of the choice, a sampled stop
    return episodes.rollout(first.log_prob)


def rollout(model: RecurrentAgent, memory: torch.Tensor, lengths: torch.Tensor, frame_fn: FrameFn, max_steps: int, *,
            stop: StopRule | None = None, positions: torch.Tensor | None = None, scan: bool = False,
            own_policy: bool = False) -> Rollout:
    """Evaluation and ``predict``: at most K = ``max_steps`` steps, the policy's most likely actions; a video leaves the
    batch once ``stop`` ends it (None: all K steps), so the cost follows the frames used.

    Args:
        memory: [B, Td, Dm] global-memory features; lengths: [B] frames per video.
        positions: [B, K] frame indices to look at instead of the policy's (``evaluate.split.policy_indices``); the
            agent's network still reads them, predicts and stops as usual.
        scan: a cost check, not a policy: take the next frame (wrapping around) at every step, so that every
            step computes a new frame.
        own_policy: run the policy even where the agent infers by fixed positions (``inference_positions``: AdaFrame
            where training found that its policy added nothing over the uniform scan), to measure what it adds.
    """
    check_stop_rule(model, stop)
    if positions is None and not scan and not own_policy:
        positions = model.inference_positions(lengths, max_steps)
    episodes = Episodes(model, memory, lengths, frame_fn, max_steps, sampled=False)
    if positions is not None:
        idx, first_log_prob = positions[:, 0].clone(), torch.zeros(lengths.shape[0], device=lengths.device)
    else:
        first = model.first(episodes.encoded, lengths, episodes.looked, None)
        idx, first_log_prob = first.index, first.log_prob
    for t in range(max_steps):
        active = episodes.active
        out = episodes.look(idx, t)
        if scan:
            idx[active] = (idx[active] + 1) % lengths[active]
        elif positions is not None:
            idx[active] = positions[active, min(t + 1, max_steps - 1)]
        if scan or positions is not None:
            episodes.decide(None, idx)
        else:
            idx = episodes.decide(model.act(out, episodes.looked, active, lengths[active], t, None, last=t + 1 == max_steps), idx)
        if stop is not None and not episodes.apply(stop, out):
            break
    return episodes.rollout(first_log_prob)


def _scatter(values: torch.Tensor, rows: torch.Tensor, size: int, fill: float | int | bool) -> torch.Tensor:
    """values [A, ...] of batch rows ``rows`` -> [size, ...] with ``fill`` in the other rows."""
    out = torch.full((size, *values.shape[1:]), fill, dtype=values.dtype, device=values.device)
    out[rows] = values
    return out
