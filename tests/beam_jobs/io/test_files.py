import os

import pytest

from beam_jobs.io import files


def test_atomic_target_renames_on_success_and_creates_the_folder(tmp_path):
    dest = tmp_path / "a" / "b" / "train-00000-of-00002.tfrecord.gz"
    with files.atomic_target(dest) as tmp:
        assert os.path.dirname(tmp) == str(dest.parent)
        assert os.path.basename(tmp).startswith(dest.name) and files.is_temporary(tmp)
        with open(tmp, "wb") as f:
            f.write(b"new")
        assert not dest.exists()  # nothing visible until the writer is done
        # A glob on the destination's pattern does not see the temporary.
        assert list(dest.parent.glob("train-*.tfrecord.gz")) == []
    assert dest.read_bytes() == b"new"
    assert os.listdir(dest.parent) == [dest.name]


def test_atomic_target_keeps_the_old_file_when_the_writer_fails(tmp_path):
    dest = tmp_path / "stats.json"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), files.atomic_target(dest) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"par")
        raise RuntimeError("disk full")
    assert dest.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["stats.json"]  # the partial temporary is gone


def test_atomic_target_failure_before_anything_was_written(tmp_path):
    with pytest.raises(ValueError), files.atomic_target(tmp_path / "x.tif"):
        raise ValueError("bad input")
    assert os.listdir(tmp_path) == []


def test_object_store_paths_are_written_in_place():
    with files.atomic_target("gs://bucket/out/manifest.json") as target:
        assert target == "gs://bucket/out/manifest.json"
    assert files.is_remote("s3://b/k") and not files.is_remote("/tmp/x")


def test_is_temporary():
    assert files.is_temporary("/o/2023/31N/32631_1_2.tif.tmp-0123abcd")
    assert not files.is_temporary("/o/2023/31N/32631_1_2.tif")
    assert not files.is_temporary("/data.tmp-dir/x.tif")  # only the name counts


def test_is_remote_urls_and_gdal_virtual_paths():
    for path in ("gs://b/k.tif", "https://h/a.tif", "file:///tmp/x", "/vsigs/b/k.tif", "/vsimem/x"):
        assert files.is_remote(path), path
    for path in ("/tmp/x.tif", "relative/x.tif", "/data/vsi/x.tif", "C:/x.tif"):
        assert not files.is_remote(path), path


def test_read_json_names_the_file_it_cannot_read(tmp_path):
    good = tmp_path / "aoi.geojson"
    good.write_text('{"type": "Point", "coordinates": [4.6, 50.6]}')
    assert files.read_json(good) == {"type": "Point", "coordinates": [4.6, 50.6]}
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read JSON file .*bad.geojson"):
        files.read_json(bad)
    with pytest.raises(ValueError, match="missing.geojson"):
        files.read_json(tmp_path / "missing.geojson")
