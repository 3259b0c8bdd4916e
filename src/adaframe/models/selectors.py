"""Training-free frame selectors: K frames of a video picked from its global memory alone (Td features at the times
``(j + 0.5) / Td``, no backbone cost), for a trained classifier (AvgPooling's, the LSTM's) to read.

* ``kcenter``: farthest-first traversal of the memory's features (k-center greedy), from the slot nearest the video's
  mean; the frames at the chosen slots' times.
* ``motion`` (MGSampler's idea, Zhi et al., ICCV 2021): the frames at K evenly spaced quantiles of the change between
  neighbouring memory features, accumulated over time.
"""

from __future__ import annotations

from typing import Literal

import torch

from adaframe.models.positions import location_to_index
from adaframe.models.sampler import slot_frames
from adaframe.utils import AdaframeError

Selector = Literal["kcenter", "motion"]
SELECTORS: tuple[Selector, ...] = ("kcenter", "motion")


def kcenter_slots(memory: torch.Tensor, k: int) -> torch.Tensor:
    """memory [B, Td, Dm] -> K slots [B, K] by farthest-first traversal, in temporal order (K <= Td)."""
    b, td, _ = memory.shape
    if k > td:
        raise AdaframeError(f"k-center picks K of the global memory's {td} slots: K = {k} is more (use --frames <= {td})")
    dist = torch.cdist(memory, memory)  # [B, Td, Td]
    rows = torch.arange(b, device=memory.device)
    first = (memory - memory.mean(1, keepdim=True)).norm(dim=-1).argmin(1)  # [B] the most typical slot
    chosen = [first]
    nearest = dist[rows, first]  # [B, Td] distance of each slot to the chosen set
    for _ in range(k - 1):
        nxt = nearest.argmax(1)  # [B] chosen slots have distance 0, so they are never picked again while others remain
        chosen.append(nxt)
        nearest = torch.minimum(nearest, dist[rows, nxt])
    return torch.stack(chosen, 1).sort(1).values  # [B, K]


def motion_positions(memory: torch.Tensor, k: int) -> torch.Tensor:
    """memory [B, Td, Dm] -> K relative positions [B, K] at evenly spaced quantiles of the accumulated change."""
    b, td, _ = memory.shape
    times = (torch.arange(td, device=memory.device, dtype=memory.dtype) + 0.5) / td  # [Td] the slots' times
    if td < 2:
        return ((torch.arange(k, device=memory.device, dtype=memory.dtype) + 0.5) / k).expand(b, k)
    change = (memory[:, 1:] - memory[:, :-1]).norm(dim=-1) + 1e-6  # [B, Td-1] >0: a still video falls back to uniform
    cum = torch.cat([change.new_zeros(b, 1), change.cumsum(1)], 1)  # [B, Td] motion accumulated up to each slot
    cum = cum / cum[:, -1:]  # [B, Td] from 0 to 1
    q = ((torch.arange(k, device=memory.device, dtype=memory.dtype) + 0.5) / k).expand(b, k).contiguous()  # [B, K]
    # Invert the piecewise-linear cumulative: the segment each quantile falls in, then linear within it.
    j = torch.searchsorted(cum, q, right=True).clamp(1, td - 1)  # [B, K] cum[j-1] <= q < cum[j]
    lo, hi = cum.gather(1, j - 1), cum.gather(1, j)
    within = (q - lo) / (hi - lo).clamp(min=1e-12)
    return times[j - 1] + within * (times[j] - times[j - 1])  # [B, K] between the two slots' times


def select_frames(memory: torch.Tensor, lengths: torch.Tensor, k: int, selector: Selector) -> torch.Tensor:
    """The K frames [B, K] that ``selector`` picks from the memory [B, Td, Dm] of videos of ``lengths`` frames."""
    if memory.shape[1] == 0:
        raise AdaframeError("a training-free selector (kcenter, motion) picks frames from the global memory, and this data set "
                            "has none (no memory/ folder)")
    if selector == "kcenter":
        return slot_frames(kcenter_slots(memory, k), memory.shape[1], lengths)
    if selector == "motion":
        return location_to_index(motion_positions(memory, k), lengths[:, None])
    raise ValueError(f"unknown selector {selector!r}")
