"""Input standardisation: statistics equal numpy's, training stores them, the models apply them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaframe.data.features import FeatureDataset
from adaframe.data.features import feature_statistics
from adaframe.models.agent import AdaFrame, AgentConfig
from adaframe.models.baselines import LSTMBaseline, LSTMConfig
from adaframe.models.kinds import load_checkpoint
from adaframe.utils import AdaframeError
from adaframe.models.standardize import set_statistics
from adaframe.train.config import TrainConfig
from conftest import random_videos


def test_statistics_equal_numpy(make_dataset, tmp_path):
    videos = random_videos(7, dim=5, memory=(4, 3))
    for v in videos:  # far from zero-mean, unit-scale, like ResNet features; one constant dimension
        v["features"] = (v["features"] * 3 + 10).astype(np.float32)
        v["features"][:, 2] = 5.0
    ds = FeatureDataset(make_dataset(tmp_path, videos), "train")
    stats = feature_statistics(ds)
    frames = np.concatenate([v["features"] for v in videos]).astype(np.float64)
    memory = np.concatenate([v["memory"] for v in videos]).astype(np.float64)
    mean, std = stats["frames"]
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.delete(std, 2), np.delete(frames.std(0), 2), rtol=1e-4)
    assert 0 < std[2] < 1e-2  # floored, not zero: a constant dimension stays finite
    np.testing.assert_allclose(stats["memory"][0], memory.mean(0), rtol=1e-5, atol=1e-6)


def test_models_apply_the_statistics():
    cfg = AgentConfig(feature_dim=4, memory_dim=3, num_classes=2, hidden=8)
    torch.manual_seed(0)
    model = AdaFrame(cfg)
    mean, std = np.arange(4, dtype=np.float32), np.full(4, 2.0, dtype=np.float32)
    frame = torch.randn(2, 4)
    state = model.initial_state(2, frame.device)
    encoded = model.memory.encode(torch.zeros(2, 5, 3))
    before = model.step((frame - torch.from_numpy(mean)) / 2, encoded, state).logits
    set_statistics(model, {"frames": (mean, std)})
    torch.testing.assert_close(model.step(frame, encoded, state).logits, before)
    lstm = LSTMBaseline(LSTMConfig(4, 2, 8))
    set_statistics(lstm, {"frames": (mean, std)})
    torch.testing.assert_close(lstm.norm.std, torch.full((4,), 2.0))


def test_training_stores_the_training_split_statistics(synth_dir, tmp_path):
    from adaframe.train.loop import train

    run = train(TrainConfig(synth_dir, tmp_path / "run", model="adaframe", frames=2, epochs=1, hidden=8, progress=False))
    model, _ = load_checkpoint(run)
    stats = feature_statistics(FeatureDataset(synth_dir, "train"))
    np.testing.assert_allclose(model.frame_norm.mean.numpy(), stats["frames"][0])
    np.testing.assert_allclose(model.memory.norm.std.numpy(), stats["memory"][1])
    assert not np.allclose(model.frame_norm.std.numpy(), 1.0)


def test_avgpool_learns_the_same_from_raw_post_relu_like_features(synth_dir, tmp_path, make_dataset):
    """AvgPooling standardises its input with the training split's statistics, so an affine change of every feature
    dimension (post-ReLU features: all positive, a scale of their own) changes nothing it predicts; it reads the same
    numbers either way."""
    from adaframe.evaluate.run import Setting, evaluate_run
    from adaframe.train.loop import train
    from conftest import read_rows

    shifted = []
    for row in read_rows(synth_dir):
        f = np.load(synth_dir / "features" / f"{row['video_id']}.npy")
        shifted.append({**row, "features": (f * 20.0 + 50.0).astype(np.float32),
                        "memory": np.load(synth_dir / "memory" / f"{row['video_id']}.npy")})
    raw = make_dataset(tmp_path / "raw", shifted)
    scores = {}
    for name, data in (("synth", synth_dir), ("raw", raw)):
        run = train(TrainConfig(data, tmp_path / name, model="avgpool", frames=4, epochs=3, progress=False))
        model, _ = load_checkpoint(run)
        assert model.norm.mean.abs().max() > (40 if name == "raw" else -1)  # the statistics of the data it trained on
        scores[name] = evaluate_run(run, data, "val", Setting(frames=4))["mAP"]
    assert scores["raw"] == pytest.approx(scores["synth"], abs=1e-3)


def test_a_checkpoint_without_standardisation_statistics_is_refused(tmp_path):
    """Weights without the statistics they were trained on cannot be read right: a clear error, not the identity."""
    from adaframe.models.baselines import AvgPooling, AvgPoolingConfig
    from adaframe.models.kinds import save_checkpoint

    save_checkpoint(tmp_path, AvgPooling(AvgPoolingConfig(4, 3)), "avgpool", ["a", "b", "c"], {"frames": 2})
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del payload["state_dict"]["norm.mean"], payload["state_dict"]["norm.std"]
    torch.save(payload, tmp_path / "checkpoint.pt")
    with pytest.raises(AdaframeError, match=r"weights do not fit a avgpool model: lacks norm\.mean, norm\.std$"):
        load_checkpoint(tmp_path)
