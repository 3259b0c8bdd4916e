"""The smaller commands on their real outputs: ``probe`` on files made here, a tiny ``benchmark``, and the demo's checks
decided on constructed numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SHARED_VIDEOS, adaframe, write_audio_only, write_video


def first_half(source: Path, path: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def table_rows(stdout: str) -> dict[str, list[str]]:
    """A ``format_table`` printout -> {first cell: the cells}; cells are separated by two spaces or more, so a line of
    prose after the table (one cell) is not a row."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.replace(" ", "")) == {"-"}) + 1
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines[start:]]
    return {c[0]: c for c in cells if len(c) > 1}


def test_probe_reports_what_the_files_hold(tmp_path):
    """probe on files of known make: duration, rate, frames (stated and decoded), the frames extract would take at
    --fps, size; and every bad file of docs/bad-input.md that probe is listed for, each with its line on
    stderr while the others go on, exit status 1."""
    write_video(tmp_path / "good.mp4", 20, 4, 96, 64)
    write_video(tmp_path / "long.mp4", 40, 4, 96, 64, movflags="+faststart")  # the index first: a cut keeps it
    write_video(tmp_path / "clip.avi", 40, 4, 64, 48, codec="mpeg4")
    first_half(tmp_path / "good.mp4", tmp_path / "truncated.mp4")  # the index, at the end, is lost
    first_half(tmp_path / "long.mp4", tmp_path / "trunc_fs.mp4")
    first_half(tmp_path / "clip.avi", tmp_path / "trunc_avi.avi")
    write_audio_only(tmp_path / "audio_only.m4a")
    (tmp_path / "text.mp4").write_text("not a video\n")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "dir.mp4").mkdir()
    names = ["good.mp4", "long.mp4", "clip.avi", "truncated.mp4", "trunc_fs.mp4", "trunc_avi.avi", "audio_only.m4a", "text.mp4",
             "empty.mp4", "dir.mp4", "nope.mp4"]
    corrupted = SHARED_VIDEOS / "decord_corrupted.mp4"
    if corrupted.is_file():
        names.append(str(corrupted))
    proc = adaframe("probe", *names, "--fps", "2", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    rows = table_rows(proc.stdout)
    # codec, seconds, fps, frames stated, frames decoded, T at 2 fps, display, rotation
    assert rows["good.mp4"][1:] == ["h264", "5.00", "4.00", "20", "20", "10", "96x64", "0"]
    assert rows["long.mp4"][1:] == ["h264", "10.00", "4.00", "40", "40", "20", "96x64", "0"]
    assert rows["clip.avi"][1:] == ["mpeg4", "10.00", "4.00", "40", "40", "20", "64x48", "0"]
    want = {  # the rows of docs/bad-input.md for probe
        "truncated.mp4": r"truncated.mp4: cannot open as a media file \(.+\)",  # in parentheses FFmpeg's reason, in its words
        "trunc_fs.mp4": r"trunc_fs.mp4: the video stream ends at [0-4]\.\d\d s, but the file says it lasts 10\.00 s \(truncated file\?\)",
        "trunc_avi.avi": r"trunc_avi.avi: the video stream lasts [0-5]\.\d\d s, but the file says it has 40 frames \(10\.00 s at 4 fps\) "
                         r"\(truncated file\?\)",
        "audio_only.m4a": r"audio_only.m4a: has no video stream \(streams: audio\)",
        "text.mp4": r"text.mp4: cannot open as a media file \(.+\)",
        "empty.mp4": r"empty.mp4: the file is empty",
        "dir.mp4": r"dir.mp4: not a file",
        "nope.mp4": r"nope.mp4: no such file",
        "decord_corrupted.mp4": r".*decord_corrupted.mp4: decoding failed after 28 frames decoded fine, 0\.00 s to 2\.70 s "
                                r"\(.+\)",
    }
    errors = proc.stderr.splitlines()
    assert len(errors) == len(names) - 3
    for name, line in zip(names[3:], errors):
        key = Path(name).name
        assert re.fullmatch("adaframe: error: " + want[key], line), line
        assert rows[key][-1] == "error: " + line.removeprefix("adaframe: error: ")  # the table says it too
    if not corrupted.is_file():
        pytest.skip(f"{corrupted} is absent (../shared/data): the corrupted-video row was not checked")


def test_probe_of_good_files_exits_0(tmp_path):
    write_video(tmp_path / "a.mp4", 6, 3, 32, 32)
    proc = adaframe("probe", "a.mp4", cwd=tmp_path)
    assert proc.stderr == "" and table_rows(proc.stdout)["a.mp4"][1:] == ["h264", "2.00", "3.00", "6", "6", "2", "32x32", "0"]


def test_benchmark_tiny(tmp_path):
    """A tiny benchmark: the three workloads with positive speeds, and the FLOPs of a fixed-K inference batch equal to
    the default agent's multiply-adds counted by hand from its layer shapes (x 2: the table counts FLOPs)."""
    b, d, dm, td, h, c, k = 32, 512, 256, 16, 256, 10, 3
    proc = adaframe("benchmark", "--batch-size", str(b), "--dim", str(d), "--memory-dim", str(dm), "--memory-frames", str(td),
                    "--hidden", str(h), "--classes", str(c), "--frames", str(k), "--max-frames", "12", "--iters", "1",
                    "--warmup", "0", cwd=tmp_path)
    assert proc.stdout.startswith(f"AdaFrame benchmark on cpu (1 threads): batch {b}, D={d}, Dm={dm}, Td={td}, hidden {h}, {c} classes")
    rows = table_rows(proc.stdout)
    assert list(rows) == [f"train step (K={k})", f"inference, fixed K={k}", f"inference, adaptive mu=0.7 ({k:.1f} steps)"]
    for name, cells in rows.items():
        videos_s, gflop, gflop_s, mm_videos_s, ratio = map(float, cells[1:])
        assert min(videos_s, gflop, gflop_s, mm_videos_s) > 0, name
        assert ratio == pytest.approx(videos_s / mm_videos_s, rel=0.05, abs=0.006)  # rounded to 2 decimals
    # The first choice reads the memory with h_0 (query, attention, slot query and scores, moves); each step runs the
    # LSTM cell, reads the memory with h_t, scores the slots and the moves, the utility and the prediction.
    first = h * dm + 2 * td * dm + (h + dm) * dm + td * dm + (h + dm) * 3
    step = d * 4 * h + h * 4 * h + h * dm + 2 * td * dm + (h + dm) * dm + td * dm + (h + dm) * 3 + (h + dm) + h * c
    assert float(rows[f"inference, fixed K={k}"][2]) == pytest.approx(2 * b * (first + k * step) / 1e9, abs=0.005)


# ---------------------------------------------------------------- the demo's checks


def demo_rows(ada=(90.0, 95.0, 97.0), lstm=(80.0, 85.0, 90.0, 96.0), avg_all=60.0, adaptive=(96.0, 6.0), gain=18.0,
              std=None, avg=(50.0, 55.0, 58.0), sampler=(70.0, 75.0, 80.0), sampler_gain=(2.0, 1.0),
              selected=((40.0, 45.0, 50.0),) * 4) -> list[dict]:
    """Rows as ``demo.evaluate_all`` makes them: AvgPooling U4/6/11 and all frames, LSTM-U4/6/11/25, the sampler with
    3/5/10 frames (``sampler_gain``: its learned - uniform at K 3 and 5), AvgPooling and the LSTM over the 4/6/11 frames of
    k-center and of motion-guided sampling (``selected``, in that order), AdaFrame-3/5/10 K steps, AdaFrame-10 at mu 0.5
    (``adaptive``: its mAP and frames)."""
    rows = [{"method": "AvgPooling", "setting": "uniform", "frames": n, "model": "avgpool", "mAP": m, "avg_frames": float(n)}
            for n, m in zip((4, 6, 11), avg)]
    rows += [{"method": "AvgPooling", "setting": "all frames", "frames": None, "model": "avgpool", "mAP": avg_all, "avg_frames": 75.0}]
    rows += [{"method": "LSTM", "setting": "uniform", "frames": n, "model": "lstm", "mAP": m, "avg_frames": float(n)}
             for n, m in zip((4, 6, 11, 25), lstm)]
    for (method, setting), maps in zip([(m, t) for t in ("k-center", "motion-guided") for m in ("AvgPooling", "LSTM")], selected):
        rows += [{"method": method, "setting": setting, "frames": n, "model": method.lower().replace("avgpooling", "avgpool"),
                  "mAP": m, "avg_frames": float(n)} for n, m in zip((4, 6, 11), maps)]
    rows += [{"method": "One-step sampler", "setting": "K slots", "frames": n, "model": "sampler", "mAP": m, "avg_frames": float(n),
              "uniform_mAP": m - g, "learned_minus_uniform": g} for n, m, g in zip((3, 5, 10), sampler, (*sampler_gain, 1.0))]
    for n, m in zip((3, 5, 10), ada):
        rows.append({"method": f"AdaFrame-{n}", "setting": "K steps", "frames": n, "model": "adaframe", "mAP": m, "avg_frames": float(n),
                     "uniform_mAP": m - gain, "learned_minus_uniform": gain, "mAP_std": std,
                     "mAP_per_seed": [m] if std is None else [m - std / 2**0.5, m + std / 2**0.5]})
    rows.append({"method": "AdaFrame-10", "setting": "adaptive mu=0.5 (mu*)", "frames": 10, "model": "adaframe", "mu": 0.5,
                 "mAP": adaptive[0], "avg_frames": adaptive[1]})
    return rows


@pytest.mark.parametrize("rows, chosen, passed", [
    (demo_rows(), {"mu": 0.5}, [True, True, True, None, True]),
    (demo_rows(ada=(80.0, 85.0, 90.0)), {"mu": 0.5}, [True, True, True, None, True]),  # ties with LSTM-U(K+1) pass
    (demo_rows(ada=(90.0, 84.99, 97.0)), {"mu": 0.5}, [False, True, True, None, True]),  # one K below its LSTM
    (demo_rows(avg=(50.0, 95.01, 58.0)), {"mu": 0.5}, [False, True, True, None, True]),  # AvgPooling-U6 beats AdaFrame-5
    (demo_rows(sampler=(70.0, 75.0, 97.01)), {"mu": 0.5}, [False, True, True, None, True]),  # the sampler beats AdaFrame-10
    (demo_rows(selected=((40.0, 45.0, 50.0),) * 3 + ((40.0, 45.0, 97.01),)), {"mu": 0.5},  # LSTM on motion-guided frames does
     [False, True, True, None, True]),
    (demo_rows(selected=((90.01, 45.0, 50.0),) + ((40.0, 45.0, 50.0),) * 3), {"mu": 0.5},  # AvgPooling on k-center frames, K=3
     [False, True, True, None, True]),
    (demo_rows(adaptive=(95.5, 6.0)), {"mu": 0.5}, [True, True, True, None, True]),  # exactly 0.5 below LSTM-U25
    (demo_rows(adaptive=(95.49, 6.0)), {"mu": 0.5}, [True, False, True, None, True]),
    (demo_rows(adaptive=(96.0, 10.01)), {"mu": 0.5}, [True, False, True, None, True]),  # more than 10 frames
    (demo_rows(avg_all=97.0), {"mu": 0.5}, [True, False, True, None, True]),  # AvgPooling over all frames is the dense one
    (demo_rows(ada=(90.0, 95.0, 95.5), adaptive=(50.0, 2.0)), {}, [True, True, True, None, True]),  # no mu*: K steps are used
    (demo_rows(gain=3.0), {"mu": 0.5}, [True, True, True, None, True]),
    (demo_rows(gain=2.99), {"mu": 0.5}, [True, True, False, None, True]),
    (demo_rows(std=1.5), {"mu": 0.5}, [True, True, True, True, True]),
    (demo_rows(std=1.51), {"mu": 0.5}, [True, True, True, False, True]),
    (demo_rows(sampler_gain=(2.0, 0.0)), {"mu": 0.5}, [True, True, True, None, False]),  # no gain over its uniform frames
])
def test_demo_checks_decide_on_the_numbers(rows, chosen, passed):
    from adaframe.commands.demo import checks

    fixed = next(r for r in rows if r["method"] == "AdaFrame-10" and r["setting"] == "K steps")
    results = checks(rows, chosen, 1 if fixed["mAP_std"] is None else 2)
    assert [c["passed"] for c in results] == passed, [c["detail"] for c in results]
    lstm25, avg_all = (next(r for r in rows if r["frames"] == f and r["model"] == m) for f, m in ((25, "lstm"), (None, "avgpool")))
    dense = "AvgPooling, all frames" if avg_all["mAP"] > lstm25["mAP"] else "LSTM-U25"
    assert f"vs {dense} " in results[1]["detail"]
    assert ("mu*=0.5 chosen on val" if chosen else "no mu within 0.5 of K steps on val: K steps") in results[1]["detail"]


# ---------------------------------------------------------------- adaframe check


def test_check_compares_adaframe_with_every_baseline_at_equal_frames(synth_dir, tmp_path):
    """``adaframe check`` on a data set: every row's numbers are its runs' test numbers (recomputed with eval), the best
    baseline is the best of those it names, the margin is AdaFrame's mAP minus it; a second run trains nothing."""
    import json

    args = ("check", "--data", str(synth_dir), "--out", "c", "--frames", "4", "--hidden", "8", "--mu", "0.3")
    first = adaframe(*args, cwd=tmp_path, timeout=600)
    result = json.loads((tmp_path / "c" / "check.json").read_text())
    (row,) = result["rows"]
    assert row["set"] == synth_dir.name and "| data |" in (tmp_path / "c" / "check.md").read_text()
    baselines = ("AvgPooling-U", "LSTM-U", "sampler", "AvgPooling-kcenter", "LSTM-kcenter", "AvgPooling-motion", "LSTM-motion",
                 "AdaFrame's own scan")
    assert row["best"] == max(baselines, key=lambda b: row[b]["mAP"])
    assert row["margin"] == pytest.approx(row["AdaFrame"]["mAP"] - row[row["best"]]["mAP"])
    assert row["policy_gain"] == pytest.approx(row["policy"]["mAP"] - row["AdaFrame's own scan"]["mAP"])
    runs = tmp_path / "c" / "runs" / synth_dir.name
    for key, run, extra in (("AdaFrame", "adaframe-4-s0", ()), ("adaptive", "adaframe-4-s0", ("--mu", "0.3")),
                            ("LSTM-motion", "lstm-4-s0", ("--sampling", "motion")), ("AvgPooling-all", "avgpool-s0", ("--sampling", "all")),
                            ("sampler", "sampler-4-s0", ())):
        adaframe("eval", "--checkpoint", str(runs / run), "--data", str(synth_dir), "--split", "test", "--frames", "4",
                 "--json", "e.json", "--no-progress", *extra, cwd=tmp_path)
        assert json.loads((tmp_path / "e.json").read_text())["mAP"] == pytest.approx(row[key]["mAP"]), key
    assert 0 <= row["logistic"]["mean"] <= 100 and 0 <= row["logistic"]["frames"] <= 100 and 0 <= row["pooled"] <= 100
    assert any(line.startswith("AdaFrame-4 >= the best baseline at 4 frames on") for line in first.stdout.splitlines())
    again = adaframe(*args, cwd=tmp_path, timeout=600)
    lines = (again.stdout + again.stderr).splitlines()
    assert sum(line.startswith("reusing the finished run") for line in lines) == 4
    assert not any(line.startswith("training ") for line in lines)
    assert json.loads((tmp_path / "c" / "check.json").read_text())["rows"][0]["margin"] == row["margin"]


def test_check_says_what_is_missing_in_one_line(tmp_path):
    proc = adaframe("check", "--out", str(tmp_path / "c"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nothing to check" in proc.stderr
    proc = adaframe("check", "--bench", str(tmp_path), "--only", "family-1", "--out", str(tmp_path / "c"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no family.py there" in proc.stderr, proc.stderr


def test_check_passes_adaframe_options_into_the_model_options(tmp_path):
    """``check --adaframe scan_bias=1 policy-check=false``: a model option lands in AdaFrame's ``model_options``, a training
    setting in its training config, typed as ``train`` would parse it; an unknown name is refused naming it."""
    from adaframe.commands.check import CheckConfig, plan_runs
    from adaframe.utils import AdaframeError

    cfg = CheckConfig(data=(tmp_path / "d",), out=tmp_path / "c", adaframe=("scan_bias=1", "policy-check=false"))
    plan = plan_runs({"d": tmp_path / "d"}, cfg)
    (ada,) = plan["d/adaframe"]
    assert ada.model_options.scan_bias == 1.0 and ada.policy_check is False and ada.out.name == "adaframe-10-scan_bias=1.0-policy_check=False-s0"
    assert plan["d/avgpool"][0].model_options.scan_bias is None  # only AdaFrame's runs take them
    with pytest.raises(AdaframeError, match="'adaframe train' has no option 'bias'"):
        plan_runs({"d": tmp_path / "d"}, CheckConfig(data=(tmp_path / "d",), out=tmp_path / "c", adaframe=("bias=1",)))
