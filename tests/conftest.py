"""Shared fixtures: simulated LRS exposures, reference files, and jwst run offline."""

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ["STPIPE_DISABLE_CRDS_STEPPARS"] = "true"

from mirispec_steps.simulate import (  # noqa: E402
    offline_crds,
    real_lrs_reference_dir,
    real_mrs_reference_dir,
    simulate_lrs,
    write_lrs_apcorr,
)

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
OPERATIONAL_EXTRACT1D = SHARED_DATA / "lrs" / "jwst_miri_extract1d_0005.json"


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
    directory = real_lrs_reference_dir()
    if directory is None:
        pytest.skip("real LRS reference files (../shared/data/lrs) are not available")
    return directory


@pytest.fixture(scope="session")
def real_mrs_dir():
    directory = real_mrs_reference_dir()
    if directory is None:
        pytest.skip("real MRS reference files (../shared/data/mrs) are not available")
    return directory


def spectrum_table(x1d, index=0):
    return x1d.spec[index].spec_table


def truth_at(table, truth):
    """Truth flux interpolated to the spectrum's wavelengths."""
    order = np.argsort(truth.wavelength)
    flux = truth.flux if truth.flux.ndim == 1 else truth.flux[0]
    return np.interp(table["WAVELENGTH"], truth.wavelength[order], flux[order])


def _simulate_mrs_files(folder, stem=None, **kwargs):
    from mirispec_steps.simulate.mrs import simulate_mrs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
    from mirispec_steps.mrs_calibrate import (
        calibrate_mrs,
        load_backgrounds,
    )
    from mirispec_steps.reference import load_calibration_references

    simulated, files = _simulate_mrs_files(folder, **kwargs)
    references = load_calibration_references(simulated.rate, files["fringe"], files["photom"])
    background = load_backgrounds(simulated.background, simulated.rate, 3.0)
    calibrated = calibrate_mrs(simulated.rate, references, background)
    calibrated.meta.filename = "sim_mrscal.fits"
    return simulated, calibrated
