"""The one rollout (rl/rollout.py): each decision's log-probability at the step that made it, recomputed from the step's
outputs; stopped videos leaving the batch; the stop rules against naive per-video rules (adaptive lookahead, entropy);
count_distinct."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from adaframe.data.features import FeatureDataset, collate
from adaframe.evaluate.split import agent_batch
from adaframe.models.agent import AdaFrame, AgentConfig
from adaframe.models.positions import location_to_index
from adaframe.models.recurrent import Exploration
from adaframe.models.stop_agents import FastForward, FrameGlimpse, StopAgentConfig
from adaframe.rl.rollout import StopRule, count_distinct, rollout, stored_frames, train_rollout
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


@dataclass
class Recorded(Exploration):
    """The training exploration, keeping every noise tensor the policy draws, in the order drawn."""

    draws: list[torch.Tensor] = field(default_factory=list)

    def draw(self, fn, shape, device):
        x = super().draw(fn, shape, device)
        self.draws.append(x)
        return x


def sampling_agent(ds, kind: str) -> torch.nn.Module:
    torch.manual_seed(3)
    if kind == "adaframe-gaussian":
        return lively(AdaFrame(AgentConfig(ds.feature_dim, ds.memory_dim, len(ds.classes), hidden=16, selection="gaussian",
                                           memory_read="lstm", prediction="lstm")))
    if kind == "adaframe-slots":
        return agent(ds)
    cls = FrameGlimpse if kind == "frameglimpse" else FastForward
    return cls(StopAgentConfig(ds.feature_dim, ds.memory_dim, len(ds.classes), hidden=16, stop_bias=-1.5))  # p(stop) ~ 0.2


def categorical(logits: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The action drawn from softmax(logits) with exponential noise q (argmax p / q) and its log-probability."""
    action = (torch.softmax(logits, -1) / q).argmax(-1)  # [B]
    log_p = logits - logits.logsumexp(-1, keepdim=True)  # [B, A]
    return action, log_p[torch.arange(len(action)), action]


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std * math.sqrt(2 * math.pi))


@pytest.mark.parametrize("kind", ["adaframe-gaussian", "adaframe-slots", "frameglimpse", "fastforward"])
def test_each_decisions_log_probability_is_stored_at_the_step_that_made_it(data, kind, monkeypatch):
    """cleanrl's convention: ``log_probs[:, t]`` is log pi of the decision made at step t, recomputed here from step t's
    outputs and the noise drawn after it: the next frame (``indices[:, t + 1]``), and a stop agent's stop, which ends the
    video's ``alive`` steps; ``first_log_prob`` is the first frame's. Step K-1's decision picks nothing looked at: 0."""
    ds, batch = data
    model = sampling_agent(ds, kind)
    outputs, step = [], model.step
    monkeypatch.setattr(model, "step", lambda *a: outputs.append(step(*a)) or outputs[-1])
    explore = Recorded(torch.Generator().manual_seed(0))
    with torch.no_grad():
        roll = train_rollout(model, batch.memory, batch.lengths, stored_frames(batch.features), K, explore)
    draws, lengths = iter(explore.draws), batch.lengths
    if kind == "adaframe-slots":  # the first frame, chosen from the memory read with h_0 = 0
        encoded = model.memory.encode(batch.memory)
        h0 = torch.zeros(len(lengths), model.cfg.hidden)
        blocked = torch.zeros(len(lengths), encoded.shape[1] + 3, dtype=torch.bool)
        blocked[:, -2:] = True  # no frame to step back or forward from
        logits = model.select(h0, model.head_scale(model.memory(encoded, h0)[0]), encoded, blocked)
        _, want = categorical(logits, next(draws))
        next(draws)  # where in the chosen slot
        torch.testing.assert_close(roll.first_log_prob, want)
        assert (want < 0).all()
    else:  # a fixed start: no decision
        start = model.cfg.start if kind == "adaframe-gaussian" else model.start
        assert (roll.first_log_prob == 0).all() and torch.equal(roll.indices[:, 0], (start * lengths).long())
    for t, out in enumerate(outputs):
        last = t == K - 1
        if kind.startswith("adaframe"):
            if last:  # AdaFrame draws nothing after its last step
                assert (roll.log_probs[:, t] == 0).all()
                continue
            if kind == "adaframe-gaussian":
                location = out.policy + model.cfg.policy_std * next(draws)  # [B]
                want = gaussian_log_density(location, out.policy, model.cfg.policy_std)
                assert torch.equal(roll.indices[:, t + 1], location_to_index(location, lengths)), t
            else:
                _, want = categorical(out.policy, next(draws))
                next(draws)
        else:
            p_stop = torch.sigmoid(out.stop_logit)  # [B]
            stop = next(draws) < p_stop
            if kind == "frameglimpse":
                action = out.policy + model.cfg.policy_std * next(draws)  # [B] the next location
                log_p_move, frame = gaussian_log_density(action, out.policy, model.cfg.policy_std), location_to_index(action, lengths)
            else:
                action, log_p_move = categorical(out.policy, next(draws))
                frame = model.next_index(action, roll.indices[:, t], lengths)
            want = torch.where(stop, p_stop.log(), (1 - p_stop).log() + log_p_move)
            if last:
                want = torch.zeros_like(want)  # the stop is forced
            else:
                assert torch.equal(roll.indices[:, t + 1], frame), t
                assert torch.equal(roll.alive[:, t + 1], roll.alive[:, t] & ~stop), t  # a sampled stop ends the video
        torch.testing.assert_close(roll.log_probs[:, t], want, rtol=1e-5, atol=1e-5, msg=f"step {t}")
        assert last or (want != 0).all()
    assert next(draws, None) is None  # every draw was accounted for
    if kind in ("frameglimpse", "fastforward"):  # some videos stopped mid-rollout and some ran all K steps
        assert (roll.steps < K).any() and (roll.steps > 1).any() and roll.alive[:, -1].any()


