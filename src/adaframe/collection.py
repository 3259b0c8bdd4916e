"""Recognise a whole collection of video files into ``OUT``: resumable, shardable, nothing lost on a kill.

Each finished video writes ``OUT/results/<id>.json`` (atomically: temp file + rename), each failed one
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

import numpy as np
from tqdm import tqdm

from adaframe.metrics import mean_average_precision, top1
from adaframe.recognizer import Recognizer
from adaframe.utils import AdaframeError, atomic_write, error_line, make_dir, write_csv, write_json
from adaframe.video_lists import UNLABELED, VideoEntry

SETTINGS = "predict.json"
COLUMNS = ["video_id", "path", "label", "probability", "top", "frames_used", "steps", "seconds", "gflops", "wall_s",
           "true_label", "correct"]


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

