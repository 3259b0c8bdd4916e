"""The feature data set: layout, validation, lazy loading, padded batches, frame sampling.

Layout of a data set directory ``DIR`` (the contract every other part relies on)::

    DIR/videos.csv                 columns video_id,label,split  (split in train/val/test)
    DIR/features/<video_id>.npy    float32 [T, D]   per-frame backbone features, 1 fps
    DIR/memory/<video_id>.npy      float32 [Td, Dm] global-memory features of Td uniformly
                                                    sampled, downsampled frames (Td=16 in the paper)
    DIR/extract.json               optional: how ``adaframe extract`` made the features (backbones,
                                   weights, sizes, fps, measured GFLOPs); absent for synthetic data
    DIR/evidence.csv               optional: columns video_id,start,frames: the frames that show the class
                                   (``adaframe synth`` writes it); ``eval`` then reports how often a policy
                                   looked at one
"""

from __future__ import annotations

import csv
from collections import Counter
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from adaframe.distributed import Shard, rand
from adaframe.utils import AdaframeError

SPLITS = ("train", "val", "test")
CACHE_BYTES = 2 << 30
"""A split whose features and memory fit in this many bytes is kept in RAM after the first read of each video."""
SPEC = "extract.json"


@dataclass(frozen=True)
class VideoRecord:
    video_id: str
    label: str
    split: str


