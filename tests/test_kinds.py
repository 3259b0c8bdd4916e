"""The model kinds (models/kinds.py): every kind builds, trains and round-trips through a checkpoint that holds its config
dataclass, strictly (a key too many or too few is an error naming it); every option of a model's config is a setting of
``adaframe train``."""

from __future__ import annotations

import typing
from dataclasses import asdict, fields

import pytest
import torch

from adaframe.models.agent import AgentConfig
from adaframe.models.kinds import AGENTS, CHECKPOINT, KINDS, ModelOptions, build_model, load_checkpoint, model_config, save_checkpoint
from adaframe.models.kinds import SIZES as KIND_SIZES
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


def test_model_config_is_strict():
    """Sizes a kind does not take are left out; any other key it has no field for, or a required one missing, is an
    error naming it."""
    assert model_config("avgpool", SIZES) == KINDS["avgpool"].config(6, 3)  # no memory, no LSTM: memory_dim, hidden... left out
    with pytest.raises(AdaframeError, match=r"^a avgpool model's config has unknown key 'jumps', 'memory_read'$"):
        model_config("avgpool", {**SIZES, "memory_read": "lstm", "jumps": (0.5,)})
    with pytest.raises(AdaframeError, match=r"lacks key 'num_classes'$"):
        model_config("lstm", {"feature_dim": 6})
    with pytest.raises(AdaframeError, match="unknown model 'resnet'"):
        build_model("resnet", SIZES)


SET_BY_TRAINING = {"pooled_by", "inference"}
"""AdaFrame's config fields that training sets on val, not options"""


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_option_of_a_model_is_a_train_setting(kind):
    """Every field of a kind's config beyond its sizes is in its options, a field of the training config's
    ``ModelOptions`` of the same name (so ``adaframe train --model KIND`` can set it)."""
    options = {f.name for f in fields(KINDS[kind].config)} - set(KIND_SIZES) - SET_BY_TRAINING
    assert options == set(KINDS[kind].options)
    assert options <= {f.name for f in fields(ModelOptions)}


def test_an_option_of_another_model_is_refused():
    with pytest.raises(AdaframeError, match=r"--jumps is an option of --model fastforward, fastforward-g, frameglimpse, "
                                            r"frameglimpse-g, not of --model adaframe|--jumps is an option of --model"):
        TrainConfig("d", "o", model="adaframe", model_options=ModelOptions(jumps=(0.5,)))
    with pytest.raises(AdaframeError, match=r"--prediction is an option of --model adaframe, not of --model avgpool"):
        TrainConfig("d", "o", model="avgpool", model_options=ModelOptions(prediction="lstm"))
    with pytest.raises(AdaframeError, match=r"--policy-check: options of --model adaframe, not of --model lstm"):
        TrainConfig("d", "o", model="lstm", policy_check=True)
    cfg = TrainConfig("d", "o", model="avgpool", model_options=ModelOptions(frame_penalties=[0.0, 1.0]))
    assert cfg.model_options.given("avgpool") == {"frame_penalties": (0.0, 1.0)}


def test_the_agent_config_defaults_are_the_default_agent():
    """AgentConfig's defaults and the 'fast' preset (what 'adaframe train' builds) name the same agent, so a model
    built without its options is the one the docs call the default."""
    defaults = {f.name: f.default for f in fields(AgentConfig)}
    fast = PRESETS["fast"]
    assert {k: defaults[k] for k in ("memory_read", "selection", "prediction")} == \
           {"memory_read": fast.memory_read, "selection": fast.selection, "prediction": fast.prediction}
    cfg = TrainConfig("d", "o")
    assert all(getattr(cfg.model_options, name) == getattr(fast, name) for name in KINDS["adaframe"].options if hasattr(fast, name))
    assert TrainConfig("d", "o", model="lstm").model_options == ModelOptions()  # a preset sets AdaFrame's architecture only


@pytest.mark.parametrize("change, error", [
    (lambda c: c.update(extra=1), r"its model_config has unknown key 'extra' \(written by another version of the model: train it again\)$"),
    (lambda c: c.pop("frame_penalties"), r"its model_config lacks key 'frame_penalties' \(written by another version"),
])
def test_a_checkpoint_with_a_key_too_many_or_too_few_is_refused_naming_it(tmp_path, change, error):
    save_checkpoint(tmp_path, build_model("adaframe", SIZES), "adaframe", ["a", "b", "c"], {"frames": 3}, memory_frames=8)
    payload = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    change(payload["model_config"])
    torch.save(payload, tmp_path / CHECKPOINT)
    with pytest.raises(AdaframeError, match=error):
        load_checkpoint(tmp_path)


def test_a_checkpoint_of_the_old_dims_format_is_not_read(tmp_path):
    model = build_model("lstm", SIZES)
    torch.save({"kind": "lstm", "dims": SIZES, "classes": ["a", "b", "c"], "config": {}, "state_dict": model.state_dict()},
               tmp_path / CHECKPOINT)
    with pytest.raises(AdaframeError, match="is not an adaframe checkpoint"):
        load_checkpoint(tmp_path)


def test_presets_are_built_by_keyword():
    with pytest.raises(TypeError):
        Preset("sgd", 1e-3, 0.9, 1e-4, 40, 100, 64, 1024, False, "lstm", "gaussian", "lstm")  # type: ignore[misc]
    assert PRESETS["paper"].lr == 1e-3 and PRESETS["paper"].lr_step == 40 and PRESETS["paper"].optimizer == "sgd"
