"""``adaframe report``: the paper's experiments (Sections 4.2-4.3) on any feature data set, as one report.

Trains every run the comparison needs ``--seeds`` times (reusing finished runs), chooses every threshold (mu*) on
the val split, evaluates on ``--split`` (mean ± std over seeds), and writes ``OUT/report.md``: Table 1 (AvgPooling
and LSTM over K+Delta random or uniform frames, Delta the global memory's cost in backbone frames rounded up, against
AdaFrame-K with adaptive lookahead), Figure 3 (mAP against GFLOPs: AdaFrame over a mu sweep, FrameGlimpse and
FastForward and their -G variants over their stop threshold), what makes the policy work (the policy against its own
network's uniform scan, and each option that separates the default agent from the paper's), Table 2 (memory size),
Table 3 (rewards), stop by utility vs entropy, backward jumps, and Figures 4 and 5 (where videos stop).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Literal

from tqdm import tqdm

from adaframe.data.features import FeatureDataset
from adaframe.evaluate.metrics import CostModel
from adaframe.evaluate.run import data_costs
from adaframe.models.kinds import KINDS
from adaframe.report.experiments import Evaluator, MAP_TOLERANCE, Plan, mean_std, pick_mu, seeded, train_missing
from adaframe.report.figures import Series, plot_class_stops, plot_stop_steps, plot_tradeoff
from adaframe.report.tables import format_cell, markdown_table
from adaframe.rl.rollout import StopRule
from adaframe.train.config import TrainConfig, train_config
from adaframe.utils import AdaframeError, atomic_write, resolve_device, write_json


@dataclass(frozen=True)
class ReportPreset:
    """What to train and how to sweep: the training preset of the runs, AvgPooling's epochs, the Ks and the sweeps."""

    train_preset: Literal["fast", "paper"]
    avgpool_epochs: int | None
    """AvgPooling is a linear classifier: it converges long before the recurrent models"""
    ks: tuple[int, ...] = (3, 5, 10)
    main_k: int = 10
    """the K of the ablations, FrameGlimpse and FastForward"""
    memory_frames: int | None = None
    """global-memory frames of the main runs (None: all the data stores, the default of 'adaframe train')"""
    memory_ablation: tuple[int, ...] = (0, 12, 16, 32)
    rewards: tuple[str, ...] = ("prediction", "transition", "margin")
    mus: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
    entropies: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
    stop_thresholds: tuple[float, ...] = (0.5, 0.8, 0.95, 0.99)
    avgpool_frames: tuple[int, ...] = (1, 3, 5, 10, 25)


PRESETS = {"quick": ReportPreset("fast", 10), "paper": ReportPreset("paper", None)}
SELECTORS = {"kcenter": "k-center", "motion": "motion-guided"}
STOP_AGENT_TITLES = {"frameglimpse": "FrameGlimpse", "frameglimpse-g": "FrameGlimpse-G",
               "fastforward": "FastForward", "fastforward-g": "FastForward-G"}
REWARD_NAMES = {"prediction": "PREDICTION", "transition": "PREDICTION TRANSITION", "margin": "margin (AdaFrame)"}
# What separates the default agent from the paper's (models/agent.py): each option alone, then both, as the paper has them.
AGENT_ABLATIONS = {"memread-lstm": {"memory_read": "lstm"}, "gaussian": {"selection": "gaussian"},
                   "pred-lstm": {"prediction": "lstm", "temporal": False}, "pred-pooled": {"prediction": "pooled", "temporal": False},
                   "no-temporal": {"temporal": False}, "no-positions": {"positions": False},
                   "frames-every": {"frame_loss": "every"}, "critic-state": {"critic": "state"},
                   "critic-as-trained": {"calibrate_critic": False},
                   "paper-agent": {"memory_read": "lstm", "selection": "gaussian", "prediction": "lstm", "temporal": False,
                                   "positions": False, "critic": "state", "policy_check": False, "calibrate_critic": False}}
