"""``adaframe probe``: what decoding finds in video files (``media.probe``, every frame decoded), one row each."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from adaframe.utils import AdaframeError, error_line


@dataclass
class ProbeConfig:
    """Show what decoding finds in video files: duration, rate, frames, size, rotation, or the error."""

    videos: tyro.conf.Positional[tuple[Path, ...]]
    fps: float = 1.0
    """rate of the frames 'extract' would take"""


def run_probe(cfg: ProbeConfig) -> None:
    """Exit status 0: every file decoded; 1: some failed (each error also on stderr)."""
    from adaframe.media.probe import probe
    from adaframe.media.reader import count_frames, sample_times
    from adaframe.report.tables import format_table

    rows, failed = [], 0
    for path in cfg.videos:
        try:
            info = probe(path)
            decoded = count_frames(path)  # decodes the whole stream: finds corrupt data the header hides
            rows.append([path.name, info.codec, info.duration, info.fps, info.frames, decoded,
                         len(sample_times(info.duration, cfg.fps)), f"{info.width}x{info.height}", info.rotation, ""])
        except AdaframeError as e:
            failed += 1
            rows.append([path.name, None, None, None, None, None, None, None, None, f"error: {e}"])
            print(error_line(str(e)), file=sys.stderr)
    print(format_table(["video", "codec", "seconds", "fps", "frames stated", "frames decoded", f"T at {cfg.fps:g} fps",
                        "display", "rotation", ""], rows))
    if failed:
        sys.exit(1)
