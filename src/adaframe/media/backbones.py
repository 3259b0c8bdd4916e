"""Image backbones that turn decoded frames into the per-frame features ``v_t`` [N, D] the agent reads: building them
(torchvision's model when it imports, else ``architectures``' copy, the same weights from a seed), loading
torchvision-layout weights, preprocessing, FLOPs, batched features, and the backbones a data set's ``extract.json``
records.
"""

from __future__ import annotations

import hashlib
import types
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adaframe.media.architectures import BACKBONES, BUILDERS, mobilenet_features, mobilenet_head, resnet_features, resnet_head
from adaframe.utils import AdaframeError, load_torch_file, measure_gflops

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Classifier parameters: only features are used, so a checkpoint may carry any class count here.
_HEAD_PREFIXES = ("fc.", "classifier.")


def _torchvision_model(name: str) -> nn.Module | None:
    """torchvision's randomly initialised model with our feature contract, or None without torchvision."""
    try:
        import torchvision.models as tvm
    except Exception:  # absent, or present but broken (e.g. a CUDA build on a CPU-only machine)
        return None
    model = getattr(tvm, name)(weights=None)
    features, head = (mobilenet_features, mobilenet_head) if name == "mobilenet_v2" else (resnet_features, resnet_head)
    model.forward_features = types.MethodType(features, model)
    model.forward_head = types.MethodType(head, model)
    return model