ABLATION_TITLES = {
    "memread-lstm": "memory read by the LSTM (as the paper)",
    "gaussian": "Gaussian selection (as the paper)", "pred-lstm": "prediction by the LSTM's head alone (as the paper)",
    "pred-pooled": "prediction by the pooled frame classifier alone",
    "no-temporal": "no temporal-order classifier in the mix (the recurrent prediction reads the frames as visited, as the paper)",
    "no-positions": "the LSTM does not read where each frame is (as the paper)",
    "frames-every": "the frame classifier trained on every frame only (no val choice of its loss)",
    "critic-state": "the utility reads the state alone (as the paper)",
    "critic-as-trained": "the utility as trained, not refit on the val split (as the paper)",
    "paper-agent": "all of them: the paper's agent"}


@dataclass
class ReportConfig:
    """Train what is missing, evaluate every method and ablation, write report.md and its figures."""

    data: Path
    """feature data set (see docs/commands.md: Feature data set layout)"""
    out: Path
    """report directory: report.md, results.json, figures, per-video CSVs, and the runs in OUT/runs"""
    preset: Literal["quick", "paper"] = "quick"
    """quick: the 'fast' preset, minutes per run; paper: Sections 3-4.1 (the paper's agent and SGD schedule)"""
    split: Literal["val", "test"] = "test"
    """the split the numbers are reported on; mu* is always chosen on val"""
    seeds: int = 3
    """train every run this many times (seeds SEED, SEED+1, ...); tables show the mean ± std"""
    jobs: int = 2
    """runs trained at a time, each in a worker process of one thread"""
    epochs: int | None = None
    """train every run for this many epochs instead of its preset's (a smoke test; finished runs are retrained)"""
    hidden: int | None = None
    """LSTM size of every recurrent run instead of the preset's"""
    device: Literal["cpu", "cuda"] = "cpu"
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if (self.epochs is not None and self.epochs < 1) or (self.hidden is not None and self.hidden < 1):
            raise AdaframeError("--epochs and --hidden must be >= 1")
        if self.seeds < 1 or self.jobs < 1:
            raise AdaframeError("--seeds and --jobs must be >= 1")


def overhead_frames(memory_frames: int, cost: CostModel) -> int:
    """Delta: the global memory's cost in backbone frames, rounded up (AdaFrame's heads cost far less than a frame)."""
    return max(1, math.ceil(memory_frames * cost.memory_gflops_per_frame / cost.backbone_gflops))


def plan_runs(cfg: ReportConfig, preset: ReportPreset, m: int, stored_memory: int, delta: int) -> Plan:
    """Every run of the report, by name (its directories under OUT/runs: NAME-s<seed>), ``cfg.seeds`` seeds each."""
    runs = cfg.out / "runs"

    def run(name: str, model: str, frames: int, **kw: object) -> list[TrainConfig]:
        kw.update({key: v for key, v in (("epochs", cfg.epochs), ("hidden", cfg.hidden)) if v is not None})
        return seeded(train_config(cfg.data, runs / name, model=model, frames=frames, preset=preset.train_preset,
                                   device=cfg.device, seed=cfg.seed, progress=cfg.progress, **kw), cfg.seeds)

    k = preset.main_k
    plan = {"avgpool": run("avgpool", "avgpool", k, **({"epochs": preset.avgpool_epochs} if preset.avgpool_epochs else {}))}
    for n in sorted({kk + delta for kk in preset.ks}):
        plan[f"lstm-{n}"] = run(f"lstm-{n}", "lstm", n)
    for kk in preset.ks:
        plan[f"adaframe-{kk}"] = run(f"adaframe-{kk}", "adaframe", kk, memory_frames=m)
        if kk <= m:  # it picks K of the memory's slots
            plan[f"sampler-{kk}"] = run(f"sampler-{kk}", "sampler", kk, memory_frames=m)
    if preset.train_preset == "fast":  # the paper preset trains the paper's agent already
        for name, options in AGENT_ABLATIONS.items():
            plan[f"adaframe-{k}-{name}"] = run(f"adaframe-{k}-{name}", "adaframe", k, memory_frames=m, **options)
    for mem in preset.memory_ablation:
        if mem != m and mem <= stored_memory:
            plan[f"adaframe-{k}-memory{mem}"] = run(f"adaframe-{k}-memory{mem}", "adaframe", k, memory_frames=mem)
    for reward in preset.rewards:
        if reward != "margin":
            plan[f"adaframe-{k}-{reward}"] = run(f"adaframe-{k}-{reward}", "adaframe", k, memory_frames=m, reward=reward)
    for model in STOP_AGENT_TITLES:
        plan[model] = run(model, model, k, **({"memory_frames": m} if model.endswith("-g") else {}))
    return plan


