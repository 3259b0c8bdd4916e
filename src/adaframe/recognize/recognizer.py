"""Recognise video files with a trained run: the library under ``adaframe predict``.

``Recognizer`` is the public face (one call per list of files, a typed ``result.Recognition`` per file);
``Predictor`` does the work per group of videos with the ``Networks`` of a run (its checkpoint on PyTorch,
``from_run``, or its export on onnxruntime, ``from_export``): decoding workers (``decode_workers``) probe each file and
decode its memory frames (``memory_rule``), then ``rollout.rollout`` runs the agent, the workers decoding only the
frame each active video asks for at each step. Frames are picked by the same rules as in extraction and the rollout
is ``eval``'s, so a prediction equals ``eval`` on the file's extracted features (up to float round-off).

Example::

    from adaframe import Recognizer
    with Recognizer.from_run("runs/video-demo/runs/adaframe") as rec:
        for r in rec.predict(["a.mp4", "b.mkv"]):
            print(r.path, r.error or f"{r.label} {r.top[0][1]:.2f} with {r.frames_used} frames, {r.gflops:.1f} GFLOPs")
"""

from __future__ import annotations

import functools
import itertools
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from adaframe.data.features import memory_subset, uniform_frames
from adaframe.evaluate.metrics import CostModel
from adaframe.evaluate.run import head_gflops_per_step
from adaframe.media.backbones import build_backbones, extract_features
from adaframe.media.decode_workers import DecodeWorkers, Failed, Frames, Open, Read
from adaframe.models.agent import AdaFrame
from adaframe.models.baselines import Baseline
from adaframe.models.kinds import load_checkpoint
from adaframe.recognize.result import Recognition
from adaframe.rl.rollout import StopRule, rollout
from adaframe.utils import AdaframeError


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


@dataclass
class Networks:
    """What a ``Predictor`` runs, with what it was trained on: from a run's checkpoint (``from_run``, PyTorch) or from
    its export (``from_export``, onnxruntime: ``recognize.exported``)."""

    agent: AdaFrame
    backbone: Callable[[np.ndarray], np.ndarray]  # uint8 RGB frames [N, S, S, 3] -> features [N, D]
    memory_backbone: Callable[[np.ndarray], np.ndarray]  # the same at the memory's size -> [N, Dm]
    classes: list[str]
    trained_frames: int  # the K it was trained with
    spec: dict  # how its features were extracted (extract.json)
    memory_frames: int  # global-memory frames the agent reads
    head_gflops: float  # one step of the agent on top of the backbone
    source: Path  # the run or export folder
    runtime: str  # "PyTorch" or "onnxruntime"
    device: torch.device  # where the rollout's tensors live
    torch_backbones: tuple[torch.nn.Module, torch.nn.Module] | None = None  # the modules behind ``backbone`` (PyTorch)

    @classmethod
    def from_run(cls, checkpoint: str | Path, device: torch.device | str = "cpu", backbone_weights: Path | None = None,
                 memory_weights: Path | None = None) -> Networks:
        """An AdaFrame run trained on features from ``adaframe extract``, its backbones rebuilt from that record."""
        device = torch.device(device)
        model, payload = load_checkpoint(checkpoint, device)
        if payload["kind"] != "adaframe":
            raise AdaframeError(f"{checkpoint} holds a {payload['kind']!r} model; predict and export take an AdaFrame run "
                                "(give a baseline with --compare-checkpoint)")
        spec = payload.get("features")
        if spec is None:
            raise AdaframeError(f"{checkpoint} was trained on features not made by 'adaframe extract' (e.g. synthetic ones), "
                                "so there is no backbone to run on video")
        memory_frames = int(payload["memory_frames"] if payload["memory_frames"] is not None else spec["memory_frames"])
        _check_weights_exist(spec, backbone_weights, memory_weights)
        backbone, memory_backbone = build_backbones(spec, device, backbone_weights, memory_weights)
        return cls(model, functools.partial(extract_features, backbone, device=device),
                   functools.partial(extract_features, memory_backbone, device=device), payload["classes"],
                   int(payload["config"]["frames"]), spec, memory_frames,
                   head_gflops_per_step(model, memory_frames, device, int(payload["config"]["frames"])),
                   Path(checkpoint), "PyTorch", device, (backbone, memory_backbone))

    @classmethod
    def from_export(cls, folder: str | Path, device: torch.device | str = "cpu") -> Networks:
        """An export of such a run (``adaframe export``) on onnxruntime; the rollout's tensors stay on the CPU."""
        from adaframe.recognize.exported import load_export

        manifest, agent, backbone, memory_backbone = load_export(folder, device)
        return cls(agent, backbone, memory_backbone, list(manifest["classes"]), int(manifest["frames"]), manifest["features"],
                   int(manifest["memory_frames"]), float(manifest["head_gflops"]), Path(folder), "onnxruntime", torch.device("cpu"))


