"""Recognition and extraction as Ray Data pipelines: ``predict --videos ... --ray ADDRESS``, ``extract ... --ray
ADDRESS``, and ``recognitions`` for a pipeline of one's own.

A dataset of paths goes through ``map_batches`` with a stateful callable class, one instance per actor: it loads the
run once (``RecognizeBatch``: a ``Recognizer``, whose decoding workers decode only the frames the agent asks for, as in
one process) and keeps it for every batch it is given. The commands' driver (the process that ran the command)
receives each row as its batch finishes and writes the same files as the single-machine run, with the same code
(``collection.store``, ``extraction``'s save), so the outputs, the resume and the failure list are one machine's.

Faults: a video that cannot be read comes back as a row with its ``error``. An actor that dies (a crash in native
code, a node lost) is restarted by Ray and its batch tried once more (``max_task_retries``, not Ray Data's unbounded
default); a batch lost again is dropped (``max_errored_blocks``) and ``stream`` sends each of its videos again alone;
a video lost alone too comes back as a failure (``LOST``): tried four times at most (twice with its batch, twice
alone, one call an actor at a time), never missing from the output.

Ray is imported here only, and only when a function is called: the package works without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaframe.recognize.recognizer import Recognizer
from adaframe.recognize.result import Recognition
from adaframe.utils import AdaframeError

if TYPE_CHECKING:
    import ray.data

INSTALL = "pip install 'adaframe[ray]' (ray[data] at the version of constraints.txt)"
LOCAL = "local"
"""``--ray local``: a Ray started on this machine for the one command"""
KEY = "video_id"
"""the column ``stream`` tells rows apart by"""
LOST = "lost: the Ray worker running it died, with its batch and then alone (a crash in decoding or in the networks?)"


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or a one-line error saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise AdaframeError(f"--ray needs Ray Data, which is not installed here: {INSTALL}") from None
    return ray


@contextlib.contextmanager
def session(address: str, actors: int = 1) -> Iterator[None]:
    """Ray for one command. ``local`` starts a Ray on this machine (a CPU each for its cores, at least ``actors``) and
    stops it at the end; any other address (``auto``: the cluster ``ray start`` joined this machine to; ``HOST:6379``;
    ``ray://HOST:10001``) joins that cluster and leaves it running. A Ray already initialised in this process (a
    notebook, the tests) is used as it is and left running."""
    ray = require_ray()
    if ray.is_initialized():
        yield
        return
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address == LOCAL:
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, actors), **quiet)  # a new one, whatever RAY_ADDRESS says
        else:
            _check_reachable(address)
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AdaframeError(f"--ray {address}: no Ray cluster reached ({reason}); start one with 'ray start --head', "
                            f"or give --ray {LOCAL}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str, seconds: float = 10.0) -> None:
    """Fail in seconds where nothing listens at a ``HOST:PORT`` address (Ray itself keeps trying for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if sep and host and port.isdigit():
        socket.create_connection((host, int(port)), timeout=seconds).close()


def _map(ds: ray.data.Dataset, worker: type, kwargs: dict, actors: int, batch_size: int, gpus: float,
         in_flight: int | None = None) -> ray.data.Dataset:
    """``ds`` through ``actors`` instances of ``worker(**kwargs)``, ``batch_size`` rows a call, one CPU (and ``gpus``
    GPUs) each, at most ``in_flight`` calls queued on an actor (None: Ray Data's default); the batch of an actor that
    died is tried once more, not forever."""
    ray = require_ray()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_task_retries as a Ray remote argument: deprecated, and the one way in 2.60
        return ds.map_batches(worker, fn_constructor_kwargs=kwargs, batch_size=batch_size,
                              compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=in_flight), num_cpus=1, num_gpus=gpus or None,
                              batch_format="numpy", max_task_retries=1)