def mu_text(row: dict) -> str:
    return f"mu* {row['mu']:g}" if row["mu"] is not None else f"no mu within {MAP_TOLERANCE:g} point on val: K steps"


def run_report(cfg: ReportConfig) -> dict:
    """The ``adaframe report`` command; returns what it writes to OUT/results.json."""
    resolve_device(cfg.device)
    preset = PRESETS[cfg.preset]
    probe = FeatureDataset(cfg.data, "train")
    stored_memory = probe.memory_frames
    if stored_memory < 1:
        raise AdaframeError(f"{cfg.data} has no global memory (memory/): AdaFrame and the -G variants need it")
    for split in {"val", cfg.split}:  # fail now, not after training
        FeatureDataset(cfg.data, split, classes=probe.classes, memory_frames=0)
    cost = data_costs(cfg.data)
    m = stored_memory if preset.memory_frames is None else min(preset.memory_frames, stored_memory)
    delta = overhead_frames(m, cost)
    plan = plan_runs(cfg, preset, m, stored_memory, delta)
    runs = {c.out.name: c for cfgs in plan.values() for c in cfgs}
    tqdm.write(f"[train] {len(runs)} runs: {len(plan)} settings x {cfg.seeds} seed(s), {cfg.jobs} at a time")
    train_missing(runs, cfg.jobs, log=lambda msg: tqdm.write("[train] " + msg))

    val = Evaluator(plan, "val", cfg.device, cost, cfg.seed)
    ev = val if cfg.split == "val" else Evaluator(plan, cfg.split, cfg.device, cost, cfg.seed)
    k = preset.main_k
    agents = [name for name in plan if name.startswith("adaframe-")]
    utility = [None] + [StopRule("utility", mu) for mu in preset.mus]  # K steps, then the mu sweep
    ks = {name: next((kk for kk in preset.ks if name == f"adaframe-{kk}"), k) for name in agents}
    jobs: list[tuple] = []  # (evaluator, run, frames, sampling, stop, policy), evaluated in order with one progress bar
    jobs += [(val, name, ks[name], "uniform", stop, "learned") for name in agents for stop in utility]  # for mu*
    jobs += [(ev, "avgpool", n, s, None, "learned") for n in sorted({*preset.avgpool_frames, *(kk + delta for kk in preset.ks)})
             for s in ("uniform", "random")]
    jobs += [(ev, "avgpool", None, "all", None, "learned")]
    jobs += [(ev, f"lstm-{kk + delta}", kk + delta, s, None, "learned") for kk in preset.ks for s in ("uniform", "random")]
    jobs += [(ev, run, kk + delta, s, None, "learned") for kk in preset.ks if kk + delta <= m for s in SELECTORS
             for run in ("avgpool", f"lstm-{kk + delta}")]
    jobs += [(ev, f"adaframe-{k}", k, "uniform", stop, "policy") for stop in utility]
    jobs += [(ev, f"sampler-{kk}", kk, "uniform", None, policy) for kk in preset.ks if f"sampler-{kk}" in plan
             for policy in ("learned", "uniform")]
    for name in agents:
        jobs += [(ev, name, ks[name], "uniform", stop, "learned") for stop in utility]
        jobs += [(ev, name, ks[name], "uniform", None, policy) for policy in ("uniform", "random")]
    jobs += [(ev, f"adaframe-{k}", k, "uniform", StopRule("entropy", e), "learned") for e in preset.entropies]
    for model in STOP_AGENT_TITLES:
        jobs += [(ev, model, k, "uniform", stop, "learned") for stop in [None] + [StopRule("learned", t) for t in preset.stop_thresholds]]
    for evaluator, *setting in tqdm(jobs, desc="evaluate", unit="setting", disable=not cfg.progress):
        evaluator(*setting)

    def sweep(run: str, kk: int, on: Evaluator = ev) -> list[dict]:
        return [on.get(run, kk, stop=StopRule("utility", mu)) for mu in preset.mus]

    def choose(run: str, kk: int) -> dict:
        """mu* chosen on val, the row of ``ev`` (the report's split) at that mu."""
        picked = pick_mu(sweep(run, kk, val), val.get(run, kk))
        return ev.get(run, kk, stop=None if picked["mu"] is None else StopRule("utility", picked["mu"]))

    chosen = {name: choose(name, ks[name]) for name in agents}
    cfg.out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(cfg, preset, ev, sweep, chosen, delta, probe.classes)
    text = render(cfg, preset, ev, val, sweep, chosen, delta, m, stored_memory, cost, plan, figures)
    atomic_write(cfg.out / "report.md", lambda p: p.write_text(text))
    summary = {"preset": asdict(preset), "split": cfg.split, "seeds": cfg.seeds, "delta": delta, "memory_frames": m,
               "runs": {n: [c.to_dict() for c in cfgs] for n, cfgs in plan.items()}, "rows": ev.rows,
               "val_rows": val.rows if val is not ev else None, "mu_star": {name: r["mu"] for name, r in chosen.items()}}
    write_json(cfg.out / "results.json", summary)
    tqdm.write(f"wrote {cfg.out / 'report.md'} ({len(ev.rows)} settings, {len(runs)} runs) and {', '.join(figures.values())}")
    return summary


