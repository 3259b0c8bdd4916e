"""Collections of video files (recognize/collection.py, recognize/jobs.py): the job runner ``extract`` and
``predict --videos`` share (shards, settings, per-video failure files, the index in list order, resume), and the files a
folder leaves out, named in both commands' summary line and in ``OUT/skipped.csv``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adaframe.recognize.jobs import CollectionJob
from adaframe.utils import AdaframeError
from conftest import TINY_EXTRACT, adaframe, copy, make_run, source


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def folder(tmp_path: Path, n: int = 3) -> Path:
    root = tmp_path / "clips"
    for i in range(n):
        root.joinpath(f"v{i}.mp4").parent.mkdir(parents=True, exist_ok=True)
        (root / f"v{i}.mp4").write_bytes(b"x")
    return root


def test_job_runner_shards_records_and_rebuilds_in_list_order(tmp_path):
    src = folder(tmp_path, 5)
    (src / "readme.md").write_text("no video")
    jobs = [CollectionJob.start(src, tmp_path / "out", shard=f"{i}/2") for i in range(2)]
    assert [e.video_id for e in jobs[0].mine] == ["v0", "v2", "v4"] and [e.video_id for e in jobs[1].mine] == ["v1", "v3"]
    job = jobs[0]
    job.open("settings.json", {"k": 1}, "things")
    job.open("settings.json", {"k": 1}, "things")  # the same settings: a rerun continues
    with pytest.raises(AdaframeError, match=r"holds things made with other settings \(\S*settings.json\); use another --out"):
        job.open("settings.json", {"k": 2}, "things")
    done: set[str] = set()
    v = {e.video_id: e for e in job.entries}
    job.failed(v["v3"], "broken")
    job.failed(v["v1"], f"{v['v1'].path}: no such file")
    job.failed(v["v0"], "first try failed")
    job.succeeded(v["v0"])  # a later success removes the earlier failure
    done.add("v0")
    assert not job.failure_file("v0").exists()
    n = job.write_failures(((e.video_id, str(e.path)) for e in job.entries), lambda vid: vid in done)
    assert n == 2 and [(r["video_id"], r["reason"]) for r in rows(job.out / "failures.csv")] == \
        [("v1", f"{v['v1'].path}: no such file"), ("v3", "broken")]  # in the list's order, not the failures'
    numbers = job.finish(lambda: {"done": len(done)})
    assert numbers == {"done": 1, "skipped_files": 1}
    assert rows(job.out / "skipped.csv") == [{"path": str(src / "readme.md"), "reason": "not a video file (by its extension)"}]
    assert job.skipped_note() == f"; 1 file skipped (not videos: see {job.out / 'skipped.csv'})"


def test_job_runner_refuses_shard_and_an_out_it_cannot_create(tmp_path):
    src = folder(tmp_path)
    with pytest.raises(AdaframeError, match="--shard"):
        CollectionJob.start(src, tmp_path / "out", shard="2/2")
    (tmp_path / "file").write_text("in the way")
    job = CollectionJob.start(src, tmp_path / "file" / "out")
    with pytest.raises(AdaframeError, match=r"cannot create --out \S*file/out"):
        job.open("s.json", {}, "things")
    assert job.skipped == [] and job.skipped_note() == ""


def write_gif(path: Path, frames: int = 12, fps: int = 4) -> Path:
    """A small animated GIF, a colour a frame (PyAV decodes it as a video)."""
    images = []
    for i in range(frames):
        img = np.zeros((48, 64, 3), np.uint8)
        img[..., i % 3] = 200
        images.append(Image.fromarray(img))
    images[0].save(path, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
    return path


def test_extract_and_predict_take_gifs_and_count_the_files_they_skip(video_files, tmp_path):
    clips = tmp_path / "clips"
    copy(source(video_files, 0), clips / "red" / "a.mp4")
    write_gif(clips / "red" / "b.gif")
    (clips / "red" / "notes.txt").write_text("not a video")
    data = tmp_path / "data"
    proc = adaframe("extract", "--videos", str(clips), "--out", str(data), *TINY_EXTRACT, cwd=tmp_path)
    assert "2 videos listed" in proc.stdout and f"1 file skipped (not videos: see {data / 'skipped.csv'})" in proc.stdout
    assert {r["video_id"] for r in rows(data / "videos.csv")} == {"a", "b"}  # the GIF is a video
    assert rows(data / "skipped.csv") == [{"path": str(clips / "red" / "notes.txt"), "reason": "not a video file (by its extension)"}]
    run = make_run(tmp_path / "run", data)
    out = tmp_path / "pred"
    proc = adaframe("predict", "--checkpoint", str(run), "--videos", str(clips), "--out", str(out), "--no-progress", cwd=tmp_path)
    assert proc.stdout.startswith("2 videos: 2 recognised") and f"1 file skipped (not videos: see {out / 'skipped.csv'})" in proc.stdout
    assert [r["video_id"] for r in rows(out / "predictions.csv")] == ["a", "b"]
    assert rows(out / "skipped.csv") == rows(data / "skipped.csv")
    result = json.loads((out / "results" / "b.json").read_text())
    assert result["video"] == str(clips / "red" / "b.gif") and sum(p for _, p in result["top"]) == pytest.approx(1, abs=1e-3)


def test_index_reads_the_typed_results_back(tmp_path):
    """A result file is ``Recognition.to_json``; the index reads it back with ``from_json`` into the same object."""
    from adaframe.recognize.result import Ratios, Recognition

    base = Recognition(Path("a.mp4"), "AvgPooling uniform25", 0.5, 1, "red", (("red", 0.7), ("blue", 0.3)), 25, 25,
                       (0.1,) * 25, 25, 0, 30, 2, 12.5)
    r = Recognition(Path("a.mp4"), "AdaFrame-5 (mu 0.7)", 1.0, 2, "red", (("red", 0.9), ("blue", 0.1)), 3, 2, (1.0, 3.0, 1.0), 2,
                    16, 40, 3, 4.25, (0.5,) * 16, 38, 10, (0.1, 0.3, 0.2))
    r = r.compared_with(base)
    assert r.vs_baseline == Ratios(4.25 / 12.5, 1.0 / 0.5, 2 / 25)
    assert Recognition.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert r.per_video().wall_s == 0.5 and r.with_top(1).top == (("red", 0.9),) and r.probability == 0.9
    failed = Recognition(Path("b.mp4"), "AdaFrame-5", 0.2, 1, error="b.mp4: no such file")
    assert failed.to_json() == {"video": "b.mp4", "method": "AdaFrame-5", "wall_s": 0.2, "videos_in_group": 1,
                                "error": "b.mp4: no such file", "top": []}
    assert Recognition.from_json(failed.to_json()) == failed

