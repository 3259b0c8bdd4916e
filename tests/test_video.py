"""Decoding with PyAV: probe values, the time rule, seek == sequential, the image pipeline, bad inputs."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from adaframe.utils import AdaframeError
from adaframe.media.memory_rule import memory_frames
from adaframe.media.probe import probe
from adaframe.media.reader import DEFAULT_SEEK_GAP, VideoReader, count_frames, decode_at_rate, sample_times, to_rgb, uniform_times
from adaframe.media.timing import timed_frames
from conftest import write_audio_only

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared/data/videos"
needs_clips = pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"the shared test clips are not at {VIDEOS}")

# name: (duration s, display width, height, rotation, stated frames, fps, codec, frames decoded)
GOOD = {
    "decord_flipping_a_pancake.mkv": (10.381, 426, 240, 0, None, 30.0, "h264", 310),
    "decord_rotated_90.mov": (0.1, 320, 568, -90, 3, 30.0, "h264", 3),
    "decord_unordered.mov": (0.125, 50, 50, 0, 4, 32.0, "h264", 4),
    "mmaction2_demo_arm_wrestling.mp4": (10.0, 340, 256, 0, 280, 28.0, "h264", 280),
    "mmaction2_test.avi": (6.56, 320, 240, 0, 164, 25.0, "mpeg4", 164),
    "mmaction2_test.mp4": (10.0, 340, 256, 0, 300, 30.0, "h264", 300),
}


def clip(name: str) -> Path:
    return VIDEOS / name


def write_video(path: Path, levels: list[int], fps: int = 10, codec: str = "mpeg4", fmt: str | None = None) -> Path:
    """A 64x48 video whose frame i is flat grey ``levels[i]``, so a decoded frame says which one it is."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for level in levels:
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), level, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def grey(frame: np.ndarray) -> float:
    return float(frame.mean())


# ----------------------------------------------------------------------------- times

def test_sample_times():
    assert sample_times(10.0).tolist() == [float(i) for i in range(10)]
    assert len(sample_times(10.381)) == 11
    assert sample_times(2.5, fps=2).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert sample_times(0.1).tolist() == [0.0]  # shorter than one period: still one frame
    assert sample_times(0.0).tolist() == [0.0]
    with pytest.raises(ValueError):
        sample_times(10.0, fps=0)


def test_uniform_times():
    np.testing.assert_allclose(uniform_times(10.0, 4), [1.25, 3.75, 6.25, 8.75])
    np.testing.assert_allclose(uniform_times(3.0, 1), [1.5])
    with pytest.raises(ValueError):
        uniform_times(3.0, 0)


# ----------------------------------------------------------------------------- the image pipeline

@pytest.mark.parametrize("height, width, size", [(240, 320, 224), (320, 240, 112), (100, 100, 64)])
def test_pipeline_scales_the_shorter_side_to_256_of_224_then_crops_the_centre(height, width, size):
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([xx * 255 / width, yy * 255 / height, 128 + 100 * np.sin(xx / 17.0) * np.cos(yy / 23.0)], -1)
    image = smooth.round().astype(np.uint8)
    got = to_rgb(av.VideoFrame.from_ndarray(image, format="rgb24"), size)
    short = round(size * 256 / 224)
    new_w, new_h = (short, round(height * short / width)) if width <= height else (round(width * short / height), short)
    scaled = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    want = scaled[top:top + size, left:left + size].astype(int)
    assert got.shape == (size, size, 3) and got.dtype == np.uint8
    assert np.abs(got - want).mean() < 0.5  # two bilinear implementations agree to ~0.07; a crop one pixel off gives ~1


# ----------------------------------------------------------------------------- the time rule on synthetic clips

def test_frame_at_t_is_the_last_frame_starting_at_or_before_t(tmp_path):
    path = write_video(tmp_path / "steps.mp4", [20 * i for i in range(12)])  # frame i spans [i/10, (i+1)/10)
    times = [-1.0, 0.0, 0.099, 0.1, 0.35, 0.7, 1.1, 1.15, 5.0]
    expected = [0, 0, 0, 1, 3, 7, 11, 11, 11]
    with VideoReader(path) as reader:
        got = reader.read(times, 32)
    assert [round(grey(f) / 20) for f in got] == expected


