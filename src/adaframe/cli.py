"""The ``adaframe`` command line: the subcommands of ``commands/``, each a typed dataclass parsed by tyro and its run function.

User errors (``AdaframeError``, ``ValueError`` from validating the options, and ``OSError`` on a
path that cannot be read or written) are printed as one line ``adaframe: error: ...`` with exit
status 2; ``--debug`` anywhere on the command line (or ``ADAFRAME_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

import tyro

from adaframe.commands.benchmark import BenchmarkConfig, run_benchmark
from adaframe.commands.check import CheckConfig, run_check
from adaframe.commands.demo import DemoConfig, run_demo
from adaframe.commands.evaluate import EvalConfig, run_eval
from adaframe.commands.export import ExportConfig, run_export
from adaframe.commands.extract import ExtractConfig, run_extract
from adaframe.commands.predict import PredictConfig, run_predict
from adaframe.commands.probe import ProbeConfig, run_probe
from adaframe.commands.report import ReportConfig, run_report
from adaframe.commands.synth import SynthCommand, run_synth
from adaframe.commands.synth_video import SynthVideoCommand, run_synth_video
from adaframe.commands.train import TrainConfig, run_train
from adaframe.commands.video_demo import VideoDemoConfig, run_video_demo
from adaframe.utils import AdaframeError, error_line

# name: (config, run function), in the order of the help
COMMANDS: dict[str, tuple[type, Callable[[Any], object]]] = {
    "synth": (SynthCommand, run_synth),
    "train": (TrainConfig, run_train),
    "eval": (EvalConfig, run_eval),
    "demo": (DemoConfig, run_demo),
    "report": (ReportConfig, run_report),
    "check": (CheckConfig, run_check),
    "benchmark": (BenchmarkConfig, run_benchmark),
    "synth-video": (SynthVideoCommand, run_synth_video),
    "extract": (ExtractConfig, run_extract),
    "predict": (PredictConfig, run_predict),
    "export": (ExportConfig, run_export),
    "video-demo": (VideoDemoConfig, run_video_demo),
    "probe": (ProbeConfig, run_probe),
}
RUNNERS: dict[type, Callable[[Any], object]] = dict(COMMANDS.values())


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
                {name: config for name, (config, _) in COMMANDS.items()}, prog="adaframe", args=args,
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
