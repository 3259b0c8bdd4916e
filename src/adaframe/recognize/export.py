"""The work of ``adaframe export`` (``commands/export.py``): a trained AdaFrame run as ONNX graphs, one per network
(decoding happens between the agent's steps), every batch dimension dynamic, and ``manifest.json`` (shapes, classes,
statistics, the frame and memory rules, K, mu, patience):

* ``backbone.onnx`` / ``memory_backbone.onnx``: uint8 RGB frames [N, S, S, 3] -> features [N, D] / [N, Dm];
* ``agent_encode.onnx``: memory [B, Td, Dm] -> encoded [B, Td, Dm];
* ``agent_first.onnx`` (slots selection): encoded -> logits of the first choice [B, Td + 3];
* ``agent_step.onnx``: frame [B, D], encoded, blocked [B, Td + 3], position [B], the state (``AdaFrame.state_names``)
  -> logits [B, C], selection scores, utility [B], the next state.

The decisions between the graphs stay the PyTorch agent's code (``exported.py``). Each graph is checked
(``onnx.checker``) and compared with PyTorch on onnxruntime before the folder appears.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adaframe.media.backbones import IMAGENET_MEAN, IMAGENET_STD, preprocess, sha256
from adaframe.media.reader import RESIZE_RATIO
from adaframe.models.agent import POSITION_FREQUENCIES, AdaFrame, Where
from adaframe.models.kinds import CHECKPOINT
from adaframe.recognize.exported import FORMAT, MANIFEST, VERSION, session
from adaframe.utils import AdaframeError, write_json

BATCH = "batch"  # the name of every dynamic dimension
TOLERANCE = 1e-4  # largest difference from PyTorch at export, relative to the output's largest value


@dataclass(frozen=True)
class Graph:
    """One network to export: ``module(*example)`` -> outputs, with the names the graph's inputs and outputs get."""

    name: str
    module: nn.Module
    example: tuple[torch.Tensor, ...]  # at batch 2
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class _Backbone(nn.Module):
    """uint8 frames [N, S, S, 3] -> features: the preprocessing inside, so a deployment feeds decoded frames."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(preprocess(frames))


class _Encode(nn.Module):
    def __init__(self, agent: AdaFrame):
        super().__init__()
        self.agent = agent

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        return self.agent.encode(memory)


class _First(_Encode):
    def forward(self, encoded: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.agent.first_scores(encoded)


class _Step(_Encode):
    """One step: the state's tensors follow the frame, the memory and where the agent is (``AdaFrame.state_names``)."""

    def forward(self, frame: torch.Tensor, encoded: torch.Tensor, blocked: torch.Tensor, position: torch.Tensor,  # type: ignore[override]
                *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.agent.step(frame, encoded, state, Where(blocked, position))
        return (out.logits, out.policy, out.utility, *out.state)


@torch.no_grad()  # the examples are inputs, with no autograd history (``_compare`` hands them to numpy)
def graphs(agent: AdaFrame, backbone: nn.Module, memory_backbone: nn.Module, spec: dict, memory_frames: int, steps: int) -> list[Graph]:
    """The networks of a run, each with an example input at batch 2; with the temporal classifier the step's state holds
    ``steps`` (K) frames, a size fixed in the graph (the exporter unrolls its LSTM over them)."""
    cfg, b = agent.cfg, 2
    frames = lambda size: torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8)  # noqa: E731
    memory = torch.randn(b, memory_frames, cfg.memory_dim)
    encoded = agent.encode(memory)
    read = min(2, steps - 1)  # frames read before, of the K the state holds
    at = torch.cat([torch.rand(b, read), torch.full((b, steps - read), 2.0)], 1)  # [B, K]: positions, then no frame yet
    states = {"h": torch.randn(b, cfg.hidden).tanh(), "c": torch.randn(b, cfg.hidden),
              "read": torch.randn(b, steps, cfg.feature_dim + 2 * POSITION_FREQUENCIES), "at": at,
              "summed": torch.rand(b, cfg.num_classes) * 2, "count": torch.full((b,), 2.0), "best": torch.rand(b)}
    names = agent.state_names()
    blocked, position = torch.rand(b, memory_frames + 3) < 0.3, torch.rand(b)
    frame = agent.frame_norm.mean + agent.frame_norm.std * torch.randn(b, cfg.feature_dim)  # at the scale of real features
    out = [Graph("backbone", _Backbone(backbone), (frames(spec["backbone"]["size"]),), ("frames",), ("features",)),
           Graph("memory_backbone", _Backbone(memory_backbone), (frames(spec["memory_backbone"]["size"]),), ("frames",), ("features",)),
           Graph("agent_encode", _Encode(agent), (memory,), ("memory",), ("encoded",))]
    if cfg.selection == "slots":
        out.append(Graph("agent_first", _First(agent), (encoded,), ("encoded",), ("scores",)))
    out.append(Graph("agent_step", _Step(agent), (frame, encoded, blocked, position, *(states[n] for n in names)),
                     ("frame", "encoded", "blocked", "position", *names), ("logits", "selection", "utility", *(f"{n}_next" for n in names))))
    return out


