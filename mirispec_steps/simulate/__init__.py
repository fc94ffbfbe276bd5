"""Synthetic MIRI exposures with known truth (the package's embedded default data)."""

from mirispec_steps.simulate.lrs import (
    LrsTruth,
    SimulatedLrs,
    default_spectrum,
    real_lrs_reference_dir,
    simulate_lrs,
    write_lrs_apcorr,
)
from mirispec_steps.simulate.lrs_geometry import LrsGeometry, build_lrs_wcs
from mirispec_steps.simulate.offline_crds import offline_crds
from mirispec_steps.simulate.psf import LrsPsf

__all__ = [
    "LrsGeometry",
    "LrsPsf",
    "LrsTruth",
    "SimulatedLrs",
    "build_lrs_wcs",
    "default_spectrum",
    "offline_crds",
    "real_lrs_reference_dir",
    "simulate_lrs",
    "write_lrs_apcorr",
]
