"""``adaframe demo``: synthetic data -> training -> fixed and adaptive inference -> Table 1 and a plot.

Trains AvgPooling, LSTMs, the one-step sampler and AdaFrame-K (``ADAFRAME_K``) ``--seeds`` times each on the
synthetic data set (or ``--data``), chooses AdaFrame-10's mu on val, reports on test (mean ± std over seeds), and
checks (``checks``):

1. AdaFrame-K with K steps is at least as accurate as the best baseline at K+1 frames (AvgPooling and the LSTM over
   uniform frames or a training-free selector's) and the one-step sampler with K frames;
2. AdaFrame-10 with adaptive lookahead is within ``CLOSE`` mAP of the best of LSTM-U25 and AvgPooling over every
   frame, with at most 10 frames on average;
3. the learned policy adds at least ``POLICY_GAIN`` mAP to AdaFrame-10 over a uniform scan read by the same network;
4. (2 or more seeds) AdaFrame-10's mAP std across seeds is at most ``SEED_STD``;
5. the one-step sampler's policy beats K uniform frames read by its own classifier at K = 3 and 5.

Finished runs and the data set are reused.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from adaframe.data.synth import SynthConfig, generate
from adaframe.evaluate.metrics import CostModel
from adaframe.report.experiments import Evaluator, MAP_TOLERANCE, Plan, mean_std, pick_mu, seeded, train_missing
from adaframe.report.figures import Series, plot_tradeoff
from adaframe.report.tables import format_table, markdown_table
from adaframe.rl.rollout import StopRule
from adaframe.train.config import TrainConfig
from adaframe.utils import AdaframeError, atomic_write, resolve_device, write_json

AVGPOOL_K = (1, 4, 6, 11, 25)
ADAFRAME_K = (3, 5, 10)
LSTM_K = (4, 6, 11, 25)
"""K + 1 for every AdaFrame K (one frame more: the global memory's cost), and 25: each LSTM is trained with its K"""
MUS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
SELECTORS = {"kcenter": "k-center", "motion": "motion-guided"}
"""the training-free selectors (models.selectors) and their rows' setting"""
CHECK_K = 10
CLOSE = 0.5
"""check 2: adaptive AdaFrame-10 within this many mAP points of the best dense baseline"""
POLICY_GAIN = 3.0
"""check 3: the learned policy must add this many mAP points to a uniform scan"""
SEED_STD = 1.5
"""check 4: the most std of AdaFrame-10's mAP across seeds"""


@dataclass
class DemoConfig:
    """Run the whole pipeline on synthetic data and print a Table-1-style comparison (test split, mu chosen on val)."""

    out: Path = Path("runs/demo")
    """directory for the data (OUT/data), the runs (OUT/runs) and results.json, table.md, map_vs_gflops.png"""
    data: Path | None = None
    """a feature data set to run on instead of the synthetic one written to OUT/data (needs val and test splits)"""
    seeds: int = 1
    """train every model this many times (seeds 0, 1, ...); tables show the mean ± std"""
    jobs: int = 2
    """runs trained at a time, each in a worker process of one thread (default 2: two CPU cores)"""
    quick: bool = False
    """a tiny data set and 2 epochs: a smoke test in seconds, not a result"""
    device: Literal["cpu", "cuda"] = "cpu"

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.jobs < 1:
            raise AdaframeError("--seeds and --jobs must be >= 1")


def synth_config(quick: bool) -> SynthConfig:
    if quick:
        return SynthConfig(videos=120, classes=6, dim=32, memory_dim=16, min_frames=12, max_frames=30, max_evidence=3)
    return SynthConfig()


def plan_runs(data: Path, runs: Path, quick: bool, device: str, seeds: int) -> Plan:
    """AvgPooling (K only sets its validation during training: it trains on all frames), LSTM-K and AdaFrame-K."""
    extra = {"epochs": 2, "hidden": 32} if quick else {}

    def run(name: str, model: str, k: int) -> list[TrainConfig]:
        return seeded(TrainConfig(data, runs / name, model=model, frames=k, preset="fast", device=device, **extra), seeds)  # type: ignore[arg-type]

    plan = {"avgpool": run("avgpool", "avgpool", 10)}
    plan.update({f"lstm-{k}": run(f"lstm-{k}", "lstm", k) for k in LSTM_K})
    plan.update({f"sampler-{k}": run(f"sampler-{k}", "sampler", k) for k in ADAFRAME_K})
    plan.update({f"adaframe-{k}": run(f"adaframe-{k}", "adaframe", k) for k in ADAFRAME_K})
    return plan


def prepare_data(out: Path, cfg: SynthConfig) -> Path:
    """Generate OUT/data unless a complete set made with the same settings is there."""
    data, record = out / "data", out / "synth.json"
    wanted = asdict(cfg)
    if (data / "videos.csv").is_file():
        if record.is_file() and json.loads(record.read_text()) != wanted:
            raise AdaframeError(f"{data} was generated with other settings (--quick or not?); pass another --out or delete {data}")
        tqdm.write(f"[1/4] reusing the data set in {data}")
        return data
    tqdm.write(f"[1/4] writing the synthetic data set to {data}")
    generate(cfg, data)
    write_json(record, wanted)
    return data


def evaluate_all(plan: Plan, device: str) -> tuple[list[dict], dict]:
    """Every table row on test, with AdaFrame-10's mu chosen on val; returns the rows and the chosen val row."""
    val, test = (Evaluator(plan, split, device, CostModel()) for split in ("val", "test"))
    tqdm.write("[3/4] evaluating: mu on val, every number on test")
    sweep = [StopRule("utility", mu) for mu in MUS]
    chosen = pick_mu([val(f"adaframe-{CHECK_K}", CHECK_K, stop=s) for s in sweep], val(f"adaframe-{CHECK_K}", CHECK_K))
    rows = []

    def add(method: str, setting: str, row: dict, **extra: object) -> None:
        rows.append({"method": method, "setting": setting, **row, **extra})

    for k in AVGPOOL_K:
        add("AvgPooling", "uniform", test("avgpool", k))
    add("AvgPooling", "all frames", test("avgpool", None, "all"))
    for k in LSTM_K:
        add("LSTM", "uniform", test(f"lstm-{k}", k))
    for k in ADAFRAME_K:  # the training-free selectors, reading the global memory as AdaFrame does, at K + 1 frames
        for selector, title in SELECTORS.items():
            add("AvgPooling", title, test("avgpool", k + 1, selector))
            add("LSTM", title, test(f"lstm-{k + 1}", k + 1, selector))
    for k in ADAFRAME_K:
        learned, uniform = test(f"sampler-{k}", k), test(f"sampler-{k}", k, policy="uniform")
        add("One-step sampler", "K slots", learned, uniform_mAP=uniform["mAP"], learned_minus_uniform=learned["mAP"] - uniform["mAP"])
    for k in ADAFRAME_K:
        learned, uniform = test(f"adaframe-{k}", k), test(f"adaframe-{k}", k, policy="uniform")
        add(f"AdaFrame-{k}", "K steps", learned, uniform_mAP=uniform["mAP"], learned_minus_uniform=learned["mAP"] - uniform["mAP"])
    for s in sweep:
        add(f"AdaFrame-{CHECK_K}", f"adaptive mu={s.threshold:g}" + (" (mu*)" if chosen.get("mu") == s.threshold else ""),
            test(f"adaframe-{CHECK_K}", CHECK_K, stop=s))
    return rows, chosen


def _find(rows: list[dict], method: str, k: int | None = None, setting: str | None = None) -> dict:
    return next(r for r in rows if r["method"] == method and (k is None or r["frames"] == k)
                and (setting is None or r["setting"].startswith(setting)))


def baselines_at(rows: list[dict], k: int) -> dict[str, dict]:
    """The baselines AdaFrame-K must beat: AvgPooling and the LSTM over K+1 uniform frames and over the K+1 frames of
    each training-free selector, and the one-step sampler with K."""
    named = {f"AvgPooling-U{k + 1}": _find(rows, "AvgPooling", k + 1, "uniform"), f"LSTM-U{k + 1}": _find(rows, "LSTM", k + 1, "uniform"),
             f"sampler-{k}": _find(rows, "One-step sampler", k)}
    for title in SELECTORS.values():
        named.update({f"{m} {title}-{k + 1}": _find(rows, m, k + 1, title) for m in ("AvgPooling", "LSTM")})
    return named


def checks(rows: list[dict], chosen: dict, seeds: int) -> list[dict]:
    """The claims of the demo, each with the numbers (test means) it was decided on; ``passed`` None: not checkable."""
    def best(k: int) -> tuple[str, dict]:
        return max(baselines_at(rows, k).items(), key=lambda item: item[1]["mAP"])

    pairs = [(k, _find(rows, f"AdaFrame-{k}", k, "K steps"), *best(k)) for k in ADAFRAME_K]
    out = [{
        "name": "AdaFrame-K (K steps) >= the best of AvgPooling and LSTM over K+1 uniform frames or those of a training-free "
                f"selector, and the one-step sampler with K, K = {', '.join(map(str, ADAFRAME_K))}",
        "passed": all(a["mAP"] >= b["mAP"] for _, a, _, b in pairs),
        "detail": "; ".join(f"K={k}: {a['mAP']:.2f} vs {name} {b['mAP']:.2f}" for k, a, name, b in pairs),
    }]
    if chosen.get("mu") is None:
        ada, how = _find(rows, f"AdaFrame-{CHECK_K}", CHECK_K, "K steps"), f"no mu within {MAP_TOLERANCE:g} of K steps on val: K steps"
    else:
        ada, how = _find(rows, f"AdaFrame-{CHECK_K}", CHECK_K, f"adaptive mu={chosen['mu']:g}"), f"mu*={chosen['mu']:g} chosen on val"
    dense = max(_find(rows, "LSTM", 25, "uniform"), _find(rows, "AvgPooling", setting="all frames"), key=lambda r: r["mAP"])
    dense_name = "LSTM-U25" if dense["model"] == "lstm" else "AvgPooling, all frames"
    out.append({
        "name": f"adaptive AdaFrame-{CHECK_K} within {CLOSE:g} mAP of max(LSTM-U25, AvgPooling all frames) with <= {CHECK_K} frames",
        "passed": ada["mAP"] >= dense["mAP"] - CLOSE and ada["avg_frames"] <= CHECK_K,
        "detail": f"AdaFrame-{CHECK_K} ({how}) {ada['mAP']:.2f} with {ada['avg_frames']:.2f} frames vs {dense_name} "
                  f"{dense['mAP']:.2f} with {dense['avg_frames']:.2f} frames",
    })
    fixed = _find(rows, f"AdaFrame-{CHECK_K}", CHECK_K, "K steps")
    out.append({
        "name": f"the learned policy adds >= {POLICY_GAIN:g} mAP to AdaFrame-{CHECK_K} over a uniform scan (same network)",
        "passed": fixed["learned_minus_uniform"] >= POLICY_GAIN,
        "detail": f"learned {fixed['mAP']:.2f} - uniform {fixed['uniform_mAP']:.2f} = {fixed['learned_minus_uniform']:+.2f}",
    })
    std = fixed.get("mAP_std")
    out.append({
        "name": f"AdaFrame-{CHECK_K}'s mAP varies by <= {SEED_STD:g} (std) across seeds",
        "passed": None if std is None else std <= SEED_STD,
        "detail": "one seed: run with --seeds 3 to check" if std is None else
                  f"std {std:.2f} over {seeds} seeds ({', '.join(f'{m:.2f}' for m in fixed['mAP_per_seed'])})",
    })
    small = [_find(rows, "One-step sampler", k) for k in ADAFRAME_K if k <= 5]
    out.append({
        "name": "the one-step sampler's policy beats K uniform frames read by its own classifier, K <= 5",
        "passed": all(r["learned_minus_uniform"] > 0 for r in small),
        "detail": "; ".join(f"K={r['frames']}: {r['mAP']:.2f} - uniform {r['uniform_mAP']:.2f} = {r['learned_minus_uniform']:+.2f}"
                            for r in small),
    })
    return out


TABLE_HEADER = ["Method", "Setting", "K", "mAP (%)", "Top-1 (%)", "Frames", "GFLOPs", "learned - uniform"]


def table_rows(rows: list[dict]) -> list[list[object]]:
    return [[r["method"], r["setting"], r["frames"] or "all", mean_std(r), r["top1"], r["avg_frames"], r["gflops_per_video"],
             None if "learned_minus_uniform" not in r else f"{r['learned_minus_uniform']:+.2f}"] for r in rows]


def verdict(c: dict) -> str:
    return {True: "PASS", False: "FAIL", None: "SKIP"}[c["passed"]]


def markdown(rows: list[dict], results: list[dict], title: str) -> str:
    lines = [f"# {title}", "", markdown_table(TABLE_HEADER, table_rows(rows))]
    lines += ["", "mAP: mean ± std over seeds. Frames: distinct frames the backbone runs per video. GFLOPs: see docs/design.md, "
              "'How GFLOPs are counted'. learned - uniform: the same network (AdaFrame's, or the sampler's classifier) on K uniformly spaced frames "
              "instead of its policy's. mu*: chosen on the val split.", ""]
    lines += [f"- **{verdict(c)}** {c['name']}: {c['detail']}" for c in results]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """mAP against GFLOPs per video: AvgPooling and LSTM over K frames, AdaFrame-K, AdaFrame-10 over mu."""
    uniform = lambda r: "all" if r["frames"] is None else f"U{r['frames']}"  # noqa: E731
    plain = lambda method: [r for r in rows if r["method"] == method and r["setting"] in ("uniform", "all frames")]  # noqa: E731
    plot_tradeoff([
        Series.of_rows("AvgPooling, uniform K frames (and all)", plain("AvgPooling"), uniform),
        Series.of_rows("LSTM, uniform K frames", plain("LSTM"), uniform),
        *(Series.of_rows(f"{m}, K frames by {title}", [r for r in rows if r["method"] == m and r["setting"] == title],
                         lambda r: f"K={r['frames']}", line=False) for m in ("AvgPooling", "LSTM") for title in SELECTORS.values()),
        Series.of_rows("One-step sampler, K frames", [r for r in rows if r["method"] == "One-step sampler"],
                       lambda r: f"K={r['frames']}", line=False),
        Series.of_rows("AdaFrame-K, K steps", [r for r in rows if r["setting"] == "K steps"], lambda r: f"K={r['frames']}",
                       line=False),
        Series.of_rows(f"AdaFrame-{CHECK_K}, adaptive lookahead", [r for r in rows if r["setting"].startswith("adaptive")],
                       lambda r: f"\u03bc={r['mu']:g}"),
    ], path, title)


def run_demo(cfg: DemoConfig) -> dict:
    """The ``adaframe demo`` command; returns what it writes to OUT/results.json."""
    resolve_device(cfg.device)  # fail now, not after the data set is written
    synth = synth_config(cfg.quick)
    data = prepare_data(cfg.out, synth) if cfg.data is None else cfg.data
    plan = plan_runs(data, cfg.out / "runs", cfg.quick, cfg.device, cfg.seeds)
    runs = {cfg_.out.name: cfg_ for cfgs in plan.values() for cfg_ in cfgs}
    tqdm.write(f"[2/4] {len(runs)} runs: {len(plan)} models x {cfg.seeds} seed(s), {min(cfg.jobs, os.cpu_count() or 1)} at a time")
    train_missing(runs, min(cfg.jobs, os.cpu_count() or 1), log=lambda m: tqdm.write("[2/4] " + m))
    rows, chosen = evaluate_all(plan, cfg.device)
    results = checks(rows, chosen, cfg.seeds)

    n = rows[0]["num_videos"]
    title = (f"{'Synthetic' if cfg.data is None else cfg.data.name} test split ({n} videos), mean of {cfg.seeds} seed(s), mu chosen on val"
             f"{', --quick: not a result' if cfg.quick else ''}")
    tqdm.write(f"[4/4] results on the {title[0].lower() + title[1:]}\n")
    print(format_table(TABLE_HEADER, table_rows(rows)))
    print()
    for c in results:
        print(f"{verdict(c)}  {c['name']}: {c['detail']}")
    summary = {"quick": cfg.quick, "seeds": cfg.seeds, "data": None if cfg.data is None else str(cfg.data),
               "synth": asdict(synth) if cfg.data is None else None,
               "train": {name: [c.to_dict() for c in cfgs] for name, cfgs in plan.items()},
               "mu_star": chosen.get("mu"), "rows": rows, "checks": results}
    write_json(cfg.out / "results.json", summary)
    atomic_write(cfg.out / "table.md", lambda p: p.write_text(markdown(rows, results, title)))
    plot(rows, cfg.out / "map_vs_gflops.png", f"mAP vs. cost, {title[0].lower() + title[1:]}")
    print(f"\nwrote {cfg.out / 'results.json'}, {cfg.out / 'table.md'}, {cfg.out / 'map_vs_gflops.png'}")
    return summary