def stream(rows: list[dict], worker: type, kwargs: dict, *, actors: int = 1, batch_size: int = 8,
           gpus: float = 0.0) -> Iterator[dict]:
    """Every row of ``rows`` (with a unique ``KEY``) through ``worker`` on Ray, yielded as its batch finishes, in no
    particular order; the Ray of ``session`` must be up.

    ``worker(**kwargs)`` is a stateful callable class: a batch (a dict of numpy columns, those of ``rows``) in, a
    table of the same rows out. A batch lost twice (its actor died) is sent again one row a batch; a row lost then too
    comes out as ``{**row, "error": LOST}``, so each row comes out exactly once.
    """
    left = {r[KEY]: r for r in rows}
    for size in sorted({batch_size, 1}, reverse=True):
        if not left:
            break
        ds = dataset(list(left.values()), size)
        ds.context.max_errored_blocks = -1  # a lost batch is dropped here and accounted for below, not fatal
        # Alone, one call an actor at a time: the calls queued on an actor die with it, and would be lost with the culprit.
        out = _map(ds, worker, kwargs, actors, size, gpus, in_flight=1 if size == 1 else None)
        with quiet_logs():
            try:
                for block in out.iter_batches(batch_size=None, batch_format="pyarrow"):
                    for row in block.to_pylist():
                        if left.pop(row[KEY], None) is not None:
                            yield row
            except Exception as e:  # noqa: BLE001  # what reaches here is Ray's: actors that never start, a cluster gone
                raise AdaframeError(f"the Ray pipeline stopped: {_first_line(e)}; finished videos are kept, run the same "
                                    "command again to continue") from None
    for row in left.values():
        yield {**row, "error": LOST}


