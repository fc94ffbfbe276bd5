"""Synthetic MIRI exposures with known truth: the demo's data and the tests' tooling.

Not part of the runtime of the steps: the simulator makes LRS and MRS
exposures whose input (spectrum, position, PSF, noise) is known, writes
matching reference files, and runs jwst's assign_wcs offline on real
geometry files (:func:`offline_crds`). The steps never import it.
"""

from mirispec_steps.simulate.lrs import (
    LrsTruth,
    SimulatedLrs,
    default_spectrum,
    simulate_lrs,
    write_lrs_apcorr,
)
from mirispec_steps.simulate.lrs_geometry import LrsGeometry, build_lrs_wcs
from mirispec_steps.simulate.mrs import PointSourceFringes, default_spectral_leak, simulate_mrs
from mirispec_steps.simulate.mrs_geometry import (
    assign_real_mrs_wcs,
    blank_mrs_model,
    build_mrs_wcs,
)
from mirispec_steps.simulate.mrs_observation import MrsObservation, simulate_mrs_observation
from mirispec_steps.simulate.offline_crds import local_crds, offline_crds
from mirispec_steps.simulate.psf import (
    MISMATCHED_FAMILIES,
    AsymmetricLrsPsf,
    CumulativeLrsPsf,
    DiffractionLrsPsf,
    LrsPsf,
    MoffatLrsPsf,
)

__all__ = [
    "MISMATCHED_FAMILIES",
    "AsymmetricLrsPsf",
    "CumulativeLrsPsf",
    "DiffractionLrsPsf",
    "LrsGeometry",
    "LrsPsf",
    "LrsTruth",
    "MoffatLrsPsf",
    "MrsObservation",
    "PointSourceFringes",
    "SimulatedLrs",
    "assign_real_mrs_wcs",
    "blank_mrs_model",
    "build_lrs_wcs",
    "build_mrs_wcs",
    "default_spectral_leak",
    "default_spectrum",
    "local_crds",
    "offline_crds",
    "simulate_lrs",
    "simulate_mrs",
    "simulate_mrs_observation",
    "write_lrs_apcorr",
]
