"""The AdaFrame agent and its global memory: shapes, gradients, edge cases, the loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaframe.agent import AdaFrame, AgentConfig, location_to_index
from adaframe.data import FeatureDataset, collate
from adaframe.inference import StopRule, agent_batch, evaluate
from adaframe.memory import GlobalMemory, positional_encoding
from adaframe.train import adaframe_loss

B, D, DM, C, H = 5, 16, 8, 4, 32


def make_model(memory_dim=DM, seed=0, **kw) -> AdaFrame:
    torch.manual_seed(seed)
    return AdaFrame(AgentConfig(feature_dim=D, memory_dim=memory_dim, num_classes=C, hidden=H, **kw))


def random_inputs(lengths, td=16, dm=DM, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    feats = torch.randn(len(lengths), int(lengths.max()), D, generator=g)
    feats[torch.arange(feats.shape[1])[None, :] >= lengths[:, None]] = 0.0
    memory = torch.randn(len(lengths), td, dm, generator=g)
    return feats, lengths, memory


@pytest.fixture(scope="module")
def train_batch(synth_dir):
    ds = FeatureDataset(synth_dir, "train")
    return collate([ds[i] for i in range(12)])


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("explore", [True, False])
@pytest.mark.parametrize("steps", [1, 3, 6])
def test_forward_rollout_shapes(train_batch, explore, steps):
    model = make_model()
    roll = model(train_batch.features, train_batch.lengths, train_batch.memory, steps, explore=explore,
                 generator=torch.Generator().manual_seed(0))
    n = train_batch.features.shape[0]
    assert roll.logits.shape == (n, steps, C)
    assert roll.utilities.shape == (n, steps)
    assert roll.log_probs.shape == (n, steps)
    assert roll.indices.shape == (n, steps) and roll.indices.dtype == torch.int64
    assert ((roll.indices >= 0) & (roll.indices < train_batch.lengths[:, None])).all()
    # the first frame sits at the fixed start (the middle): floor(0.5 T)
    assert roll.indices[:, 0].tolist() == [t // 2 for t in train_batch.lengths.tolist()]
    assert torch.isfinite(roll.logits).all() and torch.isfinite(roll.utilities).all()
    if explore:
        # a Gaussian log-density with std 0.1 is at most -log(0.1 sqrt(2 pi))
        assert (roll.log_probs <= -math.log(0.1 * math.sqrt(2 * math.pi)) + 1e-5).all()
    else:
        assert (roll.log_probs == 0).all()


def test_forward_explore_uses_generator(train_batch):
    model = make_model()
    run = lambda s: model(train_batch.features, train_batch.lengths, train_batch.memory, 6, explore=True,
                          generator=torch.Generator().manual_seed(s)).indices
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


@pytest.mark.parametrize("mu", [None, 0.0])
def test_adaframe_batch_shapes(train_batch, mu):
    model = make_model().eval()
    out = agent_batch(model, train_batch, 5, None if mu is None else StopRule("utility", mu))
    n = train_batch.features.shape[0]
    assert out["probs"].shape == (n, C)
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(n))
    assert out["steps"].shape == (n,) and ((out["steps"] >= 1) & (out["steps"] <= 5)).all()
    assert out["visited"].shape == (n, 5) and out["utilities"].shape == (n, 5)
    for b in range(n):
        s = int(out["steps"][b])
        assert ((out["visited"][b, :s] >= 0) & (out["visited"][b, :s] < train_batch.lengths[b])).all()
        assert (out["visited"][b, s:] == -1).all()
        assert torch.isfinite(out["utilities"][b, :s]).all() and torch.isnan(out["utilities"][b, s:]).all()
    if mu is None:
        assert (out["steps"] == 5).all()


def test_deterministic_forward_matches_inference(train_batch):
    """explore=False forward and agent_batch (no stop rule) run the same policy mean."""
    model = make_model().eval()
    with torch.no_grad():
        roll = model(train_batch.features, train_batch.lengths, train_batch.memory, 5, explore=False)
    out = agent_batch(model, train_batch, 5)
    assert torch.equal(roll.indices, out["visited"])
    torch.testing.assert_close(torch.softmax(roll.logits[:, -1], -1), out["probs"])
    torch.testing.assert_close(roll.utilities, out["utilities"])


# ---------------------------------------------------------------- gradients and the loss


def test_full_loss_reaches_every_parameter(train_batch):
    model = make_model()
    terms = adaframe_loss(model, train_batch, steps=4, gamma=0.9, reward_weight=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith("memory.") for n in names) and any(n.startswith("select.") for n in names)
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def naive_loss(model, batch, steps, gamma, lam, seed, normalize=False):
    """L_cls + lam * L_utl - lam * J_sel, written out step by step from the paper's definitions."""
    roll = model(batch.features, batch.lengths, batch.memory, steps, explore=True, generator=torch.Generator().manual_seed(seed))
    n = batch.features.shape[0]
    probs = torch.softmax(roll.logits.detach().double(), -1).numpy()
    y = batch.labels.numpy()
    q = np.zeros((n, steps))
    for b in range(n):
        m = [probs[b, t, y[b]] - max(probs[b, t, c] for c in range(C) if c != y[b]) for t in range(steps)]
        r = [max(0.0, m[t] - max([0.0] + m[:t])) for t in range(steps)]
        for t in range(steps):
            q[b, t] = sum(gamma**i * r[t + i] for i in range(steps - t))
    q = torch.from_numpy(q).float()
    l_cls = F.cross_entropy(roll.logits[:, -1], batch.labels)
    l_utl = sum(0.5 * (roll.utilities[:, t] - q[:, t]) ** 2 for t in range(steps)).mean()
    adv = [q[:, t] - roll.utilities[:, t].detach() for t in range(steps - 1)]
    if normalize:  # divided by the (unbiased) std of all B x (K-1) advantages
        flat = torch.cat(adv).double()
        std = math.sqrt(float(((flat - flat.mean()) ** 2).sum()) / (flat.numel() - 1))
        adv = [a / (std + 1e-8) for a in adv]
    j_sel = sum(roll.log_probs[:, t] * adv[t] for t in range(steps - 1)).mean()
    return l_cls + lam * l_utl - lam * j_sel


