"""Synthetic video files: real MP4s, the class colour on screen only inside the evidence stretch."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from adaframe.media.synth_video import COLOURS, SynthVideoConfig
from adaframe.media.probe import probe
from adaframe.media.reader import VideoReader
from adaframe.utils import AdaframeError


def _colour_share(frame: np.ndarray, rgb: tuple[int, int, int]) -> float:
    """Share of pixels within 40 of the colour in every channel (h264 shifts colours a little)."""
    return float((np.abs(frame.astype(int) - np.array(rgb)).max(-1) < 40).mean())


def test_files_labels_and_evidence(video_files):
    lines = (video_files / "list.txt").read_text().split("\n")[:-1]
    assert len(lines) == 8
    evidence = {r["video_id"]: r for r in csv.DictReader(open(video_files / "evidence.csv"))}
    splits = []
    for line in lines:
        rel, label, split = line.split(" ")
        splits.append(split)
        path = video_files / rel
        info = probe(path)
        assert info.codec == "h264" and (info.width, info.height) == (96, 64)
        assert 6 <= info.duration <= 9 and info.fps == pytest.approx(4)
        rgb = dict(COLOURS)[label]
        ev = evidence[path.stem]
        start, end = float(ev["start_s"]), float(ev["end_s"])
        times = np.arange(0, info.duration, 0.25)  # every frame
        with VideoReader(path) as reader:
            frames = reader.read(times, 64)
        inside = [_colour_share(f, rgb) for t, f in zip(times, frames) if start + 0.25 <= t < end - 0.25]
        outside = [_colour_share(f, rgb) for t, f in zip(times, frames) if t < start - 0.25 or t >= end + 0.25]
        assert inside and min(inside) > 0.15, "the class shape must be on screen during the evidence"
        assert max(outside) < 0.02, "and nowhere else"
    assert sorted(set(splits)) == ["train", "val"] and splits.count("val") == 2


@pytest.mark.parametrize("bad", [dict(classes=9), dict(classes=1), dict(min_evidence=10), dict(width=15), dict(val_fraction=1.0), dict(gop=0)])
def test_bad_settings(bad):
    with pytest.raises(AdaframeError):
        SynthVideoConfig(**bad)


def test_long_clips_with_a_fixed_keyframe_interval(tmp_path):
    """--seconds and --gop (the long-clip benchmark's settings, scaled down): every clip that long, a keyframe exactly
    every gop frames and nowhere else, even where the class shape cuts in."""
    import av

    from adaframe.media.synth_video import generate_videos

    out = generate_videos(SynthVideoConfig(videos=2, seconds=5, fps=10, gop=7, width=32, height=32, min_evidence=2, max_evidence=2),
                          tmp_path, progress=False)
    for path in sorted((out / "videos").glob("*.mp4")):
        info = probe(path)
        assert info.duration == pytest.approx(5.0) and info.frames == 50
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            keys = sorted(int(round(p.pts * stream.time_base * 10)) for p in container.demux(stream) if p.size and p.is_keyframe)
        assert keys == list(range(0, 50, 7))
