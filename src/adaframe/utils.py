"""Small shared pieces: the user-facing error type, atomic writes, seeding, device choice."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    import torch


class AdaframeError(Exception):
    """An error caused by the user's input; the CLI prints it as one line, without a traceback."""


def error_line(message: str) -> str:
    """The one line a user error is shown as, on stderr: ``adaframe: error: ...``, its line breaks flattened."""
    return f"adaframe: error: {' '.join(message.splitlines())}"


_UMASK = os.umask(0)
os.umask(_UMASK)


def make_dir(path: str | Path) -> Path:
    """``mkdir -p``; a regular file in the way is named as such (``mkdir`` would say "File exists")."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way, not a directory", str(p))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _temp_beside(path: Path) -> Path:
    """An empty temporary file in ``path``'s folder (created if need be); errors name ``path``."""
    make_dir(path.parent)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.close(fd)
    return Path(tmp)


def check_writable(path: str | Path) -> None:
    """Fail now, not after an hour of work, if ``path`` cannot be written (by ``atomic_write``)."""
    _temp_beside(Path(path)).unlink()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path``, so readers never see half a file.

    An ``OSError`` (disk full, no permission, a directory in the way) names ``path``, not the temporary file.
    """
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the user's usual permissions
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, serialize: Callable[[io.BytesIO], None]) -> None:
    """Serialise in memory, then write atomically: a full disk is then a plain ``OSError`` (errno ENOSPC), where
    numpy and torch writing to the file themselves report it in their own words."""
    buf = io.BytesIO()
    serialize(buf)
    atomic_write(path, lambda p: p.write_bytes(buf.getbuffer()))


def write_csv(path: str | Path, header: list[str], rows: Any) -> None:
    """A CSV file (``\\n`` line ends, UTF-8) with ``header`` and ``rows``, written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write(path, lambda p: p.write_text(buf.getvalue(), encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def save_npy(path: str | Path, array: np.ndarray) -> None:
    write_bytes(path, lambda f: np.save(f, array))


# torch is imported where used: the decoding workers import this module and need no torch.
def save_torch(path: str | Path, obj: Any) -> None:
    import torch

    write_bytes(path, lambda f: torch.save(obj, f))


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise AdaframeError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


def load_torch_file(path: str | Path, what: str = "checkpoint", device: torch.device | str = "cpu") -> Any:
    """``torch.load`` that never executes code (``weights_only``: a pickled object in the file is refused, named) and
    says in one line why a file cannot be loaded: missing, not written by ``torch.save``, or damaged. Every torch file
    the package reads (checkpoints, training states, backbone weights) goes through here."""
    import pickle
    import re

    import torch

    path = Path(path)
    if not path.is_file():
        raise AdaframeError(f"cannot load {what} {path}: no such file")
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"  # torch.save's format since torch 1.6 (older files are plain pickles)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:  # weights_only met a pickled object (code could run on load): say which
            reason = f"refusing to unpickle {refused.group(1)} (only tensors are loaded); if you trust the file, re-save just its state dict"
        elif not zipped or isinstance(e, pickle.UnpicklingError):
            reason = "not a file written by torch.save"
        else:  # torch's own messages are long how-tos: their first sentence
            reason = f"the file is damaged or truncated ({(str(e).strip().splitlines() or [type(e).__name__])[0].split('. ')[0]})"
        raise AdaframeError(f"cannot load {what} {path}: {reason}") from None


def measure_gflops(fn: Callable[[], object]) -> float:
    """Multiply-adds of one call of ``fn`` in GFLOPs, counted by ``torch.utils.flop_counter``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2 / 1e9  # the counter counts a multiply-add as 2 FLOPs
