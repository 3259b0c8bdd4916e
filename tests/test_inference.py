"""Inference: adaptive lookahead against a naive per-video stopping rule, count_distinct, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaframe.data.features import FeatureDataset, collate
from adaframe.evaluate.split import agent_batch, evaluate
from adaframe.models.agent import AdaFrame, AgentConfig
from adaframe.models.baselines import AvgPooling, BaselineConfig, LSTMBaseline
from adaframe.rl.rollout import StopRule, count_distinct
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


def make_model(kind: str, ds: FeatureDataset):
    torch.manual_seed(1)
    if kind == "adaframe":
        return agent(ds, seed=1)
    cfg = BaselineConfig(ds.feature_dim, len(ds.classes), hidden=32)
    return AvgPooling(cfg) if kind == "avgpool" else LSTMBaseline(cfg)


@pytest.mark.parametrize(
    "kind, sampling, mu",
    [("adaframe", "uniform", None), ("adaframe", "uniform", 0.05), ("avgpool", "uniform", None), ("avgpool", "all", None),
     ("lstm", "uniform", None), ("lstm", "all", None)],
)
def test_batched_equals_one_video_at_a_time(synth_dir, kind, sampling, mu):
    ds = FeatureDataset(synth_dir, "train")
    model = make_model(kind, ds)
    one = evaluate(model, ds, frames=5, sampling=sampling, stop=None if mu is None else StopRule("utility", mu), batch_size=1)
    many = evaluate(model, ds, frames=5, sampling=sampling, stop=None if mu is None else StopRule("utility", mu), batch_size=16)
    np.testing.assert_allclose(one.scores, many.scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(one.steps, many.steps)
    np.testing.assert_array_equal(one.frames, many.frames)
    np.testing.assert_array_equal(one.visited, many.visited)
    np.testing.assert_array_equal(one.labels, ds.labels)
    if mu is not None:
        assert one.steps.min() < 5  # adaptive stopping really happened in this case


def test_evaluate_adaframe_result_fields(synth_dir):
    ds = FeatureDataset(synth_dir, "val")
    res = evaluate(agent(ds), ds, frames=4, stop=StopRule("utility", 0.05), batch_size=4)
    n = len(ds)
    assert res.scores.shape == (n, len(ds.classes)) and res.visited.shape == (n, 4)
    np.testing.assert_allclose(res.scores.sum(1), 1.0, rtol=1e-5)
    want_frames = [len({v for v in row if v >= 0}) for row in res.visited.tolist()]
    assert res.frames.tolist() == want_frames
    assert res.steps.tolist() == [(row >= 0).sum() for row in res.visited]
    assert (res.frames <= res.steps).all()


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
