"""``adaframe report``: the paper's experiments (Sections 4.2-4.3) on any feature data set, as one report.

Trains every run the comparison needs (reusing finished ones), evaluates them all on one split,
and writes ``REPORT_DIR/report.md`` with:

* Table 1: AvgPooling and LSTM over K+Delta random (R) or uniform (U) frames against AdaFrame-K,
  which looks at K' <= K frames with adaptive lookahead. Delta is the global memory's cost in
  backbone frames, rounded up, so the baselines never get less compute;
* Figure 3: mAP against GFLOPs for every method, AdaFrame-K over a sweep of mu, FrameGlimpse and
  FastForward (and their -G variants) over a sweep of their stop threshold;
* Table 2 (global memory of 0/12/16/32 frames), Table 3 (reward functions), stop by utility vs by
  entropy, the share of videos whose policy jumps backward;
* Figure 4 (videos stopping at each step, with their accuracy) and Figure 5 (per class).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from adaframe.config import TrainConfig
from adaframe.data import FeatureDataset, read_spec
from adaframe.demo import is_finished
from adaframe.evaluate import evaluate_loaded, format_cell, load_run, markdown_table
from adaframe.figures import Point, Series, plot_class_stops, plot_stop_steps, plot_tradeoff
from adaframe.inference import Result, StopRule
from adaframe.metrics import CostModel
from adaframe.utils import AdaframeError, atomic_write, resolve_device, write_json


@dataclass(frozen=True)
class ReportPreset:
    """What to train and how to sweep; ``quick`` fits the synthetic default in < 30 min on 2 CPU cores."""

    train_preset: Literal["fast", "paper"]
    avgpool_epochs: int | None
    """AvgPooling is a linear classifier: it converges long before the recurrent models"""
    ks: tuple[int, ...] = (3, 5, 10)
    main_k: int = 10
    """the K of the ablations, FrameGlimpse and FastForward"""
    memory_frames: int = 16
    memory_ablation: tuple[int, ...] = (0, 12, 16, 32)
    rewards: tuple[str, ...] = ("prediction", "transition", "margin")
    mus: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
    entropies: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)
    stop_thresholds: tuple[float, ...] = (0.5, 0.8, 0.95, 0.99)
    avgpool_frames: tuple[int, ...] = (1, 3, 5, 10, 25)


PRESETS = {"quick": ReportPreset("fast", 10), "paper": ReportPreset("paper", None)}
STOP_AGENT_TITLES = {"frameglimpse": "FrameGlimpse", "frameglimpse-g": "FrameGlimpse-G",
               "fastforward": "FastForward", "fastforward-g": "FastForward-G"}
REWARD_NAMES = {"prediction": "PREDICTION", "transition": "PREDICTION TRANSITION", "margin": "margin (AdaFrame)"}
MAP_TOLERANCE = 1.0
"""mu* of AdaFrame-K: the sweep's mu with the fewest frames whose mAP is within this many points of K fixed steps"""


@dataclass
class ReportConfig:
    """Train what is missing, evaluate every method and ablation, write report.md and its figures."""

    data: Path
    """feature data set (see README: Feature data set layout)"""
    out: Path
    """report directory: report.md, results.json, figures, per-video CSVs, and the runs in OUT/runs"""
    preset: Literal["quick", "paper"] = "quick"
    """quick: the 'fast' optimiser preset, minutes per run; paper: Section 4.1's SGD schedule"""
    split: Literal["val", "test"] = "val"
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


def overhead_frames(memory_frames: int, cost: CostModel) -> int:
    """Delta: the global memory's cost in backbone frames, rounded up (AdaFrame's heads cost far less than a frame)."""
    return max(1, math.ceil(memory_frames * cost.memory_gflops_per_frame / cost.backbone_gflops))


