"""What every agent (AdaFrame with each selection and memory read, FrameGlimpse, FastForward, with and without the
global memory) guarantees through the one rollout (``rollout.rollout``) that training (sampled), evaluation and
``predict`` (most likely actions, early stop) share: shapes, masks after a stop, frames inside the video, determinism,
gradients; and the registry's table of model kinds."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from adaframe.models.kinds import KINDS, build_model
from adaframe.models.recurrent import Exploration, RecurrentAgent
from adaframe.models.sampler import OneStepSampler
from adaframe.rl.rollout import Rollout, StopRule, rollout, train_rollout

B, T, D, TD, DM, C, K = 6, 11, 5, 8, 4, 3, 4
AGENTS = {  # name: (kind, extra dims)
    "adaframe slots, policy read": ("adaframe", {"selection": "slots", "memory_read": "policy"}),
    "adaframe gaussian, lstm read (paper)": ("adaframe", {"selection": "gaussian", "memory_read": "lstm"}),
    "adaframe slots, mixed prediction (default)": ("adaframe", {"prediction": "mix"}),
    "adaframe gaussian, pooled prediction": ("adaframe", {"selection": "gaussian", "prediction": "pooled"}),
    "adaframe slots, no memory": ("adaframe", {"selection": "slots", "memory_read": "policy", "memory_dim": 0}),
    "frameglimpse": ("frameglimpse", {"memory_dim": 0}),
    "frameglimpse-g": ("frameglimpse-g", {}),
    "fastforward": ("fastforward", {"memory_dim": 0}),
    "fastforward-g": ("fastforward-g", {}),
}


def make(name: str) -> torch.nn.Module:
    kind, extra = AGENTS[name]
    torch.manual_seed(0)
    model = build_model(kind, {"feature_dim": D, "memory_dim": DM, "num_classes": C, "hidden": 12, **extra})
    with torch.no_grad():  # untrained heads that differ between videos and steps, so stops and moves happen
        for p in model.parameters():
            p.normal_(0.0, 0.7)
    return model.eval()


def inputs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    features = torch.randn(B, T, D, generator=g)
    lengths = torch.tensor([T, 1, 2, 5, T - 1, 7])
    memory = torch.randn(B, TD if model.cfg.memory_dim else 0, model.cfg.memory_dim, generator=g)
    return features, lengths, memory


def run(model: torch.nn.Module, stop: StopRule | None = None,
        explore: Exploration | None = None) -> tuple[Rollout, list[tuple[list[int], list[int]]]]:
    """The rollout, recording which frames of which videos it asked for."""
    features, lengths, memory = inputs(model)
    asked: list[tuple[list[int], list[int]]] = []

    def frame_fn(rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        asked.append((rows.tolist(), idx.tolist()))
        return features[rows, idx]  # [A, D]
    if explore is not None:
        return train_rollout(model, memory, lengths, frame_fn, K, explore), asked
    return rollout(model, memory, lengths, frame_fn, K, stop=stop), asked


CASES = [(name, stop) for name in sorted(AGENTS) for stop in (None, "utility", "learned")
         if not (stop == "learned" and AGENTS[name][0] == "adaframe")]  # AdaFrame has no stop head: it stops by utility


@pytest.mark.parametrize("name,stop", CASES)
def test_rollout_contract(name, stop):
    model = make(name)
    rule = None
    for threshold in ((None,) if stop is None else (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)):
        # Untrained agents differ in where their utilities or stop probabilities lie: take the first threshold at which
        # some videos stop early and others do not, so that the masks below are tested on both.
        rule = None if stop is None else StopRule(stop, threshold)
        with torch.no_grad():
            out, asked = run(model, rule)
        if stop is None or len(set(out.steps.tolist())) > 1:
            break
    _, lengths, _ = inputs(model)
    steps, visited, utilities, probs = out.steps, out.indices, out.utilities, out.probs
    assert probs.shape == (B, C) and steps.shape == (B,) and visited.shape == utilities.shape == (B, K)
    assert torch.allclose(probs.sum(-1), torch.ones(B), atol=1e-5) and (probs >= 0).all()
    assert ((steps >= 1) & (steps <= K)).all()
    if stop is None:
        assert (steps == K).all()
    else:
        assert len(set(steps.tolist())) > 1, f"no threshold made the videos stop at different steps: {steps}"
    taken = torch.arange(K)[None, :] < steps[:, None]  # [B, K]: the alive mask
    assert ((visited >= 0) == taken).all() and (utilities.isnan() == ~taken).all()
    assert (visited[taken] < lengths[:, None].expand(-1, K)[taken]).all()  # never past the video's end
    # A video that stopped is never asked for a frame again: the rows asked at step t are those alive at t.
    for t, (rows, idx) in enumerate(asked):
        assert rows == taken[:, t].nonzero().squeeze(1).tolist()
        assert idx == visited[rows, t].tolist()
    assert (out.alive == taken).all() and (out.log_probs == 0).all() and (out.first_log_prob == 0).all()  # most likely actions
    with torch.no_grad():
        again, _ = run(model, rule)
    for field in dataclasses.fields(Rollout):
        a, b = getattr(out, field.name), getattr(again, field.name)
        assert (a is None) == (b is None) == (field.name == "parts" and getattr(model, "frame_head", None) is None)
        if a is not None:
            assert torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0)), f"{field.name} differs between two runs"


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_training_rollout_gradients_and_masks(name):
    model = make(name).train()
    _, lengths, _ = inputs(model)
    roll, asked = run(model, explore=Exploration(torch.Generator().manual_seed(3)))
    assert roll.logits.shape == (B, K, C) and roll.utilities.shape == roll.log_probs.shape == roll.indices.shape == (B, K)
    assert ((roll.indices >= 0) & (roll.indices < lengths[:, None])).all()
    # Training keeps every video in the batch for all K steps; a sampled stop only masks the steps after it.
    assert [rows for rows, _ in asked] == [list(range(B))] * K
    assert [idx for _, idx in asked] == roll.indices.T.tolist()
    alive = roll.alive
    assert alive[:, 0].all() and (alive[:, 1:] <= alive[:, :-1]).all()  # once stopped, stopped
    if not model.has_stop_head:
        assert alive.all()
    # log pi of the decision made at each step (none at the last); a fixed first frame is no decision
    assert (roll.log_probs[:, :-1] != 0).any() and (roll.log_probs[:, -1] == 0).all()
    if model.chooses_first and model.cfg.memory_dim:  # a choice among the memory's slots (without memory: the scan alone)
        assert (roll.first_log_prob < 0).all()
    else:
        assert (roll.first_log_prob == 0).all()
    again, _ = run(model, explore=Exploration(torch.Generator().manual_seed(3)))
    assert torch.equal(roll.indices, again.indices) and torch.equal(roll.alive, again.alive)
    loss = (roll.logits.logsumexp(-1) * alive).sum() + (roll.utilities * alive).sum() + roll.log_probs.sum() + roll.first_log_prob.sum()
    loss.backward()
    mixed = getattr(model, "mix", torch.ones(2))  # AdaFrame's weights of its pooled and recurrent predictions
    for part in ["utility", "lstm"] + ["head"] * bool(mixed[1] > 0) + ["frame_head"] * (getattr(model, "frame_head", None) is not None):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), part
        assert any(g.abs().sum() > 0 for g in grads), f"no gradient reaches {part}"
    assert math.isfinite(loss.item())


def test_every_kind_builds_its_contract_and_counts_its_flops():
    """An agent kind builds an agent; each model's FLOP probe counts one step's head (the cost model's third term):
    more with a wider LSTM / MLP, the same for AvgPooling (a linear classifier: D x C, no hidden layer)."""
    from adaframe.evaluate.run import head_gflops_per_step

    dims = {"feature_dim": D, "memory_dim": DM, "num_classes": C, "hidden": 12, "memory_frames": TD, "frames": K}
    for name, kind in KINDS.items():
        model = build_model(name, dims)
        assert isinstance(model, (RecurrentAgent, OneStepSampler)) == kind.agent, name
        small = head_gflops_per_step(model, TD)
        big = head_gflops_per_step(build_model(name, {**dims, "hidden": 24}), TD)
        assert small > 0 and (big == small == D * C / 1e9 if name == "avgpool" else big > small), name



@pytest.mark.parametrize("prediction", ["pooled", "mix"])
def test_pooled_prediction_is_avgpooling_over_the_frames_looked_at(prediction):
    """The pooled part of every step is the log of the mean frame-classifier softmax over the frames looked at so far
    (computed here from the visited indices alone), and the step's logits are a * pooled + b * recurrent."""
    model = make(f"adaframe gaussian, pooled prediction" if prediction == "pooled" else "adaframe slots, mixed prediction (default)")
    with torch.no_grad():
        model.mix.copy_(torch.tensor([0.7, 1.9]) if prediction == "mix" else model.mix)
        out, _ = run(model)
        features, _, _ = inputs(model)
        frames = features[torch.arange(B)[:, None], out.indices]  # [B, K, D]
        softmax = torch.softmax(model.frame_head((frames - model.frame_norm.mean) / model.frame_norm.std), -1)  # [B, K, C]
        expected = torch.log(softmax.cumsum(1) / torch.arange(1, K + 1)[None, :, None])  # [B, K, C]
    assert out.parts is not None and out.parts.shape == (B, K, 2, C)
    assert torch.allclose(out.parts[:, :, 0], expected, atol=1e-5)
    a, b = model.mix
    assert torch.allclose(out.logits, a * out.parts[:, :, 0] + b * out.parts[:, :, 1], atol=1e-5)
    if prediction == "pooled":
        assert b == 0 and torch.allclose(out.logits, expected, atol=1e-5)
