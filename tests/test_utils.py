"""Atomic writes: all or nothing, no temp files left, the user's usual file permissions."""

from __future__ import annotations

import os
import stat

import pytest

from adaframe.utils import atomic_write


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
