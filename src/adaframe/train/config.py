"""Training configuration, validated on construction, with optimisation presets by name."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from adaframe.models.agent import Critic, FrameLoss, MemoryRead, Prediction, Selection
from adaframe.models.kinds import KINDS, ModelOptions
from adaframe.rl.rewards import RewardName
from adaframe.utils import AdaframeError

ModelName = Literal[tuple(KINDS)]  # type: ignore[valid-type]  # the kinds' names, for --model's choices


@dataclass(frozen=True, kw_only=True)
class Preset:
    """How to optimise: everything a user would not change per experiment."""

    optimizer: Literal["sgd", "adam"]
    lr: float
    momentum: float
    weight_decay: float
    lr_step: int
    """divide the learning rate by 10 every lr_step epochs"""
    epochs: int
    batch_size: int
    hidden: int
    normalize_advantage: bool
    """scale REINFORCE advantages to unit std per batch (lower variance; not in the paper)"""
    memory_read: MemoryRead
    """AdaFrame: who reads the global memory (models/agent.py): the LSTM (the paper) or the selection and utility heads only"""
    selection: Selection
    """AdaFrame: the paper's Gaussian over positions, or a choice among memory slots and a uniform scan (models/agent.py)"""
    prediction: Prediction
    """AdaFrame: what predicts the class: the LSTM (the paper), a frame classifier pooled over the frames looked at, or both
    mixed by weights fitted on val (models/agent.py)"""
    temporal: bool
    """AdaFrame: a second LSTM reads the frames looked at in temporal order, a third part of the mix (models/agent.py)"""
    positions: bool
    """AdaFrame: the LSTM reads each frame's position in the video with it (models/agent.py)"""
    frame_loss: FrameLoss
    """AdaFrame: how its frame classifier trains: on every frame, or pooled over K random frames (models/agent.py)"""
    critic: Critic
    """AdaFrame: what the utility reads: the state (the paper), or also the prediction that decides the reward"""
    policy_check: bool
    """AdaFrame: after training, compare the policy with the uniform scan on val, and infer by the scan where the policy
    adds less than ``loop.POLICY_MARGIN`` mAP"""
    calibrate_critic: bool
    """AdaFrame: after training, refit the utility head on the val split's rollouts (``loop.refit_critic``)"""


PRESETS: dict[str, Preset] = {
    # Sections 3-4.1: SGD, momentum 0.9, weight decay 1e-4, lr 1e-3 divided by 10 every 40 epochs; the paper's agent.
    "paper": Preset(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=1e-4, lr_step=40, epochs=100, batch_size=64, hidden=1024,
                    normalize_advantage=False, memory_read="lstm", selection="gaussian", prediction="lstm",
                    temporal=False, positions=False, frame_loss="every", critic="state", policy_check=False,
                    calibrate_critic=False),
    # Adam, and the default agent (docs/design.md: The agent: what makes the policy work; Presets).
    "fast": Preset(optimizer="adam", lr=2e-3, momentum=0.9, weight_decay=0.0, lr_step=30, epochs=40, batch_size=32, hidden=128,
                   normalize_advantage=False, memory_read="policy", selection="slots", prediction="mix",
                   temporal=True, positions=True, frame_loss="both", critic="prediction", policy_check=True,
                   calibrate_critic=True),
}


ARCHITECTURE = ("memory_read", "selection", "prediction", "temporal", "positions", "frame_loss", "critic")
"""AdaFrame's ``ModelOptions`` that a preset sets: another model leaves them None"""
ADAFRAME_TRAINING = ("policy_check", "calibrate_critic")
"""settings of the training only AdaFrame reads: another model's config leaves them None, so that a change of their
defaults does not make its finished runs look unfinished"""


# Settings of TrainConfig that change nothing about the trained weights.
NOT_IN_RESULT = frozenset({"progress", "workers", "log_every", "resume", "overwrite"})