def read_videos_csv(root: str | Path) -> list[VideoRecord]:
    """Read and check ``root/videos.csv``: columns, unique ids, known splits."""
    path = Path(root) / "videos.csv"
    if not Path(root).is_dir():
        what = "is a file, not a data set directory" if Path(root).exists() else "does not exist"
        raise AdaframeError(f"data directory {root} {what}")
    if path.is_dir():
        raise AdaframeError(f"{path} is a directory: a data set needs a file videos.csv with columns video_id,label,split")
    if not path.is_file():
        raise AdaframeError(f"{path} is missing: a data set needs videos.csv with columns video_id,label,split")
    try:
        return _parse_videos_csv(path)
    except UnicodeDecodeError as e:
        raise AdaframeError(f"{path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except csv.Error as e:
        raise AdaframeError(f"{path} is not a readable CSV file: {e}") from None


def _parse_videos_csv(path: Path) -> list[VideoRecord]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is not a column name
        reader = csv.DictReader(f)
        missing = {"video_id", "label", "split"} - set(reader.fieldnames or [])
        if missing:
            raise AdaframeError(f"{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}")
        records, seen = [], set()
        for line, row in enumerate(reader, start=2):
            vid, label, split = (row["video_id"] or "").strip(), (row["label"] or "").strip(), (row["split"] or "").strip()
            if not vid or not label:
                raise AdaframeError(f"{path}:{line}: empty video_id or label")
            if "/" in vid or "\\" in vid or vid.startswith("."):
                raise AdaframeError(f"{path}:{line}: video_id {vid!r} is not a plain file name")
            if split not in SPLITS:
                raise AdaframeError(f"{path}:{line}: video {vid!r} has unknown split {split!r} (expected one of {SPLITS})")
            if vid in seen:
                raise AdaframeError(f"{path}:{line}: duplicate video_id {vid!r}")
            seen.add(vid)
            records.append(VideoRecord(vid, label, split))
    if not records:
        raise AdaframeError(f"{path} lists no videos")
    return records


def read_spec(root: str | Path) -> dict | None:
    """``root/extract.json`` as a dict, or ``None`` for data not made by ``adaframe extract`` (e.g. synthetic)."""
    path = Path(root) / SPEC
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AdaframeError(f"cannot read {path}: {e}") from None
    if not isinstance(spec, dict) or not {"backbone", "memory_backbone", "fps", "memory_frames"} <= spec.keys():
        raise AdaframeError(f"{path} is not an extraction record of 'adaframe extract'")
    return spec


def read_evidence(root: str | Path, video_ids: list[str]) -> np.ndarray | None:
    """``root/evidence.csv`` as [N, 2] (first frame, count) for ``video_ids`` in order, or None when there is none."""
    path = Path(root) / "evidence.csv"
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = {r["video_id"]: (int(r["start"]), int(r["frames"])) for r in csv.DictReader(f)}
        return np.array([rows[v] for v in video_ids], dtype=np.int64).reshape(len(video_ids), 2)
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:
        raise AdaframeError(f"{path} is not a table video_id,start,frames covering every video ({type(e).__name__}: {e})") from None


def evidence_hits(visited: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """visited [N, K] (-1: none), evidence [N, 2] -> [N] bool: some visited frame shows the evidence."""
    start, count = evidence[:, :1], evidence[:, 1:]
    return ((visited >= start) & (visited < start + count)).any(1)


def _header(path: Path, video_id: str, what: str) -> tuple[int, ...]:
    """Shape of a .npy file from its header only (memory-mapped, nothing read)."""
    if not path.is_file():
        raise AdaframeError(f"video {video_id!r}: {what} file {path} is missing")
    try:
        arr = np.load(path, mmap_mode="r")
    except Exception as e:  # a truncated or non-npy file
        raise AdaframeError(f"video {video_id!r}: cannot read {what} file {path}: {e}") from None
    if arr.ndim != 2:
        raise AdaframeError(f"video {video_id!r}: {what} {path} has shape {arr.shape}, expected 2-D [frames, dim]")
    if arr.dtype != np.float32:
        raise AdaframeError(f"video {video_id!r}: {what} {path} has dtype {arr.dtype}, expected float32")
    return arr.shape


def memory_subset(stored: int, frames: int) -> np.ndarray:
    """Indices of ``frames`` uniformly spaced memory frames out of ``stored`` (identity when equal)."""
    return np.floor((np.arange(frames) + 0.5) * stored / max(frames, 1)).astype(np.int64)


class FeatureDataset(Dataset):
    """One split of a feature data set, loaded lazily (memory-mapped) video by video.

    Args:
        root: the data set directory.
        split: ``train``, ``val`` or ``test``.
        classes: class names in index order; by default the sorted labels of the whole csv.
            Pass the checkpoint's list at evaluation so indices match training.
        memory_frames: how many global-memory frames to use: 0 ignores the memory, fewer than
            stored takes a uniform subset (the Table 2 ablation), more than stored is an error.
    """

    def __init__(self, root: str | Path, split: str, classes: list[str] | None = None, memory_frames: int | None = None):
        self.root = Path(root)
        records = read_videos_csv(self.root)
        if split not in SPLITS:
            raise AdaframeError(f"unknown split {split!r} (expected one of {SPLITS})")
        self.classes = list(classes) if classes is not None else sorted({r.label for r in records})
        index = {c: i for i, c in enumerate(self.classes)}
        self.records = [r for r in records if r.split == split]
        if not self.records:
            raise AdaframeError(f"{self.root / 'videos.csv'}: split {split!r} is empty")
        for r in self.records:
            if r.label not in index:
                raise AdaframeError(f"video {r.video_id!r}: label {r.label!r} is not among the model's {len(self.classes)} classes")
        self.labels = np.array([index[r.label] for r in self.records], dtype=np.int64)

        # Check every header now so that a bad file fails before hours of training, naming the video.
        self.lengths = np.zeros(len(self.records), dtype=np.int64)
        shapes: dict[str, tuple[int, tuple[int, ...] | None]] = {}  # video -> (D, (Td, Dm))
        for i, r in enumerate(self.records):
            t, d = _header(self.root / "features" / f"{r.video_id}.npy", r.video_id, "features")
            if t < 1:
                raise AdaframeError(f"video {r.video_id!r}: features have T={t} frames; at least 1 is needed")
            self.lengths[i] = t
            memory = _header(self.root / "memory" / f"{r.video_id}.npy", r.video_id, "memory") if memory_frames != 0 else None
            shapes[r.video_id] = (d, memory)
        counts = Counter(shapes.values())
        if len(counts) > 1:  # name the odd one out, not whichever video came second
            usual, n = counts.most_common(1)[0]
            vid, odd = next((v, s) for v, s in shapes.items() if s != usual)
            raise AdaframeError(f"video {vid!r}: features D={odd[0]}, memory [Td, Dm]={list(odd[1] or [])}, but {n} of the "
                                f"{len(shapes)} videos have D={usual[0]}, memory {list(usual[1] or [])}; all videos must share them")
        self.feature_dim, memory = next(iter(counts))
        stored_td, self.memory_dim = memory if memory is not None else (0, 0)
        if memory_frames is None:
            memory_frames = stored_td
        if memory_frames > stored_td:
            raise AdaframeError(f"--memory-frames {memory_frames} asked for, but {self.root / 'memory'} stores only {stored_td} per video")
        self.memory_frames = memory_frames
        self._memory_index = memory_subset(stored_td, memory_frames)
        # Reading a small .npy costs more Python time than a training step spends on a video: cache what fits.
        size = 4 * (int(self.lengths.sum()) * self.feature_dim + len(self.records) * memory_frames * self.memory_dim)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if size <= CACHE_BYTES else None

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, path: Path, video_id: str) -> np.ndarray:
        arr = np.load(path, mmap_mode="r")
        out = np.array(arr, dtype=np.float32)  # copy out of the memory map
        if not np.isfinite(out).all():
            raise AdaframeError(f"video {video_id!r}: {path} contains NaN or inf")
        return out

    def __getitem__(self, i: int) -> dict:
        if self._cache is not None and i in self._cache:
            feats, memory = self._cache[i]
        else:
            r = self.records[i]
            feats = self._load(self.root / "features" / f"{r.video_id}.npy", r.video_id)
            if self.memory_frames:
                memory = self._load(self.root / "memory" / f"{r.video_id}.npy", r.video_id)[self._memory_index]
            else:
                memory = np.zeros((0, self.memory_dim), dtype=np.float32)
            if self._cache is not None:
                feats.flags.writeable = memory.flags.writeable = False  # shared by every later read
                self._cache[i] = (feats, memory)
        return {"features": feats, "memory": memory, "label": int(self.labels[i]), "index": i}


@dataclass
class Batch:
    """A padded batch. ``features[b, t]`` is valid for ``t < lengths[b]`` (``mask``)."""

    features: torch.Tensor  # [B, Tmax, D]
    lengths: torch.Tensor  # [B] int64
    memory: torch.Tensor  # [B, Td, Dm]
    labels: torch.Tensor  # [B] int64
    index: torch.Tensor  # [B] position of each video in its dataset

    @property
    def mask(self) -> torch.Tensor:  # [B, Tmax] bool
        return torch.arange(self.features.shape[1], device=self.lengths.device)[None, :] < self.lengths[:, None]

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(getattr(self, f).to(device, non_blocking=True) for f in ("features", "lengths", "memory", "labels", "index")))


