"""Evaluation over a split (evaluate/split.py): batched equals one video at a time for every model, the result's fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaframe.data.features import FeatureDataset
from adaframe.evaluate.split import evaluate
from adaframe.models.agent import AdaFrame, AgentConfig
from adaframe.models.baselines import AvgPooling, AvgPoolingConfig, LSTMBaseline, LSTMConfig
from adaframe.rl.rollout import StopRule
from conftest import lively


def agent(ds, seed=0) -> AdaFrame:
    torch.manual_seed(seed)
    model = AdaFrame(AgentConfig(ds.feature_dim, ds.memory_dim, len(ds.classes), hidden=32))
    return lively(model).eval()  # utilities rise and fall across steps, and the policy jumps


def make_model(kind: str, ds: FeatureDataset):
    torch.manual_seed(1)
    if kind == "adaframe":
        return agent(ds, seed=1)
    if kind == "avgpool":
        return AvgPooling(AvgPoolingConfig(ds.feature_dim, len(ds.classes)))
    return LSTMBaseline(LSTMConfig(ds.feature_dim, len(ds.classes), hidden=32))


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
