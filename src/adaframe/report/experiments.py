"""Experiments made of many runs, shared by ``demo``, ``report`` and ``video-demo``.

* :func:`seeded`: one training config per seed, each with its own run directory ``NAME-s<seed>``;
* :func:`train_missing`: reuse finished runs, resume interrupted ones, train the rest, side by side in
  worker processes;
* :class:`Evaluator`: evaluate settings of runs on one split, each run loaded once; a setting's row is
  the mean over the run's seeds, with the standard deviation beside it;
* :func:`pick_mu`: the adaptive-lookahead threshold, chosen on the validation split.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from adaframe.evaluate.metrics import CostModel
from adaframe.evaluate.run import Setting, evaluate_loaded, load_run
from adaframe.evaluate.split import Policy, Result
from adaframe.models.kinds import KINDS, load_checkpoint
from adaframe.rl.rollout import StopRule
from adaframe.train.config import NOT_IN_RESULT, TrainConfig
from adaframe.utils import AdaframeError, load_torch_file, resolve_device

Plan = dict[str, list[TrainConfig]]
"""run name -> its training config for each seed"""

AVERAGED = ("mAP", "top1", "avg_frames", "avg_steps", "gflops_per_video", "backward_jumps", "evidence_hit", "evidence_hit_uniform")
"""The metrics a setting's row averages over seeds; each gets a ``<name>_std`` beside it (None for one seed)."""


def seeded(cfg: TrainConfig, seeds: int) -> list[TrainConfig]:
    """``cfg`` trained with ``seeds`` seeds from ``cfg.seed`` on, each in the run directory ``OUT-s<seed>``."""
    return [replace(cfg, seed=cfg.seed + i, out=cfg.out.with_name(f"{cfg.out.name}-s{cfg.seed + i}")) for i in range(seeds)]


def _saved(path: Path) -> dict | None:
    """A checkpoint or training state as a dict, or None when it is missing, damaged or not ours."""
    if not path.is_file():
        return None
    try:
        payload = load_torch_file(path)
    except AdaframeError:
        return None
    return payload if isinstance(payload, dict) and isinstance(payload.get("config"), dict) else None


def is_finished(cfg: TrainConfig) -> bool:
    """A run is reusable when its checkpoint (one atomically written file) holds this config after every epoch and its
    weights fit the model as this version builds it (a run of another version is trained again)."""
    try:
        _, payload = load_checkpoint(cfg.out)
    except AdaframeError:
        return False
    if not isinstance(payload.get("config"), dict):
        return False
    want = {k: v for k, v in cfg.to_dict().items() if k not in NOT_IN_RESULT}
    have = {k: v for k, v in payload["config"].items() if k not in NOT_IN_RESULT}
    return have == want and payload.get("epoch") == cfg.epochs


def can_resume(cfg: TrainConfig) -> bool:
    """The run directory holds an unfinished training state of this very run (``train --resume`` continues it)."""
    from adaframe.train.state import TRAIN_STATE, settings_differing

    state = _saved(cfg.out / TRAIN_STATE)
    return state is not None and not settings_differing(state["config"], cfg) and int(state.get("epoch", 0)) < cfg.epochs


def _train_quietly(cfg: TrainConfig) -> float:
    """Train in a worker process, one thread (small models train faster side by side than on more threads each)."""
    from adaframe.train.loop import train

    torch.set_num_threads(1)
    started = time.perf_counter()
    train(replace(cfg, progress=False))
    return time.perf_counter() - started