def test_unstamped_raw_stream_is_timed_by_frame_duration_and_reread_from_the_start(tmp_path):
    path = write_video(tmp_path / "raw.m4v", [20 * i for i in range(12)], fmt="m4v")  # no pts, no dts, no duration
    info = probe(path)
    assert info.frames is None
    assert info.duration == pytest.approx(1.2)  # found by decoding: 12 frames of 0.1 s
    times = [0.95, 0.05, 0.55, 0.25]
    with VideoReader(path, seek_gap=0.0) as reader:
        got = [reader.read([t], 32)[0] for t in times]
        assert reader.seeks >= 2  # the backward jumps, each answered by decoding again from the top
    assert [round(grey(f) / 20) for f in got] == [9, 0, 5, 2]


# ----------------------------------------------------------------------------- the shared clips

@needs_clips
@pytest.mark.parametrize("name", sorted(GOOD))
def test_probe_good_clips(name):
    duration, width, height, rotation, frames, fps, codec, _ = GOOD[name]
    info = probe(clip(name))
    assert info.duration == pytest.approx(duration, abs=1e-6)
    assert (info.width, info.height, info.rotation) == (width, height, rotation)
    assert info.frames == frames
    assert info.fps == pytest.approx(fps)
    assert info.codec == codec
    assert info.start == 0.0


@needs_clips
@pytest.mark.parametrize("name", sorted(GOOD))
def test_count_frames(name):
    assert count_frames(clip(name)) == GOOD[name][-1]


@needs_clips
@pytest.mark.parametrize("name", sorted(GOOD))
def test_decode_at_rate_gives_one_frame_per_second(name):
    frames, times = decode_at_rate(clip(name), fps=1.0, size=112)
    expected_t = {"mmaction2_test.mp4": 10, "mmaction2_demo_arm_wrestling.mp4": 10, "decord_flipping_a_pancake.mkv": 11,
                  "mmaction2_test.avi": 7, "decord_rotated_90.mov": 1, "decord_unordered.mov": 1}
    assert len(times) == len(sample_times(GOOD[name][0])) == expected_t[name]
    np.testing.assert_array_equal(times, np.arange(expected_t[name], dtype=float))
    assert frames.shape == (len(times), 112, 112, 3) and frames.dtype == np.uint8
    if len(frames) > 1:
        assert not np.array_equal(frames[0], frames[-1])  # real, changing pictures, not one repeated frame
    with VideoReader(clip(name), seek_gap=0.0) as reader:  # what predict does: seek, backward, one at a time
        again = [reader.read([t], 112)[0] for t in times[::-1]]
    assert all(np.array_equal(a, b) for a, b in zip(again[::-1], frames))


def scrambled_times(duration: float, seed: int) -> list[float]:
    """Many times over the clip, before its first frame and past its end, in a random order."""
    grid = np.linspace(0.0, duration, 25)
    edges = [-1.0, 0.0, 1e-6, duration - 1e-3, duration, duration + 3.0, 1e12]
    near_keyframes = [7.8, 7.84, 6.65, 8.2, 9.55]  # just before/after keyframes of the two mp4s
    times = np.concatenate([grid, edges, near_keyframes])
    return np.random.default_rng(seed).permutation(times).tolist()


@needs_clips
@pytest.mark.parametrize("seek_gap", [0.0, DEFAULT_SEEK_GAP])
@pytest.mark.parametrize("name", sorted(GOOD))
def test_seeking_reader_gives_the_same_frames_as_one_sequential_pass(name, seek_gap):
    times = scrambled_times(GOOD[name][0], seed=len(name))
    with VideoReader(clip(name), seek_gap=math.inf) as sequential:
        want = sequential.read(times, 48)  # sorted inside: one forward pass
        assert sequential.seeks == 0
    with VideoReader(clip(name), seek_gap=seek_gap) as jumping:
        got = [jumping.read([t], 48)[0] for t in times]  # one at a time, backward jumps included
        if seek_gap == 0.0 and GOOD[name][-1] > 10:
            assert jumping.seeks > 0
    for t, a, b in zip(times, got, want):
        assert np.array_equal(a, b), f"{name}: frame at {t:.3f} s differs between seeking and sequential decoding"


class _LandsLate:
    """A container whose seeks land on the keyframe AFTER the target, as a demuxer with a sloppy index might."""

    def __init__(self, container):
        self._container = container

    def seek(self, offset, **kwargs):
        self._container.seek(offset, **{**kwargs, "backward": False})

    def __getattr__(self, name):
        return getattr(self._container, name)


