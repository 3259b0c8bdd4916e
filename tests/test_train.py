"""Training writes its run directory; checkpoints round-trip and bad ones are rejected."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro
from sklearn.metrics import average_precision_score

from adaframe.data.features import FeatureDataset
from adaframe.evaluate.split import evaluate
from adaframe.models.kinds import CHECKPOINT, build_model, load_checkpoint, save_checkpoint
from adaframe.rl.rollout import StopRule
from adaframe.train.config import TrainConfig, train_config
from adaframe.train.loop import train
from adaframe.utils import AdaframeError
from conftest import random_videos, read_rows

MODELS = ["adaframe", "avgpool", "lstm", "sampler"]


def tiny_config(data, out, model, **kw) -> TrainConfig:
    base = dict(model=model, frames=3, epochs=2, hidden=16, batch_size=16, progress=False, seed=0)
    base.update(kw)
    return train_config(data, out, **base)


@pytest.mark.parametrize("model, options", [
    ("fastforward", {"jumps": (0.2, 0.4), "stop_bias": -1.0}),
    ("frameglimpse", {"policy_std": 0.2}),
    ("adaframe", {"selection": "gaussian", "prediction": "lstm", "temporal": False, "policy_std": 0.3, "start": 0.25}),
    ("adaframe", {"scan_bias": 1.0, "frame_penalties": (0.0, 2.0)}),
    ("avgpool", {"frame_penalties": (0.5,)}),
    ("sampler", {"frame_penalties": (0.0, 1.0)}),
])
def test_the_options_given_to_train_reach_the_model(synth_dir, tmp_path, model, options):
    """``adaframe train --jumps 0.2 0.4`` (and every other model option) is the value of the trained model's config,
    saved with its weights and inside the training config beside them; so are the optimiser's settings."""
    flags = [[f"--{k.replace('_', '-')}", *map(str, v if isinstance(v, tuple) else (v,))] for k, v in options.items()]
    args = ["--data", str(synth_dir), "--out", str(tmp_path / "run"), "--model", model, "--frames", "3", "--epochs", "1", "--hidden", "16", "--batch-size", "16",
            "--no-progress", "--weight-decay", "0.01", "--lr-step", "7", "--optimizer", "sgd", "--momentum", "0.5",
            *(a for flag in flags for a in flag)]
    cfg = tyro.cli(TrainConfig, args=args)
    train(cfg)
    loaded, payload = load_checkpoint(tmp_path / "run")
    assert {k: getattr(loaded.cfg, k) for k in options} == options
    assert TrainConfig.from_dict(payload["config"]) == cfg and payload["config"]["model_options"] == asdict(cfg.model_options)
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=False)
    group = state["optimizer"]["param_groups"][0]
    assert (group["weight_decay"], group["momentum"], state["scheduler"]["step_size"]) == (0.01, 0.5, 7)


