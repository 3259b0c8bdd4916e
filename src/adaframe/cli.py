"""The ``adaframe`` command line: one typed dataclass per subcommand, parsed by tyro.

User errors (``AdaframeError``, ``ValueError`` from validating the options, and ``OSError`` on a
path that cannot be read or written) are printed as one line ``adaframe: error: ...`` with exit
status 2; ``--debug`` anywhere on the command line (or ``ADAFRAME_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import tyro

from adaframe.commands.benchmark import BenchmarkConfig, run_benchmark
from adaframe.commands.check import CheckConfig, run_check
from adaframe.commands.demo import DemoConfig, run_demo
from adaframe.commands.evaluate import EvalConfig, run_eval
from adaframe.commands.predict import PredictConfig, run_predict
from adaframe.commands.report import ReportConfig, run_report
from adaframe.commands.video_demo import VideoDemoConfig, run_video_demo
from adaframe.data.features import SPLITS, read_videos_csv
from adaframe.data.synth import SynthConfig, generate
from adaframe.media.synth_video import SynthVideoConfig, generate_videos
from adaframe.recognize.export import ExportConfig, export_run
from adaframe.recognize.extraction import ExtractConfig, extract
from adaframe.train.config import TrainConfig
from adaframe.utils import AdaframeError, error_line


@dataclass(kw_only=True)
class SynthCommand(SynthConfig):
    """Write a synthetic feature data set in the layout 'adaframe train' reads."""

    out: Path
    """data set directory to write"""


def run_synth(cmd: SynthCommand) -> None:
    out = generate(cmd, cmd.out)
    counts = Counter(r.split for r in read_videos_csv(out))
    print(f"wrote {sum(counts.values())} videos to {out} ({', '.join(f'{s} {counts[s]}' for s in SPLITS)})")


@dataclass(kw_only=True)
class SynthVideoCommand(SynthVideoConfig):
    """Render synthetic video files (class visible only in some frames) and a list file for 'adaframe extract'."""

    out: Path
    """directory to write (videos/, list.txt)"""


def run_synth_video(cmd: SynthVideoCommand) -> None:
    out = generate_videos(cmd, cmd.out)
    print(f"wrote {cmd.videos} videos to {out / 'videos'} and the list {out / 'list.txt'}")


def run_extract(cfg: ExtractConfig) -> None:
    """Exit status 0: every video extracted; 1: some failed (the others are done; reasons in failures.csv)."""
    r = extract(cfg)
    print(f"{r['videos']} videos listed; shard {r['shard']}: extracted {r['extracted']}, skipped {r['skipped']} already done, "
          f"failed {r['failed_now']}. {cfg.out}: {r['done']} videos in videos.csv, {r['failed']} in failures.csv{r['skipped_note']}")
    if r["failed"]:
        print(f"adaframe: {r['failed']} video(s) could not be extracted: see {cfg.out / 'failures.csv'}", file=sys.stderr)
        sys.exit(1)


@dataclass
class ProbeCommand:
    """Show what decoding finds in video files: duration, rate, frames, size, rotation, or the error."""

    videos: tyro.conf.Positional[tuple[Path, ...]]
    fps: float = 1.0
    """rate of the frames 'extract' would take"""


def run_probe(cmd: ProbeCommand) -> None:
    from adaframe.report.tables import format_table
    from adaframe.media.probe import probe
    from adaframe.media.reader import count_frames, sample_times

    rows, failed = [], 0
    for path in cmd.videos:
        try:
            info = probe(path)
            decoded = count_frames(path)  # decodes the whole stream: finds corrupt data the header hides
            rows.append([path.name, info.codec, info.duration, info.fps, info.frames, decoded,
                         len(sample_times(info.duration, cmd.fps)), f"{info.width}x{info.height}", info.rotation, ""])
        except AdaframeError as e:
            failed += 1
            rows.append([path.name, None, None, None, None, None, None, None, None, f"error: {e}"])
            print(error_line(str(e)), file=sys.stderr)
    print(format_table(["video", "codec", "seconds", "fps", "frames stated", "frames decoded", f"T at {cmd.fps:g} fps",
                        "display", "rotation", ""], rows))
    if failed:
        sys.exit(1)


def run_export(cfg: ExportConfig) -> None:
    m = export_run(cfg)
    graphs = m["graphs"]
    size = sum((cfg.out / g["file"]).stat().st_size for g in graphs.values()) / 2**20
    worst = max(g["largest_difference"] for g in graphs.values())
    print(f"exported {cfg.checkpoint} ({len(m['classes'])} classes, K {m['frames']}, memory of {m['memory_frames']} frames) to "
          f"{cfg.out}: {', '.join(g['file'] for g in graphs.values())} ({size:.1f} MiB) and {cfg.out / 'manifest.json'}; "
          f"each checked by onnx.checker and run on onnxruntime at batch 1 and 3: largest difference from PyTorch {worst:.1e} "
          f"(relative). Run it with 'adaframe predict --export {cfg.out} VIDEO...'")


def run_train(cfg: TrainConfig) -> None:
    from adaframe.train.loop import train  # tensorboard is slow to import; only train needs it

    out = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun the first process reports
        return
    lines = (out / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    val = f"{last['val_mAP']:.2f}%" if "val_mAP" in last else "n/a (no val split)"
    fit = f"train mAP {last['train_mAP']:.2f}%, " if "train_mAP" in last else ""
    print(f"trained {cfg.model} (K={cfg.frames}) for {last.get('epoch', 0)} epochs: run dir {out}, last {fit}val mAP {val}")
    if "pooled_by" in last:  # frame_loss both: the val split's choice, with the scores it was made on (its last epoch)
        picked = next(json.loads(line) for line in reversed(lines) if "pooled_every_mAP" in json.loads(line))
        trained = {"every": "every frame", "subset": f"{cfg.frames} random frames a video"}
        print(f"the pooled prediction reads the frame classifier trained on {trained[last['pooled_by']]} (val mAP over {cfg.frames} "
              f"uniform frames at epoch {picked['epoch']}: " + ", ".join(f"{trained[h]} {picked[f'pooled_{h}_mAP']:.2f}" for h in trained) + ")")
    if "inference" in last:
        print(f"the policy adds {last['policy_minus_scan']:+.2f} mAP on val over the uniform scan of the same network: "
              + ("inference looks where the policy chooses" if last["inference"] == "policy" else
                 "inference looks by the uniform scan (eval --policy policy runs the policy)"))


SUBCOMMANDS: dict[str, type] = {
    "synth": SynthCommand,
    "train": TrainConfig,
    "eval": EvalConfig,
    "demo": DemoConfig,
    "report": ReportConfig,
    "check": CheckConfig,
    "benchmark": BenchmarkConfig,
    "synth-video": SynthVideoCommand,
    "extract": ExtractConfig,
    "predict": PredictConfig,
    "export": ExportConfig,
    "video-demo": VideoDemoConfig,
    "probe": ProbeCommand,
}
RUNNERS: dict[type, Callable[[Any], object]] = {
    SynthCommand: run_synth,
    TrainConfig: run_train,
    EvalConfig: run_eval,
    DemoConfig: run_demo,
    ReportConfig: run_report,
    CheckConfig: run_check,
    BenchmarkConfig: run_benchmark,
    SynthVideoCommand: run_synth_video,
    ExtractConfig: run_extract,
    PredictConfig: run_predict,
    ExportConfig: run_export,
    VideoDemoConfig: run_video_demo,
    ProbeCommand: run_probe,
}


def _fail(e: BaseException, debug: bool) -> None:
    if debug:
        raise e
    message = str(e)
    if "Original Traceback" in message:  # raised in a DataLoader worker: torch put the worker's traceback in the message
        message = message.strip().splitlines()[-1].split("Error: ", 1)[-1]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = f"[rank {os.environ.get('RANK', '0')}/{world}] " if world > 1 else ""
    print(error_line(rank + message), file=sys.stderr)
    sys.exit(2)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``adaframe`` and ``python -m adaframe``."""
    args = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in args or os.environ.get("ADAFRAME_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    try:
        # The dataclasses validate themselves on construction, i.e. while tyro parses.
        try:
            cmd = tyro.extras.subcommand_cli_from_dict(
                SUBCOMMANDS, prog="adaframe", args=args,
                description="AdaFrame (Wu et al., CVPR 2019): adaptive frame selection for fast video recognition. "
                            "Add --debug to any command to see the traceback of an error.")
        except ValueError as e:
            _fail(e, debug)
        RUNNERS[type(cmd)](cmd)
    except AdaframeError as e:
        _fail(e, debug)
    except OSError as e:  # a path the user gave cannot be read or written: say which, not where in our code
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        if debug:
            raise
        _fail(AdaframeError(f"{where}: {e.strerror}" if where and e.strerror else str(e)), debug)
    except KeyboardInterrupt:
        print("adaframe: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
