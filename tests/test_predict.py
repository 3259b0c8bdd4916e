"""``adaframe predict`` on video files: equal to ``eval`` on offline features, only chosen frames computed, bad input."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from adaframe.commands.predict import parse_compare
from adaframe.data.features import FeatureDataset, collate, read_spec
from adaframe.evaluate.split import agent_batch
from adaframe.media.probe import probe
from adaframe.media.reader import sample_times
from adaframe.models.kinds import build_model, save_checkpoint
from adaframe.recognize.recognizer import Recognizer
from adaframe.rl.rollout import StopRule
from adaframe.utils import AdaframeError
from conftest import RUN_K as K
from conftest import SHARED_VIDEOS, adaframe, make_run


@pytest.fixture(scope="module")
def run(extracted, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), extracted)


def _eval_rows(run: Path, data: Path, mu: float | None):
    """Offline: the stored features of each split through the same agent -> (dataset, outputs)."""
    from adaframe.models.kinds import load_checkpoint

    model, payload = load_checkpoint(run)
    for split in ("train", "val"):
        ds = FeatureDataset(data, split, classes=payload["classes"])
        yield ds, agent_batch(model, collate([ds[i] for i in range(len(ds))]), K, None if mu is None else StopRule("utility", mu))


@pytest.mark.parametrize("mu", [None, 0.0])
def test_predict_equals_eval_on_offline_features(run, extracted, video_files, mu):
    rec = Recognizer.from_run(run, frames=K, mu=mu)
    for ds, out in _eval_rows(run, extracted, mu):
        paths = [video_files / "videos" / f"{r.video_id}.mp4" for r in ds.records]
        results = rec.predict(paths)
        for b, r in enumerate(results):
            steps = int(out.steps[b])
            assert r.steps == steps
            assert r.seconds == tuple(float(i) for i in out.indices[b, :steps].tolist())  # 1 fps grid: index = second
            probs = dict(r.top)
            for c, name in enumerate(rec.classes):
                assert probs[name] == pytest.approx(float(out.probs[b, c]), abs=1e-3)
            assert r.label == rec.classes[int(out.probs[b].argmax())]
    if mu == 0.0:  # mu 0 stops at the first drop of the utility: some video must stop early for the test to mean anything
        assert any(int(s) < K for _, out in _eval_rows(run, extracted, mu) for s in out.steps)


def test_only_the_frames_the_policy_picks_are_computed(run, video_files):
    rec = Recognizer.from_run(run, frames=K, mu=None)
    path = video_files / "videos" / "video00000.mp4"
    calls = {"backbone": 0, "memory_backbone": 0}
    modules = dict(zip(calls, rec.networks.torch_backbones))

    def counting(name):
        forward = modules[name].forward_features

        def count(x):
            calls[name] += x.shape[0]
            return forward(x)
        return count

    for name in calls:
        modules[name].forward_features = counting(name)
    [r] = rec.predict([path])
    assert calls["backbone"] == r.backbone_calls == r.frames_used == len(set(r.seconds))
    assert r.frames_used <= K < r.candidate_frames
    assert calls["memory_backbone"] == r.memory_backbone_calls == 16
    # Decoding: one pass for the memory glance, then per chosen frame at most a GOP (2 s = 8 frames at 4 fps)
    # plus the frame after it; re-decoding the video from its start for each frame would cost far more.
    total = round(probe(path).duration * 4)
    assert r.frames_decoded <= total + r.frames_used * 9 < total * (1 + r.frames_used)
    spec = rec.features
    expected = r.frames_used * spec["backbone"]["gflops"] + 16 * spec["memory_backbone"]["gflops"] + r.steps * rec.networks.head_gflops
    assert r.gflops == pytest.approx(expected)


def test_memory_subset_of_a_run_trained_on_fewer_memory_frames(extracted, video_files, tmp_path):
    """A Table-2 style run (8 of the 16 stored memory frames) decodes and computes only those 8."""
    run8 = make_run(tmp_path / "run8", extracted, memory_frames=8)
    [r] = Recognizer.from_run(run8, frames=K, mu=None).predict([video_files / "videos" / "video00001.mp4"])
    assert r.memory_backbone_calls == 8 and r.error is None


def test_compare_uniform_baseline_and_json(run, extracted, video_files, tmp_path):
    base = make_run(tmp_path / "avgpool", extracted, kind="avgpool")
    video = video_files / "videos" / "video00002.mp4"
    proc = adaframe("predict", str(video), "--checkpoint", str(run), "--compare", "uniform25", "--compare-checkpoint", str(base),
                    "--json", "--top-k", "1", cwd=tmp_path)
    [line] = proc.stdout.strip().splitlines()
    r = json.loads(line)
    b = r["baseline"]
    frames = len(np.load(extracted / "features" / "video00002.npy"))  # fewer than 25 at 1 fps: some read twice, run once
    assert frames < 25 and b["backbone_calls"] == b["frames_used"] == frames and b["steps"] == 25
    assert len(r["top"]) == len(b["top"]) == 1 and b["top"][0][0] == b["label"] and r["top"][0][0] == r["label"]
    assert r["vs_baseline"]["backbone_calls_ratio"] == pytest.approx(r["backbone_calls"] / b["backbone_calls"])
    assert r["vs_baseline"]["gflops_ratio"] < 1
    text = adaframe("predict", str(video), "--checkpoint", str(run), "--compare", "uniform25", cwd=tmp_path).stdout
    assert "AvgPooling uniform25: (no classifier: cost only)" in text and "AdaFrame / baseline" in text


def test_every_method_prints_probabilities(run, extracted, video_files, tmp_path):
    """The baseline's top classes are its probabilities (AvgPooling's forward gives log-probabilities), equal to its
    ``probs`` on the 25 uniform frames that ``eval --sampling uniform`` reads of the same video's extracted features (one
    rule for K uniform frames: ``uniform_indices`` over the extraction's frames); every top-k list sums to at most 1."""
    from adaframe.data.features import uniform_indices
    from adaframe.media.reader import sample_times
    from adaframe.models.kinds import load_checkpoint

    base = make_run(tmp_path / "avgpool", extracted, kind="avgpool", seed=3)
    video = video_files / "videos" / "video00002.mp4"
    args = ["predict", str(video), "--checkpoint", str(run), "--compare", "uniform25", "--compare-checkpoint", str(base)]
    r = json.loads(adaframe(*args, "--json", "--top-k", "2", cwd=tmp_path).stdout)
    for top in (r["top"], r["baseline"]["top"]):
        assert len(top) == 2 and all(0 <= p <= 1 for _, p in top) and sum(p for _, p in top) <= 1 + 1e-6
    stored = torch.from_numpy(np.load(extracted / "features" / "video00002.npy")).float()  # [T, D]
    picked = uniform_indices(torch.tensor([len(stored)]), 25)[0]  # [25]
    times = sample_times(probe(video).duration, read_spec(extracted)["fps"])[picked.numpy()]
    assert r["baseline"]["frame_seconds"] == pytest.approx(times.tolist(), abs=1e-3)  # one per step, in order
    classifier, payload = load_checkpoint(base)
    with torch.no_grad():
        probs = classifier.probs(stored[picked][None], torch.ones(1, 25, dtype=torch.bool))[0]
    want = sorted(zip(payload["classes"], probs.tolist()), key=lambda cp: -cp[1])[:2]
    assert [c for c, _ in r["baseline"]["top"]] == [c for c, _ in want]
    assert [p for _, p in r["baseline"]["top"]] == pytest.approx([p for _, p in want], abs=1e-4)
    text = adaframe(*args, "--top-k", "2", cwd=tmp_path).stdout  # the text output shows the same probabilities
    assert f"AvgPooling uniform25: {want[0][0]}  top-2: {want[0][0]} {want[0][1]:.3f}, {want[1][0]} {want[1][1]:.3f}" in text


