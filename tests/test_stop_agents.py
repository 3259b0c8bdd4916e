"""FrameGlimpse and FastForward: shapes, gradients, their moves, the learned stop, training and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaframe.data.features import Batch, FeatureDataset, collate
from adaframe.evaluate.split import agent_batch, evaluate
from adaframe.models.kinds import build_model, load_checkpoint
from adaframe.models.stop_agents import FastForward, FrameGlimpse, StopAgentConfig
from adaframe.rl.losses import agent_loss
from adaframe.rl.rollout import StopRule
from adaframe.train.config import TrainConfig
from adaframe.train.loop import train
from adaframe.utils import AdaframeError
from conftest import random_videos, run_agent

AGENTS = [FrameGlimpse, FastForward]
B, T, D, TD, DM, C, K = 6, 20, 8, 5, 4, 3, 6


def make_batch(seed: int = 0, lengths: list[int] | None = None) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths or [20, 13, 7, 1, 20, 3])
    return Batch(torch.randn(B, T, D, generator=g), lengths, torch.randn(B, TD, DM, generator=g),
                 torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(B))


def make(cls, memory_dim: int = DM, seed: int = 0):
    torch.manual_seed(seed)
    return cls(StopAgentConfig(D, memory_dim, C, hidden=16))


@pytest.mark.parametrize("cls", AGENTS)
def test_rollout_shapes_mask_and_indices(cls):
    batch = make_batch()
    roll = run_agent(make(cls), batch.features, batch.lengths, batch.memory, K, generator=torch.Generator().manual_seed(1))
    assert roll.logits.shape == (B, K, C) and roll.utilities.shape == roll.log_probs.shape == roll.alive.shape == (B, K)
    assert roll.alive[:, 0].all()  # the first step is always taken
    # alive is a prefix: once stopped, never alive again
    assert (roll.alive[:, 1:] <= roll.alive[:, :-1]).all()
    assert ((roll.indices >= 0) & (roll.indices < batch.lengths[:, None])).all()
    assert (roll.first_log_prob == 0).all() and (roll.log_probs[:, -1] == 0).all()  # a fixed start; after K steps the stop is forced


def test_fastforward_only_moves_forward_and_starts_at_the_first_frame():
    batch = make_batch()
    roll = run_agent(make(FastForward), batch.features, batch.lengths, batch.memory, K, generator=torch.Generator().manual_seed(2))
    assert (roll.indices[:, 0] == 0).all()
    steps = roll.indices[:, 1:] - roll.indices[:, :-1]
    at_end = roll.indices[:, :-1] == batch.lengths[:, None] - 1
    assert ((steps >= 1) | (at_end & (steps == 0))).all()  # at least one frame forward, until the last frame


def test_fastforward_jumps_are_fractions_of_the_length():
    ff = FastForward(StopAgentConfig(D, 0, C, hidden=8, jumps=(0.1, 0.5)))
    lengths = torch.tensor([100, 100, 10, 3])
    idx = torch.tensor([0, 80, 0, 2])
    nxt = ff.next_index(torch.tensor([0, 1, 0, 1]), idx, lengths)
    assert nxt.tolist() == [10, 99, 1, 2]  # 10 frames; clamped to the end; at least 1; stays on the last frame


@pytest.mark.parametrize("cls", AGENTS)
def test_loss_reaches_every_head(cls):
    model = make(cls)
    terms = agent_loss(model, make_batch(), K, gamma=0.9, reward_weight=1.0, step_cost=0.05,
                            generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(terms["loss"])
    terms["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if not name.startswith("memory"):
            assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    # the logged steps are the steps of the rollout the loss was taken on (the same draws), and some videos stopped
    batch = make_batch()
    roll = run_agent(model, batch.features, batch.lengths, batch.memory, K, generator=torch.Generator().manual_seed(3))
    assert terms["steps"] == roll.alive.sum(1).float().mean() and (roll.alive.sum(1) < K).any()


def naive_stop_loss(model, batch: Batch, steps: int, gamma: float, lam: float, step_cost: float, seed: int) -> torch.Tensor:
    """A stop agent's L_cls + lam * L_utl - lam * J_sel, written out video by video and step by step: cross-entropy at
    every step taken, margin rewards minus the step cost after the first step, returns within the episode, the utility
    regressed on them, and REINFORCE of each step's decision (stop, or go on and move) with Q_t - V_t."""
    roll = run_agent(model, batch.features, batch.lengths, batch.memory, steps, generator=torch.Generator().manual_seed(seed))
    probs = torch.softmax(roll.logits.detach().double(), -1)
    l_cls, l_utl, j_sel = [], [], []
    for b in range(len(batch.lengths)):
        y, taken = int(batch.labels[b]), int(roll.alive[b].sum())
        m = [float(probs[b, t, y] - max(probs[b, t, c] for c in range(C) if c != y)) for t in range(taken)]
        r = [max(0.0, m[t] - max([0.0] + m[:t])) - (step_cost if t > 0 else 0.0) for t in range(taken)]
        q = [sum(gamma**i * r[t + i] for i in range(taken - t)) for t in range(taken)]
        l_cls.append(sum(F.cross_entropy(roll.logits[b, t], batch.labels[b]) for t in range(taken)) / taken)
        l_utl.append(sum(0.5 * (roll.utilities[b, t] - q[t]) ** 2 for t in range(taken)))
        # the decision of the last step taken stops the video (or, at step K, is forced): only steps before K decide
        j_sel.append(sum(roll.log_probs[b, t] * (q[t] - roll.utilities[b, t].detach()) for t in range(min(taken, steps - 1))))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return mean(l_cls) + lam * mean(l_utl) - lam * mean(j_sel)