@needs_clips
def test_a_seek_that_lands_after_the_target_steps_back_until_it_does_not():
    path = clip("mmaction2_demo_arm_wrestling.mp4")  # keyframes at 0, 6.68, 8.21, 9.57 s
    times = [9.0, 7.0, 3.0, 9.9, 6.0, 8.5]
    with VideoReader(path, seek_gap=math.inf) as sequential:
        want = sequential.read(times, 48)
    with VideoReader(path, seek_gap=0.0) as reader:
        reader._container = _LandsLate(reader._container)
        got = [reader.read([t], 48)[0] for t in times]
        assert reader.seeks > len(times)  # the extra seeks are the steps back
    for t, a, b in zip(times, got, want):
        assert np.array_equal(a, b), f"frame at {t} s"


@needs_clips
def test_a_late_frame_decodes_only_from_the_keyframe_before_it():
    # mmaction2_test.mp4 has keyframes at frames 0 and 235 (7.83 s) of 300.
    pictures = {}
    for skip in (False, True):
        with VideoReader(clip("mmaction2_test.mp4"), skip_unreferenced=skip) as reader:
            pictures[skip] = reader.read([9.5], 224)[0]
            assert reader.seeks == 1
            assert reader.decoded <= 300 - 235  # frames 235..286, not the 286 before
            after_seek = reader.decoded
            pictures[skip, 9.9] = reader.read([9.9], 224)[0]  # close ahead: decode forward
            assert reader.seeks == 1
            ahead = reader.decoded - after_seek
            reader.read([1.0], 224)  # behind: seek back
            assert reader.seeks == 2
        if skip:  # the B-frames nothing asked for depends on cost nothing: fewer frames, the same pictures
            assert reader.reading == "seek (skipping unreferenced frames)"
            assert after_seek < plain_after_seek and ahead <= 12
        else:
            assert reader.reading == "seek" and ahead == 12
            plain_after_seek = after_seek
    assert np.array_equal(pictures[False], pictures[True]) and np.array_equal(pictures[False, 9.9], pictures[True, 9.9])


@needs_clips
def test_close_forward_requests_do_not_seek():
    with VideoReader(clip("mmaction2_test.mp4")) as reader:
        for t in (0.5, 1.5, 3.0, 4.9):
            reader.read([t], 64)
        assert reader.seeks == 0
        assert reader.decoded == round(4.9 * 30) + 2  # frames up to 4.9 s and the one after it


@needs_clips
def test_far_jump_seeks_only_when_a_keyframe_lies_between():
    with VideoReader(clip("mmaction2_test.avi")) as avi:  # one keyframe: seeking could only go back to it
        avi.read([0.5], 64)
        avi.read([5.0], 64)
        assert avi.seeks == 0
    with VideoReader(clip("decord_flipping_a_pancake.mkv")) as mkv:  # keyframes every 5 s
        mkv.read([0.5], 64)
        before = mkv.decoded
        mkv.read([8.0], 64)
        assert mkv.seeks == 1 and mkv.decoded - before == 241 - 150 + 1  # frames 150..241, not 17..241


@needs_clips
def test_sizes_per_request():
    with VideoReader(clip("mmaction2_test.mp4")) as reader:
        a, b, c = reader.read([2.0, 2.0, 0.5], [224, 112, 64])
        alone = reader.read([2.0], 112)[0]
    assert a.shape == (224, 224, 3) and b.shape == (112, 112, 3) and c.shape == (64, 64, 3)
    assert a.dtype == b.dtype == c.dtype == np.uint8
    assert np.array_equal(b, alone)
    with pytest.raises(ValueError):
        VideoReader(clip("mmaction2_test.mp4")).read([1.0, 2.0], [224])


@needs_clips
def test_rotated_clip_is_shown_portrait_turned_clockwise():
    path = clip("decord_rotated_90.mov")
    info = probe(path)
    assert info.height > info.width  # coded 568x320, displayed portrait
    # ffmpeg's own autorotation of a -90 display matrix is transpose=clock; build that display frame.
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        coded = next(container.decode(stream))
        graph = av.filter.Graph()
        src, turn, sink = graph.add_buffer(template=stream), graph.add("transpose", "clock"), graph.add("buffersink")
        src.link_to(turn)
        turn.link_to(sink)
        graph.configure()
        graph.push(coded)
        shown = graph.pull().to_ndarray(format="rgb24")
    assert shown.shape == (568, 320, 3)
    want = to_rgb(av.VideoFrame.from_ndarray(shown, format="rgb24"), 224)  # an unrotated frame of the display
    with VideoReader(path) as reader:
        got = reader.read([0.0], 224)[0].astype(int)
    errors = [np.abs(np.rot90(got, k) - want).mean() for k in range(4)]
    assert errors[0] < 3 < min(errors[1:])  # chroma siting differs slightly; a wrong turn differs a lot


