"""Shared fixtures: simulated LRS and MRS exposures, reference files, and jwst run offline.

Real MIRI reference files (geometry, the operational extract1d) are in
``tests/data`` (see its README), so every test runs on any clone.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ["STPIPE_DISABLE_CRDS_STEPPARS"] = "true"

from mirispec_steps.simulate import offline_crds, simulate_lrs, write_lrs_apcorr  # noqa: E402
from mirispec_steps.simulate.offline_crds import local_crds  # noqa: E402

TEST_DATA = Path(__file__).resolve().parent / "data"
REAL_LRS_DIR = TEST_DATA / "lrs"
REAL_MRS_DIR = TEST_DATA / "mrs"
OPERATIONAL_EXTRACT1D = REAL_LRS_DIR / "jwst_miri_extract1d_0005.json"


@pytest.fixture(autouse=True)
def _no_crds(monkeypatch, tmp_path_factory):
    """Never let a test reach a CRDS server: scratch offline cache for every test."""
    cache = tmp_path_factory.getbasetemp() / "crds_cache"
    with offline_crds(cache):
        yield


@pytest.fixture(scope="session")
def apcorr_file(tmp_path_factory):
    return str(write_lrs_apcorr(tmp_path_factory.mktemp("ref") / "sim_apcorr.fits"))


@pytest.fixture
def write_extract1d(tmp_path):
    """Write an extract1d JSON with one aperture (id ANY) and return its path."""

    def writer(name="extract1d.json", **aperture):
        aperture.setdefault("id", "ANY")
        aperture.setdefault("region_type", "target")
        aperture.setdefault("dispaxis", 2)
        path = tmp_path / name
        path.write_text(json.dumps({"reftype": "EXTRACT1D", "apertures": [aperture]}))
        return str(path)

    return writer


def _simulate(**kwargs):
    return simulate_lrs(**kwargs)


@pytest.fixture(scope="session")
def s2d_nod_a():
    return _simulate(kind="s2d", seed=11, bad_pixel_fraction=0.003)


@pytest.fixture(scope="session")
def s2d_nod_b():
    return _simulate(kind="s2d", nod="B", seed=12)


@pytest.fixture(scope="session")
def cal_nod_a():
    return _simulate(kind="cal", seed=13, bad_pixel_fraction=0.003)


@pytest.fixture(scope="session")
def real_reference_dir():
    """Real LRS geometry: imager distortion and specwcs (tests/data/lrs)."""
    return REAL_LRS_DIR


@pytest.fixture(scope="session")
def real_mrs_dir():
    """Real MRS geometry for bands 1A/2A and 3C/4C (tests/data/mrs)."""
    return REAL_MRS_DIR


def spectrum_table(x1d, index=0):
    return x1d.spec[index].spec_table


def truth_at(table, truth):
    """Truth flux interpolated to the spectrum's wavelengths."""
    order = np.argsort(truth.wavelength)
    flux = truth.flux if truth.flux.ndim == 1 else truth.flux[0]
    return np.interp(table["WAVELENGTH"], truth.wavelength[order], flux[order])


def _simulate_mrs_files(folder, stem=None, **kwargs):
    from mirispec_steps.simulate.mrs import simulate_mrs

    simulated = simulate_mrs(**kwargs)
    written = simulated.write(folder, stem=stem)
    return simulated, {role: str(path) for role, path in written.items()}


@pytest.fixture(scope="session")
def mrs_noiseless(tmp_path_factory):
    """Noise-free MRS 1A/2A exposure with a time-dependent loss; (SimulatedMrs, file paths)."""
    return _simulate_mrs_files(
        tmp_path_factory.mktemp("mrs_noiseless"),
        seed=1,
        noise=False,
        time_loss=0.2,
        bad_pixel_fraction=0.0,
        alpha=0.3,
        beta=-0.2,
    )


@pytest.fixture(scope="session")
def mrs_noisy(tmp_path_factory):
    """Noisy MRS 1A/2A exposure with bad pixels and a time-dependent loss."""
    return _simulate_mrs_files(tmp_path_factory.mktemp("mrs_noisy"), seed=2, time_loss=0.2)


def calibrated_mrs(folder, **kwargs):
    """Simulate an MRS exposure and calibrate it (model layer): (SimulatedMrs, calibrated model)."""
    from mirispec_steps.mrs.calibrate import (
        calibrate_mrs,
        load_backgrounds,
    )
    from mirispec_steps.mrs.references import load_calibration_references

    simulated, files = _simulate_mrs_files(folder, **kwargs)
    references = load_calibration_references(simulated.rate, files["fringe"], files["photom"])
    background = load_backgrounds(simulated.background, simulated.rate, 3.0)
    calibrated = calibrate_mrs(simulated.rate, references, background)
    calibrated.meta.filename = "sim_mrscal.fits"
    return simulated, calibrated


def assert_honest_pulls(pulls, n_sigma=4.0, systematic=0.0, label=""):
    """
    Pulls (estimate - truth) / error are unbiased with unit scatter, to the precision N allows.

    The bounds are ``n_sigma`` standard errors of the mean (1 / sqrt(N)) and of
    the standard deviation (1 / sqrt(2 N)) of N independent unit Gaussians,
    widened only by an explicit, documented ``systematic`` allowance.
    """
    pulls = np.asarray(pulls, dtype=float).ravel()
    pulls = pulls[np.isfinite(pulls)]
    count = pulls.size
    mean, std = float(np.mean(pulls)), float(np.std(pulls))
    mean_bound = n_sigma / np.sqrt(count) + systematic
    std_bound = n_sigma / np.sqrt(2.0 * count) + systematic
    message = (
        f"{label} pulls of {count}: mean {mean:+.4f} (bound {mean_bound:.4f}), std {std:.4f} "
        f"(bound 1 +- {std_bound:.4f})"
    )
    assert abs(mean) < mean_bound and abs(std - 1.0) < std_bound, message
    return mean, std


def fake_crds(folder, references: dict, exp_types=("MIR_LRS-FIXEDSLIT",)):
    """A reachable CRDS, offline, selecting ``references`` (reftype to file) for ``exp_types``."""
    return local_crds(folder, references, exp_types)