def dataset(rows: list[dict], batch_size: int) -> ray.data.Dataset:
    """``rows`` as a Ray dataset of ``batch_size`` rows a block (a block is a unit of work and of loss), without Ray
    Data's own progress bars and start messages (the commands show their own progress, in files done)."""
    ray = require_ray()
    ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size)))
    ds.context.enable_progress_bars = False
    ds.context.print_on_execution_start = False
    return ds


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Ray Data logs each dropped batch with its traceback and each run's start and end; the commands say what counts
    themselves (the failures' reasons, one line each)."""
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


# ----------------------------------------------------------------------------- recognition

class RecognizeBatch:
    """The stateful callable of ``recognitions``: one ``Recognizer`` per actor, loaded once, run on each batch of paths.

    Args:
        cwd: the driver's working directory, where relative paths (of the videos and the run) start from; kept where
            the node has it.
        run, export: the run (``Recognizer.from_run``) or its export (``Recognizer.from_export``), one of them.
        options: the other arguments of that constructor (device, workers, frames, mu, patience, batch_size, weights).
        scan: replace the policy by a scan (``Recognizer.predict``).
    """

    def __init__(self, cwd: str, run: str | None, export: str | None, options: dict, scan: bool = False):
        if Path(cwd).is_dir():
            os.chdir(cwd)
        self.rec = Recognizer.from_export(export, **options) if export is not None else Recognizer.from_run(run, **options)
        self.scan = scan

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        paths = [str(p) for p in batch["path"]]
        try:
            results = self.rec.predict(paths, self.scan)
        except Exception:  # noqa: BLE001  # a file's failure is its result already; this is the unexpected: alone, each
            results = [self._alone(p) for p in paths]
        columns = {k: pa.array(v.tolist()) for k, v in batch.items()}
        return pa.table({**columns, **_columns(results)})

    def _alone(self, path: str) -> Recognition:
        try:
            [r] = self.rec.predict([path], self.scan)
        except Exception as e:  # noqa: BLE001  # recorded as this video's failure; the others go on
            r = Recognition(Path(path), "AdaFrame", 0.0, error=f"{path}: unexpected {type(e).__name__}: {e}")
        return r


def _columns(results: list[Recognition]) -> dict:
    import pyarrow as pa

    ok = [r.error is None for r in results]
    return {
        "label": pa.array([r.label for r in results], pa.string()),
        "probabilities": pa.array([list(r.probs) if r.probs is not None else None for r in results], pa.list_(pa.float64())),
        "frames_used": pa.array([r.frames_used for r in results], pa.int64()),
        "steps": pa.array([r.steps for r in results], pa.int64()),
        "gflops": pa.array([r.gflops for r in results], pa.float64()),
        "wall_s": pa.array([r.per_video().wall_s for r in results], pa.float64()),
        "error": pa.array([None if good else r.error for r, good in zip(results, ok)], pa.string()),
        "recognition": pa.array([json.dumps(r.to_json()) for r in results], pa.string()),
    }


def recognitions(paths: ray.data.Dataset, run: str | Path | None = None, *, export: str | Path | None = None,
                 device: str = "cpu", actors: int = 1, workers: int = 0, batch_size: int = 8, frames: int | None = None,
                 mu: float | None = 0.7, patience: int = 1, backbone_weights: str | Path | None = None,
                 memory_weights: str | Path | None = None, scan: bool = False) -> ray.data.Dataset:
    """A Ray dataset of video paths -> a dataset of their recognitions, one row per video, in no particular order.

    Each of ``actors`` Ray actors (one CPU each; and one GPU with ``device="cuda"``) loads the run once and recognises
    ``batch_size`` videos a call as ``Recognizer.predict`` does, decoding only the frames the agent asks for.

    Args:
        paths: a dataset with a ``path`` column (str): the files as the actors' nodes see them (relative ones from this
            process's working directory). Its other columns are passed through.
        run, export: an AdaFrame run (``Recognizer.from_run``) or its export (``Recognizer.from_export``), one of them.
        workers: decoding processes in each actor (0: the actor decodes itself).
        frames, mu, patience, backbone_weights, memory_weights, scan: as in ``Recognizer``.

    Returns:
        The rows of ``paths`` with ``label`` (None if it failed), ``probabilities`` (every class's, in the order of
        ``Recognizer.classes``; None if it failed), ``frames_used``, ``steps``, ``gflops``, ``wall_s`` (its share of
        its batch's time), ``error`` (None, or ``<path>: <reason>``) and ``recognition`` (the whole ``Recognition`` as
        JSON; ``recognition(row)`` reads it back). A file that cannot be read is a row with ``error``, never an
        exception; a batch whose actor died is tried once more.

    Example::

        import ray
        from adaframe.recognize.ray_pipeline import recognitions

        ds = ray.data.from_items([{"path": p} for p in ["/data/a.mp4", "/data/b.mkv"]])
        for row in recognitions(ds, "runs/video-demo/runs/adaframe", actors=2).iter_rows():
            print(row["path"], row["error"] or f"{row['label']} with {row['frames_used']} frames, {row['gflops']:.1f} GFLOPs")
    """
    worker, kwargs, gpus = recognize_stage(run, export=export, device=device, workers=workers, batch_size=batch_size,
                                           frames=frames, mu=mu, patience=patience, backbone_weights=backbone_weights,
                                           memory_weights=memory_weights, scan=scan)
    if actors < 1:
        raise AdaframeError(f"need actors >= 1, got {actors}")
    return _map(paths, worker, kwargs, actors, batch_size, gpus)


def recognize_stage(run: str | Path | None = None, *, export: str | Path | None = None, device: str = "cpu", workers: int = 0,
                    batch_size: int = 8, frames: int | None = None, mu: float | None = 0.7, patience: int = 1,
                    backbone_weights: str | Path | None = None, memory_weights: str | Path | None = None,
                    scan: bool = False) -> tuple[type, dict, float]:
    """What ``recognitions`` maps (its arguments, checked): the worker class, its arguments, the GPUs of an actor."""
    if (run is None) == (export is None):
        raise AdaframeError("give the run or its export (run= or export=), one of them")
    if workers < 0 or batch_size < 1 or (frames is not None and frames < 1) or (mu is not None and mu < 0) or patience < 1:
        raise AdaframeError("need workers >= 0, batch_size >= 1, frames >= 1, mu >= 0 and patience >= 1")
    as_str = lambda p: None if p is None else str(p)  # noqa: E731
    options: dict = {"device": device, "workers": workers, "frames": frames, "mu": mu, "patience": patience,
                     "batch_size": batch_size}
    if run is not None:
        options |= {"backbone_weights": as_str(backbone_weights), "memory_weights": as_str(memory_weights)}
    elif backbone_weights or memory_weights:
        raise AdaframeError("backbone_weights / memory_weights go with run=: an export holds its backbones")
    kwargs = {"cwd": os.getcwd(), "run": as_str(run), "export": as_str(export), "options": options, "scan": scan}
    return RecognizeBatch, kwargs, 1.0 if device == "cuda" else 0.0


def recognition(row: dict) -> Recognition:
    """The ``Recognition`` of a row of ``recognitions`` (with ``probs``, which its JSON leaves out)."""
    r = Recognition.from_json(json.loads(row["recognition"]))
    return replace(r, probs=None if row.get("probabilities") is None else tuple(row["probabilities"]))
