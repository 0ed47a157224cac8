"""scripts/demo.py: the demo's AOI covers exactly the simulated window's pixels."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import shapely

import simulation
from schemas.grid import lonlat_to_utm

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def test_aoi_maps_back_onto_the_simulated_window_less_1_m(tmp_path):
    region = simulation.make_region(seed=0, years=[2023])
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "sim_params.json").write_text(json.dumps({"region": region.to_params()}))
    demo.write_aoi(str(tmp_path / "sim"), str(tmp_path / "aoi.geojson"))
    geometry = json.loads((tmp_path / "aoi.geojson").read_text())
    lonlat = np.asarray(geometry["coordinates"][0])
    x, y = lonlat_to_utm(lonlat[:, 0], lonlat[:, 1], 32631)
    # The demo window is x 614400-619520, y 5603840-5606400 (512 x 256 px): back in zone
    # coordinates the AOI is its bounds less 1 m on each side, to < 1 mm.
    np.testing.assert_allclose(
        shapely.Polygon(np.column_stack([x, y])).bounds,
        (614401.0, 5603841.0, 619519.0, 5606399.0),
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
