"""The table of docs/bad-input.md, through the command line: each row's command, its line on stderr as
docs/bad-input.md words it, and its exit status. (Rows about data-set files are also checked on ``FeatureDataset`` in
test_features.py; video files through ``probe`` in test_commands.py.)"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from adaframe.models.kinds import build_model, save_checkpoint
from conftest import TINY_EXTRACT, adaframe, lively, random_videos, write_dataset, write_video

TRAIN = ("--frames", "3", "--hidden", "8", "--batch-size", "4", "--no-progress")
NO_SPACE = os.strerror(errno.ENOSPC)  # the system's words ("No space left on device") after the file's name


def error(proc, status: int = 2) -> str:
    """The one line a user error prints (nothing on stdout), without its 'adaframe: error: ' prefix."""
    assert proc.returncode == status, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("adaframe: error: "), proc.stderr
    return lines[0].removeprefix("adaframe: error: ")


def dataset(root: Path, n_train: int = 8, n_val: int = 4, classes: int = 3, dim: int = 8, seed: int = 0) -> Path:
    videos = random_videos(n_train, classes, dim, seed=seed) + random_videos(n_val, classes, dim, seed=seed + 1, split="val")
    for i, v in enumerate(videos):
        v["video_id"] = f"synth_{i:05d}"
    return write_dataset(root, videos)


def checkpoint(run: Path, dim: int = 8, classes: int = 3) -> Path:
    """An untrained AdaFrame run (no training needed to be refused)."""
    dims = {"feature_dim": dim, "memory_dim": 4, "num_classes": classes, "hidden": 8, "memory_frames": 8, "memory_read": "policy",
            "selection": "slots"}
    torch.manual_seed(0)
    save_checkpoint(run, lively(build_model("adaframe", dims)), "adaframe", [f"c{i}" for i in range(classes)], {"frames": 3}, memory_frames=dims.get("memory_frames"))
    return run


def test_data_with_another_d_than_the_model(tmp_path):
    dataset(tmp_path / "D16", dim=16), checkpoint(tmp_path / "R", dim=8)
    proc = adaframe("eval", "--checkpoint", "R", "--data", "D16", "--no-progress", cwd=tmp_path, check=False)
    assert error(proc) == "D16: features have D=16, but the model was trained on D=8"


@pytest.mark.parametrize("command", ["train", "eval"])
@pytest.mark.parametrize("what", ["features", "memory"])
def test_missing_features_or_memory_file(tmp_path, command, what):
    data = dataset(tmp_path / "D")
    (data / what / "synth_00009.npy").unlink()  # a val video
    checkpoint(tmp_path / "R")
    args = ["train", "--out", "out", *TRAIN] if command == "train" else ["eval", "--checkpoint", "R", "--no-progress"]
    proc = adaframe(*args, "--data", "D", cwd=tmp_path, check=False)
    assert error(proc) == f"video 'synth_00009': {what} file D/{what}/synth_00009.npy is missing"


@pytest.mark.parametrize("what", ["features", "memory"])
def test_nan_in_a_val_video_stops_train_at_the_first_validation(tmp_path, what):
    data = dataset(tmp_path / "D")
    path = data / what / "synth_00010.npy"
    array = np.load(path)
    array[1, 1] = np.inf
    np.save(path, array)
    proc = adaframe("train", "--data", "D", "--out", "R", *TRAIN, "--epochs", "2", cwd=tmp_path, check=False)
    assert error(proc) == f"video 'synth_00010': D/{what}/synth_00010.npy contains NaN or inf"
    assert (tmp_path / "R" / "config.json").is_file() and not (tmp_path / "R" / "checkpoint.pt").exists()  # after epoch 1's steps


def test_labels_the_model_does_not_know(tmp_path):
    """'Label not among the model's classes / a run with 3 classes on data with 6' and 'Checkpoint of another class count'."""
    dataset(tmp_path / "D", classes=6, n_val=6)
    checkpoint(tmp_path / "R", classes=3)
    proc = adaframe("eval", "--checkpoint", "R", "--data", "D", "--no-progress", cwd=tmp_path, check=False)
    assert error(proc) == "video 'synth_00011': label 'c3' is not among the model's 3 classes"  # val videos c2, c3, ...


def test_label_only_in_val_is_a_warning(tmp_path):
    data = dataset(tmp_path / "D")
    text = (data / "videos.csv").read_text().replace("synth_00010,c2,val", "synth_00010,class_77,val")
    (data / "videos.csv").write_text(text)
    proc = adaframe("train", "--data", "D", "--out", "R", *TRAIN, "--epochs", "1", cwd=tmp_path)
    assert proc.stderr.splitlines() == ["warning: 1 class(es) of videos.csv have no train video, so the model cannot learn them: class_77"]
    assert (tmp_path / "R" / "checkpoint.pt").is_file()


