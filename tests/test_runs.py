"""Experiments of many runs (runs.py) and the demo built on them: seeds, reuse, resume, parallel training, means."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adaframe.evaluate.metrics import CostModel
from adaframe.evaluate.run import Setting, evaluate_run
from adaframe.models.kinds import load_checkpoint
from adaframe.report.experiments import Evaluator, can_resume, is_finished, mean_std, pick_mu, seeded, train_missing
from adaframe.train.config import TrainConfig, train_config
from adaframe.train.loop import train
from conftest import adaframe


def tiny(data: Path, out: Path, model: str = "adaframe", **kw) -> TrainConfig:
    kw = {"epochs": 2, "frames": 3, "hidden": 16, "batch_size": 8, "progress": False, **kw}
    return train_config(data, out, model=model, **kw)


def test_seeded_gives_each_seed_its_own_run_directory(synth_dir, tmp_path):
    cfgs = seeded(tiny(synth_dir, tmp_path / "runs" / "adaframe-3", seed=4), 3)
    assert [c.seed for c in cfgs] == [4, 5, 6]
    assert [c.out for c in cfgs] == [tmp_path / "runs" / f"adaframe-3-s{s}" for s in (4, 5, 6)]
    assert all(c.frames == 3 and c.model == "adaframe" for c in cfgs)


def test_pick_mu_is_the_cheapest_setting_close_to_k_steps():
    fixed = {"mu": None, "mAP": 90.0, "avg_frames": 10.0}
    sweep = [{"mu": 0.1, "mAP": 80.0, "avg_frames": 3.0}, {"mu": 0.5, "mAP": 89.6, "avg_frames": 6.0},
             {"mu": 0.7, "mAP": 91.0, "avg_frames": 7.0}, {"mu": 0.9, "mAP": 89.6, "avg_frames": 6.0}]
    assert pick_mu(sweep, fixed)["mu"] == 0.5  # within 0.5 point: 0.5, 0.7, 0.9; fewest frames, then the more accurate
    assert pick_mu(sweep, fixed, tolerance=0.1)["mu"] == 0.7
    assert pick_mu(sweep[:1], fixed) is fixed  # none close enough: K steps


def test_mean_std_formats_seeds():
    assert mean_std({"mAP": 97.123, "mAP_std": 0.456}) == "97.12 ± 0.46"
    assert mean_std({"mAP": 97.123, "mAP_std": None}) == "97.12"
    assert mean_std({}, "top1") == "-"


@pytest.mark.slow  # worker processes, each importing torch: ~25 s
def test_train_missing_trains_in_parallel_reuses_and_resumes(synth_dir, tmp_path):
    runs = {c.out.name: c for c in seeded(tiny(synth_dir, tmp_path / "ada"), 2) + [tiny(synth_dir, tmp_path / "lstm", "lstm")]}
    logged: list[str] = []
    train_missing(runs, jobs=2, log=logged.append)
    assert all(is_finished(c) for c in runs.values())
    assert sum("in a worker process" in m for m in logged) == 3 and sum(m.startswith("(") and "trained" in m for m in logged) == 3
    # a worker trains what the main process trains: one thread each, the same seed
    seq = train(tiny(synth_dir, tmp_path / "sequential", seed=1))
    a, _ = load_checkpoint(runs["ada-s1"].out)
    b, _ = load_checkpoint(seq)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=name)

    logged.clear()
    train_missing(runs, jobs=2, log=logged.append)
    assert logged == [f"reusing the finished run {c.out}" for c in runs.values()]

    # a run stopped after 1 of 3 epochs continues from its state, not from scratch
    more = tiny(synth_dir, tmp_path / "stopped", epochs=3)
    train(tiny(synth_dir, tmp_path / "stopped", epochs=1))
    assert not is_finished(more) and can_resume(more)
    assert not can_resume(tiny(synth_dir, tmp_path / "stopped", epochs=3, frames=4))  # another run: trained again
    logged.clear()
    train_missing({"stopped": more}, log=logged.append)
    assert logged[0].startswith("resuming stopped")
    history = [json.loads(line) for line in (more.out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]


def test_evaluator_averages_the_seeds(synth_dir, tmp_path):
    plan = {"ada": seeded(tiny(synth_dir, tmp_path / "ada", epochs=1), 2)}
    train_missing({c.out.name: c for c in plan["ada"]})
    ev = Evaluator(plan, "val", "cpu", CostModel())
    row = ev("ada", 3)
    singles = [evaluate_run(c.out, synth_dir, "val", Setting(3, stop=None)) for c in plan["ada"]]
    assert row["seeds"] == 2 and row["mAP_per_seed"] == pytest.approx([r["mAP"] for r in singles])
    assert row["mAP"] == pytest.approx(sum(r["mAP"] for r in singles) / 2)
    assert row["mAP_std"] == pytest.approx(abs(singles[0]["mAP"] - singles[1]["mAP"]) / 2**0.5)
    assert row["avg_frames"] == pytest.approx(sum(r["avg_frames"] for r in singles) / 2)
    uniform = ev("ada", 3, policy="uniform")
    assert uniform["policy"] == "uniform" and uniform["mAP"] == pytest.approx(sum(r["uniform_mAP"] for r in singles) / 2)
    assert ev.get("ada", 3) is row  # evaluated once


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    """demo --quick with 2 seeds: every row of the table, the five checks decided on the numbers shown, then a rerun
    that only evaluates."""
    args = ["demo", "--quick", "--seeds", "2", "--out", str(tmp_path / "demo")]
    first = adaframe(*args, cwd=tmp_path, timeout=600)
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    rows = {(r["method"], r["setting"].split(" (")[0], r["frames"]): r for r in res["rows"]}
    for k in (4, 6, 11, 25):
        assert ("LSTM", "uniform", k) in rows and ("AvgPooling", "uniform", k) in rows
    assert ("AvgPooling", "all frames", None) in rows
    for k in (3, 5, 10):
        r = rows[("One-step sampler", "K slots", k)]
        assert r["model"] == "sampler" and r["learned_minus_uniform"] == pytest.approx(r["mAP"] - r["uniform_mAP"])
    for k in (3, 5, 10):
        r = rows[(f"AdaFrame-{k}", "K steps", k)]
        assert r["split"] == "test" and r["seeds"] == 2 and r["mAP_std"] is not None
        assert r["learned_minus_uniform"] == pytest.approx(r["mAP"] - r["uniform_mAP"])
    checks = {c["name"].split(" ")[0]: c for c in res["checks"]}
    assert len(res["checks"]) == 5
    best = {k: max(rows[("LSTM", "uniform", k + 1)]["mAP"], rows[("AvgPooling", "uniform", k + 1)]["mAP"],
                   rows[("One-step sampler", "K slots", k)]["mAP"]) for k in (3, 5, 10)}
    assert res["checks"][0]["passed"] == all(rows[(f"AdaFrame-{k}", "K steps", k)]["mAP"] >= best[k] for k in (3, 5, 10))
    assert res["checks"][4]["passed"] == all(rows[("One-step sampler", "K slots", k)]["learned_minus_uniform"] > 0 for k in (3, 5))
    gain = rows[("AdaFrame-10", "K steps", 10)]["learned_minus_uniform"]
    assert res["checks"][2]["passed"] == (gain >= 3.0)
    assert res["checks"][3]["passed"] == (rows[("AdaFrame-10", "K steps", 10)]["mAP_std"] <= 1.5)
    mu = res["mu_star"]  # the adaptive row the second check reads, and the LSTM-U25 / all-frames row it compares with
    adaptive = rows[("AdaFrame-10", "K steps" if mu is None else f"adaptive mu={mu:g}", 10)]
    dense = max(rows[("LSTM", "uniform", 25)]["mAP"], rows[("AvgPooling", "all frames", None)]["mAP"])
    assert res["checks"][1]["passed"] == (adaptive["mAP"] >= dense - 0.5 and adaptive["avg_frames"] <= 10)
    assert checks and (tmp_path / "demo" / "map_vs_gflops.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "demo" / "table.md").read_text()
    assert "LSTM" in table and " ± " in table and "mu chosen on val" in table
    for c in res["checks"]:  # each check printed with the verdict its numbers give
        assert f"{ {True: 'PASS', False: 'FAIL', None: 'SKIP'}[c['passed']]}  {c['name']}: {c['detail']}" in first.stdout
    second = adaframe(*args, cwd=tmp_path, timeout=600)
    assert second.stdout.count("reusing the finished run") + second.stderr.count("reusing the finished run") == 22
    assert json.loads((tmp_path / "demo" / "results.json").read_text())["rows"] == res["rows"]


@pytest.mark.slow
def test_demo_on_a_data_set_of_ones_own(synth_dir, tmp_path):
    """demo --data runs the same comparison on a given feature data set, writing nothing into it."""
    before = sorted(p.name for p in synth_dir.rglob("*"))
    adaframe("demo", "--quick", "--data", str(synth_dir), "--out", str(tmp_path / "demo"), cwd=tmp_path, timeout=600)
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert res["data"] == str(synth_dir) and res["synth"] is None and not (tmp_path / "demo" / "data").exists()
    assert {c["data"] for cfgs in res["train"].values() for c in cfgs} == {str(synth_dir)}
    assert len(res["checks"]) == 5 and f"{synth_dir.name} test split" in (tmp_path / "demo" / "table.md").read_text()
    assert sorted(p.name for p in synth_dir.rglob("*")) == before
