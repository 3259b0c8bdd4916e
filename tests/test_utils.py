"""Atomic writes: all or nothing, no temp files left, the user's usual file permissions."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from adaframe.utils import atomic_write, make_dir, save_npy, save_torch


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write(path, lambda p: p.write_text("old"))

    def broken(p):
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind


def test_atomic_write_gives_umask_permissions(tmp_path):
    path = tmp_path / "sub" / "figure.png"
    atomic_write(path, lambda p: p.write_bytes(b"x"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("save", ["npy", "torch"])
def test_a_full_disk_is_reported_as_such_for_the_target_file(tmp_path, monkeypatch, save):
    """numpy and torch, writing to a full disk themselves, say "20480 requested and 20448 written" or "unexpected
    pos"; serialised in memory first, the write fails with ENOSPC, and the error names the file asked for."""
    path = tmp_path / "features" / "v.npy"
    save_npy(path, np.zeros(3, dtype=np.float32))
    real = Path.write_bytes

    def full(self, data):
        real(self, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError) as e:
        save_npy(path, np.ones(1000, dtype=np.float32)) if save == "npy" else save_torch(path, {"w": torch.ones(1000)})
    assert (e.value.errno, e.value.strerror, e.value.filename) == (errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.undo()
    assert np.array_equal(np.load(path), np.zeros(3, dtype=np.float32))  # the old file is intact
    assert [p.name for p in path.parent.iterdir()] == ["v.npy"]


def test_a_file_or_directory_in_the_way_is_named(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotADirectoryError, match="a file is in the way") as e:
        atomic_write(tmp_path / "a_file" / "sub" / "r.json", lambda p: p.write_text("{}"))
    assert e.value.filename == str(tmp_path / "a_file")
    (tmp_path / "a_dir").mkdir()
    with pytest.raises(IsADirectoryError) as e:
        atomic_write(tmp_path / "a_dir", lambda p: p.write_text("{}"))
    assert e.value.filename == str(tmp_path / "a_dir")
    assert make_dir(tmp_path / "x" / "y").is_dir()
