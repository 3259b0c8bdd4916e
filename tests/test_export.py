"""``adaframe export`` and the exported run on onnxruntime: the graphs, the manifest, the same frames and probabilities
as PyTorch, and bad export folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from adaframe.media.backbones import build_backbones, extract_features
from adaframe.models.agent import AdaFrame, AgentConfig
from adaframe.models.kinds import load_checkpoint, save_checkpoint
from adaframe.recognize.export import export_graph, graphs
from adaframe.recognize.exported import ExportedAdaFrame, OnnxGraph, read_manifest
from adaframe.recognize.recognizer import Recognizer
from adaframe.rl.rollout import StopRule, rollout, stored_frames
from adaframe.utils import AdaframeError
from conftest import RUN_K as K
from conftest import adaframe, lively, make_run

GRAPHS = ["backbone", "memory_backbone", "agent_encode", "agent_first", "agent_step"]


@pytest.fixture(scope="module")
def run(extracted, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"), extracted)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    """The run exported by the command, as a user runs it."""
    out = tmp_path_factory.mktemp("export") / "onnx"
    proc = adaframe("export", "--checkpoint", str(run), "--out", str(out), cwd=out.parent)
    assert proc.stdout.startswith(f"exported {run} (2 classes, K {K}, memory of 16 frames) to {out}: backbone.onnx")
    assert "largest difference from PyTorch" in proc.stdout and not proc.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["onnx"]  # the temporary folder was renamed, nothing left beside
    return out


def test_manifest_describes_graphs_that_load_check_and_take_any_batch(exported, run, video_files):
    """Each graph passes onnx.checker, its inputs and outputs are those the manifest lists with a dynamic batch, the
    standardisation statistics are the checkpoint's, and the backbone graph (normalisation inside) gives the PyTorch
    backbone's features on decoded frames at batch 1 and 5."""
    m = read_manifest(exported)
    model, payload = load_checkpoint(run)
    assert sorted(m["graphs"]) == sorted(GRAPHS) and m["classes"] == payload["classes"] and m["frames"] == K
    assert m["features"] == payload["features"] and m["memory_frames"] == 16
    assert m["state"] == ["h", "c", "read", "at", "count", "summed", "best"]  # the default agent: temporal classifier, prediction critic
    assert m["standardization"]["frames"]["mean"] == model.frame_norm.mean.tolist()
    assert m["standardization"]["memory"]["std"] == model.memory.norm.std.tolist()
    assert m["stop"]["mu"] == 0.7 and m["stop"]["patience"] == 1 and m["rules"]["candidate_frames"].startswith("one every 1 s")
    for name, entry in m["graphs"].items():
        graph = onnx.load(str(exported / entry["file"]))
        onnx.checker.check_model(graph, full_check=True)
        listed = [(v["name"], v["shape"]) for v in entry["inputs"] + entry["outputs"]]
        found = [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in [*graph.graph.input, *graph.graph.output]]
        assert listed == found, name
        assert all(shape[0] == "batch" for _, shape in found), name
        assert entry["largest_difference"] < 1e-4
    step = m["graphs"]["agent_step"]["inputs"]
    assert step[2:5] == [{"name": "blocked", "dtype": "bool", "shape": ["batch", 19]},
                         {"name": "position", "dtype": "float32", "shape": ["batch"]},
                         {"name": "h", "dtype": "float32", "shape": ["batch", 24]}]
    assert step[6] == {"name": "read", "dtype": "float32", "shape": ["batch", K, 512 + 8]}  # K frames: D and their position
    backbone, _ = build_backbones(payload["features"])
    graph = OnnxGraph(exported / "backbone.onnx", m["graphs"]["backbone"])
    size = payload["features"]["backbone"]["size"]
    frames = np.random.default_rng(0).integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    for n in (1, 5):
        want = extract_features(backbone, frames[:n])
        got = graph(torch.from_numpy(frames[:n]))[0].numpy()
        assert got.shape == want.shape == (n, 512)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("mu", [0.0, None])
