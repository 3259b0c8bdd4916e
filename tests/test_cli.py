"""The ``adaframe`` command line end to end: synth -> train -> eval, and bad input.

Commands run in-process (``conftest.adaframe``); the two entry points themselves run once each as real processes.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from adaframe.models.kinds import load_checkpoint
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
    trained = adaframe("train", "--data", str(data), "--out", str(run), "--model", model, *TRAIN, cwd=tmp_path)
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl"):
        assert (run / name).is_file(), name
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2
    # the frame classifier's L2 penalty, picked on val, is said and saved with the weights
    key = "frames_penalty" if model == "avgpool" else f"pooled_{history[-1]['pooled_by']}_penalty"
    loaded = load_checkpoint(run)[0]
    classifier = loaded.head if model == "avgpool" else loaded.frame_classifier()
    assert classifier.picked_penalty == pytest.approx(history[-1][key])
    said = f"L2 penalty, picked on val: {history[-1][key]:g} " if model == "avgpool" else f"with L2 penalty {history[-1][key]:g}"
    assert said in trained.stdout, trained.stdout

    def evaluate(*extra: str) -> dict:
        out = tmp_path / f"eval_{len(extra)}.json"
        adaframe("eval", "--checkpoint", str(run), "--data", str(data), "--json", str(out), "--no-progress", *extra, cwd=tmp_path)
        r = json.loads(out.read_text())
        for key in ("mAP", "top1", "avg_frames", "gflops_per_video", "num_videos"):
            assert key in r, key
        assert r["num_videos"] == n_val
        assert r["mAP"] == pytest.approx(independent_map(run, data, extra), abs=1e-9)
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
        check_policies(tmp_path, run, data, fixed, evaluate)
    else:
        # --mu and --policy are the agents'; asking them of a baseline is a user error
        for flag in (["--mu", "0.7"], ["--policy", "uniform"]):
            bad = adaframe("eval", "--checkpoint", str(run), "--data", str(data), *flag, "--no-progress", cwd=tmp_path, check=False)
            assert bad.returncode == 2 and "Traceback" not in bad.stderr + bad.stdout and bad.stderr.count("\n") == 1, bad.stderr


def independent_map(run: Path, data: Path, extra: tuple[str, ...]) -> float:
    """The val mAP of the run under eval's flags ``extra``: the model run by ``inference.evaluate``, AP by scikit-learn."""
    from adaframe.models.kinds import load_checkpoint
    from adaframe.data.features import FeatureDataset
    from adaframe.evaluate.split import evaluate
    from adaframe.rl.rollout import StopRule

    flags = dict(zip(extra[::2], extra[1::2]))
    model, payload = load_checkpoint(run)
    agent = payload["kind"] == "adaframe"
    val = FeatureDataset(data, "val", classes=payload["classes"], memory_frames=None if agent else 0)
    stop = StopRule("utility", float(flags["--mu"])) if "--mu" in flags else None
    res = evaluate(model, val, payload["config"]["frames"], stop=stop, policy=flags.get("--policy", "learned"),
                   seed=int(flags.get("--seed", 0)))
    aps = [average_precision_score(res.labels == c, res.scores[:, c]) for c in range(res.scores.shape[1]) if (res.labels == c).any()]
    return 100 * float(np.mean(aps))


