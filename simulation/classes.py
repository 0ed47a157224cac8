"""Land-cover classes and biome presets of the simulated Earth.

A class carries what the physics needs: how its surface is made (PROSAIL canopy over a soil,
or a library spectrum such as water or asphalt), its phenology (double-logistic LAI cycles,
with harvest), and its radar response (water-cloud model coefficients). Class ids are the
same in every biome so labels are comparable; names and parameters differ per biome (a
tropical "crop_a" is sugarcane, a temperate one winter wheat).

Phenology is in days of the calendar year. A cycle may start before day 0 (a winter cereal
sown the previous autumn) or end after 365; it is evaluated on the same year's day axis.
"""

from __future__ import annotations

import dataclasses

# ---------------------------------------------------------------------------------- ids

NODATA = 0
WATER = 1
EVERGREEN_FOREST = 2
DECIDUOUS_FOREST = 3
CROP_A = 4
CROP_B = 5
DOUBLE_CROP = 6
GRASSLAND = 7
SHRUBLAND = 8
WETLAND = 9
BUILT_UP = 10
BARE_SOIL = 11
ROCK = 12
BURNED = 13

NUM_CLASSES = 14  # ids 0..13 (0 = no data)
FORESTS = (EVERGREEN_FOREST, DECIDUOUS_FOREST)
CROPS = (CROP_A, CROP_B, DOUBLE_CROP)

# Event types, in the order their codes appear in event rasters (code = index + 1).
EVENT_TYPES = (
    "deforestation",
    "urban_expansion",
    "fire_regrowth",
    "reservoir_change",
    "crop_rotation",
)


@dataclasses.dataclass(frozen=True)
class Cycle:
    """One growing cycle: LAI rises around `sos`, falls around `eos`, is cut at `harvest`."""

    sos: float  # day of 50% green-up
    eos: float  # day of 50% senescence
    lai_max: float
    r_up: float = 10.0  # logistic rate (days)
    r_down: float = 12.0
    harvest: float | None = None  # day the canopy is removed (residue stays)
    # Days senescent leaves stay on after `eos` (crops: until harvest; needles: none).
    brown_days: float = 25.0


@dataclasses.dataclass(frozen=True)
class Leaf:
    """PROSPECT-5 leaf and SAIL canopy parameters for one class."""

    n: float = 1.5
    cab: float = 45.0  # chlorophyll a+b, ug/cm2
    car: float = 9.0
    cw: float = 0.012  # equivalent water thickness, cm
    cm: float = 0.006  # dry matter, g/cm2
    leaf_angle: float = 55.0  # mean leaf inclination (ellipsoidal LIDF), deg
    hspot: float = 0.05
    psoil: float = 0.5  # soil moisture mix (1 dry, 0 wet)
    rsoil: float = 1.0  # soil brightness


@dataclasses.dataclass(frozen=True)
class LandClass:
    """One land-cover class in one biome."""

    id: int
    name: str
    surface: str  # 'canopy', 'water', 'urban', 'bare', 'rock', 'burned'
    cycles: tuple[Cycle, ...] = ()
    lai_min: float = 0.0
    leaf: Leaf = Leaf()
    # Water-cloud model (linear power): sigma_veg = A cos(theta) (1 - exp(-2 B LAI / cos(theta))).
    a_vv: float = 0.25
    b_vv: float = 0.09
    a_vh: float = 0.06
    b_vh: float = 0.15
    # Fraction of impervious surface (built-up) or standing water (wetland) in a pixel.
    impervious: float = 0.0
    flood_max: float = 0.0
    # Hay meadows: fraction of parcels mown twice a year.
    mown_fraction: float = 0.0


@dataclasses.dataclass(frozen=True)
class Biome:
    """A preset: classes, climate and the default region centre."""

    name: str
    classes: tuple[LandClass, ...]
    # Climate: T(K) = t_mean + t_amp * cos(2 pi (doy - t_peak_doy) / 365) - lapse * elev.
    t_mean_sea_level: float
    t_amp: float
    t_peak_doy: float
    precip_mean: float  # m/day
    precip_amp: float  # m/day, peak at wet_peak_doy
    wet_peak_doy: float
    # Phenology timing: days of delay per 100 m of elevation and per degree of latitude poleward
    # (Hopkins' bioclimatic law: ~4 days per degree or per 120 m).
    delay_per_100m: float
    delay_per_deg: float
    ref_lat: float
    # Default demo region: EPSG and zone coordinates of the centre (tile-aligned window).
    demo_epsg: int
    demo_center: tuple[float, float]
    elev_base: float
    elev_amp: float
    soil: str  # library soil for bare parcels
    # Pairs of crop classes that swap in a crop-rotation event.
    rotation: tuple[int, int] = (CROP_A, CROP_B)
    # Season of fires and clearing (day of year the event happens in the 'from' year).
    event_doy: tuple[float, float] = (240.0, 320.0)

    def by_id(self, class_id: int) -> LandClass:
        for c in self.classes:
            if c.id == class_id:
                return c
        raise KeyError(f"biome {self.name!r} has no class id {class_id}")

    @property
    def class_names(self) -> dict[int, str]:
        return {c.id: c.name for c in self.classes}


