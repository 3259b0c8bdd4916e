"""Backbones: torchvision's layout (from a fixture made by torchvision's own code), cost, weight loading, input."""

from __future__ import annotations

import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from adaframe.media import architectures
from adaframe.media.backbones import (BACKBONES, backbone_gflops, build_backbone, extract_features, load_backbone_weights,
                                preprocess)
from adaframe.utils import AdaframeError

# Made by tests/data/make_torchvision_state_dicts.py from the torchvision 0.28.0 source.
DATA = Path(__file__).parent / "data"
TORCHVISION_LAYOUT = json.loads((DATA / "torchvision_state_dicts.json").read_text())
TORCHVISION_OUTPUTS = json.loads((DATA / "torchvision_outputs.json").read_text())
# As torchvision documents them (``num_params`` in its weights' meta).
NUM_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032, "resnet101": 44_549_160, "mobilenet_v2": 3_504_872}
NAMES = list(BACKBONES)


def _build(name: str, seed: int = 0, weights=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-weights warning has its own test
        return build_backbone(name, weights=weights, seed=seed, prefer_torchvision=False)


@pytest.fixture(scope="module")
def models() -> dict:
    """One adaframe model per name, seed 0; tests must not modify them."""
    return {name: _build(name) for name in NAMES}


def _images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ architecture


def test_fixture_covers_every_backbone():
    assert set(TORCHVISION_LAYOUT) == set(BACKBONES)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_layout_equals_torchvision(models, name):
    ours = [[k, list(v.shape)] for k, v in models[name].state_dict().items()]
    assert ours == TORCHVISION_LAYOUT[name]  # keys, shapes and order


@pytest.mark.parametrize("name", NAMES)
def test_outputs_equal_torchvision(name):
    """Same seed, same weights as torchvision; then its forward, as recorded in the fixture.

    As the fixture script does: float64 (reproducible to ~1e-12 across machines), BN statistics
    set by one training-mode pass over the reference input (``momentum=None``), then eval mode,
    so activations stay O(1) all the way through the random network.
    """
    m = _build(name, seed=0).double()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = None
    with torch.no_grad():
        m.train()(x)
        m.eval()
        feat = m.forward_features(x)
        logits = m.forward_head(feat)
    ref = {k: torch.tensor(v, dtype=torch.float64) for k, v in TORCHVISION_OUTPUTS[name].items()}
    torch.testing.assert_close(feat[:, :16], ref["features_head"], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(feat.sum(1), ref["features_sum"], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(logits[:, :8], ref["logits_head"], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_as_documented(models, name):
    assert sum(p.numel() for p in models[name].parameters()) == NUM_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_forward_contract(models, name):
    m = models[name]
    assert m.name == name and m.implementation == "adaframe" and m.feature_dim == BACKBONES[name].feature_dim
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    x = _images(2)
    with torch.no_grad():
        feat = m.forward_features(x)
        assert feat.shape == (2, BACKBONES[name].feature_dim) and feat.dtype == torch.float32
        assert torch.equal(m(x), m.forward_head(feat))
        assert m(x).shape == (2, 1000)
        # eval mode: deterministic, and a frame's feature does not depend on its batch
        assert torch.equal(m.forward_features(x), feat)
        # (random deep ResNets reach large activations: tolerance relative to the feature scale)
        torch.testing.assert_close(m.forward_features(x[1:]), feat[1:], rtol=1e-4, atol=1e-5 * feat.abs().max().item())
    assert feat.abs().sum() > 0 and not torch.equal(feat[0], feat[1])


@pytest.mark.parametrize("name", NAMES)
def test_seeded_init_leaves_global_rng_alone(models, name):
    rng = torch.get_rng_state()
    same, other = _build(name, seed=0), _build(name, seed=1)
    assert torch.equal(torch.get_rng_state(), rng)
    ref = models[name].state_dict()
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in ref.items())
    assert not torch.equal(ref["features.0.0.weight" if name == "mobilenet_v2" else "conv1.weight"],
                           other.state_dict()["features.0.0.weight" if name == "mobilenet_v2" else "conv1.weight"])


def test_init_follows_torchvision(models):
    sd = models["resnet50"].state_dict()
    w = sd["layer1.0.conv1.weight"]  # kaiming normal, fan_out, relu gain: std sqrt(2 / (out * k * k))
    assert abs(w.std().item() - (2 / 64) ** 0.5) < 0.05 * (2 / 64) ** 0.5
    assert torch.all(sd["layer1.0.bn3.weight"] == 1) and torch.all(sd["layer1.0.bn3.bias"] == 0)  # no zero_init_residual
    lin = models["mobilenet_v2"].state_dict()["classifier.1.weight"]
    assert abs(lin.std().item() - 0.01) < 0.001 and torch.all(models["mobilenet_v2"].state_dict()["classifier.1.bias"] == 0)


def test_gflops_match_the_paper_and_torchvision(models):
    # Multiply-adds of the features only; torchvision's documented totals add the classifier (D x 1000).
    r101 = backbone_gflops(models["resnet101"], 224)
    assert 7.7 < r101 < 7.9  # paper: 7.82; torchvision: 7.801
    assert 4.0 < backbone_gflops(models["resnet50"], 224) < 4.2  # torchvision: 4.089
    assert 0.295 < backbone_gflops(models["mobilenet_v2"], 224) < 0.305  # torchvision: 0.301
    # At 112 the last stage is 4x4, not 3.5x3.5, so slightly more than a quarter of the 224 cost.
    assert 0.078 < backbone_gflops(models["mobilenet_v2"], 112) < 0.082


# ------------------------------------------------------------------------------------ build_backbone


def test_random_weights_warn():
    with pytest.warns(UserWarning, match="random weights"):
        build_backbone("resnet18", prefer_torchvision=False)


def test_unknown_name():
    with pytest.raises(AdaframeError, match="unknown backbone 'vgg16'"):
        build_backbone("vgg16")


def test_falls_back_without_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes ``import torchvision`` raise ImportError
    with pytest.warns(UserWarning, match="random weights"):
        m = build_backbone("mobilenet_v2", prefer_torchvision=True)
    assert m.implementation == "adaframe"


def test_uses_torchvision_when_importable(monkeypatch, models):
    calls = []

    def fake_resnet18(weights):
        calls.append(weights)
        return architectures.ResNet(architectures.BasicBlock, [2, 2, 2, 2])

    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    tv.models.resnet18 = fake_resnet18
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tv.models)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = build_backbone("resnet18", seed=0, prefer_torchvision=True)
    assert calls == [None] and m.implementation == "torchvision" and m.name == "resnet18" and m.feature_dim == 512
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    x = _images(1)
    with torch.no_grad():  # same seed, same module order: the same weights and features
        assert torch.equal(m.forward_features(x), models["resnet18"].forward_features(x))


def test_build_with_weights_file(tmp_path, models):
    path = tmp_path / "r18.pth"
    torch.save(_build("resnet18", seed=4).state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # weights given: no random-weights warning
        m = build_backbone("resnet18", weights=path, seed=0, prefer_torchvision=False)
    x = _images(1)
    with torch.no_grad():
        assert torch.equal(m.forward_features(x), _build("resnet18", seed=4).forward_features(x))
        assert not torch.equal(m.forward_features(x), models["resnet18"].forward_features(x))
    assert not m.training and not any(p.requires_grad for p in m.parameters())


# ------------------------------------------------------------------------------- load_backbone_weights


@pytest.mark.parametrize("wrap", ["plain", "module_prefix", "state_dict", "model"])
def test_load_round_trip(tmp_path, wrap):
    src, dst = _build("resnet18", seed=1), _build("resnet18", seed=2)
    x = _images(2)
    with torch.no_grad():
        assert not torch.equal(src(x), dst(x))
    sd = src.state_dict()
    obj = {"plain": sd, "module_prefix": {f"module.{k}": v for k, v in sd.items()},
           "state_dict": {"state_dict": sd, "epoch": 3}, "model": {"model": sd}}[wrap]
    torch.save(obj, tmp_path / "w.pth")
    load_backbone_weights(dst, tmp_path / "w.pth")
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_load_without_num_batches_tracked(tmp_path):
    src, dst = _build("resnet18", seed=1), _build("resnet18", seed=2)
    torch.save({k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}, tmp_path / "w.pth")
    load_backbone_weights(dst, tmp_path / "w.pth")
    with torch.no_grad():
        assert torch.equal(src(_images(1)), dst(_images(1)))


@pytest.mark.parametrize("name,head", [("resnet18", "fc"), ("mobilenet_v2", "classifier.1")])
def test_fine_tuned_head_is_skipped(tmp_path, name, head):
    src, dst = _build(name, seed=1), _build(name, seed=2)
    sd = dict(src.state_dict())
    sd[f"{head}.weight"] = torch.randn(7, src.feature_dim)
    sd[f"{head}.bias"] = torch.randn(7)
    torch.save(sd, tmp_path / "ft.pth")
    own_head = dst.state_dict()[f"{head}.weight"].clone()
    with pytest.warns(UserWarning, match=f"{head}.weight"):
        load_backbone_weights(dst, tmp_path / "ft.pth")
    x = _images(2)
    with torch.no_grad():
        assert torch.equal(src.forward_features(x), dst.forward_features(x))
    assert torch.equal(dst.state_dict()[f"{head}.weight"], own_head)


def test_missing_and_unexpected_keys(tmp_path):
    m = _build("resnet18")
    sd = dict(m.state_dict())
    del sd["layer3.1.bn2.running_var"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(AdaframeError, match=r"missing keys.*layer3\.1\.bn2\.running_var") as e:
        load_backbone_weights(m, tmp_path / "missing.pth")
    assert "missing.pth" in str(e.value)
    torch.save(_build("mobilenet_v2").state_dict(), tmp_path / "other.pth")  # another architecture
    with pytest.raises(AdaframeError, match=r"do not fit resnet18.*unexpected keys \(e\.g\. features\.0\.0\.weight"):
        load_backbone_weights(m, tmp_path / "other.pth")


def test_feature_tensor_of_wrong_shape(tmp_path):
    m = _build("resnet18")
    sd = dict(m.state_dict())
    sd["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(AdaframeError, match=r"conv1\.weight has shape \[64, 3, 3, 3\]"):
        load_backbone_weights(m, tmp_path / "w.pth")


def test_bad_files(tmp_path):
    m = _build("resnet18")
    with pytest.raises(AdaframeError, match="no such file"):
        load_backbone_weights(m, tmp_path / "absent.pth")
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    with pytest.raises(AdaframeError, match=r"cannot load backbone weights \S*notes.txt: not a file written by torch.save$"):
        load_backbone_weights(m, tmp_path / "notes.txt")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(AdaframeError, match="expected a state dict, got list"):
        load_backbone_weights(m, tmp_path / "list.pth")
    torch.save({"conv1.weight": 3}, tmp_path / "nontensor.pth")
    with pytest.raises(AdaframeError, match="not a state dict"):
        load_backbone_weights(m, tmp_path / "nontensor.pth")


class _Payload:
    """Unpickling this creates a file: the proof that code in a checkpoint ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_pickled_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"conv1.weight": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(AdaframeError, match=r"evil\.pth: refusing to unpickle .*open"):
        load_backbone_weights(_build("resnet18"), tmp_path / "evil.pth")
    assert not marker.exists()
    torch.load(tmp_path / "evil.pth", weights_only=False)  # the payload is live: a full unpickle runs it
    assert marker.exists()


# ----------------------------------------------------------------------------------------- input


def test_preprocess_normalises_per_channel():
    frames = np.zeros((2, 5, 4, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 200, 17, 255
    for inp in (frames, torch.from_numpy(frames)):
        x = preprocess(inp)
        assert x.shape == (2, 3, 5, 4) and x.dtype == torch.float32 and x.is_contiguous()
        for c, (v, mean, std) in enumerate(zip((200, 17, 255), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
            torch.testing.assert_close(x[:, c], torch.full((2, 5, 4), (v / 255 - mean) / std))


def test_preprocess_keeps_pixel_layout():
    frames = np.random.default_rng(0).integers(0, 256, (1, 3, 2, 3), dtype=np.uint8)
    x = preprocess(frames)
    assert x[0, 2, 1, 0].item() == pytest.approx((frames[0, 1, 0, 2] / 255 - 0.406) / 0.225, abs=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint8),
                                 np.zeros((1, 3, 4, 4), np.uint8)])
def test_preprocess_rejects_wrong_input(bad):
    with pytest.raises(AdaframeError, match=r"uint8 \[N, H, W, 3\]"):
        preprocess(bad)


def test_extract_features_in_chunks(models):
    m = models["mobilenet_v2"]
    frames = np.random.default_rng(1).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    feats = extract_features(m, frames, batch_size=2)
    assert isinstance(feats, np.ndarray) and feats.dtype == np.float32 and feats.shape == (5, 1280)
    with torch.no_grad():
        whole = m.forward_features(preprocess(frames)).numpy()
    np.testing.assert_allclose(feats, whole, rtol=1e-4, atol=1e-5)
    assert extract_features(m, frames[:0]).shape == (0, 1280)
    with pytest.raises(AdaframeError, match="batch_size"):
        extract_features(m, frames, batch_size=0)


def test_extract_features_uses_eval_mode_and_restores_it():
    m = _build("resnet18")
    m.train()
    frames = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    one_by_one = extract_features(m, frames, batch_size=1)  # BN with batch stats would fail on 1x1 maps
    assert m.training
    np.testing.assert_allclose(one_by_one, extract_features(m, frames, batch_size=3), rtol=1e-4, atol=1e-5)