@pytest.mark.parametrize("model", MODELS)
def test_train_writes_run_directory(synth_dir, tmp_path, model):
    out = tmp_path / "run"
    assert train(tiny_config(synth_dir, out, model)) == out
    assert (out / "checkpoint.pt").is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["model"] == model and cfg["train"]["epochs"] == 2
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in records)
    events = list((out / "tb").rglob("events.out.tfevents*"))
    assert events and events[0].stat().st_size > 0
    loaded, payload = load_checkpoint(out)
    assert payload["kind"] == model and payload["epoch"] == 2
    assert payload["classes"] == sorted({r["label"] for r in read_rows(synth_dir)}) and len(payload["classes"]) == 4
    val = FeatureDataset(synth_dir, "val", classes=payload["classes"], memory_frames=None if model in ("adaframe", "sampler") else 0)
    res = evaluate(loaded, val, frames=3)
    assert res.scores.shape == (len(val), 4) and np.isfinite(res.scores).all()
    # the last epoch's val mAP / top-1 are those of the saved model, by scikit-learn and an argmax
    aps = [average_precision_score(res.labels == c, res.scores[:, c]) for c in range(4) if (res.labels == c).any()]
    assert records[-1]["val_mAP"] == pytest.approx(100 * np.mean(aps), abs=1e-9)
    assert records[-1]["val_top1"] == pytest.approx(100 * np.mean(res.scores.argmax(1) == res.labels), abs=1e-9)
    # the training split's mAP beside val's, measured the same way on len(val) training videos spread over the split
    train_set = FeatureDataset(synth_dir, "train", classes=payload["classes"], memory_frames=val.memory_frames)
    probe = [i * len(train_set) // len(val) for i in range(len(val))]
    fit = evaluate(loaded, torch.utils.data.Subset(train_set, probe), frames=3)
    aps = [average_precision_score(fit.labels == c, fit.scores[:, c]) for c in range(4) if (fit.labels == c).any()]
    assert records[-1]["train_mAP"] == pytest.approx(100 * np.mean(aps), abs=1e-9)
    assert set(records[0]) >= {"train_mAP", "train_top1", "val_mAP", "val_top1"}
    if model == "adaframe":  # the default agent mixes its two predictions with weights fitted on val
        assert records[-1]["mix_pooled"] == pytest.approx(float(loaded.mix[0])) and records[-1]["mix_pooled"] != 1.0


def test_train_without_memory(synth_dir, tmp_path):
    """The no-memory ablation (--memory-frames 0): its checkpoint says so, eval then reads no memory (a data set whose
    memory files are gone evaluates the same), and eval's mAP is the one training logged on val."""
    from adaframe.evaluate.run import Setting, evaluate_run

    out = train(tiny_config(synth_dir, tmp_path / "run", "adaframe", memory_frames=0, epochs=1))
    assert load_checkpoint(out)[1]["memory_frames"] == 0
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["val_mAP"]
    res = evaluate_run(out, synth_dir, "val", Setting(frames=3, stop=None))
    assert res["mAP"] == pytest.approx(logged, abs=1e-4) and res["avg_frames"] > 1
    bare = tmp_path / "bare"
    shutil.copytree(synth_dir, bare, ignore=shutil.ignore_patterns("memory"))
    assert evaluate_run(out, bare, "val", Setting(frames=3, stop=None))["mAP"] == res["mAP"]


def test_train_changes_weights_and_is_seeded(synth_dir, tmp_path):
    a = load_checkpoint(train(tiny_config(synth_dir, tmp_path / "a", "adaframe", epochs=1)))[0]
    b = load_checkpoint(train(tiny_config(synth_dir, tmp_path / "b", "adaframe", epochs=1)))[0]
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(p, q, msg=f"same seed, different {n}")
    torch.manual_seed(0)
    fresh = build_model("adaframe", {"feature_dim": 16, "memory_dim": 8, "num_classes": 4, "hidden": 16})
    assert any(not torch.equal(p, q) for p, q in zip(fresh.state_dict().values(), a.state_dict().values()))


@pytest.mark.parametrize("model", MODELS)
def test_checkpoint_round_trip(synth_dir, tmp_path, model):
    ds = FeatureDataset(synth_dir, "val")
    dims = {"feature_dim": ds.feature_dim, "memory_dim": ds.memory_dim, "num_classes": len(ds.classes), "hidden": 12,
            "memory_frames": ds.memory_frames, "frames": 3}
    torch.manual_seed(5)
    net = build_model(model, dims)
    path = save_checkpoint(tmp_path, net, model, ds.classes, {"note": "x"}, {"epoch": 7}, memory_frames=dims.get("memory_frames"))
    assert path == tmp_path / CHECKPOINT
    for where in (tmp_path, path):  # a run directory or the file itself
        loaded, payload = load_checkpoint(where)
        assert type(loaded) is type(net) and not loaded.training
        assert payload["classes"] == ds.classes and payload["epoch"] == 7 and payload["config"] == {"note": "x"}
        a = evaluate(net, ds, frames=4, stop=StopRule("utility", 0.1) if model == "adaframe" else None)
        b = evaluate(loaded, ds, frames=4, stop=StopRule("utility", 0.1) if model == "adaframe" else None)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.visited, b.visited)


