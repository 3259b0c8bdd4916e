"""``adaframe video-demo``: the whole path on real video files, on a CPU, in minutes.

1. render synthetic MP4s whose class shows only for a few seconds (``synth_video``);
2. ``extract``: backbone features at 1 fps + the global memory, into the feature layout;
3. ``train`` AdaFrame-K, AvgPooling and an LSTM over K+1 frames on them;
4. ``eval`` them on the val split, with AvgPooling and an LSTM over K+1 frames as the baselines to beat;
5. ``predict`` on a few val *files*: the policy decodes and runs the backbone only on the frames
   it picks, next to AvgPooling over 25 uniform frames, timed in the same run.

Unless weights are given, the backbones are random with their BatchNorm statistics set on training frames
(``calibrated_weights``), saved as weight files that ``extract`` and ``predict`` load. Each stage reuses what a
previous run finished.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from adaframe.data.features import read_videos_csv
from adaframe.data.video_lists import read_video_list
from adaframe.evaluate.run import Setting, evaluate_run
from adaframe.media.backbones import build_backbone, calibrate_batchnorm
from adaframe.media.synth_video import SynthVideoConfig, generate_videos
from adaframe.media.reader import decode_at_rate
from adaframe.models.kinds import KINDS
from adaframe.recognize import collection
from adaframe.recognize.extraction import extract
from adaframe.recognize.recognizer import Recognizer
from adaframe.recognize.uniform import UniformBaseline, load_baseline
from adaframe.report.experiments import train_missing
from adaframe.report.tables import format_table
from adaframe.rl.rollout import StopRule
from adaframe.train.config import TrainConfig
from adaframe.utils import AdaframeError, resolve_device, save_torch, write_json

COMPARE = 25


@dataclass
class VideoDemoConfig:
    """Synthetic video files -> extract -> train -> eval -> predict with the cost compared to uniform sampling."""

    out: Path = Path("runs/video-demo")
    """directory for the videos, the features, the runs and results.json"""
    videos: int = 160
    backbone: Literal["resnet101", "resnet50", "resnet18", "mobilenet_v2"] = "resnet101"
    """the per-frame network"""
    backbone_weights: Path | None = None
    """its torchvision-format weights (default: random, BatchNorm calibrated on training frames)"""
    memory_weights: Path | None = None
    """MobileNetV2 weights of the global memory (default: random, calibrated)"""
    size: int = 224
    """backbone input size"""
    frames: int = 5
    """K of AdaFrame"""
    mu: float = 0.7
    epochs: int = 40
    predict_videos: int = 3
    """val videos to run 'adaframe predict' on"""
    quick: bool = False
    """tiny: 12 videos, 3 epochs, ResNet-18 at 64 px unless --backbone/--backbone-weights say otherwise; a smoke test, not a result"""
    device: Literal["cpu", "cuda"] = "cpu"

    def __post_init__(self) -> None:
        if self.quick:  # a backbone the user named is kept
            self.videos, self.epochs, self.predict_videos = 12, 3, 1
            if self.backbone == "resnet101" and self.backbone_weights is None:
                self.backbone, self.size = "resnet18", 64
        if self.videos < 4 or self.frames < 1 or self.epochs < 1 or self.predict_videos < 0:
            raise AdaframeError("need --videos >= 4, --frames >= 1, --epochs >= 1, --predict-videos >= 0")
        for weights in (self.backbone_weights, self.memory_weights):
            if weights is not None and not weights.is_file():
                raise AdaframeError(f"weights {weights} do not exist")


def calibrated_weights(name: str, files: Path, size: int, folder: Path, videos: int = 24) -> Path:
    """Random weights (seed 0) with BatchNorm statistics set on frames of the first train videos, saved as a
    torchvision-format file that ``extract`` then loads like any user's checkpoint (see ``calibrate_batchnorm``)."""
    path = folder / f"{name}-random-bn{size}.pt"
    if path.is_file():
        return path
    entries = [e for e in read_video_list(files / "list.txt") if e.split == "train"][:videos]
    frames = np.concatenate([decode_at_rate(e.path, 1.0, size)[0][::2] for e in entries])  # [N, size, size, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights are the point here
        model = calibrate_batchnorm(build_backbone(name), frames)
    save_torch(path, model.state_dict())
    return path


