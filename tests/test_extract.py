"""``adaframe extract``: reading video lists, the written layout, failures, resume, settings, shards, torchrun, CLI.

Every extraction here uses the tiny backbones (ResNet-18 at 64 px, MobileNetV2 at 32 px, no decoding
workers) on a few of the synthetic MP4s of ``conftest.video_files``, which are only read, never modified.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import string
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from adaframe.data.features import FeatureDataset, SPLITS
from adaframe.data.video_lists import parse_shard, read_video_list
from adaframe.recognize import extraction
from adaframe.recognize.extraction import ExtractConfig
from adaframe.media.backbones import BACKBONES, build_backbone, extract_features
from adaframe.media.video import decode_at_rate, probe, sample_times
from adaframe.utils import AdaframeError
from conftest import SHARED_VIDEOS, TINY_EXTRACT, adaframe, keyframe_memory, torchrun

TINY = dict(backbone="resnet18", size=64, memory_size=32, workers=0, progress=False)


# ----------------------------------------------------------------------------- helpers

def extract(videos: Path, out: Path, **kw) -> dict:
    """``extraction.extract`` in this process with the tiny backbones (random weights: their warning is expected)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return extraction.extract(ExtractConfig(Path(videos), Path(out), **{**TINY, **kw}))


def source(video_files: Path, i: int) -> Path:
    return video_files / "videos" / f"video{i:05d}.mp4"


def copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def list_rows(video_files: Path) -> list[tuple[str, str, str]]:
    """(video_id, label, split) of every line of the synthetic list.txt."""
    rows = []
    for line in (video_files / "list.txt").read_text().splitlines():
        path, label, split = line.split()
        rows.append((Path(path).stem, label, split))
    return rows


def write_list(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``root``: (mtime_ns, contents)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


def entries_as_tuples(entries) -> list[tuple[str, Path, str, str]]:
    return [(e.video_id, Path(e.path), e.label, e.split) for e in entries]


def assert_same(got: np.ndarray, expected: np.ndarray) -> None:
    """allclose at 1e-5, relative to the scale of ``expected``: a randomly initialised MobileNetV2 in eval mode
    gives memory features of ~1e-9, which a plain atol of 1e-5 would call equal to anything."""
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * min(1.0, float(np.abs(expected).max())))


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return not np.allclose(a, b, rtol=1e-3, atol=1e-3 * float(np.abs(b).max()))


# ============================================================================= 1. read_video_list

def test_directory_label_layout_uses_the_folder_as_label_and_the_default_split(video_files, tmp_path):
    src = source(video_files, 0)
    root = tmp_path / "root"
    copy(src, root / "dance" / "a.mp4")
    copy(src, root / "dance" / "b.MKV")  # extensions in any case
    copy(src, root / "run" / "c.avi")
    (root / "run" / "notes.txt").write_text("not a video")
    (root / "run" / "d.npy").write_bytes(b"neither")
    got = entries_as_tuples(read_video_list(root, split="val"))
    assert sorted(got) == [("a", root / "dance" / "a.mp4", "dance", "val"), ("b", root / "dance" / "b.MKV", "dance", "val"),
                           ("c", root / "run" / "c.avi", "run", "val")]


def test_directory_split_label_layout_takes_split_and_label_from_the_folders(video_files, tmp_path):
    src = source(video_files, 0)
    root = tmp_path / "root"
    copy(src, root / "train" / "dance" / "a.mp4")
    copy(src, root / "val" / "run" / "b.mp4")
    copy(src, root / "test" / "dance" / "c.mp4")
    for default in ("train", "test"):  # the folder decides, not the default
        got = sorted(entries_as_tuples(read_video_list(root, split=default)))
        assert got == [("a", root / "train" / "dance" / "a.mp4", "dance", "train"), ("b", root / "val" / "run" / "b.mp4", "run", "val"),
                       ("c", root / "test" / "dance" / "c.mp4", "dance", "test")]


def test_flat_directory_is_unlabeled_in_the_default_split(video_files, tmp_path):
    root = tmp_path / "flat"
    copy(source(video_files, 0), root / "x.mp4")
    copy(source(video_files, 1), root / "y.mov")
    assert sorted(entries_as_tuples(read_video_list(root))) == [("x", root / "x.mp4", "unlabeled", "train"),
                                                                ("y", root / "y.mov", "unlabeled", "train")]
    assert {e.split for e in read_video_list(root, split="test")} == {"test"}


