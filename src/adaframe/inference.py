"""Inference: the agents with K fixed steps or an early stop (Section 3.2), and the baselines.

Everything is batched. In adaptive mode a video leaves the batch the step it stops, so the
work done follows the frames actually used, not the batch's slowest video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from adaframe.agent import AdaFrame, Looked, scan_order
from adaframe.baselines import AvgPooling, LSTMBaseline
from adaframe.data import Batch, FeatureDataset, Sampling, collate, gather_frames, sample_indices
from adaframe.rl_baselines import StopAgent
from adaframe.utils import AdaframeError


@dataclass
class Result:
    """Per-video outputs of one evaluation, as numpy arrays in dataset order."""

    scores: np.ndarray  # [N, C] class probabilities
    labels: np.ndarray  # [N]
    steps: np.ndarray  # [N] frames looked at (AdaFrame steps; baselines: frames sampled)
    frames: np.ndarray  # [N] distinct frames, what the backbone must process
    visited: np.ndarray  # [N, K] frame index per step, -1 after the stop
    utilities: np.ndarray  # [N, K] the agent's utility (value) per step, NaN after the stop and for baselines


def count_distinct(idx: torch.Tensor) -> torch.Tensor:
    """idx [B, k] with -1 for 'none' -> number of distinct non-negative entries per row [B]."""
    s = idx.sort(dim=1).values
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    return (new & (s >= 0)).sum(1)


FrameFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Agent = AdaFrame | StopAgent
Policy = Literal["learned", "uniform", "random"]
"""Where an agent looks: its own policy, or (to measure what the policy adds) K uniformly spaced or random positions."""


def policy_indices(lengths: torch.Tensor, k: int, policy: Policy, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Frame indices [B, K] of a fixed policy in the order the agent looks at them, or None for ``learned``.

    ``uniform``: the centres of K equal segments; ``random``: one random frame in each (``data.sample_indices``).
    Both are visited in the uniform scan's coarse-to-fine order (``agent.scan_order``: the middle first), so
    that an early stop has seen frames spread over the whole video.
    """
    if policy == "learned":
        return None
    if policy not in ("uniform", "random"):
        raise AdaframeError(f"unknown policy {policy!r} (expected learned, uniform or random)")
    idx = sample_indices(lengths, k, policy, generator)  # [B, K] in temporal order
    return idx[:, torch.tensor(scan_order(k), device=idx.device)]


@dataclass(frozen=True)
class StopRule:
    """When a video leaves the batch before ``max_steps``.

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
    return StopRule("learned", 0.5) if isinstance(model, StopAgent) else None


def check_stop_rule(model: Agent, stop: StopRule | None) -> None:
    if stop is not None and stop.by == "learned" and not isinstance(model, StopAgent):
        raise AdaframeError("a learned stop needs a model with a stop head (frameglimpse, fastforward); "
                            "AdaFrame stops by its utility (--mu)")


@torch.no_grad()
def agent_rollout(model: Agent, memory: torch.Tensor, lengths: torch.Tensor, frame_fn: FrameFn, max_steps: int,
                  stop: StopRule | None = None, scan: bool = False, positions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Run an agent (AdaFrame, FrameGlimpse, FastForward) on a batch, deterministically.

    Moves follow the policy's most likely action (mean location, most likely slot or jump). The frames come
    from ``frame_fn(rows, idx) -> [A, D]``: the features of frame ``idx[a]`` of video ``rows[a]``.
    Evaluation gathers them from stored features; ``predict`` decodes the frame and runs the
    backbone on it right then, so only the frames the policy picks are computed. A video leaves
    the batch the step it stops, so later steps cost only what the running videos need.

    Args:
        memory: [B, Td, Dm] global-memory features; lengths: [B] frames per video.
        max_steps: K, the most steps any video takes.
        stop: when to stop early; ``None`` runs all ``max_steps`` steps.
        scan: a cost check, not a policy: take the next frame (wrapping around) at every step, so
            that every step computes a new frame.
        positions: [B, K] frame indices to look at instead of the policy's (``policy_indices``); the
            agent's network still reads them, predicts and stops as usual.

    Returns:
        probs [B, C] at each video's last step, steps [B], visited [B, K] (-1 after the stop),
        utilities [B, K] (NaN after the stop).
    """
    check_stop_rule(model, stop)
    b, device = lengths.shape[0], lengths.device
    encoded = model.memory.encode(memory)
    h, c = model.initial_state(b, device)
    looked = Looked.start(b, encoded.shape[1], max_steps, device)
    active = torch.arange(b, device=device)  # rows still running
    if positions is not None:
        idx = positions[:, 0].clone()
    elif isinstance(model, StopAgent):
        idx = model.start_indices(lengths)
    else:
        idx, _ = model.choose(model.first_selection(encoded), lengths, looked, active, -1, explore=False)
    probs = torch.zeros(b, model.cfg.num_classes, device=device)
    visited = torch.full((b, max_steps), -1, dtype=torch.long, device=device)
    utilities = torch.full((b, max_steps), float("nan"), device=device)
    steps = torch.zeros(b, dtype=torch.long, device=device)
    best_utility = torch.full((b,), float("-inf"), device=device)
    strikes = torch.zeros(b, dtype=torch.long, device=device)
    for t in range(max_steps):
        at = idx[active]
        looked.mark(active, at, lengths[active], t)
        frame = frame_fn(active, at)  # [A, D]
        if isinstance(model, StopAgent):
            out = model.step(frame, encoded[active], (h[active], c[active]), at.float() / lengths[active].float())
        else:
            out = model.step(frame, encoded[active], (h[active], c[active]), looked.blocked(active, lengths[active], t))
        h[active], c[active] = out.state
        p = torch.softmax(out.logits, dim=-1)  # [A, C]
        probs[active] = p
        visited[active, t] = at
        utilities[active, t] = out.utility
        steps[active] = t + 1
        if scan:
            idx[active] = (at + 1) % lengths[active]
        elif positions is not None:
            idx[active] = positions[active, min(t + 1, max_steps - 1)]
        elif isinstance(model, StopAgent):
            idx[active] = model.next_index(model.greedy_action(out.move), at, lengths[active])
        else:
            idx[active], _ = model.choose(out.selection, lengths[active], looked, active, t, explore=False)
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
    return {"probs": probs, "steps": steps, "visited": visited, "utilities": utilities}


