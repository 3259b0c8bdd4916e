"""Decoding in worker processes, overlapped with the backbones and the agent in the main process.

``predict`` asks for frames one step at a time, so a worker is stateful: video ``key`` lives in worker ``key % n``
from ``open`` to ``close``, and its ``VideoReader`` keeps the decoder's position between requests. A worker answers
reads before opens and closes, so opening the next group (``Recognizer.predict_groups``) never delays a frame the
current group waits for. With ``workers=0`` the same requests run in the calling process. Bad files never raise here:
every answer is a value, ``Failed`` for a file that cannot be read, also when a decoder crashes its process (the worker
is restarted; its other videos fail too). Workers import no torch.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Union

import numpy as np

from adaframe.media import memory_rule
from adaframe.media.probe import probe
from adaframe.media.reader import VideoReader, sample_times
from adaframe.utils import AdaframeError


@dataclass(frozen=True)
class Open:
    """Open a video: probe it, decode its global memory, and keep it open for ``Read``.

    Attributes:
        path: the file.
        fps: rate of the candidate frames (the extraction grid).
        memory_stored: Td of the data set (segments of the memory rule); 0 decodes no memory.
        memory_subset: which of them the model reads.
        memory_size: side of the memory frames.
        keyframes: the keyframe rule of ``memory_rule`` (False: segment centres, for data sets that record no rule).
        watch_size: keep candidate frames at this side when the memory pass decodes through them.
    """

    path: Path
    fps: float
    memory_stored: int = 0
    memory_subset: tuple[int, ...] = ()
    memory_size: int = 112
    keyframes: bool = True
    watch_size: int | None = None


@dataclass(frozen=True)
class Read:
    """Frames of an open video at ``times`` (seconds), ``size`` x ``size``."""

    times: tuple[float, ...]
    size: int


@dataclass(frozen=True)
class Opened:
    duration: float
    times: np.ndarray  # [T] seconds of the candidate frames
    memory: np.ndarray  # [Td', m, m, 3] uint8
    memory_seconds: np.ndarray  # [Td'] where the memory rule put them
    memory_decoded: int  # frames the memory pass decoded (with the first, which probing needs anyway)
    reading: str  # how the file is read (VideoReader.reading)


@dataclass(frozen=True)
class Frames:
    frames: np.ndarray  # [n, s, s, 3] uint8
    decoded: int  # frames decoded for this video so far
    seeks: int


@dataclass(frozen=True)
class Failed:
    error: str  # '<path>: <reason>'


Answer = Union[Opened, Frames, Failed]


class _Videos:
    """The videos one worker holds open, and what it does with each request."""

    def __init__(self) -> None:
        self.readers: dict[int, VideoReader] = {}
        self.paths: dict[int, Path] = {}

    def handle(self, key: int, request: Open | Read | None) -> Answer | None:
        """Answer ``request`` for video ``key``; ``None`` closes it (and is not answered)."""
        if request is None:
            reader = self.readers.pop(key, None)
            self.paths.pop(key, None)
            if reader is not None:
                reader.close()
            return None
        try:
            if isinstance(request, Open):
                return self._open(key, request)
            reader = self.readers[key]
            frames = reader.read(request.times, request.size)
            return Frames(np.stack(frames), reader.decoded, reader.seeks)
        except AdaframeError as e:
            self.handle(key, None)
            return Failed(str(e))
        except Exception as e:  # a batch job records the unexpected too, and goes on
            path = request.path if isinstance(request, Open) else self.paths.get(key, "?")
            self.handle(key, None)
            return Failed(f"{path}: unexpected {type(e).__name__}: {e}")

    def _open(self, key: int, r: Open) -> Opened:
        self.handle(key, None)
        info = probe(r.path)
        reader = VideoReader(r.path)
        self.readers[key], self.paths[key] = reader, r.path
        times = sample_times(info.duration, r.fps)
        if r.watch_size is not None:
            reader.watch(times, r.watch_size)  # the memory pass keeps candidate frames it passes
        memory, seconds = (memory_rule.memory_frames(reader, info.duration, r.memory_stored, r.memory_size, r.keyframes,
                                                 r.memory_subset) if r.memory_stored else ([], np.zeros(0)))
        shape = (0, r.memory_size, r.memory_size, 3)
        return Opened(info.duration, times, np.stack(memory) if memory else np.zeros(shape, np.uint8), seconds, reader.decoded,
                      reader.reading)


def _serve(conn: Connection, parent_end: Connection | None = None) -> None:
    """A worker's loop: requests ``(key, request)`` in, ``(key, answer)`` out, reads before opens; ``None`` ends it.
    It also ends when the parent dies, even by SIGKILL (checked every second while idle)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    if parent_end is not None:
        parent_end.close()  # a forked worker holds the parent's end too: closed, the pipe ends when the parent does
    parent = os.getppid()
    videos, pending = _Videos(), deque()
    while True:
        try:
            while not pending and not conn.poll(1.0):
                if os.getppid() != parent:  # orphaned: nobody will read an answer
                    return
            while conn.poll():
                pending.append(conn.recv())
        except (EOFError, OSError):  # the parent is gone
            return
        # Reads first (a video's read is only sent once its open was answered); opens and closes keep their order.
        first = next((i for i, m in enumerate(pending) if m is not None and isinstance(m[1], Read)), 0)
        message = pending[first]
        del pending[first]
        if message is None:
            return
        answer = videos.handle(*message)
        if answer is not None:
            try:
                conn.send((message[0], answer))
            except OSError:  # the parent is gone
                return