@needs_clips
def test_avi_with_shuffled_pts_follows_decoder_output_order():
    path = clip("mmaction2_test.avi")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        raw_pts = [f.pts for f in container.decode(stream)]
        assert raw_pts[:4] == [1, 2, 4, 3]  # the premise: pts out of order in output order
        container.seek(0, stream=stream)
        timed = list(timed_frames(container, stream, path))
        stamps = [t.ts for t in timed]
        assert stamps == sorted(stamps) and len(stamps) == 164
        assert stamps[2] == stamps[3] == float(Fraction(4, 25))
        # The frame at each timestamp is the last frame output with that timestamp.
        last_at = {ts: i for i, ts in enumerate(stamps)}
        want = {ts: to_rgb(timed[i].frame, 32) for ts, i in last_at.items()}
    with VideoReader(path) as reader:
        got = reader.read(list(want), 32)
    for (ts, w), g in zip(want.items(), got):
        assert np.array_equal(g, w), f"frame at {ts:.2f} s"
    assert np.array_equal(got[2], want[stamps[3]]) and not np.array_equal(got[2], to_rgb(timed[2].frame, 32))


# ----------------------------------------------------------------------------- bad inputs

def _no_frames(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 64, 48
        out.start_encoding()
    return path


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_FILES = {  # what: (make it in a folder, words the error must contain)
    "missing": (lambda d: d / "nope.mp4", "no such file"),
    "zero bytes": (lambda d: _written(d / "zero.mp4", b""), "empty"),
    "text as mp4": (lambda d: _written(d / "text.mp4", b"not a video\n" * 20), "cannot open"),
    "audio only": (lambda d: write_audio_only(d / "silence.m4a"), "no video stream"),
    "no frames": (lambda d: _no_frames(d / "empty.avi"), "zero length"),
}


@pytest.mark.parametrize("what", sorted(BAD_FILES))
@pytest.mark.parametrize("call", ["probe", "decode_at_rate", "count_frames", "read"])
def test_bad_files_fail_with_one_clear_line(tmp_path, what, call):
    make, words = BAD_FILES[what]
    path = make(tmp_path)
    fns = {"probe": probe, "decode_at_rate": decode_at_rate, "count_frames": count_frames,
           "read": lambda p: VideoReader(p).read([0.0], 32)}
    with pytest.raises(AdaframeError) as err:
        fns[call](path)
    message = str(err.value)
    assert str(path) in message and words in message and "\n" not in message


@needs_clips
@pytest.mark.parametrize("call", ["probe", "decode_at_rate", "count_frames"])
def test_truncated_mp4_fails_clearly(tmp_path, call):
    data = clip("mmaction2_test.mp4").read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: int(0.3 * len(data))])  # the moov index is at the end: cut off
    with pytest.raises(AdaframeError, match="truncated.mp4: cannot open"):
        {"probe": probe, "decode_at_rate": decode_at_rate, "count_frames": count_frames}[call](path)


@needs_clips
def test_truncated_faststart_mp4_fails_clearly(tmp_path):
    """moov in front: the index survives the cut and the stated duration with it, so the stream ends short of it."""
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(clip("mmaction2_test.mp4"))) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    assert count_frames(faststart) == 300
    data = faststart.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    assert probe(path).duration == pytest.approx(10.0)  # the header is intact
    with pytest.raises(AdaframeError, match=r"ends at 4\.47 s, but the file says it lasts 10\.00 s \(truncated file\?\)"):
        count_frames(path)


# A cut AVI loses its idx1 index (at the end) and FFmpeg recomputes the duration from the packets
# left: half of mmaction2_test.avi states 3.28 s and decodes 77 frames; only the header keeps 164.
AVI_CUT = 147283