def plan_runs(cfg: ReportConfig, preset: ReportPreset, stored_memory: int, delta: int) -> dict[str, TrainConfig]:
    """Every run of the report, by name (its directory under OUT/runs)."""
    runs = cfg.out / "runs"

    def run(name: str, model: str, frames: int, **kw: object) -> TrainConfig:
        kw.update({key: v for key, v in (("epochs", cfg.epochs), ("hidden", cfg.hidden)) if v is not None})
        return TrainConfig(cfg.data, runs / name, model=model, frames=frames, preset=preset.train_preset,  # type: ignore[arg-type]
                           device=cfg.device, seed=cfg.seed, progress=cfg.progress, **kw)  # type: ignore[arg-type]

    k, m = preset.main_k, min(preset.memory_frames, stored_memory)
    plan = {"avgpool": run("avgpool", "avgpool", k, **({"epochs": preset.avgpool_epochs} if preset.avgpool_epochs else {}))}
    for n in sorted({kk + delta for kk in preset.ks}):
        plan[f"lstm-{n}"] = run(f"lstm-{n}", "lstm", n)
    for kk in preset.ks:
        plan[f"adaframe-{kk}"] = run(f"adaframe-{kk}", "adaframe", kk, memory_frames=m)
    for mem in preset.memory_ablation:
        if mem != m and mem <= stored_memory:
            plan[f"adaframe-{k}-memory{mem}"] = run(f"adaframe-{k}-memory{mem}", "adaframe", k, memory_frames=mem)
    for reward in preset.rewards:
        if reward != "margin":
            plan[f"adaframe-{k}-{reward}"] = run(f"adaframe-{k}-{reward}", "adaframe", k, memory_frames=m, reward=reward)
    for model in STOP_AGENT_TITLES:
        plan[model] = run(model, model, k, **({"memory_frames": m} if model.endswith("-g") else {}))
    return plan


class Evaluator:
    """Evaluate settings of the runs on one split, loading each run once; keeps every row and result by setting.

    A setting is ``(run, frames, sampling, stop)``; agents pick their own frames, so their sampling is "uniform".
    """

    def __init__(self, plan: dict[str, TrainConfig], split: str, device: str, cost: CostModel, seed: int):
        self.plan, self.split, self.device, self.cost, self.seed = plan, split, resolve_device(device), cost, seed
        self.loaded: dict[str, tuple] = {}
        self.done: dict[tuple, tuple[dict, Result]] = {}  # insertion order = evaluation order

    def __call__(self, run: str, frames: int | None, sampling: str = "uniform", stop: StopRule | None = None) -> dict:
        if run not in self.loaded:
            self.loaded[run] = load_run(self.plan[run].out, self.plan[run].data, self.split, self.device)
        model, payload, dataset = self.loaded[run]
        row, res = evaluate_loaded(model, payload, dataset, frames, sampling, stop, device=self.device,  # type: ignore[arg-type]
                                   backbone_gflops=self.cost.backbone_gflops, memory_gflops=self.cost.memory_gflops_per_frame,
                                   seed=self.seed)
        row = {"run": run, "stop_rule": None if stop is None else stop.describe(), **row}
        self.done[(run, frames, sampling, stop)] = (row, res)
        return row

    @property
    def rows(self) -> list[dict]:
        return [row for row, _ in self.done.values()]

    def get(self, run: str, frames: int | None, sampling: str = "uniform", stop: StopRule | None = None) -> dict:
        """The row of a setting evaluated before."""
        return self.done[(run, frames, sampling, stop)][0]

    def result(self, run: str, frames: int | None, sampling: str = "uniform", stop: StopRule | None = None) -> Result:
        return self.done[(run, frames, sampling, stop)][1]


def pick_mu(sweep: list[dict], fixed: dict) -> dict:
    """mu*: the fewest frames among the sweep's points within MAP_TOLERANCE of K fixed steps (else K fixed)."""
    good = [r for r in sweep if r["mAP"] >= fixed["mAP"] - MAP_TOLERANCE]
    return min(good, key=lambda r: (r["avg_frames"], -r["mAP"])) if good else fixed


def mu_text(row: dict) -> str:
    return f"mu* {row['mu']:g}" if row["mu"] is not None else f"no mu within {MAP_TOLERANCE:g} point: K steps"


