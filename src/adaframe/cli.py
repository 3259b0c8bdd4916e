"""The ``adaframe`` command line: one typed dataclass per subcommand, parsed by tyro.

User errors (``AdaframeError``, and ``ValueError`` from validating the options) are printed as
one line ``adaframe: error: ...`` with exit status 2; set ``ADAFRAME_DEBUG=1`` for the traceback.
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

from adaframe.benchmark import BenchmarkConfig, run_benchmark
from adaframe.config import TrainConfig
from adaframe.data import SPLITS, read_videos_csv
from adaframe.demo import DemoConfig, run_demo
from adaframe.evaluate import EvalConfig, run_eval
from adaframe.synth import SynthConfig, generate
from adaframe.utils import AdaframeError


@dataclass(kw_only=True)
class SynthCommand(SynthConfig):
    """Write a synthetic feature data set in the layout 'adaframe train' reads."""

    out: Path
    """data set directory to write"""


def run_synth(cmd: SynthCommand) -> None:
    out = generate(cmd, cmd.out)
    counts = Counter(r.split for r in read_videos_csv(out))
    print(f"wrote {sum(counts.values())} videos to {out} ({', '.join(f'{s} {counts[s]}' for s in SPLITS)})")


def run_train(cfg: TrainConfig) -> None:
    from adaframe.train import train  # tensorboard is slow to import; only train needs it

    out = train(cfg)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    val = f"{last['val_mAP']:.2f}%" if "val_mAP" in last else "n/a (no val split)"
    print(f"trained {cfg.model} (K={cfg.frames}) for {last.get('epoch', 0)} epochs: run dir {out}, last val mAP {val}")


SUBCOMMANDS: dict[str, type] = {
    "synth": SynthCommand,
    "train": TrainConfig,
    "eval": EvalConfig,
    "demo": DemoConfig,
    "benchmark": BenchmarkConfig,
}
RUNNERS: dict[type, Callable[[Any], object]] = {
    SynthCommand: run_synth,
    TrainConfig: run_train,
    EvalConfig: run_eval,
    DemoConfig: run_demo,
    BenchmarkConfig: run_benchmark,
}


def _fail(e: BaseException) -> None:
    if os.environ.get("ADAFRAME_DEBUG") == "1":
        raise e
    print(f"adaframe: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
    sys.exit(2)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``adaframe`` and ``python -m adaframe``."""
    try:
        # The dataclasses validate themselves on construction, i.e. while tyro parses.
        try:
            cmd = tyro.extras.subcommand_cli_from_dict(
                SUBCOMMANDS, prog="adaframe", args=args,
                description="AdaFrame (Wu et al., CVPR 2019): adaptive frame selection for fast video recognition.")
        except ValueError as e:
            _fail(e)
        RUNNERS[type(cmd)](cmd)
    except AdaframeError as e:
        _fail(e)
    except KeyboardInterrupt:
        print("adaframe: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