def build_backbone(name: str, weights: str | Path | None = None, seed: int = 0, prefer_torchvision: bool = True) -> nn.Module:
    """A frozen backbone in eval mode.

    Args:
        name: a key of ``BACKBONES``.
        weights: a checkpoint for ``load_backbone_weights``; None keeps the random initialisation
            (with a warning: random features are only good for smoke tests).
        seed: seed of the random initialisation, drawn from a forked RNG so the caller's global
            RNG is left untouched; both implementations draw the same weights from a seed.
        prefer_torchvision: build torchvision's model when torchvision imports.

    Returns:
        The model, with ``forward_features(x) -> [B, D]``, ``forward_head``, ``.name``,
        ``.feature_dim`` and ``.implementation`` (``"torchvision"`` or ``"adaframe"``).
    """
    if name not in BACKBONES:
        raise AdaframeError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _torchvision_model(name) if prefer_torchvision else None
        implementation = "adaframe" if model is None else "torchvision"
        if model is None:
            model = BUILDERS[name]()
    model.name = name
    model.feature_dim = BACKBONES[name].feature_dim
    model.implementation = implementation
    if weights is None:
        warnings.warn(f"backbone {name} has random weights (seed {seed}); its features are meaningless for "
                      "real video, pass ImageNet or fine-tuned weights", stacklevel=2)
    else:
        load_backbone_weights(model, weights)
    model.requires_grad_(False)
    return model.eval()


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    obj = load_torch_file(path, "backbone weights")
    for key in ("state_dict", "model"):  # Lightning / training-script wrappers
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise AdaframeError(f"backbone weights {path}: expected a state dict, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise AdaframeError(f"backbone weights {path}: not a state dict (entries {bad[:3]} are not named tensors)")
    if obj and all(k.startswith("module.") for k in obj):  # saved from DistributedDataParallel
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a torchvision-layout checkpoint into ``model`` in place.

    Accepts a plain state dict, ``{"state_dict": sd}`` or ``{"model": sd}``, with or without
    DDP's ``module.`` prefix. Classifier tensors of another shape (a checkpoint fine-tuned to
    another class count) are skipped with a warning, since only features are used; BN's
    ``num_batches_tracked`` may be absent (checkpoints older than torch 0.4.1).

    Raises:
        AdaframeError: unreadable file, not a state dict, missing/unexpected keys, or a
            feature tensor of the wrong shape.
    """
    path = Path(path)
    ckpt = _read_checkpoint(path)
    own = model.state_dict()
    missing = [k for k in own if k not in ckpt and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in ckpt if k not in own]
    if missing or unexpected:
        parts = [f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})"] if missing else []
        parts += [f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})"] if unexpected else []
        name = getattr(model, "name", type(model).__name__)
        raise AdaframeError(f"backbone weights {path} do not fit {name}: {'; '.join(parts)}")
    merged = dict(own)
    skipped = []
    for k, v in ckpt.items():
        if v.shape != own[k].shape:
            if not k.startswith(_HEAD_PREFIXES):
                raise AdaframeError(f"backbone weights {path}: {k} has shape {list(v.shape)}, expected {list(own[k].shape)}")
            skipped.append(k)
            continue
        merged[k] = v
    if skipped:
        warnings.warn(f"backbone weights {path}: classifier {', '.join(skipped)} has another shape (fine-tuned to "
                      "other classes?); kept the random head, features are unaffected", stacklevel=2)
    model.load_state_dict(merged)


def preprocess(frames: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 RGB frames [N, H, W, 3], already resized and cropped -> ImageNet-normalised float32 [N, 3, H, W]."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise AdaframeError(f"frames must be uint8 [N, H, W, 3] RGB, got {x.dtype} {list(x.shape)}")
    x = x.to(device).permute(0, 3, 1, 2).float().div_(255)  # move uint8: 4x less to copy to a GPU
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def backbone_gflops(model: nn.Module, size: int) -> float:
    """Multiply-adds (the paper's "FLOPs") of ``forward_features`` on one size x size frame, in G."""
    x = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
    return measure_gflops(lambda: model.forward_features(x))


@torch.no_grad()
def extract_features(model: nn.Module, frames_uint8: np.ndarray | torch.Tensor, batch_size: int = 32,
                     device: torch.device | str | None = None) -> np.ndarray:
    """Features of many frames, ``batch_size`` at a time so memory stays bounded.

    Args:
        model: a backbone from ``build_backbone``; run in eval mode (its mode is restored after).
        frames_uint8: [N, H, W, 3] RGB frames.
        batch_size: frames per forward pass.
        device: where to run; the model is moved there. None: the model's device.

    Returns:
        float32 [N, D].
    """
    if batch_size < 1:
        raise AdaframeError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    was_training = model.training
    model.eval()  # BN with batch statistics would make a frame's feature depend on its batch
    try:
        out = [model.forward_features(preprocess(frames_uint8[i:i + batch_size], device)).float().cpu()
               for i in range(0, len(frames_uint8), batch_size)]
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, model.feature_dim), np.float32)
    return torch.cat(out).numpy()


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, frames_uint8: np.ndarray | torch.Tensor, batch_size: int = 32) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``frames`` (weights unchanged).

    A randomly initialised deep network in eval mode uses mean 0 / variance 1 statistics, so its
    activations explode or vanish through the layers. Re-estimating the statistics on a few real frames makes random
    weights a usable, deterministic stand-in when no pretrained file is at hand (the video demo). The cumulative
    average (``momentum=None``) makes the result independent of the batch order.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    device = next(model.parameters()).device
    model.train()
    try:
        for i in range(0, len(frames_uint8), batch_size):
            model.forward_features(preprocess(frames_uint8[i:i + batch_size], device))
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
        model.eval()
    return model


# ----------------------------------------------------------------------------- the backbones of a data set

def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_backbones(spec: dict, device: torch.device | str = "cpu", backbone_weights: Path | None = None,
                    memory_weights: Path | None = None) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The two backbones a spec describes; weights (the recorded file, or one given in its place) must
    match the recorded SHA-256, so features are never computed with other weights than in training."""
    models = []
    for key, override in (("backbone", backbone_weights), ("memory_backbone", memory_weights)):
        b = spec[key]
        weights = Path(override) if override is not None else (Path(b["weights"]) if b["weights"] else None)
        if (weights is None) != (b["sha256"] is None) or (weights is not None and (not weights.is_file() or sha256(weights) != b["sha256"])):
            recorded = f"{b['weights']} (SHA-256 {b['sha256'][:12]}...)" if b["sha256"] else "random init"
            raise AdaframeError(f"{key} weights {weights or 'random init'} are not those the features were made with: {recorded}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the random-weights warning was given once, at extraction
            models.append(build_backbone(b["name"], weights, seed=b["seed"]).to(device))
    return models[0], models[1]
