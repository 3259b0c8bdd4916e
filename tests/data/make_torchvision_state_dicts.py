"""Write the torchvision reference fixtures: state-dict layout and outputs of torchvision's own models.

``tests/test_backbones.py`` compares ``adaframe.media.backbones`` against these files, so the reference
must come from torchvision's code, not ours. The tests do not run this script; it needs
torchvision, either importable or as a wheel / source checkout given with ``--source`` (only
``models/resnet.py``, ``models/mobilenetv2.py``, ``models/_api.py``, ``models/_utils.py``,
``models/_meta.py``, ``ops/misc.py`` and ``_utils.py`` are read from it; its compiled part,
transforms and usage logging are stubbed, none of which touch the model definitions).

The committed files were made with torch 2.13.0 (CPU) from the torchvision 0.28.0 wheel, on a
CPU-only machine where that wheel cannot be imported, from the repository root::

    .venv/bin/python tests/data/make_torchvision_state_dicts.py \\
        --source torchvision-0.28.0-cp311-cp311-manylinux_2_28_x86_64.whl

Outputs, for resnet18, resnet50, resnet101 and mobilenet_v2:

* ``torchvision_state_dicts.json``: ``{model_name: [[key, [shape, ...]], ...]}`` in state-dict order;
* ``torchvision_outputs.json``: what torchvision's forward gives on a fixed input
  (``reference_input``) for the model drawn after ``torch.manual_seed(0)``, cast to float64 (a
  random 101-layer net amplifies float32 rounding to ~1e-3, so only float64 numbers are
  reproducible across machines and thread counts to ~1e-12), in eval mode, after
  one training-mode pass over that input with BN ``momentum=None`` (so the running statistics are
  that batch's and activations stay O(1) instead of exploding or vanishing through a random
  network): the first 16 features and the sum of all features of each row (the input of the
  classifier), and the first 8 logits. ``adaframe.media.backbones`` creates and initialises its modules
  in torchvision's order, so with the same seed it draws the same weights and must reproduce these
  numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS = ("resnet18", "resnet50", "resnet101", "mobilenet_v2")

# Files copied verbatim from torchvision; everything else the imports need is stubbed below.
REAL_FILES = ("models/resnet.py", "models/mobilenetv2.py", "models/_api.py", "models/_utils.py", "models/_meta.py",
              "ops/misc.py", "_utils.py")
STUBS = {
    "__init__.py": "",
    "models/__init__.py": "",
    "ops/__init__.py": "",
    "transforms/__init__.py": "",
    "transforms/_presets.py": "class ImageClassification:\n    pass\n",
    "_internally_replaced_utils.py": "def load_state_dict_from_url(*a, **k):\n    raise RuntimeError('stub')\n",
    "utils.py": (
        "from itertools import repeat\n"
        "import collections.abc\n"
        "def _log_api_usage_once(obj):\n    pass\n"
        "def _make_ntuple(x, n):\n"
        "    return tuple(x) if isinstance(x, collections.abc.Iterable) else tuple(repeat(x, n))\n"
    ),
}


def stub_torchvision(source: Path, dest: Path) -> None:
    """Lay out an importable ``torchvision`` package under ``dest`` from a wheel or a checkout."""
    pkg = dest / "torchvision"
    for rel, text in STUBS.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    if source.is_file():  # a wheel is a zip
        with zipfile.ZipFile(source) as z:
            for rel in REAL_FILES:
                (pkg / rel).write_bytes(z.read(f"torchvision/{rel}"))
    else:  # a checkout: the repository root or the package folder itself
        root = source / "torchvision" if (source / "torchvision").is_dir() else source
        for rel in REAL_FILES:
            (pkg / rel).write_bytes((root / rel).read_bytes())


def torchvision_builders(source: Path | None, workdir: Path) -> dict:
    """name -> torchvision's builder function (``weights=None`` gives the random-init model)."""
    if source is not None:
        stub_torchvision(source, workdir)
        sys.path.insert(0, str(workdir))
    resnet = importlib.import_module("torchvision.models.resnet")
    mobilenet = importlib.import_module("torchvision.models.mobilenetv2")
    return {"resnet18": resnet.resnet18, "resnet50": resnet.resnet50, "resnet101": resnet.resnet101,
            "mobilenet_v2": mobilenet.mobilenet_v2}


def reference_input() -> "torch.Tensor":
    """The fixed input of ``torchvision_outputs.json``; the tests build the same one."""
    import torch

    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def calibrate(model: "torch.nn.Module", x: "torch.Tensor") -> "torch.nn.Module":
    """Set every BN's running statistics to those of ``x``; return the model in eval mode."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: after one pass, exactly the batch statistics
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def reference_outputs(builder) -> dict:
    import torch

    torch.manual_seed(0)
    model = calibrate(builder(weights=None).double(), reference_input())
    head = model.fc if hasattr(model, "fc") else model.classifier
    seen = {}
    hook = head.register_forward_pre_hook(lambda m, args: seen.__setitem__("features", args[0]))
    with torch.no_grad():
        logits = model(reference_input())
    hook.remove()
    feat = seen["features"]
    return {"features_head": feat[:, :16].tolist(), "features_sum": feat.sum(1).tolist(),
            "logits_head": logits[:, :8].tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=None, help="torchvision wheel or checkout (default: import torchvision)")
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).parent)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        builders = torchvision_builders(args.source, Path(tmp))
        layout = {name: [[k, list(v.shape)] for k, v in builders[name](weights=None).state_dict().items()]
                  for name in MODELS}
        outputs = {name: reference_outputs(builders[name]) for name in MODELS}
    # One tensor per line, so a change in torchvision reads as a small diff.
    blocks = [f"  {json.dumps(name)}: [\n" + ",\n".join(f"    {json.dumps(e)}" for e in entries) + "\n  ]"
              for name, entries in layout.items()]
    (args.out_dir / "torchvision_state_dicts.json").write_text("{\n" + ",\n".join(blocks) + "\n}\n")
    rows = [f"  {json.dumps(name)}: {{\n" + ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in out.items())
            + "\n  }" for name, out in outputs.items()]
    (args.out_dir / "torchvision_outputs.json").write_text("{\n" + ",\n".join(rows) + "\n}\n")
    print(f"wrote {args.out_dir}: " + ", ".join(f"{n} {len(v)} tensors" for n, v in layout.items()))


if __name__ == "__main__":
    main()
