"""The global memory (models/memory.py): the positional encoding and the soft attention queried by the LSTM state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaframe.models.memory import GlobalMemory, positional_encoding


@pytest.mark.parametrize("frames, dim", [(16, 8), (5, 7), (1, 2), (0, 4), (3, 1)])
def test_positional_encoding_values(frames, dim):
    pe = positional_encoding(frames, dim)
    assert pe.shape == (frames, dim)
    want = np.zeros((frames, dim))
    for j in range(frames):
        for i in range(dim):
            angle = j / 10000 ** ((i - i % 2) / dim)
            want[j, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
    np.testing.assert_allclose(pe.numpy(), want, atol=1e-5)


def test_encode_adds_positions():
    mem = torch.randn(2, 6, 4)
    torch.testing.assert_close(GlobalMemory(8, 4).encode(mem), mem + positional_encoding(6, 4)[None])


def test_attention_weights_are_the_softmax_of_query_dot_slots_and_context_is_their_average():
    torch.manual_seed(0)
    gm = GlobalMemory(hidden=10, memory_dim=6)
    encoded = gm.encode(torch.randn(4, 9, 6) * 3)
    h = torch.randn(4, 10) * 2
    u, beta = gm(encoded, h)
    assert beta.shape == (4, 9) and u.shape == (4, 6)
    # naive: z_j = (W h + b) . M_j, softmax, weighted average
    q = h @ gm.query.weight.T + gm.query.bias
    for b in range(4):
        z = torch.stack([q[b] @ encoded[b, j] for j in range(9)])
        w = torch.exp(z - z.max()) / torch.exp(z - z.max()).sum()
        torch.testing.assert_close(beta[b], w)
        torch.testing.assert_close(u[b], sum(w[j] * encoded[b, j] for j in range(9)))