def test_one_class_only(tmp_path):
    dataset(tmp_path / "D", classes=1)
    proc = adaframe("train", "--data", "D", "--out", "R", *TRAIN, cwd=tmp_path, check=False)
    assert error(proc) == "D/videos.csv has 1 class (c0): recognition needs at least 2"


@pytest.mark.parametrize("command", ["train", "eval"])
def test_duplicate_video_ids(tmp_path, command):
    data = dataset(tmp_path / "D")
    (data / "videos.csv").write_text((data / "videos.csv").read_text() + "synth_00003,c0,val\n")
    checkpoint(tmp_path / "R")
    args = ["train", "--out", "out", *TRAIN] if command == "train" else ["eval", "--checkpoint", "R", "--no-progress"]
    proc = adaframe(*args, "--data", "D", cwd=tmp_path, check=False)
    assert error(proc) == "D/videos.csv:14: duplicate video_id 'synth_00003'"


def test_empty_split_and_no_val_split(tmp_path):
    dataset(tmp_path / "D", n_train=0, n_val=4)
    proc = adaframe("train", "--data", "D", "--out", "R", *TRAIN, cwd=tmp_path, check=False)
    assert error(proc) == "D/videos.csv: split 'train' is empty"
    dataset(tmp_path / "E", n_train=8, n_val=0)
    proc = adaframe("train", "--data", "E", "--out", "R", *TRAIN, "--epochs", "1", cwd=tmp_path)
    assert proc.stderr.splitlines() == ["warning: no val split; training without validation (AdaFrame's mix of predictions "
                                        "keeps its starting weights 1, 1)"]
    assert "val mAP n/a (no val split)" in proc.stdout


def foreign_checkpoint(run: Path, kind: str) -> Path:
    """What the rows 'Not a checkpoint' and 'Truncated checkpoint / broken model description' try."""
    checkpoint(run)
    good = run / "checkpoint.pt"
    if kind == "csv":
        path = run / "videos.csv"
        path.write_text("video_id,label,split\n")
    elif kind == "torch file":
        path = run / "other.pt"
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "train_state":
        path = run / "train_state.pt"
        torch.save({"epoch": 1, "model": {}}, path)
    elif kind == "truncated":
        path = run / "c.pt"
        path.write_bytes(good.read_bytes()[:200])
    else:
        payload = torch.load(good, weights_only=True)
        if kind == "model config of another version":
            path = run / "other.pt"
            payload["model_config"]["extra"] = 1
            del payload["model_config"]["hidden"]
        else:
            path, payload["kind"] = run / "badkind.pt", "resnet"
        torch.save(payload, path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("csv", "cannot load checkpoint {path}: not a file written by torch.save"),
    ("torch file", "{path} is not an adaframe checkpoint"),
    ("train_state", "{path} is not an adaframe checkpoint"),
    # In parentheses, torch's or Python's reason in its own words (which a new version may change): any one line.
    ("truncated", re.compile(r"cannot load checkpoint {path}: the file is damaged or truncated \(.+\)")),
    ("model config of another version", "{path}: its model_config has unknown key 'extra'; lacks key 'hidden' (written by another "
                                        "version of the model: train it again)"),
    ("bad kind", "{path}: unknown model 'resnet'"),
    ("folder without one", "no checkpoint at R/empty/checkpoint.pt"),
])
def test_not_a_checkpoint(tmp_path, kind, message):
    dataset(tmp_path / "D")
    if kind == "folder without one":
        path = tmp_path / "R" / "empty"
        path.mkdir(parents=True)
    else:
        path = foreign_checkpoint(tmp_path / "R", kind)
    where = str(path.relative_to(tmp_path))
    proc = adaframe("eval", "--checkpoint", where, "--data", "D", "--no-progress", cwd=tmp_path, check=False)
    line = error(proc)
    if isinstance(message, re.Pattern):
        assert re.fullmatch(message.pattern.replace("{path}", re.escape(where)), line), line
    else:
        assert line == message.format(path=where)


def test_a_file_where_the_data_directory_should_be(tmp_path):
    dataset(tmp_path / "D")
    proc = adaframe("train", "--data", "D/videos.csv", "--out", "R", *TRAIN, cwd=tmp_path, check=False)
    assert error(proc) == "data directory D/videos.csv is a file, not a data set directory"