def check_policies(tmp_path, run, data, learned: dict, evaluate) -> None:
    """--policy: the same network on uniform or random positions; the learned policy reports what it adds, and on data
    with evidence.csv how often each looked at an evidence frame."""
    import torch

    from adaframe.data.features import read_evidence, read_videos_csv
    from adaframe.evaluate.split import policy_indices

    per_video = tmp_path / "uniform.csv"
    uniform = evaluate("--policy", "uniform", "--per-video", str(per_video))
    assert learned["policy"] == "learned" and uniform["policy"] == "uniform"
    assert learned["uniform_mAP"] == pytest.approx(uniform["mAP"])
    assert learned["learned_minus_uniform"] == pytest.approx(learned["mAP"] - uniform["mAP"])
    assert "learned_minus_uniform" not in uniform
    # the uniform policy looked at the K uniform positions in the scan's order
    with open(per_video, newline="") as f:
        visited = [[int(v) for v in row["frames"].split()] for row in csv.DictReader(f)]
    val = [r.video_id for r in read_videos_csv(data) if r.split == "val"]
    lengths = torch.tensor([np.load(data / "features" / f"{v}.npy").shape[0] for v in val])
    assert visited == policy_indices(lengths, 3, "uniform").tolist()
    # evidence: the share of videos with a visited frame in [start, start + frames), by hand
    evidence = read_evidence(data, val)
    hits = [any(s <= f < s + n for f in frames) for frames, (s, n) in zip(visited, evidence.tolist())]
    assert uniform["evidence_hit"] == pytest.approx(np.mean(hits)) == pytest.approx(uniform["evidence_hit_uniform"])
    assert learned["evidence_hit_uniform"] == pytest.approx(np.mean(hits)) and 0 <= learned["evidence_hit"] <= 1
    random1, random2, random3 = evaluate("--policy", "random"), evaluate("--policy", "random"), evaluate("--policy", "random", "--seed", "5")
    assert random1["policy"] == "random" and random1["mAP"] == random2["mAP"]
    assert random1["evidence_hit"] != random3["evidence_hit"] or random1["mAP"] != random3["mAP"]  # another draw
    for bad in (["--policy", "best"], ["--policy", "uniform", "--sampling", "random"]):
        proc = adaframe("eval", "--checkpoint", str(run), "--data", str(data), *bad, "--no-progress", cwd=tmp_path, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", ["train", "eval"])
def test_cli_missing_path_is_the_readme_line(tmp_path, command):
    """docs/bad-input.md, 'Path that does not exist': data directory nope does not exist / no checkpoint at nope."""
    missing = tmp_path / "no_such_data"
    if command == "train":
        args = ["train", "--data", str(missing), "--out", str(tmp_path / "run"), "--no-progress"]
        want = f"adaframe: error: data directory {missing} does not exist"
    else:
        args = ["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(missing), "--no-progress"]
        want = f"adaframe: error: no checkpoint at {tmp_path / 'run'}"
    proc = adaframe(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [want]


def test_python_dash_m_entry_point(tmp_path):
    """``python -m adaframe`` as a real process runs a command (the other tests call ``cli.main`` in-process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ADAFRAME_DEBUG", None)
    ok = subprocess.run([sys.executable, "-m", "adaframe", "synth", *SYNTH, "--out", "data"], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("wrote 60 videos to data (") and len((tmp_path / "data" / "videos.csv").read_text().splitlines()) == 61


def test_console_script_entry_point(tmp_path):
    """The installed ``adaframe`` script as a real process: a user error is exactly one line on stderr, status 2
    (nothing else a fresh process might print at import or exit, which in-process runs would not see)."""
    script = Path(sys.executable).parent / "adaframe"
    if not script.is_file():
        pytest.skip(f"no console script beside {sys.executable} (package not installed in this environment)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ADAFRAME_DEBUG", None)
    bad = subprocess.run([str(script), "eval", "--checkpoint", "nope", "--data", "data"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert (bad.returncode, bad.stdout, bad.stderr) == (2, "", "adaframe: error: no checkpoint at nope\n")


def test_help_lists_the_commands(tmp_path):
    proc = adaframe("--help", cwd=tmp_path)
    assert proc.stdout.startswith("usage: adaframe [-h] {synth,train,eval,demo,report,check,benchmark,synth-video,extract,predict,export,"
                                  "video-demo,probe}")


def test_debug_flag_shows_the_traceback(tmp_path, monkeypatch):
    args = ["train", "--data", str(tmp_path / "no_such_data"), "--out", str(tmp_path / "run"), "--no-progress"]
    quiet = adaframe(*args, cwd=tmp_path, check=False)
    loud = adaframe(*args[:1], "--debug", *args[1:], cwd=tmp_path, check=False)
    assert quiet.returncode != 0 and loud.returncode != 0
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr and "AdaframeError" in loud.stderr and "no_such_data" in loud.stderr
    # ADAFRAME_DEBUG=1 does what --debug does: the error is raised, not printed as one line
    from adaframe.cli import main
    from adaframe.utils import AdaframeError

    monkeypatch.setenv("ADAFRAME_DEBUG", "1")
    with pytest.raises(AdaframeError, match="no_such_data does not exist"):
        main(args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny data set with AdaFrame and FastForward-G runs, made through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    adaframe("synth", *SYNTH, "--out", str(data), cwd=root)
    for model in ("adaframe", "fastforward-g"):
        adaframe("train", "--data", str(data), "--out", str(root / model), "--model", model, *TRAIN, cwd=root)
    return root, data


def test_eval_per_video_csv(trained):
    root, data = trained
    out, js = root / "per_video.csv", root / "r.json"
    adaframe("eval", "--checkpoint", str(root / "adaframe"), "--data", str(data), "--mu", "0.05", "--per-video", str(out),
             "--json", str(js), "--no-progress", cwd=root)
    summary = json.loads(js.read_text())
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(data / "videos.csv", newline="") as f:
        val = [r for r in csv.DictReader(f) if r["split"] == "val"]
    assert [r["video_id"] for r in rows] == [v["video_id"] for v in val]
    assert [r["label"] for r in rows] == [v["label"] for v in val]
    steps = [int(r["stop_step"]) for r in rows]
    assert all(1 <= s <= 3 for s in steps)
    assert np.mean(steps) == pytest.approx(summary["avg_steps"])
    assert np.mean([int(r["distinct_frames"]) for r in rows]) == pytest.approx(summary["avg_frames"])
    assert np.mean([int(r["correct"]) for r in rows]) * 100 == pytest.approx(summary["top1"])
    for r in rows:
        frames = [int(v) for v in r["frames"].split()]
        assert len(frames) == int(r["stop_step"]) == len(r["utilities"].split())
        assert len(set(frames)) == int(r["distinct_frames"])
        assert int(r["correct"]) == (r["predicted"] == r["label"]) and 0 < float(r["confidence"]) <= 1


def test_eval_stop_agent_flags(trained):
    root, data = trained
    run = str(root / "fastforward-g")

    def evaluate(*extra: str) -> dict:
        js = root / "ff.json"
        adaframe("eval", "--checkpoint", run, "--data", str(data), "--json", str(js), "--no-progress", *extra, cwd=root)
        return json.loads(js.read_text())

    default, never, always = evaluate(), evaluate("--stop-threshold", "1.5"), evaluate("--stop-threshold", "0")
    assert default["stop"] == "learned" and default["threshold"] == 0.5
    assert never["avg_steps"] == 3 and always["avg_steps"] == 1
    assert always["avg_steps"] <= default["avg_steps"] <= never["avg_steps"]
    assert default["backward_jumps"] == 0.0  # FastForward only moves forward
    for bad in (["--mu", "0.5", "--entropy", "0.1"], ["--patience", "2"], ["--sampling", "random"]):
        proc = adaframe("eval", "--checkpoint", run, "--data", str(data), "--no-progress", *bad, cwd=root, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    proc = adaframe("eval", "--checkpoint", str(root / "adaframe"), "--data", str(data), "--stop-threshold", "0.5",
                    "--no-progress", cwd=root, check=False)
    assert proc.returncode == 2 and "stop head" in proc.stderr


@pytest.mark.slow
def test_report_end_to_end(tmp_path):
    """The whole report on a tiny set (1 epoch each, 2 seeds, 2 runs at a time): every table and figure, mu* chosen
    on val and numbers on test, then a rerun that only evaluates."""
    data = tmp_path / "data"
    adaframe("synth", *SYNTH, "--memory-frames", "20", "--out", str(data), cwd=tmp_path)
    out = tmp_path / "report"
    args = ["report", "--data", str(data), "--out", str(out), "--epochs", "1", "--hidden", "8", "--seeds", "2", "--jobs", "2",
            "--no-progress"]
    adaframe(*args, cwd=tmp_path, timeout=900)
    text = (out / "report.md").read_text()
    for heading in ("Table 1", "What makes the policy work", "Figure 3", "Table 2", "Table 3", "entropy", "Figure 4",
                    "Figure 5", "Backward jumps", "learned minus uniform policy", "AdaFrame, uniform policy",
                    "One-step sampler, K slots", "One-step sampler's classifier, uniform",
                    "prediction by the LSTM's head alone", "prediction by the pooled frame classifier alone",
                    "AvgPooling, k-center", "LSTM, motion-guided", "always by its policy", "no temporal-order classifier",
                    "does not read where each frame is", "trained on every frame only", "reads the state alone",
                    "not refit on the val split"):
        assert heading in text, heading
    assert "chosen on the val split" in text and " ± " in text
    # 32 memory frames cannot be had from 20 stored: the row says so instead of failing
    assert "the data stores 20 memory frames" in text
    for png in ("fig3_map_vs_gflops.png", "fig4_stop_steps.png", "fig5_class_stops.png", "stop_utility_vs_entropy.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"]({png})" in text
    results = json.loads((out / "results.json").read_text())
    runs = set(results["runs"])
    assert {"avgpool", "adaframe-3", "adaframe-5", "adaframe-10", "adaframe-10-memory0", "adaframe-10-memory12",
            "adaframe-10-memory16", "adaframe-10-prediction", "adaframe-10-transition", "adaframe-10-memread-lstm",
            "adaframe-10-gaussian", "adaframe-10-pred-lstm", "adaframe-10-pred-pooled", "adaframe-10-paper-agent",
            "adaframe-10-no-temporal", "adaframe-10-no-positions", "adaframe-10-frames-every", "adaframe-10-critic-state",
            "adaframe-10-critic-as-trained",
            "sampler-3", "sampler-5", "sampler-10", "frameglimpse", "frameglimpse-g", "fastforward", "fastforward-g"} <= runs and "adaframe-10-memory32" not in runs and "adaframe-10-memory20" not in runs
    for name, cfgs in results["runs"].items():  # two seeds each, in their own directories
        assert [c["seed"] for c in cfgs] == [0, 1]
        assert all((out / "runs" / f"{name}-s{seed}" / "checkpoint.pt").is_file() for seed in (0, 1))
    options = ("memory_read", "selection", "prediction", "temporal", "positions", "critic")
    settings = lambda run: tuple(run["model_options"][o] for o in options) + (run["policy_check"], run["calibrate_critic"])  # noqa: E731
    assert settings(results["runs"]["adaframe-10-paper-agent"][0]) == ("lstm", "gaussian", "lstm", False, False, "state", False, False)
    assert settings(results["runs"]["adaframe-10"][0]) == ("policy", "slots", "mix", True, True, "prediction", True, True)
    models = {r["model"] for r in results["rows"]}
    assert models == {"avgpool", "lstm", "sampler", "adaframe", "frameglimpse", "frameglimpse-g", "fastforward", "fastforward-g"}
    assert {r["split"] for r in results["rows"]} == {"test"} and {r["split"] for r in results["val_rows"]} == {"val"}
    for r in results["rows"]:  # each row averages its two seeds
        assert r["seeds"] == 2 and len(r["mAP_per_seed"]) == 2
        assert r["mAP"] == pytest.approx(sum(r["mAP_per_seed"]) / 2)
        assert r["mAP_std"] == pytest.approx(abs(r["mAP_per_seed"][0] - r["mAP_per_seed"][1]) / 2**0.5)
    # mu* is the cheapest val setting within the tolerance of K steps on val (else K steps)
    val = {(r["run"], r["mu"]): r for r in results["val_rows"] if r["run"] == "adaframe-10" and r["policy"] == "learned"
           and r["stop"] in (None, "utility")}
    good = [r for (_, mu), r in val.items() if mu is not None and r["mAP"] >= val[("adaframe-10", None)]["mAP"] - 0.5]
    want = min(good, key=lambda r: (r["avg_frames"], -r["mAP"]))["mu"] if good else None
    assert results["mu_star"]["adaframe-10"] == want
    # the rerun reuses every run and writes the same numbers
    second = adaframe(*args, cwd=tmp_path, timeout=900)
    assert second.stdout.count("reusing") + second.stderr.count("reusing") == 2 * len(runs)
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]


def test_report_refuses_data_without_memory(tmp_path, make_dataset):
    from conftest import random_videos

    videos = random_videos(6, memory=(0, 4)) + random_videos(3, memory=(0, 4), seed=1, split="val")
    for i, v in enumerate(videos):
        v["video_id"] = f"v{i}"
        v["memory"] = None
    make_dataset(tmp_path / "d", videos)
    proc = adaframe("report", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "memory" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_report_paper_preset_smoke(tmp_path):
    """--preset paper trains every run with the paper's optimiser (SGD) and still writes the whole report."""
    data = tmp_path / "data"
    adaframe("synth", *SYNTH, "--memory-frames", "16", "--out", str(data), cwd=tmp_path)
    out = tmp_path / "report"
    adaframe("report", "--data", str(data), "--out", str(out), "--preset", "paper", "--split", "test", "--epochs", "1",
             "--hidden", "8", "--seeds", "1", "--no-progress", cwd=tmp_path, timeout=600)
    results = json.loads((out / "results.json").read_text())
    assert results["split"] == "test" and results["preset"]["train_preset"] == "paper"
    assert {c["preset"] for cfgs in results["runs"].values() for c in cfgs} == {"paper"}
    agents = [c for cfgs in results["runs"].values() for c in cfgs if c["model"] == "adaframe"]
    assert agents and {(c["model_options"]["memory_read"], c["model_options"]["selection"], c["model_options"]["prediction"]) for c in agents} == {("lstm", "gaussian", "lstm")}  # the paper's agent
    assert not any(name.endswith("paper-agent") for name in results["runs"])
    assert {r["split"] for r in results["rows"]} == {"test"}
    assert "(paper preset)" in (out / "report.md").read_text()


def _mkdir_error(path: str) -> str:
    """What the system says to mkdir ``path`` (``/sys``: EPERM as root, EACCES otherwise)."""
    try:
        os.mkdir(path)
    except OSError as e:
        return e.strerror
    os.rmdir(path)
    pytest.skip(f"{path} can be created here")


@pytest.mark.parametrize("out, want", [
    ("under_a_file/run", "under_a_file: a file is in the way, not a directory"),
    ("/proc/adaframe-cannot-write-here", f"/proc/adaframe-cannot-write-here: {os.strerror(errno.ENOENT)}"),
    ("/sys/adaframe-cannot-write-here", None),
])
def test_unwritable_output_is_the_readme_line(synth_dir, tmp_path, out, want):
    """docs/bad-input.md: 'A file where a folder is expected' and 'No write permission' (/sys/x: Operation not permitted,
    /proc/x: No such file or directory), for train --out."""
    want = want or f"{out}: {_mkdir_error(out)}"
    (tmp_path / "under_a_file").write_text("a file, not a directory")
    proc = adaframe("train", "--data", str(synth_dir), "--out", out, *TRAIN, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [f"adaframe: error: {want}"], proc.stderr


def test_an_error_in_a_dataloader_worker_is_still_one_line(tmp_path):
    """torch re-raises a worker's exception with the worker's traceback in its message; the user sees the message."""
    data = tmp_path / "data"
    adaframe("synth", *SYNTH, "--out", str(data), cwd=tmp_path)
    train_id = next(line.split(",")[0] for line in (data / "videos.csv").read_text().splitlines()[1:] if ",train" in line)
    path = data / "features" / f"{train_id}.npy"
    features = np.load(path)
    features[0, 0] = np.nan
    np.save(path, features)
    proc = adaframe("train", "--data", str(data), "--out", str(tmp_path / "run"), *TRAIN, "--workers", "1", "--no-standardize",
                    cwd=tmp_path, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == f"adaframe: error: video {train_id!r}: {path} contains NaN or inf"


@pytest.mark.parametrize("flag", ["--json", "--per-video"])
@pytest.mark.parametrize("where, want", [
    ("/proc/adaframe/r.out", f"/proc/adaframe: {os.strerror(errno.ENOENT)}"),  # the system's words after the path
    ("/proc/r.out", f"/proc/r.out: {os.strerror(errno.ENOENT)}"),
    ("under_a_file/r.out", "under_a_file: a file is in the way, not a directory"),
    ("a_dir", "a_dir: is a directory"),
])
def test_an_unwritable_eval_output_fails_before_evaluating(trained, tmp_path, flag, where, want):
    """docs/bad-input.md: 'R: is a directory' (for --json R), 'No write permission' (eval checks --json / --per-video
    before evaluating)."""
    root, data = trained
    (tmp_path / "under_a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    proc = adaframe("eval", "--checkpoint", str(root / "adaframe"), "--data", str(data), flag, where, "--no-progress",
                    cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.splitlines() == [f"adaframe: error: {want}"], proc.stderr
    assert proc.stdout == ""  # nothing was evaluated (and lost)
