"""Recognise video files with a trained run: the library under ``adaframe predict``.

``Recognizer`` is the public face (typed results, one call per list of files); ``Predictor`` does
the work per group of videos, batched across them:

1. probe each file; its candidate frames are the ``fps`` grid the features were extracted on;
2. decode the ``Td`` memory frames at low resolution and run the light backbone -> global memory;
3. run the agent (``inference.agent_rollout``, the same code as ``eval``): at every step decode,
   by seeking, only the frame each still-active video asked for and run the big backbone on it;
   a frame seen before is not computed again; a video stops by adaptive lookahead.

Because frames are picked by the same time rule as in extraction and the agent code is shared,
a prediction equals ``eval`` on features extracted offline from the same file (up to float
round-off of batching).

Example::

    from adaframe import Recognizer
    rec = Recognizer.from_run("runs/video-demo/runs/adaframe")
    for r in rec.predict(["a.mp4", "b.mkv"]):
        print(r.path, r.error or f"{r.label} {r.top[0][1]:.2f} with {r.frames_used} frames, {r.gflops:.1f} GFLOPs")
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adaframe.agent import AdaFrame
from adaframe.backbones import extract_features
from adaframe.checkpoint import load_checkpoint
from adaframe.data import memory_subset
from adaframe.evaluate import head_gflops_per_step
from adaframe.extract import build_backbones
from adaframe.inference import StopRule, agent_rollout
from adaframe.utils import AdaframeError
from adaframe.video import VideoReader, probe, sample_times, uniform_times


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


@dataclass(frozen=True)
class Recognition:
    """What ``Recognizer.predict`` says of one file. A file that could not be read has ``error`` set,
    ``label`` None and the cost fields at 0; the other files of the call are unaffected.

    Attributes:
        path: the video file.
        label: the most likely class.
        top: every class with its probability, most likely first.
        frames_used: distinct frames the big backbone ran on.
        steps: agent steps taken (a revisited frame costs a step, not a backbone call).
        seconds: the time of each step's frame, in the order looked at.
        gflops: backbone frames + memory frames + the agent's heads, in G multiply-adds.
        frames_decoded: frames the decoder produced (memory pass and policy frames).
        wall_s: seconds for the group of videos this one was run with (decoding included).
        error: why the file failed, or None.
    """

    path: Path
    label: str | None
    top: list[tuple[str, float]]
    frames_used: int
    steps: int
    seconds: list[float]
    gflops: float
    frames_decoded: int
    wall_s: float
    error: str | None = None

    @classmethod
    def from_result(cls, r: dict) -> Recognition:
        """From one of ``Predictor.predict``'s result dicts."""
        return cls(Path(r["video"]), r.get("label"), [(c, p) for c, p in r.get("top", [])], r.get("frames_used", 0),
                   r.get("steps", 0), r.get("frame_seconds", []), r.get("gflops", 0.0), r.get("frames_decoded", 0),
                   r["wall_s"], r.get("error"))


class Recognizer:
    """A trained AdaFrame run, ready to recognise video files (what ``adaframe predict`` runs).

    Args:
        predictor: the run's backbones and agent.
        frames: K, the most steps (None: the K it was trained with).
        mu: adaptive lookahead margin (None: always K steps).
        patience: how many times the utility must drop by ``mu`` before a video stops.
        batch_size: videos decoded and run together.
    """

    def __init__(self, predictor: Predictor, frames: int | None = None, mu: float | None = 0.7, patience: int = 1,
                 batch_size: int = 8):
        if (frames is not None and frames < 1) or (mu is not None and mu < 0) or patience < 1 or batch_size < 1:
            raise AdaframeError("need frames >= 1, mu >= 0, patience >= 1 and batch_size >= 1")
        self.predictor, self.frames, self.mu, self.patience, self.batch_size = predictor, frames, mu, patience, batch_size

    @classmethod
    def from_run(cls, run: str | Path, device: torch.device | str = "cpu", backbone_weights: str | Path | None = None,
                 memory_weights: str | Path | None = None, **options: int | float | None) -> Recognizer:
        """Load an AdaFrame run trained on features from ``adaframe extract`` (its backbones are rebuilt from
        the record of that extraction; ``*_weights`` only if the files moved). ``options``: see the class."""
        as_path = lambda p: None if p is None else Path(p)  # noqa: E731
        return cls(Predictor(run, device, as_path(backbone_weights), as_path(memory_weights)), **options)  # type: ignore[arg-type]

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes

    def predict(self, paths: Sequence[str | Path], scan: bool = False) -> list[Recognition]:
        """One ``Recognition`` per file, in order; bad files get ``error`` instead of raising."""
        return [Recognition.from_result(r) for r in self.predict_raw(paths, scan)]

    def predict_raw(self, paths: Sequence[str | Path], scan: bool = False) -> list[dict]:
        """As ``predict``, as the JSON-ready dicts ``adaframe predict --json`` prints (with backbone calls, seeks,
        utilities). ``scan`` replaces the policy by consecutive frames: a cost check, not AdaFrame's prediction."""
        paths = [Path(p) for p in paths]
        return [r for g in range(0, len(paths), self.batch_size)
                for r in self.predictor.predict(paths[g: g + self.batch_size], self.frames, self.mu, self.patience, scan)]
