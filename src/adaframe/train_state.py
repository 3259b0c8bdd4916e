"""The training state that ``--resume`` continues from (one atomically written file), and the stop signal that
saves it: SIGTERM or Ctrl-C finishes the current step, saves, and stops."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from adaframe.config import NOT_IN_RESULT, TrainConfig
from adaframe.distributed import Shard
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


def save_train_state(cfg: TrainConfig, epoch: int, step: int, history: list[dict], model: nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                     generator: torch.Generator, order: torch.Generator, partial: dict | None = None) -> None:
    """Everything ``--resume`` needs, in one atomically written file: a kill at any moment leaves a consistent state.

    ``epoch``: epochs finished; ``partial``: for a stop inside the next epoch, the batches done, the data order at the
    epoch's start and the loss sums so far.
    """
    state = {"config": cfg.to_dict(), "epoch": epoch, "step": step, "history": history, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
             "order": order.get_state(), "torch_rng": torch.get_rng_state(), "partial": partial}
    save_torch(cfg.out / TRAIN_STATE, state)


def settings_differing(saved: dict, cfg: TrainConfig) -> list[str]:
    """The settings in which a saved run's config differs from ``cfg``, those a resumed run may change aside: more
    epochs may follow, on another device; the run directory may have moved; the data is compared by place."""
    ignore = NOT_IN_RESULT | {"epochs", "device", "out"}
    saved = {k: v for k, v in saved.items() if k not in ignore}
    wanted = {k: v for k, v in cfg.to_dict().items() if k not in ignore}
    saved["data"], wanted["data"] = str(Path(saved.get("data", "")).resolve()), str(cfg.data.resolve())
    return sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))


def resume_state(cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator,
                 order: torch.Generator, shard: Shard = Shard()) -> tuple[int, int, list[dict], dict | None]:
    """Load ``OUT/train_state.pt`` into the freshly built objects; returns (epochs done, steps done, history, partial).

    Loading never executes code (``weights_only``). A run with other settings is refused: resuming it would
    silently mix two experiments. Every process loads the same state: the random draws are those of the global
    batch, so the number of processes may differ from the interrupted run's.
    """
    path = cfg.out / TRAIN_STATE
    if not path.is_file():
        if shard.main:
            tqdm.write(f"--resume: no {path} yet, starting from the first epoch")
        return 0, 0, [], None
    try:
        state = load_torch_file(path, what="training state")
    except AdaframeError as e:
        raise AdaframeError(f"--resume: {e}") from None
    if not isinstance(state, dict) or not STATE_KEYS <= state.keys():
        raise AdaframeError(f"--resume: {path} is not a training state written by 'adaframe train'")
    diff = settings_differing(state["config"], cfg)
    if diff:
        raise AdaframeError(f"--resume: {cfg.out} was trained with other settings ({', '.join(diff)}); use another --out")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["generator"])
    order.set_state(state["order"])
    torch.set_rng_state(state["torch_rng"])
    partial = state.get("partial")
    where = f"step {state['step']} (inside epoch {state['epoch'] + 1})" if partial else f"epoch {state['epoch']}"
    if shard.main:
        tqdm.write(f"--resume: continuing {cfg.out} after {where} of {cfg.epochs} epochs")
    return int(state["epoch"]), int(state["step"]), list(state["history"]), partial