def test_exported_run_predicts_the_same_frames_and_probabilities_as_pytorch(exported, run, video_files, tmp_path, mu):
    """On the synthetic clips, in groups of 3 (batches that shrink as videos stop), and a file that is no video: the
    same failures, frames visited in the same order, labels, cost; probabilities within 1e-4 of PyTorch's."""
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    paths = sorted((video_files / "videos").glob("*.mp4")) + [bad]
    want = [r for g in Recognizer.from_run(run, workers=1, frames=K, mu=mu, batch_size=3).predict_groups(paths) for r in g]
    got = [r for g in Recognizer.from_export(exported, workers=1, frames=K, mu=mu, batch_size=3).predict_groups(paths) for r in g]
    assert [r.error is None for r in got] == [r.error is None for r in want] == [True] * 8 + [False]
    assert got[-1].error == want[-1].error
    if mu == 0.0:
        assert min(r.steps for r in want[:-1]) < K  # some videos stopped early: the batch shrank
    for a, b in zip(want[:-1], got[:-1]):
        assert (b.seconds, b.steps, b.frames_used, b.label, b.gflops, b.backbone_calls) == (a.seconds, a.steps, a.frames_used, a.label, a.gflops, a.backbone_calls)
        assert len(a.probs) == len(b.probs) == 2
        assert max(abs(p - q) for p, q in zip(a.probs, b.probs)) < 1e-4
        assert max(abs(p - q) for p, q in zip(a.utilities, b.utilities)) <= 1e-4 + 1e-9  # both rounded to 4 decimals


AGENTS = {
    "paper": {"memory_read": "lstm", "selection": "gaussian", "prediction": "lstm"},
    "visited order": {},
    "pooled, memory read by the LSTM": {"memory_read": "lstm", "prediction": "pooled"},
    "default": {"temporal": True, "positions": True, "critic": "prediction", "frame_loss": "both", "pooled_by": "subset"},
    "default, by the scan": {"temporal": True, "positions": True, "critic": "prediction", "inference": "scan"},
}


@pytest.mark.parametrize("options", AGENTS.values(), ids=AGENTS.keys())
def test_exported_agent_takes_the_pytorch_agents_decisions(options, tmp_path):
    """Each AdaFrame variant's agent graphs in the same rollout as the PyTorch agent (random, lively weights, adaptive
    lookahead): the same frames at every step, the same stops, logits and utilities within 1e-5."""
    torch.manual_seed(0)
    cfg = AgentConfig(12, 6, 4, hidden=16, **options)
    model = lively(AdaFrame(cfg)).eval()
    spec = {"backbone": {"size": 8}, "memory_backbone": {"size": 8}}
    onnx_graphs = {}
    for g in graphs(model, torch.nn.Identity(), torch.nn.Identity(), spec, 5, 6):
        if g.name.startswith("agent_"):
            entry = export_graph(g, tmp_path / f"{g.name}.onnx")
            onnx_graphs[g.name] = OnnxGraph(tmp_path / entry["file"], entry)
    assert ("agent_first" in onnx_graphs) == (cfg.selection == "slots")
    agent = ExportedAdaFrame(cfg, onnx_graphs, 6)
    assert all(p.is_meta for p in agent.parameters())  # no weights of its own: the graphs hold them
    b, t = 7, 20
    features, memory = torch.randn(b, t, 12), torch.randn(b, 5, 6)
    lengths = torch.randint(6, t + 1, (b,))
    for stop in (StopRule("utility", 0.01), None):
        with torch.no_grad():
            want = rollout(model, memory, lengths, stored_frames(features), 6, stop=stop)
            got = rollout(agent, memory, lengths, stored_frames(features), 6, stop=stop)
        assert torch.equal(got.indices, want.indices) and torch.equal(got.alive, want.alive)
        torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=1e-5, equal_nan=True)
        torch.testing.assert_close(got.utilities, want.utilities, rtol=0, atol=1e-5, equal_nan=True)
        if cfg.inference == "policy":
            assert len(set(want.indices[:, :2].flatten().tolist())) > 2  # the policy looks at different frames per video
    if cfg.temporal:  # the graph holds K = 6 frames: a longer rollout is refused, a shorter one runs
        with pytest.raises(AdaframeError, match="holds K = 6 frames: run at most 6 steps"):
            rollout(agent, memory, lengths, stored_frames(features), 7)
        with torch.no_grad():
            short = rollout(agent, memory, lengths, stored_frames(features), 3).logits
            torch.testing.assert_close(short, rollout(model, memory, lengths, stored_frames(features), 3).logits, rtol=0, atol=1e-5)