@contextlib.contextmanager
def _quiet():
    """The exporter's warnings (torchvision ops it skips, deprecations inside torch) say nothing about this export."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _shapes(values: list) -> list[dict]:
    """ONNX value infos -> [{"name", "dtype", "shape"}], a dynamic dimension named ``batch``."""
    import onnx

    return [{"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
             "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for v in values]


def export_graph(graph: Graph, path: Path) -> dict:
    """Write ``graph`` to ``path`` (the first dimension of every input and output dynamic), check it with
    ``onnx.checker``, and compare it on onnxruntime with PyTorch at batch 1 and 3. Returns its manifest entry."""
    import onnx

    graph.module.eval()
    batch = torch.export.Dim(BATCH, min=1)
    dims = [{0: batch} for _ in graph.example]
    params = inspect.signature(graph.module.forward).parameters.values()
    if any(p.kind == p.VAR_POSITIONAL for p in params):  # torch.export wants a *state's dimensions as one nested tuple
        fixed = sum(p.kind == p.POSITIONAL_OR_KEYWORD for p in params)
        dims = [*dims[:fixed], tuple(dims[fixed:])]
    with _quiet(), torch.no_grad():
        torch.onnx.export(graph.module, graph.example, str(path), input_names=list(graph.inputs), output_names=list(graph.outputs),
                          dynamo=True, dynamic_shapes=tuple(dims), external_data=False, verbose=False)
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:  # one name for each dynamic size (the exporter picks others)
        dim = value.type.tensor_type.shape.dim
        if dim and not dim[0].dim_value:
            dim[0].dim_param = BATCH
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return {"file": path.name, "sha256": sha256(path), "inputs": _shapes(list(model.graph.input)),
            "outputs": _shapes(list(model.graph.output)), "largest_difference": _compare(graph, path),
            "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))}


def _resized(x: torch.Tensor, rows: int) -> torch.Tensor:
    """The example ``x`` [2, ...] at ``rows`` rows (repeated and perturbed so that the rows differ)."""
    y = x.repeat(rows, *([1] * (x.ndim - 1)))[:rows]
    if y.dtype.is_floating_point:
        y = y + 0.1 * torch.randn_like(y) * (x.abs().mean() + 1e-3)
    return y


def _compare(graph: Graph, path: Path) -> float:
    """The largest difference between onnxruntime and PyTorch over the graph's outputs at batch 1 and 3, each relative to
    the output's scale (its largest |value|); an error above ``TOLERANCE``."""
    run = session(path)
    largest = 0.0
    for rows in (1, 3):
        inputs = tuple(_resized(x, rows) for x in graph.example)
        with torch.no_grad():
            expected = graph.module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = run.run(None, {n: x.numpy() for n, x in zip(graph.inputs, inputs)})
        for name, e, g in zip(graph.outputs, expected, got):
            if tuple(g.shape) != tuple(e.shape):
                raise AdaframeError(f"export: {path.name}'s {name} has shape {list(g.shape)} on onnxruntime, {list(e.shape)} in PyTorch")
            e = e.numpy()
            scale = float(np.abs(e).max(initial=0.0)) or 1.0
            largest = max(largest, float(np.abs(g - e).max(initial=0.0)) / scale)
    if largest > TOLERANCE:
        raise AdaframeError(f"export: {path.name} on onnxruntime differs from PyTorch by {largest:.2e} (relative), more than {TOLERANCE}")
    return largest


def _statistics(agent: AdaFrame) -> dict:
    return {name: {"mean": norm.mean.tolist(), "std": norm.std.tolist()}
            for name, norm in (("frames", agent.frame_norm), ("memory", agent.memory.norm))}