@pytest.mark.parametrize("cls", AGENTS)
@pytest.mark.parametrize("memory_dim", [0, DM])
@pytest.mark.parametrize("gamma, lam, step_cost", [(0.9, 1.0, 0.05), (1.0, 0.5, 0.2), (0.0, 2.0, 0.0)])
def test_stop_agent_loss_matches_naive_formula(cls, memory_dim, gamma, lam, step_cost):
    model = make(cls, memory_dim=memory_dim, seed=4)
    batch = make_batch(seed=2)
    if not memory_dim:  # the plain agents are trained without a global memory
        batch = Batch(batch.features, batch.lengths, batch.memory[:, :0, :0], batch.labels, batch.index)
    got = agent_loss(model, batch, K, gamma=gamma, reward_weight=lam, step_cost=step_cost, generator=torch.Generator().manual_seed(9))
    roll = run_agent(model, batch.features, batch.lengths, batch.memory, K, generator=torch.Generator().manual_seed(9))
    assert (roll.alive.sum(1) < K).any() and roll.alive[:, -1].any()  # some videos stopped, some ran all K steps
    want = naive_stop_loss(model, batch, K, gamma, lam, step_cost, 9)
    torch.testing.assert_close(got["loss"], want.float(), rtol=1e-5, atol=1e-5)
    g_got = torch.autograd.grad(got["loss"], list(model.parameters()), allow_unused=True)
    g_want = torch.autograd.grad(want, list(model.parameters()), allow_unused=True)
    for (name, _), a, b in zip(model.named_parameters(), g_got, g_want):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("cls", AGENTS)
def test_learned_stop_matches_a_naive_loop(cls):
    """p(stop) >= threshold stops a video; check every video's steps against step-by-step evaluation."""
    model = make(cls, seed=4).eval()
    with torch.no_grad():
        model.stop.bias.fill_(0.0)  # p(stop) near 0.5: some videos stop, some do not
    batch = make_batch(5)
    for threshold in (0.0, 0.45, 0.5, 0.55, 1.01):
        out = agent_batch(model, batch, K, StopRule("learned", threshold))
        full = agent_batch(model, batch, K)  # no stop: all K steps, the same path
        assert (full.steps == K).all()
        for b in range(B):
            # replay video b alone, one step at a time, and stop where p(stop) >= threshold
            enc = model.memory.encode(batch.memory[b: b + 1])
            state = model.initial_state(1, torch.device("cpu"))
            idx = model.first(enc, batch.lengths[b: b + 1], None, None).index
            want = K
            with torch.no_grad():
                for t in range(K):
                    step = model.step(batch.features[b: b + 1, idx[0]], enc, state, idx.float() / batch.lengths[b: b + 1].float())
                    state = step.state
                    assert full.indices[b, t] == idx[0]
                    if torch.sigmoid(step.stop_logit)[0] >= threshold:
                        want = t + 1
                        break
                    idx = model.next_index(model.greedy_action(step.policy), idx, batch.lengths[b: b + 1])
            assert out.steps[b] == want, (threshold, b)
            assert (out.indices[b, :want] == full.indices[b, :want]).all()
            assert (out.indices[b, want:] == -1).all()
        if threshold == 0.0:
            assert (out.steps == 1).all()
        if threshold > 1:
            assert (out.steps == K).all()


