"""The one place that knows the model kinds: what each is built from, how it is trained, and what it reads; and
saving and safe loading of checkpoints. Everything else asks a model's contract (``recurrent.RecurrentAgent``,
``baselines.Baseline``) or this table, never its class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import torch
from torch import nn

from adaframe.data.features import Batch
from adaframe.distributed import Shard
from adaframe.models.agent import AdaFrame, AgentConfig
from adaframe.models.baselines import AvgPooling, BaselineConfig, LSTMBaseline
from adaframe.models.sampler import OneStepSampler, SamplerConfig
from adaframe.models.stop_agents import DEFAULT_JUMPS, FastForward, FrameGlimpse, StopAgentConfig
from adaframe.rl.losses import agent_loss, avgpool_loss, lstm_loss, sampler_loss
from adaframe.utils import AdaframeError, load_torch_file, save_torch

if TYPE_CHECKING:
    from adaframe.engine.config import TrainConfig

CHECKPOINT = "checkpoint.pt"
Loss = Callable[[nn.Module, Batch, "TrainConfig", torch.Generator, Shard], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ModelKind:
    build: Callable[[dict], nn.Module]
    """dims (feature_dim, memory_dim, num_classes, hidden, and the kind's options) -> the untrained model"""
    loss: Loss
    agent: bool
    """chooses its own frames (``rollout``); a baseline is given K uniform or random ones"""
    memory: Literal["none", "optional", "required"]
    """whether it reads the global memory"""
    options: Callable[["TrainConfig"], dict] = lambda cfg: {}
    """the training settings its checkpoint's dims keep, beyond the sizes (``build`` reads them back)"""


def _adaframe(dims: dict) -> nn.Module:
    # A checkpoint without memory_read / selection holds the paper's agent; one without prediction, the LSTM's head.
    return AdaFrame(AgentConfig(dims["feature_dim"], dims["memory_dim"], dims["num_classes"], dims["hidden"], dims.get("std", 0.1),
                                memory_read=dims.get("memory_read", "lstm"), selection=dims.get("selection", "gaussian"),
                                prediction=dims.get("prediction", "lstm")))


def _stop_agent(cls: type[FrameGlimpse] | type[FastForward]) -> Callable[[dict], nn.Module]:
    return lambda dims: cls(StopAgentConfig(dims["feature_dim"], dims["memory_dim"], dims["num_classes"], dims["hidden"],
                                            dims.get("std", 0.1), tuple(dims.get("jumps", DEFAULT_JUMPS))))


def _baseline(cls: type[AvgPooling] | type[LSTMBaseline]) -> Callable[[dict], nn.Module]:
    return lambda dims: cls(BaselineConfig(dims["feature_dim"], dims["num_classes"], dims["hidden"]))


def _agent_loss(model: nn.Module, batch: Batch, c: "TrainConfig", g: torch.Generator, shard: Shard) -> dict[str, torch.Tensor]:
    return agent_loss(model, batch, c.frames, c.gamma, c.reward_weight, c.step_cost, g, c.normalize_advantage, c.reward, shard)  # type: ignore[arg-type]


KINDS: dict[str, ModelKind] = {
    "adaframe": ModelKind(_adaframe, _agent_loss, agent=True, memory="optional",
                          options=lambda cfg: {"memory_read": cfg.memory_read, "selection": cfg.selection,
                                                  "prediction": cfg.prediction}),
    # The -G variants read the global memory; the plain ones are trained without it.
    "frameglimpse": ModelKind(_stop_agent(FrameGlimpse), _agent_loss, agent=True, memory="none"),
    "frameglimpse-g": ModelKind(_stop_agent(FrameGlimpse), _agent_loss, agent=True, memory="required"),
    "fastforward": ModelKind(_stop_agent(FastForward), _agent_loss, agent=True, memory="none"),
    "fastforward-g": ModelKind(_stop_agent(FastForward), _agent_loss, agent=True, memory="required"),
    # OCSampler's idea: K of the memory's slots at once, read by a pooled classifier trained on random frames.
    "sampler": ModelKind(lambda dims: OneStepSampler(SamplerConfig(dims["feature_dim"], dims["memory_dim"], dims["num_classes"],
                                                                   dims["memory_frames"], dims["frames"], dims["hidden"])),
                         lambda model, batch, c, g, shard: sampler_loss(model, batch, c.frames, c.reward_weight, g, shard),  # type: ignore[arg-type]
                         agent=True, memory="required", options=lambda cfg: {"frames": cfg.frames}),
    "avgpool": ModelKind(_baseline(AvgPooling), lambda model, batch, c, g, shard: avgpool_loss(model, batch, shard),  # type: ignore[arg-type]
                         agent=False, memory="none"),
    "lstm": ModelKind(_baseline(LSTMBaseline), lambda model, batch, c, g, shard: lstm_loss(model, batch, c.frames, g, shard),  # type: ignore[arg-type]
                      agent=False, memory="none"),
}
AGENTS = tuple(name for name, kind in KINDS.items() if kind.agent)


def build_model(kind: str, dims: dict) -> nn.Module:
    """dims: feature_dim, memory_dim, num_classes, hidden (+ std of a Gaussian policy, FastForward's jumps,
    AdaFrame's memory_read and selection)."""
    if kind not in KINDS:
        raise AdaframeError(f"unknown model {kind!r}")
    return KINDS[kind].build(dims)


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
