"""Shared helpers: a tiny synthetic data set (one per xdist worker), hand-made data sets and videos, and the
``adaframe`` command run in-process (``adaframe``) or under torchrun."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import random
import shutil
import signal
import subprocess as sp
import sys
import traceback
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from adaframe.data.synth import SynthConfig, generate

# Two xdist workers share two cores: one intra-op thread each avoids oversubscription.
torch.set_num_threads(1)

TINY_SYNTH = dict(videos=60, classes=4, dim=16, memory_dim=8, memory_frames=16, min_frames=8, max_frames=20, max_evidence=2)


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


def run_agent(model, features: torch.Tensor, lengths: torch.Tensor, memory: torch.Tensor, steps: int, explore: bool = True,
              generator: torch.Generator | None = None):
    """The rollout over stored features: sampled (training) with ``explore``, else the most likely actions for K steps."""
    from adaframe.models.recurrent import Exploration
    from adaframe.rl.rollout import rollout, stored_frames, train_rollout

    if explore:
        return train_rollout(model, memory, lengths, stored_frames(features), steps, Exploration(generator))
    return rollout(model, memory, lengths, stored_frames(features), steps)


def lively(model: torch.nn.Module, std: float = 1.0) -> torch.nn.Module:
    """An untrained AdaFrame whose heads vary from video to video and step to step: the utility and the slots policy
    start at zero weights (the same utility, mostly the scan, for every video), which would leave stop rules and jumps
    untested. Draws their weights from N(0, std^2) with the global RNG."""
    with torch.no_grad():
        heads = [model.utility.weight]
        heads += [p for name, p in model.select.named_parameters() if name.endswith("weight")]
        for p in heads:
            p.normal_(0.0, std)
        if getattr(model.cfg, "critic", "state") == "prediction":  # as a trained critic: the better the best margin so far,
            model.utility.weight[0, -1] = -20 * std                # the less there is to gain (utilities fall, stop rules fire)
    return model


@pytest.fixture
def make_dataset():
    """The hand-made data set writer (see ``write_dataset``)."""
    return write_dataset


@dataclass
class Ran:
    """What a command run in-process left: the fields of ``subprocess.CompletedProcess`` that tests read."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def default_agent() -> dict:
    """The options of the default agent (the 'fast' preset's), as ``adaframe train`` builds it."""
    from adaframe.models.kinds import KINDS
    from adaframe.train.config import PRESETS

    return {o: getattr(PRESETS["fast"], o) for o in KINDS["adaframe"].options if hasattr(PRESETS["fast"], o)}


