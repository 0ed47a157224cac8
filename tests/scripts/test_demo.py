"""scripts/demo.py: the demo's AOI covers exactly the simulated window's pixels."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import shapely

from schemas.grid import lonlat_to_utm

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def test_aoi_maps_back_onto_the_window_shrunk_by_half_a_pixel(tmp_path):
    window = {"epsg": 32631, "x0": 614400.0, "y0": 5606400.0, "width": 512, "height": 256}
    window["pixel_size"] = 10.0
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "sim_params.json").write_text(json.dumps({"region": {"windows": [window]}}))
    demo.write_aoi(str(tmp_path / "sim"), str(tmp_path / "aoi.geojson"))
    fc = json.loads((tmp_path / "aoi.geojson").read_text())
    assert len(fc["features"]) == 1
    lonlat = np.asarray(fc["features"][0]["geometry"]["coordinates"][0])
    x, y = lonlat_to_utm(lonlat[:, 0], lonlat[:, 1], 32631)
    # Back in zone coordinates: the window's bounds less 5 m on each side, to < 1 mm.
    np.testing.assert_allclose(
        shapely.Polygon(np.column_stack([x, y])).bounds,
        (614405.0, 5603845.0, 619515.0, 5606395.0),
        atol=1e-3,
    )


def test_pca_rgb_is_transparent_where_there_is_no_embedding():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 5, 64))
    valid = np.ones((4, 5), bool)
    valid[0, 0] = False
    rgba = demo._pca_rgb(values, valid)
    assert rgba.shape == (4, 5, 4)
    assert rgba[0, 0, 3] == 0 and rgba[valid][:, 3].min() == 1.0
    assert rgba[..., :3].min() >= 0 and rgba[..., :3].max() <= 1