def test_load_checkpoint_rejects_non_checkpoint_file(tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(AdaframeError, match=r"cannot load checkpoint \S*junk.pt: not a file written by torch.save$"):
        load_checkpoint(bad)


def test_load_checkpoint_rejects_foreign_torch_file(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(AdaframeError, match="not an adaframe checkpoint"):
        load_checkpoint(other)


def test_load_checkpoint_rejects_mismatched_weights(tmp_path):
    dims = {"feature_dim": 4, "memory_dim": 2, "num_classes": 3, "hidden": 5}
    save_checkpoint(tmp_path, build_model("lstm", dims), "lstm", ["a", "b", "c"], {}, memory_frames=dims.get("memory_frames"))
    payload = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    payload["model_config"]["hidden"] = 6
    torch.save(payload, tmp_path / CHECKPOINT)
    with pytest.raises(AdaframeError, match="lstm"):
        load_checkpoint(tmp_path)


def test_load_checkpoint_missing_path(tmp_path):
    with pytest.raises(AdaframeError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope" / "checkpoint.pt")
    with pytest.raises(AdaframeError, match="no checkpoint"):
        load_checkpoint(tmp_path)  # a directory without checkpoint.pt


def test_train_config_validation(tmp_path):
    with pytest.raises(AdaframeError, match="--frames"):
        TrainConfig(data=tmp_path, out=tmp_path / "o", frames=0)
    with pytest.raises(AdaframeError, match="--gamma"):
        TrainConfig(data=tmp_path, out=tmp_path / "o", gamma=1.5)
    cfg = TrainConfig(data=tmp_path, out=tmp_path / "o", preset="fast")
    assert cfg.hidden >= 1 and cfg.epochs >= 1 and cfg.lr > 0
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    flat = {**cfg.to_dict(), "policy_std": 0.2}  # the layout before the model's options were nested
    with pytest.raises(AdaframeError, match=r"unknown key 'policy_std' \(written by another version"):
        TrainConfig.from_dict(flat)


def test_train_bad_data_is_an_adaframe_error(tmp_path):
    with pytest.raises(AdaframeError):
        train(tiny_config(tmp_path / "missing", tmp_path / "run", "adaframe"))


def test_explained_variance_golden():
    from adaframe.rl.losses import explained_variance

    target = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert explained_variance(target, target).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(target, 2.5), target).item() == pytest.approx(0.0)  # the mean: explains nothing
    # var(target) = 1.25, residual [0.5, 0, 0, -0.5] has var 0.125
    assert explained_variance(target - torch.tensor([[0.5, 0.0], [0.0, -0.5]]), target).item() == pytest.approx(0.9)
    mask = torch.tensor([[True, True], [False, False]])  # only 1, 2 count: var 0.25; residual 0 and 1 -> var 0.25
    assert explained_variance(torch.tensor([[1.0, 1.0], [9.0, 9.0]]), target, mask).item() == pytest.approx(0.0)


@pytest.mark.parametrize("model", ["adaframe", "fastforward-g"])
def test_log_every_and_tensorboard_scalars(synth_dir, tmp_path, model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import adaframe

    out = tmp_path / "run"
    proc = adaframe("train", "--data", str(synth_dir), "--out", str(out), "--model", model, "--frames", "3", "--epochs", "2",
                    "--hidden", "8", "--batch-size", "16", "--log-every", "1", "--no-progress", cwd=tmp_path)
    lines = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if line.startswith("epoch ")]
    steps = 2 * (len(FeatureDataset(synth_dir, "train")) // 16)
    assert len(lines) == steps  # one line per step with --log-every 1
    assert all("ETA" in line and "loss_cls" in line and "explained_variance" in line for line in lines)
    assert lines[-1].split(" step ")[1].startswith(f"{steps}/{steps} ")
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss_cls", "train/loss_utl", "train/j_sel", "train/reward", "train/frames_used", "train/utility",
                "train/explained_variance", "train/lr", "epoch/val_mAP", "epoch/train_mAP"):
        assert tag in tags, tag
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"last train mAP {last['train_mAP']:.2f}%, val mAP {last['val_mAP']:.2f}%" in proc.stdout  # the fit and the gap
    # every step's TensorBoard scalars are the terms its log line printed (4 significant digits)
    for tag in ("frames_used", "loss_cls", "j_sel"):
        logged = [float(line.split(f" {tag} ")[1].split()[0]) for line in lines]
        assert [e.value for e in acc.Scalars(f"train/{tag}")] == pytest.approx(logged, rel=1e-3, abs=1e-6), tag
    frames = [e.value for e in acc.Scalars("train/frames_used")]  # each a mean of counts 1..K over a batch of 16 videos
    assert all(1 <= f <= 3 and float(f * 16).is_integer() for f in frames)


@pytest.mark.slow  # two real training processes of 12 epochs and a resume: 20-30 s
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_resume_after_a_kill_reaches_the_same_weights(synth_dir, tmp_path, sig):
    """Stop a training process mid-run, resume it: the weights equal an uninterrupted run's, bit for bit.

    SIGKILL gives it no chance: the last epoch's state is what is on disk. SIGTERM lets it save where it
    is, inside an epoch, and exit with status 130; a process the signal simply killed would show -15 and
    only the last epoch's state.
    """
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from conftest import adaframe

    args = ["train", "--data", str(synth_dir), "--frames", "3", "--epochs", "12", "--hidden", "16", "--batch-size", "16",
            "--no-progress"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    adaframe(*args, "--out", str(straight), cwd=tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ADAFRAME_DEBUG", None)
    # A real process: the signal must reach it (files, not pipes: nobody reads them while it runs).
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "adaframe", *args, "--out", str(killed)], cwd=tmp_path, env=env,
                                stdout=out, stderr=err)
        metrics = killed / "metrics.jsonl"
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 3):
            time.sleep(0.002)
        proc.send_signal(getattr(signal, sig))
        code = proc.wait(timeout=120)
    stdout, stderr = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    done = len(metrics.read_text().splitlines())
    assert 3 <= done < 12, f"the kill must land mid-run (epochs done: {done})"
    state = torch.load(killed / "train_state.pt", weights_only=True)
    if sig == "SIGKILL":
        assert code == -signal.SIGKILL and state["partial"] is None
    else:
        # What only the handler does: finish the step, save the state inside the epoch, say so, exit 130.
        assert code == 130, f"exit status {code} (-15: the signal killed it, no handler)\n{stdout}{stderr}"
        said = re.search(r"stopped by SIGTERM after step (\d+): (.+) holds it; continue with --resume", stdout)
        assert said and Path(said[2]) == killed / "train_state.pt", stdout
        assert stderr.splitlines()[-1] == "adaframe: interrupted"
        per_epoch = len(FeatureDataset(synth_dir, "train")) // 16
        assert state["step"] == int(said[1]) and state["epoch"] == done
        assert state["partial"]["batches"] == state["step"] - done * per_epoch >= 1  # inside the epoch after the last one
    out = adaframe(*args, "--out", str(killed), "--resume", cwd=tmp_path)
    assert "continuing" in out.stdout + out.stderr
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 12
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    history = [json.loads(line) for line in metrics.read_text().splitlines()]
    want = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == list(range(1, 13))
    assert [r["val_mAP"] for r in history] == [r["val_mAP"] for r in want]


def test_resume_refuses_other_settings_and_starts_fresh_without_state(synth_dir, tmp_path):
    cfg = tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=1)
    train(tiny_config(synth_dir, tmp_path / "fresh", "adaframe", epochs=1, resume=True))  # nothing to resume: trains
    assert (tmp_path / "fresh" / "train_state.pt").is_file()
    train(cfg)
    with pytest.raises(AdaframeError, match=r"other settings \(frames\)"):
        train(tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=2, frames=4, resume=True))
    with pytest.raises(AdaframeError, match=r"other settings \(scan_bias\)"):  # an option of the model, named as its flag
        train(tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=2, scan_bias=1.0, resume=True))
    out = train(tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=2, resume=True))  # more epochs: fine
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_run_directory_is_never_silently_replaced(synth_dir, tmp_path):
    """Training into a run: refused unless --resume or --overwrite; --overwrite leaves nothing of the old run."""
    first = train(tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=2))
    before = (first / CHECKPOINT).read_bytes()
    with pytest.raises(AdaframeError, match=r"already holds a run \(checkpoint.pt, train_state.pt\): continue it with --resume"):
        train(tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=1, frames=4))
    assert (first / CHECKPOINT).read_bytes() == before  # untouched, config.json too
    assert json.loads((first / "config.json").read_text())["train"]["frames"] == 3
    with pytest.raises(AdaframeError, match="use one of them"):
        tiny_config(synth_dir, tmp_path / "run", "adaframe", resume=True, overwrite=True)
    train(tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=1, frames=4, overwrite=True))
    history = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1]  # the old run's two epochs are gone, not mixed in
    assert len(list((first / "tb").iterdir())) == 1
    assert load_checkpoint(first)[1]["config"]["frames"] == 4


