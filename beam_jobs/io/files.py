"""Atomic file outputs: a reader sees the old file or the new one, never a part.

Every writer in the project (COGs, GeoParquet, STAC JSON, TFRecord shards, stats.json, tile
markers, manifests) goes through `atomic_target`: the bytes go to a temporary beside the
destination, `{path}.tmp-{32 hex}`, which is renamed onto it only when the writer is done and
deleted if it fails. The temporary keeps the destination's name as its prefix, so a rerun can
find and delete what a killed (not failed) writer left (`is_temporary`), and it never matches
a glob on the destination's extension (`train-*.tfrecord.gz`, `*.tif`).

An object store (`scheme://...`) publishes an object only when it is closed, so there (and for
a GDAL virtual path, `/vsi...`) the destination itself is yielded. A writer that needs scratch
files (the COG writer's pyramid) keeps them in `scratch_dir(tmp)`, a folder named after the
temporary, so the same rule finds and deletes it after a kill (`remove_temporaries`).

One writer per output folder: `run_lock` holds `{folder}/LOCK` for the length of a run (run id,
pid, host, start time); a second run gets `LockedError`; a lock left by a dead process on the
same host is taken over with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

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


@contextlib.contextmanager
def scratch_dir(tmp: str) -> Iterator[str]:
    """A scratch folder for the writer of temporary `tmp`: `{tmp}.d` beside it (an object store
    or GDAL virtual path: a system temporary folder), deleted when the writer is done."""
    if is_remote(tmp):
        with tempfile.TemporaryDirectory(prefix="earthembed-") as work:
            yield work
        return
    work = f"{tmp}.d"
    os.makedirs(work)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def remove_temporaries(folder: str, prefix: str = "", *, recursive: bool = False) -> list[str]:
    """Delete what killed writers left in a local folder: temporaries (`is_temporary`) and
    their scratch folders whose names start with `prefix`. Returns the paths deleted."""
    if is_remote(folder) or not os.path.isdir(folder):
        return []
    removed = []
    for root, dirs, names in os.walk(folder):
        for name in [*names, *dirs]:
            if not (name.startswith(prefix) and is_temporary(name)):
                continue
            path = os.path.join(root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            removed.append(path)
        dirs[:] = [d for d in dirs if not is_temporary(d)] if recursive else []
    return removed


def local_path(path: str) -> str:
    """`file:///x/y` -> `/x/y`; any other path unchanged. ValueError for `file://host/...`."""
    if not path.startswith("file://"):
        return path
    rest = path[len("file://") :]
    if not rest.startswith("/"):
        raise ValueError(f"{path}: a file:// URL names a local file, file:///absolute/path")
    return rest


# ---------------------------------------------------------------------------------- run lock

LOCK_FILE = "LOCK"


class LockedError(RuntimeError):
    """Another live run holds the folder's lock."""


@dataclasses.dataclass(frozen=True)
class LockInfo:
    """Who holds a folder's lock."""

    run_id: str
    pid: int
    host: str
    started: str
    command: str = ""
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, started {self.started})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def read_lock(folder: str) -> LockInfo | None:
    """The lock of a local folder, None when there is none (or it cannot be parsed)."""
    from apache_beam.io.filesystems import FileSystems

    path = _join(folder, LOCK_FILE)
    try:
        with FileSystems.open(path) as f:
            doc = json.loads(f.read().decode())
        return LockInfo(
            **{k: doc[k] for k in ("run_id", "pid", "host", "started")},
            command=doc.get("command", ""),
            extra=doc.get("extra", {}),
        )
    except Exception:  # absent, unreadable or half written: treated as no lock below
        return None


def _join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def acquire_lock(
    folder: str, *, command: str = "", extra: Mapping[str, Any] | None = None
) -> tuple[LockInfo, LockInfo | None]:
    """Take `{folder}/LOCK` for a run; returns (this run's lock, the stale lock it took over
    or None). LockedError when a live run holds it (or a run on another host, whose process
    cannot be checked). Local folders are locked atomically (O_EXCL); on an object store the
    check and the write are two steps (best effort)."""
    from apache_beam.io.filesystems import FileSystems

    me = LockInfo(
        run_id=uuid.uuid4().hex[:12],
        pid=os.getpid(),
        host=socket.gethostname(),
        started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        command=command,
        extra=dict(extra or {}),
    )
    data = json.dumps(dataclasses.asdict(me), indent=1, sort_keys=True).encode()
    path = _join(folder, LOCK_FILE)
    stale = None
    for _ in range(2):
        try:
            _create_exclusive(path, data)
            return me, stale
        except FileExistsError:
            held = read_lock(folder)
            if held is not None and (held.host != me.host or _pid_alive(held.pid)):
                raise LockedError(
                    f"{folder} is being written by {held.describe()}; wait for it to finish "
                    f"or, if that run is dead, delete {path}"
                ) from None
            stale = held
            log.warning(
                "taking over %s, left by %s, which is no longer running",
                path,
                held.describe() if held else "an unreadable lock",
            )
            FileSystems.delete([path])
    raise LockedError(f"cannot take the lock {path}: another run took it first")


def release_lock(folder: str, me: LockInfo) -> None:
    """Delete `{folder}/LOCK` if it is still this run's."""
    from apache_beam.io.filesystems import FileSystems

    held = read_lock(folder)
    if held is not None and held.run_id == me.run_id:
        FileSystems.delete([_join(folder, LOCK_FILE)])


@contextlib.contextmanager
def run_lock(
    folder: str, *, command: str = "", extra: Mapping[str, Any] | None = None
) -> Iterator[tuple[LockInfo, LockInfo | None]]:
    """`acquire_lock` for the length of a block, released when it ends."""
    me, stale = acquire_lock(folder, command=command, extra=extra)
    try:
        yield me, stale
    finally:
        release_lock(folder, me)


def _create_exclusive(path: str, data: bytes) -> None:
    """Create `path` with `data`; FileExistsError when it exists."""
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        if FileSystems.exists(path):
            raise FileExistsError(path)
        with FileSystems.create(path) as f:
            f.write(data)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def read_json(path: str | os.PathLike) -> object:
    """A local JSON file's content; ValueError naming the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read JSON file {os.fspath(path)}: {e}") from None
