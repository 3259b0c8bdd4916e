"""The job runner of ``adaframe extract`` and ``predict --videos``: a collection of video files into an output folder,
built to be killed, restarted and split between machines.

Both commands list their videos the same way (``data.video_lists``, and the files a folder listing leaves out go to
``OUT/skipped.csv``), split the list by ``--shard i/n`` or by the ranks of torchrun, refuse an output folder made with
other settings, record a video's failure in ``OUT/failures/<id>.txt`` (atomically; a later success removes it), and
rebuild their index CSVs from the per-video files once every process is done. What a video's work is, and which files
mark it done, stay with each command.
"""

from __future__ import annotations

import json
import operator
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from adaframe import distributed
from adaframe.data.video_lists import VideoEntry, parse_shard, read_video_list, skipped_files
from adaframe.distributed import Shard
from adaframe.utils import AdaframeError, atomic_write, error_line, make_dir, resolve_device, write_csv, write_json


@dataclass
class CollectionJob:
    """One process's part of a collection job.

    Attributes:
        out: the output folder.
        entries: every video of the list, in its order.
        skipped: the files of a listed folder that are not videos, with why (none for a list file or JSON).
        ranks: the torchrun process group (one process without torchrun).
        shard, shards: this process does ``entries[shard::shards]``.
        device: where its networks run.
    """

    out: Path
    entries: list[VideoEntry]
    skipped: list[tuple[Path, str]]
    ranks: Shard
    shard: int
    shards: int
    device: torch.device

    @classmethod
    def start(cls, videos: Path, out: Path, video_root: Path | None = None, split: str = "train", shard: str | None = None,
              device: str = "cpu") -> CollectionJob:
        """List ``videos`` (a folder, a list file, an ActivityNet JSON), join torchrun's group if launched by it, and take
        this process's shard: ``--shard i/n`` or the rank, never both."""
        entries, skipped = read_video_list(videos, video_root, split), skipped_files(videos)
        ranks, dev = distributed.start(resolve_device(device))
        if ranks.world > 1 and shard is not None:
            raise AdaframeError("--shard and torchrun both split the work: use one of them")
        i, n = parse_shard(shard) if ranks.world == 1 else (ranks.rank, ranks.world)
        return cls(Path(out), entries, skipped, ranks, i, n, dev)

    @property
    def mine(self) -> list[VideoEntry]:
        """The videos of this process."""
        return self.entries[self.shard::self.shards]

    def open(self, record: str, settings: dict, what: str, same: Callable[[dict, dict], bool] = operator.eq,
             write: bool = True) -> None:
        """Create ``OUT`` and ``OUT/failures``; refuse an ``OUT`` whose ``record`` (a JSON file) says its ``what`` were
        made with other settings than ``settings`` (``same`` compares them); write the record unless told not to."""
        try:
            make_dir(self.out / "failures")
        except OSError as e:
            raise AdaframeError(f"cannot create --out {self.out}: {e.strerror}") from None
        old = self.out / record
        if old.is_file() and not same(json.loads(old.read_text()), settings):
            raise AdaframeError(f"{self.out} holds {what} made with other settings ({old}); use another --out or the same settings")
        if write and self.ranks.main:
            write_json(old, settings)

    def failure_file(self, video_id: str) -> Path:
        return self.out / "failures" / f"{video_id}.txt"

    def failed(self, entry: VideoEntry, error: str) -> None:
        """Record why ``entry`` failed (the job goes on) and say so on stderr as ``adaframe: error: <path>: <reason>``."""
        atomic_write(self.failure_file(entry.video_id), lambda p: p.write_text(error + "\n"))
        tqdm.write(error_line(f"{entry.path}: " + error.removeprefix(f"{entry.path}: ")), file=sys.stderr)

    def succeeded(self, entry: VideoEntry) -> None:
        """``entry`` is done: remove the failure file an earlier run may have left for it."""
        self.failure_file(entry.video_id).unlink(missing_ok=True)

    def write_failures(self, candidates: Iterable[tuple[str, str]], done: Callable[[str], bool]) -> int:
        """Rebuild ``OUT/failures.csv`` from the failure files of the ``(video_id, path)`` candidates not done, in their
        order; returns how many failed."""
        rows = [[vid, path, self.failure_file(vid).read_text().strip()] for vid, path in candidates
                if not done(vid) and self.failure_file(vid).is_file()]
        write_csv(self.out / "failures.csv", ["video_id", "path", "reason"], rows)
        return len(rows)

    def finish(self, write_index: Callable[[], dict]) -> dict:
        """Wait for every process, write the index (``write_index``, on every process: they write the same files from the
        same per-video files, atomically) and ``OUT/skipped.csv``; returns the index's numbers with ``skipped_files``."""
        distributed.barrier(self.ranks)
        numbers = write_index()
        write_csv(self.out / "skipped.csv", ["path", "reason"], [[str(p), why] for p, why in self.skipped])
        distributed.stop()
        return {**numbers, "skipped_files": len(self.skipped)}

    def skipped_note(self) -> str:
        """``; 2 files skipped (not videos: see OUT/skipped.csv)`` for a summary line ('' when none were)."""
        n = len(self.skipped)
        return f"; {n} file{'s' * (n != 1)} skipped (not videos: see {self.out / 'skipped.csv'})" if n else ""