def write_figures(cfg: ReportConfig, preset: ReportPreset, ev: Evaluator, sweep, chosen: dict, delta: int,
                  classes: list[str]) -> dict[str, str]:
    k, get = preset.main_k, ev.get

    series = [Series.of_rows("AvgPooling, U frames", [r for r in ev.rows if r["run"] == "avgpool" and r["sampling"] == "uniform"],
                             lambda r: f"U{r['frames']}"),
              Series.of_rows("LSTM, U frames", [get(f"lstm-{n}", n) for n in sorted({kk + delta for kk in preset.ks})],
                             lambda r: f"U{r['frames']}"),
              Series.of_rows("One-step sampler, K slots", [get(f"sampler-{kk}", kk) for kk in preset.ks if f"sampler-{kk}" in ev.plan],
                             lambda r: f"K={r['frames']}", line=False)]
    for kk in preset.ks:
        rows = [get(f"adaframe-{kk}", kk)] + sweep(f"adaframe-{kk}", kk)
        ends = {preset.mus[0], preset.mus[-1]}  # label K steps and the sweep's ends; report.md has every number
        series.append(Series.of_rows(f"AdaFrame-{kk} (K steps, and mu from {preset.mus[0]:g} to {preset.mus[-1]:g})", rows,
                                     lambda r: "K" if r["mu"] is None else f"\u03bc={r['mu']:g}" if r["mu"] in ends else ""))
    for model, title in STOP_AGENT_TITLES.items():
        rows = [get(model, k, stop=StopRule("learned", t)) for t in preset.stop_thresholds] + [get(model, k)]
        ends = {preset.stop_thresholds[0], preset.stop_thresholds[-1]}

        def label(r: dict) -> str:
            return "K" if r["threshold"] is None else f"p\u2265{r['threshold']:g}" if r["threshold"] in ends else ""

        series.append(Series.of_rows(f"{title} (stop at p(stop) \u2265 {preset.stop_thresholds[0]:g} to "
                                     f"{preset.stop_thresholds[-1]:g}, or K steps)", rows, label))
    name = (cfg.out / "fig3_map_vs_gflops.png")
    plot_tradeoff(series, name, f"Figure 3: mAP vs. computation ({cfg.split}, {ev.rows[0]['num_videos']} videos)")

    stop_rules = [Series.of_rows("stop by utility (adaptive lookahead, \u03bc)", sweep(f"adaframe-{k}", k), lambda r: f"{r['mu']:g}"),
                  Series.of_rows("stop by entropy (threshold)",
                                 [get(f"adaframe-{k}", k, stop=StopRule("entropy", e)) for e in preset.entropies],
                                 lambda r: f"{r['threshold']:g}")]
    rules = cfg.out / "stop_utility_vs_entropy.png"
    plot_tradeoff(stop_rules, rules, f"AdaFrame-{k}: stopping by utility vs. by prediction entropy")

    best = chosen[f"adaframe-{k}"]
    res = ev.result(f"adaframe-{k}", k, stop=StopRule("utility", best["mu"]) if best["mu"] is not None else None)
    correct = res.scores.argmax(1) == res.labels
    how = f"\u03bc={best['mu']:g}" if best["mu"] is not None else "K steps"
    fig4, fig5 = cfg.out / "fig4_stop_steps.png", cfg.out / "fig5_class_stops.png"
    plot_stop_steps(res.steps, correct, k, fig4, f"Figure 4: where AdaFrame-{k} ({how}) stops, and how accurate it is there")
    plot_class_stops(res.steps, res.labels, classes, k, fig5, f"Figure 5: AdaFrame-{k} ({how}) stopping step per class")
    return {"fig3": name.name, "stop_rules": rules.name, "fig4": fig4.name, "fig5": fig5.name}