def test_list_file_comments_blank_lines_splits_spaces_and_relative_paths(tmp_path):
    folder = tmp_path / "lists"
    lst = write_list(folder / "videos.txt", [
        "# a comment line",
        "",
        "   ",
        "clips/a.mp4 dance",
        "  clips/b.mp4   run   val  ",
        "\tclips/my holiday clip.mp4 dance test",
        "  # an indented comment",
        f"{tmp_path / 'abs' / 'd.mp4'} run train",
    ])
    expected = [("a", folder / "clips/a.mp4", "dance", "test"), ("b", folder / "clips/b.mp4", "run", "val"),
                ("my holiday clip", folder / "clips/my holiday clip.mp4", "dance", "test"),
                ("d", tmp_path / "abs" / "d.mp4", "run", "train")]
    assert entries_as_tuples(read_video_list(lst, split="test")) == expected  # in list order; files need not exist yet
    # --video-root replaces the list's folder for relative paths; absolute ones stay.
    other = tmp_path / "elsewhere"
    got = entries_as_tuples(read_video_list(lst, video_root=other, split="test"))
    assert [g[1] for g in got] == [other / "clips/a.mp4", other / "clips/b.mp4", other / "clips/my holiday clip.mp4",
                                   tmp_path / "abs" / "d.mp4"]


# The list format: 'path label [split]' separated by any whitespace; the path may contain (single) spaces.
# A label that is itself a split name is ambiguous after a path with spaces, so labels avoid them.
_WORD = st.text(alphabet=string.ascii_letters + string.digits + "_-()éü", min_size=1, max_size=6)
_ROW = st.tuples(
    st.lists(_WORD, max_size=2),  # sub-folders
    st.lists(_WORD, min_size=1, max_size=3),  # words of the file name, joined by single spaces
    st.sampled_from([".mp4", ".avi", ".MKV"]),
    st.booleans(),  # absolute path?
    st.text(alphabet=string.ascii_letters + string.digits + "_-#.", min_size=1, max_size=8).filter(lambda s: s not in SPLITS),
    st.none() | st.sampled_from(SPLITS),
    st.sampled_from([" ", "  ", "\t", " \t "]),  # field separator
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_ROW, min_size=1, max_size=6), default=st.sampled_from(SPLITS), comments=st.lists(st.booleans(), max_size=6))
def test_list_file_property_returns_exactly_the_rows(rows, default, comments):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        lines, expected = [], []
        for i, (dirs, words, ext, absolute, label, split, sep) in enumerate(rows):
            name = " ".join(words) + f"_{i}"  # unique ids
            rel = "/".join([*dirs, name + ext])
            path_text = str(d / "abs" / rel) if absolute else rel
            if i < len(comments):
                lines.append("# comment " + path_text if comments[i] else "")
            lines.append(sep.join([path_text, label] + ([split] if split else [])))
            expected.append((name, (d / "abs" / rel) if absolute else (d / rel), label, split or default))
        lst = write_list(d / "list.txt", lines)
        assert entries_as_tuples(read_video_list(lst, split=default)) == expected


# The path is the line as written up to the label: runs of whitespace inside a file name are kept.
def test_list_path_with_consecutive_spaces_is_kept_verbatim(video_files, tmp_path):
    video = copy(source(video_files, 0), tmp_path / "my  clip.mp4")
    lst = write_list(tmp_path / "list.txt", ["my  clip.mp4 dance val"])
    [e] = read_video_list(lst)
    assert (e.video_id, e.path, e.label, e.split) == ("my  clip", video, "dance", "val")