def test_bad_video_gets_its_own_error_and_others_go_on(run, video_files, tmp_path):
    text = tmp_path / "not_a_video.mp4"
    text.write_text("hello")
    good = video_files / "videos" / "video00003.mp4"
    results = Recognizer.from_run(run, frames=K, mu=0.5).predict([text, good, tmp_path / "missing.mp4"])
    assert results[0].error is not None and str(text) in results[0].error
    assert results[2].error is not None
    assert results[1].error is None and results[1].steps >= 1


def test_failed_videos_are_named_on_stderr_and_exit_1(run, video_files, tmp_path):
    """Results of good videos as usual; each failed one also on stderr as one line; status 1 if any failed."""
    text = tmp_path / "not_a_video.mp4"
    text.write_text("hello")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.mp4"
    good = video_files / "videos" / "video00003.mp4"
    proc = adaframe("predict", str(text), str(good), str(missing), "--checkpoint", str(run), cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr
    assert f"{good}  (" in proc.stdout and "frames used" in proc.stdout  # the good video's result, as before
    assert proc.stdout.count(": error: ") == 2  # the failures stay in the printed results too
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"adaframe: error: {text}: cannot open as a media file")
    assert lines[1] == f"adaframe: error: {missing}: no such file"
    # Every video failing is status 1 too (not 0, nor 2: the usage was fine); --json keeps the error field.
    proc = adaframe("predict", str(empty), str(missing), "--checkpoint", str(run), "--json", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["error"] for r in rows] == [f"{empty}: the file is empty", f"{missing}: no such file"]
    assert proc.stderr.splitlines() == [f"adaframe: error: {empty}: the file is empty", f"adaframe: error: {missing}: no such file"]