@dataclass
class TrainConfig:
    """Train AdaFrame or a baseline on a feature data set (see docs/commands.md: Feature data set layout)."""

    data: Path
    """data set directory (videos.csv, features/, memory/)"""
    out: Path
    """run directory to write: checkpoint.pt, config.json, metrics.jsonl, TensorBoard logs"""
    model: ModelName = "adaframe"
    frames: int = 10
    """K: steps of AdaFrame in training, or frames of the baselines"""
    preset: Literal["fast", "paper"] = "fast"
    hidden: int | None = None
    """LSTM size (default: the preset's)"""
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: Literal["sgd", "adam"] | None = None
    """(default: the preset's, as for every setting below that defaults to None)"""
    momentum: float | None = None
    """SGD's momentum"""
    weight_decay: float | None = None
    lr_step: int | None = None
    """divide the learning rate by 10 every this many epochs"""
    memory_frames: int | None = None
    """global-memory frames to use (0 = no memory; default: all stored)"""
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"
    reward_weight: float = 1.0
    """lambda, the weight of the utility and selection losses"""
    reward: RewardName = "margin"
    """the agents' reward (Table 3): margin improvement (AdaFrame), prediction p(gt), or its transition"""
    step_cost: float = 0.05
    """FrameGlimpse / FastForward: reward lost per step after the first, the price of a frame that makes stopping pay"""
    gamma: float = 0.9
    """discount of future rewards"""
    normalize_advantage: bool | None = None
    """scale REINFORCE advantages to unit std per batch (default: the preset's)"""
    model_options: Annotated[ModelOptions, tyro.conf.OmitArgPrefixes] = field(default_factory=ModelOptions)
    """the model's config as the run chooses it (models/kinds.py: ModelOptions); its sizes come from the data"""
    policy_check: bool | None = None
    """AdaFrame: after training, measure on val what the policy adds over the uniform scan of the same network, and let
    inference look by the scan where it adds less than 0.5 mAP (default: the preset's)"""
    calibrate_critic: bool | None = None
    """AdaFrame: after training, refit the utility head (the critic adaptive lookahead stops by) on the val split's rollouts,
    where the prediction is as sure as it will be on new videos (default: the preset's)"""

    standardize: bool = True
    """standardise every model's inputs with training-set statistics (see models/standardize.py)"""
    workers: int = 0
    """DataLoader worker processes"""
    resume: bool = False
    """continue OUT from its last finished epoch (OUT/train_state.pt: weights, optimizer, schedule, RNG, data order)"""
    overwrite: bool = False
    """replace the run already in OUT (without it, training into a run directory is refused: use --resume or another --out)"""
    log_every: int = 0
    """print a line with every loss term, speed and ETA every this many steps (0: only the progress bar)"""
    progress: bool = True

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        preset = PRESETS[self.preset]
        adaframe = self.model == "adaframe"
        for name in ("hidden", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "lr_step", "normalize_advantage",
                     *(ADAFRAME_TRAINING if adaframe else ())):
            if getattr(self, name) is None:
                setattr(self, name, getattr(preset, name))
        if adaframe:
            self.model_options = replace(self.model_options, **{name: getattr(preset, name) for name in ARCHITECTURE
                                                                if getattr(self.model_options, name) is None})
        checks = {
            "--frames": self.frames >= 1, "--hidden": self.hidden >= 1, "--epochs": self.epochs >= 1,
            "--batch-size": self.batch_size >= 1, "--lr": self.lr > 0, "--gamma": 0 <= self.gamma <= 1,
            "--memory-frames": self.memory_frames is None or self.memory_frames >= 0,
            "--momentum": 0 <= self.momentum < 1,
            "--weight-decay": self.weight_decay >= 0, "--lr-step": self.lr_step >= 1, "--reward-weight": self.reward_weight >= 0, "--workers": self.workers >= 0, "--log-every": self.log_every >= 0,
            "--step-cost": self.step_cost >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise AdaframeError(f"invalid value for {', '.join(bad)}")
        if self.model not in KINDS:
            raise AdaframeError(f"unknown --model {self.model!r} (expected one of {', '.join(KINDS)})")
        kind = KINDS[self.model]
        self.model_options.given(self.model)  # refuses an option the model has not
        foreign = [name for name in ADAFRAME_TRAINING if getattr(self, name) is not None and not adaframe]
        if foreign:
            raise AdaframeError(f"{', '.join('--' + n.replace('_', '-') for n in foreign)}: options of --model adaframe, not of --model {self.model}")
        if kind.agent and kind.memory == "none":
            if self.memory_frames:
                raise AdaframeError(f"--model {self.model} has no global memory; use --model {self.model}-g for memory")
            self.memory_frames = 0
        if kind.memory == "required" and self.memory_frames == 0:
            raise AdaframeError(f"--model {self.model} reads the global memory, but --memory-frames is 0")
        if self.resume and self.overwrite:
            raise AdaframeError("--resume continues the run in --out, --overwrite replaces it: use one of them")
        if not kind.agent and self.reward != "margin":
            raise AdaframeError(f"--reward applies to the agents, not to --model {self.model}")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (``model_options`` a nested dict), as config.json and the checkpoint store them."""
        d = asdict(self)
        d.update(data=str(self.data), out=str(self.out))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config ``to_dict`` wrote (a checkpoint's ``config``); a key it has no field for is an error naming it."""
        unknown = sorted(d.keys() - {f.name for f in fields(cls)}) + sorted(
            d.get("model_options", {}).keys() - {f.name for f in fields(ModelOptions)})
        if unknown:
            raise AdaframeError(f"a training config with unknown key {', '.join(map(repr, unknown))} (written by another version: train again)")
        return cls(**{**d, "model_options": ModelOptions(**d.get("model_options", {}))})


def train_config(data: Path, out: Path, **settings: Any) -> TrainConfig:
    """A ``TrainConfig`` from flat settings, as the command line names them: the ``ModelOptions`` fields among them go
    into ``model_options`` (for the commands that plan many runs: demo, report, check, video-demo)."""
    names = {f.name for f in fields(ModelOptions)}
    options = ModelOptions(**{k: v for k, v in settings.items() if k in names})
    return TrainConfig(data, out, model_options=options, **{k: v for k, v in settings.items() if k not in names})