@needs_clips
@pytest.mark.parametrize("call", ["probe", "decode_at_rate", "count_frames", "read", "seek"])
def test_truncated_avi_fails_clearly_instead_of_passing_for_a_shorter_video(tmp_path, call):
    path = tmp_path / "truncated.avi"
    path.write_bytes(clip("mmaction2_test.avi").read_bytes()[:AVI_CUT])
    words = {  # probe reads the header; a reader finds it at the end of the stream, counting or estimating the frames
        "probe": r"lasts 3\.28 s, but the file says it has 164 frames \(6\.56 s at 25 fps\) \(truncated file\?\)$",
        "decode_at_rate": r"lasts 3\.28 s, but the file says it has 164 frames",
        "count_frames": r"ends after 77 frames, but the file says it has 164 \(truncated file\?\)$",
        "read": r"ends after 77 frames, but the file says it has 164 \(truncated file\?\)$",
        "seek": r"ends after about 78 frames, but the file says it has 164 \(truncated file\?\)$",
    }
    fns = {"probe": probe, "decode_at_rate": decode_at_rate, "count_frames": count_frames,
           "read": lambda p: VideoReader(p, seek_gap=math.inf).read([1.0, 5.0], 32),
           "seek": lambda p: VideoReader(p, seek_gap=0.0).read([5.0], 32)}
    with pytest.raises(AdaframeError, match=f"^{re.escape(str(path))}: the video stream " + words[call]):
        fns[call](path)
    whole = probe(clip("mmaction2_test.avi"))
    assert (whole.frames, whole.duration) == (164, pytest.approx(6.56)) and count_frames(clip("mmaction2_test.avi")) == 164


@needs_clips
def test_mp4_trimmed_by_its_edit_list_is_not_taken_for_truncated(tmp_path):
    """An edit list may show 5 s of 10: MOV/MP4 still state every sample (300), so their count proves nothing."""
    data = bytearray(clip("mmaction2_test.mp4").read_bytes())
    elst = data.find(b"elst")
    assert data[elst + 8: elst + 12] == bytes([0, 0, 0, 1])  # version 0, one entry: duration (ms), media time, rate
    data[elst + 12: elst + 16] = (5000).to_bytes(4, "big")
    path = tmp_path / "trimmed.mp4"
    path.write_bytes(bytes(data))
    info = probe(path)
    assert (info.duration, info.frames) == (pytest.approx(5.0), 300)
    assert count_frames(path) == 150
    frames, times = decode_at_rate(path, size=32)
    assert len(frames) == len(times) == 5


@needs_clips
def test_truncated_mkv_fails_instead_of_repeating_its_last_frame(tmp_path):
    data = clip("decord_flipping_a_pancake.mkv").read_bytes()
    path = tmp_path / "truncated.mkv"
    path.write_bytes(data[: int(0.3 * len(data))])  # decodes to 2.8 s of a stated 10.38 s, without an error
    assert probe(path).duration == pytest.approx(10.381)
    with VideoReader(path) as reader:
        reader.read([1.0, 2.0], 32)  # before the cut: fine
        with pytest.raises(AdaframeError, match=r"ends at 2\.80 s.*10\.38 s \(truncated"):
            reader.read([5.0], 32)
    with pytest.raises(AdaframeError, match="truncated"):
        decode_at_rate(path)


@needs_clips
def test_corrupted_clip_names_file_frames_and_time():
    path = clip("decord_corrupted.mp4")
    assert probe(path).frames == 50  # the header is fine
    with VideoReader(path) as reader:
        assert reader.read([1.0], 32)[0].shape == (32, 32, 3)  # frames before the damage read fine
    for fn in (decode_at_rate, count_frames):
        with pytest.raises(AdaframeError) as err:
            fn(path)
        message = str(err.value)
        assert str(path) in message and "after 28 frames decoded fine" in message and "2.70 s" in message


@needs_clips
@pytest.mark.parametrize("name", sorted(GOOD))
def test_watched_frames_kept_by_a_pass_are_the_frames_a_fresh_read_gives(name):
    """predict watches the 1 fps grid while decoding the memory frames; kept frames must be the right ones."""
    duration = GOOD[name][0]
    grid = sample_times(duration, 1.0)
    memory = uniform_times(duration, 16)
    with VideoReader(clip(name)) as reader:
        reader.watch(grid, 40)
        reader.read(memory, 24)  # the memory pass
        decoded = reader.decoded
        kept = [float(t) for t in grid if float(t) in reader._kept]
        got = reader.read(kept, 40)
        assert reader.decoded == decoded, "a kept frame was decoded again"
        assert kept or len(grid) == 1
    with VideoReader(clip(name)) as fresh:
        want = [fresh.read([t], 40)[0] for t in kept[::-1]][::-1]  # one at a time, by seeking
    for t, a, b in zip(kept, got, want):
        assert np.array_equal(a, b), f"{name}: kept frame at {t} s differs from a fresh read"