@pytest.mark.skipif(not (SHARED_VIDEOS / "decord_corrupted.mp4").is_file(), reason=f"no shared clips at {SHARED_VIDEOS}")
def test_corrupted_and_real_clips(run, tmp_path):
    """Real clips of every container run; the corrupted one errors for itself only (it breaks while decoding)."""
    clips = ["mmaction2_test.mp4", "mmaction2_test.avi", "decord_flipping_a_pancake.mkv", "decord_rotated_90.mov", "decord_corrupted.mp4"]
    cut = tmp_path / "cut.avi"  # half an AVI: without its index it states a shorter duration; its header, 164 frames
    cut.write_bytes((SHARED_VIDEOS / "mmaction2_test.avi").read_bytes()[:147283])
    results = Recognizer.from_run(run, frames=K, mu=None).predict([SHARED_VIDEOS / c for c in clips] + [cut])
    for clip, r in zip(clips, results):
        if clip == "decord_corrupted.mp4":
            continue  # the policy may or may not land beyond the damage; either way it must not raise
        assert r.error is None, r
        assert r.candidate_frames == len(sample_times(probe(SHARED_VIDEOS / clip).duration))
    assert "the file says it has 164 frames" in results[-1].error and "(truncated file?)" in results[-1].error
    corrupted = SHARED_VIDEOS / "decord_corrupted.mp4"
    proc = adaframe("predict", str(corrupted), "--checkpoint", str(run), "--frames", "10", "--compare", "uniform25", cwd=tmp_path,
                    check=False)
    assert "decoding failed" in proc.stdout  # the uniform baseline reads beyond the damage
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()  # AdaFrame's error if its frames hit the damage, else the baseline's
    assert line.startswith(f"adaframe: error: {corrupted}: ") and "decoding failed" in line


def test_checkpoint_without_extraction_record_is_refused(synth_dir, tmp_path):
    ds = FeatureDataset(synth_dir, "train")
    dims = {"feature_dim": ds.feature_dim, "memory_dim": ds.memory_dim, "num_classes": len(ds.classes), "hidden": 8, "memory_frames": 16}
    save_checkpoint(tmp_path, build_model("adaframe", dims), "adaframe", ds.classes, {"frames": 3}, {"features": None}, memory_frames=dims.get("memory_frames"))
    with pytest.raises(AdaframeError, match="not made by 'adaframe extract'"):
        Recognizer.from_run(tmp_path)


