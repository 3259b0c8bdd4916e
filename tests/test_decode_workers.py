"""Decoding workers: the same frames as a reader in this process, bad files and a crashed worker as answers."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from adaframe.media.decode_workers import DecodeWorkers, Failed, Frames, Open, Opened, Read
from adaframe.media.memory_rule import memory_frames
from adaframe.media.probe import probe
from adaframe.media.reader import VideoReader, sample_times


def _open(path, memory: int = 16) -> Open:
    return Open(path, fps=1.0, memory_stored=memory, memory_subset=tuple(range(memory)), memory_size=24)


@pytest.fixture(scope="module")
def paths(video_files):
    return sorted((video_files / "videos").glob("*.mp4"))[:3]


def test_workers_answer_as_a_reader_in_this_process(paths):
    workers = DecodeWorkers(2)
    try:
        keys = list(range(len(paths)))
        for key, path in zip(keys, paths):
            workers.submit(key, _open(path))
        opened = workers.take(keys)
        for key, path in zip(keys, paths):
            workers.submit(key, Read((3.0, 0.0, 5.5), 32))  # any order, as a policy asks
        frames = workers.take(keys)
    finally:
        workers.close()
    for path, o, f in zip(paths, opened, frames):
        assert isinstance(o, Opened) and isinstance(f, Frames)
        duration = probe(path).duration
        with VideoReader(path) as reader:
            memory, seconds = memory_frames(reader, duration, 16, 24, keyframes=True)
            want = reader.read([3.0, 0.0, 5.5], 32)
        assert o.duration == duration and np.array_equal(o.times, sample_times(duration, 1.0))
        assert np.array_equal(o.memory, np.stack(memory)) and np.array_equal(o.memory_seconds, seconds)
        assert np.array_equal(f.frames, np.stack(want)) and f.decoded >= o.memory_decoded > 0


def test_a_bad_file_and_a_crashed_worker_are_answers_and_the_workers_go_on(paths, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    workers = DecodeWorkers(1)
    try:
        workers.submit(0, _open(bad))
        workers.submit(1, _open(paths[0]))
        failed, ok = workers.take([0, 1])
        assert isinstance(failed, Failed) and failed.error.startswith(f"{bad}: cannot open as a media file")
        assert isinstance(ok, Opened)
        # A decoder that crashes kills its process: the video in flight fails with a reason, and so does a read of
        # a video that process held; the next video gets a fresh worker.
        workers.submit(1, Read((1.0,), 32))
        os.kill(workers._procs[0].pid, signal.SIGKILL)
        [died] = workers.take([1])
        assert isinstance(died, Failed) and "the decoding process died" in died.error and str(paths[0]) in died.error
        workers.submit(1, Read((2.0,), 32))
        [gone] = workers.take([1])
        assert isinstance(gone, Failed) and "died" in gone.error
        workers.submit(3, _open(paths[2], memory=0))
        [fresh] = workers.take([3])
        assert isinstance(fresh, Opened) and fresh.memory.shape == (0, 24, 24, 3)
    finally:
        workers.close()
    assert all(p is None for p in workers._procs)


def test_workers_end_when_their_parent_is_killed(paths, tmp_path):
    """A SIGKILLed predict (the collection's resume story) must not leave decoding processes behind."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = (f"from adaframe.media.decode_workers import DecodeWorkers, Open\n"
              f"w = DecodeWorkers(2)\n"
              f"for k, path in enumerate({[str(p) for p in paths[:2]]!r}):\n"
              f"    w.submit(k, Open(path, 1.0))\n"
              f"w.take([0, 1])\n"
              f"print(*[p.pid for p in w._procs], flush=True)\n"
              f"import time; time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.kill()
    proc.wait()

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has ended
        except OSError:
            return False
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), "decoding workers outlived their killed parent"
