"""``adaframe eval``: accuracy and cost of a trained run on one split of a feature data set.

Accuracy is mAP and top-1 (in percent). Cost is what recognising one video takes on average:
the distinct frames the backbone must run, the steps of the model's head, and the GFLOPs of both
plus the global memory (``metrics.CostModel``), with the head's GFLOPs counted on the model itself.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro
from torch import nn

from adaframe.registry import AGENTS, load_checkpoint
from adaframe.data import FeatureDataset, Sampling, evidence_hits, read_evidence, read_spec, sample_indices
from adaframe.inference import Policy, Result, evaluate
from adaframe.rollout import StopRule, check_stop_rule, default_stop
from adaframe.metrics import CostModel, backward_jump_fraction, mean_average_precision, measure_gflops, top1
from adaframe.tables import format_table
from adaframe.utils import AdaframeError, atomic_write, check_writable, resolve_device, write_json


@dataclass
class EvalConfig:
    """Evaluate a trained run on one split: mAP, top-1, frames, steps and GFLOPs per video."""

    checkpoint: Path
    """run directory written by 'adaframe train' (or its checkpoint.pt)"""
    data: Path
    """data set directory (videos.csv, features/, memory/)"""
    split: Literal["train", "val", "test"] = "val"
    frames: Annotated[int | None, tyro.conf.arg(metavar="INT", help_behavior_hint="(default: the K it was trained with)")] = None
    """K: AdaFrame's most steps, or the frames a baseline samples"""
    sampling: Sampling = "uniform"
    """how a baseline picks its frames ('all': every frame); AdaFrame picks its own"""
    policy: Policy = "learned"
    """where an agent looks: its own policy, or K uniformly spaced or random positions read by the same network
    (a learned policy is also compared with uniform: 'learned minus uniform' is what the policy adds)"""
    mu: Annotated[float | None, tyro.conf.arg(metavar="FLOAT", help_behavior_hint="(default: none, K fixed steps)")] = None
    """adaptive lookahead: stop once the utility falls more than mu below its best (AdaFrame)"""
    entropy: Annotated[float | None, tyro.conf.arg(metavar="FLOAT", help_behavior_hint="(default: none)")] = None
    """the ablation of --mu: stop once the prediction's entropy / log C falls below this"""
    stop_threshold: Annotated[float | None, tyro.conf.arg(metavar="FLOAT", help_behavior_hint="(default: 0.5 for models with a stop head)")] = None
    """FrameGlimpse / FastForward: stop once their stop head gives p(stop) >= this (above 1: never)"""
    patience: int = 1
    """stop after the rule (--mu or --entropy) has fired this many times"""
    per_video: Annotated[Path | None, tyro.conf.arg(metavar="PATH", help_behavior_hint="")] = None
    """also write one CSV row per video: frames visited in order, utilities, stop step, prediction"""
    json: Annotated[Path | None, tyro.conf.arg(metavar="PATH", help_behavior_hint="")] = None
    """also write the results to this JSON file"""
    batch_size: int = 128
    device: Literal["cpu", "cuda"] = "cpu"
    backbone_gflops: Annotated[float | None, tyro.conf.arg(metavar="FLOAT", help_behavior_hint="(default: measured at extraction, else 7.82)")] = None
    """GFLOPs of the backbone per frame (ResNet-101 at 224x224: 7.82)"""
    memory_gflops: Annotated[float | None, tyro.conf.arg(metavar="FLOAT", help_behavior_hint="(default: measured at extraction, else 0.075)")] = None
    """GFLOPs per global-memory frame (MobileNetV2 at 112x112: 0.075)"""
    seed: int = 0
    """seed of --sampling random"""
    progress: bool = True

    def __post_init__(self) -> None:
        checks = {
            "--frames": self.frames is None or self.frames >= 1, "--patience": self.patience >= 1,
            "--mu": self.mu is None or self.mu >= 0, "--entropy": self.entropy is None or self.entropy >= 0,
            "--stop-threshold": self.stop_threshold is None or self.stop_threshold >= 0, "--batch-size": self.batch_size >= 1,
            "--backbone-gflops": (self.backbone_gflops or 0) >= 0, "--memory-gflops": (self.memory_gflops or 0) >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise AdaframeError(f"invalid value for {', '.join(bad)}")
        given = [f for f, v in (("--mu", self.mu), ("--entropy", self.entropy), ("--stop-threshold", self.stop_threshold)) if v is not None]
        if len(given) > 1:
            raise AdaframeError(f"choose one stop rule, not {' and '.join(given)}")
        if not given and self.patience != 1:
            raise AdaframeError("--patience only matters with a stop rule (--mu or --entropy)")

    def stop_rule(self) -> StopRule | None:
        if self.mu is not None:
            return StopRule("utility", self.mu, self.patience)
        if self.entropy is not None:
            return StopRule("entropy", self.entropy, self.patience)
        if self.stop_threshold is not None:
            return StopRule("learned", self.stop_threshold, self.patience)
        return None


def load_run(checkpoint: str | Path, data: str | Path, split: str = "val", device: torch.device | str = "cpu",
             datasets: dict | None = None) -> tuple[nn.Module, dict, FeatureDataset]:
    """Load a run and the split it is to be evaluated on, with the run's class order.

    Baselines never read the global memory, so their data set may lack ``memory/``. ``datasets``: a cache
    that runs evaluated together share, so that a split is read once.
    """
    model, payload = load_checkpoint(checkpoint, device)
    dims, kind = payload["dims"], payload["kind"]
    memory_frames = dims.get("memory_frames") if kind in AGENTS else 0
    key = (str(Path(data).resolve()), split, tuple(payload["classes"]), memory_frames)
    cache = {} if datasets is None else datasets
    if key not in cache:
        cache[key] = FeatureDataset(data, split, classes=payload["classes"], memory_frames=memory_frames)
    dataset = cache[key]
    if dataset.feature_dim != dims["feature_dim"]:
        raise AdaframeError(f"{data}: features have D={dataset.feature_dim}, but the model was trained on D={dims['feature_dim']}")
    if kind in AGENTS and dataset.memory_frames and dataset.memory_dim != dims["memory_dim"]:
        raise AdaframeError(f"{data}: memory has Dm={dataset.memory_dim}, but the model was trained on Dm={dims['memory_dim']}")
    return model, payload, dataset


def head_gflops_per_step(model: nn.Module, memory_frames: int, device: torch.device | str = "cpu") -> float:
    """GFLOPs of one step of the model on top of the backbone, counted at batch 1 (each model's ``flops_probe``)."""
    return measure_gflops(model.flops_probe(memory_frames, device))


def evaluate_loaded(model: nn.Module, payload: dict, dataset: FeatureDataset, frames: int | None = None,
                    sampling: Sampling = "uniform", stop: StopRule | None = None, batch_size: int = 128,
                    device: torch.device | str = "cpu", backbone_gflops: float = CostModel.backbone_gflops,
                    memory_gflops: float = CostModel.memory_gflops_per_frame, seed: int = 0,
                    progress: bool = False, policy: Policy = "learned") -> tuple[dict, Result]:
    """Evaluate an already loaded run (see ``load_run``); the demo and the report call this once per setting.

    Returns:
        A JSON-ready dict: the setting (model, split, frames, sampling or policy, stop rule), mAP and top1 in
        percent, avg_frames, avg_steps, gflops_per_video, head_gflops_per_step, num_videos, the
        fraction of videos whose path jumps backward at least once and, on data with ``evidence.csv``,
        the share of videos whose visited frames include an evidence frame (``evidence_hit``; and
        ``evidence_hit_uniform``: of K uniform frames); and the per-video ``Result``.
    """
    kind = payload["kind"]
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
    memory_frames = dataset.memory_frames if kind in AGENTS else 0
    head = head_gflops_per_step(model, memory_frames, device)
    cost = CostModel(backbone_gflops, memory_gflops, head)
    gflops = cost.per_video(res.frames.astype(np.float64), res.steps.astype(np.float64), memory_frames)  # [N]
    summary = {
        "model": kind,
        "split": dataset.records[0].split,
        "frames": None if sampling == "all" else frames,
        "sampling": "policy" if kind in AGENTS else sampling,
        "policy": policy if kind in AGENTS else None,
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
        "backbone_gflops": backbone_gflops,
        "memory_gflops": memory_gflops,
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


def evaluate_run(checkpoint: str | Path, data: str | Path, split: str = "val", frames: int | None = None,
                 sampling: Sampling = "uniform", stop: StopRule | Literal["default"] | None = "default", batch_size: int = 128,
                 device: str = "cpu", backbone_gflops: float | None = None, memory_gflops: float | None = None,
                 seed: int = 0, progress: bool = False, per_video: Path | None = None, policy: Policy = "learned") -> dict:
    """Load ``checkpoint`` and evaluate it on ``split`` of ``data``; the keys are those of ``evaluate_loaded``.

    ``stop="default"``: the stop head for FrameGlimpse / FastForward, none (K steps) for AdaFrame. An agent's
    learned policy is also run with K uniform positions (same network, same stop rule): ``uniform_mAP`` and
    ``learned_minus_uniform`` say what the policy adds.

    GFLOPs per frame not given are those measured when the features were extracted (``extract.json``),
    else the paper's ResNet-101 / MobileNetV2 numbers.
    """
    dev = resolve_device(device)
    model, payload, dataset = load_run(checkpoint, data, split, dev)
    spec = read_spec(data)
    if backbone_gflops is None:
        backbone_gflops = spec["backbone"]["gflops"] if spec else CostModel.backbone_gflops
    if memory_gflops is None:
        memory_gflops = spec["memory_backbone"]["gflops"] if spec else CostModel.memory_gflops_per_frame
    if stop == "default":
        stop = default_stop(model)
    costs = (batch_size, dev, backbone_gflops, memory_gflops, seed, progress)
    result, res = evaluate_loaded(model, payload, dataset, frames, sampling, stop, *costs, policy=policy)
    if per_video is not None:
        write_per_video(per_video, dataset, payload["classes"], res)
    if payload["kind"] in AGENTS and policy == "learned":
        uniform, _ = evaluate_loaded(model, payload, dataset, frames, sampling, stop, *costs, policy="uniform")
        result.update(uniform_mAP=uniform["mAP"], learned_minus_uniform=result["mAP"] - uniform["mAP"])
    return {"checkpoint": str(checkpoint), "data": str(data), **result}


def run_eval(cfg: EvalConfig) -> dict:
    """The ``adaframe eval`` command: evaluate, print a one-row table, optionally write JSON."""
    for path in (cfg.json, cfg.per_video):
        if path is not None:
            check_writable(path)
    r = evaluate_run(cfg.checkpoint, cfg.data, cfg.split, cfg.frames, cfg.sampling, cfg.stop_rule() or "default", cfg.batch_size,
                     cfg.device, cfg.backbone_gflops, cfg.memory_gflops, cfg.seed, cfg.progress, cfg.per_video, cfg.policy)
    stop = "-" if r["stop"] is None else StopRule(r["stop"], r["threshold"], r["patience"]).describe()
    header = ["model", "split", "videos", "sampling", "K", "stop", "mAP (%)", "top1 (%)", "frames", "steps", "GFLOPs"]
    sampling = r["sampling"] if r["policy"] in (None, "learned") else f"{r['policy']} (policy)"
    print(format_table(header, [[r["model"], r["split"], r["num_videos"], sampling, r["frames"] or "all", stop,
                                 r["mAP"], r["top1"], r["avg_frames"], r["avg_steps"], r["gflops_per_video"]]]))
    if "learned_minus_uniform" in r:
        print(f"learned minus uniform: {r['learned_minus_uniform']:+.2f} mAP (the same network on {r['frames']} uniformly "
              f"spaced frames: {r['uniform_mAP']:.2f})")
    if "evidence_hit" in r:
        print(f"videos whose visited frames include an evidence frame: {100 * r['evidence_hit']:.1f}% "
              f"({r['frames']} uniform frames: {100 * r['evidence_hit_uniform']:.1f}%)")
    if cfg.per_video is not None:
        print(f"wrote {cfg.per_video}")
    if cfg.json is not None:
        write_json(cfg.json, r)
        print(f"wrote {cfg.json}")
    return r
