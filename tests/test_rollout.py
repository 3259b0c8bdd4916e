"""The one rollout (rl/rollout.py): each decision's log-probability at the step that made it, the stop rules against
naive per-video rules (adaptive lookahead, entropy), count_distinct."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaframe.data.features import FeatureDataset, collate
from adaframe.evaluate.split import agent_batch
from adaframe.models.agent import AdaFrame, AgentConfig
from adaframe.models.recurrent import Exploration
from adaframe.models.stop_agents import FastForward, StopAgentConfig
from adaframe.rl.rollout import StopRule, count_distinct, rollout, stored_frames
from conftest import lively, run_agent

K = 8


@pytest.fixture(scope="module")
def data(synth_dir):
    ds = FeatureDataset(synth_dir, "train")
    return ds, collate([ds[i] for i in range(len(ds))])


def agent(ds, seed=0) -> AdaFrame:
    torch.manual_seed(seed)
    model = AdaFrame(AgentConfig(ds.feature_dim, ds.memory_dim, len(ds.classes), hidden=32))
    return lively(model).eval()  # utilities rise and fall across steps, and the policy jumps


def naive_stop(utilities: list[float], mu: float, patience: int) -> int:
    """Steps taken: stop at the first step where (max utility so far - utility > mu) has happened `patience` times."""
    best, strikes = -np.inf, 0
    for t, u in enumerate(utilities):
        best = max(best, u)
        if best - u > mu:
            strikes += 1
        if strikes >= patience:
            return t + 1
    return len(utilities)


def drop_thresholds(u: np.ndarray) -> list[float]:
    """Values of mu between the observed drops (max so far - utility), away from any of them."""
    drops = np.sort(np.unique(np.round((np.maximum.accumulate(u, axis=1) - u).ravel(), 6)))
    drops = drops[drops > 0]
    mids = [(a + b) / 2 for a, b in zip(drops[:-1], drops[1:]) if b - a > 1e-3]
    return [mids[int(q * (len(mids) - 1))] for q in (0.1, 0.4, 0.7)]


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_adaptive_lookahead_matches_naive_rule(data, patience):
    ds, batch = data
    model = agent(ds)
    with torch.no_grad():
        roll = run_agent(model, batch.features, batch.lengths, batch.memory, K, explore=False)
    u = roll.utilities.double().numpy()
    probs_per_step = torch.softmax(roll.logits, -1)
    thresholds = drop_thresholds(u)
    assert len(thresholds) == 3
    saw_early, saw_full = False, False
    for mu in thresholds + [0.0]:
        out = agent_batch(model, batch, K, StopRule("utility", mu, patience))
        want_steps = [naive_stop(list(row), mu, patience) for row in u]
        assert out.steps.tolist() == want_steps, f"mu={mu}"
        for b, s in enumerate(want_steps):
            torch.testing.assert_close(out.probs[b], probs_per_step[b, s - 1])
            assert out.probs[b].argmax() == probs_per_step[b, s - 1].argmax()
            assert out.indices[b, :s].tolist() == roll.indices[b, :s].tolist()
            assert (out.indices[b, s:] == -1).all()
        saw_early |= min(want_steps) < K
        saw_full |= max(want_steps) == K
    assert saw_early and saw_full  # the test exercises both outcomes


def test_mu_none_and_huge_run_all_steps(data):
    ds, batch = data
    model = agent(ds)
    full = agent_batch(model, batch, K, None)
    huge = agent_batch(model, batch, K, StopRule("utility", 1e9))
    assert (full.steps == K).all() and (huge.steps == K).all()
    assert (full.indices >= 0).all()
    assert torch.equal(full.indices, huge.indices)
    torch.testing.assert_close(full.probs, huge.probs)


def test_mu_zero_stops_early_for_someone(data):
    ds, batch = data
    out = agent_batch(agent(ds), batch, K, StopRule("utility", 0.0))
    assert out.steps.min() < K


def test_count_distinct_hand_cases():
    idx = torch.tensor([[3, 1, 3, -1], [-1, -1, -1, -1], [0, 1, 2, 3], [5, 5, 5, 5], [2, -1, 0, -1]])
    assert count_distinct(idx).tolist() == [2, 0, 4, 1, 2]


def test_count_distinct_vs_python_sets():
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(-1, 6, (200, 7), generator=g)
    want = [len({v for v in row if v >= 0}) for row in idx.tolist()]
    assert count_distinct(idx).tolist() == want


@pytest.mark.parametrize("patience", [1, 2])
def test_entropy_stop_matches_naive_rule(data, patience):
    """Stop once entropy / log C < threshold has happened `patience` times, each video on its own."""
    ds, batch = data
    model = agent(ds, seed=2)
    with torch.no_grad():
        model.head.weight.mul_(6.0)  # confident, varied predictions: entropies spread over [0, 1]
        roll = run_agent(model, batch.features, batch.lengths, batch.memory, K, explore=False)
    p = torch.softmax(roll.logits.double(), -1)
    entropy = (-(p * p.clamp(min=1e-12).log()).sum(-1) / np.log(p.shape[-1])).numpy()  # [B, K]
    thresholds = np.quantile(entropy, [0.2, 0.5, 0.8])
    seen = set()
    for threshold in thresholds:
        out = agent_batch(model, batch, K, StopRule("entropy", float(threshold), patience))
        for b, row in enumerate(entropy):
            fired = np.cumsum(row < threshold)
            want = int(np.argmax(fired >= patience)) + 1 if fired[-1] >= patience else K
            assert out.steps[b] == want
            seen.add(want)
    assert len(seen) > 2  # the thresholds really stopped videos at different steps


def test_stop_rule_validation():
    from adaframe.utils import AdaframeError

    with pytest.raises(AdaframeError):
        StopRule("utility", -0.1)
    with pytest.raises(AdaframeError):
        StopRule("entropy", 0.2, patience=0)
    with pytest.raises(AdaframeError):
        StopRule("never", 0.2)
    assert StopRule("utility", 0.7).describe() == "mu 0.7"
    assert StopRule("learned", 0.5, 2).describe() == "p(stop) >= 0.5, patience 2"


@pytest.mark.parametrize("kind", ["adaframe", "fastforward"])
def test_each_decisions_log_probability_is_stored_at_the_step_that_made_it(data, kind, monkeypatch):
    """cleanrl's convention: log_probs[:, t] is the decision made at step t (its next frame, a stop agent's stop too),
    first_log_prob the first frame's; the decision of step K-1 picks nothing looked at and is stored as 0."""
    ds, batch = data
    torch.manual_seed(3)
    model = agent(ds) if kind == "adaframe" else FastForward(StopAgentConfig(ds.feature_dim, ds.memory_dim, len(ds.classes), hidden=16))
    made, act, first = [], model.policy.act, model.first
    monkeypatch.setattr(model.policy, "act", lambda *a: made.append(act(*a)) or made[-1])
    firsts = []
    monkeypatch.setattr(model, "first", lambda *a: firsts.append(first(*a)) or firsts[-1])
    roll = rollout(model, batch.memory, batch.lengths, stored_frames(batch.features), K,
                   explore=Exploration(torch.Generator().manual_seed(0)))
    assert torch.equal(roll.first_log_prob, firsts[0].log_prob) and torch.equal(roll.indices[:, 0], firsts[0].index)
    for t, decision in enumerate(made[:-1]):
        assert torch.equal(roll.log_probs[:, t], decision.log_prob), t
        assert torch.equal(roll.indices[:, t + 1], decision.index), t  # it chose the next step's frame
        assert (decision.log_prob != 0).any()
    assert (roll.log_probs[:, -1] == 0).all()