def train_missing(runs: dict[str, TrainConfig], jobs: int = 1, log: Callable[[str], None] = tqdm.write) -> None:
    """Train every run that is not finished: from its last saved state when it has one (a run stopped by
    Ctrl-C or a kill continues), else from scratch. ``jobs`` > 1 trains that many runs at a time, each in
    a worker process of its own, the costliest first."""
    from adaframe.train.loop import train

    todo = []
    for name, cfg in runs.items():
        if is_finished(cfg):
            log(f"reusing the finished run {cfg.out}")
            continue
        resume = can_resume(cfg)
        todo.append((name, replace(cfg, resume=resume, overwrite=not resume)))
    todo.sort(key=lambda item: -item[1].frames * (4 if KINDS[item[1].model].agent else 1))  # a rough cost
    for name, cfg in todo:
        what = f"{cfg.model}, K={cfg.frames}, {cfg.epochs} epochs, seed {cfg.seed}"
        log(f"{'resuming' if cfg.resume else 'training'} {name} ({what})" + (" in a worker process" if jobs > 1 else ""))
    if jobs <= 1 or len(todo) <= 1:
        for _, cfg in todo:
            train(cfg)
        return
    pool = ProcessPoolExecutor(min(jobs, len(todo)), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_train_quietly, cfg): name for name, cfg in todo}
        for i, done in enumerate(as_completed(futures), 1):
            log(f"({i}/{len(todo)}) trained {futures[done]} in {done.result():.0f} s")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _mean_row(rows: list[dict]) -> dict:
    out = dict(rows[0])
    for key in AVERAGED:
        values = [r[key] for r in rows if r.get(key) is not None]
        if len(values) == len(rows):
            out[key] = float(np.mean(values))
            out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    out["seeds"] = len(rows)
    out["mAP_per_seed"] = [r["mAP"] for r in rows]
    return out


class Evaluator:
    """Evaluate settings of the runs of ``plan`` on one split; a setting's row is the mean over the run's seeds.

    A setting is ``(run, frames, sampling, stop, policy)``: agents pick their own frames (sampling "uniform")
    unless ``policy`` says otherwise. Each run and each split of a data set is loaded once.
    """

    def __init__(self, plan: Plan, split: str, device: str, cost: CostModel, seed: int = 0):
        self.plan, self.split, self.device, self.cost, self.seed = plan, split, resolve_device(device), cost, seed
        self.loaded: dict[Path, tuple] = {}
        self.datasets: dict = {}  # shared by runs on the same data
        self.done: dict[tuple, tuple[dict, list[Result]]] = {}  # insertion order = evaluation order

    def __call__(self, run: str, frames: int | None, sampling: str = "uniform", stop: StopRule | None = None,
                 policy: Policy = "learned") -> dict:
        key = (run, frames, sampling, stop, policy)
        if key not in self.done:
            rows, results = [], []
            setting = Setting(frames, sampling, policy, stop)  # type: ignore[arg-type]
            for cfg in self.plan[run]:
                if cfg.out not in self.loaded:
                    self.loaded[cfg.out] = load_run(cfg.out, cfg.data, self.split, self.device, self.datasets)
                model, payload, dataset = self.loaded[cfg.out]
                row, res = evaluate_loaded(model, payload, dataset, setting, self.cost, device=self.device, seed=self.seed)
                rows.append(row)
                results.append(res)
            row = {"run": run, "stop_rule": None if stop is None else stop.describe(), **_mean_row(rows)}
            self.done[key] = (row, results)
        return self.done[key][0]

    get = __call__

    @property
    def rows(self) -> list[dict]:
        return [row for row, _ in self.done.values()]

    def result(self, run: str, frames: int | None, sampling: str = "uniform", stop: StopRule | None = None,
               policy: Policy = "learned") -> Result:
        """The per-video result of the run's first seed."""
        self(run, frames, sampling, stop, policy)
        return self.done[(run, frames, sampling, stop, policy)][1][0]


MAP_TOLERANCE = 0.5
"""mu*: the cheapest mu whose validation mAP is within this many points of K fixed steps'"""


def pick_mu(sweep: list[dict], fixed: dict, tolerance: float = MAP_TOLERANCE) -> dict:
    """mu*: the row of ``sweep`` (validation rows of a mu sweep) with the fewest frames whose mAP is within
    ``tolerance`` of K fixed steps (``fixed``), else ``fixed`` itself."""
    good = [r for r in sweep if r["mAP"] >= fixed["mAP"] - tolerance]
    return min(good, key=lambda r: (r["avg_frames"], -r["mAP"])) if good else fixed


def mean_std(row: dict, key: str = "mAP") -> str:
    """``98.12 ± 0.35`` (mean ± std over seeds), or ``98.12`` for one seed; ``-`` for a missing value."""
    value, std = row.get(key), row.get(f"{key}_std")
    if value is None:
        return "-"
    return f"{value:.2f}" if std is None else f"{value:.2f} ± {std:.2f}"
