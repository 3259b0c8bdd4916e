"""``adaframe predict``: recognise raw video files, running the big backbone only where the policy looks.

The work is ``recognizer.Recognizer`` (also the Python API) and ``collection`` (many files, and what is
printed of each); this module is the command: options, the exit status, and ``--compare uniform25``, which
runs AvgPooling on the 25 uniform frames that ``eval`` reads in the same process (``uniform.UniformBaseline``), so the
saving in frames, GFLOPs and wall time is measured, not claimed.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from adaframe.recognize import collection, ray_pipeline
from adaframe.recognize.jobs import CollectionJob
from adaframe.recognize.recognizer import Recognizer
from adaframe.recognize.result import Recognition
from adaframe.recognize.uniform import UniformBaseline, load_baseline
from adaframe.utils import AdaframeError, resolve_device


@dataclass
class PredictConfig:
    """Recognise video files with a trained AdaFrame run: label, top-5, frames used, GFLOPs, wall time.

    A video that fails (missing, not a video, corrupted, truncated) is reported on stderr while the
    others go on. Exit status: 0 every video recognised, 1 some failed, 2 bad usage (options, run)."""

    checkpoint: Annotated[Path | None, tyro.conf.arg(metavar="RUN_DIR", help_behavior_hint="(or --export)")] = None
    """AdaFrame run directory trained on features from 'adaframe extract'"""
    export: Annotated[Path | None, tyro.conf.arg(metavar="DIR", help_behavior_hint="(or --checkpoint)")] = None
    """a run exported by 'adaframe export': the same rollout with its networks on onnxruntime"""
    videos: Annotated[tyro.conf.Positional[tuple[Path, ...]], tyro.conf.arg(help_behavior_hint="")] = ()
    """video files (or a whole collection with --videos)"""
    collection: Annotated[Path | None, tyro.conf.arg(name="videos", metavar="DIR|LIST|JSON")] = None
    """a collection, as 'extract' takes it (a folder, a 'path [label] [split]' list, an ActivityNet JSON); needs --out"""
    out: Annotated[Path | None, tyro.conf.arg(metavar="DIR", help_behavior_hint="(required with --videos)")] = None
    """with --videos: write predictions.csv and failures.csv here (a rerun skips finished videos)"""
    video_root: Annotated[Path | None, tyro.conf.arg(metavar="DIR", help_behavior_hint="(default: the list's folder)")] = None
    """with --videos: where the listed paths are"""
    shard: Annotated[str | None, tyro.conf.arg(metavar="I/N")] = None
    """with --videos: do only the i-th of n parts of the list; under torchrun the ranks split it"""
    frames: Annotated[int | None, tyro.conf.arg(metavar="INT", help_behavior_hint="(default: the K it was trained with)")] = None
    """K: the most steps"""
    mu: Annotated[float | None, tyro.conf.arg(metavar="FLOAT")] = 0.7
    """adaptive lookahead margin (None: always K steps)"""
    patience: int = 1
    compare: Annotated[str | None, tyro.conf.arg(metavar="uniformK")] = None
    """also run the AvgPooling baseline on K frames evenly spaced in time, e.g. uniform25"""
    compare_checkpoint: Annotated[Path | None, tyro.conf.arg(metavar="RUN_DIR", help_behavior_hint="(default: cost only)")] = None
    """AvgPooling run trained on the same features, for the baseline's prediction"""
    backbone_weights: Annotated[Path | None, tyro.conf.arg(metavar="PATH", help_behavior_hint="(default: as recorded)")] = None
    """the backbone weights the features were extracted with, if moved (checked by SHA-256)"""
    memory_weights: Annotated[Path | None, tyro.conf.arg(metavar="PATH", help_behavior_hint="(default: as recorded)")] = None
    scan: bool = False
    """cost check: replace the policy by a scan of consecutive frames from the first one, so every
    step runs the backbone on a new frame (the prediction is then not AdaFrame's)"""
    explain: Annotated[Path | None, tyro.conf.arg(metavar="PNG|DIR")] = None
    """draw where the agent looked, what it believed after each step and why it stopped: a PNG for one video, else a
    folder with one PNG per video (with --videos: one per video of this shard)"""
    top_k: int = 5
    json: bool = False
    """print one JSON object per video instead of text"""
    batch_size: int = 8
    """videos run together"""
    workers: int = 2
    """decoding processes, overlapped with the backbones and the agent (0: decode in the main process)"""
    device: Literal["cpu", "cuda"] = "cpu"
    """with --ray: where each actor runs its networks (cuda: one GPU an actor)"""
    ray: Annotated[str | None, tyro.conf.arg(metavar="local|auto|ADDRESS")] = None
    """with --videos: run as a Ray Data pipeline, the same files written; 'local': a Ray started on this machine for
    the run; 'auto' or HOST:6379 or ray://HOST:10001: the cluster 'ray start' made (needs adaframe[ray])"""
    ray_actors: int = 1
    """with --ray: actors, each loading the run once (with --workers decoding processes of its own)"""

    progress: bool = True

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.export is None):
            raise AdaframeError("give the run: --checkpoint RUN_DIR (PyTorch) or --export DIR (onnxruntime), one of them")
        if self.export is not None and (self.backbone_weights or self.memory_weights):
            raise AdaframeError("--backbone-weights / --memory-weights go with --checkpoint: an export holds its backbones")
        if bool(self.videos) == (self.collection is not None):
            raise AdaframeError("give video files, or a collection with --videos DIR|LIST|JSON --out OUT (not both)")
        if (self.collection is None) != (self.out is None) or (self.collection is None and (self.shard or self.video_root)):
            raise AdaframeError("--videos, --out, --shard and --video-root go together: --videos SRC --out OUT")
        if self.ray is not None and (self.collection is None or self.shard is not None):
            raise AdaframeError("--ray runs a collection: --videos SRC --out OUT --ray ADDRESS (without --shard: Ray splits the work)")
        checks = {"--frames": self.frames is None or self.frames >= 1, "--mu": self.mu is None or self.mu >= 0,
                  "--patience": self.patience >= 1, "--top-k": self.top_k >= 1, "--batch-size": self.batch_size >= 1,
                  "--workers": self.workers >= 0, "--ray-actors": self.ray_actors >= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise AdaframeError(f"invalid value for {', '.join(bad)}")
        parse_compare(self.compare)
        if self.ray is not None:
            ray_pipeline.require_ray()  # a missing install is said before any work


def parse_compare(spec: str | None) -> int | None:
    if spec is None:
        return None
    m = re.fullmatch(r"uniform(\d+)", spec)
    if not m or int(m[1]) < 1:
        raise AdaframeError(f"--compare {spec!r}: expected uniformK, e.g. uniform25")
    return int(m[1])


def run_predict(cfg: PredictConfig) -> list[Recognition]:
    """The ``adaframe predict`` command: ``collection.predict_files``, then exit status 1 if any video failed.

    Exit status: 0 every video recognised, 1 some failed (each named on stderr, the others' results
    printed as usual), 2 bad usage (an AdaframeError raised before any video, printed by the CLI).
    """
    if cfg.collection is not None:
        if predict_collection(cfg)["failed"]:
            sys.exit(1)
        return []
    results, k = _predict_files(cfg)
    if cfg.explain is not None:
        explain(results, cfg.explain, cfg.mu, k)
    if any(collection.failure(r) is not None for r in results):
        sys.exit(1)  # after all output, so a script sees every result and still learns that some failed
    return results


def recognizer(cfg: PredictConfig, device: torch.device, batch_size: int) -> Recognizer:
    """The run of ``cfg``: its checkpoint on PyTorch, or its export on onnxruntime."""
    options = {"frames": cfg.frames, "mu": cfg.mu, "patience": cfg.patience, "batch_size": batch_size}
    if cfg.export is not None:
        return Recognizer.from_export(cfg.export, device, cfg.workers, **options)
    return Recognizer.from_run(cfg.checkpoint, device, cfg.backbone_weights, cfg.memory_weights, cfg.workers, **options)


def ray_options(cfg: PredictConfig) -> dict:
    """The arguments of ``ray_pipeline.recognitions`` that load the run of ``cfg`` in each actor."""
    return {"run": cfg.checkpoint, "export": cfg.export, "device": cfg.device, "workers": cfg.workers, "batch_size": cfg.batch_size,
            "frames": cfg.frames, "mu": cfg.mu, "patience": cfg.patience, "backbone_weights": cfg.backbone_weights,
            "memory_weights": cfg.memory_weights, "scan": cfg.scan}


def _predict_files(cfg: PredictConfig) -> tuple[list[Recognition], int]:
    """``collection.predict_files`` with the run and the baseline of ``cfg``; the results and K."""
    compare = parse_compare(cfg.compare)
    rec = recognizer(cfg, resolve_device(cfg.device), batch_size=1 if compare is not None else cfg.batch_size)
    if cfg.compare_checkpoint is not None and compare is None:
        raise AdaframeError("--compare-checkpoint needs --compare uniformK")
    classifier = None if cfg.compare_checkpoint is None else load_baseline(rec, cfg.compare_checkpoint)
    baseline = None if compare is None else UniformBaseline(rec, compare, classifier)
    return collection.predict_files(rec, cfg.videos, baseline, cfg.scan, cfg.top_k, cfg.json), rec.frames or rec.trained_frames


def predict_collection(cfg: PredictConfig) -> dict:
    """``predict --videos SRC --out OUT``: every video of a collection into ``OUT/predictions.csv`` (see ``collection``);
    prints one summary line and returns the collection's numbers."""
    # read as 'extract' reads it; under --ray this process loads the run on its CPU only to check it and for its classes
    job = CollectionJob.start(cfg.collection, cfg.out, cfg.video_root, shard=cfg.shard, device="cpu" if cfg.ray else cfg.device)
    rec = recognizer(cfg, job.device, cfg.batch_size)
    job.open(collection.SETTINGS, collection.settings(rec, cfg.checkpoint or cfg.export), "predictions")
    if cfg.ray is None:
        ran = collection.recognise(rec, job, cfg.scan, cfg.progress)
    else:
        ran = collection.recognise_on_ray(job, cfg.ray, cfg.ray_actors, cfg.progress, **ray_options(cfg))
    numbers = job.finish(lambda: collection.write_index(job, rec.classes, cfg.top_k))
    if cfg.explain is not None:
        explain(collection.results(job), cfg.explain, cfg.mu, cfg.frames or rec.trained_frames, folder=True)
    line = (f"{numbers['videos']} videos: {numbers['done']} recognised ({ran['ran'] - ran['failed_now']} now, {ran['skipped']} "
            f"already done), {numbers['failed']} failed, {numbers['missing']} left to other shards; {ran['videos_per_s']:.2f} videos/s"
            f"{'' if cfg.ray is None else f' on Ray ({cfg.ray_actors} actor' + 's' * (cfg.ray_actors > 1) + ')'}; "
            f"mean {numbers['mean_frames']:.2f} frames, {numbers['mean_gflops']:.2f} GFLOPs")
    if (k := parse_compare(cfg.compare)) is not None:
        uniform = k * rec.features["backbone"]["gflops"]
        line += f" (uniform{k}: {uniform:.2f} GFLOPs of backbone alone, ratio {numbers['mean_gflops'] / uniform:.2f})"
    if "mAP" in numbers:
        line += f"; mAP {numbers['mAP']:.2f}, top-1 {numbers['top1']:.2f} over {numbers['labelled']} labelled videos"
    print(line + job.skipped_note() + f". Wrote {cfg.out / 'predictions.csv'}" + (f" and {cfg.out / 'failures.csv'}" if numbers["failed"] else ""))
    return numbers


def explain(results: list[Recognition], target: Path, mu: float | None, max_steps: int, folder: bool = False) -> None:
    """``--explain``: one picture per recognised video (``report.explain``), its thumbnails decoded again at the seconds
    the agent looked at; ``target`` is the PNG itself for a single video, else a folder of ``<file name>.png``."""
    from adaframe.media.probe import probe
    from adaframe.media.reader import VideoReader
    from adaframe.report.explain import first_looks, plot_decision

    ok = [r for r in results if r.error is None]
    single = not folder and len(results) == 1 and target.suffix.lower() == ".png"
    for r in ok:
        path = target if single else target / f"{r.path.stem}.png"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AdaframeError(f"--explain: cannot create {path.parent}: {e.strerror}") from None
        with VideoReader(r.path) as reader:
            thumbnails = reader.read([r.seconds[i] for i in first_looks(r.seconds)], 96)
        plot_decision(r, thumbnails, probe(r.path).duration, path, mu, max_steps)
