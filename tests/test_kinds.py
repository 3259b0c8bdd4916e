"""The model kinds (models/kinds.py): every kind builds, trains and round-trips through a checkpoint that holds its config
dataclass; checkpoints of earlier versions (a loose ``dims`` dict) still load as the model they held."""

from __future__ import annotations

import typing
from dataclasses import asdict, fields

import pytest
import torch

from adaframe.models.agent import AgentConfig
from adaframe.models.kinds import AGENTS, CHECKPOINT, KINDS, build_model, load_checkpoint, model_config, save_checkpoint
from adaframe.train.config import PRESETS, ModelName, Preset, TrainConfig
from adaframe.train.loop import LOSSES
from adaframe.utils import AdaframeError

SIZES = {"feature_dim": 6, "memory_dim": 4, "num_classes": 3, "hidden": 8, "memory_frames": 8, "frames": 3}


def test_every_kind_has_a_loss_and_is_a_model_choice():
    assert set(LOSSES) == set(KINDS)
    assert set(typing.get_args(ModelName)) == set(KINDS)  # --model's choices are the table's names
    assert set(AGENTS) == {k for k, kind in KINDS.items() if kind.agent} and "avgpool" not in AGENTS


@pytest.mark.parametrize("kind", list(KINDS))
def test_checkpoint_holds_the_config_dataclass(tmp_path, kind):
    torch.manual_seed(0)
    model = build_model(kind, SIZES)
    assert type(model.cfg) is KINDS[kind].config
    save_checkpoint(tmp_path, model, kind, ["a", "b", "c"], {"frames": 3}, memory_frames=8)
    payload = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert "dims" not in payload and payload["model_config"] == asdict(model.cfg) and payload["memory_frames"] == 8
    loaded, _ = load_checkpoint(tmp_path)
    assert loaded.cfg == model.cfg
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name


def test_model_config_ignores_settings_the_kind_has_no_field_for():
    assert model_config("avgpool", {**SIZES, "memory_read": "lstm", "jumps": (0.5,)}) == KINDS["avgpool"].config(6, 3, 8)
    with pytest.raises(AdaframeError, match="unknown model 'resnet'"):
        build_model("resnet", SIZES)


def test_the_agent_config_defaults_are_the_default_agent():
    """AgentConfig's defaults and the 'fast' preset (what 'adaframe train' builds) name the same agent, so a model
    built without its options is the one the docs call the default."""
    defaults = {f.name: f.default for f in fields(AgentConfig)}
    fast = PRESETS["fast"]
    assert {k: defaults[k] for k in ("memory_read", "selection", "prediction")} == \
           {"memory_read": fast.memory_read, "selection": fast.selection, "prediction": fast.prediction}
    cfg = TrainConfig("d", "o")
    assert all(getattr(cfg, name) == getattr(fast, name) for name in KINDS["adaframe"].options)


def old_payload(kind: str, model: torch.nn.Module, dims: dict) -> dict:
    """A checkpoint as versions before the config dataclass wrote it."""
    return {"kind": kind, "dims": dims, "classes": ["a", "b", "c"], "config": {"frames": 3}, "state_dict": model.state_dict()}


def test_old_adaframe_checkpoint_without_options_is_the_papers_agent(tmp_path):
    paper = {"memory_read": "lstm", "selection": "gaussian", "prediction": "lstm"}
    torch.manual_seed(0)
    model = build_model("adaframe", {**SIZES, **paper})
    dims = {k: SIZES[k] for k in ("feature_dim", "memory_dim", "num_classes", "hidden", "memory_frames")}
    torch.save(old_payload("adaframe", model, dims), tmp_path / CHECKPOINT)
    loaded, payload = load_checkpoint(tmp_path)
    assert (loaded.cfg.memory_read, loaded.cfg.selection, loaded.cfg.prediction) == ("lstm", "gaussian", "lstm")
    assert loaded.frame_head is None and payload["memory_frames"] == 8 and payload["model_config"] == asdict(loaded.cfg)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.parametrize("kind", ["frameglimpse-g", "sampler", "lstm"])
def test_old_checkpoints_of_other_kinds_load(tmp_path, kind):
    torch.manual_seed(1)
    model = build_model(kind, SIZES)
    torch.save(old_payload(kind, model, {**SIZES, "std": 0.1, "jumps": [0.25, 0.5]} if kind == "frameglimpse-g" else SIZES),
               tmp_path / CHECKPOINT)
    if kind == "frameglimpse-g":  # its jumps differ from the model saved: the weights still fit, the config is the old one's
        assert load_checkpoint(tmp_path)[0].cfg.jumps == (0.25, 0.5)
    else:
        assert load_checkpoint(tmp_path)[0].cfg == model.cfg


def test_presets_are_built_by_keyword():
    with pytest.raises(TypeError):
        Preset("sgd", 1e-3, 0.9, 1e-4, 40, 100, 64, 1024, False, "lstm", "gaussian", "lstm")  # type: ignore[misc]
    assert PRESETS["paper"].lr == 1e-3 and PRESETS["paper"].lr_step == 40 and PRESETS["paper"].optimizer == "sgd"
