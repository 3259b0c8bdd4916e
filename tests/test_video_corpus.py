"""Hostile encodings written on the spot (``video_corpus``), each frame showing its own index: what a user relies on is
that the frame at time t is the same picture, and the right one by the time rule, whether the reader decodes
sequentially or seeks for every request, on any encoding FFmpeg writes."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import av
import numpy as np
import pytest

from adaframe.media.probe import probe
from adaframe.media.reader import VideoReader
from adaframe.utils import AdaframeError
from video_corpus import CORPUS, ClipInfo, ClipSpec, Unreadable, best_video_stream, read_index, reference, unavailable, write_clip

SIZE = 112  # the output side: the grid's cells are 24 pixels wide in it
SEEKS = 40  # forced-seek reads per clip
CLIPS = [pytest.param(spec, id=spec.name) for spec in CORPUS]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """``corpus(spec)``: the clip written once per session (per xdist worker), or a skip when no encoder of it is here."""
    root: Path = tmp_path_factory.mktemp("corpus")
    written: dict[str, ClipInfo | str] = {}

    def get(spec: ClipSpec) -> ClipInfo:
        if spec.name not in written:
            written[spec.name] = unavailable(spec) or write_clip(spec, root / f"{spec.name}.{spec.ext}")
        info = written[spec.name]
        if isinstance(info, str):
            pytest.skip(info)
        return info
    return get


def times_for(info: ClipInfo) -> list[float]:
    """Every shown frame's own time, the midpoints between them, before the first and past the end."""
    t = info.times
    mid = (t[:-1] + t[1:]) / 2
    edges = [-1.0, 0.0, info.duration - 1e-3, info.duration, info.duration + 3.0]
    return sorted(set(np.concatenate([t, mid, edges]).tolist()))


def keyframe_times(info: ClipInfo) -> list[float]:
    """Seconds from the stream start of the painted stream's keyframe packets (their pts), the first one left out."""
    with av.open(str(info.path)) as c:
        s = c.streams.video[info.stream]
        start = s.start_time or 0
        keys = [float((p.pts - start) * s.time_base) for p in c.demux(s) if p.is_keyframe and p.pts is not None]
    return sorted(keys)[1:]


def index_of(rgb: np.ndarray) -> int | str:
    try:
        return read_index(rgb)
    except Unreadable as e:
        return f"no index grid ({e})"


def sequential(info: ClipInfo, times: list[float]) -> dict[float, np.ndarray | str]:
    """One forward pass (``seek_gap=inf``) over all the times at once, as extraction reads; should the reader raise, the
    pass again one time at a time, so that each time gets its picture or the error's message."""
    with VideoReader(info.path, seek_gap=math.inf) as reader:
        try:
            return dict(zip(times, reader.read(times, SIZE)))
        except AdaframeError:
            pass
    out: dict[float, np.ndarray | str] = {}
    with VideoReader(info.path, seek_gap=math.inf) as reader:
        for t in sorted(times):
            try:
                out[t] = reader.read([t], SIZE)[0]
            except AdaframeError as e:
                out[t] = f"AdaframeError: {e}"
        assert reader.seeks == 0
    return out


def report(info: ClipInfo, wrong: list[str], checked: int, what: str) -> str:
    return (f"{info.spec.name} ({info.spec.what}): {len(wrong)} of {checked} frames wrong in the {what}:\n  "
            + "\n  ".join(wrong[:12]) + ("\n  ..." if len(wrong) > 12 else ""))


@pytest.mark.parametrize("spec", CLIPS)
def test_the_corpus_clip_decodes_to_what_it_claims(corpus, spec):
    """Plain PyAV (no reader) shows the painted frames at their written times: a wrong answer below is the reader's."""
    info = corpus(spec)
    assert not info.notes, f"{spec.name}: {info.notes}"
    got = reference(info)
    assert [i for _, i in got] == info.shown.tolist(), f"{spec.name}: the decoder shows other frames than written"
    np.testing.assert_allclose([t for t, _ in got], info.times, atol=1e-9, err_msg=f"{spec.name}: frame times")
    assert best_video_stream(info.path) == info.stream, f"{spec.name}: FFmpeg's own pick is not the painted stream"


