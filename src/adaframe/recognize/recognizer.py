"""Recognise video files with a trained AdaFrame run: the library under ``adaframe predict``.

``Recognizer`` runs the ``Networks`` of a run (its checkpoint on PyTorch, ``from_run``, or its export on onnxruntime,
``from_export``) on a list of files, ``batch_size`` at a time, and gives one typed ``result.Recognition`` per file,
in order (a file that cannot be read gets ``error`` set instead of raising). Its ``Decoding`` workers probe each file
and decode its memory frames (``memory_rule``); then ``rollout.rollout`` runs the agent, the workers decoding only the
frame each active video asks for at each step. Frames are picked by the same rules as in extraction and the rollout
is ``eval``'s, so a prediction equals ``eval`` on the file's extracted features (up to float round-off).

Example::

    from adaframe import Recognizer
    with Recognizer.from_run("runs/video-demo/runs/adaframe") as rec:
        for r in rec.predict(["a.mp4", "b.mkv"]):
            print(r.path, r.error or f"{r.label} {r.top[0][1]:.2f} with {r.frames_used} frames, {r.gflops:.1f} GFLOPs")
"""

from __future__ import annotations

import itertools
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adaframe.data.features import memory_subset
from adaframe.media.decode_workers import DecodeWorkers, Failed, Frames, Open, Read
from adaframe.recognize.networks import Networks
from adaframe.recognize.result import Recognition
from adaframe.rl.rollout import Rollout, StopRule, rollout
from adaframe.utils import AdaframeError


@dataclass
class VideoJob:
    """One video being predicted: its candidate times and the features computed so far."""

    key: int  # its name with the decoding workers
    path: Path
    times: np.ndarray = field(default_factory=lambda: np.zeros(1))  # [T] seconds of the candidate frames (the extraction grid)
    duration: float = 0.0
    memory_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [Td]
    memory_decoded: int = 0
    decoded: int = 0
    seeks: int = 0
    reading: str | None = None  # how the file is read (VideoReader.reading)
    cache: dict[int, torch.Tensor] = field(default_factory=dict)  # frame index -> backbone feature [D]
    error: str | None = None


class Decoding:
    """The decoding workers asked for the frames of ``VideoJob``s by the rules of a run's extraction: candidate frames at
    its ``fps``, its memory rule, its backbones' sizes. A failure marks its job (``error``) and never raises.

    Args:
        spec: how the run's features were extracted (``extract.json``).
        memory_frames: the global-memory frames the agent reads (``memory_subset`` of the stored ones).
        workers: decoding processes (0: decode in this process).
    """

    def __init__(self, spec: dict, memory_frames: int, workers: int):
        self.spec, self.memory_frames = spec, memory_frames
        self.workers = DecodeWorkers(workers)
        self._keys = itertools.count()
        weakref.finalize(self, self.workers.close)

    def open(self, paths: list[Path], memory: bool = True) -> list[VideoJob]:
        """Send the ``Open`` requests of a group of videos (answered in ``opened``); without ``memory`` they are only probed."""
        jobs = [VideoJob(next(self._keys), Path(p)) for p in paths]
        stored = int(self.spec["memory_frames"])
        for job in jobs:
            self.workers.submit(job.key, Open(
                job.path, self.spec["fps"], stored if memory else 0, tuple(memory_subset(stored, self.memory_frames).tolist()),
                self.spec["memory_backbone"]["size"], self.spec.get("memory_at") == "keyframe",
                self.spec["backbone"]["size"] if memory else None))
        return jobs

    def opened(self, jobs: list[VideoJob]) -> list[np.ndarray | None]:
        """Wait for the jobs' ``Open`` answers; fills their times; their memory frames (None for a failed job)."""
        out: list[np.ndarray | None] = []
        for job, answer in zip(jobs, self.workers.take([j.key for j in jobs])):
            if isinstance(answer, Failed):
                job.error = answer.error
                out.append(None)
                continue
            job.times, job.duration, job.memory_seconds = answer.times, answer.duration, answer.memory_seconds
            job.memory_decoded = job.decoded = answer.memory_decoded
            job.reading = answer.reading
            out.append(answer.memory)
        return out

    def ask(self, jobs: list[VideoJob], times: list[np.ndarray]) -> list[VideoJob]:
        """Send each job's ``Read`` of its times at the backbone's size (answered in ``frames``); returns the jobs asked."""
        asked = []
        for job, t in zip(jobs, times):
            if job.error is None and len(t):
                self.workers.submit(job.key, Read(tuple(float(x) for x in t), self.spec["backbone"]["size"]))
                asked.append(job)
        return asked

    def frames(self, jobs: list[VideoJob], asked: list[VideoJob]) -> list[np.ndarray | None]:
        """Wait for the frames ``ask`` asked for: [n, S, S, 3] uint8 per job, None for a job not asked or failed."""
        answers = dict(zip([id(j) for j in asked], self.workers.take([j.key for j in asked])))
        out: list[np.ndarray | None] = []
        for job in jobs:
            answer = answers.get(id(job))
            if isinstance(answer, Failed):
                job.error = answer.error
            if isinstance(answer, Frames):
                job.decoded, job.seeks = answer.decoded, answer.seeks
            out.append(answer.frames if isinstance(answer, Frames) else None)
        return out

    def close(self, jobs: list[VideoJob]) -> None:
        """Forget the jobs' videos in the workers."""
        for job in jobs:
            self.workers.submit(job.key, None)