def run_report(cfg: ReportConfig) -> dict:
    """The ``adaframe report`` command; returns what it writes to OUT/results.json."""
    from adaframe.train import train  # tensorboard is slow to import

    resolve_device(cfg.device)
    preset = PRESETS[cfg.preset]
    probe = FeatureDataset(cfg.data, "train")
    stored_memory = probe.memory_frames
    if stored_memory < 1:
        raise AdaframeError(f"{cfg.data} has no global memory (memory/): AdaFrame and the -G variants need it")
    FeatureDataset(cfg.data, cfg.split, classes=probe.classes, memory_frames=0)  # fail now, not after training
    spec = read_spec(cfg.data)
    cost = CostModel(spec["backbone"]["gflops"], spec["memory_backbone"]["gflops"], 0.0) if spec else CostModel()
    m = min(preset.memory_frames, stored_memory)
    delta = overhead_frames(m, cost)
    plan = plan_runs(cfg, preset, stored_memory, delta)

    for i, (name, tc) in enumerate(plan.items(), 1):
        if is_finished(tc):
            tqdm.write(f"[train {i}/{len(plan)}] reusing {tc.out}")
            continue
        what = "" if tc.model in ("avgpool", "lstm") else f", memory {tc.memory_frames}, reward {tc.reward}"
        tqdm.write(f"[train {i}/{len(plan)}] {name}: {tc.model}, K={tc.frames}{what}, {tc.epochs} epochs")
        train(replace(tc, overwrite=True))  # its own run directory, not finished: start it again

    ev = Evaluator(plan, cfg.split, cfg.device, cost, cfg.seed)
    k = preset.main_k
    jobs: list[tuple] = []  # (run, frames, sampling, stop), evaluated in order with one progress bar
    jobs += [("avgpool", n, s) for n in sorted({*preset.avgpool_frames, *(kk + delta for kk in preset.ks)}) for s in ("uniform", "random")]
    jobs += [(f"lstm-{kk + delta}", kk + delta, s) for kk in preset.ks for s in ("uniform", "random")]
    for kk in preset.ks:
        jobs += [(f"adaframe-{kk}", kk, "uniform", None)] + [(f"adaframe-{kk}", kk, "uniform", StopRule("utility", mu)) for mu in preset.mus]
    jobs += [(f"adaframe-{k}", k, "uniform", StopRule("entropy", e)) for e in preset.entropies]
    ablations = [name for name in plan if name.startswith(f"adaframe-{k}-")]
    for name in ablations:
        jobs += [(name, k, "uniform", None)] + [(name, k, "uniform", StopRule("utility", mu)) for mu in preset.mus]
    for model in STOP_AGENT_TITLES:
        jobs += [(model, k, "uniform", None)] + [(model, k, "uniform", StopRule("learned", t)) for t in preset.stop_thresholds]
    for job in tqdm(jobs, desc="evaluate", unit="setting", disable=not cfg.progress):
        ev(*job)

    def sweep(run: str, kk: int) -> list[dict]:
        return [ev.get(run, kk, stop=StopRule("utility", mu)) for mu in preset.mus]

    chosen = {kk: pick_mu(sweep(f"adaframe-{kk}", kk), ev.get(f"adaframe-{kk}", kk)) for kk in preset.ks}
    cfg.out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(cfg, preset, ev, sweep, chosen, delta, probe.classes)
    text = render(cfg, preset, ev, sweep, chosen, delta, m, stored_memory, cost, plan, figures)
    atomic_write(cfg.out / "report.md", lambda p: p.write_text(text))
    summary = {"preset": asdict(preset), "split": cfg.split, "delta": delta, "memory_frames": m,
               "runs": {n: tc.to_dict() for n, tc in plan.items()}, "rows": ev.rows,
               "mu_star": {str(kk): r["mu"] for kk, r in chosen.items()}}
    write_json(cfg.out / "results.json", summary)
    tqdm.write(f"wrote {cfg.out / 'report.md'} ({len(ev.rows)} settings, {len(plan)} runs) and {', '.join(figures.values())}")
    return summary