@pytest.mark.parametrize("spec", CLIPS)
def test_probe_states_the_true_duration(corpus, spec):
    info = corpus(spec)
    got = probe(info.path)
    assert got.duration == pytest.approx(info.duration, abs=1 / spec.fps + 1e-3), \
        f"{spec.name}: probe says {got.duration:.3f} s, the stream lasts {info.duration:.3f} s"
    assert (got.width, got.height) == (spec.width, spec.height), f"{spec.name}: probe describes another stream"


@pytest.mark.parametrize("spec", CLIPS)
def test_sequential_pass_shows_the_frame_the_time_rule_names(corpus, spec):
    """Every frame's own time, the midpoints, and times before and past the clip: the last frame at or before t."""
    info = corpus(spec)
    times = times_for(info)
    got = sequential(info, times)
    wrong = []
    for t in times:
        want, frame = info.expected(t), got[t]
        index = frame if isinstance(frame, str) else index_of(frame)
        if index != want:
            wrong.append(f"at {t:.4f} s expected frame {want}, got {index}")
    assert not wrong, report(info, wrong, len(times), "sequential pass")


@pytest.mark.parametrize("spec", CLIPS)
def test_forced_seeks_give_the_sequential_pictures(corpus, spec):
    """A seek for every request, in a scrambled order: the same pixels as the sequential pass, and the right frame.
    Asked: 40 times at random, the times up to 4 frames before each keyframe (open GOPs' leading frames), the first and
    last frames and times before and past the clip."""
    info = corpus(spec)
    times = times_for(info)
    rng = np.random.default_rng(zlib.crc32(spec.name.encode()))
    keys = keyframe_times(info)
    near = {t for t in times if any(k - 4 / spec.fps <= t <= k for k in keys)}  # open GOPs' leading frames among them
    ends = {t for t in times if t <= info.times[0] or t >= info.times[-1]}  # the first and last frames, before and past
    asked = rng.permutation(sorted(near | ends | set(rng.choice(times, SEEKS, replace=False).tolist()))).tolist()
    want_pictures = sequential(info, sorted(asked))
    wrong = []
    with VideoReader(info.path, seek_gap=0.0) as reader:
        for t in asked:
            want = info.expected(t)
            try:
                frame = reader.read([t], SIZE)[0]
            except AdaframeError as e:
                wrong.append(f"at {t:.4f} s expected frame {want}, got AdaframeError: {e}")
                continue
            index, same = index_of(frame), want_pictures[t]
            if index != want:
                wrong.append(f"at {t:.4f} s expected frame {want}, got {index}")
            elif isinstance(same, str) or not np.array_equal(frame, same):
                wrong.append(f"at {t:.4f} s frame {want} as expected, but other pixels than the sequential pass "
                             f"({same if isinstance(same, str) else 'max difference %d' % np.abs(frame.astype(int) - same).max()})")
        seeks, reading = reader.seeks, reader.reading
    assert not wrong, report(info, wrong, len(asked), f"forced-seek pass ({seeks} seeks, read by {reading})")
    # A file whose seeks cannot be trusted (no index: MPEG-TS) is read forward, from the top again for an earlier time
    assert (reading == "forward") == (spec.ext == "ts") and (seeks > 0) == (reading != "forward"), (reading, seeks)


@pytest.mark.parametrize("name", ["h264_open_gop_bpyramid", "hevc_open_gop_bpyramid_mkv"])
def test_skipping_unreferenced_pictures_decodes_less_for_the_same_pictures(corpus, name):
    """B-pyramids: with the decoder skipping what nothing asked for depends on, reading one frame at a time in a scrambled
    order costs well under the plain decoder's frames, and every picture is the plain decoder's."""
    spec = next(s for s in CORPUS if s.name == name)
    info = corpus(spec)
    asked = np.random.default_rng(0).permutation(info.times)[:30].tolist()
    pictures, decoded = {}, {}
    for skip in (False, True):
        with VideoReader(info.path, skip_unreferenced=skip) as reader:
            pictures[skip] = [reader.read([t], SIZE)[0] for t in asked]
            decoded[skip] = reader.decoded
            assert reader.reading == ("seek (skipping unreferenced frames)" if skip else "seek")
    assert all(np.array_equal(a, b) for a, b in zip(pictures[False], pictures[True]))
    assert [index_of(p) for p in pictures[True]] == [info.expected(t) for t in asked]
    assert decoded[True] < 0.8 * decoded[False], decoded
