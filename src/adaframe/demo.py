"""``adaframe demo``: synthetic data -> training -> fixed and adaptive inference -> Table 1 and a plot.

Trains AvgPooling and AdaFrame-K (K = 3, 5, 10) on the synthetic data set, evaluates them on its
val split the way Table 1 of the paper does, and checks the two claims the project reproduces:

1. AdaFrame-10 with adaptive lookahead (mu = 0.7) is at least as accurate as AvgPooling over
   25 uniform frames while looking at no more than 10 frames on average;
2. AdaFrame-K beats AvgPooling over K uniform frames for K = 3, 5, 10.

Finished runs and the data set are reused, so a second ``make demo`` only evaluates.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Literal

import torch
from tqdm import tqdm

from adaframe.checkpoint import CHECKPOINT
from adaframe.config import NOT_IN_RESULT, TrainConfig
from adaframe.evaluate import evaluate_loaded, format_table, load_run, markdown_table
from adaframe.inference import StopRule
from adaframe.synth import SynthConfig, generate
from adaframe.utils import AdaframeError, atomic_write, resolve_device, write_json

AVGPOOL_K = (1, 3, 5, 10, 25)
ADAFRAME_K = (3, 5, 10)
MUS = (0.3, 0.5, 0.7, 0.9)
CHECK_MU = 0.7


@dataclass
class DemoConfig:
    """Run the whole pipeline on synthetic data and print a Table-1-style comparison."""

    out: Path = Path("runs/demo")
    """directory for the data (OUT/data), the runs (OUT/runs) and results.json, table.md, map_vs_gflops.png"""
    quick: bool = False
    """a tiny data set and 2 epochs: a smoke test in seconds, not a result"""
    device: Literal["cpu", "cuda"] = "cpu"


PAPER_MEMORY = 16  # global-memory frames of the paper (the synthetic set stores 32 for the Table 2 ablation)


@dataclass(frozen=True)
class Setting:
    """One row of the table: a trained run evaluated one way."""

    method: str
    run: str
    frames: int
    sampling: Literal["uniform", "all", "policy"] = "uniform"
    mu: float | None = None

    @property
    def label(self) -> str:
        if self.sampling == "policy":
            return f"adaptive mu={self.mu}" if self.mu is not None else "fixed K steps"
        return "all frames" if self.sampling == "all" else self.sampling


def synth_config(quick: bool) -> SynthConfig:
    if quick:
        return SynthConfig(videos=120, classes=6, dim=32, memory_dim=16, min_frames=12, max_frames=30, max_evidence=3)
    return SynthConfig()


def train_configs(data: Path, runs: Path, quick: bool, device: str) -> dict[str, TrainConfig]:
    """AvgPooling (K only sets its validation during training: it trains on all frames) and AdaFrame-K."""
    extra = {"epochs": 2, "hidden": 32} if quick else {}
    cfgs = {"avgpool": TrainConfig(data, runs / "avgpool", model="avgpool", frames=10, preset="fast", device=device, **extra)}
    for k in ADAFRAME_K:
        cfgs[f"adaframe-{k}"] = TrainConfig(data, runs / f"adaframe-{k}", model="adaframe", frames=k, preset="fast", device=device,
                                            memory_frames=PAPER_MEMORY if not quick else None, **extra)
    return cfgs


def settings() -> list[Setting]:
    rows = [Setting("AvgPooling", "avgpool", k) for k in AVGPOOL_K]
    rows.append(Setting("AvgPooling", "avgpool", max(AVGPOOL_K), "all"))
    rows += [Setting(f"AdaFrame-{k}", f"adaframe-{k}", k, "policy") for k in ADAFRAME_K]
    rows += [Setting("AdaFrame-10", "adaframe-10", 10, "policy", mu) for mu in MUS]
    return rows


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


def is_finished(cfg: TrainConfig) -> bool:
    """A run is reusable when its checkpoint (one atomically written file) holds this config after every epoch."""
    path = cfg.out / CHECKPOINT
    if not path.is_file():
        return False
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        saved, epochs = payload["config"], payload["epoch"]
    except Exception:  # an older layout, or not ours: train it again
        return False
    want = {k: v for k, v in cfg.to_dict().items() if k not in NOT_IN_RESULT}
    have = {k: v for k, v in saved.items() if k not in NOT_IN_RESULT}
    return have == want and epochs == cfg.epochs


def train_runs(cfgs: dict[str, TrainConfig]) -> None:
    from adaframe.train import train  # tensorboard is slow to import

    for i, (name, cfg) in enumerate(cfgs.items(), 1):
        if is_finished(cfg):
            tqdm.write(f"[2/4] ({i}/{len(cfgs)}) reusing the finished run {cfg.out}")
            continue
        tqdm.write(f"[2/4] ({i}/{len(cfgs)}) training {name}: K={cfg.frames}, {cfg.epochs} epochs, hidden {cfg.hidden}")
        train(replace(cfg, overwrite=True))  # its own run directory, not finished: start it again


def evaluate_settings(cfgs: dict[str, TrainConfig], data: Path, device: str) -> list[dict]:
    """Evaluate every table row on val, loading each run and the split once."""
    dev = resolve_device(device)
    loaded: dict[str, tuple] = {}
    rows = []
    tqdm.write("[3/4] evaluating on val")
    for s in tqdm(settings(), desc="eval", unit="setting"):
        if s.run not in loaded:
            loaded[s.run] = load_run(cfgs[s.run].out, data, "val", dev)
        model, payload, dataset = loaded[s.run]
        r, _ = evaluate_loaded(model, payload, dataset, s.frames, "uniform" if s.sampling == "policy" else s.sampling,
                               None if s.mu is None else StopRule("utility", s.mu), device=dev)
        rows.append({"method": s.method, "run": s.run, "setting": s.label, "K": "all" if s.sampling == "all" else s.frames, **r})
    return rows


def _find(rows: list[dict], method: str, setting: str, k: int) -> dict:
    return next(r for r in rows if r["method"] == method and r["setting"] == setting and r["K"] == k)


def checks(rows: list[dict]) -> list[dict]:
    """The project's two claims, each with the numbers it was decided on."""
    ada = _find(rows, "AdaFrame-10", f"adaptive mu={CHECK_MU}", 10)
    u25 = _find(rows, "AvgPooling", "uniform", 25)
    first = {
        "name": "adaptive AdaFrame-10 matches AvgPooling-U25 with <= 10 frames",
        "passed": ada["mAP"] >= u25["mAP"] and ada["avg_frames"] <= 10,
        "detail": f"AdaFrame-10 (mu={CHECK_MU}) mAP {ada['mAP']:.2f}% with {ada['avg_frames']:.2f} frames "
                  f"vs AvgPooling-U25 mAP {u25['mAP']:.2f}% with {u25['avg_frames']:.2f} frames",
    }
    pairs = [(k, _find(rows, f"AdaFrame-{k}", "fixed K steps", k)["mAP"], _find(rows, "AvgPooling", "uniform", k)["mAP"]) for k in ADAFRAME_K]
    second = {
        "name": "AdaFrame-K beats AvgPooling-U-K for K = 3, 5, 10",
        "passed": all(a > b for _, a, b in pairs),
        "detail": "; ".join(f"K={k}: {a:.2f}% vs {b:.2f}%" for k, a, b in pairs),
    }
    return [first, second]


