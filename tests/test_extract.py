"""``adaframe extract``: the written layout, failures, resume, settings, shards, torchrun, CLI, skipped files.

Every extraction here uses the tiny backbones (ResNet-18 at 64 px, MobileNetV2 at 32 px, no decoding
workers) on a few of the synthetic MP4s of ``conftest.video_files``, which are only read, never modified.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from adaframe.commands.extract import ExtractConfig
from adaframe.data.features import FeatureDataset
from adaframe.media.backbones import BACKBONES, build_backbone, extract_features
from adaframe.media.probe import probe
from adaframe.media.reader import decode_at_rate, sample_times
from adaframe.recognize import extraction
from adaframe.utils import AdaframeError
from conftest import SHARED_VIDEOS, TINY_EXTRACT, adaframe, copy, keyframe_memory, source, torchrun, write_list

TINY = dict(backbone="resnet18", size=64, memory_size=32, workers=0, progress=False)


# ----------------------------------------------------------------------------- helpers

def extract(videos: Path, out: Path, **kw) -> dict:
    """``extraction.extract`` in this process with the tiny backbones (random weights: their warning is expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return extraction.extract(Path(videos), Path(out), **{**TINY, **kw})


def list_rows(video_files: Path) -> list[tuple[str, str, str]]:
    """(video_id, label, split) of every line of the synthetic list.txt."""
    rows = []
    for line in (video_files / "list.txt").read_text().splitlines():
        path, label, split = line.split()
        rows.append((Path(path).stem, label, split))
    return rows


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``root``: (mtime_ns, contents)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    """allclose at 1e-5, relative to the scale of ``expected``: a randomly initialised MobileNetV2 in eval mode
    gives memory features of ~1e-9, which a plain atol of 1e-5 would call equal to anything."""
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * min(1.0, float(np.abs(expected).max())))


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return not np.allclose(a, b, rtol=1e-3, atol=1e-3 * float(np.abs(b).max()))


# ============================================================================= 3. the written layout

def test_layout_loads_and_matches_the_videos(extracted, video_files):
    rows = list_rows(video_files)
    ids = [vid for vid, _, _ in rows]
    train = FeatureDataset(extracted, "train")
    val = FeatureDataset(extracted, "val")
    assert sorted(r.video_id for r in train.records) == sorted(v for v, _, s in rows if s == "train")
    assert sorted(r.video_id for r in val.records) == sorted(v for v, _, s in rows if s == "val")
    assert train.feature_dim == BACKBONES["resnet18"].feature_dim and train.memory_dim == BACKBONES["mobilenet_v2"].feature_dim
    for vid in ids:
        feats = np.load(extracted / "features" / f"{vid}.npy")
        memory = np.load(extracted / "memory" / f"{vid}.npy")
        t = len(sample_times(probe(source(video_files, int(vid[-5:]))).duration))
        assert t >= 6  # the clips last 6-9 s
        assert feats.shape == (t, 512) and feats.dtype == np.float32 and np.isfinite(feats).all()
        assert memory.shape == (16, 1280) and memory.dtype == np.float32 and np.isfinite(memory).all()
    item = train[0]
    assert item["features"].shape[0] == train.lengths[0] and item["memory"].shape == (16, 1280)


