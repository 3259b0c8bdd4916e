"""AvgPooling and LSTM baselines against hand computations, and their evaluation in every sampling mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaframe.data.features import FeatureDataset, sample_indices
from adaframe.evaluate.split import evaluate
from adaframe.models.baselines import AvgPooling, AvgPoolingConfig, LSTMBaseline, LSTMConfig

D, C, H = 6, 3, 5


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_avgpool_logits_are_the_log_of_the_mean_frame_softmax():
    """AvgPooling's probabilities are the mean of the real frames' softmaxes, and it returns logits, as every model
    does: their softmax is that mean."""
    torch.manual_seed(0)
    model = AvgPooling(AvgPoolingConfig(D, C))
    model.head.pick(2)  # the bank's third classifier predicts (the val split's choice in training)
    frames = torch.randn(3, 5, D)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    out = model.probs(frames, mask).detach().numpy()
    np.testing.assert_allclose(torch.softmax(model(frames, mask), -1).detach().numpy(), out, rtol=1e-5, atol=1e-7)
    w, b = model.head.weight[2].detach().numpy(), model.head.bias[2].detach().numpy()
    x = frames.numpy()
    for i, n in enumerate([5, 2, 1]):
        per_frame = _softmax(x[i, :n] @ w.T + b)
        np.testing.assert_allclose(out[i], per_frame.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)


def naive_lstm(model: LSTMBaseline, x: np.ndarray) -> np.ndarray:
    """A textbook LSTM (gates i, f, g, o as in torch) over x [T, D]; returns the head's logits."""
    p = {k: v.detach().double().numpy() for k, v in model.lstm.named_parameters()}
    sig = lambda z: 1 / (1 + np.exp(-z))
    h, c = np.zeros(H), np.zeros(H)
    for xt in x:
        z = p["weight_ih_l0"] @ xt + p["bias_ih_l0"] + p["weight_hh_l0"] @ h + p["bias_hh_l0"]
        i, f, g, o = sig(z[:H]), sig(z[H:2 * H]), np.tanh(z[2 * H:3 * H]), sig(z[3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return model.head.weight.detach().double().numpy() @ h + model.head.bias.detach().double().numpy()


def test_lstm_with_mask_equals_unpadded_alone_and_naive_lstm():
    torch.manual_seed(0)
    model = LSTMBaseline(LSTMConfig(D, C, hidden=H)).eval()
    lengths = [4, 7, 1, 3]
    frames = torch.randn(4, 7, D)
    mask = torch.arange(7)[None, :] < torch.tensor(lengths)[:, None]
    frames_garbage = frames.clone()
    frames_garbage[~mask] = 1e3  # what sits in the padding must not matter
    with torch.no_grad():
        out = model(frames_garbage, mask)
        for b, n in enumerate(lengths):
            alone = model(frames[b:b + 1, :n], torch.ones(1, n, dtype=torch.bool))
            torch.testing.assert_close(out[b], alone[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out[b].numpy(), naive_lstm(model, frames[b, :n].double().numpy()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampling", ["uniform", "random", "all"])
@pytest.mark.parametrize("kind", ["avgpool", "lstm"])
def test_evaluate_baselines_all_sampling_modes(synth_dir, kind, sampling):
    ds = FeatureDataset(synth_dir, "train")
    torch.manual_seed(0)
    model = (AvgPooling(AvgPoolingConfig(ds.feature_dim, len(ds.classes))) if kind == "avgpool"
             else LSTMBaseline(LSTMConfig(ds.feature_dim, len(ds.classes), hidden=16)))
    k = 5
    res = evaluate(model, ds, frames=k, sampling=sampling, batch_size=8, seed=3)
    n, tmax = len(ds), int(ds.lengths.max())
    assert res.scores.shape == (n, len(ds.classes))
    np.testing.assert_allclose(res.scores.sum(1), 1.0, rtol=1e-5)
    assert (res.scores >= 0).all()
    np.testing.assert_array_equal(res.labels, ds.labels)
    if sampling == "all":
        assert res.visited.shape == (n, tmax)
        np.testing.assert_array_equal(res.steps, ds.lengths)
        np.testing.assert_array_equal(res.frames, ds.lengths)
        for i, t in enumerate(ds.lengths):
            assert res.visited[i].tolist() == list(range(t)) + [-1] * (tmax - t)
    else:
        assert res.visited.shape == (n, k)
        assert (res.steps == k).all()
        assert ((res.visited >= 0) & (res.visited < ds.lengths[:, None])).all()
        assert res.frames.tolist() == [len(set(r)) for r in res.visited.tolist()]
    if sampling == "uniform":
        want = sample_indices(torch.from_numpy(ds.lengths), k, "uniform").numpy()
        np.testing.assert_array_equal(res.visited, want)
    if sampling == "random":
        again = evaluate(model, ds, frames=k, sampling=sampling, batch_size=8, seed=3)
        np.testing.assert_array_equal(res.visited, again.visited)  # seeded


def test_avgpool_evaluate_scores_match_hand_computation(synth_dir):
    ds = FeatureDataset(synth_dir, "val")
    torch.manual_seed(0)
    model = AvgPooling(AvgPoolingConfig(ds.feature_dim, len(ds.classes)))
    res = evaluate(model, ds, frames=3, sampling="uniform", batch_size=4)
    w, b = model.head.weight[0].detach().numpy(), model.head.bias[0].detach().numpy()  # the unpenalised one, picked before training
    for i in range(len(ds)):
        t = ds.lengths[i]
        idx = [int((j + 0.5) * t / 3) for j in range(3)]
        x = ds[i]["features"][idx]
        np.testing.assert_allclose(res.scores[i], _softmax(x @ w.T + b).mean(0), rtol=1e-5, atol=1e-6)
