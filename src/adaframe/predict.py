"""``adaframe predict``: recognise raw video files, running the big backbone only where the policy looks.

Per group of videos (batched across videos, like evaluation):

1. probe each file; its candidate frames are the ``fps`` grid the features were extracted on;
2. decode the ``Td`` memory frames at low resolution and run the light backbone -> global memory;
3. run the agent (``inference.agent_rollout``, the same code as ``eval``): at every step decode,
   by seeking, only the frame each still-active video asked for and run the big backbone on it;
   a frame seen before is not computed again; a video stops by adaptive lookahead.

Because frames are picked by the same time rule as in extraction and the agent code is shared,
a prediction equals ``eval`` on features extracted offline from the same file (up to float
round-off of batching). ``--compare uniform25`` runs AvgPooling on 25 frames evenly spaced in
time in the same process, so the saving in frames, GFLOPs and wall time is measured, not claimed.
"""

from __future__ import annotations

import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
import tyro

from adaframe.agent import AdaFrame
from adaframe.backbones import extract_features
from adaframe.checkpoint import load_checkpoint
from adaframe.data import memory_subset
from adaframe.evaluate import head_gflops_per_step
from adaframe.extract import build_backbones
from adaframe.inference import StopRule, agent_rollout
from adaframe.utils import AdaframeError, error_line, resolve_device
from adaframe.video import VideoReader, probe, sample_times, uniform_times


@dataclass
class PredictConfig:
    """Recognise video files with a trained AdaFrame run: label, top-5, frames used, GFLOPs, wall time.

    A video that fails (missing, not a video, corrupted, truncated) is reported on stderr while the
    others go on. Exit status: 0 every video recognised, 1 some failed, 2 bad usage (options, run)."""

    videos: tyro.conf.Positional[tuple[Path, ...]]
    """video files"""
    checkpoint: Path
    """AdaFrame run directory trained on features from 'adaframe extract'"""
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
    device: Literal["cpu", "cuda"] = "cpu"

    def __post_init__(self) -> None:
        if not self.videos:
            raise AdaframeError("give at least one video file")
        checks = {"--frames": self.frames is None or self.frames >= 1, "--mu": self.mu is None or self.mu >= 0,
                  "--patience": self.patience >= 1, "--top-k": self.top_k >= 1, "--batch-size": self.batch_size >= 1}
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


def _check_weights_exist(spec: dict, backbone_weights: Path | None, memory_weights: Path | None) -> None:
    """Say that a weights file is missing as such: ``build_backbones`` would only say that the (absent)
    file is not the one the features were made with."""
    for key, what, given in (("backbone", "backbone", backbone_weights), ("memory_backbone", "memory backbone", memory_weights)):
        if given is not None and not Path(given).is_file():
            raise AdaframeError(f"{what} weights {given} do not exist")
        recorded = spec[key]["weights"]
        if given is None and recorded and not Path(recorded).is_file():
            flag = "--backbone-weights" if key == "backbone" else "--memory-weights"
            raise AdaframeError(f"{what} weights {recorded} (as recorded at extraction) do not exist; give {flag} if they moved")


@dataclass
class VideoJob:
    """One video being predicted: its reader, candidate times and the features computed so far."""

    path: Path
    times: np.ndarray  # [T] seconds of the candidate frames (the extraction grid)
    memory_times: np.ndarray  # [Td]
    reader: VideoReader | None = None
    cache: dict[int, torch.Tensor] = field(default_factory=dict)  # frame index -> backbone feature [D]
    error: str | None = None