@pytest.mark.parametrize("lam, gamma, normalize", [(1.0, 0.9, False), (0.5, 0.0, False), (2.0, 1.0, False), (1.0, 0.9, True)])
def test_adaframe_loss_matches_naive_formula(train_batch, lam, gamma, normalize):
    model = make_model(seed=3)
    kw = {"normalize_advantage": True} if normalize else {}
    got = adaframe_loss(model, train_batch, steps=4, gamma=gamma, reward_weight=lam, generator=torch.Generator().manual_seed(7), **kw)
    want = naive_loss(model, train_batch, 4, gamma, lam, 7, normalize)
    torch.testing.assert_close(got["loss"], want, rtol=1e-5, atol=1e-5)
    # and the same gradients
    g_got = torch.autograd.grad(got["loss"], list(model.parameters()))
    g_want = torch.autograd.grad(want, list(model.parameters()))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- memory size 0, short videos


def test_memory_size_zero_forward_loss_inference():
    feats, lengths, _ = random_inputs([9, 4, 12])
    memory = torch.zeros(3, 0, DM)  # Td = 0
    model = make_model()
    roll = model(feats, lengths, memory, 4, explore=True, generator=torch.Generator().manual_seed(0))
    assert roll.logits.shape == (3, 4, C) and torch.isfinite(roll.logits).all()
    from adaframe.data import Batch

    batch = Batch(feats, lengths, memory, torch.tensor([0, 1, 2]), torch.arange(3))
    terms = adaframe_loss(model, batch, 4, 0.9, 1.0, torch.Generator().manual_seed(0))
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert model.head.weight.grad is not None and model.select.weight.grad.abs().sum() > 0
    model.eval()
    out = agent_batch(model, batch, 4, StopRule("utility", 0.1))
    assert out["probs"].shape == (3, C) and torch.isfinite(out["probs"]).all()
    step = model.step(feats[:, 0], model.memory.encode(memory), model.initial_state(3, torch.device("cpu")))
    assert step.attention.shape == (3, 0)


