"""``adaframe check``: AdaFrame against the best baseline at equal frames, on many data sets at once.

Trains, on every data set it is given (and, with ``--bench``, on the twelve that ``../shared/bench`` and ``adaframe
synth`` write), AdaFrame-K, AvgPooling, an LSTM over K frames and the one-step sampler, and reports on the test split:

* AdaFrame-K with K steps (what inference uses by default), with adaptive lookahead (``--mu``), and its own network
  on a uniform scan;
* every baseline at K frames: AvgPooling and the LSTM over K uniform frames and over the K frames of each
  training-free selector (``models.selectors``), the one-step sampler; AvgPooling over all frames beside them;
* two logistic regressions (scikit-learn) over the same K uniform frames: on single frames, read as AvgPooling reads
  them (a check that AvgPooling learned what its linear classifier can), and on the mean of the K frames;
* per set, the best baseline at K frames and AdaFrame's margin over it, and what the policy adds over the scan.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader
from tqdm import tqdm

from adaframe.data.features import FeatureDataset, collate, sample_indices
from adaframe.data.synth import SynthConfig, generate
from adaframe.evaluate.metrics import CostModel, mean_average_precision
from adaframe.evaluate.run import load_run
from adaframe.evaluate.split import agent_batch
from adaframe.models.kinds import ModelOptions
from adaframe.report.experiments import Evaluator, Plan, mean_std, seeded, train_missing
from adaframe.report.tables import format_table, markdown_table
from adaframe.rl.rollout import StopRule
from adaframe.train.config import TrainConfig, train_config
from adaframe.utils import AdaframeError, atomic_write, resolve_device, write_json

BENCH_SETS = {  # name -> the script of ../shared/bench and its arguments (None: ``adaframe synth``'s default)
    **{f"family-{s}": ("family.py", ["--seed", str(s)]) for s in range(1, 9)},
    "synth": None, "shots": ("shots_features.py", []), "scenes": ("scenes_features.py", []), "evidence": ("evidence_features.py", []),
}
LR_C = (0.01, 0.1, 1.0, 10.0)
"""the logistic regression's inverse regularisation strengths, one chosen on val"""


@dataclass
class CheckConfig:
    """Train and compare AdaFrame with every baseline at equal frames on many feature data sets (test split)."""

    data: tuple[Path, ...] = ()
    """feature data sets to check on (each named by its folder)"""
    bench: Path | None = None
    """../shared/bench: also check on its twelve sets (family seeds 1-8, synth, shots, scenes, evidence), written to
    OUT/data where missing"""
    only: tuple[str, ...] = ()
    """check only the sets of these names"""
    out: Path = Path("runs/check")
    frames: int = 10
    """K: AdaFrame's steps and every baseline's frames"""
    mu: float = 0.7
    """AdaFrame's adaptive-lookahead threshold for the adaptive row"""
    hidden: int = 256
    """LSTM size of AdaFrame and the LSTM baseline (and the sampler's policy width)"""
    seeds: int = 1
    """train every model this many times (seeds 0, 1, ...); tables show the mean ± std"""
    jobs: int = 2
    """runs trained at a time, each in a worker process of one thread"""
    adaframe: tuple[str, ...] = field(default_factory=tuple)
    """extra 'adaframe train' options for AdaFrame, as NAME=VALUE (e.g. prediction=lstm); the runs go to their own folders"""
    device: Literal["cpu", "cuda"] = "cpu"

    def __post_init__(self) -> None:
        if self.frames < 1 or self.seeds < 1 or self.jobs < 1 or self.hidden < 1:
            raise AdaframeError("--frames, --seeds, --jobs and --hidden must be >= 1")
        if not self.data and self.bench is None:
            raise AdaframeError("nothing to check: give data sets (--data DIR ...) or ../shared/bench (--bench DIR)")
        for option in self.adaframe:
            if "=" not in option:
                raise AdaframeError(f"--adaframe {option!r}: expected NAME=VALUE, e.g. prediction=lstm")


