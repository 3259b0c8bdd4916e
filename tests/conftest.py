"""Shared fixtures: a tiny synthetic data set (one per xdist worker) and a hand-made data set writer."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from adaframe.synth import SynthConfig, generate

# Two xdist workers share two cores: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)

TINY_SYNTH = dict(videos=60, classes=4, dim=16, memory_dim=8, min_frames=8, max_frames=20, max_evidence=2)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A tiny synthetic data set, generated once per worker; tests must not modify it."""
    return generate(SynthConfig(**TINY_SYNTH), tmp_path_factory.mktemp("synth") / "data", progress=False)


def read_rows(root: Path) -> list[dict]:
    with open(Path(root) / "videos.csv", newline="") as f:
        return list(csv.DictReader(f))


def write_dataset(root: Path, videos: list[dict], columns: tuple[str, ...] = ("video_id", "label", "split")) -> Path:
    """Write a feature data set by hand.

    Each video is a dict with ``video_id``, ``label``, ``split`` and optionally ``features`` /
    ``memory`` arrays (saved as given, so any dtype or shape can be written; ``None`` or absent
    writes no file).
    """
    root = Path(root)
    (root / "features").mkdir(parents=True, exist_ok=True)
    (root / "memory").mkdir(parents=True, exist_ok=True)
    with open(root / "videos.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for v in videos:
            w.writerow([v[c] for c in columns])
    for v in videos:
        if v.get("features") is not None:
            np.save(root / "features" / f"{v['video_id']}.npy", v["features"])
        if v.get("memory") is not None:
            np.save(root / "memory" / f"{v['video_id']}.npy", v["memory"])
    return root


def random_videos(n: int, classes: int = 3, dim: int = 6, memory: tuple[int, int] = (8, 4), min_t: int = 3, max_t: int = 9,
                  seed: int = 0, split: str = "train") -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = int(rng.integers(min_t, max_t + 1))
        out.append({
            "video_id": f"vid{i:03d}", "label": f"c{i % classes}", "split": split,
            "features": rng.standard_normal((t, dim)).astype(np.float32),
            "memory": rng.standard_normal(memory).astype(np.float32),
        })
    return out


@pytest.fixture
def make_dataset():
    """The hand-made data set writer (see ``write_dataset``)."""
    return write_dataset
