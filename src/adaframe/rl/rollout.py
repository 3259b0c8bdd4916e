"""The one rollout of every agent: training (sampled actions), evaluation and ``predict`` (most likely actions,
early stop by a rule, finished videos leave the batch).

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
from adaframe.models.recurrent import Exploration, Looked, RecurrentAgent
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


def rollout(model: RecurrentAgent, memory: torch.Tensor, lengths: torch.Tensor, frame_fn: FrameFn, max_steps: int, *,
            explore: Exploration | None = None, stop: StopRule | None = None, positions: torch.Tensor | None = None,
            scan: bool = False, own_policy: bool = False) -> Rollout:
    """Run an agent on a batch: K = ``max_steps`` steps, or fewer where a video stops.

    Args:
        memory: [B, Td, Dm] global-memory features; lengths: [B] frames per video.
        explore: sample the policy (training); None: take its most likely action (mean location, most likely slot or
            jump). In training every video runs every step; an agent with a stop head samples its stop (``alive``).
        stop: when a video leaves the batch early (evaluation); None runs all steps.
        positions: [B, K] frame indices to look at instead of the policy's (``evaluate.split.policy_indices``); the
            agent's network still reads them, predicts and stops as usual.
        scan: a cost check, not a policy: take the next frame (wrapping around) at every step, so that every
            step computes a new frame.
        own_policy: run the policy even where the agent infers by fixed positions (``inference_positions``: AdaFrame
            where training found that its policy added nothing over the uniform scan), to measure what it adds.
    """
    check_stop_rule(model, stop)
    if explore is not None and (stop is not None or positions is not None or scan):
        raise ValueError("a sampled (training) rollout runs the policy for K steps: no stop rule, positions or scan")
    if explore is None and positions is None and not scan and not own_policy:
        positions = model.inference_positions(lengths, max_steps)
    b, device = lengths.shape[0], lengths.device
    encoded = model.encode(memory)  # [B, Td, Dm]
    state = model.initial_state(b, device, max_steps)  # (h, c, ...) each [B, ...]
    looked = Looked.start(b, encoded.shape[1], scan_positions(max_steps, device))
    if positions is not None:
        idx, first_log_prob = positions[:, 0].clone(), torch.zeros(b, device=device)
    else:
        first = model.first(encoded, lengths, looked, explore)
        idx, first_log_prob = first.index, first.log_prob
    active = torch.arange(b, device=device)  # rows still in the batch (evaluation)
    alive = torch.ones(b, dtype=torch.bool, device=device)  # [B] rows not stopped (training: sampled stops)
    probs = torch.zeros(b, model.cfg.num_classes, device=device) if explore is None else None
    best_utility = torch.full((b,), float("-inf"), device=device)
    strikes = torch.zeros(b, dtype=torch.long, device=device)
    logits, parts, utilities, log_probs, indices, alives = [], [], [], [], [], []
    for t in range(max_steps):
        whole = active.numel() == b  # training always; evaluation until the first video stops
        at, n = idx[active], lengths[active]  # [A]
        looked.mark(active, at, n, t)
        frame = frame_fn(active, at)  # [A, D]
        rows_state = state if whole else tuple(s[active] for s in state)
        out = model.step(frame, encoded if whole else encoded[active], rows_state, model.where(looked, active, n, t))
        if whole:
            state = out.state
        else:  # evaluation (no gradient): the stopped rows keep their last state
            for s, new in zip(state, out.state):
                s[active] = new
        if explore is None:
            p = torch.softmax(out.logits, dim=-1)  # [A, C]
            probs[active] = p  # type: ignore[index]
        last = t + 1 == max_steps
        if not (last or model.has_stop_head):  # no loss reads this step's prediction: no backward through it (zeros)
            out.logits, out.parts = out.logits.detach(), None if out.parts is None else out.parts.detach()
        logits.append(out.logits if whole else _scatter(out.logits, active, b, float("nan")))
        if out.parts is not None:
            parts.append(out.parts if whole else _scatter(out.parts, active, b, float("nan")))
        utilities.append(out.utility if whole else _scatter(out.utility, active, b, float("nan")))
        indices.append(idx.clone() if whole else _scatter(at, active, b, -1))
        alives.append(alive if whole else _scatter(alive[active], active, b, False))
        log_prob = torch.zeros(b, device=device)  # [B] of this step's decision: none, unless the policy makes one
        if scan:
            idx[active] = (at + 1) % n
        elif positions is not None:
            idx[active] = positions[active, min(t + 1, max_steps - 1)]
        else:
            decision = model.policy.act(out, looked, active, n, t, explore, last)
            if decision is not None:
                idx = decision.index if whole else _scatter(decision.index, active, b, -1)
                log_prob = decision.log_prob if whole else _scatter(decision.log_prob, active, b, 0.0)
                if decision.stop is not None:
                    alive = alive & ~decision.stop
        log_probs.append(log_prob)
        if stop is None:
            continue
        if stop.by == "utility":
            best_utility[active] = torch.maximum(best_utility[active], out.utility)
            fired = best_utility[active] - out.utility > stop.threshold
        elif stop.by == "entropy":
            entropy = -(p * p.clamp(min=1e-12).log()).sum(-1) / math.log(p.shape[-1])  # [A] in [0, 1]
            fired = entropy < stop.threshold
        else:
            fired = torch.sigmoid(out.stop_logit) >= stop.threshold
        strikes[active] += fired.long()
        active = active[strikes[active] < stop.patience]
        if active.numel() == 0:
            break
    def steps(values: list[torch.Tensor], fill: float | int | bool) -> torch.Tensor:
        """Per-step [B, ...] tensors -> [B, K, ...], the steps after every video stopped filled with ``fill``."""
        x = torch.stack(values, 1)
        missing = max_steps - x.shape[1]
        return torch.cat([x, x.new_full((b, missing, *x.shape[2:]), fill)], 1) if missing else x

    nan = float("nan")
    return Rollout(steps(logits, nan), probs, steps(utilities, nan), steps(log_probs, 0.0), first_log_prob, steps(indices, -1),
                   steps(alives, False), steps(parts, nan) if parts else None)


def _scatter(values: torch.Tensor, rows: torch.Tensor, size: int, fill: float | int | bool) -> torch.Tensor:
    """values [A, ...] of batch rows ``rows`` -> [size, ...] with ``fill`` in the other rows."""
    out = torch.full((size, *values.shape[1:]), fill, dtype=values.dtype, device=values.device)
    out[rows] = values
    return out