def test_activitynet_json(video_files, tmp_path):
    src = source(video_files, 0)
    root = tmp_path / "anet"
    copy(src, root / "deep" / "er" / "v_aaa.mp4")  # v_<id>.<ext>, anywhere under the root
    copy(src, root / "other" / "bbb.mkv")  # <id>.<ext>
    copy(src, root / "v_ccc.webm")
    database = {
        "aaa": {"subset": "training", "annotations": [{"label": "Run", "segment": [0, 1]}, {"label": "Dance"}, {"label": "Dance"}]},
        "bbb": {"subset": "validation", "annotations": [{"label": "Cook"}]},
        "ccc": {"subset": "training", "annotations": [{"label": "Swim"}]},
        "ttt": {"subset": "testing", "annotations": []},  # no labels: skipped
        "uuu": {"subset": "testing"},
        "mmm": {"subset": "validation", "annotations": [{"label": "Cook"}]},  # no file: kept, fails at extraction
    }
    js = tmp_path / "meta" / "activity_net.v1-3.min.json"
    js.parent.mkdir()
    js.write_text(json.dumps({"version": "VERSION 1.3", "taxonomy": [], "database": database}))
    got = {e.video_id: e for e in read_video_list(js, video_root=root)}
    assert set(got) == {"aaa", "bbb", "ccc", "mmm"}
    assert (got["aaa"].path, got["aaa"].label, got["aaa"].split) == (root / "deep" / "er" / "v_aaa.mp4", "Dance", "train")
    assert (got["bbb"].path, got["bbb"].label, got["bbb"].split) == (root / "other" / "bbb.mkv", "Cook", "val")
    assert (got["ccc"].path, got["ccc"].label, got["ccc"].split) == (root / "v_ccc.webm", "Swim", "train")
    assert got["mmm"].split == "val" and not got["mmm"].path.exists()
    # Without --video-root the JSON's own folder is searched: none of the files are there.
    assert not any(e.path.exists() for e in read_video_list(js))


def test_duplicate_ids_name_both_paths(video_files, tmp_path):
    root = tmp_path / "root"
    copy(source(video_files, 0), root / "dance" / "same.mp4")
    copy(source(video_files, 1), root / "run" / "same.avi")
    copy(source(video_files, 2), root / "run" / "other.mp4")
    # Stems that collide take the whole file name; the others keep their stems.
    assert sorted(e.video_id for e in read_video_list(root)) == ["other", "same.avi", "same.mp4"]
    a = copy(source(video_files, 0), root / "dance" / "other.mp4")
    b = root / "run" / "other.mp4"
    with pytest.raises(AdaframeError) as err:
        read_video_list(root)
    assert str(a) in str(err.value) and str(b) in str(err.value) and "other.mp4" in str(err.value)
    lst = write_list(tmp_path / "list.txt", ["x/clip.mp4 a", "y/clip.mp4 b"])
    with pytest.raises(AdaframeError, match="clip") as err:
        read_video_list(lst)
    assert str(tmp_path / "x/clip.mp4") in str(err.value) and str(tmp_path / "y/clip.mp4") in str(err.value)


def test_unknown_default_split_names_file_and_line(tmp_path):
    lst = write_list(tmp_path / "list.txt", ["# header", "", "a.mp4 dance val", "b.mp4 run"])
    with pytest.raises(AdaframeError, match="unknown split") as err:
        read_video_list(lst, split="training")  # used by line 4, which names no split
    assert f"{lst}:4" in str(err.value)


# A misspelled split ('a.mp4 dance training', a.mp4 exists) is an error naming file:line, not read as the
# path 'a.mp4 dance' with label 'training'.
def test_unknown_split_in_a_list_line_names_file_and_line(video_files, tmp_path):
    copy(source(video_files, 0), tmp_path / "a.mp4")
    lst = write_list(tmp_path / "list.txt", ["# header", "a.mp4 dance training"])
    with pytest.raises(AdaframeError) as err:
        read_video_list(lst)
    assert f"{lst}:2" in str(err.value) and "training" in str(err.value)