_BROWN = Leaf(n=1.8, cab=4.0, car=3.0, cw=0.003, cm=0.009, leaf_angle=60.0)
"""Senescent (brown) leaves: little chlorophyll and water; mixed in during senescence."""

TEMPERATE = Biome(
    name="temperate",
    classes=(
        LandClass(WATER, "water", "water", a_vv=0.0, a_vh=0.0),
        LandClass(
            EVERGREEN_FOREST,
            "evergreen_needleleaf_forest",
            "canopy",
            # Spruce/pine: needles stay, but the winter canopy is thinner and paler (needle
            # loss, pigment changes, low sun): shed needles do not turn the canopy brown.
            cycles=(Cycle(sos=115, eos=295, lai_max=3.0, r_up=12, r_down=14, brown_days=0),),
            lai_min=1.4,
            leaf=Leaf(n=2.0, cab=38, car=10, cw=0.02, cm=0.02, leaf_angle=60, psoil=0.3, rsoil=0.6),
            a_vv=0.30,
            b_vv=0.10,
            a_vh=0.07,
        ),
        LandClass(
            DECIDUOUS_FOREST,
            "deciduous_broadleaf_forest",
            "canopy",
            cycles=(Cycle(sos=112, eos=292, lai_max=5.0, r_up=7, r_down=9),),
            lai_min=0.6,  # stems, branches, evergreen understorey
            leaf=Leaf(n=1.6, cab=48, car=10, cw=0.014, cm=0.007, leaf_angle=50, psoil=0.3),
            a_vv=0.28,
            a_vh=0.07,
        ),
        LandClass(
            CROP_A,
            "winter_cereal",
            "canopy",
            # Sown in October of the previous year: a small winter canopy, spring growth, a
            # July harvest, then stubble until next autumn's sowing emerges.
            cycles=(
                Cycle(sos=-45, eos=178, lai_max=0.7, r_up=15, r_down=7, harvest=205),
                Cycle(sos=95, eos=178, lai_max=4.3, r_up=9, r_down=7, harvest=205),
                Cycle(sos=305, eos=600, lai_max=0.7, r_up=12),
            ),
            leaf=Leaf(n=1.5, cab=50, car=10, cw=0.013, cm=0.005, leaf_angle=62, psoil=0.6),
        ),
        LandClass(
            CROP_B,
            "summer_maize",
            "canopy",
            cycles=(Cycle(sos=170, eos=255, lai_max=4.5, r_up=8, r_down=9, harvest=280),),
            leaf=Leaf(n=1.5, cab=52, car=10, cw=0.014, cm=0.005, leaf_angle=55, psoil=0.6),
            a_vv=0.22,
        ),
        LandClass(
            DOUBLE_CROP,
            "winter_barley_then_catch_crop",
            "canopy",
            cycles=(
                Cycle(sos=-50, eos=160, lai_max=0.5, r_up=15, r_down=7, harvest=182),
                Cycle(sos=80, eos=160, lai_max=3.7, r_up=9, r_down=7, harvest=182),
                Cycle(sos=225, eos=300, lai_max=2.8, r_up=8, r_down=10, harvest=320),
            ),
            leaf=Leaf(n=1.5, cab=45, car=9, cw=0.012, cm=0.005, leaf_angle=60, psoil=0.6),
        ),
        LandClass(
            GRASSLAND,
            "grassland",
            "canopy",
            cycles=(Cycle(sos=100, eos=300, lai_max=2.6, r_up=12, r_down=18),),
            lai_min=1.0,
            leaf=Leaf(n=1.5, cab=42, car=9, cw=0.012, cm=0.005, leaf_angle=60, psoil=0.5),
            a_vv=0.18,
            a_vh=0.045,
            mown_fraction=0.5,
        ),
        LandClass(
            SHRUBLAND,
            "shrubland",
            "canopy",
            cycles=(Cycle(sos=110, eos=290, lai_max=1.6, r_up=10, r_down=14),),
            lai_min=0.8,
            leaf=Leaf(n=1.7, cab=38, car=9, cw=0.012, cm=0.008, leaf_angle=50, psoil=0.7),
        ),
        LandClass(
            WETLAND,
            "wetland",
            "canopy",
            cycles=(Cycle(sos=125, eos=280, lai_max=3.0, r_up=10, r_down=12),),
            lai_min=0.5,
            leaf=Leaf(n=1.6, cab=40, car=9, cw=0.015, cm=0.006, leaf_angle=65, psoil=0.1),
            flood_max=0.5,
        ),
        LandClass(
            BUILT_UP,
            "built_up",
            "urban",
            # Urban green (lawns, street trees) between the impervious surfaces.
            cycles=(Cycle(sos=105, eos=295, lai_max=2.0, r_up=12, r_down=15),),
            lai_min=1.0,
            leaf=Leaf(n=1.5, cab=42, car=9, cw=0.012, cm=0.005, leaf_angle=55, psoil=0.6),
            impervious=0.75,
        ),
        LandClass(
            BARE_SOIL,
            "bare_soil",
            "bare",
            # Sparse weeds in summer.
            cycles=(Cycle(sos=140, eos=260, lai_max=0.3),),
            leaf=Leaf(psoil=0.8),
        ),
        LandClass(ROCK, "rock", "rock"),
        LandClass(
            BURNED,
            "burned_regrowing",
            "burned",
            # After a fire, shrubs regrow over about a year; see world.surface_state.
            cycles=(Cycle(sos=110, eos=290, lai_max=1.6, r_up=10, r_down=14),),
            lai_min=0.8,
            leaf=Leaf(n=1.7, cab=38, car=9, cw=0.012, cm=0.008, leaf_angle=50, psoil=0.7),
        ),
    ),
    # Belgium (Uccle): ~10.5 C annual mean at 100 m, coldest mid-January, warmest mid-July.
    t_mean_sea_level=284.3,
    t_amp=7.3,
    t_peak_doy=197.0,
    precip_mean=0.0023,
    precip_amp=0.0003,
    wet_peak_doy=45.0,  # soils wettest, lakes fullest and skies cloudiest in late winter
    delay_per_100m=3.3,
    delay_per_deg=4.0,
    ref_lat=50.6,
    demo_epsg=32631,
    demo_center=(616960.0, 5605120.0),  # ~4.62 E 50.59 N, Brabant (Belgium)
    elev_base=150.0,
    elev_amp=45.0,
    soil="loam",
)