# ----------------------------------------------------------------------------- the memory rule

@pytest.fixture(scope="module")
def long_gop_clip(tmp_path_factory) -> Path:
    """40 s at 10 fps with a keyframe every 25 frames (2.5 s): 16 memory segments of exactly one GOP each, the
    shape of the long-clip benchmark (180 s, 30 fps, GOP 250) at a size a test can afford."""
    from adaframe.media.synth_video import SynthVideoConfig, generate_videos

    cfg = SynthVideoConfig(videos=2, classes=2, seconds=40, fps=10, gop=25, width=64, height=48, val_fraction=0.0)
    return next((generate_videos(cfg, tmp_path_factory.mktemp("long"), progress=False) / "videos").glob("*.mp4"))


@pytest.fixture(scope="module")
def short_segment_clip(tmp_path_factory) -> Path:
    """32 s at 10 fps with a keyframe every 2.5 s: 16 memory segments of 2 s, shorter than a GOP, so that probes of
    neighbouring segments land on the same keyframe and some segments hold none (as in the long-clip benchmark)."""
    from adaframe.media.synth_video import SynthVideoConfig, generate_videos

    cfg = SynthVideoConfig(videos=2, classes=2, seconds=32, fps=10, gop=25, width=64, height=48, val_fraction=0.0)
    return next((generate_videos(cfg, tmp_path_factory.mktemp("short"), progress=False) / "videos").glob("*.mp4"))


def _memory_cases(long_gop_clip: Path, short_segment_clip: Path) -> list[Path]:
    return [long_gop_clip, short_segment_clip] + ([clip(n) for n in sorted(GOOD)] if VIDEOS.is_dir() else [])


@pytest.mark.parametrize("warm", [False, True])
def test_memory_rule_equals_a_sequential_pass_over_keyframe_flags(long_gop_clip, short_segment_clip, warm):
    """extract and predict pick memory frames with seeks; the rule is defined on the file alone, so a pass that
    reads the decoder's keyframe flags gives the same frames and times, from any reader state."""
    from conftest import keyframe_memory

    for path in _memory_cases(long_gop_clip, short_segment_clip):
        duration = probe(path).duration
        want, want_times = keyframe_memory(path, 16, 24)
        with VideoReader(path) as reader:
            if warm:  # a reader that has been elsewhere first, as extract's after its 1 fps pass
                reader.read([duration * 0.7, duration * 0.1], 24)
            got, times = memory_frames(reader, duration, 16, 24, keyframes=True)
        np.testing.assert_allclose(times, want_times, atol=1e-9, err_msg=str(path))
        for k, (a, b) in enumerate(zip(got, want)):
            assert np.array_equal(a, b), f"{path.name}: memory frame {k} differs"


def test_memory_pass_decodes_at_most_two_frames_per_memory_frame_with_keyframes(long_gop_clip):
    duration = probe(long_gop_clip).duration
    with VideoReader(long_gop_clip) as reader:
        _, times = memory_frames(reader, duration, 16, 24, keyframes=True)
        keyed = reader.decoded
    with VideoReader(long_gop_clip) as reader:
        _, centre_times = memory_frames(reader, duration, 16, 24, keyframes=False)
        centred = reader.decoded
    assert keyed <= 2 * 16 + 1  # (+1: the first frame, decoded on opening)
    assert centred > 5 * 16  # the segment centres cost half a GOP each
    assert np.array_equal(centre_times, uniform_times(duration, 16))
    # Every memory frame is the keyframe of its own segment, so none repeats and all stay in their segment.
    edges = np.arange(17) * duration / 16
    assert np.all((times >= edges[:-1]) & (times < edges[1:]))
    np.testing.assert_allclose(times * 10 % 25, 0, atol=1e-6)  # keyframes: every 25th frame
    with VideoReader(long_gop_clip) as reader:
        _, subset_times = memory_frames(reader, duration, 16, 24, keyframes=True, subset=[1, 5])
    np.testing.assert_array_equal(subset_times, times[[1, 5]])