def collate(items: list[dict]) -> Batch:
    """Pad variable-length videos into one batch."""
    lengths = torch.tensor([it["features"].shape[0] for it in items], dtype=torch.int64)
    dim = items[0]["features"].shape[1]
    feats = np.zeros((len(items), int(lengths.max()), dim), dtype=np.float32)  # [B, Tmax, D], copied: items may be cached
    for b, it in enumerate(items):
        feats[b, : it["features"].shape[0]] = it["features"]
    memory = np.stack([it["memory"] for it in items])  # [B, Td, Dm]
    labels = torch.tensor([it["label"] for it in items], dtype=torch.int64)
    index = torch.tensor([it["index"] for it in items], dtype=torch.int64)
    return Batch(torch.from_numpy(feats), lengths, torch.from_numpy(memory), labels, index)


def uniform_indices(lengths: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k] the centre frame of each of ``k`` equal segments of each video, ``floor((i + 0.5) T / k)``, in integer
    arithmetic: every part of the package that reads "K uniform frames" (the baselines, the agents' uniform scan) reads
    exactly these, with no float rounding at a centre that falls on a whole frame."""
    i = torch.arange(k, device=lengths.device)[None, :]  # [1, k]
    return torch.minimum((2 * i + 1) * lengths[:, None] // (2 * k), lengths[:, None] - 1)


def uniform_frames(count: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``uniform_indices`` of one video of ``count`` frames, as a decoder wants them: the distinct frames (sorted) and,
    for each of the ``k`` reads, which of them it is (a video shorter than ``k`` reads some twice)."""
    picked = uniform_indices(torch.tensor([count]), k)[0].numpy()  # [k]
    distinct, where = np.unique(picked, return_inverse=True)
    return distinct, where.reshape(k)


def sample_indices(lengths: torch.Tensor, k: int, mode: Literal["uniform", "random"], generator: torch.Generator | None = None,
                   shard: Shard = Shard()) -> torch.Tensor:
    """Pick ``k`` frame indices per video, in temporal order.

    ``uniform`` takes the centre of each of ``k`` equal segments; ``random`` takes a random frame
    in each segment (TSN-style), so frames are distinct whenever ``k <= T``. When ``k > T``
    frames repeat (a video shorter than K).

    Returns:
        int64 tensor [B, k].
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    b, device = lengths.shape[0], lengths.device
    segment = torch.arange(k, device=device, dtype=torch.float64)[None, :]  # [1, k]
    t = lengths.to(torch.float64)[:, None]  # [B, 1]
    if mode == "uniform":
        return uniform_indices(lengths, k)
    if mode == "random":
        # Whole frames of segment i: [floor(iT/k), floor((i+1)T/k)), at least one.
        lo = torch.floor(segment / k * t)
        hi = torch.maximum(torch.floor((segment + 1) / k * t), lo + 1)
        u = shard.draw(rand, (b, k), generator=generator, dtype=torch.float64, device=device)
        idx = (lo + torch.floor(u * (hi - lo))).long()
    else:
        raise ValueError(f"unknown sampling {mode!r}")
    return torch.minimum(idx, lengths[:, None] - 1)


def gather_frames(features: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """features [B, T, D], idx [B, k] -> [B, k, D]."""
    return torch.gather(features, 1, idx[..., None].expand(-1, -1, features.shape[-1]))


def feature_statistics(dataset: FeatureDataset, max_videos: int = 2000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-dimension mean and std of the frames and the memory of (up to ``max_videos`` evenly spaced) videos.

    A dimension's std is floored at 1e-3 of the median std, so that a (nearly) constant dimension
    is not blown up into noise.
    """
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(len(dataset), max_videos)).round().astype(int))
    stats = {}
    for key in ("features", "memory"):
        n, s, ss = 0, 0.0, 0.0
        for i in picks:
            x = dataset[int(i)][key].astype(np.float64)  # [T or Td, D]
            n, s, ss = n + len(x), s + x.sum(0), ss + (x**2).sum(0)
        if n == 0:  # no memory (Td = 0)
            continue
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean**2, 0.0))
        std = np.maximum(std, 1e-3 * np.median(std) + 1e-12)
        stats["frames" if key == "features" else "memory"] = (mean.astype(np.float32), std.astype(np.float32))
    return stats