def test_stopped_videos_leave_the_batch_and_their_later_steps_hold_fill_values(data, monkeypatch):
    """A learned stop in evaluation: the video takes the steps up to the first where p(stop) >= threshold (computed
    here from a K-step run without a stop, which follows the same path), its later steps run on the others only, and
    its rollout holds NaN logits and utilities, frame -1, log-probability 0 and alive False there."""
    ds, batch = data
    torch.manual_seed(1)
    model = FrameGlimpse(StopAgentConfig(ds.feature_dim, ds.memory_dim, len(ds.classes), hidden=16, stop_bias=0.0)).eval()
    outputs, rows, step = [], [], model.step
    monkeypatch.setattr(model, "step", lambda frame, *a: rows.append(len(frame)) or outputs.append(step(frame, *a)) or outputs[-1])
    with torch.no_grad():
        full = rollout(model, batch.memory, batch.lengths, stored_frames(batch.features), K)
        p_stop = torch.stack([torch.sigmoid(out.stop_logit) for out in outputs], 1)  # [B, K]
        threshold = float(p_stop.quantile(0.75))
        fires = p_stop >= threshold  # [B, K]
        want = torch.where(fires.any(1), fires.float().argmax(1) + 1, K)  # [B] steps up to the first that fires
        assert (want < K).any() and (want == K).any() and len(set(want.tolist())) > 2
        rows.clear()
        roll = rollout(model, batch.memory, batch.lengths, stored_frames(batch.features), K, stop=StopRule("learned", threshold))
    assert torch.equal(roll.steps, want)
    assert rows == [int((want > t).sum()) for t in range(K)]  # the model ran on the videos still going
    taken = torch.arange(K)[None, :] < want[:, None]  # [B, K]
    assert torch.equal(roll.alive, taken)
    assert torch.equal(roll.indices[taken], full.indices[taken]) and (roll.indices[~taken] == -1).all()
    torch.testing.assert_close(roll.logits[taken], full.logits[taken])
    torch.testing.assert_close(roll.utilities[taken], full.utilities[taken])
    assert torch.isnan(roll.logits[~taken]).all() and torch.isnan(roll.utilities[~taken]).all()
    assert (roll.log_probs == 0).all() and (roll.first_log_prob == 0).all()  # the most likely actions decide nothing sampled
    last = torch.softmax(full.logits[torch.arange(len(want)), want - 1], -1)  # [B] the prediction at each video's last step
    torch.testing.assert_close(roll.probs, last)
