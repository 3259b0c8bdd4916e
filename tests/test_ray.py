"""``predict --videos ... --ray`` and ``extract ... --ray`` (recognize/ray_pipeline.py): the files of the one-process run,
bad files listed, a run killed halfway and rerun; ``recognitions`` for a pipeline of one's own; a batch whose Ray actor
dies; ``--ray`` without Ray installed. One local Ray of 2 CPUs serves the module (the commands run in this process use
it); the killed run starts its own, as a user's would."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adaframe.utils import AdaframeError
from conftest import SHARED_VIDEOS, TINY_EXTRACT, adaframe, make_run

pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def ray_up():
    """A local Ray of 2 CPUs for this module, shut down after it."""
    ray = pytest.importorskip("ray", reason="Ray Data is not installed: pip install 'adaframe[ray]' (make test installs it)")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def run(extracted, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), extracted)


def read(path: Path, drop: tuple[str, ...] = ("wall_s",)) -> list[dict]:
    """A CSV's rows without the columns that may differ between two runs of the same videos (the wall time)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def listing(tmp_path: Path, videos: list[Path]) -> Path:
    """A list file of ``videos`` (labelled by their folder) and two bad entries: a text file and a missing one."""
    (tmp_path / "text.mp4").write_text("not a video")
    lines = [f"{v} {v.parent.name}" for v in videos] + [f"{tmp_path / 'text.mp4'} c0", f"{tmp_path / 'gone.mp4'} c1"]
    path = tmp_path / "list.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def clips(video_files: Path, which: str) -> list[Path]:
    if which == "synthetic":
        return sorted((video_files / "videos").glob("*.mp4"))
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"no shared clips at {SHARED_VIDEOS} (../shared/data/videos from the repository)")
    return sorted(p for p in SHARED_VIDEOS.iterdir() if not p.name.startswith("LICENSE"))


# First in the module, before the fixture starts Ray in this process.
def test_an_address_with_no_ray_cluster_is_one_line(tmp_path, run, video_files):
    pytest.importorskip("ray.data")
    import ray

    assert not ray.is_initialized()  # first in the module: the commands would use a Ray that is up
    src = listing(tmp_path, sorted((video_files / "videos").glob("*.mp4"))[:1])
    proc = adaframe("predict", "--checkpoint", str(run), "--videos", str(src), "--out", str(tmp_path / "o"), "--ray",
                    "127.0.0.1:1", "--no-progress", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "no Ray cluster reached" in proc.stderr and "Traceback" not in proc.stderr


PREDICT = ("--mu", "0", "--batch-size", "2", "--workers", "0", "--no-progress")


@pytest.mark.parametrize("which", ["synthetic", "shared"])
def test_predict_on_ray_writes_the_files_of_one_process(ray_up, run, video_files, tmp_path, which):
    """The same predictions.csv rows (but the wall time), failures.csv, result files and index as one process, with 2
    actors; every bad file listed with its reason, none retried into a duplicate."""
    videos = clips(video_files, which)
    src = listing(tmp_path, videos)
    args = ["predict", "--checkpoint", str(run), "--videos", str(src), *PREDICT]
    one = adaframe(*args, "--out", str(tmp_path / "one"), cwd=tmp_path, check=False)
    on_ray = adaframe(*args, "--out", str(tmp_path / "ray"), "--ray", "local", "--ray-actors", "2", cwd=tmp_path, check=False)
    assert one.returncode == on_ray.returncode == 1, on_ray.stderr  # the bad files
    assert "Traceback" not in on_ray.stderr and "on Ray (2 actors)" in on_ray.stdout
    rows = read(tmp_path / "one" / "predictions.csv")
    assert rows == read(tmp_path / "ray" / "predictions.csv") and len(rows) >= 2
    failures = read(tmp_path / "ray" / "failures.csv")
    assert failures == read(tmp_path / "one" / "failures.csv")
    assert {"text", "gone"} <= {r["video_id"] for r in failures}
    assert len(rows) + len(failures) == len(videos) + 2  # every listed file once, in one of the two
    for line in (ln for ln in one.stderr.splitlines() if ln.startswith("adaframe: error: ")):
        assert line in on_ray.stderr  # each failure said the same way
    for f in (tmp_path / "one" / "results").iterdir():
        a, b = json.loads(f.read_text()), json.loads((tmp_path / "ray" / "results" / f.name).read_text())
        for r in (a, b):
            del r["wall_s"], r["videos_in_group"]  # how the videos were grouped is the one other difference
        assert a == b
    assert sorted(p.name for p in (tmp_path / "ray" / "results").iterdir()) == sorted(p.name for p in (tmp_path / "one" / "results").iterdir())


def test_extract_on_ray_writes_the_files_of_one_process(ray_up, video_files, tmp_path):
    videos = sorted((video_files / "videos").glob("*.mp4"))[:3]
    src = listing(tmp_path, videos)
    one = adaframe("extract", "--videos", str(src), "--out", str(tmp_path / "one"), *TINY_EXTRACT, cwd=tmp_path, check=False)
    on_ray = adaframe("extract", "--videos", str(src), "--out", str(tmp_path / "ray"), *TINY_EXTRACT, "--ray", "local",
                      "--ray-actors", "2", cwd=tmp_path, check=False)
    assert one.returncode == on_ray.returncode == 1 and "Traceback" not in on_ray.stderr
    assert "extracted 3, skipped 0 already done, failed 2" in on_ray.stdout
    for name in ("videos.csv", "failures.csv"):
        assert read(tmp_path / "ray" / name) == read(tmp_path / "one" / name)
    assert json.loads((tmp_path / "ray" / "extract.json").read_text()) == json.loads((tmp_path / "one" / "extract.json").read_text())
    for v in videos:
        for kind in ("features", "memory"):
            a, b = np.load(tmp_path / "one" / kind / f"{v.stem}.npy"), np.load(tmp_path / "ray" / kind / f"{v.stem}.npy")
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)  # the same backbones, in another process
    again = adaframe("extract", "--videos", str(src), "--out", str(tmp_path / "ray"), *TINY_EXTRACT, "--ray", "local",
                     cwd=tmp_path, check=False)
    assert "extracted 0, skipped 3 already done, failed 2" in again.stdout  # the rerun tries only the failed ones