def write_figures(cfg: ReportConfig, preset: ReportPreset, ev: Evaluator, sweep, chosen: dict, delta: int,
                  classes: list[str]) -> dict[str, str]:
    k, get = preset.main_k, ev.get

    def points(rows: list[dict], label) -> list[Point]:
        return [Point(r["gflops_per_video"], r["mAP"], label(r)) for r in rows]

    series = [Series("AvgPooling, U frames", points([r for r in ev.rows if r["run"] == "avgpool" and r["sampling"] == "uniform"],
                                                     lambda r: f"U{r['frames']}")),
              Series("LSTM, U frames", points([get(f"lstm-{n}", n) for n in sorted({kk + delta for kk in preset.ks})],
                                              lambda r: f"U{r['frames']}"))]
    for kk in preset.ks:
        rows = [get(f"adaframe-{kk}", kk)] + sweep(f"adaframe-{kk}", kk)
        ends = {preset.mus[0], preset.mus[-1]}  # label K steps and the sweep's ends; report.md has every number
        series.append(Series(f"AdaFrame-{kk} (K steps, and mu from {preset.mus[0]:g} to {preset.mus[-1]:g})",
                             points(rows, lambda r: "K" if r["mu"] is None else f"\u03bc={r['mu']:g}" if r["mu"] in ends else "")))
    for model, title in STOP_AGENT_TITLES.items():
        rows = [get(model, k, stop=StopRule("learned", t)) for t in preset.stop_thresholds] + [get(model, k)]
        ends = {preset.stop_thresholds[0], preset.stop_thresholds[-1]}

        def label(r: dict) -> str:
            return "K" if r["threshold"] is None else f"p\u2265{r['threshold']:g}" if r["threshold"] in ends else ""

        series.append(Series(f"{title} (stop at p(stop) \u2265 {preset.stop_thresholds[0]:g} to "
                             f"{preset.stop_thresholds[-1]:g}, or K steps)", points(rows, label)))
    name = (cfg.out / "fig3_map_vs_gflops.png")
    plot_tradeoff(series, name, f"Figure 3: mAP vs. computation ({cfg.split}, {ev.rows[0]['num_videos']} videos)")

    stop_rules = [Series("stop by utility (adaptive lookahead, \u03bc)",
                         points(sweep(f"adaframe-{k}", k), lambda r: f"{r['mu']:g}")),
                  Series("stop by entropy (threshold)",
                         points([get(f"adaframe-{k}", k, stop=StopRule("entropy", e)) for e in preset.entropies],
                                lambda r: f"{r['threshold']:g}"))]
    rules = cfg.out / "stop_utility_vs_entropy.png"
    plot_tradeoff(stop_rules, rules, f"AdaFrame-{k}: stopping by utility vs. by prediction entropy")

    best = chosen[k]
    res = ev.result(f"adaframe-{k}", k, stop=StopRule("utility", best["mu"]) if best["mu"] is not None else None)
    correct = res.scores.argmax(1) == res.labels
    how = f"\u03bc={best['mu']:g}" if best["mu"] is not None else "K steps"
    fig4, fig5 = cfg.out / "fig4_stop_steps.png", cfg.out / "fig5_class_stops.png"
    plot_stop_steps(res.steps, correct, k, fig4, f"Figure 4: where AdaFrame-{k} ({how}) stops, and how accurate it is there")
    plot_class_stops(res.steps, res.labels, classes, k, fig5, f"Figure 5: AdaFrame-{k} ({how}) stopping step per class")
    return {"fig3": name.name, "stop_rules": rules.name, "fig4": fig4.name, "fig5": fig5.name}