def test_features_equal_an_independent_computation(extracted, video_files):
    path = source(video_files, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backbone, memory_backbone = build_backbone("resnet18", seed=0), build_backbone("mobilenet_v2", seed=0)
    frames, _ = decode_at_rate(path, 1.0, 64)
    expected = extract_features(backbone, frames)
    got = np.load(extracted / "features" / "video00001.npy")
    assert_same(got, expected)
    # The memory: 16 frames at 32 px by the keyframe rule, found in one sequential pass, through MobileNetV2.
    mem_frames, _ = keyframe_memory(path, 16, 32)
    assert_same(np.load(extracted / "memory" / "video00001.npy"), extract_features(memory_backbone, mem_frames))
    # Different videos give different features (the comparison above is not between two constants).
    assert differ(got[:6], np.load(extracted / "features" / "video00002.npy")[:6])
    assert differ(np.load(extracted / "memory" / "video00001.npy"), np.load(extracted / "memory" / "video00002.npy"))


def test_videos_csv_and_extract_json(extracted, video_files):
    rows = read_csv(extracted / "videos.csv")
    assert sorted((r["video_id"], r["label"], r["split"]) for r in rows) == sorted(list_rows(video_files))
    assert read_csv(extracted / "failures.csv") == []
    spec = json.loads((extracted / "extract.json").read_text())
    assert spec["backbone"]["name"] == "resnet18" and spec["backbone"]["size"] == 64
    assert spec["memory_backbone"]["name"] == "mobilenet_v2" and spec["memory_backbone"]["size"] == 32
    assert spec["backbone"]["feature_dim"] == 512 and spec["memory_backbone"]["feature_dim"] == 1280
    assert spec["fps"] == 1.0 and spec["memory_frames"] == 16
    assert spec["backbone"]["weights"] is None and spec["backbone"]["sha256"] is None and spec["backbone"]["seed"] == 0
    g, gm = spec["backbone"]["gflops"], spec["memory_backbone"]["gflops"]
    assert g > 0 and gm > 0
    # ResNet-18 is ~1.8 GMACs at 224, scaling with the pixel count: ~0.15 at 64; MobileNetV2 is far cheaper.
    assert 0.05 < g < 0.5 and gm < g / 5


# ============================================================================= 4. failures never stop the job

@pytest.mark.skipif(not (SHARED_VIDEOS / "decord_corrupted.mp4").is_file(), reason=f"no shared clips at {SHARED_VIDEOS}")
def test_failures_are_recorded_and_the_job_goes_on(video_files, tmp_path):
    copy(source(video_files, 0), tmp_path / "v" / "good0.mp4")
    copy(source(video_files, 1), tmp_path / "v" / "good1.mp4")
    lst = write_list(tmp_path / "list.txt", ["v/good0.mp4 red", f"{SHARED_VIDEOS / 'decord_corrupted.mp4'} red",
                                             "v/missing.mp4 green", "v/good1.mp4 green val"])
    proc = adaframe("extract", "--videos", str(lst), "--out", str(tmp_path / "data"), *TINY_EXTRACT, cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr  # done, but not everything: scripts can tell
    assert "extracted 2, skipped 0 already done, failed 2" in proc.stdout
    assert "adaframe: 2 video(s) could not be extracted: see" in proc.stderr and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("adaframe: error: ")]  # one line per video, as it fails
    assert len(errors) == 2 and any("decord_corrupted.mp4: decoding failed" in e for e in errors), proc.stderr
    assert any("missing.mp4: no such file" in e for e in errors), proc.stderr
    data = tmp_path / "data"
    failures = {r["video_id"]: r for r in read_csv(data / "failures.csv")}
    assert set(failures) == {"decord_corrupted", "missing"}
    assert "decod" in failures["decord_corrupted"]["reason"].lower()
    assert "no such file" in failures["missing"]["reason"]
    assert all(r["path"] and r["reason"] for r in failures.values())
    assert sorted((r["video_id"], r["label"], r["split"]) for r in read_csv(data / "videos.csv")) == [
        ("good0", "red", "train"), ("good1", "green", "val")]
    for bad in ("decord_corrupted", "missing"):
        assert not (data / "features" / f"{bad}.npy").exists() and not (data / "memory" / f"{bad}.npy").exists()
    assert sorted(p.name for p in (data / "features").iterdir()) == ["good0.npy", "good1.npy"]
    FeatureDataset(data, "train")  # the written set loads without the failed videos


# ============================================================================= 5. resume

def test_resume_extracts_only_what_is_missing(video_files, tmp_path):
    for i in range(3):
        copy(source(video_files, i), tmp_path / "v" / f"c{i}.mp4")
    lst = write_list(tmp_path / "list.txt", [f"v/c{i}.mp4 lab{i % 2}" for i in range(3)] + ["v/late.mp4 lab0"])
    out = tmp_path / "data"
    r1 = extract(lst, out)
    assert (r1["extracted"], r1["skipped"], r1["failed_now"], r1["done"], r1["failed"]) == (3, 0, 1, 3, 1)
    before = snapshot(out)
    old_c1 = np.load(out / "features" / "c1.npy")
    (out / "features" / "c1.npy").unlink()

    r2 = extract(lst, out)
    assert (r2["extracted"], r2["skipped"], r2["failed_now"], r2["done"], r2["failed"]) == (1, 2, 1, 3, 1)
    after = snapshot(out)
    for untouched in ("features/c0.npy", "memory/c0.npy", "features/c2.npy", "memory/c2.npy"):
        assert after[untouched] == before[untouched], untouched
    assert_same(np.load(out / "features" / "c1.npy"), old_c1)
    assert [r["video_id"] for r in read_csv(out / "failures.csv")] == ["late"]

    # The failed video's file appears: the next run extracts it and it leaves failures.csv.
    copy(source(video_files, 3), tmp_path / "v" / "late.mp4")
    r3 = extract(lst, out)
    assert (r3["extracted"], r3["skipped"], r3["failed_now"], r3["done"], r3["failed"]) == (1, 3, 0, 4, 0)
    assert read_csv(out / "failures.csv") == []
    assert not (out / "failures" / "late.txt").exists()
    assert sorted(r["video_id"] for r in read_csv(out / "videos.csv")) == ["c0", "c1", "c2", "late"]
    assert snapshot(out)["features/c0.npy"] == before["features/c0.npy"]


def test_disk_full_stops_with_one_line_keeps_what_was_done_and_resumes(video_files, tmp_path, monkeypatch, capsys):
    """The disk fills up while the 2nd video's features are written: one error line, exit 2, the 1st video intact,
    no temp files, and the same command later finishes the job with the same features as an undisturbed run."""
    import errno
    import os

    from adaframe.cli import main

    for i in range(3):
        copy(source(video_files, i), tmp_path / "v" / f"c{i}.mp4")
    lst = write_list(tmp_path / "list.txt", [f"v/c{i}.mp4 lab{i % 2}" for i in range(3)])
    reference = tmp_path / "reference"
    extract(lst, reference)
    out = tmp_path / "data"
    real_save, calls = np.save, []

    def save_until_full(file, array, *args, **kwargs):  # memory + features of c0 fit; c1's memory half-written
        calls.append(1)
        if len(calls) > 2:
            file.write(b"\x93NUMPY half an array")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save_until_full)
    args = ["extract", "--videos", str(lst), "--out", str(out), *TINY_EXTRACT]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("adaframe: error: ") and "'c1'" in lines[0], err
    assert os.strerror(errno.ENOSPC) in lines[0] and "run the same command again" in lines[0]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy")) == ["features/c0.npy", "memory/c0.npy"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert [r["video_id"] for r in read_csv(out / "videos.csv")] == ["c0"]
    FeatureDataset(out, "train")  # what is there loads

    monkeypatch.setattr(np, "save", real_save)  # space again
    main(args)
    assert "skipped 1 already done" in capsys.readouterr().out
    assert [r["video_id"] for r in read_csv(out / "videos.csv")] == ["c0", "c1", "c2"]
    for kind in ("features", "memory"):
        for i in range(3):
            assert_same(np.load(out / kind / f"c{i}.npy"), np.load(reference / kind / f"c{i}.npy"))