def render(cfg: ReportConfig, preset: ReportPreset, ev: Evaluator, val: Evaluator, sweep, chosen: dict, delta: int, m: int,
           stored_memory: int, cost: CostModel, plan: Plan, figures: dict) -> str:
    """report.md. Cells of mAP are ``mean ± std`` over the seeds; mu* and every other choice was made on val."""
    k, get = preset.main_k, ev.get
    n = ev.rows[0]["num_videos"]
    chosen_on = "val" if cfg.split == "val" else "the val split (never on test)"
    out = [f"# AdaFrame experiment report ({cfg.preset} preset)", "",
           f"Data `{cfg.data}`, evaluated on the **{cfg.split}** split ({n} videos). Cost model: backbone "
           f"{cost.backbone_gflops:g} GFLOPs per frame, global memory {cost.memory_gflops_per_frame:g} GFLOPs per frame "
           f"({m} frames unless stated), plus each model's own head, counted. {len(plan)} settings in `{cfg.out / 'runs'}`, "
           f"each trained with {cfg.seeds} seed(s) from {cfg.seed} (mAP: mean ± std over seeds) with the "
           f"`{preset.train_preset}` preset. mu* of an AdaFrame run is the mu of the sweep {list(preset.mus)} with the "
           f"fewest frames whose mAP is within {MAP_TOLERANCE:g} point of K fixed steps, **chosen on {chosen_on}**.", ""]
    out += _table1(preset, get, chosen, delta, m, plan)
    out += _ablations(get, k, chosen, plan)
    out += _figure3(preset, val, get, k, figures)
    out += _table2(preset, get, k, chosen, m, stored_memory, cost, plan)
    out += _table3(preset, get, k, chosen)
    out += _stop_rules(preset, sweep, get, k, figures)
    out += _stops_and_jumps(cfg, preset, get, k, chosen, figures)
    out += _every_setting(cfg, ev)
    return "\n".join(out)


