"""A synthetic feature data set in which *which* frames you look at decides the answer, written in the feature layout
(``data.features``) with ``evidence.csv``.

Each class belongs to a group of confusable classes that share a scene. Most frames show only noise or the group's
scene; a few consecutive frames (how many varies by class and by video), at a random place, carry the class evidence
and a "salient" pattern shared by all classes. The global memory sees a blurred, noisy version of each stretch of the
video, so it weakly shows *where* the evidence is and more weakly *what* it is.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from adaframe.utils import AdaframeError, atomic_write, save_npy


@dataclass
class SynthConfig:
    """Knobs of the synthetic data set (defaults: the data of ``make demo`` and the tests)."""

    videos: int = 4000
    classes: int = 12
    group_size: int = 3
    """classes per group of confusable classes sharing a scene"""
    dim: int = 128
    """backbone feature dim D"""
    memory_dim: int = 64
    """global-memory feature dim Dm"""
    memory_frames: int = 32
    """Td: uniformly sampled frames stored in the global memory (the paper uses 16; 32 lets Table 2 try more)"""
    min_frames: int = 30
    max_frames: int = 120
    min_evidence: int = 2
    max_evidence: int = 6
    """per-class base count of evidence frames is drawn in [min_evidence, max_evidence]; each video adds -1..+1"""
    ramp: int = 3
    """frames on each side of the evidence that show it fading (half as strong per frame away)"""
    noise: float = 1.0
    evidence_strength: float = 3.0
    scene_strength: float = 2.5
    salient_strength: float = 4.0
    memory_noise: float = 0.6
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        if self.videos < 3:
            raise AdaframeError("--videos must be at least 3 (one per split)")
        if self.classes < 2 or self.group_size < 1:
            raise AdaframeError("--classes must be >= 2 and --group-size >= 1")
        if not 1 <= self.min_frames <= self.max_frames:
            raise AdaframeError("need 1 <= --min-frames <= --max-frames")
        if not 1 <= self.min_evidence <= self.max_evidence or self.max_evidence + 1 > self.min_frames:
            raise AdaframeError("need 1 <= --min-evidence <= --max-evidence < --min-frames")
        if self.ramp < 0 or self.noise < 0 or self.memory_noise < 0:
            raise AdaframeError("--ramp, --noise and --memory-noise must be >= 0")
        if self.dim < 1 or self.memory_dim < 1 or self.memory_frames < 0:
            raise AdaframeError("--dim and --memory-dim must be >= 1, --memory-frames >= 0")
        if self.val_fraction < 0 or self.test_fraction < 0 or self.val_fraction + self.test_fraction >= 1:
            raise AdaframeError("--val-fraction and --test-fraction must be >= 0 and sum to < 1")


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def generate(cfg: SynthConfig, out: str | Path, progress: bool = True) -> Path:
    """Write a synthetic data set in the feature layout to ``out`` and return the path."""
    out = Path(out)
    rng = np.random.default_rng(cfg.seed)
    groups = -(-cfg.classes // cfg.group_size)
    class_proto = _unit(rng, cfg.classes, cfg.dim) * cfg.evidence_strength
    scene_proto = _unit(rng, groups, cfg.dim) * cfg.scene_strength
    salient = _unit(rng, 1, cfg.dim)[0] * cfg.salient_strength
    # The light network: a fixed random projection of what a blurred low-res frame shows.
    light = rng.standard_normal((cfg.dim, cfg.memory_dim)) / np.sqrt(cfg.dim)
    base_evidence = rng.integers(cfg.min_evidence, cfg.max_evidence + 1, size=cfg.classes)
    names = [f"class_{c:02d}" for c in range(cfg.classes)]

    labels = np.arange(cfg.videos) % cfg.classes  # balanced classes
    rng.shuffle(labels)
    n_val, n_test = round(cfg.videos * cfg.val_fraction), round(cfg.videos * cfg.test_fraction)
    splits = ["val"] * n_val + ["test"] * n_test + ["train"] * (cfg.videos - n_val - n_test)

    (out / "features").mkdir(parents=True, exist_ok=True)
    (out / "memory").mkdir(parents=True, exist_ok=True)
    rows, evidence = [], []
    for v in tqdm(range(cfg.videos), desc="synth", disable=not progress, unit="video"):
        c = int(labels[v])
        t = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
        n_ev = int(np.clip(base_evidence[c] + rng.integers(-1, 2), 1, t))
        start = int(rng.integers(0, t - n_ev + 1))
        feats = rng.standard_normal((t, cfg.dim)) * cfg.noise
        in_scene = rng.random(t) < 0.6  # the scene is visible in most, not all, frames
        feats[in_scene] += scene_proto[c // cfg.group_size]
        # Evidence at full strength on n_ev frames, fading over `ramp` frames on each side.
        dist = np.maximum(np.maximum(start - np.arange(t), np.arange(t) - (start + n_ev - 1)), 0)  # [t]
        strength = np.where(dist <= cfg.ramp, 0.5**dist, 0.0)  # [t]
        feats += strength[:, None] * (class_proto[c] + salient)
        vid = f"synth_{v:05d}"
        save_npy(out / "features" / f"{vid}.npy", feats.astype(np.float32))

        # Memory frame j blurs the stretch of video around its uniformly sampled time.
        edges = np.linspace(0, t, cfg.memory_frames + 1)
        mem = np.zeros((cfg.memory_frames, cfg.memory_dim))
        for j in range(cfg.memory_frames):
            lo, hi = int(edges[j]), max(int(edges[j + 1]), int(edges[j]) + 1)
            mem[j] = feats[lo:hi].mean(0) @ light
        mem += rng.standard_normal(mem.shape) * cfg.memory_noise
        save_npy(out / "memory" / f"{vid}.npy", mem.astype(np.float32))
        rows.append((vid, names[c], splits[v]))
        evidence.append((vid, start, n_ev))

    # Where the evidence is (not part of the layout: for diagnostics and tests of the policy).
    _write_csv(out / "evidence.csv", ["video_id", "start", "frames"], evidence)
    _write_csv(out / "videos.csv", ["video_id", "label", "split"], rows)  # last: its presence means the set is complete
    return out


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write(path, lambda p: p.write_text(buf.getvalue()))
