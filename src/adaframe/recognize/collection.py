"""Recognise many video files with a ``Recognizer``: a few, printed as they are done (``predict_files``), or a
whole collection into ``OUT``: resumable, shardable, nothing lost on a kill.

In a collection, each finished video writes ``OUT/results/<id>.json`` (atomically: temp file + rename), each failed one
``OUT/failures/<id>.txt``; ``predictions.csv`` and ``failures.csv`` are rebuilt from those files in the
order of the list, so a SIGKILL loses at most the videos in flight and never leaves a torn or
duplicated row, and a rerun skips finished videos and retries failed ones. Shards (``--shard i/n`` or
torchrun ranks) take every n-th video; whichever ends last writes the complete index.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from adaframe.data.video_lists import UNLABELED, VideoEntry
from adaframe.evaluate.metrics import mean_average_precision, top1
from adaframe.recognize.recognizer import Recognizer
from adaframe.models.kinds import load_checkpoint
from adaframe.utils import AdaframeError, atomic_write, error_line, make_dir, write_csv, write_json

SETTINGS = "predict.json"
COLUMNS = ["video_id", "path", "label", "probability", "top", "frames_used", "steps", "seconds", "gflops", "wall_s",
           "true_label", "correct"]


def load_baseline(path: Path, device: torch.device, rec: Recognizer, run: Path) -> nn.Module:
    """The AvgPooling run at ``path`` that ``predict_files`` runs beside the policy of ``run``; refused unless
    trained on the same classes and features."""
    classifier, payload = load_checkpoint(path, device)
    if payload["kind"] != "avgpool":
        raise AdaframeError(f"--compare-checkpoint {path} holds a {payload['kind']!r} model, expected avgpool")
    if payload["classes"] != rec.classes or payload.get("features") != rec.predictor.spec:
        raise AdaframeError(f"--compare-checkpoint {path} was trained on other classes or features than {run}")
    return classifier


def predict_files(rec: Recognizer, videos: Sequence[Path], compare: int | None = None, classifier: nn.Module | None = None,
                  scan: bool = False, top_k: int = 5, as_json: bool = False) -> list[dict]:
    """Recognise ``videos`` and print each result as it is done (text, or one JSON object a line); a failed video gets
    ``error`` in its result and a line ``adaframe: error: <path>: <reason>`` on stderr, and never stops the others.

    Args:
        compare: also run AvgPooling over this many frames evenly spaced in time (``classifier``: its weights; None:
            cost only) on each video right after the policy, into ``baseline`` and ``vs_baseline``. Give ``rec`` a
            batch size of 1, so that each wall time is one video's.
        top_k: the classes kept in each result's ``top``.
    """
    results = []
    for group in rec.predict_groups(videos, scan, prefetch=compare is None):  # wall times compare per video
        for r in group:
            r["top"] = r.get("top", [])[:top_k]
            if compare is not None:
                [base] = rec.predictor.predict_uniform([Path(r["video"])], compare, classifier)
                _add_baseline(r, base, top_k)
            results.append(r)
            print(json.dumps(r) if as_json else describe(r, rec.predictor.spec["fps"]))
            if (why := failure(r)) is not None:
                sys.stdout.flush()  # keep the two streams in order where they go to one terminal or file
                print(error_line(why), file=sys.stderr)
    return results


def _add_baseline(r: dict, base: dict, top_k: int) -> None:
    base["top"] = base.get("top", [])[:top_k]
    if "error" not in r and "error" not in base:
        r["vs_baseline"] = {"gflops_ratio": r["gflops"] / base["gflops"], "wall_ratio": r["wall_s"] / base["wall_s"],
                            "backbone_calls_ratio": r["backbone_calls"] / base["backbone_calls"]}
    r["baseline"] = base


def describe(r: dict, fps: float) -> str:
    """A result of ``predict_files`` as the lines ``adaframe predict`` prints: the video, each method, their ratios."""
    lines = [f"{r['video']}" + (f"  ({r['candidate_frames']} candidate frames at {fps:g} fps)" if "error" not in r else "")]
    lines += [_method_text(e) for e in [r] + ([r["baseline"]] if "baseline" in r else [])]
    if "vs_baseline" in r:
        v = r["vs_baseline"]
        lines.append(f"  AdaFrame / baseline: backbone calls {v['backbone_calls_ratio']:.2f}, GFLOPs {v['gflops_ratio']:.2f}, "
                     f"wall time {v['wall_ratio']:.2f}")
    return "\n".join(lines)


def _method_text(r: dict) -> str:
    if "error" in r:
        return f"  {r['method']}: error: {r['error']}"
    label = f"{r['label']}  top-{len(r['top'])}: " + ", ".join(f"{c} {p:.3f}" for c, p in r["top"]) if "label" in r else "(no classifier: cost only)"
    secs = ", ".join(f"{s:g}" for s in r["frame_seconds"][:12]) + (" ..." if len(r["frame_seconds"]) > 12 else "")
    return (f"  {r['method']}: {label}\n"
            f"    frames used {r['frames_used']} in {r['steps']} steps (seconds: {secs}); decoded {r['frames_decoded']}, "
            f"backbone calls {r['backbone_calls']} + {r['memory_backbone_calls']} memory; {r['gflops']:.2f} GFLOPs; wall {r['wall_s']:.3f} s")


def failure(r: dict) -> str | None:
    """Why the video of result ``r`` failed (AdaFrame's error, else its baseline's), as ``<path>: <reason>``; None if it did not."""
    base = r.get("baseline", {})
    failed = r if "error" in r else base if "error" in base else None
    if failed is None:
        return None
    reason = failed["error"].removeprefix(f"{r['video']}: ")  # the errors of video.py name the file already
    return f"{r['video']}: " + ("" if failed is r else f"{failed['method']}: ") + reason


def _result_file(out: Path, vid: str) -> Path:
    return out / "results" / f"{vid}.json"


def _settings(rec: Recognizer, run: Path) -> dict:
    return {"run": str(Path(run).resolve()), "frames": rec.frames, "mu": rec.mu, "patience": rec.patience}


def prepare(out: Path, rec: Recognizer, run: Path) -> None:
    """Create ``out`` and refuse one that holds predictions made with another run or other settings."""
    try:
        make_dir(out / "results")
        make_dir(out / "failures")
    except OSError as e:
        raise AdaframeError(f"cannot create --out {out}: {e.strerror}") from None
    settings, old = _settings(rec, run), out / SETTINGS
    if old.is_file() and json.loads(old.read_text()) != settings:
        raise AdaframeError(f"{out} holds predictions made with other settings ({old}); use another --out or the same settings")
    write_json(old, settings)


def recognise(rec: Recognizer, items: list[VideoEntry], out: Path, scan: bool = False, progress: bool = True) -> dict:
    """Run the videos of ``items`` not finished in ``out``, group by group; returns this run's counts."""
    todo = [it for it in items if not _result_file(out, it.video_id).is_file()]
    failed, start = 0, time.perf_counter()
    bar = tqdm(total=len(todo), unit="video", desc="predict", disable=not progress)
    groups = [todo[g: g + rec.batch_size] for g in range(0, len(todo), rec.batch_size)]
    for group, results in zip(groups, rec.predict_groups([it.path for it in todo], scan)):
        for it, r in zip(group, results):
            failure = out / "failures" / f"{it.video_id}.txt"
            if "error" in r:
                failed += 1
                reason = r["error"].removeprefix(f"{it.path}: ")  # the errors of video.py name the file already
                atomic_write(failure, lambda p, reason=reason: p.write_text(reason + "\n"))
                tqdm.write(error_line(f"{it.path}: {reason}"), file=sys.stderr)
                continue
            r["wall_s"] = r["wall_s"] / r["videos_in_group"]  # this video's share of its group's time
            write_json(_result_file(out, it.video_id), r)
            failure.unlink(missing_ok=True)
        bar.update(len(group))
        bar.set_postfix(failed=failed)
    bar.close()
    seconds = time.perf_counter() - start
    return {"ran": len(todo), "skipped": len(items) - len(todo), "failed_now": failed, "seconds": seconds,
            "videos_per_s": len(todo) / seconds if seconds > 0 and todo else float("nan")}


