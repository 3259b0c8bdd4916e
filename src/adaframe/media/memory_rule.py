"""The global memory's frames of a video by the memory rule (``extract`` and ``predict`` both call it): frame k stands
for the k-th of Td equal segments [a, b) with centre c. With ``keyframes=True`` it is the keyframe a seek to c lands
on when its time is in [a, c], else the one a seek to b lands on when its time is in (c, b), else the frame at c; the
pick depends only on the file. A short video (at most ``SHORT_MEMORY`` frames per memory frame) and a stream that
cannot seek take the frames at c in one pass. Why: docs/commands.md, "Memory rule".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adaframe.media.reader import VideoReader, uniform_times
from adaframe.media.timing import Timed

SHORT_MEMORY = 4  # frames per memory frame up to which the memory rule reads segment centres in one pass


def memory_frames(reader: VideoReader, duration: float, stored: int, size: int, keyframes: bool,
                  subset: Sequence[int] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The global memory's frames of ``reader``'s video by the memory rule.

    Args:
        reader: the open video.
        duration: the video's length in seconds (``probe``).
        stored: Td, the number of equal segments (the memory frames a data set stores).
        size: output side.
        keyframes: True for the keyframe rule, False for the segment centres.
        subset: which of the ``stored`` frames to return (all by default).

    Returns:
        uint8 RGB arrays ``[size, size, 3]`` and their times in seconds, one per frame asked for.
    """
    ks = list(range(stored)) if subset is None else [int(k) for k in subset]
    edges = np.arange(stored + 1) * duration / stored
    centres = uniform_times(duration, stored)
    picked: dict[int, Timed] = {}
    short = 0 < duration * reader.rate <= SHORT_MEMORY * stored
    for k in ks if keyframes and reader.seekable and not short else ():
        a, c, b = float(edges[k]), float(centres[k]), float(edges[k + 1])
        for aim, inside in ((c, lambda t: a <= t <= c), (b, lambda t: c < t < b)):
            first = reader.first_after_seek(aim)
            if first is not None and inside(first.ts):
                picked[k] = first
                break
    rest = [k for k in ks if k not in picked]
    exact = dict(zip(rest, reader.read(centres[rest], size)))
    frames = [exact[k] if k not in picked else reader.rgb(picked[k].frame, picked[k].ts, size) for k in ks]
    return frames, np.array([centres[k] if k not in picked else picked[k].ts for k in ks])