def test_memory_frames_zero_dataset_end_to_end(synth_dir):
    ds = FeatureDataset(synth_dir, "val", memory_frames=0)
    model = AdaFrame(AgentConfig(ds.feature_dim, ds.memory_dim, len(ds.classes), hidden=H))
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch.memory.shape[:2] == (len(ds), 0)
    terms = adaframe_loss(model, batch, 3, 0.9, 1.0, torch.Generator().manual_seed(0))
    terms["loss"].backward()
    res = evaluate(model, ds, frames=3, stop=StopRule("utility", 0.5))
    assert res.scores.shape == (len(ds), len(ds.classes)) and np.isfinite(res.scores).all()


@pytest.mark.parametrize("explore", [True, False])
def test_videos_shorter_than_k(explore):
    feats, lengths, memory = random_inputs([1, 2, 3, 5])
    model = make_model()
    roll = model(feats, lengths, memory, 8, explore=explore, generator=torch.Generator().manual_seed(0))
    assert roll.indices.shape == (4, 8)
    assert ((roll.indices >= 0) & (roll.indices < lengths[:, None])).all()
    assert (roll.indices[0] == 0).all()
    from adaframe.data import Batch

    out = agent_batch(model.eval(), Batch(feats, lengths, memory, torch.zeros(4, dtype=torch.long), torch.arange(4)), 8, StopRule("utility", 0.0))
    v = out["visited"]
    assert ((v == -1) | ((v >= 0) & (v < lengths[:, None]))).all()


# ---------------------------------------------------------------- location_to_index


def test_location_to_index_edges():
    loc = torch.tensor([0.0, 1.0, -0.5, 1.5, 0.999, 0.5, 0.25, -1e9, 1e9])
    lengths = torch.tensor([10, 10, 10, 10, 10, 10, 7, 3, 3])
    # by hand: floor(clamp(l) * T), T - 1 at l = 1
    assert location_to_index(loc, lengths).tolist() == [0, 9, 0, 9, 9, 5, 1, 0, 2]


def test_location_to_index_single_frame_video():
    loc = torch.tensor([0.0, 0.3, 1.0, 7.0, -3.0])
    assert location_to_index(loc, torch.ones(5, dtype=torch.long)).tolist() == [0] * 5


def test_location_to_index_is_monotone_and_covers_every_frame():
    loc = torch.linspace(-0.1, 1.1, 1001)
    idx = location_to_index(loc, torch.full((1001,), 13))
    assert (idx[1:] >= idx[:-1]).all()
    assert set(idx.tolist()) == set(range(13))


# ---------------------------------------------------------------- global memory


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


def test_attention_weights_sum_to_one_and_context_is_their_average():
    torch.manual_seed(0)
    gm = GlobalMemory(hidden=10, memory_dim=6)
    encoded = gm.encode(torch.randn(4, 9, 6) * 3)
    h = torch.randn(4, 10) * 2
    u, beta = gm(encoded, h)
    assert beta.shape == (4, 9) and u.shape == (4, 6)
    assert (beta >= 0).all()
    torch.testing.assert_close(beta.sum(1), torch.ones(4))
    # naive: z_j = (W h + b) . M_j, softmax, weighted average
    q = h @ gm.query.weight.T + gm.query.bias
    for b in range(4):
        z = torch.stack([q[b] @ encoded[b, j] for j in range(9)])
        w = torch.exp(z - z.max()) / torch.exp(z - z.max()).sum()
        torch.testing.assert_close(beta[b], w)
        torch.testing.assert_close(u[b], sum(w[j] * encoded[b, j] for j in range(9)))


def test_step_attention_sums_to_one(train_batch):
    model = make_model()
    state = model.initial_state(train_batch.features.shape[0], torch.device("cpu"))
    encoded = model.memory.encode(train_batch.memory)
    for t in range(3):
        out = model.step(train_batch.features[:, t], encoded, state)
        state = out.state
        torch.testing.assert_close(out.attention.sum(1), torch.ones(train_batch.features.shape[0]))
        assert ((out.location > 0) & (out.location < 1)).all()


def test_agent_config_validation():
    with pytest.raises(ValueError):
        AgentConfig(feature_dim=0, memory_dim=4, num_classes=3)
    with pytest.raises(ValueError):
        AgentConfig(feature_dim=4, memory_dim=4, num_classes=3, std=0.0)
    with pytest.raises(ValueError):
        AgentConfig(feature_dim=4, memory_dim=4, num_classes=3, start=1.5)
