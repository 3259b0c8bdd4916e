"""``adaframe eval`` against independent computations: mAP by scikit-learn, GFLOPs counted by hand, --patience by hand.

The runs are untrained models with lively heads (``conftest.lively``) saved as checkpoints: no training needed, and
their utilities rise and fall from step to step, so stop rules fire at varied steps.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from adaframe.data.features import FeatureDataset
from adaframe.evaluate.split import evaluate
from adaframe.models.kinds import build_model, load_checkpoint, save_checkpoint
from adaframe.rl.rollout import StopRule
from conftest import TINY_SYNTH, adaframe, default_agent, lively

D, DM, TD, C, H = TINY_SYNTH["dim"], TINY_SYNTH["memory_dim"], TINY_SYNTH["memory_frames"], TINY_SYNTH["classes"], 16
K = 6


def sklearn_map(scores: np.ndarray, labels: np.ndarray) -> float:
    """mAP in percent over the classes with a positive, by scikit-learn (not ``metrics``)."""
    return 100 * float(np.mean([average_precision_score(labels == c, scores[:, c]) for c in range(scores.shape[1])
                                if (labels == c).any()]))


@pytest.fixture(scope="module")
def runs(synth_dir, tmp_path_factory) -> dict[str, Path]:
    """An AdaFrame (the default agent: memory read by the policy, slots, the mixed prediction with the temporal
    classifier, positions, the prediction critic), an LSTM and an AvgPooling, untrained."""
    classes = FeatureDataset(synth_dir, "train").classes
    root = tmp_path_factory.mktemp("eval_runs")
    out = {}
    for kind in ("adaframe", "lstm", "avgpool"):
        dims = {"feature_dim": D, "memory_dim": DM, "num_classes": C, "hidden": H}
        if kind == "adaframe":
            dims.update(memory_frames=TD, **default_agent())
        torch.manual_seed(0)
        model = build_model(kind, dims)
        if kind == "adaframe":
            lively(model)
        out[kind] = root / kind
        save_checkpoint(out[kind], model, kind, classes, {"frames": K}, {"epoch": 1}, memory_frames=dims.get("memory_frames"))
    return out


def run_eval(run: Path, data: Path, tmp_path: Path, *extra: str) -> tuple[dict, list[dict]]:
    js, per_video = tmp_path / "r.json", tmp_path / "v.csv"
    adaframe("eval", "--checkpoint", str(run), "--data", str(data), "--split", "train", "--json", str(js),
             "--per-video", str(per_video), "--no-progress", *extra, cwd=tmp_path)
    with open(per_video, newline="") as f:
        return json.loads(js.read_text()), list(csv.DictReader(f))


def visited(rows: list[dict]) -> list[list[int]]:
    return [[int(v) for v in r["frames"].split()] for r in rows]


def head_macs(kind: str) -> int:
    """Multiply-adds of one step on top of the backbone, from the layer shapes (biases and element-wise ops are free)."""
    if kind == "avgpool":
        return D * C  # the frame classifier
    if kind == "lstm":
        return D * 4 * H + H * 4 * H + H * C
    cell = (D + 8) * 4 * H + H * 4 * H  # an LSTM cell reading a frame and its position (8 numbers)
    attention = H * DM + 2 * TD * DM  # query W_h h_t, scores, weighted sum
    slots = (H + DM) * DM + TD * DM + (H + DM) * 3  # slot query, slot scores, scan/back/forward
    temporal = K * cell + H * C  # the temporal classifier over the K frames it holds (an upper bound), and its head
    # + utility (state, context, the prediction's top two and the best margin) + prediction head + the pooled frame classifier
    return cell + attention + slots + (H + DM + 3) + H * C + D * C + temporal


# LSTM over 25 frames of 8-20-frame videos: uniform positions repeat, so distinct frames < steps
@pytest.mark.parametrize("kind, extra", [("adaframe", ("--mu", "0.3")), ("lstm", ("--frames", "25")), ("avgpool", ("--sampling", "all"))])
def test_eval_gflops_are_the_hand_count(runs, synth_dir, tmp_path, kind, extra):
    """GFLOPs per video = distinct frames x backbone + memory frames x memory network + steps x head (docs/design.md), with the
    head counted by hand from the layer shapes and the frames taken from the per-video paths."""
    r, rows = run_eval(runs[kind], synth_dir, tmp_path, *extra)
    paths = visited(rows)
    if kind == "avgpool":  # --sampling all: every frame of every video
        lengths = [np.load(synth_dir / "features" / f"{row['video_id']}.npy").shape[0] for row in rows]
        assert [len(p) for p in paths] == lengths
    memory = TD if kind == "adaframe" else 0  # the baselines read no memory
    head = head_macs(kind) / 1e9
    by_hand = [len(set(p)) * 7.82 + memory * 0.075 + len(p) * head for p in paths]  # the paper's defaults (no extract.json)
    assert r["gflops_per_video"] == pytest.approx(np.mean(by_hand), rel=1e-12, abs=0)
    # Without backbones the head alone is left: a miscount of the head is not lost next to 7.82 GFLOPs a frame.
    r0, _ = run_eval(runs[kind], synth_dir, tmp_path, *extra, "--backbone-gflops", "0", "--memory-gflops", "0")
    assert r0["gflops_per_video"] == pytest.approx(np.mean([len(p) for p in paths]) * head, rel=1e-9)
    if kind == "adaframe":
        assert len({len(p) for p in paths}) > 1  # the stop rule varied the cost
    if kind == "lstm":
        assert all(len(set(p)) < len(p) == 25 for p in paths)  # revisited frames are not paid twice


def stop_steps_by_hand(utilities: np.ndarray, mu: float, patience: int) -> list[int]:
    """Steps each video takes: it stops at the step where (best utility so far - utility > mu) happens the
    ``patience``-th time, else after all K steps."""
    steps = []
    for u in utilities:
        best, strikes, taken = -np.inf, 0, len(u)
        for t, value in enumerate(u):
            best = max(best, value)
            strikes += best - value > mu
            if strikes >= patience:
                taken = t + 1
                break
        steps.append(taken)
    return steps


def test_eval_patience_is_the_hand_rolled_stop(runs, synth_dir, tmp_path):
    """--patience 2 through eval: per video, the stop step the rule gives on the K-step utilities (a stop cuts the path,
    it does not change the steps before it), never earlier than --patience 1, and the summary is their mean."""
    model, payload = load_checkpoint(runs["adaframe"])
    dataset = FeatureDataset(synth_dir, "train", classes=payload["classes"], memory_frames=TD)
    full = evaluate(model, dataset, K)
    u = full.utilities.astype(np.float64)
    drops = np.unique(np.round((np.maximum.accumulate(u, axis=1) - u).ravel(), 6))
    drops = drops[drops > 0]
    mids = [(a + b) / 2 for a, b in zip(drops[:-1], drops[1:]) if b - a > 1e-4]  # no drop lies near mu
    # the threshold among them where patience matters most
    mu = max(map(float, mids), key=lambda m: sum(a != b for a, b in zip(stop_steps_by_hand(u, m, 1), stop_steps_by_hand(u, m, 2))))
    one, two = stop_steps_by_hand(u, mu, 1), stop_steps_by_hand(u, mu, 2)
    assert sum(a < b for a, b in zip(one, two)) >= 3 and min(one) < K

    got = {}
    for patience in (1, 2):
        r, rows = run_eval(runs["adaframe"], synth_dir, tmp_path, "--mu", repr(float(mu)), "--patience", str(patience))
        got[patience] = [int(row["stop_step"]) for row in rows]
        assert r["patience"] == patience and r["avg_steps"] == pytest.approx(np.mean(got[patience]))
        # the paths are the K-step paths cut at the stop
        assert visited(rows) == [list(full.visited[i, :s]) for i, s in enumerate(got[patience])]
        direct = evaluate(model, dataset, K, stop=StopRule("utility", mu, patience))  # the inference function itself
        assert r["mAP"] == pytest.approx(sklearn_map(direct.scores, direct.labels))
    assert got[1] == one and got[2] == two
    assert all(b >= a for a, b in zip(got[1], got[2]))


def test_eval_map_is_sklearns_on_the_models_scores(runs, synth_dir, tmp_path):
    """eval's mAP and top-1 against scikit-learn's AP and an argmax on the scores of the model run directly."""
    for kind, stop in (("adaframe", StopRule("utility", 0.3)), ("lstm", None)):
        r, _ = run_eval(runs[kind], synth_dir, tmp_path, *(["--mu", "0.3"] if stop else []))
        model, payload = load_checkpoint(runs[kind])
        dataset = FeatureDataset(synth_dir, "train", classes=payload["classes"], memory_frames=TD if stop else 0)
        res = evaluate(model, dataset, K, stop=stop)
        assert r["mAP"] == pytest.approx(sklearn_map(res.scores, res.labels), abs=1e-9)
        assert r["top1"] == pytest.approx(100 * np.mean(res.scores.argmax(1) == res.labels), abs=1e-9)
