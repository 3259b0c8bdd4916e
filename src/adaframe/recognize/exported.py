"""An exported run (``export.py``) on onnxruntime: what ``Recognizer.from_export`` and ``predict --export`` run.

The networks are the exported graphs; everything between them is the PyTorch code ``predict`` runs: the same
decoding workers, the same ``rollout`` and stop rule, and the agent's own decision code (``ExportedAdaFrame`` is an
``AdaFrame`` whose three network calls run graphs), so a video is read at the same frames as with the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaframe.media.backbones import sha256
from adaframe.models.agent import AdaFrame, AgentConfig, Where
from adaframe.models.recurrent import State, Step
from adaframe.utils import AdaframeError

MANIFEST = "manifest.json"
FORMAT, VERSION = "adaframe-export", 2  # 2: the step reads the frame's position; the state may carry the best margin


def read_manifest(folder: str | Path) -> dict:
    """``folder/manifest.json`` of an export, checked: its format and version, and every graph file present with the
    recorded SHA-256 (a graph changed or cut short after export is named, not run)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        what = "is a file, not the folder 'adaframe export' writes" if folder.exists() else "does not exist"
        raise AdaframeError(f"export {folder} {what} (write one with 'adaframe export --checkpoint RUN --out DIR')")
    if not path.is_file():
        raise AdaframeError(f"{folder} is not an adaframe export: it has no {MANIFEST}")
    try:
        manifest: Any = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdaframeError(f"{path} is not valid JSON ({e}); export the run again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise AdaframeError(f"{path} is not an adaframe export manifest")
    if manifest.get("version") != VERSION:
        raise AdaframeError(f"{path} is export version {manifest.get('version')!r}; this adaframe reads version {VERSION}")
    required = {"classes", "model_config", "frames", "memory_frames", "head_gflops", "features", "state", "graphs"}
    if missing := sorted(required - manifest.keys()):
        raise AdaframeError(f"{path} lacks {', '.join(missing)}; export the run again")
    for entry in manifest["graphs"].values():
        file = folder / entry["file"]
        if not file.is_file():
            raise AdaframeError(f"export {folder}: {entry['file']} is missing")
        if sha256(file) != entry["sha256"]:
            raise AdaframeError(f"export {folder}: {entry['file']} is not the file exported (its SHA-256 differs); export the run again")
    return manifest


def session(path: Path, device: torch.device | str = "cpu") -> Any:
    """An onnxruntime session of the graph at ``path`` on ``device``, with as many threads as torch uses (so that the
    two runtimes compare on equal terms)."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise AdaframeError(f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDA provider (it has "
                                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu of the same version")
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
        raise AdaframeError(f"{path}: onnxruntime cannot load it: {str(e).strip().splitlines()[-1]}") from None


class OnnxGraph:
    """One graph, called with torch tensors as a module would be; returns its outputs as torch tensors."""

    def __init__(self, path: Path, entry: dict, device: torch.device | str = "cpu"):
        self.session, self.path = session(path, device), path
        self.inputs = [i.name for i in self.session.get_inputs()]
        expected = [i["name"] for i in entry["inputs"]]
        if self.inputs != expected:
            raise AdaframeError(f"{path}: inputs {self.inputs} are not those of the manifest, {expected}")

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        feed = {name: t.detach().cpu().numpy() for name, t in zip(self.inputs, tensors)}
        return [torch.from_numpy(y) for y in self.session.run(None, feed)]


class OnnxBackbone:
    """uint8 RGB frames [N, S, S, 3] -> features [N, D] (float32 numpy), ``batch_size`` frames at a time as
    ``backbones.extract_features`` does."""

    def __init__(self, graph: OnnxGraph, dim: int, batch_size: int = 32):
        self.graph, self.dim, self.batch_size = graph, dim, batch_size

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        name = self.graph.inputs[0]
        out = [self.graph.session.run(None, {name: np.ascontiguousarray(frames[i: i + self.batch_size])})[0]
               for i in range(0, len(frames), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


class ExportedAdaFrame(AdaFrame):
    """AdaFrame whose networks are graphs: ``encode``, ``first_scores`` and ``step`` run on onnxruntime. Its other
    parts (``first``'s choice, ``where``, the selection policy's ``act``) are the PyTorch agent's code; it is built on
    the meta device, so it holds no weights: the graphs hold them."""

    def __init__(self, cfg: AgentConfig, graphs: dict[str, OnnxGraph], frames: int):
        with torch.device("meta"):
            super().__init__(cfg)
        self.graphs, self.frames = graphs, frames

    def initial_state(self, batch: int, device: torch.device, steps: int = 1) -> State:
        """With the temporal classifier the step graph's state holds the export's K frames, however few steps a rollout takes."""
        if self.cfg.temporal and steps > self.frames:
            raise AdaframeError(f"this export's temporal classifier holds K = {self.frames} frames: run at most "
                                f"{self.frames} steps (--frames {self.frames}), or export a run trained with more")
        return super().initial_state(batch, device, self.frames if self.cfg.temporal else steps)

    def encode(self, memory: torch.Tensor) -> torch.Tensor:
        return self.graphs["agent_encode"](memory)[0].to(memory.device)

    def first_scores(self, encoded: torch.Tensor) -> torch.Tensor:
        return self.graphs["agent_first"](encoded)[0].to(encoded.device)

    def step(self, frame: torch.Tensor, encoded: torch.Tensor, state: State, where: Where | None = None) -> Step:
        if where is None:
            where = Where(torch.zeros(frame.shape[0], encoded.shape[1] + 3, dtype=torch.bool), frame.new_zeros(frame.shape[0]))
        outputs = self.graphs["agent_step"](frame, encoded, where.blocked, where.position, *state)
        logits, selection, utility, *new = (y.to(frame.device) for y in outputs)
        return Step(logits, selection, utility, tuple(new))

    def flops_probe(self, memory_frames: int, device: torch.device | str = "cpu", steps: int = 1):  # type: ignore[override]
        raise AdaframeError("an exported agent's FLOPs are in its manifest (head_gflops), counted at export")


def load_export(folder: str | Path, device: torch.device | str = "cpu") -> tuple[dict, ExportedAdaFrame, OnnxBackbone, OnnxBackbone]:
    """The manifest of the export in ``folder``, its agent and its two backbones, on ``device``."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    graphs = {name: OnnxGraph(folder / entry["file"], entry, device) for name, entry in manifest["graphs"].items()}
    try:
        cfg = AgentConfig(**manifest["model_config"])
    except TypeError as e:
        raise AdaframeError(f"{folder / MANIFEST}: model_config does not describe an AdaFrame agent ({e})") from None
    needed = {"backbone", "memory_backbone", "agent_encode", "agent_step"} | ({"agent_first"} if cfg.selection == "slots" else set())
    if missing := sorted(needed - graphs.keys()):
        raise AdaframeError(f"export {folder}: its manifest lists no {', '.join(missing)} graph")
    return (manifest, ExportedAdaFrame(cfg, graphs, int(manifest["frames"])), OnnxBackbone(graphs["backbone"], cfg.feature_dim),
            OnnxBackbone(graphs["memory_backbone"], cfg.memory_dim))
