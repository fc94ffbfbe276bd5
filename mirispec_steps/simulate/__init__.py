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
from mirispec_steps.simulate.mrs_geometry import (
    assign_real_mrs_wcs,
    blank_mrs_model,
    build_mrs_wcs,
    real_mrs_reference_dir,
)
from mirispec_steps.simulate.offline_crds import offline_crds
from mirispec_steps.simulate.psf import LrsPsf

__all__ = [
    "LrsGeometry",
    "LrsPsf",
    "LrsTruth",
    "SimulatedLrs",
    "assign_real_mrs_wcs",
    "blank_mrs_model",
    "build_lrs_wcs",
    "build_mrs_wcs",
    "default_spectrum",
    "offline_crds",
    "real_lrs_reference_dir",
    "real_mrs_reference_dir",
    "simulate_lrs",
    "write_lrs_apcorr",
]