def test_bad_inputs_are_adaframe_errors(tmp_path):
    with pytest.raises(AdaframeError, match="does not exist"):
        read_video_list(tmp_path / "missing.txt")
    one_token = write_list(tmp_path / "one.txt", ["# fine", "lonely.mp4"])
    with pytest.raises(AdaframeError, match="expected 'path label") as err:
        read_video_list(one_token)
    assert f"{one_token}:2" in str(err.value)
    with pytest.raises(AdaframeError, match="no videos"):
        read_video_list(write_list(tmp_path / "empty.txt", ["# nothing", ""]))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(AdaframeError, match="no videos"):
        read_video_list(tmp_path / "emptydir")
    (tmp_path / "clip.MP4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(AdaframeError, match="is a video; --videos takes a folder of videos, a list file or an ActivityNet JSON"):
        read_video_list(tmp_path / "clip.MP4")
    for name, text in [("broken.json", "{not json"), ("list.json", "[1, 2]"), ("nodb.json", '{"version": "1.3"}'),
                       ("dbl.json", '{"database": [1]}'), ("subset.json", '{"database": {"x": {"subset": "dev", "annotations": [{"label": "a"}]}}}')]:
        (tmp_path / name).write_text(text)
        with pytest.raises(AdaframeError) as err:
            read_video_list(tmp_path / name)
        assert name in str(err.value)


# A 'database' entry that is not an object is a one-line error, not an AttributeError traceback.
def test_activitynet_entry_that_is_not_an_object_is_an_adaframe_error(tmp_path):
    js = tmp_path / "bad.json"
    js.write_text(json.dumps({"database": {"abc": "oops"}}))
    with pytest.raises(AdaframeError):
        read_video_list(js)


# ============================================================================= 2. parse_shard

@pytest.mark.parametrize("text, expected", [(None, (0, 1)), ("0/1", (0, 1)), ("3/4", (3, 4)), (" 1 / 2 ", (1, 2)), ("09/10", (9, 10))])
def test_parse_shard_valid(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["2/2", "5/4", "0/0", "-1/2", "1", "1/", "/2", "a/b", "1/2/3", "", "1.0/2", "1:2"])
def test_parse_shard_invalid(text):
    with pytest.raises(AdaframeError, match="--shard"):
        parse_shard(text)
    with pytest.raises(AdaframeError, match="--shard"):
        ExtractConfig(Path("v"), Path("o"), shard=text)


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
    assert "No space left on device" in lines[0] and "run the same command again" in lines[0]
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


# ============================================================================= ActivityNet JSON: properties

# ActivityNet's subsets and the splits they become; the round trip below spells out its expectations
# independently of the parser's own table.
_ANET_SUBSETS = {"training": "train", "validation": "val", "testing": "test"}
_ANET_EXTS = [".mp4", ".MP4", ".mkv", ".webm", ".avi", ".Mov", ".m4v", ".ts"]
# Any id that is a valid file name: no '/' or NUL, not '.' or '..'; unicode, spaces, dots, 'v_' prefixes welcome.
# (At most 20 characters keeps 'v_<id>.webm' under the 255 bytes of a file name.)
_ANET_ID = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))


@st.composite
def _anet_database(draw):
    """(database, files, expected): the JSON's 'database'; {id: (sub-folders, file name) or None for no file};
    and the (id, path relative to the video root, label, split) read_video_list must return, in order."""
    ids = draw(st.lists(_ANET_ID, min_size=1, max_size=6, unique=True))
    pool = draw(st.lists(st.text(max_size=8), min_size=1, max_size=4))  # a few labels, so that they repeat
    database, files, expected = {}, {}, []
    for vid in ids:
        subset = draw(st.sampled_from(sorted(_ANET_SUBSETS)))
        labels = draw(st.lists(st.sampled_from(pool) | st.text(), max_size=5))  # '' labels are no labels
        annotations = [{"label": lab, "segment": [draw(st.floats(0, 100)), draw(st.floats(100, 200))]} for lab in labels]
        annotations[draw(st.integers(0, len(annotations))):0] = draw(st.lists(st.just({"segment": [0.0, 1.0]}), max_size=1))
        meta = {"duration": 12.5, "resolution": "640x360", "url": f"https://www.youtube.com/watch?v={vid}", "subset": subset}
        if annotations or draw(st.booleans()):  # the testing subset: an empty list, or no 'annotations' at all
            meta["annotations"] = annotations
        database[vid] = meta
        kind = draw(st.sampled_from(["v_", "bare", "missing"]))
        if kind == "missing":
            files[vid] = None
            rel = Path(f"v_{vid}.mp4")  # a missing file fails later, as that video
        else:
            dirs = draw(st.lists(st.sampled_from(["sub", "training", "a b", "ü.d"]), max_size=2))
            name = ("v_" if kind == "v_" else "") + vid + draw(st.sampled_from(_ANET_EXTS))
            files[vid] = (dirs, name)
            rel = Path(*dirs, name)
        named = [lab for lab in labels if lab]
        if named:  # the most frequent label; of equally frequent ones, the first
            expected.append((vid, rel, max(dict.fromkeys(named), key=named.count), _ANET_SUBSETS[subset]))
    return database, files, expected


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=_anet_database(), separate_root=st.booleans(), ascii_only=st.booleans(),
       json_name=st.sampled_from(["activity_net.v1-3.min.json", "anet.JSON", "my list.json"]))
