"""Frames of a video at given times: the time rule, the image pipeline, and ``VideoReader``, which extraction (one
sequential pass) and ``predict`` (seeking to the frames an agent asks for) share, so both get the same frames (in any
stream where no frame before a keyframe has a later pts than the keyframe).

* Time rule: a frame's time is the running maximum of its pts (dts when pts is missing) in decoder output order, in
  seconds from the stream start, restarting with each decode run (``timing``); the frame "at t" is the last one whose
  time is <= t (the first frame for earlier t, the last for later). Frames with neither pts nor dts are placed one
  frame duration after their predecessor, and such a stream is read forward only.
* Image pipeline (``to_rgb``): the shorter side to ``round(size * 256 / 224)`` (bilinear), centre crop
  ``size x size``, then the display rotation.

Why and what is tested: docs/commands.md, "Decoding rule".
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Generator, Sequence
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.frame import VideoFrame

from adaframe.media.probe import open_video, probe, stated_duration, stated_frames, well_short
from adaframe.media.timing import Timed, frame_span, timed_frames
from adaframe.utils import AdaframeError

RESIZE_RATIO = 256 / 224  # shorter side before the centre crop, the usual ImageNet evaluation ratio
DEFAULT_SEEK_GAP = 2.0  # seconds; a jump further ahead seeks rather than decoding through
UNINDEXED_FORMATS = frozenset({"mpegts", "mpeg", "mpegvideo"})  # no seek index: a seek lands near a time, not on a keyframe
PROGRESSIVE = 1  # AVFieldOrder AV_FIELD_PROGRESSIVE, as the demuxer states it (0: unknown)
SKIPPING_CODECS = frozenset({"h264", "hevc"})  # decoders that honour NONREF skipping (VP9 and AV1 here decode all)


# ----------------------------------------------------------------------------- times and pixels

def sample_times(duration: float, fps: float = 1.0) -> np.ndarray:
    """Times ``i / fps`` for i = 0, 1, ... while below ``duration``; at least ``[0.0]``."""
    if not fps > 0 or not math.isfinite(fps) or not math.isfinite(duration):
        raise ValueError(f"fps must be a positive number and duration finite, got fps={fps}, duration={duration}")
    times = np.arange(max(math.ceil(duration * fps), 0) + 1) / fps
    times = times[times < duration]
    return times if len(times) else np.zeros(1)


def uniform_times(duration: float, n: int) -> np.ndarray:
    """The centres of ``n`` equal segments of ``[0, duration]``: ``(i + 0.5) * duration / n``."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return (np.arange(n) + 0.5) * duration / n


def to_rgb(frame: VideoFrame, size: int) -> np.ndarray:
    """The image pipeline: shorter side to ``round(size * 256/224)``, centre crop, display rotation (rotating a square
    centre crop equals cropping the rotated frame)."""
    short = round(size * RESIZE_RATIO)
    w, h = frame.width, frame.height
    nw, nh = (short, round(h * short / w)) if w <= h else (round(w * short / h), short)
    rgb = frame.reformat(width=nw, height=nh, format="rgb24", interpolation="BILINEAR").to_ndarray()
    top, left = (nh - size) // 2, (nw - size) // 2
    crop = rgb[top:top + size, left:left + size]
    # np.rot90 turns counter-clockwise for positive k, the same sense as the display matrix angle.
    return np.ascontiguousarray(np.rot90(crop, k=round(frame.rotation / 90) % 4))


# ----------------------------------------------------------------------------- reading by time

