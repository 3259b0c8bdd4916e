"""Opening a video file and describing it: its video stream (FFmpeg's own pick, ``av_find_best_stream``), what its
header states (duration, frame count), and ``probe``.

Every failure (a missing, empty or non-media file, no video stream, no decodable frame, a stream well short of its
stated length) is an ``AdaframeError`` whose message names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
from av.container import InputContainer
from av.video.stream import VideoStream

from adaframe.media.timing import frame_span, timed_frames
from adaframe.utils import AdaframeError

TRUNCATION_SLACK = 1.0  # seconds (or 10% if more) a stream may end before its stated length


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns about a video's first video stream.

    Attributes:
        path: the file.
        duration: seconds of video (stream duration, else container duration, else decoded).
        start: stream start time in seconds (0 when unknown); frame times are relative to it.
        fps: average frame rate, or None when the container does not say.
        frames: frame count stated by the container, or None when it states none (e.g. mkv).
        width: displayed width, i.e. after the display rotation.
        height: displayed height.
        rotation: display-matrix rotation in degrees, counter-clockwise as PyAV reports it
            (-90: the coded picture is shown turned 90 degrees clockwise).
        codec: decoder name, e.g. ``h264``.
    """

    path: Path
    duration: float
    start: float
    fps: float | None
    frames: int | None
    width: int
    height: int
    rotation: int
    codec: str


def open_video(path: Path) -> tuple[InputContainer, VideoStream]:
    """Open ``path`` and return it with its first video stream; every failure is an AdaframeError."""
    if not path.exists():
        raise AdaframeError(f"{path}: no such file")
    if not path.is_file():
        raise AdaframeError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise AdaframeError(f"{path}: the file is empty")
    try:
        container = av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as e:
        raise AdaframeError(f"{path}: cannot open as a media file ({e})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise AdaframeError(f"{path}: has no video stream (streams: {', '.join(kinds)})")
    # FFmpeg's own pick (av_find_best_stream), not the first listed: a thumbnail or a second angle may come first
    return container, container.streams.best("video") or container.streams.video[0]


def stated_duration(container: InputContainer, stream: VideoStream) -> float | None:
    """The stream's duration if the file states one, else the container's end less the stream's start, else None.

    Matroska states its segment's duration from time 0, not from the first timestamp: a stream that starts at 3 s of a
    5 s segment lasts 2 s. Other formats state it from the container's start."""
    if stream.duration and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration and container.duration > 0:
        from_zero = container.format.name.split(",")[0] == "matroska"
        end = (container.duration + (0 if from_zero else container.start_time or 0)) / av.time_base
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else (container.start_time or 0) / av.time_base
        return end - start if end > start else None
    return None


def stated_frames(container: InputContainer, stream: VideoStream) -> int | None:
    """The frame count the header states, where it records the stream's length; else None.

    A cut AVI loses its idx1 index at the end, and FFmpeg then recomputes the duration from the
    packets left, so only the header's frame count remembers how long the stream was. MOV/MP4
    count every sample, also those an edit list cuts away (a trimmed clip may state 300 frames
    and show 150), so their count proves nothing; a cut MOV/MP4 loses its index or keeps its
    stated duration, which the duration check covers. Without a rate the count has no length.
    """
    if stream.frames <= 0 or not stream.average_rate or container.format.name.split(",")[0] == "mov":
        return None
    return stream.frames


def well_short(end: float, stated: float) -> bool:
    """Whether a stream ending at ``end`` seconds stops well before ``stated`` ones (a truncated file):
    by more than ``TRUNCATION_SLACK``, or 10% of ``stated`` if that is more."""
    return end < stated - max(TRUNCATION_SLACK, 0.1 * stated)


def probe(path: str | Path) -> VideoInfo:
    """Describe the first video stream of ``path``, decoding one frame to be sure it has one.

    Decodes the whole stream only when the file states no duration at all.

    Raises:
        AdaframeError: missing or empty file, not a media file, no video stream, no decodable
            video frame, or a duration well short of the frame count the header states (a cut
            AVI); the message names the file.
    """
    path = Path(path)
    container, stream = open_video(path)
    with container:
        frames = timed_frames(container, stream, path)
        first = next(frames, None)
        if first is None:
            raise AdaframeError(f"{path}: the video stream has no decodable frames (zero length)")
        duration = stated_duration(container, stream)
        if duration is None:
            last = first
            for last in frames:
                pass
            duration = last.ts + frame_span(last.frame, stream)
        stated = stated_frames(container, stream)
        if stated is not None and well_short(duration, stated / float(stream.average_rate)):
            raise AdaframeError(f"{path}: the video stream lasts {duration:.2f} s, but the file says it has {stated} frames "
                                f"({stated / float(stream.average_rate):.2f} s at {float(stream.average_rate):g} fps) (truncated file?)")
        rotation = int(first.frame.rotation)
        w, h = first.frame.width, first.frame.height
        return VideoInfo(
            path=path, duration=duration,
            start=float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0,
            fps=float(stream.average_rate) if stream.average_rate else None, frames=stream.frames or None,
            width=h if rotation % 180 == 90 else w, height=w if rotation % 180 == 90 else h,
            rotation=rotation, codec=stream.codec_context.name,
        )
