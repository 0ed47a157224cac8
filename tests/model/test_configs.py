"""model/configs: tiny_shipped is the shipped bundle's recipe, byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model import configs, export, main

REPO = Path(__file__).resolve().parents[2]
# The former command line of scripts/pretrain.sh (before the recipe became a named config).
PRETRAIN_OVERRIDES = [
    "train.data_weights=(0.4,0.4,0.1,0.1)",
    "train.label_window=32",
    "loss.label=0",
    "loss.label_linear=1",
    "loss.linear_labels_only=true",
    "model.embed_without=cop_dem",
]
PRETRAIN_DATA = "W/td_tropical,W/td_temperate,W/td_worldcereal,W/td_eolearn"


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:  # the value, its type and its items' types (0 vs 0.0 would change config.json)
            items = tuple(type(x).__name__ for x in v) if isinstance(v, tuple | list) else None
            out[prefix + k] = (v, type(v).__name__, items)
    return out


def test_names_select_their_modules():
    assert "tiny_shipped" in configs.NAMES
    assert configs.get("tiny_shipped").name == "tiny"  # the bundle version stays tiny-<hash>
    with pytest.raises(ValueError, match="nope"):
        configs.get("nope")


def test_tiny_shipped_is_tiny_with_the_former_pretrain_overrides():
    old = configs.get("tiny")
    configs.apply_overrides(old, PRETRAIN_OVERRIDES)
    old.seed, old.train.steps = 0, 1500
    new = _leaves(configs.get("tiny_shipped").to_dict())
    assert new == _leaves(old.to_dict())
    tiny = _leaves(configs.get("tiny").to_dict())
    changed = {k: new[k][0] for k in new if new[k] != tiny[k]}
    assert changed == {
        "train.data_weights": (0.4, 0.4, 0.1, 0.1),
        "train.label_window": 32,
        "loss.label": 0.0,
        "loss.label_linear": 1.0,
        "loss.linear_labels_only": True,
        "model.embed_without": "cop_dem",
    }


def test_train_command_lines_old_and_new_give_the_same_config():
    """`--config tiny --seed 0 --steps 1500 --config.*` (the former scripts/pretrain.sh) and
    `--config tiny_shipped` (the current one) parse to the same config."""
    base = ["--workdir", "W/run", "--data", PRETRAIN_DATA]
    _, old = main.parse(
        ["--config", "tiny", "--seed", "0", "--steps", "1500", *base]
        + [f"--config.{o}" for o in PRETRAIN_OVERRIDES]
    )
    _, new = main.parse(["--config", "tiny_shipped", *base])
    assert new.to_json() == old.to_json()
    assert _leaves(new.to_dict()) == _leaves(old.to_dict())


def test_shipped_bundle_config_json_is_what_tiny_shipped_exports(tmp_path, shipped_bundle):
    """export.write_bundle of tiny_shipped writes model/weights/tiny/config.json byte for byte,
    but for the one switch retired since (issue 23): loss.label_drop_sources, "" (off) in the
    shipped recipe. The config goes through the workdir's config.json as in `earthembed
    export`. (`make pretrain` no longer reproduces the shipped parameters: RESULTS.md,
    "Training".)"""
    import ml_collections

    shipped = (shipped_bundle / "config.json").read_bytes()
    meta = json.loads((shipped_bundle / "bundle.json").read_text())
    assert meta["files"]["config.json"] == export.sha256_file(str(shipped_bundle / "config.json"))
    workdir_json = json.dumps(configs.get("tiny_shipped").to_dict(), indent=2, default=list)
    config = ml_collections.ConfigDict(json.loads(workdir_json))
    out = tmp_path / "bundle"
    export.write_bundle(str(out), {"w": np.zeros(2)}, config.to_dict(), {}, step=1)
    written = (out / "config.json").read_bytes()
    expected = json.loads(shipped)
    assert expected["loss"].pop("label_drop_sources") == ""  # retired, and it was off
    for section in ("model", "train", "loss", "mesh"):
        assert json.loads(written)[section] == expected[section], section
    # write_bundle's own formatting: the shipped file is exactly it, so bytes compare
    assert json.dumps(json.loads(shipped), indent=2, sort_keys=True).encode() == shipped
    assert written == json.dumps(expected, indent=2, sort_keys=True).encode()