def _table1(preset: ReportPreset, get: Callable[..., dict], chosen: dict, delta: int, m: int, plan: Plan) -> list[str]:
    """Table 1: sampling K+Delta frames against AdaFrame K -> K'."""
    out: list[str] = []
    out += ["## Table 1: sampling K+Delta frames vs. AdaFrame K -> K'", "",
            f"Delta = {delta}: the global memory's cost ({m} frames) in backbone frames, rounded up, "
            "so the baselines get at least AdaFrame's compute. R: random frame in each of the segments, U: uniform. "
            "k-center, motion-guided: the K+Delta frames a training-free selector picks from the global memory "
            "(models/selectors.py). AdaFrame, uniform / random policy: the same trained AdaFrame network reading K uniformly spaced (or random) "
            "frames instead of its policy's, which measures what the learned policy adds. One-step sampler: K of the "
            "memory's slots chosen at once and read by a pooled classifier trained on random frames (models/sampler.py); "
            "its classifier on K uniform frames is what its policy adds to.", ""]
    header = ["Method"] + [f"K={kk}: frames" for kk in preset.ks] + [f"K={kk}: mAP" for kk in preset.ks]
    rows = []
    for method, run in (("AvgPooling", lambda kk: "avgpool"), ("LSTM", lambda kk: f"lstm-{kk + delta}")):
        for s, tag in (("random", "R"), ("uniform", "U")):
            picks = [get(run(kk), kk + delta, s) for kk in preset.ks]
            rows.append([f"{method} {tag}"] + [f"{tag}{kk + delta}" for kk in preset.ks] + [mean_std(r) for r in picks])
    for method, run in (("AvgPooling", lambda kk: "avgpool"), ("LSTM", lambda kk: f"lstm-{kk + delta}")):
        for s, title in SELECTORS.items():
            picks = [get(run(kk), kk + delta, s) if kk + delta <= m else None for kk in preset.ks]
            rows.append([f"{method}, {title}"] + [f"{kk + delta}" for kk in preset.ks] + [mean_std(r) if r else None for r in picks])
    for policy in ("random", "uniform"):
        rows.append([f"AdaFrame, {policy} policy"] + [f"{kk}" for kk in preset.ks]
                    + [mean_std(get(f"adaframe-{kk}", kk, policy=policy)) for kk in preset.ks])
    for policy, title in (("uniform", "One-step sampler's classifier, uniform"), ("learned", "One-step sampler, K slots")):
        rows.append([title] + [f"{kk}" for kk in preset.ks] + [mean_std(get(f"sampler-{kk}", kk, policy=policy))
                                                                if f"sampler-{kk}" in plan else None for kk in preset.ks])
    rows.append(["AdaFrame, K fixed steps"] + [f"{kk}" for kk in preset.ks] + [mean_std(get(f"adaframe-{kk}", kk)) for kk in preset.ks])
    best = {kk: chosen[f"adaframe-{kk}"] for kk in preset.ks}
    rows.append(["AdaFrame, adaptive (mu*)"] + [f"{kk} -> {best[kk]['avg_frames']:.2f} (mu {format_cell(best[kk]['mu'])})" for kk in preset.ks]
                + [mean_std(best[kk]) for kk in preset.ks])
    rows.append(["learned minus uniform policy"] + ["" for _ in preset.ks]
                + [f"{get(f'adaframe-{kk}', kk)['mAP'] - get(f'adaframe-{kk}', kk, policy='uniform')['mAP']:+.2f}" for kk in preset.ks])
    out += [markdown_table(header, rows), ""]
    return out


def _ablations(get: Callable[..., dict], k: int, chosen: dict, plan: Plan) -> list[str]:
    """What makes the policy work: the options that separate the default agent from the paper's (when trained)."""
    out: list[str] = []
    ablations = [(f"adaframe-{k}", "learned", "default: memory read by the policy, slots, mixed prediction with the temporal classifier, "
                                              "positions, the prediction critic refit on val, the policy checked on val"),
                 (f"adaframe-{k}", "policy", "the default, always by its policy (no check against the scan)")]
    ablations += [(f"adaframe-{k}-{name}", "learned", title) for name, title in ABLATION_TITLES.items() if f"adaframe-{k}-{name}" in plan]
    if len(ablations) > 2:
        out += [f"## What makes the policy work (AdaFrame-{k})", "",
                "Each option of `adaframe train` that separates the default agent from the paper's (docs/design.md: Choices the "
                "paper leaves open), alone and together. Uniform policy: the same network on K uniform frames; evidence: "
                "the share of videos whose frames include one that shows the class (data with `evidence.csv` only).", ""]
        rows = []
        for run, policy, title in ablations:
            fixed, uniform, mu = get(run, k, policy=policy), get(run, k, policy="uniform"), chosen[run]
            if policy == "policy":
                mu = get(run, k, stop=None if mu["mu"] is None else StopRule("utility", mu["mu"]), policy="policy")
            hit = fixed.get("evidence_hit")
            rows.append([title, mean_std(fixed), mean_std(uniform), f"{fixed['mAP'] - uniform['mAP']:+.2f}", fixed["avg_frames"],
                         mean_std(mu), mu["avg_frames"], mu_text(mu), None if hit is None else 100 * hit,
                         None if hit is None else 100 * fixed["evidence_hit_uniform"]])
        out += [markdown_table(["Agent", "mAP, K steps", "mAP, uniform policy", "learned - uniform", "frames", "mAP, mu*",
                                "frames, mu*", "mu*", "evidence found (%)", "evidence, uniform (%)"], rows), ""]
    return out


