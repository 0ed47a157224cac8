"""index / search: the pure functions against brute force, and DirectRunner builds on small
tile sets stored our way and AEF's way (int8, -128, bottom-up) that must give the same hits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import faiss
import numpy as np
import pytest
import rasterio
from affine import Affine

from beam_jobs import index as X
from beam_jobs.io import embeddings as W
from schemas import embedding as E

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

EPSG = 32631
X0, Y0 = 600_000.0, 5_600_000.0
H, W_ = 48, 40  # tile size, px
COLS = (0, 40, 80)  # three tiles side by side
TAGS = {"model_version": "m-1", "model_sha256": "ab" * 32, "year": 2023}


def clustered(n: int, seed: int, n_clusters: int = 12, spread: float = 0.6) -> np.ndarray:
    """Unit vectors around a few centres (land-cover-like structure), float32 (n, 64)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(n_clusters, 64))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    v = centres[rng.integers(0, n_clusters, n)] + spread / 8 * rng.normal(size=(n, 64))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def brute_force(codes: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the exact top-k by inner product with the dequantized codes."""
    scores = queries @ E.dequantize(codes).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth, strict=True)])
    )


# ---------------------------------------------------------------------------------- pure


def test_ids_round_trip_and_hand_values():
    ids = X.pixel_ids(3, 40, (1, 3, 38, 40))
    assert ids.tolist() == [3 * 2**32 + 78, 3 * 2**32 + 79, 3 * 2**32 + 118, 3 * 2**32 + 119]
    number, row, col = X.split_ids(ids, [10, 10, 10, 40])
    assert number.tolist() == [3] * 4 and row.tolist() == [1, 1, 2, 2]
    assert col.tolist() == [38, 39, 38, 39]
    codes = np.zeros((3, 64), np.int8)
    codes[1] = E.NODATA
    kept, kept_ids = X.valid_codes(codes, np.array([5, 6, 7]))
    assert kept.shape == (2, 64) and kept_ids.tolist() == [5, 7]


def test_nlist_nprobe_and_shard_plan_hand_values():
    assert X.choose_nlist(1_000_000, 131_072) == 512  # sqrt = 1000 -> 512
    assert X.choose_nlist(1_000_000, 3_900) == 64  # 3900 / 39 = 100 -> 64
    assert X.choose_nlist(1, 1) == 1
    assert X.default_nprobe(512) == 64 and X.default_nprobe(64) == 16
    assert X.default_nprobe(8) == 8
    plan = X.plan_shards([(2, 50), (0, 60), (1, 50), (3, 200), (4, 10)], 110)
    assert plan == [[0, 1], [2], [3], [4]]
    with pytest.raises(ValueError, match="--shard-vectors"):
        X.plan_shards([(0, 1)], 0)


def test_merge_results_is_a_k_way_merge():
    s1, i1 = np.array([[0.9, 0.5, 0.1]]), np.array([[10, 11, 12]])
    s2, i2 = np.array([[0.95, 0.5, -1.0]]), np.array([[20, 9, -1]])
    s, i = X.merge_results([s1, s2], [i1, i2], 4)
    assert i.tolist() == [[20, 10, 9, 11]]  # the tie at 0.5: smaller id first
    np.testing.assert_allclose(s, [[0.95, 0.9, 0.5, 0.5]])
    s, i = X.merge_results([s2], [i2], 4)  # fewer hits than k: padded
    assert i.tolist() == [[20, 9, -1, -1]] and np.isneginf(s[0, 2:]).all()


@pytest.fixture(scope="module")
def vectors():
    codes = E.quantize(clustered(6000, 0))
    codes[::97] = E.NODATA  # pixels without an embedding are left out
    queries = E.dequantize(E.quantize(clustered(200, 1)))
    return codes, queries / np.linalg.norm(queries, axis=1, keepdims=True)


def test_exact_kind_agrees_with_brute_force_across_shards(vectors):
    codes, queries = vectors
    ids = np.arange(len(codes), dtype=np.int64)
    valid = ~(codes == E.NODATA).all(axis=1)
    truth = np.flatnonzero(valid)[brute_force(codes[valid], queries, 10)]
    one = X.build_shard(codes, ids, kind="exact")
    assert one.ntotal == valid.sum() == 6000 - 62
    _, found = X.search_shards([one], queries, 10)
    assert recall(found, truth) == 1.0
    # Three shards searched as a set, and the same three merged into one: the same hits.
    thirds = [X.build_shard(codes[a::3], ids[a::3], kind="exact") for a in range(3)]
    _, fanned = X.search_shards(thirds, queries, 10)
    np.testing.assert_array_equal(fanned, found)
    _, merged = X.search_shards([X.merge_indexes(thirds)], queries, 10)
    np.testing.assert_array_equal(merged, found)


def test_ivf_kinds_recall_at_stated_settings(vectors):
    codes, queries = vectors
    ids = np.arange(len(codes), dtype=np.int64)
    valid = ~(codes == E.NODATA).all(axis=1)
    truth = np.flatnonzero(valid)[brute_force(codes[valid], queries, 10)]
    trained = X.train_index("ivf-fp16", codes, nlist=64)
    assert trained.nlist == 64 and trained.ntotal == 0
    # Shards sharing one training, searched as a set with the default nprobe (16 of 64 cells).
    shards = [X.build_shard(codes[a::2], ids[a::2], trained=trained) for a in range(2)]
    _, found = X.search_shards(shards, queries, 10, nprobe=X.default_nprobe(64))
    assert recall(found, truth) >= 0.95
    _, found = X.search_shards(shards, queries, 10, nprobe=64)  # every cell
    assert recall(found, truth) >= 0.99
    sq8 = X.build_shard(codes, ids, kind="ivf-sq8", nlist=64)
    _, found = X.search_shards([sq8], queries, 10, nprobe=64)
    assert recall(found, truth) >= 0.85  # the 8-bit floor (module docstring)


def test_unit_queries_and_vector_files(tmp_path):
    v = clustered(3, 5)
    np.save(tmp_path / "q.npy", v * 3)
    np.testing.assert_allclose(X.read_vector_file(str(tmp_path / "q.npy")), v, atol=1e-6)
    np.save(tmp_path / "c.npy", E.quantize(v))  # int8 codes are dequantized
    got = X.read_vector_file(str(tmp_path / "c.npy"))
    assert (got * v).sum(1).min() > 0.999
    (tmp_path / "q.txt").write_text(",".join(map(str, v[0])) + "\n")
    np.testing.assert_allclose(X.read_vector_file(str(tmp_path / "q.txt")), v[:1], atol=1e-6)
    (tmp_path / "short.txt").write_text(" ".join(["0.1"] * 63))
    with pytest.raises(ValueError, match=r"^--vector-file .*short.txt: vectors of length 63; "):
        X.read_vector_file(str(tmp_path / "short.txt"))
    with pytest.raises(FileNotFoundError, match="--vector-file"):
        X.read_vector_file(str(tmp_path / "none.npy"))
    with pytest.raises(ValueError, match="vector 1 is empty"):
        X.unit_queries(np.stack([v[0], np.zeros(64)]))


# ---------------------------------------------------------------------------------- jobs


def _fields() -> list[np.ndarray]:
    out = []
    for i in range(len(COLS)):
        emb = clustered(H * W_, 10 + i).reshape(H, W_, 64)
        emb[5 + i, 7] = np.nan  # one pixel without an embedding per tile
        out.append(emb)
    return out


def _write_ours(root: Path, fields) -> None:
    for i, (c0, emb) in enumerate(zip(COLS, fields, strict=True)):
        t = Affine(10.0, 0.0, X0 + c0 * 10, 0.0, -10.0, Y0)
        W.write_embedding_cog(root / "2023" / "31N" / f"t{i}.tif", emb, t, EPSG, tags=TAGS)


def _write_aef(root: Path, fields) -> None:
    """The same vectors as AEF stores them: .tiff, rows south to north, no tags of ours."""
    for i, (c0, emb) in enumerate(zip(COLS, fields, strict=True)):
        path = root / "2023" / "31N" / f"t{i}.tiff"
        path.parent.mkdir(parents=True, exist_ok=True)
        profile = dict(driver="GTiff", width=W_, height=H, count=64, dtype="int8", nodata=-128)
        bottom_up = Affine(10.0, 0.0, X0 + c0 * 10, 0.0, 10.0, Y0 - H * 10)
        with rasterio.open(path, "w", crs=f"EPSG:{EPSG}", transform=bottom_up, **profile) as dst:
            dst.write(E.quantize(emb)[::-1].transpose(2, 0, 1))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    fields = _fields()
    _write_ours(root / "ours", fields)
    _write_aef(root / "aef", fields)
    # 3 tiles of 1919 vectors, shards of <= 4000: tiles 0+1 in one shard, tile 2 in another.
    opts = {"kind": "ivf-fp16", "shard_vectors": 4000}
    ours = X.build_index(root / "ours", "2023", root / "idx_ours", **opts)
    aef = X.build_index(root / "aef", "2023", root / "idx_aef", **opts)
    return root, fields, ours, aef


def test_manifest_shards_and_readers(built):
    root, fields, manifest, aef = built
    assert sorted(os.listdir(root / "idx_ours")) == ["manifest.json", "shards"]  # parts gone
    on_disk = json.loads((root / "idx_ours" / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["period"] == "2023" and manifest["kind"] == "ivf-fp16"
    assert (manifest["model_version"], manifest["model_sha256"]) == ("m-1", "ab" * 32)
    assert aef["model_version"] is None  # AEF's tiles carry no model tags of ours
    assert manifest["n_vectors"] == len(COLS) * (H * W_ - 1)
    assert [t["tile_id"] for t in manifest["tiles"]] == ["t0", "t1", "t2"]
    assert [s["tiles"] for s in manifest["shards"]] == [[0, 1], [2]]
    assert [s["n_vectors"] for s in manifest["shards"]] == [2 * (H * W_ - 1), H * W_ - 1]
    # nlist: sqrt(5757) = 75 -> 64, nprobe max(16, 64 / 8) = 16.
    assert (manifest["nlist"], manifest["nprobe"]) == (64, 16)
    for shard in manifest["shards"]:  # faiss's own reader
        index = faiss.read_index(str(root / "idx_ours" / shard["path"]))
        assert index.ntotal == shard["n_vectors"] and index.nlist == 64


def test_query_pixel_finds_itself_and_ours_equals_aef(built):
    root, fields, manifest, _ = built
    ours, aef = X.open_index(root / "idx_ours"), X.open_index(root / "idx_aef")
    pixels = [(0, 0, 0), (1, 20, 33), (2, 47, 39), (2, 6, 7)]
    lonlats = []
    for tile, r, c in pixels:
        lon, lat = X.lonlat_of_pixels(manifest["tiles"][tile], np.array([r]), np.array([c]))
        lonlats.append((float(lon[0]), float(lat[0])))
    q = X.query_vectors(ours, lonlats=lonlats)
    hits = ours.search(q, 10).to_pandas()
    first = hits[hits["rank"] == 1]
    assert list(zip(first.tile_id, first.row, first.col, strict=True)) == [
        (f"t{t}", r, c) for t, r, c in pixels
    ]
    np.testing.assert_allclose(first.score, 1.0, atol=0.01)
    assert (hits.groupby("query").score.diff().dropna() <= 1e-6).all()  # best first
    # The same vectors stored AEF's way: the same queries and the same hits.
    q_aef = X.query_vectors(aef, lonlats=lonlats)
    np.testing.assert_array_equal(q_aef, q)
    assert aef.search(q_aef, 10).to_pandas().equals(hits)


def test_hits_map_back_to_their_pixels(built):
    root, fields, manifest, _ = built
    index = X.open_index(root / "idx_ours")
    q = X.unit_queries(clustered(5, 42))
    hits = index.search(q, 10).to_pandas()
    assert len(hits) == 50
    tiles = {t.tile_id: t for t in index.tiles}
    for row in hits.itertuples():
        tile = tiles[row.tile_id]
        # lon/lat -> the same pixel, and that pixel's stored vector gives the hit's score.
        assert X.pixel_at(tile, row.lon, row.lat) == (row.row, row.col)
        stored = E.dequantize(E.quantize(fields[int(row.tile_id[1:])][row.row, row.col]))
        assert abs(float(stored @ q[row.query]) - row.score) < 1e-3
    # The exact top-10 of the first query over every tile: recall >= 0.95 at the default nprobe.
    allcodes = np.concatenate([E.quantize(f).reshape(-1, 64) for f in fields])
    truth = brute_force(allcodes, q, 10)
    found = [
        [int(r.tile_id[1:]) * H * W_ + r.row * W_ + r.col for r in g.itertuples()]
        for _, g in hits.groupby("query")
    ]
    assert recall(np.array(found), truth) >= 0.95


def test_exact_kind_one_shard_per_tile_and_rerun_reuses(built):
    root, fields, ivf, _ = built
    out = root / "idx_exact"
    manifest = X.build_index(root / "ours", "20230101_20240101", out, kind="exact", shard_vectors=1)
    assert len(manifest["shards"]) == 3 and manifest["nlist"] == 1
    shard = out / manifest["shards"][0]["path"]
    stamp = shard.stat().st_mtime_ns
    again = X.build_index(
        root / "ours", "2023-01-01/2024-01-01", out, kind="exact", shard_vectors=1
    )
    assert again["key"] == manifest["key"] and shard.stat().st_mtime_ns == stamp
    assert sorted(os.listdir(out / "shards")) == sorted(
        Path(s["path"]).name for s in manifest["shards"]
    )
    q = X.unit_queries(clustered(20, 7))
    exact = X.open_index(out).search(q, 10).to_pandas()
    allcodes = np.concatenate([E.quantize(f).reshape(-1, 64) for f in fields])
    truth = brute_force(allcodes, q, 10)
    found = (exact.tile_id.str[1:].astype(int) * H * W_ + exact.row * W_ + exact.col).to_numpy()
    assert recall(found.reshape(20, 10), truth) == 1.0


def test_cli_index_and_search(built, tmp_path, capsys):
    root, _, _, _ = built
    out = tmp_path / "idx"
    assert X.run(["--embeddings", str(root / "aef"), "--period", "2023", "--out", str(out),
                  "--kind", "ivf-sq8", "--nlist", "8", "--nprobe", "8"]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["kind"], manifest["nlist"], manifest["nprobe"]) == ("ivf-sq8", 8, 8)
    assert manifest["command"].startswith("earthembed index --embeddings")
    lon, lat = X.lonlat_of_pixels(manifest["tiles"][1], np.array([10]), np.array([11]))
    query = f"{lon[0]:.7f},{lat[0]:.7f}"
    hits = tmp_path / "hits.parquet"
    assert (
        X.run_search(["--index", str(out), "--query", query, "--k", "3", "--out", str(hits)]) == 0
    )
    rows = duckdb.sql(
        f"select rank, tile_id, row, col, score from '{hits}' order by rank"
    ).fetchall()
    assert [r[:4] for r in rows][0] == (1, "t1", 10, 11) and len(rows) == 3
    assert abs(rows[0][4] - 1) < 0.02
    capsys.readouterr()
    assert X.run_search(["--index", str(out), "--query", query, "--k", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split("\t") == [
        "query",
        "rank",
        "score",
        "tile_id",
        "row",
        "col",
        "lon",
        "lat",
    ]
    assert printed[1].split("\t")[:6][3:] == ["t1", "10", "11"] and len(printed) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--index", "{root}/nowhere", "--query", "4.4,50.5"], "--index {root}/nowhere: no such"),
        (["--index", "{root}", "--query", "4.4,50.5"], "--index {root}: no manifest.json"),
        (
            ["--index", "{root}/idx_ours", "--query", "4.4,50.5", "--period", "2024"],
            "--period 2024",
        ),
        (["--index", "{root}/idx_ours", "--vector-file", "{root}/v.txt"], "vectors of length 3"),
        (["--index", "{root}/idx_ours", "--query", "0,0"], "--query 0.0,0.0 lies outside"),
        (["--index", "{root}/idx_ours", "--query", "4.4"], "--query must be LON,LAT"),
        (["--index", "{root}/idx_ours", "--vector-file", "{root}/v64.txt", "--k", "0"], "--k must"),
    ],
)
def test_search_errors_are_one_line_naming_the_parameter(built, argv, message):
    root = built[0]
    (root / "v.txt").write_text("0.1 0.2 0.3\n")
    (root / "v64.txt").write_text(" ".join(["0.125"] * 64))
    with pytest.raises(SystemExit) as err:
        X.run_search([a.format(root=root) for a in argv])
    text = str(err.value)
    assert text.startswith("earthembed search: ") and "\n" not in text
    assert message.format(root=root) in text


def test_index_errors_are_one_line_naming_the_parameter(built, tmp_path):
    root = built[0]
    cases = [
        (["--period", "2025"], "period '2025'"),
        (["--period", "2023", "--shard-vectors", "0"], "--shard-vectors must be >= 1"),
        (["--period", "2023", "--nlist", "0"], "--nlist must be >= 1"),
        (["--period", "2023/x"], "--period must be START/END"),
    ]
    for extra, message in cases:
        argv = ["--embeddings", str(root / "ours"), "--out", str(tmp_path / "x"), *extra]
        with pytest.raises(SystemExit) as err:
            X.run(argv)
        assert str(err.value).startswith("earthembed index: ") and "\n" not in str(err.value)
        assert message in str(err.value)
    with pytest.raises(SystemExit, match="earthembed index: .*not found"):
        X.run(["--embeddings", str(tmp_path / "none"), "--period", "2023", "--out", "x"])
    assert not (tmp_path / "x").exists()  # nothing written before the inputs are checked
    with pytest.raises(ValueError, match=r"--k must be >= 1"):
        X.open_index(root / "idx_ours").search(np.ones(64), 0)


def test_min_confidence_leaves_out_the_low_confidence_pixels(built, tmp_path):
    """Our tiles with quality sidecars: a pixel is indexed iff its stored confidence (steps of
    0.005) is >= --min-confidence; unknown (NaN) confidence is left out too. The manifest
    records the threshold and a rerun with another one does not reuse the parts."""
    root, fields, _, _ = built
    ours = tmp_path / "conf"
    _write_ours(ours, fields)
    rng = np.random.default_rng(3)
    counts = {s: np.ones((H, W_), np.float32) for s in E.OBS_SOURCES}
    stored = []
    for i, c0 in enumerate(COLS):
        conf = rng.random((H, W_)).astype(np.float32)
        conf[0, :5] = np.nan  # unknown
        layers = E.quality_layers(counts, np.ones((H, W_), np.float32), conf)
        t = Affine(10.0, 0.0, X0 + c0 * 10, 0.0, -10.0, Y0)
        W.write_quality_cog(ours / "2023" / "31N" / f"t{i}_quality.tif", layers, t, EPSG)
        stored.append(np.round(np.nan_to_num(conf, nan=-1) * 200) / 200)
    has = [~np.isnan(f).any(axis=2) for f in fields]  # the one nodata pixel per tile
    expect = [int((has[i] & (stored[i] >= 0.5)).sum()) for i in range(len(COLS))]
    total = len(COLS) * (H * W_ - 1)
    assert abs(sum(expect) - total / 2) < total / 10  # about half of the pixels kept
    out = tmp_path / "idx"
    assert X.run(["--embeddings", str(ours), "--period", "2023", "--out", str(out),
                  "--kind", "exact", "--min-confidence", "0.5"]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["min_confidence"] == 0.5
    assert [t["n_vectors"] for t in manifest["tiles"]] == expect
    assert manifest["n_vectors"] == sum(expect)
    # every hit of a query is a kept pixel
    hits = X.open_index(out).search(X.unit_queries(clustered(5, 8)), 20).to_pandas()
    for tile_id, row, col in zip(hits.tile_id, hits.row, hits.col, strict=True):
        assert stored[int(tile_id[1:])][row, col] >= 0.5
    # another threshold is another index, not the parts of the first
    lower = X.build_index(ours, "2023", out, kind="exact", min_confidence=0.25)
    assert lower["key"] != manifest["key"] and lower["min_confidence"] == 0.25
    assert lower["n_vectors"] == sum(
        int((h & (s >= 0.25)).sum()) for h, s in zip(has, stored, strict=True)
    )
    # no threshold: every valid pixel, min_confidence recorded as null
    plain = X.build_index(ours, "2023", tmp_path / "plain", kind="exact")
    assert plain["min_confidence"] is None and plain["n_vectors"] == total
    # AEF's tiles have no sidecar: refused before any work, naming the tile
    with pytest.raises(SystemExit, match=r"--min-confidence needs a quality sidecar; .*t0\.tiff"):
        X.run(["--embeddings", str(root / "aef"), "--period", "2023", "--out",
               str(tmp_path / "aef_idx"), "--min-confidence", "0.5"])  # fmt: skip
    assert not (tmp_path / "aef_idx").exists()
