"""The networks of a trained AdaFrame run, with what they were trained on: from its checkpoint on PyTorch
(``Networks.from_run``) or from its export on onnxruntime (``Networks.from_export``, ``exported``). ``Recognizer`` runs
them on video files; ``export`` writes them as ONNX graphs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adaframe.evaluate.metrics import CostModel
from adaframe.evaluate.run import head_gflops_per_step
from adaframe.media.backbones import build_backbones, extract_features
from adaframe.models.agent import AdaFrame
from adaframe.models.kinds import load_checkpoint
from adaframe.utils import AdaframeError


def _check_weights_exist(spec: dict, backbone_weights: Path | None, memory_weights: Path | None) -> None:
    """Say that a weights file is missing as such: ``build_backbones`` would only say that the (absent)
    file is not the one the features were made with."""
    for key, what, given in (("backbone", "backbone", backbone_weights), ("memory_backbone", "memory backbone", memory_weights)):
        if given is not None and not Path(given).is_file():
            raise AdaframeError(f"{what} weights {given} do not exist")
        recorded = spec[key]["weights"]
        if given is None and recorded and not Path(recorded).is_file():
            flag = "--backbone-weights" if key == "backbone" else "--memory-weights"
            raise AdaframeError(f"{what} weights {recorded} (as recorded at extraction) do not exist; give {flag} if they moved")


@dataclass
class Networks:
    """The agent and the two backbones of a run, and what they were trained on."""

    agent: AdaFrame
    backbone: Callable[[np.ndarray], np.ndarray]  # uint8 RGB frames [N, S, S, 3] -> features [N, D]
    memory_backbone: Callable[[np.ndarray], np.ndarray]  # the same at the memory's size -> [N, Dm]
    classes: list[str]
    trained_frames: int  # the K it was trained with
    spec: dict  # how its features were extracted (extract.json)
    memory_frames: int  # global-memory frames the agent reads
    head_gflops: float  # one step of the agent on top of the backbone
    source: Path  # the run or export folder
    runtime: str  # "PyTorch" or "onnxruntime"
    device: torch.device  # where the rollout's tensors live
    torch_backbones: tuple[torch.nn.Module, torch.nn.Module] | None = None  # the modules behind ``backbone`` (PyTorch)

    @classmethod
    def from_run(cls, checkpoint: str | Path, device: torch.device | str = "cpu", backbone_weights: Path | None = None,
                 memory_weights: Path | None = None) -> Networks:
        """An AdaFrame run trained on features from ``adaframe extract``, its backbones rebuilt from that record
        (``*_weights``: the backbone files, if they moved)."""
        device = torch.device(device)
        model, payload = load_checkpoint(checkpoint, device)
        if payload["kind"] != "adaframe":
            raise AdaframeError(f"{checkpoint} holds a {payload['kind']!r} model; predict and export take an AdaFrame run "
                                "(give a baseline with --compare-checkpoint)")
        spec = payload.get("features")
        if spec is None:
            raise AdaframeError(f"{checkpoint} was trained on features not made by 'adaframe extract' (e.g. synthetic ones), "
                                "so there is no backbone to run on video")
        memory_frames = int(payload["memory_frames"] if payload["memory_frames"] is not None else spec["memory_frames"])
        _check_weights_exist(spec, backbone_weights, memory_weights)
        backbone, memory_backbone = build_backbones(spec, device, backbone_weights, memory_weights)
        return cls(model, functools.partial(extract_features, backbone, device=device),
                   functools.partial(extract_features, memory_backbone, device=device), payload["classes"],
                   int(payload["config"]["frames"]), spec, memory_frames,
                   head_gflops_per_step(model, memory_frames, device, int(payload["config"]["frames"])),
                   Path(checkpoint), "PyTorch", device, (backbone, memory_backbone))

    @classmethod
    def from_export(cls, folder: str | Path, device: torch.device | str = "cpu") -> Networks:
        """An export of such a run (``adaframe export``) on onnxruntime; the rollout's tensors stay on the CPU."""
        from adaframe.recognize.exported import load_export

        manifest, agent, backbone, memory_backbone = load_export(folder, device)
        return cls(agent, backbone, memory_backbone, list(manifest["classes"]), int(manifest["frames"]), manifest["features"],
                   int(manifest["memory_frames"]), float(manifest["head_gflops"]), Path(folder), "onnxruntime", torch.device("cpu"))

    @functools.cached_property
    def cost(self) -> CostModel:
        """GFLOPs of a video: its frames through the backbone, its memory frames through the memory backbone, its steps."""
        return CostModel(self.spec["backbone"]["gflops"], self.spec["memory_backbone"]["gflops"], self.head_gflops)

    def features(self, frames: list[np.ndarray | None], memory: bool = False) -> torch.Tensor:
        """The backbone's (``memory``: the memory backbone's) features of each video's decoded frames ([n_i, S, S, 3]
        uint8; None for a failed video, whose row stays zeros), in one batch -> [len(frames), max n_i, D] on ``device``."""
        backbone, dim = (self.memory_backbone, self.agent.cfg.memory_dim) if memory else (self.backbone, self.agent.cfg.feature_dim)
        ok = [f for f in frames if f is not None and len(f)]
        feats = torch.from_numpy(backbone(np.concatenate(ok))) if ok else None
        out = torch.zeros(len(frames), max((len(f) for f in ok), default=0), dim)
        start = 0
        for r, f in enumerate(frames):
            if f is not None and len(f):
                out[r, : len(f)] = feats[start: start + len(f)]
                start += len(f)
        return out.to(self.device)
