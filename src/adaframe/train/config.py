"""Training configuration, validated on construction, with optimisation presets by name."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from adaframe.models.agent import Critic, FrameLoss, MemoryRead, Prediction, Selection
from adaframe.models.kinds import KINDS
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


ADAFRAME_OPTIONS = ("memory_read", "selection", "prediction", "temporal", "positions", "frame_loss", "critic", "policy_check",
                    "calibrate_critic")
"""settings only AdaFrame reads: another model's config leaves them None, so that a change of their defaults does not make
its finished runs look unfinished"""

MODEL_OPTIONS = tuple(sorted({name for kind in KINDS.values() for name in kind.options}))
"""settings that go into a model's config (``KINDS[...].options``): only the kinds that take one may be given it"""



def option_takers(name: str) -> list[str]:
    """The models that read the TrainConfig setting ``name`` (one of ``MODEL_OPTIONS`` or ``ADAFRAME_OPTIONS``)."""
    return [k for k, kind in KINDS.items() if name in kind.options or (k == "adaframe" and name in ADAFRAME_OPTIONS)]


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
    normalize_advantage: bool | None = None
    """scale REINFORCE advantages to unit std per batch (default: the preset's)"""
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
        for name in ("hidden", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "lr_step", "normalize_advantage",
                     *ADAFRAME_OPTIONS):
            if getattr(self, name) is None:
                setattr(self, name, getattr(preset, name) if name not in ADAFRAME_OPTIONS or self.model == "adaframe" else None)
        checks = {
            "--frames": self.frames >= 1, "--hidden": self.hidden >= 1, "--epochs": self.epochs >= 1,
            "--batch-size": self.batch_size >= 1, "--lr": self.lr > 0, "--gamma": 0 <= self.gamma <= 1,
            "--memory-frames": self.memory_frames is None or self.memory_frames >= 0,
            "--policy-std": self.policy_std is None or self.policy_std > 0, "--momentum": 0 <= self.momentum < 1,
            "--weight-decay": self.weight_decay >= 0, "--lr-step": self.lr_step >= 1, "--reward-weight": self.reward_weight >= 0, "--workers": self.workers >= 0, "--log-every": self.log_every >= 0,
            "--step-cost": self.step_cost >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise AdaframeError(f"invalid value for {', '.join(bad)}")
        if self.model not in KINDS:
            raise AdaframeError(f"unknown --model {self.model!r} (expected one of {', '.join(KINDS)})")
        kind = KINDS[self.model]
        foreign = [name for name in dict.fromkeys((*MODEL_OPTIONS, *ADAFRAME_OPTIONS))
                   if getattr(self, name) is not None and self.model not in option_takers(name)]
        if foreign:
            raise AdaframeError("; ".join(f"--{n.replace('_', '-')} is an option of --model {', '.join(option_takers(n))}" for n in foreign)
                                + f", not of --model {self.model}")
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(data=str(self.data), out=str(self.out))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