class Predictor:
    """The backbones and the agent of a run, ready to recognise videos.

    Args:
        networks: what runs (``Networks.from_run`` or ``Networks.from_export``).
        workers: decoding processes (0: decode in this process).
    """

    def __init__(self, networks: Networks, workers: int = 2):
        self.networks = networks
        self.model, self.device, self.checkpoint = networks.agent, networks.device, networks.source
        self.spec, self.classes, self.memory_frames = networks.spec, networks.classes, networks.memory_frames
        self.trained_frames, self.head_gflops = networks.trained_frames, networks.head_gflops
        self.cost = CostModel(self.spec["backbone"]["gflops"], self.spec["memory_backbone"]["gflops"], self.head_gflops)
        self._baseline_heads: dict[int, float] = {}
        self.decoder = DecodeWorkers(workers)
        self._keys = itertools.count()
        weakref.finalize(self, self.decoder.close)

    @classmethod
    def from_run(cls, checkpoint: str | Path, device: torch.device | str = "cpu", backbone_weights: Path | None = None,
                 memory_weights: Path | None = None, workers: int = 2) -> Predictor:
        """The run directory ``checkpoint`` on PyTorch (``*_weights``: the backbone files, if they moved)."""
        return cls(Networks.from_run(checkpoint, device, backbone_weights, memory_weights), workers)

    @classmethod
    def from_export(cls, folder: str | Path, device: torch.device | str = "cpu", workers: int = 2) -> Predictor:
        """The export ``folder`` (``adaframe export``) on onnxruntime."""
        return cls(Networks.from_export(folder, device), workers)

    def close(self) -> None:
        """Stop the decoding workers (a later call starts them again)."""
        self.decoder.close()

    def _open(self, paths: list[Path], memory: bool = True) -> list[VideoJob]:
        """Send the ``Open`` requests of a group of videos to the decoding workers (answered in ``_opened``)."""
        jobs = [VideoJob(next(self._keys), Path(p)) for p in paths]
        stored = int(self.spec["memory_frames"])
        for job in jobs:
            self.decoder.submit(job.key, Open(
                job.path, self.spec["fps"], stored if memory else 0, tuple(memory_subset(stored, self.memory_frames).tolist()),
                self.spec["memory_backbone"]["size"], self.spec.get("memory_at") == "keyframe",
                self.spec["backbone"]["size"] if memory else None))
        return jobs

    def _opened(self, jobs: list[VideoJob]) -> list[np.ndarray | None]:
        """Wait for the jobs' ``Open`` answers; fills their times; their memory frames (None for a failed job)."""
        out: list[np.ndarray | None] = []
        for job, answer in zip(jobs, self.decoder.take([j.key for j in jobs])):
            if isinstance(answer, Failed):
                job.error = answer.error
                out.append(None)
                continue
            job.times, job.duration, job.memory_seconds = answer.times, answer.duration, answer.memory_seconds
            job.memory_decoded = job.decoded = answer.memory_decoded
            job.reading = answer.reading
            out.append(answer.memory)
        return out

    def _ask(self, jobs: list[VideoJob], times: list[np.ndarray], size: int) -> list[VideoJob]:
        """Send each job's ``Read`` of its times to the workers (answered in ``_frames``); returns the jobs asked."""
        asked = []
        for job, t in zip(jobs, times):
            if job.error is None and len(t):
                self.decoder.submit(job.key, Read(tuple(float(x) for x in t), size))
                asked.append(job)
        return asked

    def _frames(self, jobs: list[VideoJob], asked: list[VideoJob]) -> list[np.ndarray | None]:
        """Wait for the frames ``_ask`` asked for; a failure marks its job and gives None."""
        answers = dict(zip([id(j) for j in asked], self.decoder.take([j.key for j in asked])))
        out: list[np.ndarray | None] = []
        for job in jobs:
            answer = answers.get(id(job))
            if isinstance(answer, Failed):
                job.error = answer.error
            if isinstance(answer, Frames):
                job.decoded, job.seeks = answer.decoded, answer.seeks
            out.append(answer.frames if isinstance(answer, Frames) else None)
        return out

    def _read(self, jobs: list[VideoJob], times: list[np.ndarray], size: int) -> list[np.ndarray | None]:
        """Frames of each job at its times, decoded by the workers in parallel; a failure marks the job and gives None."""
        return self._frames(jobs, self._ask(jobs, times, size))

    def _close(self, jobs: list[VideoJob]) -> None:
        for job in jobs:
            self.decoder.submit(job.key, None)

    def _features(self, backbone: Callable[[np.ndarray], np.ndarray], frames: list[np.ndarray | None], rows: int, dim: int) -> torch.Tensor:
        """Backbone features of the decoded frames, zeros for failed jobs: [rows, n, D]."""
        ok = [f for f in frames if f is not None and len(f)]
        feats = torch.from_numpy(backbone(np.concatenate(ok))) if ok else None
        n = max((len(f) for f in ok), default=0)
        out = torch.zeros(rows, n, dim)
        start = 0
        for r, f in enumerate(frames):
            if f is not None and len(f):
                out[r, : len(f)] = feats[start: start + len(f)]
                start += len(f)
        return out.to(self.device)

    def run(self, paths: Sequence[Path], max_steps: int | None = None, mu: float | None = 0.7, patience: int = 1,
            scan: bool = False, group: int = 8, prefetch: bool = True) -> Iterator[list[Recognition]]:
        """AdaFrame on ``paths``, ``group`` videos at a time batched together; yields each group's results.

        With ``prefetch`` the next group's videos are opened (probed, memory decoded) by the workers while
        this group runs; without, each group's wall time includes its whole decoding (for a fair comparison).
        """
        groups = [list(paths[g: g + group]) for g in range(0, len(paths), group)]
        jobs: list[VideoJob] = []
        ahead: list[VideoJob] = []
        try:
            for g, videos in enumerate(groups):
                jobs = ahead or self._open(videos)
                ahead = self._open(groups[g + 1]) if prefetch and g + 1 < len(groups) else []
                results = self._predict_group(jobs, max_steps, mu, patience, scan)
                self._close(jobs)
                jobs = []
                yield results
        finally:  # also when the consumer stops early or a group raises: nothing stays open in the workers
            if ahead:
                self.decoder.take([j.key for j in ahead])
            self._close(jobs + ahead)

    def predict(self, paths: list[Path], max_steps: int | None = None, mu: float | None = 0.7, patience: int = 1,
                scan: bool = False) -> list[Recognition]:
        """AdaFrame on one group of videos; one result per video (``error`` set for a bad file)."""
        return [r for results in self.run(paths, max_steps, mu, patience, scan, group=max(len(paths), 1)) for r in results]

    @torch.no_grad()
    def _predict_group(self, jobs: list[VideoJob], max_steps: int | None, mu: float | None, patience: int,
                       scan: bool) -> list[Recognition]:
        k = int(max_steps or self.trained_frames)
        start = time.perf_counter()
        calls = np.zeros(len(jobs), dtype=np.int64)
        frames = self._opened(jobs)
        memory = self._features(self.networks.memory_backbone, frames, len(jobs), self.model.cfg.memory_dim)  # [B, Td, Dm]
        memory_calls = np.array([0 if f is None else len(f) for f in frames])
        if memory.shape[1] != self.memory_frames:  # every video failed
            memory = torch.zeros(len(jobs), self.memory_frames, self.model.cfg.memory_dim, device=self.device)
        lengths = torch.tensor([len(j.times) for j in jobs], device=self.device)

        def frame_fn(rows: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            need = [(r, i) for r, i in zip(rows.tolist(), idx.tolist()) if i not in jobs[r].cache]
            decoded = self._read([jobs[r] for r, _ in need], [jobs[r].times[[i]] for r, i in need], self.spec["backbone"]["size"])
            feats = self._features(self.networks.backbone, decoded, len(need), self.model.cfg.feature_dim)  # [n, 1, D]
            for (r, i), f, d in zip(need, feats, decoded):
                jobs[r].cache[i] = f[0] if d is not None else torch.zeros(self.model.cfg.feature_dim, device=self.device)
                calls[r] += d is not None
            return torch.stack([jobs[r].cache[i] for r, i in zip(rows.tolist(), idx.tolist())])  # [A, D]

        out = rollout(self.model, memory, lengths, frame_fn, k, stop=None if mu is None else StopRule("utility", mu, patience), scan=scan)
        wall = time.perf_counter() - start
        method = f"AdaFrame-{k}" + (f" (mu {mu})" if mu is not None else "") + (" with --scan instead of its policy" if scan else
                 " by the uniform scan (training found that its policy added nothing on val)" if self.model.cfg.inference == "scan" else "")
        results = []
        for r, job in enumerate(jobs):
            if job.error is not None:
                results.append(Recognition(job.path, method, wall, len(jobs), error=job.error))
                continue
            steps = int(out.steps[r])
            visited = out.indices[r, :steps].tolist()
            frames_used = len(set(visited))
            results.append(Recognition(
                job.path, method, wall, len(jobs), *self._ranking(out.probs[r]), steps=steps, frames_used=frames_used,
                seconds=tuple(round(float(job.times[i]), 3) for i in visited), backbone_calls=int(calls[r]),
                memory_backbone_calls=int(memory_calls[r]), frames_decoded=job.decoded, seeks=job.seeks,
                reading=job.reading, gflops=float(self.cost.per_video(frames_used, steps, self.memory_frames)),
                memory_seconds=tuple(round(float(t), 3) for t in job.memory_seconds), memory_frames_decoded=job.memory_decoded,
                candidate_frames=len(job.times), utilities=tuple(round(float(u), 4) for u in out.utilities[r, :steps]),
                step_top=self._step_top(out.logits[r, :steps]), probs=tuple(out.probs[r].tolist())))
        return results

    def _step_top(self, logits: torch.Tensor) -> tuple[tuple[str, float], ...]:
        """logits [steps, C] -> the most likely class and its probability after each step."""
        p, c = torch.softmax(logits, -1).max(-1)  # [steps]
        return tuple((self.classes[int(i)], round(float(q), 4)) for q, i in zip(p, c))

    def _ranking(self, probs: torch.Tensor) -> tuple[str, tuple[tuple[str, float], ...]]:
        """The label and every class with its probability, most likely first."""
        top = torch.sort(probs, descending=True)
        return self.classes[int(top.indices[0])], tuple((self.classes[int(i)], round(float(p), 4)) for p, i in zip(top.values, top.indices))

    def run_uniform(self, paths: Sequence[Path], frames: int, classifier: Baseline | None = None, group: int = 8,
                    prefetch: bool = True) -> Iterator[list[Recognition]]:
        """The baseline: the ``frames`` uniform frames ``eval`` reads (``data.features.uniform_frames`` over the candidate
        frames; each distinct frame once), decoded by the same workers, through the backbone in
        one batch per group, averaged by ``classifier`` (an AvgPooling run) if given; yields each group's results.

        With ``prefetch`` the next group's frames are decoded while this group runs the backbone (as ``run`` does)."""
        groups = [list(paths[g: g + group]) for g in range(0, len(paths), group)]

        def start(g: int) -> tuple[list[VideoJob], list[tuple[np.ndarray, np.ndarray]], list[VideoJob], float]:
            t0 = time.perf_counter()
            jobs = self._open(groups[g], memory=False)
            self._opened(jobs)
            picks = [uniform_frames(len(j.times), frames) for j in jobs]  # (distinct frames, which one each read is)
            return jobs, picks, self._ask(jobs, [j.times[used] for j, (used, _) in zip(jobs, picks)], self.spec["backbone"]["size"]), t0

        ahead = start(0) if groups else None
        try:
            for g in range(len(groups)):
                (jobs, picks, asked, t0), ahead = ahead or start(g), None
                decoded = self._frames(jobs, asked)
                self._close(jobs)
                if prefetch and g + 1 < len(groups):
                    ahead = start(g + 1)
                yield self._uniform_results(jobs, picks, decoded, frames, classifier, t0)
        finally:
            if ahead is not None:
                self._frames(ahead[0], ahead[2])
                self._close(ahead[0])

    @torch.no_grad()
    def _uniform_results(self, jobs: list[VideoJob], picks: list[tuple[np.ndarray, np.ndarray]], decoded: list[np.ndarray | None],
                         frames: int, classifier: Baseline | None, start: float) -> list[Recognition]:
        distinct = self._features(self.networks.backbone, decoded, len(jobs), self.model.cfg.feature_dim)  # [B, n, D]
        # [B, K, D]: a video with fewer than K candidate frames reads some twice, as eval does; the backbone ran once each.
        # A failed video's row of ``distinct`` is empty: it reads row 0 (zeros), and its result is the error.
        reads = torch.from_numpy(np.stack([inv if j.error is None else np.zeros(frames, np.int64)
                                           for j, (_, inv) in zip(jobs, picks)])).to(self.device)  # [B, K]
        feats = (distinct.gather(1, reads[..., None].expand(-1, -1, distinct.shape[2])) if distinct.shape[1]
                 else distinct.new_zeros(len(jobs), frames, distinct.shape[2]))
        if classifier is not None and id(classifier) not in self._baseline_heads:  # count its FLOPs once, not per video
            self._baseline_heads[id(classifier)] = head_gflops_per_step(classifier, 0, self.device)
        cost = CostModel(self.cost.backbone_gflops, 0.0, self._baseline_heads.get(id(classifier), 0.0))  # reads no memory
        probs = (classifier.probs(feats, torch.ones(feats.shape[:2], dtype=torch.bool, device=self.device))
                 if classifier is not None and feats.shape[1] == frames else None)
        wall = time.perf_counter() - start
        method = f"AvgPooling uniform{frames}"
        results = []
        for r, job in enumerate(jobs):
            if job.error is not None:
                results.append(Recognition(job.path, method, wall, len(jobs), error=job.error))
                continue
            label, top = self._ranking(probs[r]) if probs is not None else (None, ())
            used, where = picks[r]
            results.append(Recognition(
                job.path, method, wall, len(jobs), label, top, steps=frames, frames_used=len(used),
                seconds=tuple(round(float(t), 3) for t in job.times[used[where]]), backbone_calls=len(used),
                frames_decoded=job.decoded, seeks=job.seeks, reading=job.reading, gflops=float(cost.per_video(len(used), frames, 0)),
                probs=None if probs is None else tuple(probs[r].tolist())))
        return results


class Recognizer:
    """A trained AdaFrame run, ready to recognise video files (what ``adaframe predict`` runs).

    Decoding runs in ``workers`` processes started on the first call and kept until ``close`` (or
    the end of a ``with`` block, or of the program).

    Args:
        predictor: the run's backbones, agent and decoding workers.
        frames: K, the most steps (None: the K it was trained with).
        mu: adaptive lookahead margin (None: always K steps).
        patience: how many times the utility must drop by ``mu`` before a video stops.
        batch_size: videos run together through the backbones and the agent.
    """

    def __init__(self, predictor: Predictor, frames: int | None = None, mu: float | None = 0.7, patience: int = 1,
                 batch_size: int = 8):
        if (frames is not None and frames < 1) or (mu is not None and mu < 0) or patience < 1 or batch_size < 1:
            raise AdaframeError("need frames >= 1, mu >= 0, patience >= 1 and batch_size >= 1")
        self.predictor, self.frames, self.mu, self.patience, self.batch_size = predictor, frames, mu, patience, batch_size

    @classmethod
    def from_run(cls, run: str | Path, device: torch.device | str = "cpu", backbone_weights: str | Path | None = None,
                 memory_weights: str | Path | None = None, workers: int = 2, **options: int | float | None) -> Recognizer:
        """Load an AdaFrame run trained on features from ``adaframe extract`` (its backbones are rebuilt from
        the record of that extraction; ``*_weights`` only if the files moved). ``workers``: decoding processes
        (0: decode in this process). ``options``: see the class."""
        as_path = lambda p: None if p is None else Path(p)  # noqa: E731
        if workers < 0:
            raise AdaframeError(f"need workers >= 0, got {workers}")
        return cls(Predictor.from_run(run, device, as_path(backbone_weights), as_path(memory_weights), workers), **options)  # type: ignore[arg-type]

    @classmethod
    def from_export(cls, folder: str | Path, device: torch.device | str = "cpu", workers: int = 2,
                    **options: int | float | None) -> Recognizer:
        """Load a run exported by ``adaframe export``: the same rollout, its networks on onnxruntime (the same frames
        visited and probabilities within 1e-4 of ``from_run``'s). ``workers`` and ``options`` as in ``from_run``."""
        if workers < 0:
            raise AdaframeError(f"need workers >= 0, got {workers}")
        return cls(Predictor.from_export(folder, device, workers), **options)  # type: ignore[arg-type]

    def __enter__(self) -> Recognizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the decoding workers."""
        self.predictor.close()

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes

    @property
    def memory_frames(self) -> int:
        """Global-memory frames the agent reads."""
        return self.predictor.memory_frames

    @property
    def trained_frames(self) -> int:
        """The K the run was trained with (the most steps when ``frames`` is None)."""
        return self.predictor.trained_frames

    @property
    def runtime(self) -> str:
        """What runs the networks: "PyTorch" (``from_run``) or "onnxruntime" (``from_export``)."""
        return self.predictor.networks.runtime

    @property
    def features(self) -> dict:
        """How the run's features were extracted (``extract.json``: backbones, sizes, ``fps``, GFLOPs)."""
        return self.predictor.spec

    def predict(self, paths: Sequence[str | Path], scan: bool = False) -> list[Recognition]:
        """One ``Recognition`` per file, in order; bad files get ``error`` instead of raising. ``scan`` replaces the
        policy by consecutive frames: a cost check, not AdaFrame's prediction."""
        return [r for group in self.predict_groups(paths, scan) for r in group]

    def predict_groups(self, paths: Sequence[str | Path], scan: bool = False, prefetch: bool = True) -> Iterator[list[Recognition]]:
        """As ``predict``, yielding the results of each ``batch_size`` videos as soon as they are done
        (with ``prefetch``, the next group is being decoded meanwhile; see ``Predictor.run``)."""
        return self.predictor.run([Path(p) for p in paths], self.frames, self.mu, self.patience, scan, self.batch_size, prefetch)

    def load_baseline(self, path: str | Path) -> Baseline:
        """The AvgPooling run at ``path``, to run beside the policy (``predict_uniform``); refused unless trained on the
        same classes and features."""
        classifier, payload = load_checkpoint(path, self.predictor.device)
        if payload["kind"] != "avgpool":
            raise AdaframeError(f"--compare-checkpoint {path} holds a {payload['kind']!r} model, expected avgpool")
        if payload["classes"] != self.classes or payload.get("features") != self.features:
            raise AdaframeError(f"--compare-checkpoint {path} was trained on other classes or features than {self.predictor.checkpoint}")
        return classifier

    def predict_uniform(self, paths: Sequence[str | Path], frames: int, classifier: Baseline | None = None, group: int | None = None,
                        prefetch: bool = False) -> list[Recognition]:
        """The baseline on ``paths``: the ``frames`` uniform frames ``eval`` reads through the backbone, averaged by
        ``classifier`` (None: its cost only), ``group`` videos at a time (default: all together)."""
        paths = [Path(p) for p in paths]
        return [r for results in self.predictor.run_uniform(paths, frames, classifier, group or max(len(paths), 1), prefetch)
                for r in results]
