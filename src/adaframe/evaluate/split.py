"""Inference: the agents with K fixed steps or an early stop (Section 3.2), and the baselines.

Everything is batched. In adaptive mode a video leaves the batch the step it stops, so the
work done follows the frames actually used, not the batch's slowest video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from adaframe.data.features import Batch, FeatureDataset, collate, gather_frames, sample_indices
from adaframe.models.baselines import Baseline
from adaframe.models.positions import scan_order
from adaframe.models.recurrent import RecurrentAgent
from adaframe.models.sampler import OneStepSampler
from adaframe.models.selectors import SELECTORS, select_frames
from adaframe.rl.rollout import Rollout, StopRule, count_distinct, rollout, stored_frames
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


Sampling = Literal["uniform", "random", "all", "kcenter", "motion"]
"""How a baseline's frames are picked: K uniform or random ones (``data.sample_indices``), every frame, or K picked from
the global memory by a training-free selector (``models.selectors``)."""
Policy = Literal["learned", "policy", "uniform", "random"]
"""Where an agent looks: as it was trained to infer (``learned``: its policy, or the uniform scan where training found that
the policy added nothing), its policy in any case (``policy``), or (to measure what the policy adds) K uniformly spaced
or random positions."""


def policy_indices(lengths: torch.Tensor, k: int, policy: Policy, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Frame indices [B, K] of a fixed policy in the order the agent looks at them, or None for ``learned``.

    ``uniform``: the centres of K equal segments; ``random``: one random frame in each (``data.sample_indices``).
    Both are visited in the uniform scan's coarse-to-fine order (``positions.scan_order``: the middle first), so
    that an early stop has seen frames spread over the whole video.
    """
    if policy in ("learned", "policy"):
        return None
    if policy not in ("uniform", "random"):
        raise AdaframeError(f"unknown policy {policy!r} (expected learned, policy, uniform or random)")
    idx = sample_indices(lengths, k, policy, generator)  # [B, K] in temporal order
    return idx[:, torch.tensor(scan_order(k), device=idx.device)]


@torch.no_grad()
def agent_batch(model: RecurrentAgent, batch: Batch, max_steps: int, stop: StopRule | None = None, policy: Policy = "learned",
                generator: torch.Generator | None = None) -> Rollout:
    """The deterministic ``rollout`` on a batch of stored features, with the agent's own policy or a fixed one."""
    positions = policy_indices(batch.lengths, max_steps, policy, generator)
    return rollout(model, batch.memory, batch.lengths, stored_frames(batch.features), max_steps, stop=stop, positions=positions,
                   own_policy=policy == "policy")


@torch.no_grad()
def baseline_batch(model: Baseline, batch: Batch, frames: int, sampling: Sampling,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Run a baseline on ``frames`` frames per video picked by ``sampling`` (``all``: every frame)."""
    if sampling == "all":
        idx = torch.arange(batch.features.shape[1], device=batch.features.device).expand(batch.features.shape[0], -1)
        mask = batch.mask
        picked = batch.features
    else:
        idx = (select_frames(batch.memory, batch.lengths, frames, sampling) if sampling in SELECTORS  # type: ignore[arg-type]
               else sample_indices(batch.lengths, frames, sampling, generator))  # [B, k]
        mask = torch.ones_like(idx, dtype=torch.bool)
        picked = gather_frames(batch.features, idx)  # [B, k, D]
    probs = model.probs(picked, mask)  # [B, C]
    visited = torch.where(mask, idx, -1)
    return {"probs": probs, "steps": mask.sum(1), "visited": visited}


@torch.no_grad()
def sampler_batch(model: OneStepSampler, batch: Batch, frames: int, policy: Policy = "learned",
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The one-step sampler's K most likely slots (``learned``), or K uniform or random frames, read by its classifier."""
    if policy in ("learned", "policy"):
        idx = model.select(batch.memory, batch.lengths, frames)  # [B, K]
    elif policy in ("uniform", "random"):
        idx = sample_indices(batch.lengths, frames, policy, generator)
    else:
        raise AdaframeError(f"unknown policy {policy!r} (expected learned, uniform or random)")
    return {"probs": model.probs(gather_frames(batch.features, idx)), "steps": torch.full_like(batch.lengths, frames), "visited": idx}


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
        if isinstance(model, RecurrentAgent):
            roll = agent_batch(model, batch, frames, stop, policy, generator)
            o = {"probs": roll.probs, "steps": roll.steps, "visited": roll.indices, "utilities": roll.utilities}
        else:
            o = (sampler_batch(model, batch, frames, policy, generator) if isinstance(model, OneStepSampler)
                 else baseline_batch(model, batch, frames, sampling, generator))
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