def test_a_second_list_adds_to_the_index_and_keeps_earlier_videos(video_files, tmp_path):
    for i in range(3):
        copy(source(video_files, i), tmp_path / "v" / f"c{i}.mp4")
    out = tmp_path / "data"
    extract(write_list(tmp_path / "a.txt", ["v/c0.mp4 red", "v/c1.mp4 blue val", "v/gone.mp4 red"]), out)
    r = extract(write_list(tmp_path / "b.txt", ["v/c2.mp4 blue", "v/c1.mp4 blue val"]), out)
    assert (r["extracted"], r["skipped"], r["done"], r["failed"]) == (1, 1, 3, 1)
    assert [(row["video_id"], row["label"], row["split"]) for row in read_csv(out / "videos.csv")] == [
        ("c2", "blue", "train"), ("c1", "blue", "val"), ("c0", "red", "train")]
    assert [(row["video_id"], row["path"]) for row in read_csv(out / "failures.csv")] == [("gone", str(tmp_path / "v" / "gone.mp4"))]
    assert len(FeatureDataset(out, "train")) == 2


def test_another_file_with_a_finished_videos_id_is_refused(video_files, tmp_path):
    copy(source(video_files, 0), tmp_path / "v" / "clip.mp4")
    copy(source(video_files, 1), tmp_path / "w" / "clip.mp4")
    out = tmp_path / "data"
    extract(write_list(tmp_path / "a.txt", ["v/clip.mp4 red"]), out)
    before = snapshot(out)
    with pytest.raises(AdaframeError, match=r"video id 'clip': .* holds the features of .*v/clip.mp4, another file"):
        extract(write_list(tmp_path / "b.txt", ["w/clip.mp4 blue"]), out)
    assert snapshot(out) == before
    (tmp_path / "v" / "clip.mp4").unlink()  # the first file is gone (moved away): its features are this id's
    assert extract(write_list(tmp_path / "b.txt", ["w/clip.mp4 red"]), out)["skipped"] == 1


def test_a_data_set_extract_did_not_write_is_not_taken_over(synth_dir, video_files, tmp_path):
    import shutil

    data = Path(shutil.copytree(synth_dir, tmp_path / "synth"))
    before = snapshot(data)
    with pytest.raises(AdaframeError, match="did not write"):
        extract(write_list(tmp_path / "a.txt", [f"{source(video_files, 0)} red"]), data)
    assert snapshot(data) == before


