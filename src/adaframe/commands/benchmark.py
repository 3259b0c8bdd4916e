"""``adaframe benchmark``: how fast AdaFrame trains and infers, against what the hardware can do.

Without ``--videos``: each workload on random tensors of the paper's sizes, as videos/s, FLOPs per batch
(``torch.utils.flop_counter``, 2 per multiply-add) and the fraction of a ``torch.mm`` of the same FLOPs' speed it
reaches, timed in the same run. With ``--videos DIR... --checkpoint RUN``: ``predict`` on video files, AdaFrame against
AvgPooling over ``--uniform`` uniform frames through the same decoding workers and backbone, per folder (videos/s,
frames decoded and run through the backbone per video); with ``--export DIR`` also the export on onnxruntime, compared
with PyTorch video by video.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import torch
from torch.utils.flop_counter import FlopCounterMode

from adaframe.data.features import Batch
from adaframe.evaluate.split import agent_batch
from adaframe.models.agent import AdaFrame, AgentConfig
from adaframe.report.tables import format_table
from adaframe.rl.rollout import StopRule
from adaframe.utils import AdaframeError, resolve_device

if TYPE_CHECKING:
    from adaframe.recognize.result import Recognition


@dataclass
class BenchmarkConfig:
    """Measure AdaFrame's training and inference speed on random tensors (no data set needed)."""

    device: Literal["cpu", "cuda"] = "cpu"
    hidden: int = 1024
    dim: int = 2048
    """backbone feature dim D (ResNet-101)"""
    memory_dim: int = 1280
    """global-memory feature dim Dm (MobileNetV2)"""
    frames: int | None = None
    """K: steps per video (default: 10, and with --videos the K the run was trained with)"""
    batch_size: int = 64
    memory_frames: int = 16
    classes: int = 200
    max_frames: int = 120
    """video lengths are drawn in [max_frames / 2, max_frames]"""
    mu: float = 0.7
    """margin of the adaptive-lookahead run (random weights: the steps it takes are printed)"""
    iters: int = 5
    """timed iterations of each workload"""
    warmup: int = 1
    seed: int = 0
    videos: tuple[Path, ...] = ()
    """folders (or lists, as 'extract' takes them) of video files: time 'predict' on them instead"""
    checkpoint: Path | None = None
    """with --videos: the AdaFrame run (trained on features from 'adaframe extract')"""
    uniform: int = 25
    """with --videos: frames of the uniform baseline"""
    workers: int = 2
    """with --videos: decoding processes"""
    video_batch: int = 4
    """with --videos: videos run together"""
    export: Path | None = None
    """with --videos: also run this export of the run ('adaframe export') on onnxruntime, timed beside PyTorch and
    compared with it (frames visited, labels, probabilities)"""
    ray_actors: tuple[int, ...] = ()
    """with --videos: also run the same videos end to end in one process and as the Ray Data pipeline of 'predict --ray'
    on a local Ray with each of these numbers of actors (e.g. --ray-actors 1 2), and say what Ray adds per video"""

    def __post_init__(self) -> None:
        if self.frames is None and not self.videos:
            self.frames = 10
        if bool(self.videos) != (self.checkpoint is not None) or (self.export is not None and not self.videos):
            raise AdaframeError("--videos and --checkpoint go together (and --export needs both)")
        if self.ray_actors and not self.videos:
            raise AdaframeError("--ray-actors times 'predict' on video files: give --videos and --checkpoint")
        if self.ray_actors:
            from adaframe.recognize.ray_pipeline import require_ray

            require_ray()
        if self.workers < 0 or self.uniform < 1 or self.video_batch < 1 or any(a < 1 for a in self.ray_actors):
            raise AdaframeError("need --workers >= 0, --uniform >= 1, --video-batch >= 1 and --ray-actors >= 1")
        sizes = ("hidden", "dim", "frames", "batch_size", "classes", "max_frames", "iters")
        bad = [f"--{n.replace('_', '-')}" for n in sizes if getattr(self, n) is not None and getattr(self, n) < 1]
        bad += [f"--{n.replace('_', '-')}" for n in ("memory_dim", "memory_frames", "warmup", "mu") if getattr(self, n) < 0]
        if bad:
            raise AdaframeError(f"invalid value for {', '.join(bad)}")


