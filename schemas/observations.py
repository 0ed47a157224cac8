"""The in-memory form of observations: what every reader returns and every consumer takes.

A `SourceFrames` holds one source's frames over one grid window (or over N points, with
H = N and W = 1): values (T, H, W, C) float32 in registry units with NaN where a band is
missing, a per-frame per-pixel valid mask (T, H, W) (clear, observed, inside the footprint),
acquisition times in ms since the epoch (T,), and per-frame geometry fields (T,) as the
registry lists them. Static sources have one frame at `STATIC_TIME_MS`.

`Observations` bundles the sources of one window or point set. It imports no Beam, TF or JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from schemas import sensors
from schemas.grid import GridWindow

MS_PER_DAY = 86_400_000


@dataclasses.dataclass
class SourceFrames:
    """One source's frames over a window (H x W pixels) or a point set (N x 1)."""

    source: str
    values: np.ndarray  # (T, H, W, C) float32, registry units, NaN = missing
    valid: np.ndarray  # (T, H, W) bool
    times_ms: np.ndarray  # (T,) int64
    geometry: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # name -> (T,)
    band_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        sensor = sensors.get_sensor(self.source)
        if not self.band_names:
            self.band_names = sensor.band_names
        self.values = np.asarray(self.values, dtype=np.float32)
        self.valid = np.asarray(self.valid, dtype=bool)
        self.times_ms = np.asarray(self.times_ms, dtype=np.int64)
        if self.values.ndim != 4:
            raise ValueError(
                f"{self.source}: values must be (T, H, W, C); got shape {self.values.shape}"
            )
        t, h, w, c = self.values.shape
        if self.valid.shape != (t, h, w):
            raise ValueError(f"{self.source}: valid mask shape {self.valid.shape} != {(t, h, w)}")
        if self.times_ms.shape != (t,):
            raise ValueError(f"{self.source}: times_ms shape {self.times_ms.shape} != {(t,)}")
        if c != len(self.band_names):
            raise ValueError(f"{self.source}: {c} channels but bands {self.band_names}")
        unknown = [b for b in self.band_names if b not in sensor.band_names]
        if unknown:
            raise KeyError(
                f"{self.source}: unknown bands {unknown}; registry bands {sensor.band_names}"
            )
        for name in sensor.geometry:
            g = self.geometry.get(name)
            if g is None:
                self.geometry[name] = np.full((t,), np.nan, dtype=np.float32)
            else:
                self.geometry[name] = np.asarray(g, dtype=np.float32).reshape(t)

    @property
    def num_frames(self) -> int:
        return self.values.shape[0]

    @property
    def spatial_shape(self) -> tuple[int, int]:
        return self.values.shape[1:3]

    def band(self, name: str) -> np.ndarray:
        """(T, H, W) values of one band."""
        try:
            return self.values[..., self.band_names.index(name)]
        except ValueError:
            raise KeyError(f"{self.source}: no band {name!r}; bands {self.band_names}") from None

    def select_time(self, start_ms: int, end_ms: int) -> SourceFrames:
        """Frames with start_ms <= t < end_ms (static sources are returned whole)."""
        if sensors.get_sensor(self.source).is_static:
            return self
        keep = (self.times_ms >= start_ms) & (self.times_ms < end_ms)
        return self.take(np.flatnonzero(keep))

    def take(self, idx: np.ndarray) -> SourceFrames:
        """A subset of frames, by index."""
        return SourceFrames(
            self.source,
            self.values[idx],
            self.valid[idx],
            self.times_ms[idx],
            {k: v[idx] for k, v in self.geometry.items()},
            self.band_names,
        )

    def crop(self, rows: slice, cols: slice) -> SourceFrames:
        """A spatial crop."""
        return SourceFrames(
            self.source,
            self.values[:, rows, cols],
            self.valid[:, rows, cols],
            self.times_ms,
            dict(self.geometry),
            self.band_names,
        )

    def masked_values(self) -> np.ndarray:
        """Values with NaN wherever the valid mask is False."""
        return np.where(self.valid[..., None], self.values, np.nan).astype(np.float32)

    def with_registry_bands(self) -> SourceFrames:
        """Re-order / pad channels to the registry's full band list (missing bands NaN)."""
        names = sensors.get_sensor(self.source).band_names
        if tuple(self.band_names) == names:
            return self
        t, h, w, _ = self.values.shape
        out = np.full((t, h, w, len(names)), np.nan, dtype=np.float32)
        for i, n in enumerate(names):
            if n in self.band_names:
                out[..., i] = self.values[..., self.band_names.index(n)]
        return SourceFrames(self.source, out, self.valid, self.times_ms, dict(self.geometry), names)


@dataclasses.dataclass
class Observations:
    """All sources over one window (`window` set) or one point set (`points` set)."""

    sources: dict[str, SourceFrames]
    window: GridWindow | None = None
    # For point sets: (N,) arrays point_id (str), lon, lat.
    point_ids: np.ndarray | None = None
    lon: np.ndarray | None = None
    lat: np.ndarray | None = None
    # Reads that failed and were marked invalid instead of raising: "item/asset: reason".
    # A job dead-letters a sample or chip whose observations carry errors.
    errors: list[str] = dataclasses.field(default_factory=list)
    # Values the reader masked as outside their band's physical range or saturated
    # (schemas/sensors.py), counted per "source/band" in source pixels read.
    out_of_range: dict[str, int] = dataclasses.field(default_factory=dict)

    def __getitem__(self, source: str) -> SourceFrames:
        try:
            return self.sources[source]
        except KeyError:
            raise KeyError(
                f"no observations for source {source!r}; have {sorted(self.sources)}"
            ) from None

    def __contains__(self, source: str) -> bool:
        return source in self.sources

    @property
    def spatial_shape(self) -> tuple[int, int]:
        if self.window is not None:
            return self.window.shape
        return (0 if self.point_ids is None else len(self.point_ids), 1)

    def select_time(self, start_ms: int, end_ms: int) -> Observations:
        return dataclasses.replace(
            self, sources={k: v.select_time(start_ms, end_ms) for k, v in self.sources.items()}
        )

    def without(self, sources: Iterable[str]) -> Observations:
        """The same observations less the given sources (absent ones are ignored)."""
        drop = set(sources)
        return dataclasses.replace(
            self, sources={k: v for k, v in self.sources.items() if k not in drop}
        )