def agent_batch(model: Agent, batch: Batch, max_steps: int, stop: StopRule | None = None, policy: Policy = "learned",
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``agent_rollout`` on a batch of stored features, with the agent's own policy or a fixed one."""
    def frames(rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return gather_frames(batch.features[rows], idx[:, None]).squeeze(1)  # [A, D]

    positions = policy_indices(batch.lengths, max_steps, policy, generator)
    return agent_rollout(model, batch.memory, batch.lengths, frames, max_steps, stop, positions=positions)


@torch.no_grad()
def baseline_batch(model: AvgPooling | LSTMBaseline, batch: Batch, frames: int, sampling: Sampling,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Run a baseline on ``frames`` frames per video picked by ``sampling`` (``all``: every frame)."""
    if sampling == "all":
        idx = torch.arange(batch.features.shape[1], device=batch.features.device).expand(batch.features.shape[0], -1)
        mask = batch.mask
        picked = batch.features
    else:
        idx = sample_indices(batch.lengths, frames, sampling, generator)  # [B, k]
        mask = torch.ones_like(idx, dtype=torch.bool)
        picked = gather_frames(batch.features, idx)  # [B, k, D]
    out = model(picked, mask)
    probs = out if isinstance(model, AvgPooling) else torch.softmax(out, dim=-1)
    visited = torch.where(mask, idx, -1)
    return {"probs": probs, "steps": mask.sum(1), "visited": visited}


def evaluate(model: torch.nn.Module, dataset: FeatureDataset | Subset, frames: int, sampling: Sampling = "uniform",
             stop: StopRule | None = None, batch_size: int = 128, device: torch.device | str = "cpu",
             seed: int = 0, progress: bool = False, policy: Policy = "learned") -> Result:
    """Run a model over a whole split and collect per-video results in dataset order.

    ``sampling`` picks the baselines' frames, ``policy`` the agents' (``seed``: of the random ones).
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    outs = []
    for batch in tqdm(loader, desc="eval", disable=not progress, unit="batch", leave=False):
        batch = batch.to(device)
        if isinstance(model, (AdaFrame, StopAgent)):
            o = agent_batch(model, batch, frames, stop, policy, generator)
        else:
            o = baseline_batch(model, batch, frames, sampling, generator)
            o["utilities"] = torch.full(o["visited"].shape, float("nan"))
        o["distinct"] = count_distinct(o["visited"])
        o["labels"] = batch.labels
        outs.append({k: v.cpu() for k, v in o.items()})
    width = max(o["visited"].shape[1] for o in outs)

    def stacked(key: str, fill: float) -> torch.Tensor:  # rows padded to the widest batch
        return torch.cat([torch.nn.functional.pad(o[key], (0, width - o[key].shape[1]), value=fill) for o in outs])

    return Result(
        scores=torch.cat([o["probs"] for o in outs]).numpy(),
        labels=torch.cat([o["labels"] for o in outs]).numpy(),
        steps=torch.cat([o["steps"] for o in outs]).numpy(),
        frames=torch.cat([o["distinct"] for o in outs]).numpy(),
        visited=stacked("visited", -1).numpy(),
        utilities=stacked("utilities", float("nan")).numpy(),
    )
