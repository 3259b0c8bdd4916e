"""Build models from their saved description, save checkpoints atomically, load them safely."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from adaframe.agent import AdaFrame, AgentConfig
from adaframe.baselines import AvgPooling, BaselineConfig, LSTMBaseline
from adaframe.rl_baselines import DEFAULT_JUMPS, FastForward, FrameGlimpse, StopAgentConfig
from adaframe.utils import AdaframeError, load_torch_file, save_torch

CHECKPOINT = "checkpoint.pt"
# The -G variants read the global memory; the plain ones are trained with --memory-frames 0.
STOP_AGENTS = {"frameglimpse": FrameGlimpse, "frameglimpse-g": FrameGlimpse, "fastforward": FastForward, "fastforward-g": FastForward}
AGENTS = ("adaframe", *STOP_AGENTS)  # the models that choose their frames (and read the memory, if they have one)


def build_model(kind: str, dims: dict) -> nn.Module:
    """dims: feature_dim, memory_dim, num_classes, hidden (+ std of a Gaussian policy, FastForward's jumps,
    AdaFrame's memory_read and selection: a checkpoint without them is the paper's agent)."""
    if kind == "adaframe":
        return AdaFrame(AgentConfig(dims["feature_dim"], dims["memory_dim"], dims["num_classes"], dims["hidden"], dims.get("std", 0.1),
                                    memory_read=dims.get("memory_read", "lstm"), selection=dims.get("selection", "gaussian")))
    if kind in STOP_AGENTS:
        cfg = StopAgentConfig(dims["feature_dim"], dims["memory_dim"], dims["num_classes"], dims["hidden"], dims.get("std", 0.1),
                              tuple(dims.get("jumps", DEFAULT_JUMPS)))
        return STOP_AGENTS[kind](cfg)
    cfg = BaselineConfig(dims["feature_dim"], dims["num_classes"], dims["hidden"])
    if kind == "avgpool":
        return AvgPooling(cfg)
    if kind == "lstm":
        return LSTMBaseline(cfg)
    raise AdaframeError(f"unknown model {kind!r}")


def save_checkpoint(run_dir: Path, model: nn.Module, kind: str, dims: dict, classes: list[str], config: dict, extra: dict | None = None) -> Path:
    path = Path(run_dir) / CHECKPOINT
    payload = {"kind": kind, "dims": dims, "classes": classes, "config": config, "state_dict": model.state_dict(), **(extra or {})}
    save_torch(path, payload)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load ``RUN_DIR`` or a checkpoint file; never executes code (``weights_only=True``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise AdaframeError(f"no checkpoint at {path}")
    payload = load_torch_file(path, "checkpoint", device)
    if not isinstance(payload, dict) or not {"kind", "dims", "classes", "state_dict", "config"} <= payload.keys():
        raise AdaframeError(f"{path} is not an adaframe checkpoint")
    try:
        model = build_model(payload["kind"], payload["dims"])
    except AdaframeError as e:
        raise AdaframeError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise AdaframeError(f"{path}: its model description is incomplete ({type(e).__name__}: {e}); not a checkpoint "
                            "'adaframe train' wrote") from None
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise AdaframeError(f"{path}: weights do not fit a {payload['kind']} model: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), payload
