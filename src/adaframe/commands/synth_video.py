"""``adaframe synth-video``: synthetic video files (``media.synth_video``) and the list file 'adaframe extract' reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adaframe.media.synth_video import SynthVideoConfig, generate_videos


@dataclass(kw_only=True)
class SynthVideoCommand(SynthVideoConfig):
    """Render synthetic video files (class visible only in some frames) and a list file for 'adaframe extract'."""

    out: Path
    """directory to write (videos/, list.txt)"""


def run_synth_video(cmd: SynthVideoCommand) -> None:
    out = generate_videos(cmd, cmd.out)
    print(f"wrote {cmd.videos} videos to {out / 'videos'} and the list {out / 'list.txt'}")
