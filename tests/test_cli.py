"""The ``adaframe`` command line end to end, in subprocesses: synth -> train -> eval, and a bad input."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import adaframe

SYNTH = ["--videos", "60", "--classes", "4", "--dim", "16", "--memory-dim", "8", "--min-frames", "8", "--max-frames", "20",
         "--max-evidence", "2"]
TRAIN = ["--epochs", "2", "--frames", "3", "--hidden", "16", "--batch-size", "16", "--no-progress"]


@pytest.mark.parametrize("model", ["adaframe", "avgpool"])
def test_cli_synth_train_eval(tmp_path, model):
    data = tmp_path / "data"
    adaframe("synth", *SYNTH, "--out", str(data), cwd=tmp_path)
    with open(data / "videos.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60
    n_val = sum(r["split"] == "val" for r in rows)
    assert n_val > 0
    assert len(list((data / "features").glob("*.npy"))) == 60 and len(list((data / "memory").glob("*.npy"))) == 60

    run = tmp_path / model
    adaframe("train", "--data", str(data), "--out", str(run), "--model", model, *TRAIN, cwd=tmp_path)
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2

    def evaluate(*extra: str) -> dict:
        out = tmp_path / f"eval_{len(extra)}.json"
        adaframe("eval", "--checkpoint", str(run), "--data", str(data), "--json", str(out), "--no-progress", *extra, cwd=tmp_path)
        r = json.loads(out.read_text())
        for key in ("mAP", "top1", "avg_frames", "gflops_per_video", "num_videos"):
            assert key in r, key
        assert r["num_videos"] == n_val
        assert 0.0 <= r["mAP"] <= 100.0 and 0.0 <= r["top1"] <= 100.0
        # percent, not a fraction: top-1 is a multiple of 100 / n_val
        assert abs(r["top1"] * n_val / 100 - round(r["top1"] * n_val / 100)) < 1e-6
        assert r["gflops_per_video"] > 0
        assert 1 <= r["avg_frames"] <= 3  # K = 3 (the K it was trained with)
        return r

    fixed = evaluate()
    if model == "adaframe":
        adaptive = evaluate("--mu", "0.7")
        assert adaptive["avg_frames"] <= fixed["avg_frames"] + 1e-9
        assert adaptive["gflops_per_video"] <= fixed["gflops_per_video"] + 1e-9
    else:
        # --mu is AdaFrame's; asking it of a baseline is a user error
        bad = adaframe("eval", "--checkpoint", str(run), "--data", str(data), "--mu", "0.7", "--no-progress", cwd=tmp_path, check=False)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr + bad.stdout


@pytest.mark.parametrize("command", ["train", "eval"])
def test_cli_missing_data_dir_is_a_one_line_error(tmp_path, command):
    missing = tmp_path / "no_such_data"
    if command == "train":
        args = ["train", "--data", str(missing), "--out", str(tmp_path / "run"), "--no-progress"]
    else:
        args = ["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(missing), "--no-progress"]
    proc = adaframe(*args, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, proc.stderr
    assert "error" in lines[0].lower()
    if command == "train":
        assert "no_such_data" in lines[0]
