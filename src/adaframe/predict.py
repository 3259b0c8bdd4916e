"""``adaframe predict``: recognise raw video files, running the big backbone only where the policy looks.

The work is ``recognizer.Recognizer`` (also the Python API); this module is the command: options,
printing, the exit status, and ``--compare uniform25``, which runs AvgPooling on 25 frames evenly
spaced in time in the same process, so the saving in frames, GFLOPs and wall time is measured,
not claimed.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from adaframe import collection
from adaframe.registry import load_checkpoint
from adaframe.recognizer import Recognizer
from adaframe.utils import AdaframeError, error_line, resolve_device

@dataclass
class PredictConfig:
    """Recognise video files with a trained AdaFrame run: label, top-5, frames used, GFLOPs, wall time.

    A video that fails (missing, not a video, corrupted, truncated) is reported on stderr while the
    others go on. Exit status: 0 every video recognised, 1 some failed, 2 bad usage (options, run)."""

    checkpoint: Path
    """AdaFrame run directory trained on features from 'adaframe extract'"""
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
    top_k: int = 5
    json: bool = False
    """print one JSON object per video instead of text"""
    batch_size: int = 8
    """videos run together"""
    workers: int = 2
    """decoding processes, overlapped with the backbones and the agent (0: decode in the main process)"""
    device: Literal["cpu", "cuda"] = "cpu"

    progress: bool = True

    def __post_init__(self) -> None:
        if bool(self.videos) == (self.collection is not None):
            raise AdaframeError("give video files, or a collection with --videos DIR|LIST|JSON --out OUT (not both)")
        if (self.collection is None) != (self.out is None) or (self.collection is None and (self.shard or self.video_root)):
            raise AdaframeError("--videos, --out, --shard and --video-root go together: --videos SRC --out OUT")
        checks = {"--frames": self.frames is None or self.frames >= 1, "--mu": self.mu is None or self.mu >= 0,
                  "--patience": self.patience >= 1, "--top-k": self.top_k >= 1, "--batch-size": self.batch_size >= 1,
                  "--workers": self.workers >= 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise AdaframeError(f"invalid value for {', '.join(bad)}")
        parse_compare(self.compare)


def parse_compare(spec: str | None) -> int | None:
    if spec is None:
        return None
    m = re.fullmatch(r"uniform(\d+)", spec)
    if not m or int(m[1]) < 1:
        raise AdaframeError(f"--compare {spec!r}: expected uniformK, e.g. uniform25")
    return int(m[1])


def _text(r: dict) -> str:
    if "error" in r:
        return f"  {r['method']}: error: {r['error']}"
    label = f"{r['label']}  top-{len(r['top'])}: " + ", ".join(f"{c} {p:.3f}" for c, p in r["top"]) if "label" in r else "(no classifier: cost only)"
    secs = ", ".join(f"{s:g}" for s in r["frame_seconds"][:12]) + (" ..." if len(r["frame_seconds"]) > 12 else "")
    return (f"  {r['method']}: {label}\n"
            f"    frames used {r['frames_used']} in {r['steps']} steps (seconds: {secs}); decoded {r['frames_decoded']}, "
            f"backbone calls {r['backbone_calls']} + {r['memory_backbone_calls']} memory; {r['gflops']:.2f} GFLOPs; wall {r['wall_s']:.3f} s")


def _failure(r: dict) -> str | None:
    """Why the video of result ``r`` failed (AdaFrame's error, else its baseline's), as ``<path>: <reason>``; None if it did not."""
    base = r.get("baseline", {})
    failed = r if "error" in r else base if "error" in base else None
    if failed is None:
        return None
    reason = failed["error"].removeprefix(f"{r['video']}: ")  # the errors of video.py name the file already
    return f"{r['video']}: " + ("" if failed is r else f"{failed['method']}: ") + reason


def run_predict(cfg: PredictConfig) -> list[dict]:
    """The ``adaframe predict`` command: ``predict_files``, then exit status 1 if any video failed.

    Exit status: 0 every video recognised, 1 some failed (each named on stderr, the others' results
    printed as usual), 2 bad usage (an AdaframeError raised before any video, printed by the CLI).
    """
    if cfg.collection is not None:
        if predict_collection(cfg)["failed"]:
            sys.exit(1)
        return []
    results = predict_files(cfg)
    if any(_failure(r) is not None for r in results):
        sys.exit(1)  # after all output, so a script sees every result and still learns that some failed
    return results


def predict_files(cfg: PredictConfig) -> list[dict]:
    """Recognise ``cfg.videos`` and print the results; a failed video gets ``error`` in its result and a line
    ``adaframe: error: <path>: <reason>`` on stderr, and never stops the others."""
    device = resolve_device(cfg.device)
    compare = parse_compare(cfg.compare)
    rec = Recognizer.from_run(cfg.checkpoint, device, cfg.backbone_weights, cfg.memory_weights, cfg.workers, frames=cfg.frames,
                              mu=cfg.mu, patience=cfg.patience, batch_size=1 if compare is not None else cfg.batch_size)
    predictor = rec.predictor
    classifier = None
    if cfg.compare_checkpoint is not None:
        if compare is None:
            raise AdaframeError("--compare-checkpoint needs --compare uniformK")
        classifier, payload = load_checkpoint(cfg.compare_checkpoint, device)
        if payload["kind"] != "avgpool":
            raise AdaframeError(f"--compare-checkpoint {cfg.compare_checkpoint} holds a {payload['kind']!r} model, expected avgpool")
        if payload["classes"] != predictor.classes or payload.get("features") != predictor.spec:
            raise AdaframeError(f"--compare-checkpoint {cfg.compare_checkpoint} was trained on other classes or features than {cfg.checkpoint}")
    results = []
    for group in rec.predict_groups(cfg.videos, cfg.scan, prefetch=compare is None):  # wall times compare per video
        for r in group:
            r["top"] = r.get("top", [])[: cfg.top_k]
            entry = [r]
            if compare is not None:
                [base] = predictor.predict_uniform([Path(r["video"])], compare, classifier)
                base["top"] = base.get("top", [])[: cfg.top_k]
                entry.append(base)
                if "error" not in r and "error" not in base:
                    r["vs_baseline"] = {"gflops_ratio": r["gflops"] / base["gflops"], "wall_ratio": r["wall_s"] / base["wall_s"],
                                        "backbone_calls_ratio": r["backbone_calls"] / base["backbone_calls"]}
                r["baseline"] = base
            results.append(r)
            if cfg.json:
                print(json.dumps(r))
            else:
                print(f"{r['video']}" + (f"  ({r['candidate_frames']} candidate frames at {predictor.spec['fps']:g} fps)" if "error" not in r else ""))
                for e in entry:
                    print(_text(e))
                if "vs_baseline" in r:
                    v = r["vs_baseline"]
                    print(f"  AdaFrame / baseline: backbone calls {v['backbone_calls_ratio']:.2f}, GFLOPs {v['gflops_ratio']:.2f}, "
                          f"wall time {v['wall_ratio']:.2f}")
            if (why := _failure(r)) is not None:
                sys.stdout.flush()  # keep the two streams in order where they go to one terminal or file
                print(error_line(why), file=sys.stderr)
    return results


def predict_collection(cfg: PredictConfig) -> dict:
    """``predict --videos SRC --out OUT``: every video of a collection into ``OUT/predictions.csv`` (see ``collection``);
    prints one summary line and returns the collection's numbers."""
    from adaframe import distributed
    from adaframe.video_lists import parse_shard, read_video_list  # the inputs 'extract' takes, read the same way

    items = read_video_list(cfg.collection, cfg.video_root)
    ranks, device = distributed.start(resolve_device(cfg.device))
    if ranks.world > 1 and cfg.shard is not None:
        raise AdaframeError("--shard and torchrun both split the work: use one of them")
    shard, shards = parse_shard(cfg.shard) if ranks.world == 1 else (ranks.rank, ranks.world)
    rec = Recognizer.from_run(cfg.checkpoint, device, cfg.backbone_weights, cfg.memory_weights, cfg.workers, frames=cfg.frames,
                              mu=cfg.mu, patience=cfg.patience, batch_size=cfg.batch_size)
    collection.prepare(cfg.out, rec, cfg.checkpoint)
    ran = collection.recognise(rec, items[shard::shards], cfg.out, cfg.scan, cfg.progress)
    distributed.barrier(ranks)
    numbers = collection.write_index(cfg.out, items, rec.classes, cfg.top_k)
    distributed.stop()
    line = (f"{numbers['videos']} videos: {numbers['done']} recognised ({ran['ran'] - ran['failed_now']} now, {ran['skipped']} "
            f"already done), {numbers['failed']} failed, {numbers['missing']} left to other shards; {ran['videos_per_s']:.2f} videos/s; "
            f"mean {numbers['mean_frames']:.2f} frames, {numbers['mean_gflops']:.2f} GFLOPs")
    if (k := parse_compare(cfg.compare)) is not None:
        uniform = k * rec.predictor.spec["backbone"]["gflops"]
        line += f" (uniform{k}: {uniform:.2f} GFLOPs of backbone alone, ratio {numbers['mean_gflops'] / uniform:.2f})"
    if "mAP" in numbers:
        line += f"; mAP {numbers['mAP']:.2f}, top-1 {numbers['top1']:.2f} over {numbers['labelled']} labelled videos"
    print(line + f". Wrote {cfg.out / 'predictions.csv'}" + (f" and {cfg.out / 'failures.csv'}" if numbers["failed"] else ""))
    return numbers