def test_recognitions_turns_a_dataset_of_paths_into_one_row_a_video(ray_up, run, video_files, tmp_path):
    from adaframe.recognize.ray_pipeline import recognition, recognitions
    from adaframe.recognize.recognizer import Recognizer

    good = sorted((video_files / "videos").glob("*.mp4"))[:3]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"hello")
    paths = [good[0], bad, *good[1:]]
    ds = ray_up.data.from_items([{"path": str(p), "tag": i} for i, p in enumerate(paths)])
    rows = {r["path"]: r for r in recognitions(ds, run, mu=0.0, batch_size=2, actors=2).take_all()}
    assert sorted(rows) == sorted(map(str, paths)) and [rows[str(p)]["tag"] for p in paths] == [0, 1, 2, 3]
    failed = rows[str(bad)]
    assert failed["error"].startswith(f"{bad}: ") and failed["label"] is None and failed["probabilities"] is None
    with Recognizer.from_run(run, mu=0.0, workers=0) as rec:
        want = rec.predict(good)
        classes = rec.classes
    for w in want:
        row = rows[str(w.path)]
        assert row["error"] is None and row["label"] == w.label == classes[int(np.argmax(row["probabilities"]))]
        assert row["probabilities"] == pytest.approx(list(w.probs), abs=1e-5) and sum(row["probabilities"]) == pytest.approx(1)
        assert (row["frames_used"], row["steps"], row["gflops"]) == (w.frames_used, w.steps, pytest.approx(w.gflops))
        r = recognition(row)
        assert (r.path, r.seconds, r.label, r.frames_decoded) == (w.path, w.seconds, w.label, w.frames_decoded)
    with pytest.raises(AdaframeError, match="one of them"):
        recognitions(ds)


@pytest.mark.slow
def test_a_video_that_kills_its_actor_is_listed_once_and_its_batch_mates_are_not_lost(ray_up):
    """The actor dies on one video: Ray restarts it and tries the batch once more, then each of its rows alone; the
    culprit comes out as lost, the others recognised, each exactly once, and the run ends."""
    from adaframe.recognize import ray_pipeline

    class Crashes:  # defined here, so Ray ships it by value
        def __call__(self, batch):
            import pyarrow as pa

            paths = [str(p) for p in batch["path"]]
            if "crash" in paths:
                os._exit(1)  # as a segfault in a decoder would
            return pa.table({"video_id": [str(v) for v in batch["video_id"]], "path": paths, "error": [None] * len(paths)})

    rows = [{"video_id": f"v{i}", "path": p} for i, p in enumerate(["a", "b", "crash", "c", "d"])]
    t0 = time.time()
    out = list(ray_pipeline.stream(rows, Crashes, {}, actors=1, batch_size=2))
    assert sorted(r["video_id"] for r in out) == [f"v{i}" for i in range(5)]
    assert {r["path"]: r["error"] for r in out} == {"a": None, "b": None, "crash": ray_pipeline.LOST, "c": None, "d": None}
    assert time.time() - t0 < 240