TROPICAL = Biome(
    name="tropical",
    classes=(
        LandClass(WATER, "water", "water", a_vv=0.0, a_vh=0.0),
        LandClass(
            EVERGREEN_FOREST,
            "evergreen_broadleaf_rainforest",
            "canopy",
            # Amazon canopies flush new leaves in the dry season: a small dry-season green-up.
            cycles=(Cycle(sos=170, eos=330, lai_max=0.6, r_up=15, r_down=15, brown_days=0),),
            lai_min=5.4,
            leaf=Leaf(n=1.7, cab=50, car=11, cw=0.016, cm=0.009, leaf_angle=45, psoil=0.2),
            a_vv=0.32,
            b_vv=0.10,
            a_vh=0.08,
        ),
        LandClass(
            DECIDUOUS_FOREST,
            "semideciduous_dry_forest",
            "canopy",
            # Leaves drop in the dry season (July-November) and return with the rains.
            cycles=(Cycle(sos=-20, eos=195, lai_max=3.0, r_up=10, r_down=12),),
            lai_min=1.5,
            leaf=Leaf(n=1.7, cab=45, car=10, cw=0.013, cm=0.008, leaf_angle=50, psoil=0.4),
            a_vv=0.28,
            a_vh=0.07,
        ),
        LandClass(
            CROP_A,
            "sugarcane",
            "canopy",
            # A ratoon regrows after the dry-season harvest; the canopy closes in the rains.
            cycles=(
                Cycle(sos=20, eos=215, lai_max=4.8, r_up=25, r_down=10, harvest=235),
                Cycle(sos=330, eos=600, lai_max=2.0, r_up=20, r_down=10),
            ),
            leaf=Leaf(n=1.5, cab=45, car=9, cw=0.014, cm=0.006, leaf_angle=55, psoil=0.5),
        ),
        LandClass(
            CROP_B,
            "oil_palm",
            "canopy",
            cycles=(Cycle(sos=0, eos=400, lai_max=0.4, r_up=30, r_down=30, brown_days=0),),
            lai_min=3.4,
            leaf=Leaf(n=1.8, cab=55, car=11, cw=0.018, cm=0.01, leaf_angle=40, psoil=0.4),
            a_vv=0.30,
            a_vh=0.075,
        ),
        LandClass(
            DOUBLE_CROP,
            "soy_then_maize",
            "canopy",
            # Soy sown with the rains, then a second-season ("safrinha") maize.
            cycles=(
                Cycle(sos=15, eos=85, lai_max=4.0, r_up=8, r_down=7, harvest=105),
                Cycle(sos=140, eos=205, lai_max=3.5, r_up=8, r_down=8, harvest=225),
            ),
            leaf=Leaf(n=1.5, cab=48, car=10, cw=0.013, cm=0.005, leaf_angle=55, psoil=0.5),
        ),
        LandClass(
            GRASSLAND,
            "pasture",
            "canopy",
            cycles=(Cycle(sos=-25, eos=185, lai_max=1.8, r_up=12, r_down=15),),
            lai_min=0.9,
            leaf=Leaf(n=1.5, cab=40, car=9, cw=0.011, cm=0.005, leaf_angle=60, psoil=0.6),
            a_vv=0.18,
            a_vh=0.045,
        ),
        LandClass(
            SHRUBLAND,
            "shrubland",
            "canopy",
            cycles=(Cycle(sos=-15, eos=190, lai_max=1.4, r_up=12, r_down=15),),
            lai_min=0.8,
            leaf=Leaf(n=1.7, cab=38, car=9, cw=0.011, cm=0.008, leaf_angle=50, psoil=0.7),
        ),
        LandClass(
            WETLAND,
            "floodplain_wetland",
            "canopy",
            cycles=(Cycle(sos=-10, eos=210, lai_max=2.5, r_up=12, r_down=12),),
            lai_min=1.0,
            leaf=Leaf(n=1.6, cab=42, car=9, cw=0.015, cm=0.006, leaf_angle=65, psoil=0.1),
            flood_max=0.7,
        ),
        LandClass(
            BUILT_UP,
            "built_up",
            "urban",
            cycles=(Cycle(sos=-20, eos=190, lai_max=1.0, r_up=12, r_down=15),),
            lai_min=1.0,
            leaf=Leaf(n=1.5, cab=42, car=9, cw=0.012, cm=0.005, leaf_angle=55, psoil=0.6),
            impervious=0.7,
        ),
        LandClass(
            BARE_SOIL,
            "bare_soil",
            "bare",
            cycles=(Cycle(sos=-10, eos=150, lai_max=0.3),),
            leaf=Leaf(psoil=0.8),
        ),
        LandClass(ROCK, "rock", "rock"),
        LandClass(
            BURNED,
            "burned_regrowing",
            "burned",
            cycles=(Cycle(sos=-15, eos=190, lai_max=1.4, r_up=12, r_down=15),),
            lai_min=0.8,
            leaf=Leaf(n=1.7, cab=38, car=9, cw=0.011, cm=0.008, leaf_angle=50, psoil=0.7),
        ),
    ),
    # Eastern Para (Brazil): ~26.5 C, 1-2 K seasonality, rains December-May.
    t_mean_sea_level=300.6,
    t_amp=0.9,
    t_peak_doy=280.0,
    precip_mean=0.0060,
    precip_amp=0.0050,
    wet_peak_doy=75.0,
    delay_per_100m=0.0,
    delay_per_deg=0.0,
    ref_lat=-3.4,
    demo_epsg=32722,
    demo_center=(355840.0, 9621760.0),  # ~52.3 W 3.4 S, Xingu region (Para, Brazil)
    elev_base=160.0,
    elev_amp=55.0,
    soil="oxisol",
    rotation=(CROP_A, DOUBLE_CROP),
    event_doy=(215.0, 300.0),  # dry-season clearing and burning
)

BIOMES: dict[str, Biome] = {b.name: b for b in (TEMPERATE, TROPICAL)}

BROWN_LEAF = _BROWN


def get_biome(name: str) -> Biome:
    """The biome preset called `name`; ValueError listing the presets otherwise."""
    try:
        return BIOMES[name]
    except KeyError:
        raise ValueError(f"unknown biome {name!r}; choose one of {sorted(BIOMES)}") from None
