"""Accuracy and cost of a trained run on one split of a feature data set (the work of ``adaframe eval``).

Accuracy is mAP and top-1 (in percent). Cost is what recognising one video takes on average:
the distinct frames the backbone must run, the steps of the model's head, and the GFLOPs of both
plus the global memory (``metrics.CostModel``), with the head's GFLOPs counted on the model itself.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from adaframe.data.features import FeatureDataset, evidence_hits, read_evidence, read_spec, sample_indices
from adaframe.evaluate.metrics import CostModel, backward_jump_fraction, mean_average_precision, top1
from adaframe.evaluate.split import Policy, Result, Sampling, evaluate
from adaframe.models.kinds import AGENTS, load_checkpoint
from adaframe.models.selectors import SELECTORS
from adaframe.rl.rollout import StopRule, check_stop_rule, default_stop
from adaframe.utils import AdaframeError, atomic_write, measure_gflops, resolve_device


@dataclass(frozen=True)
class Setting:
    """What a run is evaluated with: its frames, how they are picked, and when a video stops."""

    frames: int | None = None
    """K: an agent's most steps, or the frames a baseline samples (None: the K it was trained with)"""
    sampling: Sampling = "uniform"
    """how a baseline picks its frames ('all': every frame); agents pick their own"""
    policy: Policy = "learned"
    """where an agent looks: its own policy, or K uniformly spaced or random positions read by the same network"""
    stop: StopRule | Literal["default"] | None = "default"
    """when an agent stops early; "default": by its stop head for FrameGlimpse / FastForward, never for AdaFrame"""


def data_costs(data: str | Path, backbone_gflops: float | None = None, memory_gflops: float | None = None) -> CostModel:
    """GFLOPs per frame of the backbones of ``data``: those given, else those measured when its features were
    extracted (``extract.json``), else the paper's ResNet-101 / MobileNetV2 numbers. The head's are counted per run."""
    spec = read_spec(data)
    if backbone_gflops is None:
        backbone_gflops = spec["backbone"]["gflops"] if spec else CostModel.backbone_gflops
    if memory_gflops is None:
        memory_gflops = spec["memory_backbone"]["gflops"] if spec else CostModel.memory_gflops_per_frame
    return CostModel(backbone_gflops, memory_gflops)


def load_run(checkpoint: str | Path, data: str | Path, split: str = "val", device: torch.device | str = "cpu",
             datasets: dict | None = None) -> tuple[nn.Module, dict, FeatureDataset]:
    """Load a run and the split it is to be evaluated on, with the run's class order.

    Baselines read the global memory only where a training-free selector picks their frames, so their data set may
    lack ``memory/``. ``datasets``: a cache that runs evaluated together share, so that a split is read once.
    """
    model, payload = load_checkpoint(checkpoint, device)
    sizes, kind = payload["model_config"], payload["kind"]
    memory_frames = payload["memory_frames"] if kind in AGENTS else (None if (Path(data) / "memory").is_dir() else 0)
    key = (str(Path(data).resolve()), split, tuple(payload["classes"]), memory_frames)
    cache = {} if datasets is None else datasets
    if key not in cache:
        cache[key] = FeatureDataset(data, split, classes=payload["classes"], memory_frames=memory_frames)
    dataset = cache[key]
    if dataset.feature_dim != sizes["feature_dim"]:
        raise AdaframeError(f"{data}: features have D={dataset.feature_dim}, but the model was trained on D={sizes['feature_dim']}")
    if kind in AGENTS and dataset.memory_frames and dataset.memory_dim != sizes["memory_dim"]:
        raise AdaframeError(f"{data}: memory has Dm={dataset.memory_dim}, but the model was trained on Dm={sizes['memory_dim']}")
    return model, payload, dataset


def head_gflops_per_step(model: nn.Module, memory_frames: int, device: torch.device | str = "cpu", steps: int = 1) -> float:
    """GFLOPs of one step of the model on top of the backbone, counted at batch 1 (each model's ``flops_probe``), in a
    rollout of at most ``steps`` steps."""
    return measure_gflops(model.flops_probe(memory_frames, device, steps))