TABLE_HEADER = ["Method", "Sampling", "K", "mAP (%)", "Top-1 (%)", "Frames", "GFLOPs"]


def table_rows(rows: list[dict]) -> list[list[object]]:
    return [[r["method"], r["setting"], r["K"], r["mAP"], r["top1"], r["avg_frames"], r["gflops_per_video"]] for r in rows]


def markdown(rows: list[dict], results: list[dict], title: str) -> str:
    lines = [f"# {title}", "", markdown_table(TABLE_HEADER, table_rows(rows))]
    lines += ["", "Frames: distinct frames the backbone runs per video. GFLOPs: see README, 'How GFLOPs are counted'.", ""]
    lines += [f"- **{'PASS' if c['passed'] else 'FAIL'}** {c['name']}: {c['detail']}" for c in results]
    return "\n".join(lines) + "\n"


def _merge_coinciding(pts: list[dict], name: Callable[[dict], str]) -> dict[tuple[float, float], str]:
    """One label per distinct point, so settings with the same cost and mAP do not overprint each other."""
    merged: dict[tuple[float, float], list[str]] = {}
    for r in pts:
        merged.setdefault((round(r["gflops_per_video"], 2), round(r["mAP"], 2)), []).append(name(r))
    return {k: v[0] + "".join(", " + n.split("=")[-1] for n in v[1:]) for k, v in merged.items()}  # "mu=0.3, 0.5"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """mAP against GFLOPs per video: AvgPooling over K, AdaFrame-K fixed, AdaFrame-10 over mu."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=150)
    avg = sorted((r for r in rows if r["method"] == "AvgPooling"), key=lambda r: r["gflops_per_video"])
    fixed = [r for r in rows if r["setting"] == "fixed K steps"]
    adaptive = sorted((r for r in rows if r["setting"].startswith("adaptive")), key=lambda r: r["gflops_per_video"])
    # Where each series puts its labels (offset in points, alignment), by the label's index along
    # the series: AvgPooling below right, AdaFrame-K right of the (larger) square, the adaptive
    # curve alternately below and above, since its points sit close together.
    series = [
        (avg, "AvgPooling, uniform K frames (and all frames)", "o-", "tab:blue", 7,
         lambda r: "all" if r["K"] == "all" else f"U{r['K']}", lambda i: ((6, -12), "left")),
        (fixed, "AdaFrame-K, K fixed steps", "s", "tab:orange", 10, lambda r: f"K={r['K']}", lambda i: ((9, -3), "left")),
        (adaptive, "AdaFrame-10, adaptive lookahead", "^-", "tab:green", 7,
         lambda r: f"\u03bc={r['mu']}", lambda i: ((0, -14 if i % 2 == 0 else 8), "center")),
    ]
    for pts, label, style, color, size, name, place in series:
        ax.plot([r["gflops_per_video"] for r in pts], [r["mAP"] for r in pts], style, color=color, label=label,
                markersize=size, linewidth=1.5)
        for i, ((xi, yi), names) in enumerate(_merge_coinciding(pts, name).items()):
            # A merged label is long: centre it above the point, where it has the most room.
            offset, ha = ((0, 9), "center") if ", " in names else place(i)
            ax.annotate(names, (xi, yi), textcoords="offset points", xytext=offset, ha=ha, fontsize=8, color=color)
    ax.margins(x=0.06, y=0.1)  # room for the labels of the outermost points
    ax.set_xscale("log")  # costs span two orders of magnitude: 1 frame to every frame
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("GFLOPs per video (log scale)")
    ax.set_ylabel("mAP (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def run_demo(cfg: DemoConfig) -> dict:
    """The ``adaframe demo`` command; returns what it writes to OUT/results.json."""
    resolve_device(cfg.device)  # fail now, not after the data set is written
    synth = synth_config(cfg.quick)
    data = prepare_data(cfg.out, synth)
    cfgs = train_configs(data, cfg.out / "runs", cfg.quick, cfg.device)
    train_runs(cfgs)
    rows = evaluate_settings(cfgs, data, cfg.device)
    results = checks(rows)

    n = rows[0]["num_videos"]
    title = f"Synthetic val split ({n} videos){', --quick: not a result' if cfg.quick else ''}"
    tqdm.write(f"[4/4] results on the {title[0].lower() + title[1:]}\n")
    print(format_table(TABLE_HEADER, table_rows(rows)))
    print()
    for c in results:
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['name']}: {c['detail']}")
    summary = {"quick": cfg.quick, "synth": asdict(synth), "train": {k: c.to_dict() for k, c in cfgs.items()},
               "rows": rows, "checks": results}
    write_json(cfg.out / "results.json", summary)
    atomic_write(cfg.out / "table.md", lambda p: p.write_text(markdown(rows, results, title)))
    plot(rows, cfg.out / "map_vs_gflops.png", f"mAP vs. cost, {title[0].lower() + title[1:]}")
    print(f"\nwrote {cfg.out / 'results.json'}, {cfg.out / 'table.md'}, {cfg.out / 'map_vs_gflops.png'}")
    return summary