def render(cfg: ReportConfig, preset: ReportPreset, ev: Evaluator, sweep, chosen: dict, delta: int, m: int,
           stored_memory: int, cost: CostModel, plan: dict, figures: dict) -> str:
    k, get = preset.main_k, ev.get
    n = ev.rows[0]["num_videos"]
    out = [f"# AdaFrame experiment report ({cfg.preset} preset)", "",
           f"Data `{cfg.data}`, evaluated on the **{cfg.split}** split ({n} videos). Cost model: backbone "
           f"{cost.backbone_gflops:g} GFLOPs per frame, global memory {cost.memory_gflops_per_frame:g} GFLOPs per frame "
           f"({m} frames unless stated), plus each model's own head, counted. {len(plan)} runs in `{cfg.out / 'runs'}`, "
           f"trained with the `{preset.train_preset}` optimiser preset, seed {cfg.seed}. "
           f"mu* of AdaFrame-K is the mu of the sweep {list(preset.mus)} with the fewest frames whose mAP is within "
           f"{MAP_TOLERANCE:g} point of K fixed steps, **chosen on this same split**.", ""]

    # Table 1
    out += ["## Table 1: sampling K+Delta frames vs. AdaFrame K -> K'", "",
            f"Delta = {delta}: the global memory's cost ({m} frames) in backbone frames, rounded up, "
            "so the baselines get at least AdaFrame's compute. R: random frame in each of the segments, U: uniform.", ""]
    header = ["Method"] + [f"K={kk}: frames" for kk in preset.ks] + [f"K={kk}: mAP" for kk in preset.ks]
    rows = []
    for method, run in (("AvgPooling", lambda kk: "avgpool"), ("LSTM", lambda kk: f"lstm-{kk + delta}")):
        for s, tag in (("random", "R"), ("uniform", "U")):
            picks = [get(run(kk), kk + delta, s) for kk in preset.ks]
            rows.append([f"{method} {tag}"] + [f"{tag}{kk + delta}" for kk in preset.ks] + [r["mAP"] for r in picks])
    rows.append(["AdaFrame, K fixed steps"] + [f"{kk}" for kk in preset.ks] + [get(f"adaframe-{kk}", kk)["mAP"] for kk in preset.ks])
    rows.append(["AdaFrame, adaptive (mu*)"] + [f"{kk} -> {chosen[kk]['avg_frames']:.2f} (mu {format_cell(chosen[kk]['mu'])})" for kk in preset.ks]
                + [chosen[kk]["mAP"] for kk in preset.ks])
    out += [markdown_table(header, rows), ""]

    # Figure 3 and the comparison the paper draws from it
    out += ["## Figure 3: mAP vs. GFLOPs of every method", "", f"![Figure 3]({figures['fig3']})", "",
            "AdaFrame against the methods that also learn where to look, each stopped by its stop head (p(stop) >= 0.5) "
            f"and run for all {k} steps: the most accurate AdaFrame setting (any K of {list(preset.ks)}, K steps or any mu) "
            "that costs no more. When every AdaFrame setting costs more, its cheapest one is shown instead.", ""]
    ada = [r for kk in preset.ks for r in [get(f"adaframe-{kk}", kk)] + sweep(f"adaframe-{kk}", kk)]
    rows = []
    for (model, title), stop in itertools.product(STOP_AGENT_TITLES.items(), (StopRule("learned", 0.5), None)):
        r = get(model, k, stop=stop)
        title = f"{title}, " + ("p(stop) >= 0.5" if stop else f"{k} steps")
        cheaper = [a for a in ada if a["gflops_per_video"] <= r["gflops_per_video"] + 1e-9]
        if cheaper:
            best = max(cheaper, key=lambda a: a["mAP"])
            verdict = "yes" if best["mAP"] > r["mAP"] else "no"
        else:
            best = min(ada, key=lambda a: a["gflops_per_video"])
            verdict = f"not at equal cost: its cheapest setting costs {best['gflops_per_video'] - r['gflops_per_video']:.2f} GFLOPs more"
        setting = f"AdaFrame-{best['frames']}, " + ("K steps" if best["mu"] is None else f"mu {best['mu']:g}")
        rows.append([title, r["mAP"], r["avg_frames"], r["gflops_per_video"], setting, best["mAP"], best["avg_frames"],
                     best["gflops_per_video"], verdict])
    out += [markdown_table(["Method", "mAP", "frames", "GFLOPs", "AdaFrame setting", "its mAP", "its frames", "its GFLOPs",
                      "AdaFrame more accurate at <= GFLOPs?"], rows), ""]

    # Table 2
    out += [f"## Table 2: global memory (AdaFrame-{k})", ""]
    rows = []
    for mem in preset.memory_ablation:
        run = f"adaframe-{k}" if mem == m else f"adaframe-{k}-memory{mem}"
        if run not in plan:
            rows.append([f"{mem}", None, None, None, None, None, f"the data stores {stored_memory} memory frames"])
            continue
        fixed, best = get(run, k), pick_mu(sweep(run, k), get(run, k))
        rows.append([f"{mem}", mem * cost.memory_gflops_per_frame, fixed["mAP"], best["mAP"], best["avg_frames"],
                     best["gflops_per_video"], mu_text(best)])
    out += [markdown_table(["Memory frames", "memory GFLOPs", "mAP, K steps", "mAP, mu*", "frames, mu*", "GFLOPs, mu*", "note"], rows), ""]

    # Table 3
    out += [f"## Table 3: reward functions (AdaFrame-{k})", "",
            "PREDICTION: r_t = p_t(gt). PREDICTION TRANSITION: r_t = p_t(gt) - p_{t-1}(gt). Margin: "
            "r_t = max(0, m_t - max_{t'<t} m_t'), m_t = p_t(gt) - max_{c != gt} p_t(c).", ""]
    rows = []
    for reward in preset.rewards:
        run = f"adaframe-{k}" if reward == "margin" else f"adaframe-{k}-{reward}"
        fixed, best = get(run, k), pick_mu(sweep(run, k), get(run, k))
        rows.append([REWARD_NAMES[reward], fixed["mAP"], best["mAP"], best["avg_frames"], mu_text(best)])
    out += [markdown_table(["Reward", "mAP, K steps", "mAP, mu*", "frames, mu*", "mu*"], rows), ""]

    # Stop by utility vs. entropy
    out += [f"## Stopping by utility vs. by entropy (AdaFrame-{k})", "", f"![stop rules]({figures['stop_rules']})", "",
            "Entropy: stop once the prediction's entropy / log C falls below the threshold. For each entropy threshold, "
            "the utility setting with the closest number of frames:", ""]
    rows = []
    util = sweep(f"adaframe-{k}", k)
    for e in preset.entropies:
        r = get(f"adaframe-{k}", k, stop=StopRule("entropy", e))
        u = min(util, key=lambda a: abs(a["avg_frames"] - r["avg_frames"]))
        rows.append([f"{e:g}", r["avg_frames"], r["mAP"], f"{u['mu']:g}", u["avg_frames"], u["mAP"]])
    out += [markdown_table(["entropy <", "frames", "mAP", "mu", "frames", "mAP"], rows), ""]

    # Figures 4 and 5, backward jumps
    best = chosen[k]
    how = f"mu* = {best['mu']:g}" if best["mu"] is not None else "K steps"
    out += [f"## Figure 4: where AdaFrame-{k} stops ({how})", "", f"![Figure 4]({figures['fig4']})", "",
            f"## Figure 5: stopping step per class ({how})", "", f"![Figure 5]({figures['fig5']})", "",
            "## Backward jumps", "", "Share of videos whose policy jumps backward at least once (FastForward cannot).", ""]
    rows = [[f"AdaFrame-{kk}, K steps", get(f"adaframe-{kk}", kk)["backward_jumps"] * 100] for kk in preset.ks]
    rows += [[f"AdaFrame-{kk}, mu*", chosen[kk]["backward_jumps"] * 100] for kk in preset.ks]
    rows += [[title, get(model, k, stop=StopRule("learned", 0.5))["backward_jumps"] * 100] for model, title in STOP_AGENT_TITLES.items()]
    out += [markdown_table(["Policy", "videos jumping back (%)"], rows), ""]

    # Every setting
    out += ["## Every setting evaluated", ""]
    rows = [[r["run"], r["sampling"], r["frames"], r["stop_rule"] or "-", r["mAP"], r["top1"], r["avg_frames"], r["avg_steps"],
             r["gflops_per_video"], r["backward_jumps"] * 100 if r["model"] != "avgpool" and r["model"] != "lstm" else None]
            for r in ev.rows]
    out += [markdown_table(["run", "sampling", "K", "stop", "mAP", "top-1", "frames", "steps", "GFLOPs", "jump back (%)"], rows), ""]
    return "\n".join(out)

