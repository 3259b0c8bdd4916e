"""A corpus of hostile video encodings, written on the spot with PyAV's own FFmpeg, whose frames show their index.

Every clip's main stream paints frame i with ``paint(i, ...)``: a 4 x 4 grid of big black or white cells, the four
corners a fixed marker and the other twelve the bits of i. The grid fills the middle 75% of the shorter side, inside
the square the reader's centre crop keeps (the shorter side scaled to ``round(size * 256 / 224)``, then ``size x size``
from the centre: 87.5% of the shorter side), so ``read_index`` tells which frame any decoded, scaled and cropped picture
is, after any lossy codec here. Outside the grid a ramp moves with i, so the encoders see motion.

``CORPUS`` lists the encodings a reader meets in the wild and gets wrong: open GOPs with B-pyramids, VFR, alt-ref
frames, late starts, edit lists, a first packet that is not a keyframe, a GOP of 25 s, interlacing, cover pictures,
second video streams. ``write_clip`` writes one and returns a ``ClipInfo`` that knows the true time of every frame a
decoder shows, or None when the FFmpeg here has none of the spec's encoders (``unavailable`` says why).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

GRID = 0.75  # the grid's side, as a fraction of the frame's shorter side (the centre crop keeps 224/256 = 0.875)
CELLS = 4  # cells per side
MARKER = {(0, 0): 1, (0, 3): 0, (3, 0): 0, (3, 3): 1}  # corner cells: white, black, black, white
DATA = [(r, c) for r in range(CELLS) for c in range(CELLS) if (r, c) not in MARKER]  # bit k of the index: cell DATA[k]
BITS = len(DATA)  # 12: indices 0 to 4095
CROP_RATIO = 256 / 224  # the reader's shorter side over its crop side


class Unreadable(ValueError):
    """The picture shows no intact index grid (a wrong stream, a broken frame, a cover picture)."""


def paint(index: int, width: int, height: int) -> np.ndarray:
    """Frame ``index`` of a ``width x height`` clip, uint8 RGB ``[height, width, 3]``."""
    if not 0 <= index < 2 ** BITS:
        raise ValueError(f"index {index} does not fit in {BITS} bits")
    xx = np.arange(width)
    ramp = (64 + (xx * 3 + index * 5) % 128).astype(np.uint8)  # moves 5 levels a frame
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = ramp[None, :, None]
    rgb[..., 2] = 255 - rgb[..., 2]  # some colour, so chroma is not flat either
    side, cell = _grid(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    bits = dict(MARKER) | {rc: (index >> k) & 1 for k, rc in enumerate(DATA)}
    for (r, c), bit in bits.items():
        rgb[top + r * cell: top + (r + 1) * cell, left + c * cell: left + (c + 1) * cell] = 255 * bit
    return rgb


def _grid(width: int, height: int) -> tuple[int, int]:
    cell = int(GRID * min(width, height)) // CELLS
    return cell * CELLS, cell


def read_index(rgb: np.ndarray, cropped: bool = True) -> int:
    """The index ``paint`` drew into ``rgb``.

    Args:
        rgb: uint8 RGB ``[H, W, 3]``: a reader's centre crop (``cropped``), or the whole frame.
        cropped: whether ``rgb`` is the reader's centre crop, where the grid spans ``GRID * 256/224`` of the side.

    Raises:
        Unreadable: a cell is neither clearly black nor clearly white, or a corner marker is wrong.
    """
    h, w = rgb.shape[:2]
    grey = rgb.astype(np.float32).mean(axis=2)
    side = GRID * min(h, w) * (CROP_RATIO if cropped else 1.0)
    cell = side / CELLS
    top, left = (h - side) / 2, (w - side) / 2
    half = max(cell / 6, 0.5)  # the middle third of a cell: far from its edges and their ringing
    bits = {}
    for r in range(CELLS):
        for c in range(CELLS):
            cy, cx = top + (r + 0.5) * cell, left + (c + 0.5) * cell
            patch = grey[int(round(cy - half)): int(round(cy + half)) + 1, int(round(cx - half)): int(round(cx + half)) + 1]
            level = float(patch.mean())
            if 64 < level < 192:
                raise Unreadable(f"cell ({r}, {c}) is grey ({level:.0f}), not black or white")
            bits[r, c] = int(level >= 128)
    wrong = [rc for rc, bit in MARKER.items() if bits[rc] != bit]
    if wrong:
        raise Unreadable(f"corner markers {wrong} are wrong")
    return sum(bits[rc] << k for k, rc in enumerate(DATA))


# ----------------------------------------------------------------------------- specs and what a writer knows

@dataclass(frozen=True, eq=False)
class ClipSpec:
    """One hostile encoding.

    Attributes:
        name: the test id.
        ext: the container's file extension (it picks the muxer).
        encoders: FFmpeg encoder names, tried in order; the first this FFmpeg has is used.
        what: one line: what makes the clip hostile.
        writer: ``writer(spec, encoder, path) -> ClipInfo``.
        fps: nominal frame rate (frame times are exact in milliseconds at 25, 20, 10, 5).
        frames: painted frames to write.
        width, height: coded size of the painted stream.
        options: encoder options (``add_stream(options=...)``).
    """

    name: str
    ext: str
    encoders: tuple[str, ...]
    what: str
    writer: Callable[[ClipSpec, str, Path], ClipInfo]
    fps: int = 25
    frames: int = 96
    width: int = 192
    height: int = 144
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ClipInfo:
    """What was written, and what a reader must therefore show.

    Attributes:
        spec: the spec.
        path: the file.
        encoder: the encoder used.
        frames: painted frames written (all, including any a decoder cannot show).
        pts: seconds (exact), as written: the presentation time of painted frame i (``pts[i]``).
        start: seconds (exact) on the same clock: the stream start, the reader's time 0.
        shown: the painted indices a decoder shows, in display order (all of them, unless a cut dropped some).
        duration: seconds from ``start`` to the end of the last shown frame.
        stream: which of the file's video streams (``container.streams.video[stream]``) is the painted one.
        notes: what the writer could not do as asked, if anything.
    """

    spec: ClipSpec
    path: Path
    encoder: str
    frames: int
    pts: tuple[Fraction, ...]
    start: Fraction
    shown: np.ndarray
    duration: float
    stream: int = 0
    notes: str = ""

    @cached_property
    def times(self) -> np.ndarray:
        """Seconds from the stream start of each shown frame, in display order, as the reader computes them: the exact
        difference rounded once to a float (a float subtraction would put some a hair before the frame's time)."""
        return np.array([float(self.pts[i] - self.start) for i in self.shown])

    def expected(self, t: float) -> int:
        """The painted index of the frame at ``t`` by the reader's time rule: the last shown frame whose time is
        <= t, or the first one when t precedes them all."""
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        return int(self.shown[max(i, 0)])


def encoder_here(spec: ClipSpec) -> str | None:
    """The first of the spec's encoders this FFmpeg can write with, or None."""
    for name in spec.encoders:
        try:
            av.codec.Codec(name, "w")
        except (av.codec.codec.UnknownCodecError, ValueError):
            continue
        return name
    return None


def unavailable(spec: ClipSpec) -> str | None:
    """Why ``spec`` cannot be written here (None: it can)."""
    if encoder_here(spec) is None:
        return f"FFmpeg here cannot write {' or '.join(spec.encoders)}"
    return None


def write_clip(spec: ClipSpec, path: str | Path) -> ClipInfo | None:
    """Write ``spec`` to ``path`` (its extension should be ``spec.ext``); None when no encoder of it is here."""
    encoder = encoder_here(spec)
    if encoder is None:
        return None
    return spec.writer(spec, encoder, Path(path))


# ----------------------------------------------------------------------------- writing helpers

def _frame(spec: ClipSpec, i: int, pts: int, time_base: Fraction) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(paint(i, spec.width, spec.height), format="rgb24")
    frame.pts, frame.time_base = pts, time_base
    return frame


def _painted_stream(out: av.container.OutputContainer, spec: ClipSpec, encoder: str,
                    time_base: Fraction | None = None) -> av.video.stream.VideoStream:
    stream = out.add_stream(encoder, rate=spec.fps, options=dict(spec.options))
    stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
    stream.codec_context.time_base = time_base or Fraction(1, spec.fps)
    return stream


def _encode(out: av.container.OutputContainer, stream: av.video.stream.VideoStream, spec: ClipSpec,
            ticks: list[int]) -> None:
    """Encode painted frames 0.. with the given pts (codec time base ticks) and flush."""
    tb = stream.codec_context.time_base
    for i, pts in enumerate(ticks):
        out.mux(stream.encode(_frame(spec, i, pts, tb)))
    out.mux(stream.encode(None))


def _info(spec: ClipSpec, path: Path, encoder: str, pts: list[Fraction], start: Fraction | None = None,
          shown: np.ndarray | None = None, last_span: Fraction | None = None, **kw) -> ClipInfo:
    shown = np.arange(len(pts)) if shown is None else shown
    start = min(pts[i] for i in shown) if start is None else start
    span = Fraction(1, spec.fps) if last_span is None else last_span
    return ClipInfo(spec=spec, path=path, encoder=encoder, frames=len(pts), pts=tuple(pts), start=start, shown=shown,
                    duration=float(pts[shown[-1]] + span - start), **kw)


def _cfr(spec: ClipSpec, encoder: str, path: Path) -> ClipInfo:
    """Constant frame rate, frame i at i / fps."""
    with av.open(str(path), "w") as out:
        stream = _painted_stream(out, spec, encoder)
        _encode(out, stream, spec, list(range(spec.frames)))
    return _info(spec, path, encoder, [Fraction(i, spec.fps) for i in range(spec.frames)])


def _late_start(spec: ClipSpec, encoder: str, path: Path) -> ClipInfo:
    """Frame i at 3 s + i / fps: the stream starts at 3 s, which the reader's time 0 stands for."""
    late = 3 * spec.fps
    with av.open(str(path), "w") as out:
        stream = _painted_stream(out, spec, encoder)
        _encode(out, stream, spec, [late + i for i in range(spec.frames)])
    return _info(spec, path, encoder, [Fraction(late + i, spec.fps) for i in range(spec.frames)])


VFR_GAPS_MS = [40, 40, 20, 60, 33, 47, 100, 40, 250, 17, 23, 40, 40, 1000, 40, 80, 40, 10, 30, 40]


def _vfr(spec: ClipSpec, encoder: str, path: Path) -> ClipInfo:
    """Frame gaps in milliseconds from ``VFR_GAPS_MS`` over and over: 10 ms to a 1 s freeze, in time base 1/1000."""
    ms = [0]
    for i in range(1, spec.frames):
        ms.append(ms[-1] + VFR_GAPS_MS[(i - 1) % len(VFR_GAPS_MS)])
    with av.open(str(path), "w") as out:
        stream = _painted_stream(out, spec, encoder, time_base=Fraction(1, 1000))
        _encode(out, stream, spec, ms)
    last = Fraction(VFR_GAPS_MS[(spec.frames - 1) % len(VFR_GAPS_MS)], 1000)  # the gap the pattern gives next
    return _info(spec, path, encoder, [Fraction(m, 1000) for m in ms], last_span=last)


def _encoded(spec: ClipSpec, encoder: str, fmt: str) -> bytes:
    """The painted frames at constant rate, encoded into an in-memory ``fmt`` file."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = _painted_stream(out, spec, encoder)
        _encode(out, stream, spec, list(range(spec.frames)))
    return buf.getvalue()


def _remux(data: bytes, fmt: str, path: Path, first: int = 0, shift: Fraction = Fraction(0)) -> list[tuple]:
    """Copy the video packets of the in-memory ``fmt`` file ``data`` to ``path``, leaving out the first ``first``
    (in decode order) and moving pts and dts by ``shift`` seconds. Returns (pts, dts, keyframe) of the packets kept."""
    kept = []
    with av.open(io.BytesIO(data), format=fmt) as src, av.open(str(path), "w") as out:
        ins = src.streams.video[0]
        outs = out.add_stream_from_template(ins)
        ticks = shift / ins.time_base
        if ticks.denominator != 1:
            raise ValueError(f"a shift of {shift} s is not a whole number of ticks of {ins.time_base}")
        for n, packet in enumerate(p for p in src.demux(ins) if p.size):
            if n < first:
                continue
            packet.pts = None if packet.pts is None else packet.pts + int(ticks)
            packet.dts = None if packet.dts is None else packet.dts + int(ticks)
            kept.append((packet.pts, packet.dts, packet.is_keyframe))
            packet.stream = outs
            out.mux(packet)
    return kept


def _first_packet_not_key(spec: ClipSpec, encoder: str, path: Path) -> ClipInfo:
    """A cut in the middle of the first GOP (no B-frames, a keyframe every 24): the first packet is frame 10, a P-frame,
    and a decoder shows nothing before the next keyframe, frame 24. The cut's timestamps start at 0, as a cutter writes
    them, so frame 24 shows at 14 / fps; every earlier time gives frame 24 too (the first frame of the video)."""
    cut, keyint = 10, 24
    kept = _remux(_encoded(spec, encoder, "matroska"), "matroska", path, first=cut, shift=Fraction(-cut, spec.fps))
    notes = "" if not kept[0][2] else "the first packet kept is a keyframe after all"
    pts = [Fraction(i, spec.fps) for i in range(spec.frames)]
    return _info(spec, path, encoder, pts, start=pts[cut], shown=np.arange(keyint, spec.frames), notes=notes)


def _elst(data: bytes) -> list[tuple[int, int]]:
    """The (segment duration, media time) entries of the first edit list in an MP4 (version 0 or 1)."""
    at = data.find(b"elst")
    if at < 0:
        return []
    version, count = data[at + 4], struct.unpack(">I", data[at + 8: at + 12])[0]
    fmt, size = (">IiI", 12) if version == 0 else (">QqI", 20)
    return [struct.unpack(fmt, data[at + 12 + k * size: at + 12 + (k + 1) * size])[:2] for k in range(count)]


def _edit_list_cut(spec: ClipSpec, encoder: str, path: Path) -> ClipInfo:
    """H.264 with B-frames and a keyframe every 48 frames, remuxed with its timestamps moved 20 frames earlier: the MP4
    muxer keeps every sample and writes an edit list whose media time starts at frame 20, in the middle of the first GOP
    (as ``ffmpeg -ss 0.8 -c copy`` does). A decoder must decode frames 0-19 and drop them; frame 20 shows at 0."""
    cut = 20
    _remux(_encoded(spec, encoder, "mp4"), "mp4", path, shift=Fraction(-cut, spec.fps))
    edits = _elst(path.read_bytes())
    notes = "" if edits and edits[-1][1] > 0 else f"no edit list that cuts the start was written (elst: {edits})"
    pts = [Fraction(i, spec.fps) for i in range(spec.frames)]
    return _info(spec, path, encoder, pts, start=pts[cut], shown=np.arange(cut, spec.frames), notes=notes)


def _jpeg(width: int, height: int) -> bytes:
    """A still picture with no index grid: a colour ramp."""
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    return buf.getvalue()


def _other_frame(i: int, width: int, height: int) -> av.VideoFrame:
    """Frame i of a stream that is not the painted one: flat colours that change, no grid."""
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[:] = ((i * 7) % 256, 255 - (i * 3) % 256, 60)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24")


def _cover_mp4(spec: ClipSpec, encoder: str, path: Path) -> ClipInfo:
    """MP4 with a cover picture (mjpeg, disposition attached_pic, added before the painted stream): the muxer stores it as
    a ``covr`` atom, which the demuxer shows as a second, one-picture video stream."""
    with av.open(str(path), "w") as out:
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 96, 96, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        stream = _painted_stream(out, spec, encoder)
        picture = _other_frame(0, 96, 96)
        picture.pts = 0
        out.mux(cover.encode(picture))
        out.mux(cover.encode(None))
        _encode(out, stream, spec, list(range(spec.frames)))
    return _info(spec, path, encoder, [Fraction(i, spec.fps) for i in range(spec.frames)], stream=_painted_at(path))


def _cover_mkv(spec: ClipSpec, encoder: str, path: Path) -> ClipInfo:
    """Matroska with a cover.jpg attachment, which the demuxer shows as a video stream with disposition attached_pic."""
    with av.open(str(path), "w") as out:
        out.add_attachment("cover.jpg", "image/jpeg", _jpeg(96, 96))
        stream = _painted_stream(out, spec, encoder)
        _encode(out, stream, spec, list(range(spec.frames)))
    return _info(spec, path, encoder, [Fraction(i, spec.fps) for i in range(spec.frames)], stream=_painted_at(path))


def _painted_at(path: Path) -> int:
    """Which video stream of ``path`` is the painted one: the one that is not a cover picture and has the full size."""
    with av.open(str(path)) as c:
        for k, s in enumerate(c.streams.video):
            if not s.disposition & av.stream.Disposition.attached_pic and s.codec_context.name != "mjpeg":
                return k
    raise AssertionError(f"{path}: no painted stream")


def _two_streams(spec: ClipSpec, encoder: str, path: Path, painted_first: bool, other_frames: int) -> ClipInfo:
    """The painted stream (disposition default) and another video stream (64x48, not default, ``other_frames`` frames of
    flat colour, mjpeg when it has one frame, a thumbnail track as some cameras and muxers write, else the same codec),
    the painted one first or second. FFmpeg's own choice (``av_find_best_stream``, ``container.streams.best``) and the
    ffmpeg command's (the largest picture) are the painted stream either way."""
    with av.open(str(path), "w") as out:
        def other_stream():
            s = out.add_stream("mjpeg" if other_frames == 1 else encoder, rate=spec.fps,
                               options={} if other_frames == 1 else dict(spec.options))
            s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p" if other_frames == 1 else "yuv420p"
            s.codec_context.time_base = Fraction(1, spec.fps)
            s.disposition = 0
            return s
        other = None if painted_first else other_stream()
        stream = _painted_stream(out, spec, encoder)
        stream.disposition = av.stream.Disposition.default
        other = other or other_stream()
        for i in range(spec.frames):
            if i < other_frames:
                frame = _other_frame(i, 64, 48)
                frame.pts, frame.time_base = i, Fraction(1, spec.fps)
                out.mux(other.encode(frame))
            out.mux(stream.encode(_frame(spec, i, i, Fraction(1, spec.fps))))
        out.mux(other.encode(None))
        out.mux(stream.encode(None))
    return _info(spec, path, encoder, [Fraction(i, spec.fps) for i in range(spec.frames)], stream=0 if painted_first else 1)


def best_video_stream(path: str | Path) -> int:
    """Which video stream FFmpeg itself picks (``av_find_best_stream``), as an index into ``container.streams.video``."""
    with av.open(str(path)) as c:
        best = c.streams.best("video")
        return [s.index for s in c.streams.video].index(best.index)


# ----------------------------------------------------------------------------- the corpus

def _x264(params: str) -> dict[str, str]:
    return {"preset": "ultrafast", "x264-params": params}


OPEN_GOP_X264 = "bframes=3:b-pyramid=normal:b-adapt=0:open-gop=1:keyint=48:min-keyint=48:scenecut=0"
OPEN_GOP_X265 = "bframes=3:b-pyramid=1:b-adapt=0:open-gop=1:keyint=48:min-keyint=48:scenecut=0:log-level=error"
PLAIN_X264 = "bframes=2:keyint=24:min-keyint=24:scenecut=0"
AV1_OPTIONS = {  # SVT-AV1 above preset 10 skips changed cells of the grid (a frame shows a neighbour's bits)
    "libsvtav1": {"preset": "10", "crf": "20", "g": "48"},
    "libaom-av1": {"cpu-used": "8", "crf": "20", "g": "48", "row-mt": "1"},
}


def _av1(spec: ClipSpec, encoder: str, path: Path) -> ClipInfo:
    return _cfr(replace(spec, options=AV1_OPTIONS[encoder]), encoder, path)


CORPUS: list[ClipSpec] = [
    ClipSpec("h264_open_gop_bpyramid", "mp4", ("libx264",),
             "open GOP (I-frames that are not IDR, leading B-frames), 3 B-frames in a pyramid", _cfr, frames=120,
             options=_x264(OPEN_GOP_X264)),
    ClipSpec("hevc_open_gop_bpyramid_mkv", "mkv", ("libx265",),
             "HEVC open GOP: CRA keyframes with RASL leading pictures, B-pyramid", _cfr, frames=120,
             options={"preset": "ultrafast", "x265-params": OPEN_GOP_X265}),
    ClipSpec("hevc_open_gop_bpyramid_mp4", "mp4", ("libx265",),
             "the same HEVC in MP4, with an edit list for the B-frame delay", _cfr, frames=120,
             options={"preset": "ultrafast", "x265-params": OPEN_GOP_X265}),
    ClipSpec("vfr_h264", "mp4", ("libx264",),
             "variable frame rate, time base 1/1000: gaps from 10 ms to a 1 s freeze, B-frames", _vfr, frames=80,
             options=_x264("bframes=2:keyint=30:min-keyint=30:scenecut=0")),
    ClipSpec("vp9_altref", "webm", ("libvpx-vp9",),
             "VP9 with alt-ref frames: hidden frames packed into superframes (one-pass ARFs need realtime VBR + lag)",
             _cfr, frames=96, options={"deadline": "realtime", "cpu-used": "8", "b": "400k", "auto-alt-ref": "1",
                                       "lag-in-frames": "16", "g": "48"}),
    ClipSpec("av1", "mp4", ("libsvtav1", "libaom-av1"),
             "AV1 (SVT-AV1: hidden frames shown later by show_existing_frame)", _av1, frames=96),
    ClipSpec("late_start_mkv", "mkv", ("libx264",),
             "the stream starts at 3 s (first pts 3 s: stream start_time 3 s; Matroska states the segment's 5 s)",
             _late_start, frames=50, options=_x264(PLAIN_X264)),
    ClipSpec("late_start_mp4", "mp4", ("libx264",),
             "the stream starts at 3 s (an empty edit of 3 s in the MP4 edit list)", _late_start, frames=50,
             options=_x264(PLAIN_X264)),
    ClipSpec("h264_mpegts", "ts", ("libx264",),
             "MPEG-TS: no index at all, seeks by byte position, B-frames", _cfr, frames=96,
             options=_x264(PLAIN_X264)),
    ClipSpec("edit_list_cut", "mp4", ("libx264",),
             "an MP4 edit list that cuts frames 0-19, mid-GOP (keyframes at 0 and 48), B-frames", _edit_list_cut,
             frames=96, options=_x264("bframes=2:keyint=48:min-keyint=48:scenecut=0")),
    ClipSpec("first_packet_not_key", "mkv", ("libx264",),
             "cut mid-GOP: the first packet is a P-frame; nothing shows before the next keyframe", _first_packet_not_key,
             frames=72, options=_x264("bframes=0:keyint=24:min-keyint=24:scenecut=0")),
    ClipSpec("long_gop", "mp4", ("libx264",),
             "a GOP of 22 s (5 fps, keyframes at 0 and 110 only) over 28 s, B-frames", _cfr, fps=5, frames=140,
             options=_x264("bframes=2:keyint=110:min-keyint=110:scenecut=0")),
    ClipSpec("interlaced_h264", "mkv", ("libx264",),
             "interlaced H.264 (MBAFF, top field first; x264 codes fields per macroblock pair, not as field pictures)",
             _cfr, frames=72, options=_x264("interlaced=1:tff=1:bframes=2:keyint=24:min-keyint=24:scenecut=0")),
    ClipSpec("cover_mp4", "mp4", ("libx264",),
             "an MP4 cover picture (covr, attached_pic) besides the painted stream", _cover_mp4, frames=50,
             options=_x264(PLAIN_X264)),
    ClipSpec("cover_mkv", "mkv", ("libx264",),
             "a Matroska cover.jpg attachment (a video stream with disposition attached_pic)", _cover_mkv, frames=50,
             options=_x264(PLAIN_X264)),
    ClipSpec("thumbnail_track_first", "mkv", ("libx264",),
             "a one-picture mjpeg video track (64x48, not default) BEFORE the painted stream",
             partial(_two_streams, painted_first=False, other_frames=1), frames=50, options=_x264(PLAIN_X264)),
    ClipSpec("two_streams_painted_first", "mkv", ("libx264",),
             "two video streams: the painted one (default) first, a 64x48 one second",
             partial(_two_streams, painted_first=True, other_frames=50), frames=50, options=_x264(PLAIN_X264)),
    ClipSpec("two_streams_painted_second", "mkv", ("libx264",),
             "two video streams: a 64x48 one (not default) first, the painted one (default) second",
             partial(_two_streams, painted_first=False, other_frames=50), frames=50, options=_x264(PLAIN_X264)),
]


def reference(info: ClipInfo) -> list[tuple[float, int | None]]:
    """Plain PyAV, no reader: every frame the painted stream decodes to, as (seconds from the stream start, painted
    index or None when it shows no intact grid). The corpus is only worth its name if this equals ``info``'s times and
    shown indices: then a wrong answer of the reader is the reader's fault, not the encoder's."""
    out = []
    with av.open(str(info.path)) as c:
        s = c.streams.video[info.stream]
        start = s.start_time or 0
        for f in c.decode(s):
            try:
                index = read_index(f.to_ndarray(format="rgb24"), cropped=False)
            except Unreadable:
                index = None
            out.append((float((f.pts - start) * s.time_base), index))
    return out
