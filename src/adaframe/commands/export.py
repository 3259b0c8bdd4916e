"""``adaframe export``: a trained AdaFrame run as ONNX graphs and a manifest (the work: ``recognize.export``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from adaframe.recognize.export import export_run


@dataclass
class ExportConfig:
    """Export an AdaFrame run (trained on features from 'adaframe extract') to ONNX: its backbones, its global memory and
    its step, with a manifest; 'adaframe predict --export DIR' runs them on onnxruntime."""

    checkpoint: Path
    """the AdaFrame run directory"""
    out: Annotated[Path, tyro.conf.arg(metavar="DIR")]
    """folder to write (must not exist, or be empty)"""
    backbone_weights: Annotated[Path | None, tyro.conf.arg(metavar="PATH", help_behavior_hint="(default: as recorded)")] = None
    """the backbone weights the features were extracted with, if moved (checked by SHA-256)"""
    memory_weights: Annotated[Path | None, tyro.conf.arg(metavar="PATH", help_behavior_hint="(default: as recorded)")] = None


def run_export(cfg: ExportConfig) -> None:
    m = export_run(cfg.checkpoint, cfg.out, cfg.backbone_weights, cfg.memory_weights)
    graphs = m["graphs"]
    size = sum((cfg.out / g["file"]).stat().st_size for g in graphs.values()) / 2**20
    worst = max(g["largest_difference"] for g in graphs.values())
    print(f"exported {cfg.checkpoint} ({len(m['classes'])} classes, K {m['frames']}, memory of {m['memory_frames']} frames) to "
          f"{cfg.out}: {', '.join(g['file'] for g in graphs.values())} ({size:.1f} MiB) and {cfg.out / 'manifest.json'}; "
          f"each checked by onnx.checker and run on onnxruntime at batch 1 and 3: largest difference from PyTorch {worst:.1e} "
          f"(relative). Run it with 'adaframe predict --export {cfg.out} VIDEO...'")