def _packets_given(path: Path, t: float = -math.inf) -> int:
    """How many packets a single-threaded decoder is given, from the keyframe before ``t`` (the start for none), until it
    outputs a frame past ``t``: the frames wanted and the pictures decoded behind them before they come out."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        if t > 0:
            container.seek(math.floor(t / stream.time_base), stream=stream, backward=True, any_frame=False)
        for sent, packet in enumerate(container.demux(stream), start=1):
            if any(float(f.pts * stream.time_base) > t for f in packet.decode()):
                return sent
    raise AssertionError("no frame past t")


def test_a_seek_decodes_no_picture_past_what_a_single_threaded_decoder_needs(long_gop_clip):
    """A seeking reader (decoding every picture) reading one frame decodes, by the end, what a single-threaded decoder
    is given from the keyframe until the frame past the target comes out: no frame threads holding more pictures back,
    each counted (``decoded`` drains what the decoder held when the run ends)."""
    t = 6.1  # mid-GOP: keyframes every 2.5 s
    with VideoReader(long_gop_clip, skip_unreferenced=False) as reader:
        reader.read([t], 24)
    assert reader.decoded == _packets_given(long_gop_clip) + _packets_given(long_gop_clip, t)  # opening's run, then the seek's


def test_a_probe_landing_where_the_last_one_did_decodes_nothing(long_gop_clip):
    """Two probes before the same keyframe (every 2.5 s): the second gives the first one's frame without decoding, as
    does a probe of the first keyframe after opening; reads after them are the file's frames, as a sequential pass
    gives them."""
    with VideoReader(long_gop_clip, seek_gap=math.inf) as sequential:
        want = sequential.read([5.0, 6.1, 4.0, 30.0], 24)
    with VideoReader(long_gop_clip) as reader:
        start = reader.first_after_seek(1.0)  # lands on the first packet, which opening the file decoded
        # the opening run's first frame and the pictures decoded behind it before it came out, counted when the seek ends it
        assert start is not None and start.ts == 0.0 and reader.decoded == _packets_given(long_gop_clip)
        first = reader.first_after_seek(6.0)
        decoded = reader.decoded
        again = reader.first_after_seek(7.0)
        assert reader.decoded == decoded, "the second probe decoded again"
        assert again is not None and first is not None and again.ts == first.ts == 5.0
        assert np.array_equal(reader.rgb(again.frame, 7.0, 24), want[0])
        elsewhere = reader.first_after_seek(8.0)  # the next keyframe: decoded
        assert elsewhere is not None and elsewhere.ts == 7.5 and reader.decoded == decoded + 1
        assert reader.first_after_seek(6.5) is not None and reader.decoded == decoded + 2  # only the last probe is kept
        got = reader.read([6.1, 4.0, 30.0], 24)  # reads after a probe that decoded nothing seek again
    for t, a, b in zip([6.1, 4.0, 30.0], got, want[1:]):
        assert np.array_equal(a, b), f"frame at {t} s differs from the sequential pass"


def test_memory_pass_decodes_each_probed_keyframe_once_in_a_row(short_segment_clip):
    """The memory pass's decoding, bounded from the stream's structure: one frame for each change of the keyframe its
    probes land on (consecutive probes often land on the same one), the first frame, and what reading its segment
    centres costs a fresh reader. The bound is below one frame a probe, what decoding every probe costs."""
    duration = probe(short_segment_clip).duration
    with VideoReader(short_segment_clip) as reader:
        landings: list[float] = []
        probe_first = reader.first_after_seek

        def recording(t: float):
            first = probe_first(t)
            landings.append(first.ts if first is not None else math.nan)
            return first

        reader.first_after_seek = recording  # type: ignore[method-assign]
        _, times = memory_frames(reader, duration, 16, 24, keyframes=True)
        decoded = reader.decoded
    centres = uniform_times(duration, 16)
    exact = [float(c) for c, t in zip(centres, times) if t not in landings]
    assert exact, "the premise: some segments hold no keyframe"
    with VideoReader(short_segment_clip) as fresh:
        fresh.read(exact, 24)
        exact_cost = fresh.decoded - 1  # less the first frame, decoded on opening
    changes = sum(1 for i, t in enumerate(landings) if i == 0 or t != landings[i - 1])
    assert changes < len(landings), "the premise: consecutive probes land on the same keyframe"
    assert decoded <= 1 + changes + exact_cost
