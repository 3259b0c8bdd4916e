"""Lists of video files, as ``extract`` and ``predict --videos`` take them: a folder, a list file, an ActivityNet JSON.

Every entry gets an id (the file name, unique in the list), a label and a split; ``parse_shard`` splits
a list between machines.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from adaframe.data.features import SPLITS
from adaframe.utils import AdaframeError

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".gif"}
ACTIVITYNET_SUBSETS = {"training": "train", "validation": "val", "testing": "test"}
UNLABELED = "unlabeled"


@dataclass(frozen=True)
class VideoEntry:
    """One video of a list: its id (the file name, unique in the list), file, label and split."""

    video_id: str
    path: Path
    label: str
    split: str


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n), 0 <= i < n; ``None`` -> (0, 1)."""
    if shard is None:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
    if not m or not 0 <= int(m[1]) < int(m[2]):
        raise AdaframeError(f"--shard {shard!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(m[1]), int(m[2])


def _entry(path: Path, label: str, split: str, where: str) -> VideoEntry:
    if split not in SPLITS:
        raise AdaframeError(f"{where}: unknown split {split!r} (expected one of {SPLITS})")
    vid = path.stem
    if not vid or vid.startswith(".") or not label:
        raise AdaframeError(f"{where}: cannot use {str(path)!r} (empty name or label)")
    return VideoEntry(vid, path, label, split)


def _why_not_a_video(path: Path) -> str | None:
    """Why a file of a listed folder is left out, or None for a video file (by extension, in any case)."""
    if path.name.startswith("."):
        return "hidden file"  # ._x.mp4: macOS litter
    return None if path.suffix.lower() in VIDEO_EXTENSIONS else "not a video file (by its extension)"


def video_files(root: Path) -> list[Path]:
    """Every video file under ``root``, sorted; the others are ``skipped_files``."""
    return [p for p in sorted(root.rglob("*")) if p.is_file() and _why_not_a_video(p) is None]


def skipped_files(videos: str | Path) -> list[tuple[Path, str]]:
    """The files a folder listing leaves out (hidden ones, other extensions), sorted, each with why; none for a list file
    or a JSON, whose entries are named one by one."""
    root = Path(videos)
    if not root.is_dir():
        return []
    return [(p, why) for p in sorted(root.rglob("*")) if p.is_file() and (why := _why_not_a_video(p)) is not None]


def _from_directory(root: Path, split: str) -> list[VideoEntry]:
    entries = []
    for p in video_files(root):
        parts = p.relative_to(root).parts[:-1]
        if len(parts) >= 2 and parts[-2] in SPLITS:  # ROOT/<split>/<label>/<file>
            entries.append(_entry(p, parts[-1], parts[-2], str(p)))
        else:  # ROOT/<label>/<file>, or a flat folder of unlabeled videos
            entries.append(_entry(p, parts[-1] if parts else UNLABELED, split, str(p)))
    return entries


def _from_list(path: Path, root: Path, split: str) -> list[VideoEntry]:
    entries = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AdaframeError(f"cannot read video list {path}: {e}") from None
    for n, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # Paths may contain spaces: the label (and an optional split) are the last words, the path is
        # the rest of the line as written.
        three, two = line.rsplit(None, 2), line.rsplit(None, 1)
        if len(three) == 3 and three[2] in SPLITS:
            rel, label, row_split = three
        elif len(two) == 2:
            if len(three) == 3 and (root / three[0]).is_file():  # 'clip.mp4 label trian': a misspelled split
                raise AdaframeError(f"{path}:{n}: unknown split {three[2]!r} (expected one of {SPLITS})")
            (rel, label), row_split = two, split
        else:
            raise AdaframeError(f"{path}:{n}: expected 'path label [split]', got {line!r}")
        entries.append(_entry(root / rel, label, row_split, f"{path}:{n}"))
    return entries


def _from_activitynet(path: Path, root: Path) -> list[VideoEntry]:
    """ActivityNet v1.3: ``{"database": {id: {"subset", "annotations": [{"label"}]}}}``; files ``v_<id>.*`` or ``<id>.*``."""
    try:
        database = json.loads(path.read_text())["database"]
        if not isinstance(database, dict):
            raise TypeError(f"'database' is {type(database).__name__}")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as e:
        raise AdaframeError(f"{path} is not an ActivityNet v1.3 JSON (a 'database' object of videos): {type(e).__name__}: {e}") from None
    files = {p.stem: p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS}
    entries, unlabeled = [], 0
    for vid, meta in database.items():
        if not isinstance(meta, dict):
            raise AdaframeError(f"{path}: video {vid!r} is {type(meta).__name__}, expected an object with 'subset' and 'annotations'")
        if vid in ("", ".", "..") or "/" in vid or "\0" in vid:  # the id names the feature files
            raise AdaframeError(f"{path}: video id {vid!r} cannot be a file name")
        annotations = meta.get("annotations") or []
        if not isinstance(annotations, list):
            raise AdaframeError(f"{path}: video {vid!r} has 'annotations' of type {type(annotations).__name__}, expected a list")
        labels = [a.get("label") for a in annotations if isinstance(a, dict) and a.get("label")]
        if not all(isinstance(label, str) for label in labels):
            raise AdaframeError(f"{path}: video {vid!r} has a label that is not a string: {labels!r}")
        if not labels:  # the testing subset has no labels: nothing to train or evaluate on
            unlabeled += 1
            continue
        subset = meta.get("subset")
        if not isinstance(subset, str) or subset not in ACTIVITYNET_SUBSETS:
            raise AdaframeError(f"{path}: video {vid!r} has subset {subset!r}, expected one of {sorted(ACTIVITYNET_SUBSETS)}")
        file = files.get(f"v_{vid}") or files.get(vid) or root / f"v_{vid}.mp4"  # a missing file fails as that video
        label = Counter(labels).most_common(1)[0][0]
        entries.append(VideoEntry(vid, file, label, ACTIVITYNET_SUBSETS[subset]))
    if unlabeled:
        print(f"{path}: skipped {unlabeled} videos without annotations (ActivityNet's testing subset)")
    return entries


def read_video_list(videos: str | Path, video_root: str | Path | None = None, split: str = "train") -> list[VideoEntry]:
    """The videos to extract, from a directory, a list file or an ActivityNet JSON; ids must be unique."""
    videos = Path(videos)
    if not videos.exists():
        raise AdaframeError(f"--videos {videos} does not exist")
    root = Path(video_root) if video_root is not None else (videos if videos.is_dir() else videos.parent)
    if videos.is_dir():
        entries = _from_directory(videos, split)
    elif videos.suffix.lower() in VIDEO_EXTENSIONS:
        raise AdaframeError(f"--videos {videos} is a video; --videos takes a folder of videos, a list file or an ActivityNet "
                            "JSON (to recognise one file, use 'adaframe predict')")
    elif videos.suffix.lower() == ".json":
        entries = _from_activitynet(videos, root)
    else:
        entries = _from_list(videos, root, split)
    if not entries:
        raise AdaframeError(f"--videos {videos}: no videos found")
    # clip.avi and clip.mp4 side by side: their whole file names tell them apart (only where the stems collide,
    # so the ids of every other video stay their stems).
    stems = Counter(e.video_id for e in entries)
    entries = [VideoEntry(e.path.name, e.path, e.label, e.split) if stems[e.video_id] > 1 and e.path.suffix else e for e in entries]
    seen: dict[str, VideoEntry] = {}
    for e in entries:
        if e.video_id in seen:
            raise AdaframeError(f"video id {e.video_id!r} (the file name) is used twice: {seen[e.video_id].path} and {e.path}; "
                                "rename one of them")
        seen[e.video_id] = e
    return entries
