"""What recognising one video file gives: ``Recognition``, made once by ``recognizer.Recognizer`` for AdaFrame and by
``uniform.UniformBaseline`` for the uniform baseline, read as attributes by ``collection``, ``predict`` and
``benchmark``; ``to_json`` is the object ``predict --json`` prints and ``predict --videos`` writes per video,
``from_json`` reads it back."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Ratios:
    """AdaFrame's cost over its baseline's on the same video."""

    gflops: float
    wall: float
    backbone_calls: float

    def to_json(self) -> dict:
        return {"gflops_ratio": self.gflops, "wall_ratio": self.wall, "backbone_calls_ratio": self.backbone_calls}


@dataclass(frozen=True)
class Recognition:
    """What one method says of one file, made once by ``Recognizer`` or ``UniformBaseline``. A file that could not be read has ``error`` set,
    ``label`` None and the cost fields at 0; the other files of the call are unaffected.

    Attributes:
        path: the video file.
        method: e.g. ``AdaFrame-10 (mu 0.7)`` or ``AvgPooling uniform25``.
        wall_s: seconds for the group of videos this one was run with (decoding included); ``per_video`` shares it.
        videos_in_group: how many videos shared that time.
        label: the most likely class (None: failed, or a baseline run for its cost only).
        top: classes with their probabilities, most likely first (every class unless cut by ``with_top``).
        steps: agent steps taken (a revisited frame costs a step, not a backbone call); a baseline's frames.
        frames_used: distinct frames the big backbone ran on.
        seconds: the time of each step's frame, in the order looked at.
        backbone_calls, memory_backbone_calls: frames each backbone computed for this video.
        frames_decoded: pictures the decoder decoded (memory pass and policy frames; those output and those it held when a
            seek ended their run).
        seeks: seeks the decoder made.
        reading: how the file was read (``media.reader.VideoReader.reading``): by seeks, skipping the pictures nothing
            asked for depends on where the codec allows it, or forward.
        gflops: ``evaluate.metrics.CostModel``: frames x backbone + memory frames x memory backbone + steps x head.
        memory_seconds, memory_frames_decoded, candidate_frames, utilities, step_top: AdaFrame's only (None for a
            baseline): the times of the memory's frames, the frames decoded for it, the frames of the extraction grid,
            the utility after each step, the most likely class and its probability after each step.
        baseline, vs_baseline: with ``predict --compare``, the baseline's result on the same file and the ratios.
        probs: every class's probability in the run's class order, unrounded (``top`` has them to 4 decimals; not in
            ``to_json``), e.g. for mAP over many files or to compare two runtimes.
    """

    path: Path
    method: str
    wall_s: float
    videos_in_group: int = 1
    label: str | None = None
    top: tuple[tuple[str, float], ...] = ()
    steps: int = 0
    frames_used: int = 0
    seconds: tuple[float, ...] = ()
    backbone_calls: int = 0
    memory_backbone_calls: int = 0
    frames_decoded: int = 0
    seeks: int = 0
    gflops: float = 0.0
    memory_seconds: tuple[float, ...] | None = None
    memory_frames_decoded: int | None = None
    candidate_frames: int | None = None
    utilities: tuple[float, ...] | None = None
    step_top: tuple[tuple[str, float], ...] | None = None
    error: str | None = None
    baseline: Recognition | None = None
    vs_baseline: Ratios | None = None
    probs: tuple[float, ...] | None = None
    reading: str | None = None

    @property
    def probability(self) -> float:
        """The label's probability (0 when there is none)."""
        return self.top[0][1] if self.top else 0.0

    def with_top(self, k: int) -> Recognition:
        """This result with the ``k`` most likely classes only."""
        return replace(self, top=self.top[:k])

    def per_video(self) -> Recognition:
        """This result with its share of its group's wall time."""
        return replace(self, wall_s=self.wall_s / self.videos_in_group)

    def compared_with(self, base: Recognition) -> Recognition:
        """This result with ``base`` (a baseline on the same file) and, where both worked, the ratios of their costs."""
        ratios = None if self.error or base.error else Ratios(
            self.gflops / base.gflops, self.wall_s / base.wall_s, self.backbone_calls / base.backbone_calls)
        return replace(self, baseline=base, vs_baseline=ratios)

    def to_json(self) -> dict:
        """The object ``predict --json`` prints and ``predict --videos`` writes (fields of the other method omitted)."""
        out: dict = {"video": str(self.path), "method": self.method, "wall_s": self.wall_s, "videos_in_group": self.videos_in_group}
        if self.error is not None:
            out["error"] = self.error
        else:
            if self.label is not None:
                out |= {"label": self.label, "top": [list(t) for t in self.top]}
            out |= {"steps": self.steps, "frames_used": self.frames_used, "frame_seconds": list(self.seconds),
                    "backbone_calls": self.backbone_calls, "memory_backbone_calls": self.memory_backbone_calls}
            if self.memory_seconds is not None:
                out["memory_seconds"] = list(self.memory_seconds)
            out |= {"frames_decoded": self.frames_decoded}
            if self.memory_frames_decoded is not None:
                out["memory_frames_decoded"] = self.memory_frames_decoded
            out |= {"seeks": self.seeks, "reading": self.reading, "gflops": self.gflops}
            if self.candidate_frames is not None:
                out |= {"candidate_frames": self.candidate_frames, "utilities": list(self.utilities or ())}
                if self.step_top is not None:
                    out["step_top"] = [list(t) for t in self.step_top]
        out["top"] = [list(t) for t in self.top]
        if self.vs_baseline is not None:
            out["vs_baseline"] = self.vs_baseline.to_json()
        if self.baseline is not None:
            out["baseline"] = self.baseline.to_json()
        return out

    @classmethod
    def from_json(cls, d: dict) -> Recognition:
        """Back from ``to_json`` (a result file of ``predict --videos``)."""
        opt = lambda key: None if d.get(key) is None else tuple(d[key])  # noqa: E731
        return cls(Path(d["video"]), d["method"], d["wall_s"], d.get("videos_in_group", 1), d.get("label"),
                   tuple((c, p) for c, p in d.get("top", [])), d.get("steps", 0), d.get("frames_used", 0),
                   tuple(d.get("frame_seconds", [])), d.get("backbone_calls", 0), d.get("memory_backbone_calls", 0),
                   d.get("frames_decoded", 0), d.get("seeks", 0), d.get("gflops", 0.0), opt("memory_seconds"),
                   d.get("memory_frames_decoded"), d.get("candidate_frames"), opt("utilities"),
                   None if d.get("step_top") is None else tuple((c, p) for c, p in d["step_top"]), d.get("error"),
                   cls.from_json(d["baseline"]) if "baseline" in d else None,
                   Ratios(**{k.removesuffix("_ratio"): v for k, v in d["vs_baseline"].items()}) if "vs_baseline" in d else None,
                   reading=d.get("reading"))