def _figure3(preset: ReportPreset, val: Evaluator, get: Callable[..., dict], k: int, figures: dict) -> list[str]:
    """Figure 3 and AdaFrame against the agents that also learn where to look, at no more GFLOPs."""
    out: list[str] = []
    out += ["## Figure 3: mAP vs. GFLOPs of every method", "", f"![Figure 3]({figures['fig3']})", "",
            "AdaFrame against the methods that also learn where to look, each stopped by its stop head (p(stop) >= 0.5) "
            f"and run for all {k} steps: the AdaFrame setting (any K of {list(preset.ks)}, K steps or any mu) most accurate "
            "on val among those that cost no more there. When every AdaFrame setting costs more, its cheapest one is shown.", ""]
    settings = [(f"adaframe-{kk}", kk, stop) for kk in preset.ks for stop in [None] + [StopRule("utility", mu) for mu in preset.mus]]
    rows = []
    for (model, title), stop in itertools.product(STOP_AGENT_TITLES.items(), (StopRule("learned", 0.5), None)):
        r, rv = get(model, k, stop=stop), val.get(model, k, stop=stop)
        title = f"{title}, " + ("p(stop) >= 0.5" if stop else f"{k} steps")
        cheaper = [x for x in settings if val.get(x[0], x[1], stop=x[2])["gflops_per_video"] <= rv["gflops_per_video"] + 1e-9]
        if cheaper:
            run, kk, st = max(cheaper, key=lambda x: val.get(x[0], x[1], stop=x[2])["mAP"])
            best_row = get(run, kk, stop=st)
            verdict = "yes" if best_row["mAP"] > r["mAP"] else "no"
        else:
            run, kk, st = min(settings, key=lambda x: val.get(x[0], x[1], stop=x[2])["gflops_per_video"])
            best_row = get(run, kk, stop=st)
            verdict = f"not at equal cost: its cheapest setting costs {best_row['gflops_per_video'] - r['gflops_per_video']:.2f} GFLOPs more"
        setting = f"AdaFrame-{kk}, " + ("K steps" if st is None else f"mu {st.threshold:g}")
        rows.append([title, mean_std(r), r["avg_frames"], r["gflops_per_video"], setting, mean_std(best_row), best_row["avg_frames"],
                     best_row["gflops_per_video"], verdict])
    out += [markdown_table(["Method", "mAP", "frames", "GFLOPs", "AdaFrame setting", "its mAP", "its frames", "its GFLOPs",
                            "AdaFrame more accurate at <= GFLOPs?"], rows), ""]
    return out


def _table2(preset: ReportPreset, get: Callable[..., dict], k: int, chosen: dict, m: int, stored_memory: int, cost: CostModel, plan: Plan) -> list[str]:
    """Table 2: the global memory's size."""
    out: list[str] = []
    out += [f"## Table 2: global memory (AdaFrame-{k})", ""]
    rows = []
    for mem in preset.memory_ablation:
        run = f"adaframe-{k}" if mem == m else f"adaframe-{k}-memory{mem}"
        if run not in plan:
            rows.append([f"{mem}", None, None, None, None, None, f"the data stores {stored_memory} memory frames"])
            continue
        fixed, mu = get(run, k), chosen[run]
        rows.append([f"{mem}", mem * cost.memory_gflops_per_frame, mean_std(fixed), mean_std(mu), mu["avg_frames"],
                     mu["gflops_per_video"], mu_text(mu)])
    out += [markdown_table(["Memory frames", "memory GFLOPs", "mAP, K steps", "mAP, mu*", "frames, mu*", "GFLOPs, mu*", "note"], rows), ""]
    return out