def evaluate_loaded(model: nn.Module, payload: dict, dataset: FeatureDataset, setting: Setting, cost: CostModel,
                    batch_size: int = 128, device: torch.device | str = "cpu", seed: int = 0,
                    progress: bool = False) -> tuple[dict, Result]:
    """Evaluate an already loaded run (see ``load_run``); ``report.experiments.Evaluator`` calls this once per setting.

    Args:
        cost: GFLOPs per frame of the backbones; the head's are counted on ``model``.
        seed: of random sampling and of the random policy.

    Returns:
        A JSON-ready dict: the setting (model, split, frames, sampling or policy, stop rule), mAP and top1 in
        percent, avg_frames, avg_steps, gflops_per_video, head_gflops_per_step, num_videos, the
        fraction of videos whose path jumps backward at least once and, on data with ``evidence.csv``,
        the share of videos whose visited frames include an evidence frame (``evidence_hit``; and
        ``evidence_hit_uniform``: of K uniform frames); and the per-video ``Result``.
    """
    kind, frames, sampling, policy = payload["kind"], setting.frames, setting.sampling, setting.policy
    stop = default_stop(model) if setting.stop == "default" else setting.stop
    if kind in AGENTS and sampling != "uniform":
        raise AdaframeError(f"--sampling applies to the baselines only: {kind} chooses its own frames (see --policy)")
    if kind not in AGENTS and policy != "learned":
        raise AdaframeError(f"--policy applies to the agents, and this checkpoint holds a {kind!r} model (see --sampling)")
    if kind not in AGENTS and stop is not None:
        raise AdaframeError(f"stop rules (--mu, --entropy, --stop-threshold) apply to the agents, and this checkpoint holds a {kind!r} model")
    check_stop_rule(model, stop)
    if frames is None:
        if "frames" not in payload["config"]:
            raise AdaframeError("the checkpoint does not record K (its config has no 'frames'): give --frames")
        frames = int(payload["config"]["frames"])
    if frames < 1:
        raise AdaframeError(f"--frames must be >= 1, got {frames}")

    res = evaluate(model, dataset, frames, sampling, stop, batch_size, device, seed, progress, policy)
    memory_frames = dataset.memory_frames if kind in AGENTS or sampling in SELECTORS else 0  # a selector reads the memory
    head = head_gflops_per_step(model, memory_frames, device, frames)
    gflops = replace(cost, head_gflops_per_step=head).per_video(res.frames.astype(np.float64), res.steps.astype(np.float64),
                                                                memory_frames)  # [N]
    summary = {
        "model": kind,
        "split": dataset.records[0].split,
        "frames": None if sampling == "all" else frames,
        "sampling": "policy" if kind in AGENTS else sampling,
        "policy": policy if kind in AGENTS else None,
        "inference": getattr(model.cfg, "inference", None),  # AdaFrame: where "learned" looks (its policy, or the scan)
        "stop": None if stop is None else stop.by,
        "threshold": None if stop is None else stop.threshold,
        "mu": stop.threshold if stop is not None and stop.by == "utility" else None,
        "patience": None if stop is None else stop.patience,
        "num_videos": len(dataset),
        "mAP": 100 * mean_average_precision(res.scores, res.labels),
        "top1": 100 * top1(res.scores, res.labels),
        "avg_frames": float(res.frames.mean()),
        "avg_steps": float(res.steps.mean()),
        "gflops_per_video": float(gflops.mean()),
        "backward_jumps": backward_jump_fraction(res.visited),
        "head_gflops_per_step": head,
        "memory_frames": memory_frames,
        "backbone_gflops": cost.backbone_gflops,
        "memory_gflops": cost.memory_gflops_per_frame,
    }
    evidence = read_evidence(dataset.root, [r.video_id for r in dataset.records])
    if evidence is not None:
        uniform = sample_indices(torch.from_numpy(dataset.lengths), frames, "uniform").numpy()  # [N, K]
        summary["evidence_hit"] = float(evidence_hits(res.visited, evidence).mean())
        summary["evidence_hit_uniform"] = float(evidence_hits(uniform, evidence).mean())
    return summary, res


def write_per_video(path: Path, dataset: FeatureDataset, classes: list[str], res: Result) -> None:
    """One row per video: what it looked at, in order, what the agent thought of it, and what it said."""
    predicted = res.scores.argmax(1)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id", "label", "predicted", "confidence", "correct", "stop_step", "distinct_frames",
                        "frames", "utilities"])
            for i, rec in enumerate(dataset.records):
                steps = int(res.steps[i])
                w.writerow([rec.video_id, classes[res.labels[i]], classes[predicted[i]], f"{res.scores[i, predicted[i]]:.4f}",
                            int(predicted[i] == res.labels[i]), steps, int(res.frames[i]),
                            " ".join(str(int(v)) for v in res.visited[i, :steps] if v >= 0),
                            " ".join(f"{u:.4f}" for u in res.utilities[i, :steps] if np.isfinite(u))])

    atomic_write(Path(path), write)


def evaluate_run(checkpoint: str | Path, data: str | Path, split: str = "val", setting: Setting = Setting(),
                 cost: CostModel | None = None, batch_size: int = 128, device: str = "cpu", seed: int = 0,
                 progress: bool = False, per_video: Path | None = None) -> dict:
    """Load ``checkpoint`` and evaluate it on ``split`` of ``data``; the keys are those of ``evaluate_loaded``.

    An agent's learned policy is also run with K uniform positions (same network, same stop rule): ``uniform_mAP``
    and ``learned_minus_uniform`` say what the policy adds.

    Args:
        cost: GFLOPs per frame of the backbones (default: ``data_costs(data)``).
        per_video: also write one CSV row per video there (see ``write_per_video``).
    """
    dev = resolve_device(device)
    model, payload, dataset = load_run(checkpoint, data, split, dev)
    cost = data_costs(data) if cost is None else cost
    result, res = evaluate_loaded(model, payload, dataset, setting, cost, batch_size, dev, seed, progress)
    if per_video is not None:
        write_per_video(per_video, dataset, payload["classes"], res)
    if payload["kind"] in AGENTS and setting.policy == "learned":
        uniform, _ = evaluate_loaded(model, payload, dataset, replace(setting, policy="uniform"), cost, batch_size, dev, seed, progress)
        result.update(uniform_mAP=uniform["mAP"], learned_minus_uniform=result["mAP"] - uniform["mAP"])
        if result["inference"] == "scan":  # what the policy that training set aside would give
            policy, _ = evaluate_loaded(model, payload, dataset, replace(setting, policy="policy"), cost, batch_size, dev, seed, progress)
            result.update(policy_mAP=policy["mAP"], policy_minus_uniform=policy["mAP"] - uniform["mAP"])
    return {"checkpoint": str(checkpoint), "data": str(data), **result}