def test_learned_stop_needs_a_stop_head(synth_dir):
    from adaframe.models.agent import AdaFrame, AgentConfig

    ada = AdaFrame(AgentConfig(D, DM, C, hidden=8))
    with pytest.raises(AdaframeError, match="stop head"):
        agent_batch(ada, make_batch(), K, StopRule("learned", 0.5))


@pytest.mark.parametrize("model", ["frameglimpse", "frameglimpse-g", "fastforward", "fastforward-g"])
def test_train_and_reload(synth_dir, tmp_path, model):
    cfg = TrainConfig(synth_dir, tmp_path / "run", model=model, frames=4, epochs=2, hidden=16, batch_size=16, progress=False)
    out = train(cfg)
    loaded, payload = load_checkpoint(out)
    assert payload["kind"] == model
    assert payload["model_config"]["memory_dim"] == (0 if not model.endswith("-g") else 8)
    ds = FeatureDataset(synth_dir, "val", classes=payload["classes"], memory_frames=payload["memory_frames"])
    res = evaluate(loaded, ds, frames=4, stop=StopRule("learned", 0.5))
    assert res.scores.shape == (len(ds), 4) and np.isfinite(res.scores).all()
    assert (res.steps == (res.visited >= 0).sum(1)).all() and (res.steps == np.isfinite(res.utilities).sum(1)).all()
    never = evaluate(loaded, ds, frames=4, stop=StopRule("learned", 1.0))  # p(stop) never reaches 1: all K steps
    assert (never.steps == 4).all() and (res.steps <= never.steps).all()
    # the same weights rebuilt from the checkpoint's description give the same outputs
    net = build_model(model, payload["model_config"])
    net.load_state_dict(payload["state_dict"])
    again = evaluate(net, ds, frames=4, stop=StopRule("learned", 0.5))
    np.testing.assert_allclose(again.scores, res.scores, atol=1e-6)


def test_stop_agent_overfits_a_tiny_set(make_dataset, tmp_path):
    """Four videos, one class each: the loss falls and the agent gets them all right."""
    from adaframe.train.loop import make_optimizer

    make_dataset(tmp_path / "d", random_videos(4, classes=4, min_t=6, max_t=10, seed=1))
    ds = FeatureDataset(tmp_path / "d", "train")
    batch = collate([ds[i] for i in range(len(ds))])
    torch.manual_seed(0)
    model = FrameGlimpse(StopAgentConfig(ds.feature_dim, ds.memory_dim, 4, hidden=32))
    opt, _ = make_optimizer(model, TrainConfig(tmp_path / "d", tmp_path / "r", model="frameglimpse", lr=1e-2, progress=False))
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(150):
        terms = agent_loss(model, batch, 4, 0.9, 1.0, 0.05, generator=g)
        first = first if first is not None else terms["loss_cls"].item()
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    assert terms["loss_cls"].item() < 0.1 * first
    out = agent_batch(model.eval(), batch, 4, StopRule("learned", 0.5))
    assert (out.probs.argmax(1) == batch.labels).all()


@pytest.mark.parametrize("kw, match", [
    (dict(model="frameglimpse", memory_frames=4), "has no global memory"),
    (dict(model="fastforward-g", memory_frames=0), "reads the global memory"),
    (dict(model="avgpool", reward="prediction"), "--reward applies to the agents"),
    (dict(model="frameglimpse", step_cost=-1.0), "--step-cost"),
])
def test_config_refuses_contradictions(tmp_path, kw, match):
    with pytest.raises(AdaframeError, match=match):
        TrainConfig(tmp_path, tmp_path / "r", **kw)


def test_plain_variants_never_read_the_memory(tmp_path):
    assert TrainConfig(tmp_path, tmp_path / "r", model="fastforward").memory_frames == 0