def _table3(preset: ReportPreset, get: Callable[..., dict], k: int, chosen: dict) -> list[str]:
    """Table 3: reward functions."""
    out: list[str] = []
    out += [f"## Table 3: reward functions (AdaFrame-{k})", "",
            "PREDICTION: r_t = p_t(gt). PREDICTION TRANSITION: r_t = p_t(gt) - p_{t-1}(gt). Margin: "
            "r_t = max(0, m_t - max_{t'<t} m_t'), m_t = p_t(gt) - max_{c != gt} p_t(c).", ""]
    rows = []
    for reward in preset.rewards:
        run = f"adaframe-{k}" if reward == "margin" else f"adaframe-{k}-{reward}"
        fixed, mu = get(run, k), chosen[run]
        rows.append([REWARD_NAMES[reward], mean_std(fixed), mean_std(mu), mu["avg_frames"], mu_text(mu)])
    out += [markdown_table(["Reward", "mAP, K steps", "mAP, mu*", "frames, mu*", "mu*"], rows), ""]
    return out


def _stop_rules(preset: ReportPreset, sweep: Callable[..., list[dict]], get: Callable[..., dict], k: int, figures: dict) -> list[str]:
    """Stopping by utility against by entropy."""
    out: list[str] = []
    out += [f"## Stopping by utility vs. by entropy (AdaFrame-{k})", "", f"![stop rules]({figures['stop_rules']})", "",
            "Entropy: stop once the prediction's entropy / log C falls below the threshold. For each entropy threshold, "
            "the utility setting with the closest number of frames:", ""]
    rows = []
    util = sweep(f"adaframe-{k}", k)
    for e in preset.entropies:
        r = get(f"adaframe-{k}", k, stop=StopRule("entropy", e))
        u = min(util, key=lambda a: abs(a["avg_frames"] - r["avg_frames"]))
        rows.append([f"{e:g}", r["avg_frames"], mean_std(r), f"{u['mu']:g}", u["avg_frames"], mean_std(u)])
    out += [markdown_table(["entropy <", "frames", "mAP", "mu", "frames", "mAP"], rows), ""]
    return out


def _stops_and_jumps(cfg: ReportConfig, preset: ReportPreset, get: Callable[..., dict], k: int, chosen: dict, figures: dict) -> list[str]:
    """Figures 4 and 5 (where AdaFrame stops) and the share of videos jumping back."""
    best = {kk: chosen[f"adaframe-{kk}"] for kk in preset.ks}
    out: list[str] = []
    main = chosen[f"adaframe-{k}"]
    how = f"mu* = {main['mu']:g}" if main["mu"] is not None else "K steps"
    out += [f"## Figure 4: where AdaFrame-{k} stops ({how}, seed {cfg.seed})", "", f"![Figure 4]({figures['fig4']})", "",
            f"## Figure 5: stopping step per class ({how}, seed {cfg.seed})", "", f"![Figure 5]({figures['fig5']})", "",
            "## Backward jumps", "", "Share of videos whose policy jumps backward at least once (FastForward cannot).", ""]
    rows = [[f"AdaFrame-{kk}, K steps", get(f"adaframe-{kk}", kk)["backward_jumps"] * 100] for kk in preset.ks]
    rows += [[f"AdaFrame-{kk}, mu*", best[kk]["backward_jumps"] * 100] for kk in preset.ks]
    rows += [[title, get(model, k, stop=StopRule("learned", 0.5))["backward_jumps"] * 100] for model, title in STOP_AGENT_TITLES.items()]
    out += [markdown_table(["Policy", "videos jumping back (%)"], rows), ""]
    return out


def _every_setting(cfg: ReportConfig, ev: Evaluator) -> list[str]:
    """Every setting evaluated."""
    out: list[str] = []
    out += [f"## Every setting evaluated ({cfg.split})", ""]
    rows = [[r["run"], r["sampling"] if r["policy"] in (None, "learned") else f"{r['policy']} policy", r["frames"],
             r["stop_rule"] or "-", mean_std(r), r["top1"], r["avg_frames"], r["avg_steps"], r["gflops_per_video"],
             r["backward_jumps"] * 100 if KINDS[r["model"]].agent else None] for r in ev.rows]
    out += [markdown_table(["run", "sampling", "K", "stop", "mAP", "top-1", "frames", "steps", "GFLOPs", "jump back (%)"], rows), ""]
    return out