def enospc_on(monkeypatch, name: str, method: str, after: int = 0) -> None:
    """A full disk (docs/bad-input.md tried a real 300 kB tmpfs): writing the file ``name`` (through ``atomic_write``'s temporary
    ``.NAME.XXXX.tmp``) fails with ENOSPC once ``after`` writes of it succeeded; half the bytes land first, as on a full disk."""
    real = getattr(Path, method)
    writes = []

    def full(self, data, *args, **kwargs):
        if (self.name[1:].rsplit(".", 2)[0] if self.name.endswith(".tmp") else self.name) == name:
            if len(writes) >= after:
                real(self, data[: len(data) // 2], *args, **kwargs)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            writes.append(self)
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, method, full)


def test_disk_full_during_training_then_resume(tmp_path, monkeypatch):
    """'Disk full during training': the line names the file; the last epoch's files load; --resume finishes the run."""
    from adaframe.models.kinds import load_checkpoint

    dataset(tmp_path / "D")
    args = ("train", "--data", "D", "--out", "R", *TRAIN, "--epochs", "3")
    enospc_on(monkeypatch, "checkpoint.pt", "write_bytes", after=1)  # epoch 2's checkpoint
    proc = adaframe(*args, cwd=tmp_path, check=False)
    monkeypatch.undo()
    assert error(proc) == f"R/checkpoint.pt: {NO_SPACE}"
    assert load_checkpoint(tmp_path / "R")[1]["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "R").iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl", "tb", "train_state.pt"]
    adaframe(*args, "--resume", cwd=tmp_path)
    assert load_checkpoint(tmp_path / "R")[1]["epoch"] == 3


def test_disk_full_writing_results(tmp_path, monkeypatch):
    """'Disk full writing results' for eval --json and synth."""
    dataset(tmp_path / "D")
    checkpoint(tmp_path / "R")
    enospc_on(monkeypatch, "r.json", "write_text")
    proc = adaframe("eval", "--checkpoint", "R", "--data", "D", "--json", "small/r.json", "--no-progress", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [f"adaframe: error: small/r.json: {NO_SPACE}"]
    assert os.listdir(tmp_path / "small") == []  # no temp file stays
    monkeypatch.undo()
    enospc_on(monkeypatch, "videos.csv", "write_text")
    proc = adaframe("synth", "--videos", "20", "--classes", "2", "--dim", "4", "--memory-dim", "2", "--out", "small/S", cwd=tmp_path,
                    check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1] == f"adaframe: error: small/S/videos.csv: {NO_SPACE}"
    assert sorted(os.listdir(tmp_path / "small" / "S")) == ["evidence.csv", "features", "memory"]  # no videos.csv: incomplete


def test_bad_video_list_and_activitynet_json(tmp_path):
    """'Bad list / ActivityNet JSON' (refused before anything is decoded)."""
    (tmp_path / "l.txt").write_bytes("clip.mp4 caf\u00e9\n".encode("latin-1"))
    proc = adaframe("extract", "--videos", "l.txt", "--out", "E", "--no-progress", cwd=tmp_path, check=False)
    assert re.fullmatch(r"cannot read video list l\.txt: .+", error(proc))  # then Python's reason, in its words
    (tmp_path / "l.txt").write_text("just_one_word\n")
    proc = adaframe("extract", "--videos", "l.txt", "--out", "E", "--no-progress", cwd=tmp_path, check=False)
    assert error(proc) == "l.txt:1: expected 'path label [split]', got 'just_one_word'"
    (tmp_path / "a.json").write_text(json.dumps({"database": [1, 2]}))
    proc = adaframe("extract", "--videos", "a.json", "--out", "E", "--no-progress", cwd=tmp_path, check=False)
    assert error(proc) == "a.json is not an ActivityNet v1.3 JSON (a 'database' object of videos): TypeError: 'database' is list"


def test_two_videos_with_one_id(tmp_path):
    """'Duplicate video ids' for extract: two files of one name in a list (nothing written), and a file of the name of
    a video already extracted from another file."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_video(tmp_path / "a" / "clip.mp4", 6, 3, 32, 32)
    write_video(tmp_path / "b" / "clip.mp4", 6, 3, 32, 32)
    (tmp_path / "b" / "clip.avi").write_bytes((tmp_path / "b" / "clip.mp4").read_bytes())
    (tmp_path / "twice.txt").write_text("a/clip.mp4 x\nb/clip.avi x\nb/clip.mp4 x\n")
    proc = adaframe("extract", "--videos", "twice.txt", "--out", "E", *TINY_EXTRACT, cwd=tmp_path, check=False)
    assert error(proc) == "video id 'clip.mp4' (the file name) is used twice: a/clip.mp4 and b/clip.mp4; rename one of them"
    assert not (tmp_path / "E").exists()
    (tmp_path / "a.txt").write_text("a/clip.mp4 x\n")
    (tmp_path / "b.txt").write_text("b/clip.mp4 x\n")
    adaframe("extract", "--videos", "a.txt", "--out", "E", *TINY_EXTRACT, cwd=tmp_path)
    proc = adaframe("extract", "--videos", "b.txt", "--out", "E", *TINY_EXTRACT, cwd=tmp_path, check=False)
    assert error(proc) == ("video id 'clip': E holds the features of a/clip.mp4, another file of that name than b/clip.mp4; "
                           "rename one of them or use another --out")
