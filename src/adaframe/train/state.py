"""The training state that ``--resume`` continues from (one atomically written file), and the stop signal that
saves it: SIGTERM or Ctrl-C finishes the current step, saves, and stops."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from adaframe.distributed import Shard
from adaframe.train.config import NOT_IN_RESULT, TrainConfig
from adaframe.utils import AdaframeError, load_torch_file, save_torch

TRAIN_STATE = "train_state.pt"
STATE_KEYS = frozenset({"config", "epoch", "step", "history", "model", "optimizer", "scheduler", "generator", "order", "torch_rng"})


class StopSignal:
    """SIGTERM or Ctrl-C (SIGINT) during training: finish the current step, save the state, then stop."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self.previous = {}


@dataclass
class TrainState:
    """Where a run stands, besides its objects: what ``--resume`` continues from, saved with those objects in one
    atomically written file (``OUT/train_state.pt``), so that a kill at any moment leaves a consistent state."""

    epoch: int = 0
    """epochs finished"""
    step: int = 0
    """optimizer steps done"""
    history: list[dict] = field(default_factory=list)
    """one record per finished epoch (metrics.jsonl)"""
    partial: dict | None = None
    """for a stop inside the next epoch: the batches done, the data order at the epoch's start and the loss sums so far"""

    def save(self, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator, order: torch.Generator) -> None:
        """Write this state, the objects' and torch's global random state into ``OUT/train_state.pt``."""
        state = {"config": cfg.to_dict(), "epoch": self.epoch, "step": self.step, "history": self.history,
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "generator": generator.get_state(), "order": order.get_state(), "torch_rng": torch.get_rng_state(),
                 "partial": self.partial, "picks": _picks(model)}
        save_torch(cfg.out / TRAIN_STATE, state)

    @classmethod
    def resume(cls, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator, order: torch.Generator,
               shard: Shard = Shard()) -> TrainState:
        """Load ``OUT/train_state.pt`` into the freshly built objects and return where the run stands (a fresh
        state when there is no file yet).

        Loading never executes code (``weights_only``). A run with other settings is refused: resuming it would
        silently mix two experiments. Every process loads the same state: the random draws are those of the global
        batch, so the number of processes may differ from the interrupted run's.
        """
        path = cfg.out / TRAIN_STATE
        if not path.is_file():
            if shard.main:
                tqdm.write(f"--resume: no {path} yet, starting from the first epoch")
            return cls()
        state = _load(path, cfg)
        model.load_state_dict(state["model"])
        for name, value in state.get("picks", {}).items():  # what the val split picked after the last epoch
            setattr(model.cfg, name, value)  # type: ignore[union-attr]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        order.set_state(state["order"])
        torch.set_rng_state(state["torch_rng"])
        partial = state.get("partial")
        where = f"step {state['step']} (inside epoch {state['epoch'] + 1})" if partial else f"epoch {state['epoch']}"
        if shard.main:
            tqdm.write(f"--resume: continuing {cfg.out} after {where} of {cfg.epochs} epochs")
        return cls(int(state["epoch"]), int(state["step"]), list(state["history"]), partial)


def _picks(model: nn.Module) -> dict[str, str]:
    """The settings of a model that training picks on the val split after an epoch (AdaFrame's pooled prediction and
    inference): not weights, yet the next epoch's rewards follow them, so a resumed run must start from them."""
    cfg = getattr(model, "cfg", None)
    return {name: getattr(cfg, name) for name in ("pooled_by", "inference") if hasattr(cfg, name)}


def _load(path: Path, cfg: TrainConfig) -> dict:
    """The saved state at ``path``, refused unless ``train`` wrote it for a run with the settings of ``cfg``."""
    try:
        state = load_torch_file(path, what="training state")
    except AdaframeError as e:
        raise AdaframeError(f"--resume: {e}") from None
    if not isinstance(state, dict) or not STATE_KEYS <= state.keys():
        raise AdaframeError(f"--resume: {path} is not a training state written by 'adaframe train'")
    diff = settings_differing(state["config"], cfg)
    if diff:
        raise AdaframeError(f"--resume: {cfg.out} was trained with other settings ({', '.join(diff)}); use another --out")
    return state


def settings_differing(saved: dict, cfg: TrainConfig) -> list[str]:
    """The settings in which a saved run's config differs from ``cfg``, those a resumed run may change aside: more
    epochs may follow, on another device; the run directory may have moved; the data is compared by place."""
    ignore = NOT_IN_RESULT | {"epochs", "device", "out"}
    flat = lambda d: {**d, **d.get("model_options", {})}  # noqa: E731  # an option is named as its flag is
    saved = {k: v for k, v in flat(saved).items() if k not in ignore | {"model_options"}}
    wanted = {k: v for k, v in flat(cfg.to_dict()).items() if k not in ignore | {"model_options"}}
    saved["data"], wanted["data"] = str(Path(saved.get("data", "")).resolve()), str(cfg.data.resolve())
    return sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