def test_predict_and_benchmark_with_export(exported, run, video_files, tmp_path):
    """``predict --export`` prints what ``predict --checkpoint`` prints (but the wall time); ``benchmark --export``
    times both runtimes side by side and finds every frame and label the same."""
    path = str(video_files / "videos" / "video00002.mp4")
    a = json.loads(adaframe("predict", "--checkpoint", str(run), path, "--json", "--mu", "0", cwd=tmp_path).stdout)
    b = json.loads(adaframe("predict", "--export", str(exported), path, "--json", "--mu", "0", cwd=tmp_path).stdout)
    for d in (a, b):
        d.pop("wall_s")
        d["top"] = [[c, round(p, 3)] for c, p in d["top"]]
    assert a == b
    proc = adaframe("benchmark", "--videos", str(video_files / "videos"), "--checkpoint", str(run), "--export", str(exported),
                    "--workers", "1", "--uniform", "6", cwd=tmp_path)
    assert f"AdaFrame-{K} mu 0.7 (PyTorch)" in proc.stdout and f"AdaFrame-{K} mu 0.7 (onnxruntime)" in proc.stdout
    assert "onnxruntime / PyTorch" in proc.stdout
    assert "8 videos, the same frames visited in 8, the same label in 8, largest probability difference" in proc.stdout


def _copy(exported: Path, to: Path) -> Path:
    """A copy of the export whose graphs are links (cheap); a test replaces the file it spoils."""
    to.mkdir()
    for f in exported.iterdir():
        (to / f.name).symlink_to(f) if f.suffix == ".onnx" else shutil.copy(f, to / f.name)
    return to


def _spoil_graph(d: Path) -> None:
    data = (d / "agent_step.onnx").read_bytes()
    (d / "agent_step.onnx").unlink()
    (d / "agent_step.onnx").write_bytes(data[: len(data) // 2])


def _garbage_with_its_hash(d: Path) -> None:
    from adaframe.media.backbones import sha256

    (d / "agent_step.onnx").unlink()
    (d / "agent_step.onnx").write_bytes(b"not a graph")
    m = json.loads((d / "manifest.json").read_text())
    m["graphs"]["agent_step"]["sha256"] = sha256(d / "agent_step.onnx")
    (d / "manifest.json").write_text(json.dumps(m))


BAD = {
    "missing": (lambda d: shutil.rmtree(d), "does not exist"),
    "a file": (lambda d: (shutil.rmtree(d), d.write_text("{}")), "is a file, not the folder 'adaframe export' writes"),
    "no manifest": (lambda d: (d / "manifest.json").unlink(), "is not an adaframe export: it has no manifest.json"),
    "manifest not JSON": (lambda d: (d / "manifest.json").write_text("{"), "manifest.json is not valid JSON"),
    "other JSON": (lambda d: (d / "manifest.json").write_text("[1, 2]"), "is not an adaframe export manifest"),
    "graph missing": (lambda d: (d / "agent_first.onnx").unlink(), "agent_first.onnx is missing"),
    "graph cut short": (_spoil_graph, "agent_step.onnx is not the file exported"),
    "not a graph": (_garbage_with_its_hash, "onnxruntime cannot load it"),
}


@pytest.mark.parametrize("spoil, message", BAD.values(), ids=BAD.keys())
def test_bad_export_folder_is_one_clear_line(exported, video_files, tmp_path, spoil, message):
    d = _copy(exported, tmp_path / "export")
    spoil(d)
    proc = adaframe("predict", "--export", str(d), str(video_files / "videos" / "video00001.mp4"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("adaframe: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
    with pytest.raises(AdaframeError, match=message.split(":")[0]):
        Recognizer.from_export(d)


def test_export_refuses_what_it_cannot_export_in_one_line(run, extracted, exported, tmp_path):
    """A baseline run, a run on synthetic features (no backbone), a non-empty --out: one line each, nothing written."""
    avgpool = make_run(tmp_path / "avgpool", extracted, kind="avgpool")
    model, payload = load_checkpoint(run)
    synthetic = tmp_path / "synthetic"
    save_checkpoint(synthetic, model, "adaframe", payload["classes"], payload["config"], memory_frames=16)
    for args, message in ((["--checkpoint", str(avgpool)], "holds a 'avgpool' model; predict and export take an AdaFrame run"),
                          (["--checkpoint", str(synthetic)], "not made by 'adaframe extract'"),
                          (["--checkpoint", str(run), "--out", str(exported)], "exists and is not an empty folder")):
        out = ["--out", str(tmp_path / "out")] if "--out" not in args else []
        proc = adaframe("export", *args, *out, cwd=tmp_path, check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.export-*"))


def test_cuda_without_a_cuda_onnxruntime_says_what_to_install(exported):
    import onnxruntime as ort

    from adaframe.recognize.exported import session

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(AdaframeError, match="has no CUDA provider .*install onnxruntime-gpu of the same version"):
        session(exported / "agent_step.onnx", "cuda")
