"""The 10 m UTM grid against hand-computed numbers."""

import numpy as np
import pytest
import shapely

from schemas import grid


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        (4.35, 50.85, 32631),  # Brussels
        (-0.1276, 51.5072, 32630),  # London
        (-70.65, -33.45, 32719),  # Santiago, southern hemisphere
        (5.32, 60.39, 32632),  # Bergen: Norway exception, would be 31
        (3.5, 57.0, 32632),  # North Sea inside the Norway exception
        (2.9, 57.0, 32631),  # just west of it
        (15.6, 78.2, 32633),  # Longyearbyen: Svalbard, would be 33 anyway
        (10.0, 79.0, 32633),  # Svalbard, would be 32 (which does not exist there)
        (8.0, 79.0, 32631),  # Svalbard, would be 32
        (35.0, 80.0, 32637),  # Svalbard, would be 36
        (180.0, 10.0, 32601),  # 180 E is zone 1
        (-180.0, -10.0, 32701),
    ],
)
def test_utm_epsg_known_points(lon, lat, epsg):
    assert grid.utm_epsg(lon, lat) == epsg


def test_utm_coordinates_match_hand_computed_values():
    # (0 E, 0 N) in zone 31: 3 degrees west of the central meridian -> 166021.44 m easting.
    x, y = grid.lonlat_to_utm(0.0, 0.0, 32631)
    assert x == pytest.approx(166021.443, abs=0.01)
    assert y == pytest.approx(0.0, abs=1e-6)
    # On a central meridian at 45 N: northing = 0.9996 * meridian arc (4984944.4 m).
    x, y = grid.lonlat_to_utm(3.0, 45.0, 32631)
    assert x == pytest.approx(500000.0, abs=1e-6)
    assert y == pytest.approx(4982950.40, abs=0.05)
    # Southern hemisphere: false northing 10,000,000 m at the equator.
    _, y = grid.lonlat_to_utm(-69.0, -1e-9, 32719)
    assert y == pytest.approx(10_000_000.0, abs=0.01)
    lon, lat = grid.utm_to_lonlat(500000.0, 4982950.40, 32631)
    assert (lon, lat) == (pytest.approx(3.0), pytest.approx(45.0, abs=1e-7))


def test_zone_of_epsg_and_rejects_other_codes():
    assert grid.zone_of_epsg(32631) == (31, "N")
    assert grid.zone_of_epsg(32719) == (19, "S")
    with pytest.raises(ValueError, match="EPSG:4326"):
        grid.zone_of_epsg(4326)


def test_tile_numbers_and_paths():
    # The point (500000, 4982950.4) lies in tile col 195 (500000 // 2560), row 1946.
    tiles = grid.tiles_for_aoi(shapely.box(2.999, 44.999, 3.001, 45.001), 256)
    ids = {t.id for t in tiles}
    assert "32631_195_1946" in ids
    t = grid.parse_tile_id("32631_195_1946", 256)
    assert t.window.x0 == 195 * 2560
    assert t.window.y0 == 1947 * 2560  # top edge of a north-up tile
    assert t.transform.e == -10.0 and t.transform.a == 10.0
    assert t.window.bounds == (499200.0, 4981760.0, 501760.0, 4984320.0)
    assert t.path(2024) == "2024/31N/32631_195_1946.tif"
    assert grid.parse_tile_id("32719_10_3900", 64).path(2023, "_quality.tif") == (
        "2023/19S/32719_10_3900_quality.tif"
    )
    with pytest.raises(ValueError, match="malformed tile id"):
        grid.parse_tile_id("32631-1-2", 256)


def test_tile_ids_are_stable_and_unique():
    bbox = shapely.box(4.3, 50.8, 4.5, 50.9)
    a = grid.tiles_for_aoi(bbox, 128)
    b = grid.tiles_for_aoi(bbox, 128)
    assert [t.id for t in a] == [t.id for t in b]
    assert len({t.id for t in a}) == len(a)
    # Tiles tile the plane: no two overlap, and together they cover the AOI.
    boxes = [shapely.box(*t.window.bounds) for t in a]
    union = shapely.union_all(boxes)
    assert union.area == pytest.approx(sum(b.area for b in boxes))
    utm = shapely.ops.transform(grid._transformer(4326, a[0].epsg).transform, bbox.segmentize(0.01))
    assert union.contains(utm)


def test_aoi_across_zone_boundary_splits_in_two():
    parts = grid.split_by_zone(shapely.box(5.95, 45.0, 6.05, 45.05))
    assert sorted(parts) == [32631, 32632]
    assert parts[32631].bounds == pytest.approx((5.95, 45.0, 6.0, 45.05))
    assert parts[32632].bounds == pytest.approx((6.0, 45.0, 6.05, 45.05))
    tiles = grid.tiles_for_aoi(shapely.box(5.95, 45.0, 6.05, 45.05), 256)
    assert {t.epsg for t in tiles} == {32631, 32632}