def test_demo_reuses_a_run_by_its_checkpoint_not_by_config_json(synth_dir, tmp_path):
    from adaframe.report.experiments import is_finished

    cfg = tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=1)
    assert not is_finished(cfg)
    train(cfg)
    assert is_finished(cfg)
    other = tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=1, frames=4)
    config = json.loads((cfg.out / "config.json").read_text())
    config["train"] = other.to_dict()  # a config.json that claims another run (as a failed start once left)
    (cfg.out / "config.json").write_text(json.dumps(config))
    assert not is_finished(other) and is_finished(cfg)
    # weights an older version of the model wrote (the frame classifier a single linear layer, before its bank)
    payload = torch.load(cfg.out / CHECKPOINT, weights_only=True)
    payload["state_dict"] = {k.replace("frame_head.weight", "frame_head.w"): v for k, v in payload["state_dict"].items()}
    torch.save(payload, cfg.out / CHECKPOINT)
    assert not is_finished(cfg)


def test_resume_accepts_a_moved_run_and_another_spelling_of_the_data(synth_dir, tmp_path, monkeypatch):
    train(tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=1))
    (tmp_path / "run").rename(tmp_path / "moved")
    monkeypatch.chdir(synth_dir.parent)
    out = train(tiny_config(Path(synth_dir.name), tmp_path / "moved", "adaframe", epochs=2, resume=True))
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_from_a_file_that_is_not_a_training_state_is_one_line(synth_dir, tmp_path):
    run = train(tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=1))
    (run / CHECKPOINT).replace(run / "train_state.pt")  # a checkpoint where the state should be
    with pytest.raises(AdaframeError, match="not a training state written by 'adaframe train'"):
        train(tiny_config(synth_dir, run, "adaframe", epochs=2, resume=True))
    state = run / "train_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(AdaframeError, match=r"--resume: cannot load training state .*train_state.pt: the file is damaged or truncated \("):
        train(tiny_config(synth_dir, run, "adaframe", epochs=2, resume=True))
    state.write_bytes(b"not torch")
    with pytest.raises(AdaframeError, match=r"cannot load training state \S*: not a file written by torch.save$"):
        train(tiny_config(synth_dir, run, "adaframe", epochs=2, resume=True))


@pytest.mark.parametrize("damage", ["truncated", "empty model config"])
def test_damaged_checkpoints_are_one_line_errors(synth_dir, tmp_path, damage):
    run = train(tiny_config(synth_dir, tmp_path / "run", "lstm", epochs=1))
    path = run / CHECKPOINT
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        match = r"checkpoint.pt: the file is damaged or truncated \([^\n]+\)$"  # torch's reason, one line
    else:
        payload = torch.load(path, weights_only=True)
        payload["model_config"] = {}
        torch.save(payload, path)
        match = r"checkpoint.pt: its model_config lacks key 'feature_dim', 'hidden', 'num_classes' \(written by another version"
    with pytest.raises(AdaframeError, match=match):
        load_checkpoint(run)


def test_one_class_is_refused(tmp_path, make_dataset):
    videos = random_videos(12, classes=1)
    for v in videos[8:]:
        v["split"] = "val"
    data = make_dataset(tmp_path / "d", videos)
    with pytest.raises(AdaframeError, match="has 1 class .*at least 2"):
        train(tiny_config(data, tmp_path / "run", "adaframe"))
    assert not (tmp_path / "run" / "config.json").exists()


def test_what_a_failed_start_left_is_cleared(synth_dir, tmp_path):
    out = tmp_path / "run"
    (out / "tb").mkdir(parents=True)
    (out / "tb" / "events.out.tfevents.stale").write_bytes(b"old")
    (out / "config.json").write_text("{}")
    train(tiny_config(synth_dir, out, "adaframe", epochs=1))
    assert [p.name for p in (out / "tb").iterdir()] != ["events.out.tfevents.stale"]
    assert not (out / "tb" / "events.out.tfevents.stale").exists()


def test_a_failed_run_flushes_its_tensorboard_log_and_leaves_no_writer(tmp_path, make_dataset):
    """An error mid-run (here NaN in a val video, met at epoch 1's validation) still closes the TensorBoard writer: the
    steps logged before it are on disk for the user to look at, and no writer thread outlives train() (it flushes
    every 2 minutes to a path relative to the directory of the moment)."""
    import threading

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    videos = random_videos(8) + random_videos(4, seed=1, split="val")
    for i, v in enumerate(videos):
        v["video_id"] = f"v{i:02d}"
    videos[9]["features"][0, 0] = np.nan
    data = make_dataset(tmp_path / "d", videos)
    before = set(threading.enumerate())
    with pytest.raises(AdaframeError, match="contains NaN or inf"):
        train(tiny_config(data, tmp_path / "run", "adaframe", batch_size=4))
    left = [t for t in set(threading.enumerate()) - before if t.is_alive() and type(t).__module__.startswith("tensorboard")]
    assert not left, left
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss_cls")] == [1, 2]  # the epoch's two steps


def test_the_val_split_picks_the_frame_classifier_fits_the_mix_checks_the_policy_and_refits_the_critic(synth_dir, tmp_path):
    """The default agent: every epoch the val split picks the pooled prediction's frame classifier and fits the mix; the last
    epoch compares the policy with the uniform scan on val and refits the critic on val rollouts, and the checkpoint keeps
    both (eval follows the verdict; the saved utility explains the val returns as the record says)."""
    from torch.utils.data import DataLoader

    from adaframe.data.features import collate
    from adaframe.evaluate.metrics import mean_average_precision
    from adaframe.evaluate.split import agent_batch
    from adaframe.rl.losses import explained_variance
    from adaframe.rl.rewards import discounted_returns, step_rewards
    from adaframe.train.loop import POLICY_MARGIN

    out = train(tiny_config(synth_dir, tmp_path / "run", "adaframe", epochs=3))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("pooled_every_mAP" in r and r["pooled_by"] in ("every", "subset") for r in records)
    assert len({(r["mix_pooled"], r["mix_recurrent"]) for r in records}) == 3  # refitted every epoch
    assert all(math.isfinite(r["val_mAP_heldout"]) and math.isfinite(r["val_mAP_scan"]) for r in records)
    assert "inference" in records[-1] and "critic_val_ev_refit" in records[-1] and "inference" not in records[0]
    model, payload = load_checkpoint(out)
    assert model.mix[:2].tolist() == pytest.approx([records[-1]["mix_pooled"], records[-1]["mix_recurrent"]])
    val = FeatureDataset(synth_dir, "val", classes=payload["classes"])
    gain = records[-1]["policy_minus_scan"]
    assert records[-1]["inference"] == model.cfg.inference == ("policy" if gain >= POLICY_MARGIN else "scan")
    learned, policy, uniform = (evaluate(model, val, frames=3, policy=p) for p in ("learned", "policy", "uniform"))
    assert gain == pytest.approx(100 * (mean_average_precision(policy.scores, policy.labels)
                                        - mean_average_precision(uniform.scores, uniform.labels)), abs=1e-9)
    assert np.array_equal(learned.visited, (policy if model.cfg.inference == "policy" else uniform).visited)
    batch = next(iter(DataLoader(val, batch_size=len(val), collate_fn=collate)))
    roll = agent_batch(model, batch, 3)  # as inference looks
    returns = discounted_returns(step_rewards(roll.logits, batch.labels), 0.9)
    ev = float(explained_variance(roll.utilities.double(), returns.double()))
    assert ev == pytest.approx(records[-1]["critic_val_ev_refit"], abs=1e-4)
    assert ev >= records[-1]["critic_val_ev_trained"] - 1e-6  # the least-squares fit on these very returns


def class_means(synth_dir) -> torch.Tensor:
    """[C, D] the class means of the training frames: as classifier weights, nearest-mean scores that point at the class."""
    train_set = FeatureDataset(synth_dir, "train")
    feats = [(train_set[i]["features"], train_set[i]["label"]) for i in range(len(train_set))]
    return torch.stack([torch.from_numpy(np.concatenate([f for f, y in feats if y == c])).mean(0) for c in range(len(train_set.classes))])


@torch.no_grad()
def point(classifier, g: int | None, means: torch.Tensor) -> None:
    """Every classifier of the bank says nothing (zero weights: a uniform softmax) but the g-th, which points at the class."""
    classifier.weight.zero_()
    classifier.bias.zero_()
    if g is not None:
        classifier.weight[g] = 5 * means


def test_pick_frame_classifier_takes_the_bank_member_and_the_classifier_with_the_better_val_map(synth_dir):
    """Each bank of frame classifiers picks its member with the best val mAP, pooled over K uniform frames (a tie goes to
    the smallest penalty); with frame_loss "both" the pooled prediction then reads the classifier trained on every frame
    unless the other one has a val mAP SUBSET_MARGIN higher (a tie goes to AvgPooling's loss)."""
    from adaframe.models.agent import AdaFrame, AgentConfig
    from adaframe.models.frame_classifier import PENALTIES
    from adaframe.train.loop import SUBSET_MARGIN, pick_frame_classifier

    val = FeatureDataset(synth_dir, "val")
    means = class_means(synth_dir)
    model = AdaFrame(AgentConfig(val.feature_dim, val.memory_dim, 4, hidden=8, frame_loss="both"))
    heads = {"every": model.frame_head, "subset": model.subset_head}
    for good, blank, g in (("subset", "every", 3), ("every", "subset", 1)):
        point(heads[good], g, means)
        point(heads[blank], None, means)
        record = pick_frame_classifier(model, val, 3, torch.device("cpu"))
        assert model.cfg.pooled_by == record["pooled_by"] == good
        assert record[f"pooled_{good}_mAP"] > record[f"pooled_{blank}_mAP"] + SUBSET_MARGIN
        assert int(heads[good].picked) == g and record[f"pooled_{good}_penalty"] == pytest.approx(PENALTIES[g])
        assert int(heads[blank].picked) == 0  # all tie
        frames = torch.from_numpy(np.array(val[0]["features"]))
        torch.testing.assert_close(model.frame_logits(frames), model.frame_bank(frames, good)[:, g])  # the pick predicts
    with torch.no_grad():
        model.subset_head.load_state_dict(model.frame_head.state_dict())  # the same classifier twice: the tie goes to "every"
    assert pick_frame_classifier(model, val, 3, torch.device("cpu"))["pooled_by"] == "every"


@pytest.mark.parametrize("kind", ["avgpool", "sampler"])
def test_baselines_pick_the_penalty_whose_classifier_does_best_on_val(synth_dir, kind):
    from adaframe.train.loop import pick_frame_classifier

    val = FeatureDataset(synth_dir, "val")
    model = build_model(kind, {"feature_dim": val.feature_dim, "memory_dim": val.memory_dim, "num_classes": 4,
                               "memory_frames": val.memory_frames, "frames": 3})
    classifier = model.head if kind == "avgpool" else model.classifier
    point(classifier, 2, class_means(synth_dir))
    record = pick_frame_classifier(model, val, 3, torch.device("cpu"))
    assert int(classifier.picked) == 2 and record["frames_penalty"] == classifier.penalties[2].item()
    frames = torch.from_numpy(np.array(val[0]["features"]))
    torch.testing.assert_close(classifier(frames), classifier.bank(frames)[:, 2])


def model_classes(run: Path) -> list[str]:
    return load_checkpoint(run)[1]["classes"]
