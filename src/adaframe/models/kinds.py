"""The one place that knows the model kinds: the class and config dataclass of each, what it reads; and saving and
safe loading of checkpoints. Everything else asks a model's contract (``recurrent.RecurrentAgent``,
``baselines.Baseline``) or this table, never its class. How each kind is trained is ``train.loop.LOSSES``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from adaframe.models.agent import AdaFrame, AgentConfig
from adaframe.models.baselines import AvgPooling, BaselineConfig, LSTMBaseline
from adaframe.models.sampler import OneStepSampler, SamplerConfig
from adaframe.models.stop_agents import FastForward, FrameGlimpse, StopAgentConfig
from adaframe.utils import AdaframeError, load_torch_file, save_torch

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class ModelKind:
    model: type[nn.Module]
    config: type
    """the model's config dataclass, which its checkpoint stores"""
    agent: bool
    """chooses its own frames (``rollout``); a baseline is given K uniform or random ones"""
    memory: Literal["none", "optional", "required"]
    """whether it reads the global memory"""
    options: tuple[str, ...] = ()
    """the training settings (``TrainConfig`` fields) its config takes beyond the sizes"""


KINDS: dict[str, ModelKind] = {
    "adaframe": ModelKind(AdaFrame, AgentConfig, agent=True, memory="optional",
                          options=("memory_read", "selection", "prediction", "temporal", "positions", "frame_loss", "critic")),
    # The -G variants read the global memory; the plain ones are trained without it.
    "frameglimpse": ModelKind(FrameGlimpse, StopAgentConfig, agent=True, memory="none"),
    "frameglimpse-g": ModelKind(FrameGlimpse, StopAgentConfig, agent=True, memory="required"),
    "fastforward": ModelKind(FastForward, StopAgentConfig, agent=True, memory="none"),
    "fastforward-g": ModelKind(FastForward, StopAgentConfig, agent=True, memory="required"),
    # OCSampler's idea: K of the memory's slots at once, read by a pooled classifier trained on random frames.
    "sampler": ModelKind(OneStepSampler, SamplerConfig, agent=True, memory="required", options=("frames",)),
    "avgpool": ModelKind(AvgPooling, BaselineConfig, agent=False, memory="none"),
    "lstm": ModelKind(LSTMBaseline, BaselineConfig, agent=False, memory="none"),
}
AGENTS = tuple(name for name, kind in KINDS.items() if kind.agent)
# What a checkpoint with a loose "dims" dict instead of "model_config" means by a missing AdaFrame option: the paper's
# agent (memory read by the LSTM, the Gaussian policy, the LSTM's prediction).
LEGACY_DEFAULTS = {"adaframe": {"memory_read": "lstm", "selection": "gaussian", "prediction": "lstm"}}


def _kind(kind: str) -> ModelKind:
    if kind not in KINDS:
        raise AdaframeError(f"unknown model {kind!r}")
    return KINDS[kind]


def model_config(kind: str, values: dict[str, Any]) -> Any:
    """The config dataclass of ``kind`` from ``values`` (sizes, options; keys it has no field for are ignored, fields
    missing from ``values`` take the dataclass's defaults)."""
    cls = _kind(kind).config
    return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def build_model(kind: str, values: dict[str, Any]) -> nn.Module:
    """An untrained model of ``kind``; ``values``: feature_dim, memory_dim, num_classes, hidden and the kind's options
    (see ``model_config``)."""
    return _kind(kind).model(model_config(kind, values))


def save_checkpoint(run_dir: Path, model: nn.Module, kind: str, classes: list[str], config: dict, extra: dict | None = None,
                    memory_frames: int | None = None) -> Path:
    """``run_dir/checkpoint.pt``: the model's config dataclass (as a dict) and weights, the global-memory frames it read
    (None: all the data stores), the class names and the training config."""
    path = Path(run_dir) / CHECKPOINT
    payload = {"kind": kind, "model_config": asdict(model.cfg), "memory_frames": memory_frames, "classes": classes,
               "config": config, "state_dict": model.state_dict(), **(extra or {})}
    save_torch(path, payload)
    return path


def _upgrade(payload: dict) -> dict:
    """A checkpoint with a ``dims`` dict -> the same with ``model_config`` and ``memory_frames``."""
    dims = payload.pop("dims")
    if not isinstance(dims, dict):
        raise KeyError("dims")
    values = {**LEGACY_DEFAULTS.get(payload["kind"], {}), **dims}
    payload["model_config"] = asdict(model_config(payload["kind"], values))
    payload["memory_frames"] = dims.get("memory_frames")
    return payload


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load ``RUN_DIR`` or a checkpoint file; never executes code (``weights_only=True``). A checkpoint with a ``dims``
    dict instead of ``model_config`` loads as the model it held. Returns the model (eval mode, on ``device``) and the
    checkpoint's dict."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise AdaframeError(f"no checkpoint at {path}")
    payload = load_torch_file(path, "checkpoint", device)
    if (not isinstance(payload, dict) or not {"kind", "classes", "state_dict", "config"} <= payload.keys()
            or not payload.keys() & {"model_config", "dims"}):
        raise AdaframeError(f"{path} is not an adaframe checkpoint")
    try:
        if "model_config" not in payload:
            payload = _upgrade(payload)
        kind = _kind(payload["kind"])
        model = kind.model(kind.config(**payload["model_config"]))
    except AdaframeError as e:
        raise AdaframeError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise AdaframeError(f"{path}: its model description is incomplete ({type(e).__name__}: {e}); not a checkpoint "
                            "'adaframe train' wrote") from None
    # A checkpoint without standardisation statistics (an AvgPooling that read raw features) keeps the identity.
    try:
        unstandardised = {k: v for k, v in model.state_dict().items() if k.endswith(("norm.mean", "norm.std")) and k not in payload["state_dict"]}
        model.load_state_dict({**unstandardised, **payload["state_dict"]})
    except (RuntimeError, TypeError) as e:
        raise AdaframeError(f"{path}: weights do not fit a {payload['kind']} model: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), payload