def random_batch(cfg: BenchmarkConfig, device: torch.device, generator: torch.Generator) -> Batch:
    b = cfg.batch_size
    lengths = torch.randint(max(cfg.max_frames // 2, 1), cfg.max_frames + 1, (b,), generator=generator)
    return Batch(
        features=torch.randn(b, cfg.max_frames, cfg.dim, generator=generator),
        lengths=lengths,
        memory=torch.randn(b, cfg.memory_frames, cfg.memory_dim, generator=generator),
        labels=torch.randint(0, cfg.classes, (b,), generator=generator),
        index=torch.arange(b),
    ).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device: torch.device, iters: int, warmup: int) -> float:
    """Mean wall time of ``fn`` after ``warmup`` untimed calls (which also fill allocator caches)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / iters


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call (forward and, if ``fn`` calls it, backward), 2 per multiply-add."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_seconds(flops: int, device: torch.device, iters: int, warmup: int) -> float:
    """Time of a plain fp32 ``torch.mm`` doing ``flops`` FLOPs: a square n x n x n product, n = cbrt(flops / 2)."""
    n = max(1, round((flops / 2) ** (1 / 3)))
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    # Rescale by the rounding of n so the time is for exactly `flops`.
    return seconds_per_call(lambda: torch.mm(a, b), device, iters, warmup) * flops / (2 * n**3)


def run_benchmark(cfg: BenchmarkConfig) -> list[dict]:
    """The ``adaframe benchmark`` command; returns one dict per workload."""
    if cfg.videos:
        return run_video_benchmark(cfg)
    from adaframe.rl.losses import agent_loss

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = AdaFrame(AgentConfig(cfg.dim, cfg.memory_dim, cfg.classes, cfg.hidden)).to(device).eval()
    # Training changes the weights, and with them where adaptive inference stops: train a copy.
    trained = copy.deepcopy(model).train()
    # Section 4.1's optimiser (SGD with momentum) so the step costs what training costs.
    optimizer = torch.optim.SGD(trained.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    batch = random_batch(cfg, device, torch.Generator().manual_seed(cfg.seed))
    policy_noise = torch.Generator(device=device).manual_seed(cfg.seed)

    def train_step() -> None:
        loss = agent_loss(trained, batch, cfg.frames, 0.9, 1.0, generator=policy_noise)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    adaptive = StopRule("utility", cfg.mu)
    adaptive_steps = float(agent_batch(model, batch, cfg.frames, adaptive).steps.float().mean())
    workloads: list[tuple[str, Callable[[], object]]] = [
        (f"train step (K={cfg.frames})", train_step),
        (f"inference, fixed K={cfg.frames}", lambda: agent_batch(model, batch, cfg.frames)),
        (f"inference, adaptive mu={cfg.mu} ({adaptive_steps:.1f} steps)", lambda: agent_batch(model, batch, cfg.frames, adaptive)),
    ]
    print(f"AdaFrame benchmark on {device} ({torch.get_num_threads()} threads): batch {cfg.batch_size}, "
          f"D={cfg.dim}, Dm={cfg.memory_dim}, Td={cfg.memory_frames}, hidden {cfg.hidden}, {cfg.classes} classes, "
          f"T<={cfg.max_frames}; {cfg.warmup} warm-up + {cfg.iters} timed iterations each")
    results = []
    for name, fn in workloads:
        flops = count_flops(fn)
        seconds = seconds_per_call(fn, device, cfg.iters, cfg.warmup)
        mm_seconds = matmul_seconds(flops, device, cfg.iters, cfg.warmup)
        results.append({
            "workload": name, "videos_per_s": cfg.batch_size / seconds, "gflop_per_batch": flops / 1e9,
            "achieved_gflop_per_s": flops / seconds / 1e9, "matmul_videos_per_s": cfg.batch_size / mm_seconds,
            "ratio": mm_seconds / seconds,
        })
    header = ["workload", "videos/s", "GFLOP/batch", "GFLOP/s", "matmul-equiv videos/s", "ratio"]
    print(format_table(header, [[r["workload"], r["videos_per_s"], r["gflop_per_batch"], r["achieved_gflop_per_s"],
                                 r["matmul_videos_per_s"], r["ratio"]] for r in results]))
    print("ratio = videos/s / matmul-equivalent videos/s: the fraction of a plain torch.mm's speed "
          "at the same FLOP count (FLOPs = 2 x multiply-adds)")
    return results


def _summary(results: list[Recognition], seconds: float, memory_frames: int) -> dict:
    ok = [r for r in results if r.error is None]
    mean = lambda key: sum(getattr(r, key) for r in ok) / len(ok) if ok else float("nan")  # noqa: E731
    return {"videos": len(results), "failed": len(results) - len(ok), "videos_per_s": len(results) / seconds,
            "decoded": mean("frames_decoded"), "backbone_frames": mean("backbone_calls"), "gflops": mean("gflops"),
            "memory_decoded": mean("memory_frames_decoded") / memory_frames if ok and ok[0].memory_frames_decoded is not None else None,
            # the decoding the frames used cost, beyond the memory pass
            "decoded_per_frame": sum((r.frames_decoded - (r.memory_frames_decoded or 0)) / max(r.frames_used, 1) for r in ok) / len(ok)
            if ok else float("nan"),
            "reading": ", ".join(f"{how} ({n})" for how, n in sorted(Counter(r.reading for r in ok).items(), key=str))}


def _timed(predict: Callable[[], list[Recognition]], memory_frames: int) -> tuple[list[Recognition], dict]:
    """``predict()``'s results and their ``_summary``, timed by the wall clock."""
    t0 = time.perf_counter()
    results = predict()
    return results, _summary(results, time.perf_counter() - t0, memory_frames)


def run_video_benchmark(cfg: BenchmarkConfig) -> list[dict]:
    """``benchmark --videos``: AdaFrame against uniformK on video files, per folder; one dict per folder and method."""
    from adaframe.data.video_lists import read_video_list, video_files
    from adaframe.recognize.recognizer import Recognizer
    from adaframe.recognize.uniform import UniformBaseline

    def files(src: Path) -> list[Path]:  # a folder: every video file in it (ids need not be unique here)
        return video_files(src) if src.is_dir() else [e.path for e in read_video_list(src)]

    device = resolve_device(cfg.device)
    sets = [(str(src), files(Path(src))) for src in cfg.videos]
    if empty := [name for name, paths in sets if not paths]:
        raise AdaframeError(f"--videos {empty[0]}: no video files found")
    rows, out, same, reading = [], [], [], []
    options = {"frames": cfg.frames, "mu": cfg.mu, "batch_size": cfg.video_batch}
    with contextlib.ExitStack() as stack:
        rec = stack.enter_context(Recognizer.from_run(cfg.checkpoint, device, workers=cfg.workers, **options))
        exported = None if cfg.export is None else stack.enter_context(Recognizer.from_export(cfg.export, device, cfg.workers, **options))
        if exported is not None and (exported.classes != rec.classes or exported.features != rec.features):
            raise AdaframeError(f"--export {cfg.export} is not an export of {cfg.checkpoint} (other classes or features)")
        spec, uniform, k = rec.features, f"uniform{cfg.uniform}", rec.frames or rec.trained_frames
        print(f"predict benchmark on {device} ({torch.get_num_threads()} threads, {cfg.workers} decoding workers, "
              f"{cfg.video_batch} videos a batch): backbone {spec['backbone']['name']} at {spec['backbone']['size']} px "
              f"({spec['backbone']['gflops']:.3f} GFLOPs a frame), memory of {rec.memory_frames} frames, "
              f"AdaFrame at most {k} steps with mu {cfg.mu}" + (" on PyTorch and onnxruntime" if exported else "")
              + f", against AvgPooling over {cfg.uniform} uniform frames")
        warm = sets[0][1][:1]  # start the workers and the backbones before any clock runs
        for r in (rec, exported):
            if r is not None:
                r.predict(warm)
        baseline = UniformBaseline(rec, cfg.uniform)
        baseline.predict(warm)
        method = f"AdaFrame-{k} mu {cfg.mu}"
        for name, paths in sets:
            for path in paths:  # the page cache holds every file before either method reads it
                if path.is_file():
                    with open(path, "rb") as f:
                        while f.read(1 << 24):
                            pass
            torch_results, ada = _timed(lambda: rec.predict(paths), rec.memory_frames)
            runs = [(method + (" (PyTorch)" if exported else ""), ada)]
            if exported is not None:
                onnx_results, onnx_summary = _timed(lambda: exported.predict(paths), rec.memory_frames)
                runs.append((f"{method} (onnxruntime)", onnx_summary))
                same.append((name, _agreement(torch_results, onnx_results)))
            _, uni = _timed(lambda: baseline.predict(paths, group=cfg.video_batch, prefetch=True), rec.memory_frames)
            for label, r in (*runs, (uniform, uni)):
                out.append({"set": name, "method": label, **r})
                rows.append([name, label, f"{r['videos']} ({r['failed']} failed)", r["videos_per_s"], r["decoded"],
                             "-" if r["memory_decoded"] is None else r["memory_decoded"], r["decoded_per_frame"], r["backbone_frames"],
                             r["gflops"]])
            ratio = {"set": name, "method": f"AdaFrame / {uniform}", "videos_per_s": ada["videos_per_s"] / uni["videos_per_s"],
                     "decoded": ada["decoded"] / uni["decoded"], "backbone_frames": ada["backbone_frames"] / uni["backbone_frames"],
                     "gflops": ada["gflops"] / uni["gflops"]}
            out.append(ratio)
            ratio["decoded_per_frame"] = ada["decoded_per_frame"] / uni["decoded_per_frame"]
            rows.append([name, ratio["method"], "", ratio["videos_per_s"], ratio["decoded"], "", ratio["decoded_per_frame"],
                         ratio["backbone_frames"], ratio["gflops"]])
            reading.append((name, ada["reading"]))
            if exported is not None:
                speed = {"set": name, "method": "onnxruntime / PyTorch", "videos_per_s": onnx_summary["videos_per_s"] / ada["videos_per_s"]}
                out.append(speed)
                rows.append([name, speed["method"], "", speed["videos_per_s"], "", "", "", "", ""])
    print(format_table(["videos", "method", "count", "videos/s", "decoded/video", "decoded/memory frame", "decoded/frame used",
                        "backbone frames/video", "GFLOPs/video"], rows))
    print("decoded: pictures the decoder decoded per video (memory pass and chosen frames, counting those it held back when a seek "
          "ended their run); decoded/memory frame: the memory "
          "pass's frames over the memory frames it gave (keyframe rule of memory_rule.py); decoded/frame used: the other frames decoded "
          "over the frames the backbone ran on; the ratio rows divide AdaFrame by the baseline"
          + (", and onnxruntime's speed by PyTorch's" if cfg.export else ""))
    for name, how in reading:
        print(f"files of {name} read by: {how}")
    for name, a in same:
        print(f"onnxruntime against PyTorch on {name}: {a['videos']} videos, the same frames visited in {a['same_frames']}, the same "
              f"label in {a['same_label']}, largest probability difference {a['largest_difference']:.2e}")
        out.append({"set": name, "method": "onnxruntime vs PyTorch", **a})
    if cfg.ray_actors:
        out += ray_benchmark(cfg, sets)
    return out


def ray_benchmark(cfg: BenchmarkConfig, sets: list[tuple[str, list[Path]]]) -> list[dict]:
    """``--ray-actors``: each set end to end (loading the run included, as a command does) in one process and through
    ``ray_pipeline.recognitions`` on a local Ray with each number of actors; then Ray's cost from runs on one video
    and on all of them with one actor: fixed (actors start, load the run) and per video (the slope beyond one process's)."""
    from adaframe.recognize import ray_pipeline
    from adaframe.recognize.recognizer import Recognizer

    options = {"frames": cfg.frames, "mu": cfg.mu, "batch_size": cfg.video_batch}

    def one_process(paths: list[Path]) -> tuple[list[Recognition], float]:
        t0 = time.perf_counter()
        with Recognizer.from_run(cfg.checkpoint, cfg.device, workers=cfg.workers, **options) as rec:
            results = rec.predict(paths)
        return results, time.perf_counter() - t0

    def on_ray(paths: list[Path], actors: int) -> tuple[list[Recognition], float]:
        t0 = time.perf_counter()
        ds = ray_pipeline.dataset([{"path": str(p)} for p in paths], cfg.video_batch)
        with ray_pipeline.quiet_logs():
            rows = ray_pipeline.recognitions(ds, cfg.checkpoint, device=cfg.device, actors=actors, workers=cfg.workers,
                                             **options).take_all()
        by_path = {row["path"]: ray_pipeline.recognition(row) for row in rows}
        return [by_path[str(p)] for p in paths], time.perf_counter() - t0

    actors = sorted(set(cfg.ray_actors) | {1})
    t0 = time.perf_counter()
    out, rows, lines = [], [], []
    with ray_pipeline.session(ray_pipeline.LOCAL, max(actors)):
        started = time.perf_counter() - t0
        for name, paths in sets:
            base, seconds = one_process(paths)
            runs = [("one process", base, seconds)] + [(f"Ray, {a} actor{'s' * (a > 1)}", *on_ray(paths, a)) for a in actors]
            for mode, results, secs in runs:
                same = sum(r.error is None and r.label == b.label and r.seconds == b.seconds for r, b in zip(results, base))
                out.append({"set": name, "method": mode, "videos": len(paths), "seconds": secs, "videos_per_s": len(paths) / secs,
                            "same_as_one_process": same})
                rows.append([name, mode, len(paths), secs, len(paths) / secs, f"{same}/{sum(b.error is None for b in base)}"])
            one_1, ray_1 = one_process(paths[:1])[1], on_ray(paths[:1], 1)[1]
            ray_n = next(secs for mode, _, secs in runs if mode == "Ray, 1 actor")
            fixed = ray_1 - one_1
            per_video = ((ray_n - ray_1) - (seconds - one_1)) / (len(paths) - 1) if len(paths) > 1 else float("nan")
            out.append({"set": name, "method": "Ray overhead", "fixed_s": fixed, "per_video_s": per_video, "start_s": started})
            lines.append(f"{name}: Ray adds {fixed:.2f} s a run (actors start and load the run; from runs on 1 video) and "
                         f"{1000 * per_video:+.0f} ms a video (one actor against one process, over {len(paths)} videos)")
    print(f"Ray Data against one process, end to end (loading the run included), {cfg.workers} decoding workers each, "
          f"{cfg.video_batch} videos a batch, a local Ray of {max(os.cpu_count() or 1, max(actors))} CPUs started in {started:.1f} s:")
    print(format_table(["videos", "run", "count", "seconds", "videos/s", "same label and frames as one process"], rows))
    for line in lines:
        print(line)
    return out


def _agreement(a: list[Recognition], b: list[Recognition]) -> dict:
    """How two runtimes' results on the same files agree: frames visited, labels, the largest probability difference."""
    ok = [(x, y) for x, y in zip(a, b) if x.error is None and y.error is None]
    diff = max((abs(p - q) for x, y in ok for p, q in zip(x.probs or (), y.probs or ())), default=0.0)
    return {"videos": len(ok), "same_frames": sum(x.seconds == y.seconds for x, y in ok),
            "same_label": sum(x.label == y.label for x, y in ok), "largest_difference": diff}
