"""Global memory (Section 3.1): a cheap look at the whole video that the agent queries by attention."""

from __future__ import annotations

import math

import torch
from torch import nn

from adaframe.models.standardize import Standardize


def positional_encoding(frames: int, dim: int) -> torch.Tensor:
    """Sinusoidal encoding of memory slot j (Vaswani et al.); [frames, dim]."""
    if frames == 0 or dim == 0:  # the no-memory ablation
        return torch.zeros(frames, dim)
    pos = torch.arange(frames, dtype=torch.float32)[:, None]  # [Td, 1]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # [ceil(Dm/2)]
    pe = torch.zeros(frames, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


class GlobalMemory(nn.Module):
    """Soft attention over Td memory features, queried by the LSTM state.

    ``M_j = v^s_j + PE(j)``; ``z_j = (W_h h_{t-1})^T M_j``; ``beta = softmax(z)``; ``u_t = beta^T M``.
    Because of the positional encoding, ``u_t`` also says *where* the attended frames are, which the
    selection head needs to jump there. W_h has a bias, so the very first query (``h_0 = 0``) is a
    learned one rather than a uniform average. With Td = 0 (the no-memory ablation) ``u_t = 0``.
    """

    def __init__(self, hidden: int, memory_dim: int):
        super().__init__()
        self.memory_dim = memory_dim
        self.norm = Standardize(memory_dim, "memory")
        self.query = nn.Linear(hidden, memory_dim) if memory_dim else None  # W_h

    def encode(self, memory: torch.Tensor) -> torch.Tensor:
        """memory [B, Td, Dm] -> M [B, Td, Dm], standardised, with positions added (once per video)."""
        td, dm = memory.shape[1], memory.shape[2]
        return self.norm(memory) + positional_encoding(td, dm).to(memory)

    def forward(self, encoded: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """encoded [B, Td, Dm], h [B, H] -> (u [B, Dm], beta [B, Td])."""
        if encoded.shape[1] == 0 or self.query is None:
            return h.new_zeros(h.shape[0], self.memory_dim), h.new_zeros(h.shape[0], 0)
        q = self.query(h)  # [B, Dm]
        z = torch.einsum("bd,btd->bt", q, encoded)  # [B, Td]
        beta = torch.softmax(z, dim=-1)
        u = torch.einsum("bt,btd->bd", beta, encoded)  # [B, Dm]
        return u, beta