def test_aoi_across_equator_splits_by_hemisphere():
    parts = grid.split_by_zone(shapely.box(10.0, -0.01, 10.02, 0.01))
    assert sorted(parts) == [32632, 32732]


def test_norway_exception_in_splitting():
    # 4-5 E at 60 N lies in zone 32 (not 31) by the exception.
    assert sorted(grid.split_by_zone(shapely.box(4.0, 60.0, 5.0, 60.1))) == [32632]


def test_chips_cover_tile_with_halo():
    tile = grid.Tile(32631, 10, 20, 256)
    chips = tile.chips(core=96, halo=16)
    assert len(chips) == 9  # ceil(256 / 96) = 3 per side
    c = chips[-1]
    assert (c.i, c.j, c.size) == (2, 2, 128)
    assert c.window.x0 == tile.window.x0 + 2 * 960 - 160
    assert c.window.y0 == tile.window.y0 - 2 * 960 + 160
    tile_sl, chip_sl = c.core_slices()
    assert tile_sl == (slice(192, 256), slice(192, 256))
    assert chip_sl == (slice(16, 80), slice(16, 80))
    # Every tile pixel is written by exactly one chip core.
    hits = np.zeros((256, 256), int)
    for ch in chips:
        (rs, cs), _ = ch.core_slices()
        hits[rs, cs] += 1
    assert (hits == 1).all()


def test_window_pixel_centres_and_subwindow():
    w = grid.GridWindow(32631, 1000.0, 2000.0, 4, 3)
    xs, ys = w.pixel_centers()
    assert xs.shape == (3, 4)
    assert xs[0, 0] == 1005.0 and ys[0, 0] == 1995.0 and ys[2, 3] == 1975.0
    s = w.subwindow(1, 2, 2, 2)
    assert (s.x0, s.y0, s.width, s.height) == (1020.0, 1990.0, 2, 2)
    assert grid.GridWindow.from_dict(w.to_dict()) == w


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1,2,3", "4 comma-separated"),
        ("a,b,c,d", "non-number"),
        ("170,0,-170,1", "antimeridian"),
        ("0,1,1,0", "miny >= maxy"),
        ("0,0,200,1", "out of lon/lat range"),
    ],
)
def test_parse_bbox_rejects_bad_input(text, match):
    with pytest.raises(ValueError, match=match):
        grid.parse_bbox(text)


def test_aoi_geometry_from_geojson():
    feat = {
        "type": "Feature",
        "properties": {},
        "geometry": shapely.geometry.mapping(shapely.box(4, 50, 4.1, 50.1)),
    }
    doc = {"type": "FeatureCollection", "features": [feat]}
    g = grid.aoi_geometry(aoi=doc)
    assert g.bounds == pytest.approx((4, 50, 4.1, 50.1))
    assert grid.aoi_geometry(aoi=feat).bounds == pytest.approx((4, 50, 4.1, 50.1))
    with pytest.raises(ValueError, match="exactly one"):
        grid.aoi_geometry(bbox="4,50,4.1,50.1", aoi=doc)
    with pytest.raises(ValueError, match="empty.geojson has no geometry"):
        grid.aoi_geometry(
            aoi={"type": "FeatureCollection", "features": []}, aoi_name="empty.geojson"
        )
    with pytest.raises(ValueError, match="x.json is not a GeoJSON object"):
        grid.aoi_from_geojson([1, 2], "x.json")


def test_window_for_geometry_is_grid_aligned():
    w = grid.window_for_geometry(shapely.box(4.3, 50.8, 4.31, 50.81), 32631)
    assert w.x0 % 10 == 0 and w.y0 % 10 == 0
    assert 60 < w.width < 80 and 100 < w.height < 120


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((0, 0, 10, 10), (5, 5, 15, 15), True),  # overlap
        ((0, 0, 10, 10), (10, 0, 20, 10), True),  # touching edge (x = 10): closed boxes
        ((0, 0, 10, 10), (10, 10, 20, 20), True),  # touching corner
        ((0, 0, 10, 10), (0, -5, 10, 0), True),  # touching edge (y = 0)
        ((0, 0, 10, 10), (10.5, 0, 20, 10), False),  # disjoint in x
        ((0, 0, 10, 10), (0, 11, 10, 20), False),  # disjoint in y
        ((0, 0, 10, 10), (2, 3, 4, 5), True),  # containment
        ((2, 3, 4, 5), (0, 0, 10, 10), True),  # containment, the other way
    ],
)
def test_bbox_intersects_by_hand(a, b, expected):
    assert grid.bbox_intersects(a, b) is expected
    assert grid.bbox_intersects(b, a) is expected  # symmetric