def test_random_weights_are_warned_about(video_files, tmp_path):
    lst = write_list(tmp_path / "a.txt", [f"{source(video_files, 0)} red"])
    proc = adaframe("extract", "--videos", str(lst), "--out", str(tmp_path / "data"), *TINY_EXTRACT, cwd=tmp_path)
    assert "warning: backbone resnet18 has random weights" in proc.stderr
    assert "warning: memory_backbone mobilenet_v2 has random weights" in proc.stderr


# ============================================================================= 6. other settings are refused

def test_other_settings_into_the_same_out_are_refused(video_files, tmp_path):
    lst = write_list(tmp_path / "list.txt", [f"{source(video_files, 0)} red"])
    out = tmp_path / "data"
    extract(lst, out)
    before = snapshot(out)
    weights = tmp_path / "w.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(build_backbone("resnet18", seed=0).state_dict(), weights)  # even the same weights: random init was recorded
    for change in [dict(size=96), dict(memory_size=64), dict(memory_frames=8), dict(fps=2.0), dict(seed=1),
                   dict(backbone="resnet50"), dict(backbone_weights=weights)]:
        with pytest.raises(AdaframeError, match="other settings"):
            extract(lst, out, **change)
        assert snapshot(out) == before, change
    # The same settings (other run-time knobs aside) are accepted: a resume with nothing to do.
    r = extract(lst, out, batch_size=3)
    assert (r["skipped"], r["extracted"], r["done"]) == (1, 0, 1)


# ============================================================================= 7. shards

def test_shards_together_produce_all_videos(video_files, tmp_path):
    lst = write_list(tmp_path / "list.txt", [f"{source(video_files, i)} l{i % 2} {'val' if i == 3 else 'train'}" for i in range(4)])
    out = tmp_path / "data"
    ids = [f"video{i:05d}" for i in range(4)]
    r0 = extract(lst, out, shard="0/2")
    first = {p.stem for p in (out / "features").glob("*.npy")}
    assert r0["shard"] == "0/2" and r0["extracted"] == 2 and len(first) == 2 and first < set(ids)
    assert sorted(r["video_id"] for r in read_csv(out / "videos.csv")) == sorted(first)
    r1 = extract(lst, out, shard="1/2")
    second = {p.stem for p in (out / "features").glob("*.npy")} - first
    assert r1["extracted"] == 2 and r1["skipped"] == 0 and len(second) == 2
    assert first | second == set(ids) and {p.stem for p in (out / "memory").glob("*.npy")} == set(ids)
    assert sorted((r["video_id"], r["split"]) for r in read_csv(out / "videos.csv")) == [
        (v, "val" if v.endswith("3") else "train") for v in ids]
    assert len(FeatureDataset(out, "train")) == 3 and len(FeatureDataset(out, "val")) == 1


@pytest.mark.parametrize("shard", ["2/2", "x"])
def test_invalid_shard_is_a_one_line_cli_error(tmp_path, shard):
    proc = adaframe("extract", "--videos", str(tmp_path), "--out", str(tmp_path / "data"), "--shard", shard, *TINY_EXTRACT,
                    cwd=tmp_path, check=False)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("adaframe: error:") and "--shard" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "data").exists()


def test_the_commands_options_are_the_works_arguments(tmp_path):
    """``adaframe extract`` hands its config to ``extraction.extract`` field by field: the same names and defaults, and
    the same refusal of settings no extraction runs with, also for a caller without the config (video-demo)."""
    params = inspect.signature(extraction.extract).parameters
    fields = dataclasses.fields(ExtractConfig)
    assert list(params) == [f.name for f in fields]
    assert {n: p.default for n, p in params.items()} == {f.name: p.empty if f.default is dataclasses.MISSING else f.default
                                                         for f, p in zip(fields, params.values())}
    with pytest.raises(AdaframeError, match=r"^invalid value for --size, --memory-size$"):
        extraction.extract(tmp_path, tmp_path / "data", size=16, memory_size=8)
    assert not (tmp_path / "data").exists()


# ============================================================================= 8. torchrun

