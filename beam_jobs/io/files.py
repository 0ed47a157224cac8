"""Atomic file outputs: a reader sees the old file or the new one, never a part.

Every writer in the project (COGs, GeoParquet, STAC JSON, TFRecord shards, stats.json, tile
markers, manifests) goes through `atomic_target`: the bytes go to a temporary beside the
destination, `{path}.tmp-{32 hex}`, which is renamed onto it only when the writer is done and
deleted if it fails. The temporary keeps the destination's name as its prefix, so a rerun can
find and delete what a killed (not failed) writer left (`is_temporary`), and it never matches
a glob on the destination's extension (`train-*.tfrecord.gz`, `*.tif`).

An object store (`scheme://...`) publishes an object only when it is closed, so there (and for
a GDAL virtual path, `/vsi...`) the destination itself is yielded.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator

TEMP_MARK = ".tmp-"


def is_remote(path: str | os.PathLike) -> bool:
    """Whether a path is not a plain local file: a URL (`scheme://...`) or a GDAL virtual file
    system path (`/vsigs/...`, `/vsimem/...`). The one test of it in the project."""
    path = os.fspath(path)
    return "://" in path or path.startswith("/vsi")


def is_temporary(name: str) -> bool:
    """Whether a file name is an `atomic_target` temporary (a write in progress, or left by a
    killed writer)."""
    return TEMP_MARK in os.path.basename(name)


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[str]:
    """Yield the path to write `path` through (module docstring); create its folder."""
    path = os.fspath(path)
    if is_remote(path):
        yield path
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}{TEMP_MARK}{uuid.uuid4().hex}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def read_json(path: str | os.PathLike) -> object:
    """A local JSON file's content; ValueError naming the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read JSON file {os.fspath(path)}: {e}") from None