def rules(spec: dict, memory_frames: int, agent: AdaFrame, frames: int) -> dict:
    """How a deployment must pick and prepare frames: what ``predict`` does (``media.reader``, ``media.memory_rule``), in words."""
    big, small = spec["backbone"]["size"], spec["memory_backbone"]["size"]
    return {
        "candidate_frames": f"one every {1 / spec['fps']:g} s from the start: frame i is at i / {spec['fps']:g} s "
                            "(media.reader.sample_times); the agent's positions are indices into them",
        "frame_at_time": "the last decoded frame whose timestamp (running maximum of pts) is <= t, else the first frame",
        "image": f"shorter side scaled to round(S * {RESIZE_RATIO:.6f}) (bilinear), centre crop S x S, display rotation "
                 f"applied; RGB uint8 [N, S, S, 3], S = {big} for the backbone and {small} for the memory backbone",
        "memory": f"{spec['memory_frames']} frames, one per equal segment of the video, "
                  + ("the keyframe a seek to its centre lands on when within the segment, else the frame at its centre "
                     "(media.memory_rule.memory_frames)" if spec.get("memory_at") == "keyframe" else "the frame at its centre")
                  + f"; the agent reads {memory_frames} of them (data.features.memory_subset)",
        "first_frame": ("the argmax of agent_first's scores (SlotSelection.choose)" if agent.cfg.selection == "slots" else
                        f"the frame at relative position {agent.cfg.start:g} (models.positions.fixed_start)"),
        "next_frame": "after each step but the last: the selection scores -> the next frame (models.agent, "
                      "GaussianSelection / SlotSelection.choose with no exploration)",
        "position": "the step's position input: the frame index it reads / the video's candidate frames",
        **({"temporal": f"the step's state holds the K = {frames} frames read so far (read: the temporal classifier's "
                         "inputs, at: their positions, 2 where none yet): this export runs at most K steps"}
           if agent.cfg.temporal else {}),
        **({"scan": "this run infers by the uniform scan (its policy added nothing on val): step t reads candidate frame "
                    "floor(T * p_t), p the K positions (i + 0.5) / K in models.positions.scan_order (the middle first); the "
                    "first_frame and next_frame rules do not apply"} if agent.cfg.inference == "scan" else {}),
        "stop": "adaptive lookahead: a video stops once max(utility so far) - utility > mu has happened `patience` times, "
                "or after K steps; the prediction is softmax(logits) of its last step",
    }


def export_run(checkpoint: Path, out: Path, backbone_weights: Path | None = None, memory_weights: Path | None = None) -> dict:
    """Export the AdaFrame run ``checkpoint`` to the folder ``out`` (the options of ``adaframe export``, ``commands/export.py``);
    returns the manifest written to ``out / manifest.json``."""
    import onnx
    import onnxruntime

    import adaframe
    from adaframe.recognize.networks import Networks

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AdaframeError(f"--out {out} exists and is not an empty folder; remove it or choose another")
    nets = Networks.from_run(checkpoint, "cpu", backbone_weights, memory_weights)
    agent = nets.agent
    temp = out.parent / f".{out.name}.export-{os.getpid()}"
    try:
        temp.mkdir(parents=True)
    except OSError as e:
        raise AdaframeError(f"--out {out}: cannot create {temp}: {e.strerror}") from None
    try:
        entries = {g.name: export_graph(g, temp / f"{g.name}.onnx")
                   for g in graphs(agent, nets.torch_backbones[0], nets.torch_backbones[1], nets.spec, nets.memory_frames,
                                   nets.trained_frames)}
        source = Path(checkpoint) / CHECKPOINT if Path(checkpoint).is_dir() else Path(checkpoint)
        manifest = {
            "format": FORMAT, "version": VERSION, "kind": "adaframe",
            "source": {"checkpoint": str(source.resolve()), "sha256": sha256(source)},
            "classes": nets.classes, "model_config": asdict(agent.cfg), "frames": nets.trained_frames,
            "stop": {"rule": "utility", "mu": 0.7, "patience": 1,
                     "note": "predict's defaults; --mu / --patience / --frames change them at run time"},
            "memory_frames": nets.memory_frames, "head_gflops": nets.head_gflops, "features": nets.spec,
            "state": list(agent.state_names()), "rules": rules(nets.spec, nets.memory_frames, agent, nets.trained_frames),
            "preprocessing": {"input": "uint8 RGB [N, S, S, 3]", "inside_graph": "x / 255, then (x - mean) / std per channel",
                              "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "standardization": _statistics(agent),
            "graphs": entries,
            "versions": {"adaframe": adaframe.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__},
        }
        write_json(temp / MANIFEST, manifest)
        if out.exists():
            out.rmdir()  # empty (checked above): rename onto it
        temp.rename(out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return manifest