class Predictor:
    """The backbones and the agent of a run, ready to recognise videos."""

    def __init__(self, checkpoint: str | Path, device: torch.device | str = "cpu", backbone_weights: Path | None = None,
                 memory_weights: Path | None = None):
        self.device = torch.device(device)
        self.model, payload = load_checkpoint(checkpoint, self.device)
        if not isinstance(self.model, AdaFrame):
            raise AdaframeError(f"{checkpoint} holds a {payload['kind']!r} model; predict runs an AdaFrame run "
                                "(give a baseline with --compare-checkpoint)")
        self.spec = payload.get("features")
        if self.spec is None:
            raise AdaframeError(f"{checkpoint} was trained on features not made by 'adaframe extract' (e.g. synthetic ones), "
                                "so there is no backbone to run on video")
        self.classes: list[str] = payload["classes"]
        self.config: dict = payload["config"]
        self.memory_frames = int(payload["dims"].get("memory_frames", self.spec["memory_frames"]))
        _check_weights_exist(self.spec, backbone_weights, memory_weights)
        self.backbone, self.memory_backbone = build_backbones(self.spec, self.device, backbone_weights, memory_weights)
        self.head_gflops = head_gflops_per_step(self.model, self.memory_frames, self.device)
        self._baseline_heads: dict[int, float] = {}

    def open(self, path: Path) -> VideoJob:
        """Probe a video and open it; a bad file gives a job with ``error`` set, never an exception."""
        try:
            info = probe(path)
            stored = uniform_times(info.duration, self.spec["memory_frames"])
            job = VideoJob(path, sample_times(info.duration, self.spec["fps"]), stored[memory_subset(len(stored), self.memory_frames)])
            job.reader = VideoReader(path)
            job.reader.watch(job.times, self.spec["backbone"]["size"])  # the memory pass keeps candidate frames it passes
            return job
        except AdaframeError as e:
            return VideoJob(path, np.zeros(1), np.zeros(0), error=str(e))

    def _decode(self, jobs: list[VideoJob], times: list[np.ndarray], size: int, pool: ThreadPoolExecutor) -> list[np.ndarray | None]:
        """Frames of each job at its times (decoded in parallel threads); a failure marks the job and gives None."""
        def one(job: VideoJob, t: np.ndarray) -> np.ndarray | None:
            if job.error is not None or len(t) == 0:
                return None
            try:
                return np.stack(job.reader.read(t, size))
            except AdaframeError as e:
                job.error = str(e)
                return None
        return list(pool.map(one, jobs, times))

    def _features(self, model: torch.nn.Module, frames: list[np.ndarray | None], rows: int, dim: int) -> torch.Tensor:
        """Backbone features of the decoded frames, zeros for failed jobs: [rows, n, D]."""
        ok = [f for f in frames if f is not None]
        feats = torch.from_numpy(extract_features(model, np.concatenate(ok), device=self.device)) if ok else None
        n = max((len(f) for f in ok), default=0)
        out = torch.zeros(rows, n, dim)
        start = 0
        for r, f in enumerate(frames):
            if f is not None:
                out[r, : len(f)] = feats[start: start + len(f)]
                start += len(f)
        return out.to(self.device)

    @torch.no_grad()
    def predict(self, paths: list[Path], max_steps: int | None = None, mu: float | None = 0.7, patience: int = 1,
                scan: bool = False) -> list[dict]:
        """AdaFrame on a group of videos; one result dict per video (``error`` set for a bad file)."""
        k = int(max_steps or self.config["frames"])
        start = time.perf_counter()
        jobs = [self.open(Path(p)) for p in paths]
        pool = ThreadPoolExecutor(max_workers=min(len(jobs), 8))
        calls = np.zeros(len(jobs), dtype=np.int64)
        try:
            frames = self._decode(jobs, [j.memory_times for j in jobs], self.spec["memory_backbone"]["size"], pool)
            memory = self._features(self.memory_backbone, frames, len(jobs), self.model.cfg.memory_dim)  # [B, Td, Dm]
            if memory.shape[1] != self.memory_frames:  # every video failed
                memory = torch.zeros(len(jobs), self.memory_frames, self.model.cfg.memory_dim, device=self.device)
            lengths = torch.tensor([len(j.times) for j in jobs], device=self.device)

            def frame_fn(rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                need = [(r, i) for r, i in zip(rows.tolist(), idx.tolist()) if i not in jobs[r].cache]
                decoded = self._decode([jobs[r] for r, _ in need], [jobs[r].times[[i]] for r, i in need],
                                       self.spec["backbone"]["size"], pool)
                feats = self._features(self.backbone, decoded, len(need), self.model.cfg.feature_dim)  # [n, 1, D]
                for (r, i), f, d in zip(need, feats, decoded):
                    jobs[r].cache[i] = f[0] if d is not None else torch.zeros(self.model.cfg.feature_dim, device=self.device)
                    calls[r] += d is not None
                return torch.stack([jobs[r].cache[i] for r, i in zip(rows.tolist(), idx.tolist())])  # [A, D]

            out = agent_rollout(self.model, memory, lengths, frame_fn, k, None if mu is None else StopRule("utility", mu, patience), scan)
        finally:
            pool.shutdown()
            for j in jobs:
                if j.reader is not None:
                    j.reader.close()
        wall = time.perf_counter() - start
        results = []
        for r, job in enumerate(jobs):
            res: dict = {"video": str(job.path), "method": f"AdaFrame-{k}" + (f" (mu {mu})" if mu is not None else "")
                         + (" with --scan instead of its policy" if scan else ""),
                         "wall_s": wall, "videos_in_group": len(jobs)}
            if job.error is not None:
                results.append({**res, "error": job.error})
                continue
            steps = int(out["steps"][r])
            visited = out["visited"][r, :steps].tolist()
            distinct = sorted(set(visited))
            gflops = (len(distinct) * self.spec["backbone"]["gflops"] + self.memory_frames * self.spec["memory_backbone"]["gflops"]
                      + steps * self.head_gflops)
            results.append({**res, **self._ranking(out["probs"][r]),
                            "steps": steps, "frames_used": len(distinct), "frame_seconds": [round(float(job.times[i]), 3) for i in visited],
                            "backbone_calls": int(calls[r]), "memory_backbone_calls": self.memory_frames,
                            "frames_decoded": job.reader.decoded, "seeks": job.reader.seeks, "gflops": gflops,
                            "candidate_frames": len(job.times), "utilities": [round(float(u), 4) for u in out["utilities"][r, :steps]]})
        return results

    def _ranking(self, probs: torch.Tensor) -> dict:
        """The label and every class with its probability, most likely first."""
        top = torch.sort(probs, descending=True)
        return {"label": self.classes[int(top.indices[0])],
                "top": [[self.classes[int(i)], round(float(p), 4)] for p, i in zip(top.values, top.indices)]}

    @torch.no_grad()
    def predict_uniform(self, path: Path, frames: int, classifier: torch.nn.Module | None = None) -> dict:
        """The baseline: ``frames`` frames evenly spaced in time, all through the backbone in batches, averaged."""
        start = time.perf_counter()
        res: dict = {"video": str(path), "method": f"AvgPooling uniform{frames}"}
        try:
            info = probe(path)
            with VideoReader(path) as reader:
                times = uniform_times(info.duration, frames)
                decoded = np.stack(reader.read(times, self.spec["backbone"]["size"]))
                n_decoded, seeks = reader.decoded, reader.seeks
        except AdaframeError as e:
            return {**res, "error": str(e), "wall_s": time.perf_counter() - start}
        feats = torch.from_numpy(extract_features(self.backbone, decoded, device=self.device))  # [K, D]
        if classifier is not None:
            res.update(self._ranking(classifier(feats[None].to(self.device), torch.ones(1, frames, dtype=torch.bool, device=self.device))[0]))
        if classifier is not None and id(classifier) not in self._baseline_heads:  # count its FLOPs once, not per video
            self._baseline_heads[id(classifier)] = head_gflops_per_step(classifier, 0, self.device)
        head = self._baseline_heads.get(id(classifier), 0.0)
        return {**res, "steps": frames, "frames_used": frames, "frame_seconds": [round(float(t), 3) for t in times],
                "backbone_calls": frames, "memory_backbone_calls": 0, "frames_decoded": n_decoded, "seeks": seeks,
                "gflops": frames * (self.spec["backbone"]["gflops"] + head), "wall_s": time.perf_counter() - start}


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
    results = predict_files(cfg)
    if any(_failure(r) is not None for r in results):
        sys.exit(1)  # after all output, so a script sees every result and still learns that some failed
    return results


def predict_files(cfg: PredictConfig) -> list[dict]:
    """Recognise ``cfg.videos`` and print the results; a failed video gets ``error`` in its result and a line
    ``adaframe: error: <path>: <reason>`` on stderr, and never stops the others."""
    device = resolve_device(cfg.device)
    predictor = Predictor(cfg.checkpoint, device, cfg.backbone_weights, cfg.memory_weights)
    compare = parse_compare(cfg.compare)
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
    step = 1 if compare is not None else cfg.batch_size  # one video at a time, so wall times compare per video
    for g in range(0, len(cfg.videos), step):
        group = list(cfg.videos[g: g + step])
        for r in predictor.predict(group, cfg.frames, cfg.mu, cfg.patience, cfg.scan):
            r["top"] = r.get("top", [])[: cfg.top_k]
            entry = [r]
            if compare is not None:
                base = predictor.predict_uniform(Path(r["video"]), compare, classifier)
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