def adaframe(*args: str, cwd: Path, check: bool = True, timeout: int = 300, subprocess: bool = False) -> Ran | sp.CompletedProcess:
    """Run ``adaframe ARGS`` as a user would (one thread, no debug tracebacks), in this process unless ``subprocess``.

    In-process saves a fresh interpreter importing torch for every call. ``adaframe.cli.main`` runs in ``cwd``
    with stdout/stderr captured, SystemExit turned into the exit status and an uncaught exception into status 1
    with its traceback on stderr, as a fresh ``python -m adaframe`` would. Warnings print to the captured stderr under
    a fresh interpreter's filters. Global state a run may change (argv, cwd, signal handlers, torch threads, RNGs,
    tqdm bars) is put back. ``timeout`` applies to subprocesses only.
    """
    if subprocess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        env.pop("ADAFRAME_DEBUG", None)
        proc = sp.run([sys.executable, "-m", "adaframe", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    else:
        proc = _in_process(list(args), Path(cwd))
    if check:
        assert proc.returncode == 0, f"adaframe {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def _in_process(args: list[str], cwd: Path) -> Ran:
    from tqdm import tqdm

    from adaframe.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_argv, threads = sys.argv, torch.get_num_threads()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    env = {k: os.environ.pop(k) for k in ("ADAFRAME_DEBUG", "WORLD_SIZE", "RANK", "LOCAL_RANK") if k in os.environ}
    bars = set(tqdm._instances) if hasattr(tqdm, "_instances") else set()

    def show(message, category, filename, lineno, file=None, line=None):  # what a fresh interpreter prints on stderr
        err.write(warnings.formatwarning(message, category, filename, lineno, line))

    code = 0
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.resetwarnings()  # a fresh interpreter's filters, not pytest's
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            warnings.showwarning = show
            sys.argv = ["adaframe", *args]
            try:
                main(args)
            except SystemExit as e:
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:  # sys.exit("message"): printed, status 1
                    print(e.code, file=sys.stderr)
                    code = 1
            except Exception:  # what the interpreter does with an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved_argv
        os.environ.update(env)
        torch.set_num_threads(threads)
        for s, h in handlers.items():
            signal.signal(s, h)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        for bar in set(getattr(tqdm, "_instances", ())) - bars:  # a bar an error left open would offset later ones
            bar.close()
    return Ran(["adaframe", *args], code, out.getvalue(), err.getvalue())


def torchrun_command(nproc: int, *args: str) -> list[str]:
    """``torchrun --standalone --nproc-per-node N -m adaframe ARGS``: standalone binds a free port itself, so tests
    running side by side never race for one."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), "-m", "adaframe", *args]


def torchrun(nproc: int, *args: str, cwd: Path, check: bool = True, timeout: int = 300) -> sp.CompletedProcess:
    """Run ``adaframe ARGS`` in ``nproc`` processes under torchrun (one thread each, no debug tracebacks)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("ADAFRAME_DEBUG", None)
    proc = sp.run(torchrun_command(nproc, *args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"torchrun {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def keyframe_memory(path: Path, stored: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The memory rule (``media/memory_rule.py``) computed another way: one sequential pass with plain PyAV, taking the
    decoder's ``key_frame`` flags instead of seeks. Frame k of ``stored`` segments [a, b) with centre c: the last
    keyframe at or before c if it is at or after a, else the last keyframe before b if it is after c, else the
    frame at c; the frame at c always in a video of at most 4 frames per memory frame. Returns the frames
    [stored, size, size, 3] and their times."""
    import av

    from adaframe.media.probe import probe
    from adaframe.media.reader import to_rgb

    duration = probe(path).duration
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start, ts, timed = stream.start_time or 0, -math.inf, []
        short = 0 < duration * float(stream.average_rate or 0) <= 4 * stored
        for frame in container.decode(stream):
            ts = max(ts, float((frame.pts - start) * stream.time_base))  # the running maximum of the time rule
            timed.append((ts, frame.key_frame, frame))
    frames, times = [], []
    for k in range(stored):
        a, c, b = k * duration / stored, (k + 0.5) * duration / stored, (k + 1) * duration / stored
        before_c = [t for t in timed if t[1] and t[0] <= c]
        before_b = [t for t in timed if t[1] and t[0] < b]
        if before_c and before_c[-1][0] >= a and not short:
            pick = before_c[-1]
        elif before_b and before_b[-1][0] > c and not short:
            pick = before_b[-1]
        else:
            pick = [t for t in timed if t[0] <= c][-1] if timed[0][0] <= c else timed[0]
            pick = (c, *pick[1:])
        frames.append(to_rgb(pick[2], size))
        times.append(pick[0])
    return np.stack(frames), np.array(times)


def write_video(path: Path, frames: int, fps: int, width: int, height: int, codec: str = "libx264", **options: str) -> Path:
    """``frames`` frames of noise at ``fps``, encoded with PyAV (not with the package's own writer)."""
    import av

    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(frames):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path



def write_audio_only(path: Path) -> Path:
    """A file with one AAC audio stream and no video."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
# Tiny backbones for speed: ResNet-18 at 64 px and MobileNetV2 at 32 px (the code path is that of ResNet-101 at 224).
TINY_EXTRACT = ("--backbone", "resnet18", "--size", "64", "--memory-size", "32", "--workers", "0", "--no-progress")


@pytest.fixture(scope="session")
def video_files(tmp_path_factory) -> Path:
    """Eight tiny synthetic MP4s (6-9 s, 4 fps) and their list.txt; tests must not modify them."""
    from adaframe.media.synth_video import SynthVideoConfig, generate_videos

    cfg = SynthVideoConfig(videos=8, classes=2, min_seconds=6, max_seconds=9, width=96, height=64, val_fraction=0.25)
    return generate_videos(cfg, tmp_path_factory.mktemp("videos"), progress=False)


@pytest.fixture(scope="session")
def extracted(video_files, tmp_path_factory) -> Path:
    """Features of ``video_files`` extracted with the tiny backbones; tests must not modify them."""
    from adaframe.recognize.extraction import extract

    out = tmp_path_factory.mktemp("extracted") / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        extract(video_files / "list.txt", out, backbone="resnet18", size=64, memory_size=32, workers=0, progress=False)
    return out


def source(video_files: Path, i: int) -> Path:
    """The ``i``-th MP4 of ``video_files``."""
    return video_files / "videos" / f"video{i:05d}.mp4"


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def write_list(path: Path, lines: list[str]) -> Path:
    """A video list file ('path label [split]' lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


RUN_K = 4
"""K of the runs ``make_run`` writes"""


def make_run(run_dir: Path, data: Path, kind: str = "adaframe", seed: int = 0, memory_frames: int = 16) -> Path:
    """An untrained run on the extracted features ``data`` (the default agent, or a model of ``kind``), for the commands
    that read a run: predict must agree with eval whatever the weights are."""
    from adaframe.data.features import FeatureDataset, read_spec
    from adaframe.models.kinds import build_model, save_checkpoint

    spec = read_spec(data)
    ds = FeatureDataset(data, "train")
    dims = {"feature_dim": ds.feature_dim, "memory_dim": ds.memory_dim, "num_classes": len(ds.classes), "hidden": 24,
            "memory_frames": memory_frames}
    if kind == "adaframe":  # the default agent
        dims.update(default_agent())
    torch.manual_seed(seed)
    model = build_model(kind, dims)
    if kind == "adaframe":
        lively(model)  # the policy jumps to memory slots and neighbours, so the test sees jumps
    save_checkpoint(run_dir, model, kind, ds.classes, {"frames": RUN_K}, {"features": spec}, memory_frames=dims.get("memory_frames"))
    return run_dir