def _session_processes(sid: int) -> list[str]:
    ps = subprocess.run(["ps", "-o", "pid=,sid=,args=", "-e"], capture_output=True, text=True).stdout
    return [ln for ln in ps.splitlines() if ln.split()[1] == str(sid)]


@pytest.mark.slow
def test_a_ray_run_killed_halfway_and_rerun_gives_the_same_rows_once(ray_up, run, video_files, tmp_path):
    """SIGKILL to the whole command (driver, its local Ray and the actors) mid-collection; the rerun skips the finished
    videos and ends with the rows of an uninterrupted one-process run, none twice."""
    many = tmp_path / "clips"  # long enough (~0.1 s a video once the actor is up) for the kill to land mid-way
    many.mkdir()
    for i in range(6):
        for v in sorted((video_files / "videos").glob("*.mp4")):
            (many / f"{v.stem}_{i}.mp4").symlink_to(v)
    src = listing(tmp_path, sorted(many.iterdir()))
    args = ["predict", "--checkpoint", str(run), "--videos", str(src), "--mu", "0", "--workers", "0", "--no-progress"]
    adaframe(*args, "--out", str(tmp_path / "one"), cwd=tmp_path, check=False)
    out = tmp_path / "ray"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "adaframe", *args, "--batch-size", "1", "--out", str(out), "--ray", "local"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not list((out / "results").glob("*.json")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # a machine lost: nothing gets to clean up
        proc.wait()
    finished = len(list((out / "results").glob("*.json")))
    left = _session_processes(proc.pid)
    for ln in left:  # Ray's agents outlive the group kill for a moment; end what this test started
        os.kill(int(ln.split()[0]), signal.SIGKILL)
    good = len(read(tmp_path / "one" / "predictions.csv"))
    assert 0 < finished < good, "the kill should land mid-collection"
    again = adaframe(*args, "--batch-size", "2", "--out", str(out), "--ray", "local", cwd=tmp_path, check=False)
    assert again.returncode == 1 and f"{finished} already done" in again.stdout, again.stdout + again.stderr
    rows = read(out / "predictions.csv")
    assert rows == read(tmp_path / "one" / "predictions.csv") and len({r["video_id"] for r in rows}) == len(rows) == good
    assert read(out / "failures.csv") == read(tmp_path / "one" / "failures.csv")
    assert not list(out.rglob("*.tmp"))  # atomic writes: no torn file left by the kill


@pytest.mark.slow
def test_benchmark_times_one_process_against_ray_and_the_overhead(ray_up, run, video_files, capsys):
    from adaframe.commands.benchmark import BenchmarkConfig, run_benchmark

    folder = video_files / "videos"
    out = run_benchmark(BenchmarkConfig(videos=(folder,), checkpoint=run, mu=0.0, uniform=4, workers=0, video_batch=2,
                                        ray_actors=(1,)))
    by = {r["method"]: r for r in out if r["set"] == str(folder)}
    n = len(list(folder.glob("*.mp4")))
    for mode in ("one process", "Ray, 1 actor"):
        assert by[mode]["videos"] == n and by[mode]["videos_per_s"] == pytest.approx(n / by[mode]["seconds"])
    assert by["Ray, 1 actor"]["same_as_one_process"] == n  # the same labels and frames
    overhead = by["Ray overhead"]
    assert np.isfinite(overhead["per_video_s"]) and overhead["fixed_s"] > -5
    printed = capsys.readouterr().out
    assert "Ray Data against one process" in printed and f"{str(folder)}: Ray adds" in printed


def test_without_ray_the_flag_is_one_line_saying_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: importing it fails
    monkeypatch.setitem(sys.modules, "ray.data", None)
    for args in (["predict", "--checkpoint", "run", "--videos", "list.txt", "--out", "o", "--ray", "local"],
                 ["extract", "--videos", "list.txt", "--out", "o", "--ray", "auto"],
                 ["benchmark", "--videos", "v", "--checkpoint", "run", "--ray-actors", "1"]):
        proc = adaframe(*args, cwd=tmp_path, check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "needs Ray Data" in proc.stderr and "pip install 'adaframe[ray]'" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--ray", "local"], "--ray runs a collection"),
    (["--videos", "l.txt", "--out", "o", "--ray", "local", "--shard", "0/2"], "without --shard"),
    (["--videos", "l.txt", "--out", "o", "--ray", "local", "--ray-actors", "0"], "--ray-actors"),
])
def test_ray_options_that_do_not_go_together(tmp_path, args, message):
    proc = adaframe("predict", "--checkpoint", "run", *(["a.mp4"] if "--videos" not in args else []), *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