def write_index(out: Path, items: list[VideoEntry], classes: list[str], top_k: int) -> dict:
    """Rebuild ``predictions.csv`` and ``failures.csv`` from the files in ``out``; returns the collection's numbers."""
    rows, fails, scores, labels, frames, gflops = [], [], [], [], [], []
    for it in items:
        path = _result_file(out, it.video_id)
        if path.is_file():
            r = json.loads(path.read_text())
            known = it.label != UNLABELED
            rows.append([it.video_id, str(it.path), r["label"], r["top"][0][1], " ".join(f"{c}:{p:.4f}" for c, p in r["top"][:top_k]),
                         r["frames_used"], r["steps"], " ".join(f"{s:g}" for s in r["frame_seconds"]), round(r["gflops"], 4),
                         round(r["wall_s"], 4), it.label if known else "", int(r["label"] == it.label) if known else ""])
            frames.append(r["frames_used"])
            gflops.append(r["gflops"])
            if known and it.label in classes:
                probs = dict((c, p) for c, p in r["top"])  # every class, so AP can rank all videos
                scores.append([probs[c] for c in classes])
                labels.append(classes.index(it.label))
        elif (out / "failures" / f"{it.video_id}.txt").is_file():
            fails.append([it.video_id, str(it.path), (out / "failures" / f"{it.video_id}.txt").read_text().strip()])
    write_csv(out / "predictions.csv", COLUMNS, rows)
    write_csv(out / "failures.csv", ["video_id", "path", "reason"], fails)
    numbers = {"videos": len(items), "done": len(rows), "failed": len(fails), "missing": len(items) - len(rows) - len(fails),
               "mean_frames": float(np.mean(frames)) if frames else float("nan"),
               "mean_gflops": float(np.mean(gflops)) if gflops else float("nan"), "labelled": len(labels)}
    if labels:
        s, y = np.array(scores), np.array(labels)
        numbers |= {"mAP": 100 * mean_average_precision(s, y), "top1": 100 * top1(s, y)}
    return numbers

