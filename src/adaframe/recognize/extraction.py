"""Raw videos -> the feature data set layout of ``data/features.py``: the work of ``adaframe extract`` (``commands/extract.py``).

For each video: backbone features of the frames at ``--fps`` (one sequential pass) and the global memory's features of
``--memory-frames`` frames picked by the memory rule (``media.memory_rule``). Every file is written atomically, a video
whose two files exist is skipped, a failed one is recorded in ``failures/<video_id>.txt`` (and ``failures.csv``), and
``videos.csv`` lists exactly the finished videos. ``DIR/extract.json`` records how the features were made (backbones,
weights and their SHA-256, sizes, rates, measured GFLOPs); a restart with other settings is refused. Work is split by
``--shard i/n`` or the ranks of ``torchrun`` (``jobs``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from adaframe.data.features import SPEC, read_spec
from adaframe.data.video_lists import VideoEntry, parse_shard
from adaframe.media import memory_rule
from adaframe.media.backbones import BACKBONES, backbone_gflops, build_backbones, extract_features, sha256
from adaframe.media.probe import probe
from adaframe.media.reader import VideoReader, sample_times
from adaframe.recognize.jobs import CollectionJob
from adaframe.utils import AdaframeError, save_npy, write_csv, write_json


def check_options(size: int, memory_size: int, memory_frames: int, fps: float, batch_size: int, workers: int,
                  shard: str | None, ray: str | None = None, ray_actors: int = 1) -> None:
    """Refuse settings no extraction can run with; the message names the options of ``adaframe extract``."""
    checks = {"--size": size >= 32, "--memory-size": memory_size >= 32, "--memory-frames": memory_frames >= 1,
              "--fps": fps > 0, "--batch-size": batch_size >= 1, "--workers": workers >= 0, "--ray-actors": ray_actors >= 1}
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise AdaframeError(f"invalid value for {', '.join(bad)}")
    parse_shard(shard)
    if ray is not None:
        if shard is not None:
            raise AdaframeError("--ray and --shard both split the work: use one of them")
        from adaframe.recognize.ray_pipeline import require_ray

        require_ray()  # a missing install is said before any work


# ----------------------------------------------------------------------------- the spec (extract.json)

def _backbone_spec(name: str, weights: Path | None, size: int, seed: int) -> dict:
    if weights is not None and not Path(weights).is_file():
        raise AdaframeError(f"backbone weights {weights} do not exist")
    return {"name": name, "size": size, "feature_dim": BACKBONES[name].feature_dim, "seed": seed,
            "weights": str(Path(weights).resolve()) if weights else None, "sha256": sha256(Path(weights)) if weights else None}


def make_spec(backbone: str, backbone_weights: Path | None, size: int, memory_backbone: str, memory_weights: Path | None,
              memory_size: int, memory_frames: int, fps: float, seed: int) -> dict:
    return {
        "backbone": _backbone_spec(backbone, backbone_weights, size, seed),
        "memory_backbone": _backbone_spec(memory_backbone, memory_weights, memory_size, seed),
        "fps": fps,
        "memory_frames": memory_frames,
        "memory_at": "keyframe",  # memory_rule.py's keyframe rule; a data set without this key reads the segment centres
    }


def _same_spec(a: dict, b: dict) -> bool:
    """Equal up to the measured fields (GFLOPs, implementation) and the weights' location."""
    def core(s: dict) -> dict:
        return {k: ({kk: vv for kk, vv in v.items() if kk not in ("gflops", "implementation", "weights")} if isinstance(v, dict) else v)
                for k, v in s.items()}
    return core(a) == core(b)


# ----------------------------------------------------------------------------- decoding (in worker processes)

class _Decode(Dataset):
    """Item i: the decoded frames of video i, or the reason it failed (never raises)."""

    def __init__(self, entries: list[VideoEntry], spec: dict):
        self.entries, self.spec = entries, spec

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        frames, memory, error = decode_or_reason(self.entries[i].path, self.spec)
        if error is not None:
            return {"i": i, "error": error}
        return {"i": i, "frames": torch.from_numpy(frames), "memory": torch.from_numpy(memory), "error": None}


