"""The uniform baseline beside a ``Recognizer`` (``predict --compare uniformK``, ``benchmark --videos``): AvgPooling over
the K uniform frames ``eval`` reads (``data.features.uniform_frames`` over the candidate frames), decoded by the
recognizer's workers and run through its backbone, so that its frames, GFLOPs and wall time compare with the policy's."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from adaframe.data.features import uniform_frames
from adaframe.evaluate.metrics import CostModel
from adaframe.evaluate.run import head_gflops_per_step
from adaframe.models.baselines import Baseline
from adaframe.models.kinds import load_checkpoint
from adaframe.recognize.recognizer import Recognizer, VideoJob, ranking
from adaframe.recognize.result import Recognition
from adaframe.utils import AdaframeError


def load_baseline(rec: Recognizer, path: str | Path) -> Baseline:
    """The AvgPooling run at ``path``, on ``rec``'s device; refused unless trained on ``rec``'s classes and features."""
    classifier, payload = load_checkpoint(path, rec.networks.device)
    if payload["kind"] != "avgpool":
        raise AdaframeError(f"--compare-checkpoint {path} holds a {payload['kind']!r} model, expected avgpool")
    if payload["classes"] != rec.classes or payload.get("features") != rec.features:
        raise AdaframeError(f"--compare-checkpoint {path} was trained on other classes or features than {rec.networks.source}")
    return classifier


class UniformBaseline:
    """AvgPooling over ``frames`` uniform frames of each video, each distinct frame decoded and run through the backbone
    once (a video with fewer candidate frames reads some twice, as ``eval`` does).

    Args:
        rec: whose decoding workers and backbone run it.
        frames: K.
        classifier: an AvgPooling run trained on ``rec``'s features (``load_baseline``); None: its cost only (no label).
    """

    def __init__(self, rec: Recognizer, frames: int, classifier: Baseline | None = None):
        self.rec, self.frames, self.classifier = rec, frames, classifier
        head = 0.0 if classifier is None else head_gflops_per_step(classifier, 0, rec.networks.device)
        self.cost = CostModel(rec.networks.cost.backbone_gflops, 0.0, head)  # reads no memory

    def predict(self, paths: Sequence[str | Path], group: int | None = None, prefetch: bool = False) -> list[Recognition]:
        """One ``Recognition`` per file, in order, ``group`` videos at a time (default: all together)."""
        paths = [Path(p) for p in paths]
        return [r for results in self.predict_groups(paths, group or max(len(paths), 1), prefetch) for r in results]

    def predict_groups(self, paths: Sequence[Path], group: int = 8, prefetch: bool = True) -> Iterator[list[Recognition]]:
        """As ``predict``, yielding each group's results; with ``prefetch`` the next group's frames are decoded while
        this group runs the backbone (as in ``Recognizer.predict_groups``)."""
        decoding = self.rec.decoding
        groups = [list(paths[g: g + group]) for g in range(0, len(paths), group)]

        def start(g: int) -> tuple[list[VideoJob], list[tuple[np.ndarray, np.ndarray]], list[VideoJob], float]:
            t0 = time.perf_counter()
            jobs = decoding.open(groups[g], memory=False)
            decoding.opened(jobs)
            picks = [uniform_frames(len(j.times), self.frames) for j in jobs]  # (distinct frames, which one each read is)
            return jobs, picks, decoding.ask(jobs, [j.times[used] for j, (used, _) in zip(jobs, picks)]), t0

        ahead = start(0) if groups else None
        try:
            for g in range(len(groups)):
                (jobs, picks, asked, t0), ahead = ahead or start(g), None
                decoded = decoding.frames(jobs, asked)
                decoding.close(jobs)
                if prefetch and g + 1 < len(groups):
                    ahead = start(g + 1)
                yield self._results(jobs, picks, decoded, t0)
        finally:
            if ahead is not None:
                decoding.frames(ahead[0], ahead[2])
                decoding.close(ahead[0])

    @torch.no_grad()
    def _results(self, jobs: list[VideoJob], picks: list[tuple[np.ndarray, np.ndarray]], decoded: list[np.ndarray | None],
                 start: float) -> list[Recognition]:
        """The classifier on each job's K frames (``picks``: ``uniform_frames``; ``decoded``: the distinct ones)."""
        frames, device = self.frames, self.rec.networks.device
        distinct = self.rec.networks.features(decoded)  # [B, n, D]
        # [B, K, D]: a video with fewer than K candidate frames reads some twice, as eval does; the backbone ran once each.
        # A failed video's row of ``distinct`` is empty: it reads row 0 (zeros), and its result is the error.
        reads = torch.from_numpy(np.stack([inv if j.error is None else np.zeros(frames, np.int64)
                                           for j, (_, inv) in zip(jobs, picks)])).to(device)  # [B, K]
        feats = (distinct.gather(1, reads[..., None].expand(-1, -1, distinct.shape[2])) if distinct.shape[1]
                 else distinct.new_zeros(len(jobs), frames, distinct.shape[2]))
        probs = (self.classifier.probs(feats, torch.ones(feats.shape[:2], dtype=torch.bool, device=device))
                 if self.classifier is not None and feats.shape[1] == frames else None)
        wall = time.perf_counter() - start
        method = f"AvgPooling uniform{frames}"
        results = []
        for r, job in enumerate(jobs):
            if job.error is not None:
                results.append(Recognition(job.path, method, wall, len(jobs), error=job.error))
                continue
            label, top = ranking(probs[r], self.rec.classes) if probs is not None else (None, ())
            used, where = picks[r]
            results.append(Recognition(
                job.path, method, wall, len(jobs), label, top, steps=frames, frames_used=len(used),
                seconds=tuple(round(float(t), 3) for t in job.times[used[where]]), backbone_calls=len(used),
                frames_decoded=job.decoded, seeks=job.seeks, reading=job.reading, gflops=float(self.cost.per_video(len(used), frames, 0)),
                probs=None if probs is None else tuple(probs[r].tolist())))
        return results
