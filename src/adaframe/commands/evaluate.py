"""``adaframe eval``: accuracy and cost of a trained run on one split of a feature data set (the work: ``evaluate.run``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from adaframe.evaluate.run import Setting, data_costs, evaluate_run
from adaframe.evaluate.split import Policy, Sampling
from adaframe.report.tables import format_table
from adaframe.rl.rollout import StopRule
from adaframe.utils import AdaframeError, check_writable, write_json


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
    """how a baseline picks its frames: K uniform or random ones, every frame ('all'), or K picked from the global memory
    without training ('kcenter': farthest-first over its features; 'motion': quantiles of its accumulated change);
    AdaFrame picks its own"""
    policy: Policy = "learned"
    """where an agent looks: as trained ('learned': its policy, or the uniform scan where training found the policy added
    nothing on val), its policy in any case ('policy'), or K uniformly spaced or random positions read by the same
    network (a learned policy is also compared with uniform: 'learned minus uniform' is what the policy adds)"""
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


def run_eval(cfg: EvalConfig) -> dict:
    """The ``adaframe eval`` command: evaluate, print a one-row table, optionally write JSON."""
    for path in (cfg.json, cfg.per_video):
        if path is not None:
            check_writable(path)
    setting = Setting(cfg.frames, cfg.sampling, cfg.policy, cfg.stop_rule() or "default")
    cost = data_costs(cfg.data, cfg.backbone_gflops, cfg.memory_gflops)
    r = evaluate_run(cfg.checkpoint, cfg.data, cfg.split, setting, cost, batch_size=cfg.batch_size, device=cfg.device,
                     seed=cfg.seed, progress=cfg.progress, per_video=cfg.per_video)
    stop = "-" if r["stop"] is None else StopRule(r["stop"], r["threshold"], r["patience"]).describe()
    header = ["model", "split", "videos", "sampling", "K", "stop", "mAP (%)", "top1 (%)", "frames", "steps", "GFLOPs"]
    sampling = r["sampling"] if r["policy"] in (None, "learned") else f"{r['policy']} (policy)"
    print(format_table(header, [[r["model"], r["split"], r["num_videos"], sampling, r["frames"] or "all", stop,
                                 r["mAP"], r["top1"], r["avg_frames"], r["avg_steps"], r["gflops_per_video"]]]))
    if r.get("inference") == "scan" and r["policy"] == "learned":
        print(f"this run looks by the uniform scan: on val its policy added nothing over it in training; the policy here "
              f"would give {r['policy_mAP']:.2f} (--policy policy)")
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