def test_weights_other_than_the_recorded_ones_are_refused(extracted, video_files, tmp_path):
    """Features made with weights file A; predict with a changed file must refuse, not predict garbage."""
    from adaframe.media.backbones import build_backbone
    from adaframe.recognize.extraction import extract

    weights = tmp_path / "r18.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(build_backbone("resnet18", seed=3).state_dict(), weights)
    videos = tmp_path / "videos"
    shutil.copytree(video_files / "videos", videos)
    (tmp_path / "list.txt").write_text((video_files / "list.txt").read_text())
    data = tmp_path / "data"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extract(tmp_path / "list.txt", data, backbone="resnet18", size=64, memory_size=32, backbone_weights=weights, workers=0,
                progress=False)
    run = make_run(tmp_path / "run", data)
    Recognizer.from_run(run)  # the recorded file: fine
    moved = tmp_path / "moved.pt"
    shutil.copy(weights, moved)
    Recognizer.from_run(run, backbone_weights=moved)  # same bytes elsewhere: fine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(build_backbone("resnet18", seed=4).state_dict(), weights)
    with pytest.raises(AdaframeError, match="not those the features were made with"):
        Recognizer.from_run(run)
    proc = adaframe("predict", str(videos / "video00000.mp4"), "--checkpoint", str(run), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("adaframe: error:") and "Traceback" not in proc.stderr
    weights.unlink()  # the recorded file gone: say so, and how to point at it
    with pytest.raises(AdaframeError, match=r"r18\.pt \(as recorded at extraction\) do not exist; give --backbone-weights"):
        Recognizer.from_run(run)
    Recognizer.from_run(run, backbone_weights=moved)


def test_missing_weights_file_is_named_as_missing(run, video_files, tmp_path):
    """Not 'are not those the features were made with': the file given is not there at all."""
    with pytest.raises(AdaframeError, match=r"^backbone weights nope\.pth do not exist$"):
        Recognizer.from_run(run, backbone_weights=Path("nope.pth"))
    with pytest.raises(AdaframeError, match=r"^memory backbone weights nope\.pth do not exist$"):
        Recognizer.from_run(run, memory_weights=Path("nope.pth"))
    proc = adaframe("predict", str(video_files / "videos" / "video00000.mp4"), "--checkpoint", str(run),
                    "--backbone-weights", "nope.pth", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "adaframe: error: backbone weights nope.pth do not exist"


@pytest.mark.parametrize("spec,ok", [("uniform25", 25), ("uniform1", 1), ("uniform0", None), ("random25", None), ("25", None)])
def test_parse_compare(spec, ok):
    if ok is None:
        with pytest.raises(AdaframeError):
            parse_compare(spec)
    else:
        assert parse_compare(spec) == ok


def test_predict_refuses_a_baseline_checkpoint(extracted, tmp_path):
    run = make_run(tmp_path / "avgpool", extracted, kind="avgpool")
    with pytest.raises(AdaframeError, match="predict and export take an AdaFrame run"):
        Recognizer.from_run(run)


@pytest.mark.slow
def test_video_demo_quick_end_to_end(tmp_path):
    """render -> calibrate -> extract -> train -> eval -> predict, on CPU, through the CLI."""
    adaframe("video-demo", "--quick", "--out", str(tmp_path / "vd"), cwd=tmp_path, timeout=400)
    res = json.loads((tmp_path / "vd" / "results.json").read_text())
    assert res["extract"]["failed"] == 0 and res["extract"]["done"] == 12
    assert {r["model"] for r in res["eval"]} == {"avgpool", "lstm", "adaframe"}
    lstm = next(r for r in res["eval"] if r["model"] == "lstm")
    assert lstm["frames"] == 6  # K + 1
    ada = [r for r in res["eval"] if r["model"] == "adaframe"]
    assert all(r["learned_minus_uniform"] == pytest.approx(r["mAP"] - r["uniform_mAP"]) for r in ada)
    assert res["check"]["passed"] == (ada[0]["mAP"] >= max(r["mAP"] for r in res["eval"] if r["frames"] == 6 and r["model"] != "adaframe"))
    [p] = res["predict"]
    assert p["baseline"]["backbone_calls"] == min(25, p["candidate_frames"]) and p["backbone_calls"] <= 5  # distinct frames
    spec = read_spec(tmp_path / "vd" / "features")
    assert spec["backbone"]["sha256"] and Path(spec["backbone"]["weights"]).is_file()  # the calibrated random weights
    feats = np.load(next((tmp_path / "vd" / "features" / "features").glob("*.npy")))
    assert np.isfinite(feats).all() and 0.01 < np.abs(feats).mean() < 100  # neither exploded nor vanished


def test_scan_computes_a_new_frame_every_step(run, video_files):
    """--scan (the cost check of docs/commands.md) visits consecutive frames, each through the backbone once."""
    path = video_files / "videos" / "video00004.mp4"
    [r] = Recognizer.from_run(run, frames=5, mu=None).predict([path], scan=True)
    t = r.candidate_frames
    start = t // 2
    assert r.seconds == tuple(float((start + i) % t) for i in range(5))
    assert r.backbone_calls == r.frames_used == 5 and "--scan" in r.method


def test_python_api_equals_the_cli_and_survives_a_bad_file(run, video_files, tmp_path):
    """``Recognizer``: typed results in input order, a bad file reported in its place, batching invisible,
    and the same labels, probabilities and frames as ``adaframe predict --json``."""
    from adaframe import Recognition, Recognizer  # the package's top-level API

    good = sorted((video_files / "videos").glob("*.mp4"))[:3]
    bad = tmp_path / "not_a_video.mp4"
    bad.write_bytes(b"hello")
    paths = [good[0], bad, good[1], good[2]]
    rec = Recognizer.from_run(run, mu=0.0)
    results = rec.predict(paths)
    assert [r.path for r in results] == paths
    assert isinstance(results[0], Recognition)
    assert results[1].error and "not_a_video.mp4" in results[1].error and results[1].label is None
    ok = [results[i] for i in (0, 2, 3)]
    for r in ok:
        assert r.error is None and r.label == r.top[0][0] and r.label in rec.classes
        assert [p for _, p in r.top] == sorted((p for _, p in r.top), reverse=True) and sum(p for _, p in r.top) == pytest.approx(1, abs=1e-3)
        assert r.frames_used == len(set(r.seconds)) and r.steps == len(r.seconds) == len(r.utilities)
        cost = rec.features  # GFLOPs: frames x backbone + memory frames x memory network + steps x the agent's head
        assert r.gflops == pytest.approx(r.frames_used * cost["backbone"]["gflops"] + rec.memory_frames * cost["memory_backbone"]["gflops"]
                                         + r.steps * rec.networks.head_gflops, rel=1e-12)

    with Recognizer.from_run(run, mu=0.0, batch_size=1, workers=0) as in_process:  # no decoding workers, one video a group
        one_by_one = in_process.predict([str(p) for p in good])
    assert [(r.label, r.seconds) for r in one_by_one] == [(r.label, r.seconds) for r in ok]
    for a, b in zip(one_by_one, ok):
        assert [p for _, p in a.top] == pytest.approx([p for _, p in b.top], abs=1e-4)

    cli = adaframe("predict", *map(str, good), "--checkpoint", str(run), "--mu", "0", "--json", "--top-k", "100", cwd=tmp_path)
    printed = [json.loads(line) for line in cli.stdout.splitlines()]
    assert [(j["label"], j["frame_seconds"], j["frames_used"]) for j in printed] == [(r.label, list(r.seconds), r.frames_used) for r in ok]
    for j, r in zip(printed, ok):
        assert [p for _, p in j["top"]] == pytest.approx([p for _, p in r.top], abs=1e-4)

    with pytest.raises(AdaframeError, match="patience"):
        Recognizer.from_run(run, patience=0)


def _rows(csv_path: Path) -> list[dict]:
    import csv

    with open(csv_path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)]  # wall time is the one thing that may differ


@pytest.mark.slow
def test_collection_survives_sigkill_bad_files_and_settings(run, video_files, tmp_path):
    """predict --videos LIST --out OUT: every good video in predictions.csv once, exactly the bad ones in failures.csv,
    a run killed by SIGKILL and rerun equals an uninterrupted one, a rerun skips what is done."""
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "text.mp4").write_text("not a video")
    lines = (video_files / "list.txt").read_text().splitlines()
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([f"{video_files / ln.split()[0]} {' '.join(ln.split()[1:])}" for ln in lines]
                                 + [f"{tmp_path / 'text.mp4'} c0", f"{tmp_path / 'gone.mp4'} c1"]) + "\n")
    args = ["predict", "--videos", str(listing), "--checkpoint", str(run), "--batch-size", "2", "--mu", "0", "--no-progress"]

    whole = adaframe(*args, "--out", str(tmp_path / "a"), cwd=tmp_path, check=False)
    assert whole.returncode == 1 and "Traceback" not in whole.stderr
    rows = _rows(tmp_path / "a" / "predictions.csv")
    assert sorted(r["video_id"] for r in rows) == sorted(Path(ln.split()[0]).stem for ln in lines)
    assert {r["video_id"] for r in _rows(tmp_path / "a" / "failures.csv")} == {"text", "gone"}
    assert all(r["correct"] == str(int(r["label"] == r["true_label"])) for r in rows)
    top1 = 100 * np.mean([r["correct"] == "1" for r in rows])
    assert f"top-1 {top1:.2f} over {len(rows)} labelled videos" in whole.stdout

    out = tmp_path / "b"
    proc = subprocess.Popen([sys.executable, "-m", "adaframe", *args, "--out", str(out)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((out / "results").glob("*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list((out / "results").glob("*.json")))
    assert 0 < finished < len(lines), "the kill should land mid-collection"
    again = adaframe(*args, "--out", str(out), cwd=tmp_path, check=False)
    assert again.returncode == 1 and f"{finished} already done" in again.stdout
    assert _rows(out / "predictions.csv") == rows

    other = adaframe(*[a if a != "0" else "0.5" for a in args], "--out", str(out), cwd=tmp_path, check=False)
    assert other.returncode == 2 and "other settings" in other.stderr

    for i in (0, 1):  # two shards into one folder: the second to end writes the complete index
        adaframe(*args, "--out", str(tmp_path / "c"), "--shard", f"{i}/2", cwd=tmp_path, check=False)
    assert _rows(tmp_path / "c" / "predictions.csv") == rows


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give video files, or a collection"),
    ({"videos": (Path("a.mp4"),), "collection": Path("list.txt"), "out": Path("o")}, "not both"),
    ({"collection": Path("list.txt")}, "go together"),
    ({"videos": (Path("a.mp4"),), "out": Path("o")}, "go together"),
    ({"videos": (Path("a.mp4"),), "shard": "0/2"}, "go together"),
])
def test_predict_options_that_do_not_go_together(kwargs, message):
    from adaframe.commands.predict import PredictConfig

    with pytest.raises(AdaframeError, match=message):
        PredictConfig(checkpoint=Path("run"), **kwargs)


def test_benchmark_on_video_files_measures_both_methods_through_the_same_workers(run, video_files, capsys):
    """``benchmark --videos``: per folder, AdaFrame's and uniformK's frames decoded and backbone frames are those
    the recognizer reports video by video, and the ratio rows divide them."""
    from adaframe.commands.benchmark import BenchmarkConfig, run_benchmark

    folder = video_files / "videos"
    rows = run_benchmark(BenchmarkConfig(videos=(folder,), checkpoint=run, frames=K, mu=0.0, uniform=6, workers=1, video_batch=3))
    ada, uni, ratio = rows
    n = len(list(folder.glob("*.mp4")))
    assert ada["videos"] == uni["videos"] == n and ada["failed"] == uni["failed"] == 0
    with Recognizer.from_run(run, workers=0, frames=K, mu=0.0) as rec:
        want = rec.predict(sorted(folder.glob("*.mp4")))
    assert ada["backbone_frames"] == pytest.approx(np.mean([r.backbone_calls for r in want]))
    assert ada["decoded"] == pytest.approx(np.mean([r.frames_decoded for r in want]))
    assert ada["memory_decoded"] == pytest.approx(np.mean([r.memory_frames_decoded for r in want]) / 16)
    assert uni["backbone_frames"] == 6 and uni["decoded"] >= 6 and uni["memory_decoded"] is None
    assert ada["decoded_per_frame"] == pytest.approx(np.mean([(r.frames_decoded - r.memory_frames_decoded) / r.frames_used for r in want]))
    for key in ("videos_per_s", "decoded", "backbone_frames", "gflops", "decoded_per_frame"):
        assert ratio[key] == pytest.approx(ada[key] / uni[key])
    printed = capsys.readouterr().out
    assert "AdaFrame-4 mu 0.0" in printed and "uniform6" in printed and "AdaFrame / uniform6" in printed
    assert f"files of {folder} read by: seek (skipping unreferenced frames) ({n})" in printed  # H.264 in MP4


def test_explain_draws_each_frame_used_once_and_says_why_it_stopped(run, video_files, tmp_path):
    """--explain: a PNG per video (one file, or a folder for several and for --videos); its thumbnails are the frames
    used, each once, in the order first looked at; the stop line names the lookahead rule when it fired."""
    from PIL import Image

    from adaframe.report.explain import first_looks, plot_decision, stop_reason

    path = video_files / "videos" / "video00001.mp4"
    png = tmp_path / "one.png"
    adaframe("predict", str(path), "--checkpoint", str(run), "--explain", str(png), cwd=tmp_path)
    assert Image.open(png).size[0] > 400
    with Recognizer.from_run(run, mu=0.0, workers=0) as rec:
        [r] = rec.predict([path])
    revisit = replace(r, seconds=r.seconds + r.seconds[:1], steps=r.steps + 1, utilities=r.utilities + (0.0,),
                      step_top=r.step_top + r.step_top[:1])  # a frame looked at twice is shown once
    thumbs = [np.zeros((8, 8, 3), np.uint8)] * r.frames_used
    assert plot_decision(revisit, thumbs, 10.0, tmp_path / "r.png", 0.0, K) == list(range(r.frames_used)) == first_looks(revisit.seconds)
    with pytest.raises(AdaframeError, match="thumbnails for"):
        plot_decision(revisit, thumbs[:-1], 10.0, tmp_path / "r.png", 0.0, K)
    assert stop_reason([0.3, 0.5, 0.1], 0.2, K).startswith("stopped after step 3: the utility 0.100 fell 0.400 below its best")
    assert stop_reason([0.3, 0.5], None, 2) == "ran all K = 2 steps"
    folder = tmp_path / "pics"
    adaframe("predict", "--checkpoint", str(run), "--videos", str(video_files / "list.txt"), "--out", str(tmp_path / "c"),
             "--explain", str(folder), "--no-progress", cwd=tmp_path)
    listed = [Path(line.split()[0]).stem for line in (video_files / "list.txt").read_text().splitlines()]
    assert sorted(p.stem for p in folder.glob("*.png")) == sorted(listed)


def test_a_run_that_infers_by_the_scan_says_so_and_reads_the_scans_frames(extracted, video_files, tmp_path):
    """Where training found that the policy added nothing on val (``inference`` "scan"), predict reads the uniform scan's
    frames, as eval does, and says so in the method it prints."""
    from adaframe.evaluate.split import policy_indices
    from adaframe.models.kinds import load_checkpoint

    run = make_run(tmp_path / "run", extracted)
    model, payload = load_checkpoint(run)
    model.cfg.inference = "scan"
    save_checkpoint(run, model, "adaframe", payload["classes"], payload["config"], {"features": payload["features"]}, memory_frames=16)
    path = video_files / "videos" / "video00003.mp4"
    out = json.loads(adaframe("predict", "--checkpoint", str(run), str(path), "--json", "--mu", "0", cwd=tmp_path).stdout)
    assert out["method"].endswith("by the uniform scan (training found that its policy added nothing on val)")
    t = len(sample_times(probe(path).duration, 1.0))
    scan = policy_indices(torch.tensor([t]), K, "uniform")[0, : out["steps"]]
    assert out["frame_seconds"] == [float(i) for i in scan.tolist()]  # 1 fps grid: index = second
