"""``adaframe extract``: decode videos into the feature data set layout 'adaframe train' reads.

The work, resumable and sharded, is ``recognize.extraction.extract``; this module is the command: its options and the
exit status.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from adaframe.recognize import extraction


@dataclass
class ExtractConfig:
    """Decode videos and write backbone features + global memory in the layout 'adaframe train' reads."""

    videos: Path
    """a directory of videos (ROOT/<label>/<file> or ROOT/<split>/<label>/<file>), a list file with
    lines 'path label [split]' (mmaction2 style), or an ActivityNet v1.3 JSON"""
    out: Path
    """data set directory to write (or to resume)"""
    video_root: Annotated[Path | None, tyro.conf.arg(metavar="DIR", help_behavior_hint="(default: the list's folder)")] = None
    """where relative paths of a list file, or the files of an ActivityNet JSON, are found"""
    split: Literal["train", "val", "test"] = "train"
    """split of the videos whose entry names none"""
    backbone: Literal["resnet101", "resnet50", "resnet18", "mobilenet_v2"] = "resnet101"
    backbone_weights: Annotated[Path | None, tyro.conf.arg(metavar="PATH", help_behavior_hint="(default: random init, with a warning)")] = None
    """torchvision-format state dict of the backbone (a local file; nothing is downloaded)"""
    size: int = 224
    """input size of the backbone"""
    memory_backbone: Literal["mobilenet_v2"] = "mobilenet_v2"
    memory_weights: Annotated[Path | None, tyro.conf.arg(metavar="PATH", help_behavior_hint="(default: random init, with a warning)")] = None
    """torchvision-format state dict of the memory backbone"""
    memory_size: int = 112
    memory_frames: int = 16
    """Td: uniformly spaced frames in the global memory"""
    fps: float = 1.0
    """rate of the frames the agent may choose from"""
    batch_size: int = 32
    """frames per backbone forward"""
    workers: int = 2
    """decoding processes (0: decode in the main process)"""
    shard: Annotated[str | None, tyro.conf.arg(metavar="I/N")] = None
    """do only the i-th of n equal parts of the list (0-based); under torchrun the ranks split the work"""
    device: Literal["cpu", "cuda"] = "cpu"
    seed: int = 0
    """seed of randomly initialised backbones (recorded, so predict can rebuild them)"""
    progress: bool = True
    ray: Annotated[str | None, tyro.conf.arg(metavar="local|auto|ADDRESS")] = None
    """run as a Ray Data pipeline, the same files written; 'local': a Ray started on this machine for the run; 'auto' or
    HOST:6379 or ray://HOST:10001: the cluster 'ray start' made (needs adaframe[ray]; --device cuda: a GPU an actor)"""
    ray_actors: int = 1
    """with --ray: actors, each building the backbones once and decoding its own videos"""

    def __post_init__(self) -> None:
        extraction.check_options(self.size, self.memory_size, self.memory_frames, self.fps, self.batch_size, self.workers,
                                 self.shard, self.ray, self.ray_actors)


def run_extract(cfg: ExtractConfig) -> None:
    """Exit status 0: every video extracted; 1: some failed (the others are done; reasons in failures.csv)."""
    r = extraction.extract(**asdict(cfg))  # the config's fields are the function's arguments
    print(f"{r['videos']} videos listed; shard {r['shard']}: extracted {r['extracted']}, skipped {r['skipped']} already done, "
          f"failed {r['failed_now']}. {cfg.out}: {r['done']} videos in videos.csv, {r['failed']} in failures.csv{r['skipped_note']}")
    if r["failed"]:
        print(f"adaframe: {r['failed']} video(s) could not be extracted: see {cfg.out / 'failures.csv'}", file=sys.stderr)
        sys.exit(1)