class Recognizer:
    """A trained AdaFrame run, ready to recognise video files (what ``adaframe predict`` runs).

    Decoding runs in ``workers`` processes started on the first call and kept until ``close`` (or
    the end of a ``with`` block, or of the program).

    Args:
        networks: the run's agent and backbones (``Networks.from_run`` or ``Networks.from_export``).
        workers: decoding processes (0: decode in this process).
        frames: K, the most steps (None: the K it was trained with).
        mu: adaptive lookahead margin (None: always K steps).
        patience: how many times the utility must drop by ``mu`` before a video stops.
        batch_size: videos run together through the backbones and the agent.
    """

    def __init__(self, networks: Networks, workers: int = 2, frames: int | None = None, mu: float | None = 0.7,
                 patience: int = 1, batch_size: int = 8):
        if (frames is not None and frames < 1) or (mu is not None and mu < 0) or patience < 1 or batch_size < 1:
            raise AdaframeError("need frames >= 1, mu >= 0, patience >= 1 and batch_size >= 1")
        self.networks, self.frames, self.mu, self.patience, self.batch_size = networks, frames, mu, patience, batch_size
        self.decoding = Decoding(networks.spec, networks.memory_frames, workers)

    @classmethod
    def from_run(cls, run: str | Path, device: torch.device | str = "cpu", backbone_weights: str | Path | None = None,
                 memory_weights: str | Path | None = None, workers: int = 2, **options: int | float | None) -> Recognizer:
        """Load an AdaFrame run trained on features from ``adaframe extract`` (its backbones are rebuilt from
        the record of that extraction; ``*_weights`` only if the files moved). ``workers`` and ``options``: see the class."""
        as_path = lambda p: None if p is None else Path(p)  # noqa: E731
        return cls(Networks.from_run(run, device, as_path(backbone_weights), as_path(memory_weights)), workers, **options)  # type: ignore[arg-type]

    @classmethod
    def from_export(cls, folder: str | Path, device: torch.device | str = "cpu", workers: int = 2,
                    **options: int | float | None) -> Recognizer:
        """Load a run exported by ``adaframe export``: the same rollout, its networks on onnxruntime (the same frames
        visited and probabilities within 1e-4 of ``from_run``'s). ``workers`` and ``options``: see the class."""
        return cls(Networks.from_export(folder, device), workers, **options)  # type: ignore[arg-type]

    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the decoding workers (a later call starts them again)."""
        self.decoding.workers.close()

    @property
    def classes(self) -> list[str]:
        return self.networks.classes

    @property
    def memory_frames(self) -> int:
        """Global-memory frames the agent reads."""
        return self.networks.memory_frames

    @property
    def trained_frames(self) -> int:
        """The K the run was trained with (the most steps when ``frames`` is None)."""
        return self.networks.trained_frames

    @property
    def runtime(self) -> str:
        """What runs the networks: "PyTorch" (``from_run``) or "onnxruntime" (``from_export``)."""
        return self.networks.runtime

    @property
    def features(self) -> dict:
        """How the run's features were extracted (``extract.json``: backbones, sizes, ``fps``, GFLOPs)."""
        return self.networks.spec

    def predict(self, paths: Sequence[str | Path], scan: bool = False) -> list[Recognition]:
        """One ``Recognition`` per file, in order; bad files get ``error`` instead of raising. ``scan`` replaces the
        policy by consecutive frames: a cost check, not AdaFrame's prediction."""
        return [r for group in self.predict_groups(paths, scan) for r in group]

    def predict_groups(self, paths: Sequence[str | Path], scan: bool = False, prefetch: bool = True) -> Iterator[list[Recognition]]:
        """As ``predict``, yielding the results of each ``batch_size`` videos, batched together, as soon as they are done.

        With ``prefetch`` the next group's videos are opened (probed, memory decoded) by the workers while
        this group runs; without, each group's wall time includes its whole decoding (for a fair comparison).
        """
        videos = [Path(p) for p in paths]
        groups = [videos[g: g + self.batch_size] for g in range(0, len(videos), self.batch_size)]
        jobs: list[VideoJob] = []
        ahead: list[VideoJob] = []
        try:
            for g, group in enumerate(groups):
                jobs = ahead or self.decoding.open(group)
                ahead = self.decoding.open(groups[g + 1]) if prefetch and g + 1 < len(groups) else []
                results = self._predict_group(jobs, scan)
                self.decoding.close(jobs)
                jobs = []
                yield results
        finally:  # also when the consumer stops early or a group raises: nothing stays open in the workers
            if ahead:
                self.decoding.opened(ahead)
            self.decoding.close(jobs + ahead)

    @torch.no_grad()
    def _predict_group(self, jobs: list[VideoJob], scan: bool) -> list[Recognition]:
        """The rollout on one group of opened videos, each frame decoded and run through the backbone when first asked for."""
        nets, k = self.networks, int(self.frames or self.networks.trained_frames)
        start = time.perf_counter()
        calls = np.zeros(len(jobs), dtype=np.int64)
        frames = self.decoding.opened(jobs)
        memory = nets.features(frames, memory=True)  # [B, Td, Dm]
        memory_calls = np.array([0 if f is None else len(f) for f in frames])
        if memory.shape[1] != nets.memory_frames:  # every video failed
            memory = torch.zeros(len(jobs), nets.memory_frames, nets.agent.cfg.memory_dim, device=nets.device)
        lengths = torch.tensor([len(j.times) for j in jobs], device=nets.device)

        def frame_fn(rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            need = [(r, i) for r, i in zip(rows.tolist(), idx.tolist()) if i not in jobs[r].cache]
            asked = [jobs[r] for r, _ in need]
            decoded = self.decoding.frames(asked, self.decoding.ask(asked, [jobs[r].times[[i]] for r, i in need]))
            feats = nets.features(decoded)  # [n, 1, D]
            for (r, i), f, d in zip(need, feats, decoded):
                jobs[r].cache[i] = f[0] if d is not None else torch.zeros(nets.agent.cfg.feature_dim, device=nets.device)
                calls[r] += d is not None
            return torch.stack([jobs[r].cache[i] for r, i in zip(rows.tolist(), idx.tolist())])  # [A, D]

        stop = None if self.mu is None else StopRule("utility", self.mu, self.patience)
        out = rollout(nets.agent, memory, lengths, frame_fn, k, stop=stop, scan=scan)
        return self._results(jobs, out, k, scan, time.perf_counter() - start, calls, memory_calls)

    def _results(self, jobs: list[VideoJob], out: Rollout, k: int, scan: bool, wall: float, calls: np.ndarray,
                 memory_calls: np.ndarray) -> list[Recognition]:
        """Each job's ``Recognition`` from its row of the rollout ``out``; ``calls``, ``memory_calls``: [B] frames each
        backbone ran on."""
        method = f"AdaFrame-{k}" + (f" (mu {self.mu})" if self.mu is not None else "") + (" with --scan instead of its policy" if scan else
                 " by the uniform scan (training found that its policy added nothing on val)" if self.networks.agent.cfg.inference == "scan" else "")
        results = []
        for r, job in enumerate(jobs):
            if job.error is not None:
                results.append(Recognition(job.path, method, wall, len(jobs), error=job.error))
                continue
            steps = int(out.steps[r])
            visited = out.indices[r, :steps].tolist()
            frames_used = len(set(visited))
            p, c = torch.softmax(out.logits[r, :steps], -1).max(-1)  # [steps]: the most likely class after each step
            results.append(Recognition(
                job.path, method, wall, len(jobs), *ranking(out.probs[r], self.classes), steps=steps, frames_used=frames_used,
                seconds=tuple(round(float(job.times[i]), 3) for i in visited), backbone_calls=int(calls[r]),
                memory_backbone_calls=int(memory_calls[r]), frames_decoded=job.decoded, seeks=job.seeks, reading=job.reading,
                gflops=float(self.networks.cost.per_video(frames_used, steps, self.memory_frames)),
                memory_seconds=tuple(round(float(t), 3) for t in job.memory_seconds), memory_frames_decoded=job.memory_decoded,
                candidate_frames=len(job.times), utilities=tuple(round(float(u), 4) for u in out.utilities[r, :steps]),
                step_top=tuple((self.classes[int(i)], round(float(q), 4)) for q, i in zip(p, c)), probs=tuple(out.probs[r].tolist())))
        return results


def ranking(probs: torch.Tensor, classes: list[str]) -> tuple[str, tuple[tuple[str, float], ...]]:
    """probs [C] -> the label and every class with its probability (to 4 decimals), most likely first."""
    top = torch.sort(probs, descending=True)
    return classes[int(top.indices[0])], tuple((classes[int(i)], round(float(p), 4)) for p, i in zip(top.values, top.indices))