def decode_or_reason(path: Path, spec: dict) -> tuple[np.ndarray, np.ndarray, None] | tuple[None, None, str]:
    """``decode_for_features``, or why it failed as ``<path>: <reason>`` (never raises: a job records it and goes on)."""
    try:
        return *decode_for_features(path, spec), None
    except AdaframeError as err:
        return None, None, str(err)
    except Exception as err:  # noqa: BLE001  # a batch job records the unexpected too, and goes on
        return None, None, f"{path}: unexpected {type(err).__name__}: {err}"


def decode_for_features(path: Path, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """Frames at the spec's ``fps`` [T, size, size, 3] (one sequential pass) and the memory frames
    [Td, m, m, 3] by the memory rule (as ``predict`` picks them), uint8."""
    info = probe(path)
    with VideoReader(path) as reader:
        frames = reader.read(sample_times(info.duration, spec["fps"]), spec["backbone"]["size"])
        memory, _ = memory_rule.memory_frames(reader, info.duration, spec["memory_frames"], spec["memory_backbone"]["size"],
                                              keyframes=spec.get("memory_at") == "keyframe")
    return np.stack(frames), np.stack(memory)


# ----------------------------------------------------------------------------- the job

def _done(out: Path, vid: str) -> bool:
    return (out / "features" / f"{vid}.npy").is_file() and (out / "memory" / f"{vid}.npy").is_file()


def _read_rows(path: Path) -> dict[str, dict]:
    """Rows of a videos.csv / failures.csv this command wrote before, by video id (none if there is no such file)."""
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {r["video_id"]: r for r in csv.DictReader(f) if r.get("video_id")}


def write_index(job: CollectionJob) -> dict:
    """Rewrite ``videos.csv`` (finished videos) and ``failures.csv`` (failed ones) from what is on disk.

    Videos extracted by earlier runs from other lists stay listed (their files are there); the current
    list's entries come first and win for an id both name.
    """
    out = job.out
    rows = {e.video_id: {"video_id": e.video_id, "label": e.label, "split": e.split, "path": str(e.path)} for e in job.entries}
    for vid, r in _read_rows(out / "videos.csv").items():
        rows.setdefault(vid, r)
    done = [r for vid, r in rows.items() if _done(out, vid)]
    write_csv(out / "videos.csv", ["video_id", "label", "split", "path"], ([r["video_id"], r["label"], r["split"], r["path"]] for r in done))
    paths = {vid: r["path"] for vid, r in _read_rows(out / "failures.csv").items()} | {vid: r["path"] for vid, r in rows.items()}
    failed = sorted(f.stem for f in (out / "failures").glob("*.txt"))
    return {"done": len(done), "failed": job.write_failures(((vid, paths.get(vid, "")) for vid in failed), lambda vid: _done(out, vid))}


Extracted = Iterator[tuple[VideoEntry, tuple[np.ndarray, np.ndarray] | None, str | None]]
"""each video as it is done: its memory features [Td, Dm] and features [T, D], or why it failed"""


def _extract_here(todo: list[VideoEntry], spec: dict, backbone_net: torch.nn.Module, memory_net: torch.nn.Module, batch_size: int,
                  workers: int, device: torch.device) -> Extracted:
    """The videos of ``todo`` in this process, decoded by ``workers`` processes."""
    loader = DataLoader(_Decode(todo, spec), batch_size=None, num_workers=workers, collate_fn=lambda x: x)
    for item in loader:
        e = todo[item["i"]]
        if item["error"] is not None:
            yield e, None, item["error"]
            continue
        memory = extract_features(memory_net, item["memory"], batch_size, device)  # [Td, Dm]
        yield e, (memory, extract_features(backbone_net, item["frames"], batch_size, device)), None  # [T, D]


def _extract_on_ray(todo: list[VideoEntry], spec: dict, actors: int, batch_size: int, device: str) -> Extracted:
    """The videos of ``todo`` on the Ray of ``ray_pipeline.session`` (entered by the caller), one video a batch."""
    from adaframe.recognize import ray_pipeline

    entries = {e.video_id: e for e in todo}
    rows = [{ray_pipeline.KEY: e.video_id, "path": str(e.path)} for e in todo]
    kwargs = {"cwd": os.getcwd(), "spec": spec, "device": device, "batch_size": batch_size}
    gpus = 1.0 if device == "cuda" else 0.0
    for row in ray_pipeline.stream(rows, ExtractBatch, kwargs, actors=actors, batch_size=1, gpus=gpus):
        e = entries[row[ray_pipeline.KEY]]
        if row["error"] is not None:
            yield e, None, row["error"]
        else:
            yield e, (np.load(io.BytesIO(row["memory"])), np.load(io.BytesIO(row["features"]))), None


class ExtractBatch:
    """The stateful callable of ``extract --ray``: one actor's backbones, built once from the spec, run on each batch of
    paths; each row gets its two arrays as ``.npy`` bytes, or its ``error``.

    Args:
        cwd: the driver's working directory, where relative paths start from (kept where the node has it).
        spec: the data set's ``extract.json`` (the backbones are rebuilt from it, as ``predict`` does).
        device: where the backbones run.
        batch_size: frames per backbone forward.
    """

    def __init__(self, cwd: str, spec: dict, device: str, batch_size: int):
        if Path(cwd).is_dir():
            os.chdir(cwd)
        self.spec, self.device, self.batch_size = spec, torch.device(device), batch_size
        self.backbone, self.memory = build_backbones(spec, self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> object:
        import pyarrow as pa

        memory, features, errors = [], [], []
        for path in batch["path"]:
            frames, mem, error = decode_or_reason(Path(str(path)), self.spec)
            arrays = [None, None] if error is not None else [
                extract_features(net, x, self.batch_size, self.device) for net, x in ((self.memory, mem), (self.backbone, frames))]
            memory.append(_npy(arrays[0]))
            features.append(_npy(arrays[1]))
            errors.append(error)
        return pa.table({**{k: pa.array(v.tolist()) for k, v in batch.items()}, "memory": pa.array(memory, pa.binary()),
                         "features": pa.array(features, pa.binary()), "error": pa.array(errors, pa.string())})


def _npy(array: np.ndarray | None) -> bytes | None:
    if array is None:
        return None
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _save_each(job: CollectionJob, done: Extracted, bar: tqdm) -> int:
    """Write each video's two arrays (atomically) or its failure as it comes; returns how many failed."""
    failed = 0
    for e, arrays, error in done:
        bar.update(1)
        try:
            if arrays is None:
                failed += 1
                job.failed(e, error or "")
                bar.set_postfix(failed=failed)
                continue
            memory, features = arrays
            # Memory first: a video counts as done once its features file exists.
            save_npy(job.out / "memory" / f"{e.video_id}.npy", memory)
            save_npy(job.out / "features" / f"{e.video_id}.npy", features)
            job.succeeded(e)
        except OSError as err:  # disk full, quota, a file system gone read-only: no later video would fare better
            bar.close()
            try:
                write_index(job)
            except OSError:
                pass  # the files on disk are the truth; the next run rewrites the index from them
            raise AdaframeError(f"cannot write the features of video {e.video_id!r} in {job.out}: {err.strerror or err}. "
                                "Every video finished before it is kept (atomic writes); make room and run the same command "
                                "again to continue") from None
    return failed


def check_out(out: Path, entries: list[VideoEntry]) -> None:
    """Refuse what would mix up data: a data set not written by ``extract``, or a listed file whose id is already
    extracted from another file that still exists (its features would be reused for the wrong video)."""
    if (out / "videos.csv").is_file() and read_spec(out) is None:
        raise AdaframeError(f"{out} holds a data set that 'adaframe extract' did not write (videos.csv without {SPEC}); "
                            "use another --out")
    before = _read_rows(out / "videos.csv")
    for e in entries:
        old = Path(before.get(e.video_id, {}).get("path", ""))
        if e.video_id in before and _done(out, e.video_id) and old.is_file() and e.path.is_file() and not old.samefile(e.path):
            raise AdaframeError(f"video id {e.video_id!r}: {out} holds the features of {old}, another file of that name than "
                                f"{e.path}; rename one of them or use another --out")


def extract(videos: Path, out: Path, *, video_root: Path | None = None, split: str = "train", backbone: str = "resnet101",
            backbone_weights: Path | None = None, size: int = 224, memory_backbone: str = "mobilenet_v2",
            memory_weights: Path | None = None, memory_size: int = 112, memory_frames: int = 16, fps: float = 1.0,
            batch_size: int = 32, workers: int = 2, shard: str | None = None, device: str = "cpu", seed: int = 0,
            progress: bool = True, ray: str | None = None, ray_actors: int = 1) -> dict:
    """Extract the listed videos not done yet; returns counts (done, failed, skipped, extracted, skipped_files).

    The arguments are the options of ``adaframe extract`` (``commands/extract.py`` says what each means), with the
    same defaults. With ``ray``, ``ray_actors`` Ray actors decode and run the backbones (``ExtractBatch``) and this
    process writes what they return, the same files as without.
    """
    check_options(size, memory_size, memory_frames, fps, batch_size, workers, shard, ray, ray_actors)
    spec = make_spec(backbone, backbone_weights, size, memory_backbone, memory_weights, memory_size, memory_frames, fps,
                     seed)  # checks the weights files before anything is written
    requested_device = device
    # Under Ray the backbones run in the actors; this process builds them on its CPU only to measure their GFLOPs.
    job = CollectionJob.start(videos, out, video_root, split, shard, device if ray is None else "cpu")
    out, device = job.out, job.device
    if ray is not None and job.shards > 1:
        raise AdaframeError("--ray and torchrun both split the work: use one of them")
    job.open(SPEC, spec, "features", _same_spec, write=False)  # written below, with the GFLOPs measured
    check_out(out, job.entries)
    backbone_net, memory_net = build_backbones(spec, device)
    for key, model in (("backbone", backbone_net), ("memory_backbone", memory_net)):
        spec[key]["gflops"] = backbone_gflops(model, spec[key]["size"])  # measured, multiply-adds
        spec[key]["implementation"] = model.implementation
    if job.ranks.main:
        write_json(out / SPEC, spec)
        for key in ("backbone", "memory_backbone"):
            if spec[key]["weights"] is None:
                print(f"warning: {key} {spec[key]['name']} has random weights (seed {spec[key]['seed']}): its features are "
                      "only good for smoke tests; give --backbone-weights / --memory-weights", file=sys.stderr)

    mine = job.mine
    todo = [e for e in mine if not _done(out, e.video_id)]
    (out / "features").mkdir(exist_ok=True)
    (out / "memory").mkdir(exist_ok=True)
    if ray is None:
        done, session = _extract_here(todo, spec, backbone_net, memory_net, batch_size, workers, device), contextlib.nullcontext()
    else:
        from adaframe.recognize import ray_pipeline

        done, session = _extract_on_ray(todo, spec, ray_actors, batch_size, requested_device), ray_pipeline.session(ray, ray_actors)
    where = f" on Ray ({ray_actors} actor{'s' * (ray_actors > 1)})" if ray is not None else ""
    bar = tqdm(total=len(todo), desc=(f"extract {job.shard}/{job.shards}" if job.shards > 1 else "extract") + where,
               disable=not progress, unit="video")
    with session:
        failed = _save_each(job, done, bar)
    bar.close()
    numbers = job.finish(lambda: write_index(job))
    return {"videos": len(job.entries), "shard": f"{job.shard}/{job.shards}", "skipped": len(mine) - len(todo),
            "extracted": len(todo) - failed, "failed_now": failed, **numbers, "skipped_note": job.skipped_note()}