# The one multi-process test (~6-10 s, slow on a loaded machine), kept apart from the others' xdist group.
@pytest.mark.slow
@pytest.mark.xdist_group("torchrun")
def test_torchrun_ranks_split_the_work(extracted, video_files, tmp_path):
    rows = {vid: (label, split) for vid, label, split in list_rows(video_files)}
    ids = [f"video{i:05d}" for i in range(4)]
    lst = write_list(tmp_path / "list.txt", [f"{source(video_files, i)} {rows[v][0]} {rows[v][1]}" for i, v in enumerate(ids)])
    out = tmp_path / "data"
    proc = torchrun(2, "extract", "--videos", str(lst), "--out", str(out), *TINY_EXTRACT, cwd=tmp_path, timeout=240)
    # Each rank reports its own share.
    for rank in (0, 1):
        assert f"shard {rank}/2: extracted 2," in proc.stdout, proc.stdout
    assert sorted((r["video_id"], r["label"], r["split"]) for r in read_csv(out / "videos.csv")) == sorted(
        (v, *rows[v]) for v in ids)
    assert read_csv(out / "failures.csv") == []
    assert sorted(p.stem for p in (out / "features").glob("*.npy")) == ids
    for v in ids:  # identical to the single-process extraction of the same videos with the same settings
        for kind in ("features", "memory"):
            assert_same(np.load(out / kind / f"{v}.npy"), np.load(extracted / kind / f"{v}.npy"))
    spec, single = json.loads((out / "extract.json").read_text()), json.loads((extracted / "extract.json").read_text())
    assert spec["backbone"] == single["backbone"] and spec["memory_backbone"] == single["memory_backbone"]


# ============================================================================= 9. CLI end to end

def test_cli_extract_end_to_end(video_files, tmp_path):
    copy(source(video_files, 0), tmp_path / "clips" / "first clip.mp4")
    copy(source(video_files, 1), tmp_path / "clips" / "second.mp4")
    write_list(tmp_path / "list.txt", ["clips/first clip.mp4 red", "clips/second.mp4 green val"])
    proc = adaframe("extract", "--videos", "list.txt", "--out", "data", *TINY_EXTRACT, cwd=tmp_path)
    summary = [l for l in proc.stdout.splitlines() if "videos listed" in l]
    assert len(summary) == 1, proc.stdout
    assert summary[0].startswith("2 videos listed") and "extracted 2" in summary[0] and "failed 0" in summary[0]
    assert "2 videos in videos.csv" in summary[0]
    data = tmp_path / "data"
    assert sorted((r["video_id"], r["label"], r["split"]) for r in read_csv(data / "videos.csv")) == [
        ("first clip", "red", "train"), ("second", "green", "val")]
    assert len(FeatureDataset(data, "train")) == 1 and len(FeatureDataset(data, "val")) == 1
    again = adaframe("extract", "--videos", "list.txt", "--out", "data", *TINY_EXTRACT, cwd=tmp_path)
    assert "extracted 0" in again.stdout and "skipped 2" in again.stdout


def test_cli_missing_videos_is_a_one_line_error(tmp_path):
    proc = adaframe("extract", "--videos", "nowhere.txt", "--out", "data", *TINY_EXTRACT, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("adaframe: error:") and "nowhere.txt" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "data").exists()


# ============================================================================= 10. weights

def test_backbone_weights_are_used_and_recorded(extracted, video_files, tmp_path):
    weights = tmp_path / "resnet18_seed3.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seed3 = build_backbone("resnet18", seed=3)
    torch.save(seed3.state_dict(), weights)
    lst = write_list(tmp_path / "list.txt", [f"{source(video_files, 2)} red"])
    out = tmp_path / "data"
    r = extract(lst, out, backbone_weights=weights)
    assert r["extracted"] == 1
    got = np.load(out / "features" / "video00002.npy")
    random0 = np.load(extracted / "features" / "video00002.npy")
    assert got.shape == random0.shape and differ(got, random0)
    frames, _ = decode_at_rate(source(video_files, 2), 1.0, 64)
    assert_same(got, extract_features(seed3, frames))
    # The memory backbone kept its random init, seed 0: the same memory as the fixture's.
    assert_same(np.load(out / "memory" / "video00002.npy"), np.load(extracted / "memory" / "video00002.npy"))
    spec = json.loads((out / "extract.json").read_text())
    assert spec["backbone"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert Path(spec["backbone"]["weights"]) == weights.resolve()
    assert spec["memory_backbone"]["sha256"] is None


def test_missing_weights_file_is_a_clear_error(video_files, tmp_path):
    lst = write_list(tmp_path / "list.txt", [f"{source(video_files, 0)} red"])
    missing = tmp_path / "nope.pt"
    with pytest.raises(AdaframeError, match="weights") as err:
        extract(lst, tmp_path / "data", backbone_weights=missing)
    assert str(missing) in str(err.value)
    assert not list((tmp_path / "data").rglob("*.npy"))
    proc = adaframe("extract", "--videos", str(lst), "--out", str(tmp_path / "data2"), "--memory-weights", str(missing),
                    *TINY_EXTRACT, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("adaframe: error:") and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
