"""The one place that knows the model kinds: the class and config dataclass of each, what it reads; and saving and
safe loading of checkpoints. Everything else asks a model's contract (``recurrent.RecurrentAgent``,
``baselines.Baseline``) or this table, never its class. How each kind is trained is ``train.loop.LOSSES``."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from adaframe.models.agent import AdaFrame, AgentConfig, Critic, FrameLoss, MemoryRead, Prediction, Selection
from adaframe.models.baselines import AvgPooling, AvgPoolingConfig, LSTMBaseline, LSTMConfig
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
    """the ``ModelOptions`` its config takes beyond the sizes"""


@dataclass
class ModelOptions:
    """The settings of a model's config that a run chooses (``adaframe train`` flags of the same names), one object inside
    the training config; the sizes come from the data. None: the preset's (AdaFrame's architecture), else the model's
    default. A kind takes the ones ``KINDS[kind].options`` lists; ``given`` refuses the others."""

    policy_std: float | None = None
    """AdaFrame's Gaussian selection and FrameGlimpse's location policy: the std of the Gaussian (default: the model's, 0.1)"""
    start: float | None = None
    """AdaFrame with the Gaussian selection: the relative position of the first frame (default: the model's, 0.5)"""
    scan_bias: float | None = None
    """AdaFrame with the slots selection: the initial bias of the scan action's logit (default: the model's, 3: the
    untrained agent mostly scans)"""
    jumps: tuple[float, ...] | None = None
    """FastForward: its forward jumps, as fractions of the video's length (default: the model's)"""
    stop_bias: float | None = None
    """FrameGlimpse / FastForward: the initial bias of the stop head (default: the model's, -2: p(stop) = 0.12)"""
    frame_penalties: tuple[float, ...] | None = None
    """AdaFrame, AvgPooling, the sampler: the L2 penalties of the bank of frame classifiers the val split picks among
    (default: the models', 0 0.01 0.1 1 10; see models/frame_classifier.py)"""
    memory_read: MemoryRead | None = None
    """AdaFrame: 'lstm' (the paper: the LSTM reads frame and memory) or 'policy' (the LSTM reads frames; the memory
    guides only the selection and utility heads) (default: the preset's)"""
    selection: Selection | None = None
    """AdaFrame: 'gaussian' (the paper: a Gaussian over the next position) or 'slots' (a choice among the memory's
    slots not yet looked at and the next position of a uniform scan) (default: the preset's)"""
    prediction: Prediction | None = None
    """AdaFrame: 'lstm' (the paper: the LSTM's head), 'pooled' (the mean softmax of a frame classifier over the frames looked
    at, AvgPooling's rule) or 'mix' (both, weighted by a fit on the val split after every epoch) (default: the preset's)"""
    temporal: bool | None = None
    """AdaFrame (--prediction mix): a second LSTM reads, at every step, the frames looked at so far in temporal order, as
    the LSTM baseline reads its frames, and predicts as a third part of the mix (default: the preset's)"""
    positions: bool | None = None
    """AdaFrame: the LSTM reads each frame's relative position in the video with it, so the recurrent prediction knows the
    frames' order whatever order they were visited in (default: the preset's)"""
    frame_loss: FrameLoss | None = None
    """AdaFrame: train the frame classifier of a pooled or mixed prediction on 'every' frame (AvgPooling's loss) or on the
    mean softmax of K random frames ('subset') (default: the preset's)"""
    critic: Critic | None = None
    """AdaFrame: the utility reads the 'state' [h_t, u_t] (the paper) or also the 'prediction' that decides its reward
    (default: the preset's)"""

    def __post_init__(self) -> None:
        if self.policy_std is not None and not self.policy_std > 0:
            raise AdaframeError("invalid value for --policy-std (must be > 0)")
        self.jumps = None if self.jumps is None else tuple(self.jumps)
        self.frame_penalties = None if self.frame_penalties is None else tuple(self.frame_penalties)

    def given(self, kind: str) -> dict[str, Any]:
        """The options given a value, by name, for a ``kind`` model; one its config does not take is an error naming the
        kinds that take it."""
        given = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        foreign = [name for name in given if name not in _kind(kind).options]
        if foreign:
            raise AdaframeError("; ".join(f"--{n.replace('_', '-')} is an option of --model {', '.join(takers(n))}" for n in foreign)
                                + f", not of --model {kind}")
        return given


AGENT_OPTIONS = ("policy_std", "start", "memory_read", "selection", "scan_bias", "prediction", "temporal", "positions",
                 "frame_loss", "frame_penalties", "critic")
STOP_OPTIONS = ("policy_std", "jumps", "stop_bias")
KINDS: dict[str, ModelKind] = {
    "adaframe": ModelKind(AdaFrame, AgentConfig, agent=True, memory="optional", options=AGENT_OPTIONS),
    # The -G variants read the global memory; the plain ones are trained without it.
    "frameglimpse": ModelKind(FrameGlimpse, StopAgentConfig, agent=True, memory="none", options=STOP_OPTIONS),
    "frameglimpse-g": ModelKind(FrameGlimpse, StopAgentConfig, agent=True, memory="required", options=STOP_OPTIONS),
    "fastforward": ModelKind(FastForward, StopAgentConfig, agent=True, memory="none", options=STOP_OPTIONS),
    "fastforward-g": ModelKind(FastForward, StopAgentConfig, agent=True, memory="required", options=STOP_OPTIONS),
    # OCSampler's idea: K of the memory's slots at once, read by a pooled classifier trained on random frames.
    "sampler": ModelKind(OneStepSampler, SamplerConfig, agent=True, memory="required", options=("frame_penalties",)),
    "avgpool": ModelKind(AvgPooling, AvgPoolingConfig, agent=False, memory="none", options=("frame_penalties",)),
    "lstm": ModelKind(LSTMBaseline, LSTMConfig, agent=False, memory="none"),
}
AGENTS = tuple(name for name, kind in KINDS.items() if kind.agent)
SIZES = ("feature_dim", "memory_dim", "num_classes", "hidden", "memory_frames", "frames")
"""what a model's config takes from the data and the run (``hidden``, K): each kind's config has the ones it needs"""


def takers(option: str) -> list[str]:
    """The kinds whose config takes the ``ModelOptions`` field ``option``."""
    return [name for name, kind in KINDS.items() if option in kind.options]


def _kind(kind: str) -> ModelKind:
    if kind not in KINDS:
        raise AdaframeError(f"unknown model {kind!r}")
    return KINDS[kind]


def _check_keys(keys: set[str], allowed: set[str], required: set[str], what: str, hint: str = "") -> None:
    unknown, missing = sorted(keys - allowed), sorted(required - keys)
    if unknown or missing:
        raise AdaframeError(f"{what} " + "; ".join(([f"has unknown key {', '.join(map(repr, unknown))}"] if unknown else [])
                                                   + ([f"lacks key {', '.join(map(repr, missing))}"] if missing else [])) + hint)


def model_config(kind: str, values: dict[str, Any]) -> Any:
    """The config dataclass of ``kind`` from ``values``, strictly: a key it has no field for, or a field without a
    default missing from ``values``, is an error naming it. Sizes (``SIZES``) a kind does not take are left out."""
    cls = _kind(kind).config
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    _check_keys(set(values), names | set(SIZES), required, f"a {kind} model's config")
    return cls(**{k: v for k, v in values.items() if k in names})


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


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load ``RUN_DIR`` or a checkpoint file; never executes code (``weights_only=True``). Its ``model_config`` must
    have exactly the fields of the kind's config (an unknown or missing key is an error naming it). Returns the model
    (eval mode, on ``device``) and the checkpoint's dict."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise AdaframeError(f"no checkpoint at {path}")
    payload = load_torch_file(path, "checkpoint", device)
    if (not isinstance(payload, dict) or not {"kind", "classes", "state_dict", "config", "model_config"} <= payload.keys()
            or not isinstance(payload["model_config"], dict)):
        raise AdaframeError(f"{path} is not an adaframe checkpoint")
    try:
        kind = _kind(payload["kind"])
        config = payload["model_config"]
        complete = {f.name for f in fields(kind.config)}
        # strict: every field and nothing else, or the checkpoint was written by another version of the model
        _check_keys(set(config), complete, complete, "its model_config", " (written by another version of the model: train it again)")
        model = kind.model(kind.config(**config))
    except AdaframeError as e:
        raise AdaframeError(f"{path}: {e}") from None
    except (TypeError, ValueError) as e:
        raise AdaframeError(f"{path}: its model_config does not describe a {payload['kind']} model ({type(e).__name__}: {e})") from None
    weights, want = payload["state_dict"], model.state_dict()
    problems = ([f"lacks {', '.join(sorted(want.keys() - weights.keys()))}"] if want.keys() - weights.keys() else []) + (
        [f"has unknown {', '.join(sorted(weights.keys() - want.keys()))}"] if weights.keys() - want.keys() else []) + [
        f"{k} is {tuple(weights[k].shape)}, not {tuple(v.shape)}" for k, v in want.items()
        if k in weights and isinstance(weights[k], torch.Tensor) and weights[k].shape != v.shape]
    if problems:
        raise AdaframeError(f"{path}: weights do not fit a {payload['kind']} model: " + "; ".join(problems))
    model.load_state_dict(weights)
    return model.to(device).eval(), payload
