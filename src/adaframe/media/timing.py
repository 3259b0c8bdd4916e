"""One decode run of a video stream: its frames in decoder output order, each with its time.

The times are those of the time rule (``reader``): the running maximum of pts (dts when pts is missing), in seconds
from the stream start, restarting with every run; a frame with neither is placed one frame span after its predecessor.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import NamedTuple

import av
from av.container import InputContainer
from av.packet import Packet
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from adaframe.utils import AdaframeError


class Timed(NamedTuple):
    ts: float  # seconds, by the time rule
    frame: VideoFrame
    stamped: bool  # False: the frame had neither pts nor dts (raw elementary streams); ts is extrapolated


def frame_span(frame: VideoFrame, stream: VideoStream) -> float:
    """How long ``frame`` is shown, in seconds: its own duration, else one period of the average rate."""
    if frame.duration:
        return float(frame.duration * stream.time_base)
    return 1 / float(stream.average_rate) if stream.average_rate else 0.0


def timed_frames(container: InputContainer, stream: VideoStream, path: Path,
                 skip: Callable[[float], bool] | None = None,
                 packets: Iterable[Packet] | None = None) -> Generator[Timed, None, None]:
    """Decode one run from the container's current position (or of ``packets``, the stream's packets from there on),
    timing frames by the time rule.

    A frame with neither pts nor dts (raw .h264 or .m4v streams) is placed one frame span after
    its predecessor, or at 0 when it opens the run. ``skip(t)``, asked for each packet with a
    timestamp t (seconds), True: the decoder may drop that packet's picture if no other picture
    refers to it (FFmpeg's ``skip_frame`` NONREF), so it costs no decoding and is never output.

    Raises:
        AdaframeError: decoding failed; the message says how far it got.
    """
    start_pts = stream.start_time or 0
    ts, span, good, first = 0.0, 0.0, 0, 0.0
    context, dropping = stream.codec_context, False
    try:
        for packet in container.demux(stream) if packets is None else packets:
            if skip is not None:
                at = packet.pts if packet.pts is not None else packet.dts
                drop = at is not None and skip(float((at - start_pts) * stream.time_base))
                if drop != dropping:
                    context.skip_frame, dropping = ("NONREF" if drop else "DEFAULT"), drop
            for frame in packet.decode():
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is not None:
                    t = float((pts - start_pts) * stream.time_base)
                    ts = t if good == 0 else max(ts, t)
                elif good:
                    ts += span
                span = frame_span(frame, stream)
                first = ts if good == 0 else first
                good += 1
                yield Timed(ts, frame, pts is not None)
    except av.FFmpegError as e:
        done = f"after {good} frames decoded fine, {first:.2f} s to {ts:.2f} s" if good else "before any frame"
        raise AdaframeError(f"{path}: decoding failed {done} ({e})") from None
    finally:
        if dropping:
            context.skip_frame = "DEFAULT"
