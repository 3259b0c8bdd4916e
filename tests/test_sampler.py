"""The one-step sampler (``models/sampler.py``): its set probabilities, its choice, its loss and its gradients, and
through the CLI: trained, evaluated with its own policy and with uniform frames, refused where it cannot run."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from adaframe.data.features import Batch
from adaframe.models.sampler import OneStepSampler, SamplerConfig, plackett_luce_log_prob, slot_frames
from adaframe.rl.losses import sampler_loss
from adaframe.utils import AdaframeError
from conftest import adaframe

D, DM, C, TD, K = 6, 4, 3, 8, 3


def make(seed: int = 0) -> OneStepSampler:
    torch.manual_seed(seed)
    return OneStepSampler(SamplerConfig(D, DM, C, TD, K, hidden=16))


def batch(b: int = 5, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([20, 3, 8, 15, 9])[:b]
    features = torch.randn(b, int(lengths.max()), D, generator=g)
    return Batch(features, lengths, torch.randn(b, TD, DM, generator=g), torch.arange(b) % C, torch.arange(b))


def test_plackett_luce_is_a_distribution_over_ordered_draws():
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
    p = torch.softmax(logits, 1)[0]
    total = 0.0
    for i, j in itertools.permutations(range(4), 2):
        got = plackett_luce_log_prob(logits, torch.tensor([[i, j]])).exp().item()
        assert got == pytest.approx(float(p[i] * p[j] / (1 - p[i])), rel=1e-5)  # the naive formula
        total += got
    assert total == pytest.approx(1.0, rel=1e-5)


def test_select_picks_k_distinct_slots_in_temporal_order():
    model, b = make(), batch()
    with torch.no_grad():
        idx = model.select(b.memory, b.lengths, K)
        top = model.slot_logits(b.memory).topk(K, 1).indices.sort(1).values
    assert idx.shape == (5, K) and torch.equal(idx, slot_frames(top, TD, b.lengths))
    assert (idx[:, 1:] >= idx[:, :-1]).all() and ((idx >= 0) & (idx < b.lengths[:, None])).all()
    assert torch.equal(slot_frames(torch.tensor([[0, 7]]), TD, torch.tensor([16])), torch.tensor([[1, 15]]))  # slot centres
    with pytest.raises(AdaframeError, match="picks K of the global memory's 8 slots"):
        model.select(b.memory, b.lengths, TD + 1)


def test_classifier_learns_from_random_frames_and_the_policy_from_its_reward():
    model, b = make(), batch()

    def grads(lam: float) -> dict[str, torch.Tensor]:
        model.zero_grad()
        sampler_loss(model, b, K, reward_weight=lam, generator=torch.Generator().manual_seed(1))["loss"].backward()
        return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}

    full, cls_only = grads(1.0), grads(0.0)
    assert all(g.abs().sum() > 0 for g in full.values()), "every parameter learns"
    for name in full:  # lambda scales the policy's term alone: the reward carries no gradient into the classifier
        if name.startswith("policy."):
            assert cls_only[name].abs().sum() == 0, name
        else:
            torch.testing.assert_close(full[name], cls_only[name])


def test_training_draws_are_seeded_and_the_reward_is_the_classifier_confidence():
    model, b = make(), batch()
    one = sampler_loss(model, b, K, 1.0, torch.Generator().manual_seed(4))
    two = sampler_loss(model, b, K, 1.0, torch.Generator().manual_seed(4))
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert 0 < one["reward"].item() < 1  # a mean p(gt)


def test_sampler_through_the_cli(synth_dir, tmp_path):
    common = ("--data", str(synth_dir), "--frames", "3", "--epochs", "2", "--hidden", "8", "--batch-size", "16", "--no-progress")
    adaframe("train", "--out", "S", "--model", "sampler", *common, cwd=tmp_path)
    learned = adaframe("eval", "--checkpoint", "S", "--data", str(synth_dir), "--json", "l.json", "--no-progress", cwd=tmp_path)
    rows = json.loads((tmp_path / "l.json").read_text())
    assert rows["model"] == "sampler" and rows["avg_frames"] <= 3 and rows["memory_frames"] == 16
    assert "uniform_mAP" in rows and "learned minus uniform" in learned.stdout
    bad = adaframe("eval", "--checkpoint", "S", "--data", str(synth_dir), "--frames", "17", cwd=tmp_path, check=False)
    assert bad.returncode != 0 and bad.stderr.strip().endswith("picks K of the global memory's 16 slots: K = 17 is more (use --frames <= 16)")
    bad = adaframe("eval", "--checkpoint", "S", "--data", str(synth_dir), "--mu", "0.5", cwd=tmp_path, check=False)
    assert bad.returncode != 0 and "picks its frames in one step" in bad.stderr
    bad = adaframe("train", "--out", "T", "--model", "sampler", *common[:2], "--frames", "20", cwd=tmp_path, check=False)
    assert bad.returncode != 0 and "K = 20 is more" in bad.stderr
