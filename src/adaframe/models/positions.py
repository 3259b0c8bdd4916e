"""Where an agent looks, as every agent counts it: relative positions in [0, 1] of a video, the frame indices they
name (``floor(x * T)`` of each video's own length T), the uniform scan's positions and a fixed first frame."""

from __future__ import annotations

import functools

import torch

from adaframe.data.features import uniform_indices
from adaframe.models.recurrent import Decision


def location_to_index(location: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Relative location in [0, 1] -> frame index in [0, T-1] of each video's own length."""
    idx = torch.floor(location.clamp(0.0, 1.0) * lengths.to(location.dtype)).long()
    return torch.minimum(idx, lengths - 1)


@functools.lru_cache(maxsize=64)
def scan_order(k: int) -> tuple[int, ...]:
    """The K uniform grid positions ``(i + 0.5) / K`` in coarse-to-fine order: the one nearest the middle
    first, then always the one farthest from those taken (ties: the earlier), so every prefix is spread out.
    Distances are counted in whole grid steps, so no rounding decides a tie."""
    order = [min(range(k), key=lambda i: abs(2 * i + 1 - k))]
    while len(order) < k:
        order.append(max((i for i in range(k) if i not in order), key=lambda i: min(abs(i - j) for j in order)))
    return tuple(order)


def scan_indices(lengths: torch.Tensor, k: int) -> torch.Tensor:
    """[B, K] the frames of the uniform scan, in the order it visits them: the K uniform frames
    (``data.features.uniform_indices``) in ``scan_order``."""
    return uniform_indices(lengths, k)[:, list(scan_order(k))]


def scan_positions(k: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[K] relative positions of the uniform scan, in the order it visits them."""
    return ((torch.tensor(scan_order(k), dtype=torch.float32) + 0.5) / k).to(device)


def fixed_start(position: float, lengths: torch.Tensor) -> Decision:
    """The first frame at a fixed relative ``position`` of each video: no decision (log-probability 0)."""
    location = torch.full(lengths.shape, position, device=lengths.device)
    return Decision(location_to_index(location, lengths), torch.zeros(lengths.shape, device=lengths.device))
