"""Model and training configs (ml_collections): `tiny`, `tiny_shipped`, `base`, `large`.

`tiny_shipped` is the recipe of the shipped demo model (model/weights/tiny, `make pretrain`).

`get(name)` returns a fresh ConfigDict; `--config.x=y` style overrides are applied by
`model.main` with `apply_overrides`.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Sequence

import ml_collections

NAMES = ("tiny", "tiny_shipped", "base", "large")


def get(name: str) -> ml_collections.ConfigDict:
    """The named config (one of NAMES)."""
    if name not in NAMES:
        raise ValueError(f"--config must be one of {NAMES}; got {name!r}")
    return importlib.import_module(f"model.configs.{name}").get_config()


def _parse_value(text: str, current):
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str) or current is None:
        return text
    if isinstance(current, tuple | list):
        value = ast.literal_eval(text) if text.strip()[:1] in "([" else text.split(",")
        return type(current)(type(current[0])(v) if current else v for v in value)
    return ast.literal_eval(text)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Apply `a.b=value` strings (the `--config.a.b=value` flags) in place.

    Values are parsed as the type of the current value; an unknown key is an error naming it.
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"config override {item!r} is not key=value")
        key, text = item.split("=", 1)
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node:
                raise ValueError(f"unknown config field {key!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ValueError(f"unknown config field {key!r}")
        with node.ignore_type():
            node[parts[-1]] = _parse_value(text, node[parts[-1]])
