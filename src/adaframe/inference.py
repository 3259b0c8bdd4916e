"""Inference: AdaFrame with K fixed steps or adaptive lookahead (Section 3.2), and the baselines.

Everything is batched. In adaptive mode a video leaves the batch the step it stops, so the
work done follows the frames actually used, not the batch's slowest video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from adaframe.agent import AdaFrame, location_to_index
from adaframe.baselines import AvgPooling, LSTMBaseline
from adaframe.data import Batch, FeatureDataset, Sampling, collate, gather_frames, sample_indices


@dataclass
class Result:
    """Per-video outputs of one evaluation, as numpy arrays in dataset order."""

    scores: np.ndarray  # [N, C] class probabilities
    labels: np.ndarray  # [N]
    steps: np.ndarray  # [N] frames looked at (AdaFrame steps; baselines: frames sampled)
    frames: np.ndarray  # [N] distinct frames, what the backbone must process
    visited: np.ndarray  # [N, K] frame index per step, -1 after the stop


def count_distinct(idx: torch.Tensor) -> torch.Tensor:
    """idx [B, k] with -1 for 'none' -> number of distinct non-negative entries per row [B]."""
    s = idx.sort(dim=1).values
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    return (new & (s >= 0)).sum(1)


FrameFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def adaframe_rollout(model: AdaFrame, memory: torch.Tensor, lengths: torch.Tensor, frame_fn: FrameFn, max_steps: int,
                     mu: float | None = None, patience: int = 1, scan: bool = False) -> dict[str, torch.Tensor]:
    """Run the agent on a batch, deterministically (the policy's mean location).

    The frames come from ``frame_fn(rows, idx) -> [A, D]``: the features of frame ``idx[a]`` of
    video ``rows[a]``. Evaluation gathers them from stored features; ``predict`` decodes the
    frame and runs the backbone on it right then, so only the frames the policy picks are computed.

    Args:
        memory: [B, Td, Dm] global-memory features; lengths: [B] frames per video.
        max_steps: K, the most steps any video takes.
        mu: adaptive lookahead margin; ``None`` runs all ``max_steps`` steps.
        patience: stop once ``max utility so far - current utility > mu`` has happened this many times.
        scan: a cost check, not AdaFrame: ignore the selection head and take the next frame
            (wrapping around), so that every step computes a new frame.

    Returns:
        probs [B, C] at each video's last step, steps [B], visited [B, K] (-1 after the stop),
        utilities [B, K] (NaN after the stop).
    """
    b, device = lengths.shape[0], lengths.device
    encoded = model.memory.encode(memory)
    h, c = model.initial_state(b, device)
    idx = model.start_indices(lengths)
    probs = torch.zeros(b, model.cfg.num_classes, device=device)
    visited = torch.full((b, max_steps), -1, dtype=torch.long, device=device)
    utilities = torch.full((b, max_steps), float("nan"), device=device)
    steps = torch.zeros(b, dtype=torch.long, device=device)
    best_utility = torch.full((b,), float("-inf"), device=device)
    strikes = torch.zeros(b, dtype=torch.long, device=device)
    active = torch.arange(b, device=device)  # rows still running
    for t in range(max_steps):
        frame = frame_fn(active, idx[active])  # [A, D]
        out = model.step(frame, encoded[active], (h[active], c[active]))
        h[active], c[active] = out.state
        probs[active] = torch.softmax(out.logits, dim=-1)
        visited[active, t] = idx[active]
        utilities[active, t] = out.utility
        steps[active] = t + 1
        if scan:
            idx[active] = (idx[active] + 1) % lengths[active]
        else:
            idx[active] = location_to_index(out.location, lengths[active])
        if mu is None:
            continue
        best_utility[active] = torch.maximum(best_utility[active], out.utility)
        strikes[active] += (best_utility[active] - out.utility > mu).long()
        active = active[strikes[active] < patience]
        if active.numel() == 0:
            break
    return {"probs": probs, "steps": steps, "visited": visited, "utilities": utilities}


def adaframe_batch(model: AdaFrame, batch: Batch, max_steps: int, mu: float | None = None, patience: int = 1) -> dict[str, torch.Tensor]:
    """``adaframe_rollout`` on a batch of stored features."""
    def frames(rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return gather_frames(batch.features[rows], idx[:, None]).squeeze(1)  # [A, D]

    return adaframe_rollout(model, batch.memory, batch.lengths, frames, max_steps, mu, patience)


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


def evaluate(model: torch.nn.Module, dataset: FeatureDataset, frames: int, sampling: Sampling = "uniform",
             mu: float | None = None, patience: int = 1, batch_size: int = 128, device: torch.device | str = "cpu",
             seed: int = 0, progress: bool = False) -> Result:
    """Run a model over a whole split and collect per-video results in dataset order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    generator = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    outs = []
    for batch in tqdm(loader, desc="eval", disable=not progress, unit="batch", leave=False):
        batch = batch.to(device)
        if isinstance(model, AdaFrame):
            o = adaframe_batch(model, batch, frames, mu, patience)
        else:
            o = baseline_batch(model, batch, frames, sampling, generator)
        o["distinct"] = count_distinct(o["visited"])
        outs.append({k: v.cpu() for k, v in o.items() if k != "utilities"})
    width = max(o["visited"].shape[1] for o in outs)
    visited = torch.cat([torch.nn.functional.pad(o["visited"], (0, width - o["visited"].shape[1]), value=-1) for o in outs])
    return Result(
        scores=torch.cat([o["probs"] for o in outs]).numpy(),
        labels=dataset.labels.copy(),
        steps=torch.cat([o["steps"] for o in outs]).numpy(),
        frames=torch.cat([o["distinct"] for o in outs]).numpy(),
        visited=visited.numpy(),
    )