def bench_set(bench: Path, name: str, out: Path) -> Path:
    """Data set ``name`` of the bench in ``out/name``, written (to a temporary folder, then renamed) if missing."""
    path = out / name
    if (path / "videos.csv").is_file():
        return path
    tmp = out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    how = BENCH_SETS[name]
    tqdm.write(f"writing the data set {name} to {path}")
    if how is None:
        generate(SynthConfig(), tmp, progress=False)
    else:
        script = bench / how[0]
        if not script.is_file():
            raise AdaframeError(f"--bench {bench}: no {how[0]} there (expected ../shared/bench)")
        done = subprocess.run([sys.executable, str(script), str(tmp), *how[1]], capture_output=True, text=True)
        if done.returncode:
            raise AdaframeError(f"{script} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    tmp.rename(path)
    return path


def adaframe_options(options: tuple[str, ...]) -> dict[str, object]:
    """``("prediction=lstm", "scan_bias=1")`` -> ``train_config`` keyword values (``-`` or ``_`` in names)."""
    fields = {**TrainConfig.__dataclass_fields__, **ModelOptions.__dataclass_fields__}
    values: dict[str, object] = {}
    for option in options:
        name, value = option.split("=", 1)
        name = name.strip().lstrip("-").replace("-", "_")
        if name not in fields:
            raise AdaframeError(f"--adaframe {option!r}: 'adaframe train' has no option {name!r}")
        values[name] = {"true": True, "false": False}.get(value.lower(), value)
        kind = str(fields[name].type)
        if values[name] == value and ("float" in kind or "int" in kind) and "Literal" not in kind:
            values[name] = float(value) if "float" in kind else int(value)
    return values


def plan_runs(sets: dict[str, Path], cfg: CheckConfig) -> Plan:
    """Per set: AdaFrame-K, AvgPooling (trained on every frame), LSTM-K and the one-step sampler with K."""
    extra = adaframe_options(cfg.adaframe)
    tag = "-".join(f"{k}={v}" for k, v in extra.items())
    plan: Plan = {}
    for name, data in sets.items():
        runs = cfg.out / "runs" / name

        def run(model: str, folder: str, **more: object) -> list[TrainConfig]:
            return seeded(train_config(data, runs / folder, model=model, frames=cfg.frames, hidden=cfg.hidden,
                                       device=cfg.device, **more), cfg.seeds)

        plan[f"{name}/adaframe"] = run("adaframe", f"adaframe-{cfg.frames}" + (f"-{tag}" if tag else ""), **extra)
        plan[f"{name}/avgpool"] = run("avgpool", "avgpool")
        plan[f"{name}/lstm"] = run("lstm", f"lstm-{cfg.frames}")
        plan[f"{name}/sampler"] = run("sampler", f"sampler-{cfg.frames}")
    return plan


LR_FRAMES = 30000
"""training frames (evenly spaced over the split) the frame-level logistic regression learns from"""


def logistic_probes(data: Path, k: int) -> dict[str, float]:
    """Test mAP of two scikit-learn logistic regressions over K uniform frames, on standardised features, C chosen on val:
    ``mean``, on the mean of the K frames (a video-level linear classifier); ``frames``, on single frames (every
    training frame an example, AvgPooling's model), read as AvgPooling reads them (the mean of the K frames' softmaxes).
    The second is what AvgPooling would reach if its training converged; the first is another model."""
    splits = {"train": FeatureDataset(data, "train", memory_frames=0)}
    classes = splits["train"].classes
    splits.update({s: FeatureDataset(data, s, classes=classes, memory_frames=0) for s in ("val", "test")})
    picked = {s: [ds[i]["features"][idx] for i, idx in enumerate(sample_indices(torch.from_numpy(ds.lengths), k, "uniform").numpy())]
              for s, ds in splits.items()}  # split -> [N] of [K, D]
    train = splits["train"]

    def scores(model: LogisticRegression, x: np.ndarray) -> np.ndarray:  # [..., C] in the data set's class order
        out = np.zeros((*x.shape[:-1], len(classes)))
        out[..., model.classes_] = model.predict_proba(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
        return out

    def best(x: np.ndarray, y: np.ndarray, read: Callable[[LogisticRegression, str], np.ndarray]) -> float:
        fits = {c: LogisticRegression(C=c, max_iter=500).fit(x, y) for c in LR_C}
        chosen = max(LR_C, key=lambda c: mean_average_precision(read(fits[c], "val"), splits["val"].labels))
        return 100 * mean_average_precision(read(fits[chosen], "test"), splits["test"].labels)

    means = {s: np.stack([f.mean(0) for f in frames]) for s, frames in picked.items()}  # [N, D]
    scaler = StandardScaler().fit(means["train"])
    out = {"mean": best(scaler.transform(means["train"]), train.labels,
                        lambda m, s: scores(m, scaler.transform(means[s])))}
    every = np.concatenate([train[i]["features"] for i in range(len(train))])  # [frames, D]
    labels = np.repeat(train.labels, train.lengths)
    keep = np.linspace(0, len(every) - 1, min(len(every), LR_FRAMES)).astype(int)
    scaler = StandardScaler().fit(every[keep])
    out["frames"] = best(scaler.transform(every[keep]), labels[keep],
                         lambda m, s: scores(m, scaler.transform(np.stack(picked[s]).reshape(-1, train.feature_dim)).reshape(
                             len(picked[s]), k, -1)).mean(1))
    return out


BASELINES = ("AvgPooling-U", "LSTM-U", "sampler", "AvgPooling-kcenter", "LSTM-kcenter", "AvgPooling-motion", "LSTM-motion",
             "AdaFrame's own scan")
"""the baselines at K frames, of which the best is AdaFrame's bar"""


@torch.no_grad()
def pooled_uniform(plan: Plan, name: str, k: int, device: str) -> float | None:
    """Test mAP of AdaFrame's pooled prediction alone over K uniform frames (mean over seeds; None: it has none)."""
    maps = []
    for cfg in plan[f"{name}/adaframe"]:
        model, _, dataset = load_run(cfg.out, cfg.data, "test", device)
        if model.frame_head is None:
            return None
        scores, labels = [], []
        for batch in DataLoader(dataset, batch_size=128, collate_fn=collate):
            batch = batch.to(device)
            scores.append(agent_batch(model, batch, k, policy="uniform").parts[:, -1, 0].softmax(-1).cpu())  # type: ignore[union-attr]
            labels.append(batch.labels.cpu())
        maps.append(100 * mean_average_precision(torch.cat(scores).numpy(), torch.cat(labels).numpy()))
    return float(np.mean(maps))


def set_row(name: str, test: Evaluator, k: int, mu: float) -> dict:
    """Every number of one set (test means over seeds)."""
    ada = test(f"{name}/adaframe", k)
    row = {
        "set": name, "AdaFrame": ada, "adaptive": test(f"{name}/adaframe", k, stop=StopRule("utility", mu)),
        "AdaFrame's own scan": test(f"{name}/adaframe", k, policy="uniform"),
        "policy": test(f"{name}/adaframe", k, policy="policy"),  # its policy even where training chose the scan
        "AvgPooling-all": test(f"{name}/avgpool", None, "all"),
        "sampler": test(f"{name}/sampler", k),
    }
    for sampling, tag in (("uniform", "U"), ("kcenter", "kcenter"), ("motion", "motion")):
        row[f"AvgPooling-{tag}"] = test(f"{name}/avgpool", k, sampling)
        row[f"LSTM-{tag}"] = test(f"{name}/lstm", k, sampling)
    best = max(BASELINES, key=lambda b: row[b]["mAP"])
    row.update(best=best, margin=ada["mAP"] - row[best]["mAP"], policy_gain=row["policy"]["mAP"] - row["AdaFrame's own scan"]["mAP"])
    return row


HEADER = ["set", "AdaFrame", "mu (frames)", "own scan", "its pooled U", "AvgPool U/all", "LR-U mean/frames", "LSTM-U", "sampler",
          "k-center AP/LSTM", "motion AP/LSTM", "best baseline", "margin", "policy - scan"]


def table_rows(rows: list[dict]) -> list[list[object]]:
    def m(r: dict) -> str:
        return f"{r['mAP']:.1f}"

    return [[r["set"], mean_std(r["AdaFrame"]) + (" (scan)" if r["AdaFrame"].get("inference") == "scan" else ""),
             f"{m(r['adaptive'])} ({r['adaptive']['avg_frames']:.2f})", m(r["AdaFrame's own scan"]),
             "-" if r["pooled"] is None else f"{r['pooled']:.1f}", f"{m(r['AvgPooling-U'])} / {m(r['AvgPooling-all'])}",
             f"{r['logistic']['mean']:.1f} / {r['logistic']['frames']:.1f}", m(r["LSTM-U"]), m(r["sampler"]),
             f"{m(r['AvgPooling-kcenter'])} / {m(r['LSTM-kcenter'])}", f"{m(r['AvgPooling-motion'])} / {m(r['LSTM-motion'])}",
             f"{r['best']} {r[r['best']]['mAP']:.1f}", f"{r['margin']:+.2f}", f"{r['policy_gain']:+.2f}"]
            for r in rows]


def summary(rows: list[dict], k: int, mu: float) -> list[str]:
    """The check's verdicts, each with its numbers."""
    wins = [r for r in rows if r["margin"] >= 0]
    worst = min(rows, key=lambda r: r["margin"])
    scan = [r for r in rows if r["policy_gain"] < -0.5]
    mu_gap = float(np.mean([r["adaptive"]["mAP"] - r["AdaFrame"]["mAP"] for r in rows]))
    mu_frames = float(np.mean([r["adaptive"]["avg_frames"] for r in rows]))
    lr_far = {how: [r["set"] for r in rows if abs(r["AvgPooling-U"]["mAP"] - r["logistic"][how]) > 2] for how in ("mean", "frames")}
    pooled = [r for r in rows if r["pooled"] is not None]
    weak = [r for r in pooled if r["pooled"] < r["AvgPooling-U"]["mAP"] - 0.5]
    by_scan = [r["set"] for r in rows if r["AdaFrame"].get("inference") == "scan"]
    return [
        f"AdaFrame-{k} >= the best baseline at {k} frames on {len(wins)} of {len(rows)} sets; the worst margin "
        f"{worst['margin']:+.2f} ({worst['set']}, {worst['best']})",
        f"the learned policy >= its own scan - 0.5 on {len(rows) - len(scan)} of {len(rows)} sets"
        + (" (below: " + ", ".join(f"{r['set']} {r['policy_gain']:+.2f}" for r in scan) + ")" if scan else "")
        + f"; inference looks by the scan (training found the policy adds < 0.5 on val) on {len(by_scan)}"
        + (f" ({', '.join(by_scan)})" if by_scan else ""),
        f"AdaFrame's pooled prediction over {k} uniform frames >= AvgPooling-U{k} - 0.5 on {len(pooled) - len(weak)} of {len(pooled)} sets"
        + (" (below: " + ", ".join(f"{r['set']} {r['pooled'] - r['AvgPooling-U']['mAP']:+.2f}" for r in weak) + ")" if weak else ""),
        f"mu {mu:g}: {mu_gap:+.2f} mAP against {k} steps on average, with {mu_frames:.2f} frames",
        *(f"AvgPooling-U{k} within 2 mAP of a logistic regression {what} on {len(rows) - len(lr_far[how])} of {len(rows)} sets"
          + (f" (not: {', '.join(lr_far[how])})" if lr_far[how] else "")
          for how, what in (("frames", "on single frames, read as AvgPooling reads them"), ("mean", f"on the mean of the {k} frames"))),
    ]


def run_check(cfg: CheckConfig) -> list[dict]:
    """The ``adaframe check`` command; writes OUT/check.json and OUT/check.md and returns the rows."""
    resolve_device(cfg.device)
    sets = {Path(d).name: Path(d) for d in cfg.data}
    if cfg.bench is not None:
        sets.update({name: bench_set(cfg.bench, name, cfg.out / "data") for name in BENCH_SETS if not cfg.only or name in cfg.only})
    if cfg.only:
        unknown = sorted(set(cfg.only) - sets.keys())
        if unknown:
            raise AdaframeError(f"--only {' '.join(unknown)}: no such set (sets: {', '.join(sets)})")
        sets = {n: p for n, p in sets.items() if n in cfg.only}
    plan = plan_runs(sets, cfg)
    runs = {c.out.as_posix(): c for cfgs in plan.values() for c in cfgs}
    tqdm.write(f"{len(runs)} runs on {len(sets)} sets")
    train_missing(runs, cfg.jobs)
    test = Evaluator(plan, "test", cfg.device, CostModel())
    rows = []
    for name, data in tqdm(sets.items(), desc="evaluate", unit="set"):
        row = set_row(name, test, cfg.frames, cfg.mu)
        row["logistic"] = logistic_probes(data, cfg.frames)
        row["pooled"] = pooled_uniform(plan, name, cfg.frames, cfg.device)
        rows.append(row)
    lines = summary(rows, cfg.frames, cfg.mu)
    print(format_table(HEADER, table_rows(rows)))
    print("\n".join(["", *lines]))
    write_json(cfg.out / "check.json", {"frames": cfg.frames, "mu": cfg.mu, "seeds": cfg.seeds, "adaframe": list(cfg.adaframe),
                                         "rows": rows, "summary": lines})
    title = f"AdaFrame-{cfg.frames} against the best baseline at {cfg.frames} frames (test split, mean of {cfg.seeds} seed(s))"
    atomic_write(cfg.out / "check.md", lambda p: p.write_text(
        f"# {title}\n\n{markdown_table(HEADER, table_rows(rows))}\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"))
    print(f"\nwrote {cfg.out / 'check.json'}, {cfg.out / 'check.md'}")
    return rows
