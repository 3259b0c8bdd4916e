"""Recognise many video files with a ``Recognizer``: a few, printed as they are done (``predict_files``), or a
whole collection into ``OUT``: resumable, shardable, nothing lost on a kill.

In a collection, each finished video writes ``OUT/results/<id>.json`` (atomically: temp file + rename), each failed one
``OUT/failures/<id>.txt``; ``predictions.csv`` and ``failures.csv`` are rebuilt from those files in the
order of the list, so a SIGKILL loses at most the videos in flight and never leaves a torn or
duplicated row, and a rerun skips finished videos and retries failed ones. Shards (``--shard i/n`` or
torchrun ranks) take every n-th video; whichever ends last writes the complete index. ``recognise_on_ray`` runs the
videos on Ray instead (``ray_pipeline``) and writes what comes back with the same ``store``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from adaframe.data.video_lists import UNLABELED, VideoEntry
from adaframe.evaluate.metrics import mean_average_precision, top1
from adaframe.recognize.jobs import CollectionJob
from adaframe.recognize.recognizer import Recognizer
from adaframe.recognize.result import Recognition
from adaframe.recognize.uniform import UniformBaseline
from adaframe.utils import AdaframeError, error_line, write_csv, write_json

SETTINGS = "predict.json"
COLUMNS = ["video_id", "path", "label", "probability", "top", "frames_used", "steps", "seconds", "gflops", "wall_s",
           "frames_decoded", "reading", "true_label", "correct"]


def predict_files(rec: Recognizer, videos: Sequence[Path], baseline: UniformBaseline | None = None, scan: bool = False,
                  top_k: int = 5, as_json: bool = False) -> list[Recognition]:
    """Recognise ``videos`` and print each result as it is done (text, or one JSON object a line); a failed video gets
    ``error`` in its result and a line ``adaframe: error: <path>: <reason>`` on stderr, and never stops the others.

    Args:
        baseline: also run it on each video right after the policy, into the result's ``baseline`` and ``vs_baseline``.
            Give ``rec`` a batch size of 1, so that each wall time is one video's.
        top_k: the classes kept in each result's ``top``.
    """
    results = []
    for group in rec.predict_groups(videos, scan, prefetch=baseline is None):  # wall times compare per video
        for r in group:
            r = r.with_top(top_k)
            if baseline is not None:
                [base] = baseline.predict([r.path])
                r = r.compared_with(base.with_top(top_k))
            results.append(r)
            print(json.dumps(r.to_json()) if as_json else describe(r, rec.features["fps"]))
            if (why := failure(r)) is not None:
                sys.stdout.flush()  # keep the two streams in order where they go to one terminal or file
                print(error_line(why), file=sys.stderr)
    return results


def describe(r: Recognition, fps: float) -> str:
    """A result of ``predict_files`` as the lines ``adaframe predict`` prints: the video, each method, their ratios."""
    lines = [f"{r.path}" + (f"  ({r.candidate_frames} candidate frames at {fps:g} fps)" if r.error is None else "")]
    lines += [_method_text(e) for e in [r] + ([r.baseline] if r.baseline is not None else [])]
    if (v := r.vs_baseline) is not None:
        lines.append(f"  AdaFrame / baseline: backbone calls {v.backbone_calls:.2f}, GFLOPs {v.gflops:.2f}, wall time {v.wall:.2f}")
    return "\n".join(lines)


def _method_text(r: Recognition) -> str:
    if r.error is not None:
        return f"  {r.method}: error: {r.error}"
    label = f"{r.label}  top-{len(r.top)}: " + ", ".join(f"{c} {p:.3f}" for c, p in r.top) if r.label is not None else "(no classifier: cost only)"
    secs = ", ".join(f"{s:g}" for s in r.seconds[:12]) + (" ..." if len(r.seconds) > 12 else "")
    return (f"  {r.method}: {label}\n"
            f"    frames used {r.frames_used} in {r.steps} steps (seconds: {secs}); decoded {r.frames_decoded} ({r.reading}), "
            f"backbone calls {r.backbone_calls} + {r.memory_backbone_calls} memory; {r.gflops:.2f} GFLOPs; wall {r.wall_s:.3f} s")


def failure(r: Recognition) -> str | None:
    """Why the video of ``r`` failed (AdaFrame's error, else its baseline's), as ``<path>: <reason>``; None if it did not."""
    failed = r if r.error is not None else r.baseline if r.baseline is not None and r.baseline.error is not None else None
    if failed is None:
        return None
    reason = failed.error.removeprefix(f"{r.path}: ")  # type: ignore[union-attr]  # the errors of media/ name the file already
    return f"{r.path}: " + ("" if failed is r else f"{failed.method}: ") + reason


def _result_file(out: Path, vid: str) -> Path:
    return out / "results" / f"{vid}.json"


def settings(rec: Recognizer, run: Path) -> dict:
    """What a collection's predictions depend on: a rerun into the same ``--out`` must use the same."""
    return {"run": str(Path(run).resolve()), "frames": rec.frames, "mu": rec.mu, "patience": rec.patience}


def pending(job: CollectionJob) -> list[VideoEntry]:
    """The videos of this process's shard not finished in ``job.out`` (a failed one is tried again)."""
    return [it for it in job.mine if not _result_file(job.out, it.video_id).is_file()]