class DecodeWorkers:
    """Worker processes that decode the videos of ``predict`` (see the module's docstring).

    ``submit`` sends one request for a video; ``take`` waits for the answers of the videos named.
    Each video has at most one request in flight.

    Args:
        workers: processes (0: decode in the calling process, synchronously).
    """

    def __init__(self, workers: int):
        if workers < 0:
            raise AdaframeError(f"need workers >= 0, got {workers}")
        self.workers = workers
        # Fork on Linux, as torch's DataLoader does: a script that calls predict needs no `if __name__ == "__main__"`
        # guard, and workers start at once; they touch neither torch nor CUDA. Spawn elsewhere (fork is unsafe on macOS).
        self._context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        self._procs: list[multiprocessing.process.BaseProcess | None] = [None] * workers
        self._conns: list[Connection | None] = [None] * workers
        self._generation = [0] * workers  # bumped when a worker is restarted: the videos it held are gone
        self._in_flight: list[set[int]] = [set() for _ in range(workers)]
        self._home: dict[int, tuple[int, int]] = {}  # key -> (worker, generation) where its reader lives
        self._paths: dict[int, Path] = {}
        self._answers: dict[int, Answer] = {}
        self._local = _Videos()

    def submit(self, key: int, request: Open | Read | None) -> None:
        """Send ``request`` for video ``key`` (``None``: close it; never answered)."""
        if isinstance(request, Open):
            self._paths[key] = request.path
        if self.workers == 0:
            answer = self._local.handle(key, request)
            if answer is not None:
                self._answers[key] = answer
            return
        w = key % self.workers
        if isinstance(request, Open):
            self._home[key] = (w, self._generation[w])
        elif self._home.get(key) != (w, self._generation[w]):  # its worker died since: the reader is gone
            if request is not None:
                self._answers[key] = Failed(f"{self._paths.get(key, '?')}: the decoding process holding this video died")
            return
        if request is None:
            self._home.pop(key, None)
            self._paths.pop(key, None)
        conn = self._worker(w)
        conn.send((key, request))
        if request is not None:
            self._in_flight[w].add(key)

    def take(self, keys: list[int]) -> list[Answer]:
        """The answers to the last request of each of ``keys``, waiting for those not in yet."""
        while missing := [k for k in keys if k not in self._answers]:
            busy = [w for w in {k % self.workers for k in missing} if self._in_flight[w]]
            if not busy:
                raise RuntimeError(f"no request in flight for videos {missing}")  # a caller bug, not a bad file
            ready = wait([self._conns[w] for w in busy] + [self._procs[w].sentinel for w in busy])
            for w in busy:
                conn, proc = self._conns[w], self._procs[w]
                if conn in ready or proc.sentinel in ready:
                    self._collect(w)
        return [self._answers.pop(k) for k in keys]

    def _collect(self, w: int) -> None:
        """Everything worker ``w`` has answered; if it died, fail what it held and restart it later."""
        conn, proc = self._conns[w], self._procs[w]
        try:
            while conn.poll():
                key, answer = conn.recv()
                self._answers[key] = answer
                self._in_flight[w].discard(key)
        except (EOFError, OSError):
            pass
        if proc.is_alive():
            return
        proc.join()
        for key in self._in_flight[w]:
            self._answers[key] = Failed(f"{self._paths.get(key, '?')}: the decoding process died (exit code {proc.exitcode}) "
                                        "while reading this video")
        self._in_flight[w].clear()
        self._procs[w] = self._conns[w] = None
        self._generation[w] += 1

    def _worker(self, w: int) -> Connection:
        if self._procs[w] is None:
            parent, child = self._context.Pipe()
            proc = self._context.Process(target=_serve, args=(child, parent if self._context.get_start_method() == "fork" else None),
                                         daemon=True, name=f"adaframe-decode-{w}")
            proc.start()
            child.close()
            self._procs[w], self._conns[w] = proc, parent
        return self._conns[w]

    def close(self) -> None:
        """Stop the workers (and forget every open video)."""
        for w, (proc, conn) in enumerate(zip(self._procs, self._conns)):
            if proc is None:
                continue
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
            self._procs[w] = self._conns[w] = None
        for key in list(self._local.readers):
            self._local.handle(key, None)
        self._home.clear()
        self._answers.clear()
        self._in_flight = [set() for _ in range(self.workers)]