def test_activitynet_property_round_trip(case, separate_root, ascii_only, json_name):
    database, files, expected = case
    # 'v_<id>.*' or '<id>.*': a file is ambiguous only when its name is also that of another id ('x' and 'v_x'),
    # which ActivityNet's ids (all of 11 characters) never are; such cases are left out.
    stems = {vid: Path(f[1]).stem for vid, f in files.items() if f is not None}
    assume(not any(stem in (vid, f"v_{vid}") for vid in database for other, stem in stems.items() if other != vid))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        root = d / "videos" if separate_root else d
        for f in files.values():
            if f is not None:
                folder = root.joinpath(*f[0])
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f[1]).touch()
        js = (d / "meta" if separate_root else d) / json_name
        js.parent.mkdir(parents=True, exist_ok=True)
        js.write_text(json.dumps({"version": "VERSION 1.3", "taxonomy": [], "database": database}, ensure_ascii=ascii_only),
                      encoding="utf-8")
        if not expected:
            with pytest.raises(AdaframeError, match="no videos"):
                read_video_list(js, video_root=root if separate_root else None)
            return
        got = read_video_list(js, video_root=root if separate_root else None)
        assert entries_as_tuples(got) == [(vid, root / rel, label, split) for vid, rel, label, split in expected]
        assert all(type(e.video_id) is str and type(e.label) is str for e in got)


# Arbitrary JSON values, ActivityNet-shaped documents with arbitrary values inside, and arbitrary bytes.
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                     max_leaves=12)
_ANET_ANNOTATION = st.fixed_dictionaries({"label": st.text(max_size=4) | _JSON}, optional={"segment": _JSON}) | _JSON
_ANET_VIDEO = st.fixed_dictionaries({"subset": st.sampled_from(sorted(_ANET_SUBSETS)) | _JSON,
                                     "annotations": st.lists(_ANET_ANNOTATION, max_size=3) | _JSON}) | _JSON
_ANET_KEY = st.text(max_size=6) | st.sampled_from(["", ".", "..", "../up", "a/b", "/abs", "nul\x00"])  # ids that are no file names
_ANET_DOCUMENT = st.fixed_dictionaries({"database": st.dictionaries(_ANET_KEY, _ANET_VIDEO, max_size=4) | _JSON},
                                       optional={"version": _JSON})
_ANET_GARBAGE = st.one_of(
    _ANET_DOCUMENT.map(lambda v: json.dumps(v).encode()),
    _JSON.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.binary(max_size=8).map(lambda b: b'{"database": {"a": ' + b),
    st.tuples(st.sampled_from([("[", "]"), ('{"database": ', "}")]), st.integers(1, 3000)).map(  # deeply nested
        lambda t: (t[0][0] * t[1] + "0" + t[0][1] * t[1]).encode()),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=_ANET_GARBAGE)
def test_activitynet_property_garbage_is_a_list_or_an_adaframe_error(content):
    with tempfile.TemporaryDirectory() as d:
        js = Path(d) / "activity_net.json"
        js.write_bytes(content)
        try:
            got = read_video_list(js)
        except AdaframeError:
            return
        assert isinstance(got, list) and got
        for e in got:  # whatever is returned is usable: an id that is a file name (features/<id>.npy), a text label, a split
            assert isinstance(e.video_id, str) and e.video_id not in ("", ".", "..") and not {"/", "\x00"} & set(e.video_id), e
            assert isinstance(e.label, str) and e.label and e.split in SPLITS, e
