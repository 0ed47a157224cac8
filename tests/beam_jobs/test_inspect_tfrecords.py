"""inspect-tfrecords on shards written by TensorFlow's own TFRecord writer."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from beam_jobs import inspect_tfrecords as insp
from schemas import examples, sensors
from schemas.grid import GridWindow
from schemas.observations import Observations, SourceFrames

T0 = 1_672_531_200_000  # 2023-01-01
DAY = 86_400_000


def _example(seed: int, n_s2: int, p: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s2 = SourceFrames(
        "sentinel2_l2a",
        rng.uniform(0.02, 0.3, (n_s2, p, p, 10)).astype(np.float32),
        np.ones((n_s2, p, p), bool),
        T0 + np.arange(n_s2) * 10 * DAY,
    )
    dem = SourceFrames(
        "cop_dem",
        np.full((1, p, p, 2), [120.0, 3.0], np.float32),
        np.ones((1, p, p), bool),
        [sensors.STATIC_TIME_MS],
    )
    obs = Observations(
        {"sentinel2_l2a": s2, "cop_dem": dem}, window=GridWindow(32631, 600000, 5600000, p, p)
    )
    return examples.example_features(
        obs,
        t_start_ms=T0,
        t_end_ms=T0 + 365 * DAY,
        max_frames=6,
        location=examples.location_for_window(obs.window),
        landcover=np.full((p, p), 2),
        class_names={2: "forest"},
        sample_id=f"s{seed}",
    )


@pytest.fixture(scope="module")
def td_dir(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    d = tmp_path_factory.mktemp("td")
    feats = {"train": [_example(0, 3), _example(1, 8)], "eval": [_example(2, 5)]}
    opts = tf.io.TFRecordOptions(compression_type="GZIP")
    for split, exs in feats.items():
        with tf.io.TFRecordWriter(str(d / f"{split}-00000-of-00001.tfrecord.gz"), opts) as w:
            for f in exs:
                w.write(examples.serialize_example(f))
    return d, feats


def test_summary_values(td_dir, capsys):
    d, feats = td_dir
    assert insp.run([str(d)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["examples"] == {"train": 2, "eval": 1}
    assert summary["patch_size_max_frames"] == [[4, 6]]
    assert summary["classes"] == {"2 forest": 3}
    s2 = summary["sources"]["sentinel2_l2a"]
    assert s2["frames"] == {"min": 3, "mean": pytest.approx(14 / 3), "max": 6}  # 8 -> T_max 6
    assert s2["valid_fraction"] == 1.0
    b04 = np.concatenate(
        [
            f["sentinel2_l2a/values"][f["sentinel2_l2a/frame_valid"]][..., 2].ravel()
            for fs in feats.values()
            for f in fs
        ]
    )
    got = s2["bands"]["B04"]
    assert got["count"] == b04.size == (3 + 6 + 5) * 16
    assert got["min"] == pytest.approx(float(b04.min()))
    assert got["max"] == pytest.approx(float(b04.max()))
    assert got["mean"] == pytest.approx(float(b04.mean(dtype=np.float64)))
    assert summary["sources"]["cop_dem"]["bands"]["elevation"]["mean"] == 120.0
    assert summary["sources"]["sentinel1"]["bands"]["VV"] == {"count": 0}
    png = d / "inspect.png"
    assert summary["png"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_true_colour_and_png_out(td_dir, tmp_path):
    d, feats = td_dir
    ex = feats["train"][0]
    rgb = insp.true_colour(ex, 0)
    want = np.clip(ex["sentinel2_l2a/values"][0][..., [2, 1, 0]] / 0.3, 0, 1)
    np.testing.assert_allclose(rgb, want)
    ex = dict(ex)
    ex["sentinel2_l2a/valid"] = ex["sentinel2_l2a/valid"].copy()
    ex["sentinel2_l2a/valid"][0, 0, 0] = False
    assert insp.true_colour(ex, 0)[0, 0].tolist() == [0.5, 0.5, 0.5]
    out = tmp_path / "strip.png"
    assert insp.run([str(d), "--out", str(out), "--frames", "3"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_corrupt_record_is_reported(td_dir, tmp_path):
    d, _ = td_dir
    raw = bytearray(gzip.decompress((d / "train-00000-of-00001.tfrecord.gz").read_bytes()))
    raw[40] ^= 0xFF  # flip a byte of the first record's data
    bad = tmp_path / "train-00000-of-00001.tfrecord.gz"
    bad.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ValueError, match="CRC"):
        list(insp.iter_records(str(bad)))
    assert len(list(insp.iter_records(str(bad), check_crc=False))) == 2


def test_empty_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        insp.summarize(str(tmp_path))
