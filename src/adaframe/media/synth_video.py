"""Synthetic *video files* whose class is visible only in some frames (the video demo and its tests).

Every video shows a drifting, coloured noise background; for a short stretch (``min_evidence``-``max_evidence``
seconds) a large shape in the class's colour crosses the frame, and the rest says nothing about the class. The files
are h264 MP4s written with PyAV (a keyframe every ``gop`` frames). Output: ``OUT/videos/<video_id>.mp4``,
``OUT/list.txt`` with lines ``videos/<id>.mp4 label split`` (the list format ``adaframe extract`` reads) and
``OUT/evidence.csv`` (where the class shows).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from adaframe.utils import AdaframeError, atomic_write

# (name, RGB) of the class colours: far apart, so that even a randomly initialised CNN separates them.
COLOURS = [("red", (230, 40, 40)), ("green", (40, 200, 60)), ("blue", (40, 70, 230)), ("yellow", (235, 220, 40)),
           ("magenta", (220, 50, 220)), ("cyan", (40, 220, 220)), ("orange", (245, 140, 20)), ("white", (245, 245, 245))]


@dataclass
class SynthVideoConfig:
    """Knobs of the synthetic video set (defaults: the video demo)."""

    videos: int = 240
    classes: int = 4
    """at most 8 (one colour each)"""
    min_seconds: int = 8
    max_seconds: int = 16
    min_evidence: float = 1.5
    max_evidence: float = 3.0
    """seconds the class shape is on screen"""
    seconds: int | None = None
    """every video this long (sets --min-seconds and --max-seconds), e.g. 180 for long clips"""
    fps: int = 4
    """frame rate of the files (features are taken at 1 fps)"""
    gop: int | None = None
    """frames from one keyframe to the next (default: 2 s worth)"""
    width: int = 160
    height: int = 120
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.seconds is not None:
            self.min_seconds = self.max_seconds = self.seconds
        if self.gop is not None and self.gop < 1:
            raise AdaframeError("need --gop >= 1")
        if not 2 <= self.classes <= len(COLOURS):
            raise AdaframeError(f"--classes must be in [2, {len(COLOURS)}]")
        if self.videos < 2 or not 1 <= self.min_seconds <= self.max_seconds:
            raise AdaframeError("need --videos >= 2 and 1 <= --min-seconds <= --max-seconds")
        if not 0 < self.min_evidence <= self.max_evidence <= self.min_seconds:
            raise AdaframeError("need 0 < --min-evidence <= --max-evidence <= --min-seconds")
        if self.fps < 1 or self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise AdaframeError("need --fps >= 1 and even --width/--height >= 16")
        if self.val_fraction < 0 or self.test_fraction < 0 or self.val_fraction + self.test_fraction >= 1:
            raise AdaframeError("--val-fraction + --test-fraction must be in [0, 1)")


def _noise_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth noise [h, w, 3] in [0, 1]: a coarse random grid, upsampled by repetition and box-blurred."""
    coarse = rng.random((h // 8 + 2, w // 8 + 2, 3))
    field = coarse.repeat(8, 0).repeat(8, 1)[:h, :w]
    for axis in (0, 1):  # a 9-tap box blur along each axis softens the 8x8 blocks
        field = sum(np.roll(field, s, axis) for s in range(-4, 5)) / 9
    return field


def render_video(path: Path, frames: Iterable[np.ndarray], fps: int, gop: int | None = None) -> None:
    """Encode uint8 RGB frames [H, W, 3], one at a time, as an h264 MP4 (atomically; a long clip never sits in
    memory whole). Keyframes: exactly every ``gop`` frames; by default every 2 s, and x264 may add some at scene cuts."""
    def write(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps))
            stream.pix_fmt = "yuv420p"
            stream.codec_context.gop_size = gop or 2 * fps
            stream.options = {"crf": "20", "preset": "veryfast"}
            if gop is not None:  # no scene-cut keyframes, no shorter groups
                stream.options |= {"keyint_min": str(gop), "sc_threshold": "0"}
            for i, img in enumerate(frames):
                if i == 0:
                    stream.width, stream.height = img.shape[1], img.shape[0]
                container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            container.mux(stream.encode())  # flush

    atomic_write(path, write)


def _frames(cfg: SynthVideoConfig, rng: np.random.Generator, label: int, seconds: int) -> tuple[Iterator[np.ndarray], float, float]:
    """The frames [H, W, 3] of one video, made as they are encoded, and the (start, end) seconds of its evidence."""
    n, h, w = seconds * cfg.fps, cfg.height, cfg.width
    a, b = _noise_field(rng, h, w), _noise_field(rng, h, w)
    tint = rng.uniform(0.25, 0.6, size=3)
    length = rng.uniform(cfg.min_evidence, cfg.max_evidence)
    start = rng.uniform(0, seconds - length)

    def frames() -> Iterator[np.ndarray]:
        mix = np.linspace(0.0, 1.0, n)  # the background drifts from field a to b
        yy, xx = np.mgrid[0:h, 0:w]
        radius = 0.35 * min(h, w)
        for i in range(n):
            img = ((1 - mix[i]) * a + mix[i] * b) * tint * 255  # [H, W, 3]
            t = i / cfg.fps
            if start <= t < start + length:  # the shape crosses the frame from left to right
                cx = w * (0.2 + 0.6 * (t - start) / length)
                img[(xx - cx) ** 2 + (yy - h / 2) ** 2 < radius**2] = COLOURS[label][1]
            yield np.clip(img, 0, 255).astype(np.uint8)

    return frames(), start, start + length


def generate_videos(cfg: SynthVideoConfig, out: str | Path, progress: bool = True) -> Path:
    """Render ``cfg.videos`` MP4 files into ``out`` and write ``list.txt``; returns ``out``."""
    out = Path(out)
    rng = np.random.default_rng(cfg.seed)
    rows, evidence = [], []
    n_val, n_test = round(cfg.videos * cfg.val_fraction), round(cfg.videos * cfg.test_fraction)
    splits = ["val"] * n_val + ["test"] * n_test + ["train"] * (cfg.videos - n_val - n_test)
    splits = [splits[i] for i in rng.permutation(cfg.videos)]
    for i in tqdm(range(cfg.videos), desc="render", disable=not progress, unit="video"):
        label = i % cfg.classes
        seconds = int(rng.integers(cfg.min_seconds, cfg.max_seconds + 1))
        frames, start, end = _frames(cfg, rng, label, seconds)
        vid = f"video{i:05d}"
        render_video(out / "videos" / f"{vid}.mp4", frames, cfg.fps, cfg.gop)
        rows.append(f"videos/{vid}.mp4 {COLOURS[label][0]} {splits[i]}")
        evidence.append((vid, round(start, 3), round(end, 3)))

    buf = io.StringIO()
    csv.writer(buf).writerows([("video_id", "start_s", "end_s"), *evidence])
    atomic_write(out / "evidence.csv", lambda p: p.write_text(buf.getvalue()))
    atomic_write(out / "list.txt", lambda p: p.write_text("\n".join(rows) + "\n"))
    return out