def store(job: CollectionJob, it: VideoEntry, r: Recognition) -> bool:
    """Write what became of ``it``: its result file (atomically) with its share of its group's time, or its failure;
    True if it was recognised."""
    if r.error is not None:
        job.failed(it, r.error.removeprefix(f"{it.path}: "))  # the errors of media/ name the file already
        return False
    write_json(_result_file(job.out, it.video_id), r.per_video().to_json())
    job.succeeded(it)
    return True


def recognise(rec: Recognizer, job: CollectionJob, scan: bool = False, progress: bool = True) -> dict:
    """Run the videos of this process's shard not finished in ``job.out``, group by group; returns this run's counts."""
    todo = pending(job)
    groups = [todo[g: g + rec.batch_size] for g in range(0, len(todo), rec.batch_size)]
    return _collect(job, todo, zip(groups, rec.predict_groups([it.path for it in todo], scan)), "predict", progress)


def recognise_on_ray(job: CollectionJob, address: str, actors: int, progress: bool = True, **options: Any) -> dict:
    """``recognise`` as a Ray Data pipeline (``ray_pipeline``): the videos not finished go to ``actors`` actors of the
    Ray at ``address`` (``local``: one started for this call), each loading the run with ``options`` (the arguments of
    ``ray_pipeline.recognitions``); this process writes each result as it comes back, as ``recognise`` does, so the
    files are the same. Returns this run's counts."""
    from adaframe.recognize import ray_pipeline

    if job.shards > 1:
        raise AdaframeError("--ray and --shard (or torchrun) both split the work: use one of them")
    todo = pending(job)
    entries = {it.video_id: it for it in todo}
    rows = [{ray_pipeline.KEY: it.video_id, "path": str(it.path)} for it in todo]

    def done() -> Iterator[tuple[list[VideoEntry], list[Recognition]]]:
        worker, kwargs, gpus = ray_pipeline.recognize_stage(**options)
        for row in ray_pipeline.stream(rows, worker, kwargs, actors=actors, batch_size=kwargs["options"]["batch_size"], gpus=gpus):
            it = entries[row[ray_pipeline.KEY]]
            r = ray_pipeline.recognition(row) if row.get("recognition") else Recognition(it.path, "AdaFrame", 0.0, error=row["error"])
            yield [it], [r]

    with ray_pipeline.session(address, actors):
        return _collect(job, todo, done(), f"predict on Ray ({actors} actor{'s' * (actors > 1)})", progress)


def _collect(job: CollectionJob, todo: list[VideoEntry], done: Iterable[tuple[Sequence[VideoEntry], Sequence[Recognition]]],
             desc: str, progress: bool) -> dict:
    """``store`` each group of results of ``done`` as it comes, with a progress bar; this run's counts."""
    failed, start = 0, time.perf_counter()
    (job.out / "results").mkdir(exist_ok=True)
    bar = tqdm(total=len(todo), unit="video", desc=desc, disable=not progress)
    for group, results in done:
        for it, r in zip(group, results):
            failed += not store(job, it, r)
        bar.update(len(group))
        bar.set_postfix(failed=failed)
    bar.close()
    seconds = time.perf_counter() - start
    return {"ran": len(todo), "skipped": len(job.mine) - len(todo), "failed_now": failed, "seconds": seconds,
            "videos_per_s": len(todo) / seconds if seconds > 0 and todo else float("nan")}


def results(job: CollectionJob) -> list[Recognition]:
    """The results of this process's videos finished in ``job.out``, in list order."""
    files = [_result_file(job.out, it.video_id) for it in job.mine]
    return [Recognition.from_json(json.loads(f.read_text())) for f in files if f.is_file()]


def write_index(job: CollectionJob, classes: list[str], top_k: int) -> dict:
    """Rebuild ``predictions.csv`` and ``failures.csv`` from the files in ``job.out``; returns the collection's numbers."""
    rows, scores, labels, frames, gflops = [], [], [], [], []
    for it in job.entries:
        path = _result_file(job.out, it.video_id)
        if not path.is_file():
            continue
        r = Recognition.from_json(json.loads(path.read_text()))
        known = it.label != UNLABELED
        rows.append([it.video_id, str(it.path), r.label, r.probability, " ".join(f"{c}:{p:.4f}" for c, p in r.top[:top_k]),
                     r.frames_used, r.steps, " ".join(f"{s:g}" for s in r.seconds), round(r.gflops, 4),
                     round(r.wall_s, 4), r.frames_decoded, r.reading or "", it.label if known else "", int(r.label == it.label) if known else ""])
        frames.append(r.frames_used)
        gflops.append(r.gflops)
        if known and it.label in classes:
            probs = dict(r.top)  # every class, so AP can rank all videos
            scores.append([probs[c] for c in classes])
            labels.append(classes.index(it.label))
    write_csv(job.out / "predictions.csv", COLUMNS, rows)
    fails = job.write_failures(((it.video_id, str(it.path)) for it in job.entries), lambda vid: _result_file(job.out, vid).is_file())
    numbers = {"videos": len(job.entries), "done": len(rows), "failed": fails, "missing": len(job.entries) - len(rows) - fails,
               "mean_frames": float(np.mean(frames)) if frames else float("nan"),
               "mean_gflops": float(np.mean(gflops)) if gflops else float("nan"), "labelled": len(labels)}
    if labels:
        s, y = np.array(scores), np.array(labels)
        numbers |= {"mAP": 100 * mean_average_precision(s, y), "top1": 100 * top1(s, y)}
    return numbers