class VideoReader:
    """Frames of one video at given times, reading forward where it can and seeking where it pays.

    The container stays open, and the decode position is kept between ``read`` calls, so a
    policy asking for one frame at a time, in any order, only decodes from the nearest keyframe.

    Args:
        path: the video file.
        seek_gap: seconds; a target further ahead than this (or behind the position) is reached
            by seeking to the keyframe before it; a closer one by decoding forward. Use
            ``math.inf`` for a strictly sequential reader.
        skip_unreferenced: let the decoder skip pictures nothing asked for depends on (below); False decodes every
            frame on the way to one asked for.

    Where the codec allows it (``SKIPPING_CODECS``, not in AVI, whose timestamps are made up by the demuxer), the decoder
    drops a picture that no other refers to when it cannot be the frame at any time still asked for: a packet whose
    timestamp p has a later packet p' <= a already seen in this run, a the first time asked for at or after p, is not
    the last frame <= a nor <= any later time. Seen in decode order, a GOP's B-frames mostly come after the P-frames
    past them, so reaching a frame costs its reference frames and few others.

    Attributes:
        decoded: pictures decoded so far, over all reads: the frames output and those the decoder held when a seek or
            ``close`` ended their run.
        seeks: seeks done so far.
        reading: how the file is read, for results: ``"seek (skipping unreferenced frames)"``, ``"seek"``, or
            ``"forward"`` (no timestamps to seek by).
        seekable: False when the file is read forward only (``first_after_seek`` then finds no keyframe).

    Raises:
        AdaframeError: as ``probe``, on opening; and from ``read`` when decoding fails or the
            stream ends well before its stated duration or frame count (a truncated file).
    """

    def __init__(self, path: str | Path, seek_gap: float = DEFAULT_SEEK_GAP, skip_unreferenced: bool = True):
        self.path = Path(path)
        self.seek_gap = seek_gap
        self.decoded = 0
        self.seeks = 0
        self._run: Generator[Timed, None, None] | None = None
        self._watched = np.zeros(0)  # sorted times whose frames are kept when decoding passes them
        self._watch_size = 0
        self._kept: dict[float, np.ndarray] = {}
        self._needed = np.zeros(0)  # sorted times the current read answers: their frames are never skipped
        self._last_probe: tuple[tuple[int, int | None, int | None], Timed] | None = None  # its landing and first frame
        self._open()
        self._skipping = False
        self._restart(seek_to=None)
        first = self._peek()
        if first is not None and self._landing() is not None:  # a run that skips nothing, as a probe's: a probe landing
            self._last_probe = (self._landing(), first)      # on the first packet gets this frame
        # Raw elementary streams (no timestamps) and formats without an index are read forward, restarting from the top
        container_format = self._container.format.name.split(",")[0]
        self.seekable = first is not None and first.stamped and container_format not in UNINDEXED_FORMATS
        self._skipping = (skip_unreferenced and self.seekable and self._stream.codec_context.name in SKIPPING_CODECS
                          and container_format != "avi")
        self.reading = "forward" if not self.seekable else "seek (skipping unreferenced frames)" if self._skipping else "seek"

    def _open(self) -> None:
        self._container, self._stream = open_video(self.path)
        # Frame threads speed up a long sequential pass, but each holds a picture back: a reader that seeks would decode
        # that many pictures past every frame asked for, all thrown away at the next seek. Slices cost nothing such.
        self._stream.thread_type = "AUTO" if math.isinf(self.seek_gap) else "SLICE"
        self._start_pts = self._stream.start_time or 0

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._end_run()
        self._container.close()

    @property
    def rate(self) -> float:
        """The stream's average frame rate as the file states it (0 when it states none)."""
        return float(self._stream.average_rate or 0)

    def read(self, times: Sequence[float], sizes: int | Sequence[int]) -> list[np.ndarray]:
        """Frames at ``times`` (by the module's time rule), in the order asked.

        Args:
            times: seconds from the stream start, in any order, repeats allowed.
            sizes: output side, one for all or one per time.

        Returns:
            uint8 RGB arrays ``[size, size, 3]``, one per time.
        """
        at = [float(t) for t in times]
        side = [int(sizes)] * len(at) if isinstance(sizes, (int, np.integer)) else [int(s) for s in sizes]
        if len(side) != len(at):
            raise ValueError(f"{len(at)} times but {len(side)} sizes")
        if any(not math.isfinite(t) for t in at) or any(s < 1 for s in side):
            raise ValueError("times must be finite and sizes positive")
        out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(at)
        self._needed = np.unique(at)
        for i in sorted(range(len(at)), key=at.__getitem__):
            kept = self._kept.get(at[i]) if side[i] == self._watch_size else None
            out[i] = kept if kept is not None else self.rgb(self._frame_at(at[i]).frame, at[i], side[i])
        return out

    def read_to_end(self) -> None:
        """Decode on to the last frame, skipping none and converting none; arriving at the end checks that the stream
        is complete. A sequential reader (``seek_gap=math.inf``) that has read nothing decodes every frame, so its
        ``decoded`` then counts them."""
        self._needed = np.zeros(0)
        self._frame_at(math.inf)

    def first_after_seek(self, t: float) -> Timed | None:
        """The first frame of a decode run that seeks to the keyframe at or before ``t`` (None: not a real seek). One
        landing on the packet the previous probe landed on decodes nothing (``_first``); a later read then seeks."""
        self._needed = np.zeros(0)  # nothing skipped: the first frame is the file's, whatever was read before
        self._seek(t, probe=True)
        first = self._peek()
        return first if first is not None and not self._from_start and first.stamped else None

    def watch(self, times: Sequence[float], size: int) -> None:
        """Keep the frames at ``times`` (as ``size`` RGB) whenever decoding passes them, so that a later
        ``read`` of exactly those times at that size costs no decoding.

        ``predict`` watches the candidate frames of the policy: the pass that decodes the memory
        frames goes through many of them, and the policy's frames then need no second decode. Watching costs no
        decoding: a watched frame the decoder skipped on the way to another is not kept (``_skipped_answer``).
        """
        self._watched, self._watch_size, self._kept = np.sort(np.asarray(times, dtype=np.float64)), int(size), {}

    def rgb(self, frame: VideoFrame, t: float, size: int) -> np.ndarray:
        """The image pipeline on ``frame``, this video's frame at ``t`` seconds (which an error names)."""
        try:
            return to_rgb(frame, size)
        except av.FFmpegError as e:
            raise AdaframeError(f"{self.path}: cannot convert the frame at {t:.2f} s to RGB ({e})") from None

    def _remember(self, until: float) -> None:
        """The current frame is the frame at every time in [its time, until): keep the watched ones."""
        if not len(self._watched):
            return
        lo = 0 if self._cur_is_first else int(np.searchsorted(self._watched, self._cur.ts, side="left"))
        hi = int(np.searchsorted(self._watched, until, side="left"))
        for w in self._watched[lo:hi].tolist():
            if w not in self._kept and not self._skipped_answer(w):
                self._kept[w] = self.rgb(self._cur.frame, w, self._watch_size)

    # -- position state: _cur is the last frame consumed, _next the one decoded after it (if any)

    def _end_run(self) -> None:
        """End the current decode run, counting in ``decoded`` the pictures the decoder has decoded but not yet output
        (behind its reorder delay or in its threads): decoding them cost as much as a frame asked for."""
        if self._run is None:
            return
        self._run.close()
        self._run = None
        if self._detached:  # its decoder was drained already, or never given a packet
            return
        try:
            self.decoded += len(self._stream.codec_context.decode(None))  # drains; the next seek flushes the decoder
        except av.FFmpegError:
            pass  # a damaged stream: the read that met the damage has said so

    def _restart(self, seek_to: float | None) -> None:
        """Begin a new decode run at the stream start (None: a freshly opened file) or at the keyframe before ``seek_to``."""
        self._end_run()
        if seek_to is not None:
            self.seeks += 1
            try:
                offset = self._start_pts + math.floor(seek_to / self._stream.time_base)
                self._container.seek(offset, stream=self._stream, backward=True, any_frame=False)
            except (av.FFmpegError, OverflowError):
                # Raw elementary streams cannot seek at all: decode again from the top of the file.
                self._container.close()
                self._open()
                seek_to = None
        self._seen: list[float] = []  # sorted timestamps of this run's packets
        self._skipped: list[tuple[float, float]] = []  # (p, p'): a packet skipped at p, for a later one at p' seen first
        # The run's first packet, demuxed before any decoding, says where the seek landed (``_landing``).
        packets = self._container.demux(self._stream)
        try:
            self._lead: av.Packet | None = next(packets, None)
        except av.FFmpegError as e:
            raise AdaframeError(f"{self.path}: decoding failed before any frame ({e})") from None
        self._run = timed_frames(self._container, self._stream, self.path, self._may_skip if self._skipping else None,
                                 itertools.chain([] if self._lead is None else [self._lead], packets))
        self._detached = False  # True: the decoder holds nothing more of this run (its first frame reused or drained out)
        self._from_start = seek_to is None or seek_to <= 0
        self._run_frames = 0  # frames decoded in this run: the frame count reached, when it began at the start
        self._cur: Timed | None = None
        self._next: Timed | None = None
        self._cur_is_first = False
        self._eof = False

    def _may_skip(self, p: float) -> bool:
        """Whether the packet at ``p`` seconds cannot be the frame at any time still needed (see the class docstring)."""
        j = int(np.searchsorted(self._needed, p, side="left"))
        k = bisect.bisect_right(self._seen, p)
        skip = j < len(self._needed) and k < len(self._seen) and self._seen[k] <= self._needed[j]
        if skip:
            self._skipped.append((p, self._seen[k]))
        self._seen.insert(k, p)
        return skip

    def _skipped_answer(self, t: float) -> bool:
        """Whether a picture this run skipped may be the frame at ``t``, a time not needed when it was skipped: one at p
        with nothing seen in (p, t] (its witness p' > t) and no frame consumed after it."""
        after = -math.inf if self._cur is None else self._cur.ts
        # A run only moves forward: a picture skipped behind the current frame can never be an answer again. Dropping
        # it keeps the list to the decoder's reorder window, not the whole run (a long sequential pass asks often).
        self._skipped = [(p, w) for p, w in self._skipped if p >= after]
        return any(p <= t < w for p, w in self._skipped)

    def _peek(self) -> Timed | None:
        """The frame after the current one, decoding it if needed; None at the end of the stream (and of a detached run,
        whose decoder has been drained)."""
        if self._next is None and self._detached:
            return None
        if self._next is None and not self._eof:
            self._next = next(self._run, None)
            self._eof = self._next is None
            self.decoded += not self._eof
            self._run_frames += not self._eof
        if self._next is None:
            self._check_complete()  # on every arrival at the end, so a truncated file never passes quietly
        return self._next

    def _consume(self) -> None:
        if self._cur is not None:
            self._remember(until=self._next.ts)
        self._cur_is_first = self._cur is None and self._from_start
        self._cur, self._next = self._next, None

    def _frame_at(self, t: float) -> Timed:
        if not self._can_reach(t) or self._skipped_answer(t):
            self._seek(t)
        # Stop at the first frame past t: the one before it is the answer.
        while (nxt := self._peek()) is not None and (self._cur is None or nxt.ts <= t):
            self._consume()
        if self._cur is None:
            raise AdaframeError(f"{self.path}: the video stream has no decodable frames (zero length)")
        return self._cur

    def _can_reach(self, t: float) -> bool:
        """Whether decoding forward from here gets to ``t`` cheaper than a seek would (for a file read forward: at all)."""
        if self._detached:  # the decoder is not where this run's frames say
            return False
        if not self.seekable:
            return self._from_start and (self._cur is None or t >= self._cur.ts or self._cur_is_first)
        if self._cur is None:  # a fresh run from the stream start
            return self._from_start and t <= self.seek_gap
        if t < self._cur.ts:  # behind us; only the first frame also answers for earlier times
            return self._cur_is_first
        if self._eof or t - self._cur.ts <= self.seek_gap:
            return True
        return not self._keyframe_between(self._cur.ts, t)

    def _keyframe_between(self, after: float, upto: float) -> bool:
        """Whether the index shows a keyframe in (after, upto]; True when it cannot tell.

        Without this, a far jump in a file with one keyframe (common in AVI) would seek back to
        the start and decode everything again. Index times are dts, at or before the pts, so a
        keyframe just past ``after`` may count as outside: that only costs decoding, never a wrong frame.
        """
        index, tb, start = self._stream.index_entries, self._stream.time_base, self._start_pts
        if len(index) == 0:
            return True
        last, upto_pts = index[len(index) - 1].timestamp, start + math.floor(upto / tb)
        # mp4, mov and avi index every packet; mkv loads its cues lazily, so a short index proves nothing.
        if upto_pts > last and len(index) < (self._stream.frames or math.inf):
            return True
        i = index.search_timestamp(min(upto_pts, last), backward=True, any_frame=False)
        return i >= 0 and float((index[i].timestamp - start) * tb) > after

    def _landing(self) -> tuple[int, int | None, int | None] | None:
        """Where the current run began: its first packet's byte position and stamps (None: not known)."""
        lead = self._lead
        return None if lead is None or lead.pos is None or lead.pos < 0 else (lead.pos, lead.pts, lead.dts)

    def _seek(self, t: float, probe: bool = False) -> None:
        """Seek so that the next run starts at a keyframe at or before ``t``.

        Demuxers pick the keyframe by their own index times; should the first frame still come
        after ``t``, step further back until it does not. A run of unstamped frames cannot say
        where it is, so it restarts from the stream start.
        """
        if not self.seekable:  # from the top: open the file again
            self._end_run()
            self._container.close()
            self._open()
            self._restart(seek_to=None)
            return
        stated = stated_duration(self._container, self._stream)
        aim = min(t, stated) if stated is not None else t  # past the end, the last keyframe is as good
        back = 0.0
        while True:
            self._restart(seek_to=max(aim - back, 0.0))
            first = self._first() if probe else self._peek()
            if first is None or self._from_start or (first.stamped and first.ts <= t):
                return
            back = max(2 * back, 1.0) if first.stamped else math.inf

    def _first(self) -> Timed | None:
        """A probe's frame (``first_after_seek``, which skips nothing): the first frame of the run just begun. One that
        lands on the packet the previous probe landed on gets that probe's frame without decoding: a run that starts at
        the same packet with a flushed decoder outputs the same first frame. The memory rule's probes of one segment's
        end and the next one's centre often land on the same keyframe. The run is then detached: any read seeks again."""
        landing = self._landing()
        if landing is not None and self._last_probe is not None and self._last_probe[0] == landing:
            self._next, self._detached = self._last_probe[1], True
            return self._next
        # Alone only where a packet is a whole picture: a field-coded stream's keyframe packet may be one field of it.
        if landing is not None and self._lead.is_keyframe and self._stream.codec_context.field_order == PROGRESSIVE:
            first = self._first_alone()
        else:
            first = self._peek()
        if landing is not None and first is not None:
            self._last_probe = (landing, first)
        return first

    def _first_alone(self) -> Timed | None:
        """A probe's frame: the run's first packet, a keyframe, decoded alone and drained out of the decoder, instead of
        also decoding the pictures behind the reorder delay that would push it out. The run is then detached."""
        drain = av.Packet()  # an empty packet makes the decoder output what it holds
        drain.stream = self._stream
        try:
            frames = list(timed_frames(self._container, self._stream, self.path, None, [self._lead, drain]))
        finally:
            self._detached = True
        self.decoded += len(frames)
        self._next = frames[0] if frames else None
        return self._next

    def _check_complete(self) -> None:
        """At the end of the stream: refuse a stream that stops well short of its stated duration or
        of the frame count its header states (see ``stated_frames``; a cut AVI states a shorter duration).

        After a seek the frames before it were not decoded, so the count reached is estimated
        from the last frame's end at the average rate.
        """
        if self._cur is None:
            return
        stated = stated_duration(self._container, self._stream)
        if stated is not None and well_short(self._cur.ts, stated):
            raise AdaframeError(f"{self.path}: the video stream ends at {self._cur.ts:.2f} s, "
                                f"but the file says it lasts {stated:.2f} s (truncated file?)")
        frames = stated_frames(self._container, self._stream)
        if frames is None:
            return
        rate = float(self._stream.average_rate)
        reached = self._run_frames if self._from_start else round((self._cur.ts + frame_span(self._cur.frame, self._stream)) * rate)
        if well_short(reached / rate, frames / rate):
            raise AdaframeError(f"{self.path}: the video stream ends after {'' if self._from_start else 'about '}{reached} frames, "
                                f"but the file says it has {frames} (truncated file?)")


# ----------------------------------------------------------------------------- whole-video helpers

def decode_at_rate(path: str | Path, fps: float = 1.0, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Frames at ``sample_times(duration, fps)`` in one sequential pass.

    Returns:
        frames uint8 ``[T, size, size, 3]`` and their times ``[T]`` in seconds.
    """
    info = probe(path)
    times = sample_times(info.duration, fps)
    with VideoReader(path, seek_gap=math.inf) as reader:
        frames = reader.read(times, size)
    return np.stack(frames), times


def count_frames(path: str | Path) -> int:
    """Decode the whole video stream and count its frames (for reporting; mkv states no count)."""
    with VideoReader(path, seek_gap=math.inf) as reader:
        reader.read_to_end()
        return reader.decoded