def run_video_demo(cfg: VideoDemoConfig) -> dict:
    """The ``adaframe video-demo`` command; returns what it writes to OUT/results.json."""
    resolve_device(cfg.device)
    synth = SynthVideoConfig(videos=cfg.videos, min_seconds=6 if cfg.quick else 8, max_seconds=8 if cfg.quick else 16,
                             min_evidence=1.0 if cfg.quick else 1.5)
    files, data, runs = cfg.out / "files", cfg.out / "features", cfg.out / "runs"
    record = cfg.out / "synth_video.json"
    if (files / "list.txt").is_file() and record.is_file() and json.loads(record.read_text()) == asdict(synth):
        tqdm.write(f"[1/5] reusing the videos in {files}")
    else:
        tqdm.write(f"[1/5] rendering {cfg.videos} synthetic videos into {files}")
        generate_videos(synth, files)
        write_json(record, asdict(synth))

    memory_size = min(112, cfg.size)
    # given weights are used as they are; missing ones are random, calibrated on this set's frames
    backbone_weights = cfg.backbone_weights or calibrated_weights(cfg.backbone, files, cfg.size, cfg.out / "weights")
    memory_weights = cfg.memory_weights or calibrated_weights("mobilenet_v2", files, memory_size, cfg.out / "weights")
    tqdm.write(f"[2/5] extracting features ({cfg.backbone} at {cfg.size}, MobileNetV2 memory) into {data}")
    counts = extract(files / "list.txt", data, backbone=cfg.backbone, size=cfg.size, backbone_weights=backbone_weights,
                     memory_size=memory_size, memory_weights=memory_weights, workers=1, device=cfg.device)
    if counts["failed"]:
        raise AdaframeError(f"{counts['failed']} videos failed to extract; see {data / 'failures.csv'}")

    extra = {"hidden": 32} if cfg.quick else {}
    models = {"adaframe": ("adaframe", cfg.frames), "avgpool": ("avgpool", cfg.frames), "lstm": ("lstm", cfg.frames + 1)}
    cfgs = {name: TrainConfig(data, runs / name, model=model, frames=k, preset="fast", epochs=cfg.epochs, device=cfg.device, **extra)  # type: ignore[arg-type]
            for name, (model, k) in models.items()}
    train_missing(cfgs, log=lambda m: tqdm.write("[3/5] " + m))

    tqdm.write("[4/5] evaluating on val")
    k1 = cfg.frames + 1
    rows = [evaluate_run(cfgs["avgpool"].out, data, "val", Setting(k)) for k in (1, cfg.frames, k1, COMPARE)]
    rows.append(evaluate_run(cfgs["avgpool"].out, data, "val", Setting(sampling="all")))
    rows.append(evaluate_run(cfgs["lstm"].out, data, "val", Setting(k1)))
    rows += [evaluate_run(cfgs["adaframe"].out, data, "val", Setting(cfg.frames, stop=stop)) for stop in (None, StopRule("utility", cfg.mu))]
    header = ["model", "sampling", "K", "mu", "mAP (%)", "top1 (%)", "frames", "GFLOPs", "learned - uniform"]
    print(format_table(header, [[r["model"], r["sampling"], r["frames"] or "all", r["mu"], r["mAP"], r["top1"], r["avg_frames"],
                                 r["gflops_per_video"], r.get("learned_minus_uniform")] for r in rows]))
    ada, beaten = rows[-2], [r for r in rows if not KINDS[r["model"]].agent and r["frames"] == k1]
    check = {"name": f"AdaFrame-{cfg.frames} (K steps) >= AvgPooling-U{k1} and >= LSTM-U{k1}",
             "passed": all(ada["mAP"] >= r["mAP"] for r in beaten),
             "detail": f"{ada['mAP']:.2f} vs " + ", ".join(f"{r['model']} {r['mAP']:.2f}" for r in beaten)}
    print(f"\n{'PASS' if check['passed'] else 'FAIL'}  {check['name']}: {check['detail']}")

    val = [r for r in read_videos_csv(data) if r.split == "val"][: cfg.predict_videos]
    paths = tuple(files / "videos" / f"{r.video_id}.mp4" for r in val)
    predictions = []
    if paths:
        tqdm.write(f"\n[5/5] adaframe predict on {len(paths)} val video files, against AvgPooling over {COMPARE} uniform frames")
        device = resolve_device(cfg.device)
        # one video at a time, so that each wall time is its own and compares with the baseline's
        rec = Recognizer.from_run(cfgs["adaframe"].out, device, frames=cfg.frames, mu=cfg.mu, batch_size=1)
        baseline = UniformBaseline(rec, COMPARE, load_baseline(rec, cfgs["avgpool"].out))
        predictions = [r.to_json() for r in collection.predict_files(rec, paths, baseline)]
    summary = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}, "synth": asdict(synth),
               "extract": counts, "eval": rows, "check": check, "predict": predictions}
    write_json(cfg.out / "results.json", summary)
    print(f"\nwrote {cfg.out / 'results.json'}")
    return summary
