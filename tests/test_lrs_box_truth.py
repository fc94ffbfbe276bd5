"""LrsBoxExtractStep against the simulator's truth: flux, pulls, improvements over jwst."""

import warnings

import numpy as np
import pytest
from conftest import truth_at

from mirispec_steps import LrsBoxExtractStep
from mirispec_steps.simulate import simulate_lrs


def extract(model, extract1d, **parameters):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LrsBoxExtractStep.call(model, override_extract1d=extract1d, **parameters)


def flux_ratio(x1d, truth, low=5.0, high=12.0, index=0):
    table = x1d.spec[index].spec_table
    select = (table["WAVELENGTH"] > low) & (table["WAVELENGTH"] < high)
    return np.asarray(table["FLUX"])[select] / truth_at(table, truth)[select]


@pytest.mark.parametrize("kind", ["cal", "s2d"])
def test_apcorr_flux_matches_truth_noise_free(kind, write_extract1d, apcorr_file):
    sim = simulate_lrs(kind, noise=False, seed=1, background=0.0)
    extract1d = write_extract1d(xstart=20, xstop=27, extract_width=8)
    x1d = extract(sim.model, extract1d, use_source_posn=True, override_apcorr=apcorr_file)
    ratio = flux_ratio(x1d, sim.truth)
    assert np.max(np.abs(ratio - 1)) < 0.005
    assert abs(np.median(ratio) - 1) < 0.002


def test_dead_core_pixel_is_repaired(write_extract1d):
    """A dead pixel at the trace costs jwst ~a fifth of the row; repaired here to < 1%."""
    clean = simulate_lrs("s2d", noise=False, seed=3)
    row = 200
    core = int(round(clean.truth.trace[np.searchsorted(clean.truth.rows, row)]))
    damaged = simulate_lrs("s2d", noise=False, seed=3, dead_pixels=[(core, row)])
    extract1d = write_extract1d(xstart=27, xstop=34, use_source_posn=False)
    reference = extract(clean.model, extract1d, apply_apcorr=False).spec[0].spec_table
    repaired = extract(damaged.model, extract1d, apply_apcorr=False).spec[0].spec_table
    plain = (
        extract(damaged.model, extract1d, apply_apcorr=False, replace_bad_pixels=False)
        .spec[0]
        .spec_table
    )
    index = np.argmin(
        np.abs(
            reference["WAVELENGTH"]
            - damaged.truth.wavelength[np.searchsorted(damaged.truth.rows, row)]
        )
    )
    lost = 1 - plain["FLUX"][index] / reference["FLUX"][index]
    assert lost > 0.15
    assert abs(repaired["FLUX"][index] / reference["FLUX"][index] - 1) < 0.01
    x1d = extract(damaged.model, extract1d, apply_apcorr=False)
    assert x1d.spec[0].replaced_fraction[index] == pytest.approx(lost, rel=0.05)


def test_mean_background_in_json(write_extract1d):
    """jwst raises ValueError for bkg_fit 'mean' in the reference file; we accept it."""
    sim = simulate_lrs("s2d", noise=False, seed=5)
    as_mean = write_extract1d(
        "mean.json",
        xstart=27,
        xstop=34,
        bkg_coeff=[[0.5], [6.5], [36.5], [42.5]],
        bkg_fit="mean",
    )
    as_poly0 = write_extract1d(
        "poly.json",
        xstart=27,
        xstop=34,
        bkg_coeff=[[0.5], [6.5], [36.5], [42.5]],
        bkg_order=0,
    )
    a = extract(sim.model, as_mean, apply_apcorr=False).spec[0].spec_table
    b = extract(sim.model, as_poly0, apply_apcorr=False).spec[0].spec_table
    np.testing.assert_allclose(a["FLUX"], b["FLUX"])


def test_calints_gives_x1dints(write_extract1d, apcorr_file):
    sim = simulate_lrs("calints", n_integrations=5, seed=6)
    extract1d = write_extract1d(xstart=34, xstop=41, use_source_posn=False)
    x1d = extract(sim.model, extract1d, override_apcorr=apcorr_file)
    assert x1d.__class__.__name__ == "TSOMultiSpecModel"
    table = x1d.spec[0].spec_table
    assert table["FLUX"].shape[0] == 5
    flux = np.asarray(table["FLUX"])
    wavelength = np.asarray(table["WAVELENGTH"][0])
    truth = np.interp(wavelength, sim.truth.wavelength[::-1], sim.truth.flux[0][::-1])
    select = (wavelength > 5) & (wavelength < 12)
    assert abs(np.median(flux[:, select] / truth[select]) - 1) < 0.01


def test_real_geometry_flux(real_reference_dir, write_extract1d, apcorr_file):
    sim = simulate_lrs("cal", noise=False, seed=7, reference_dir=real_reference_dir, background=0.0)
    extract1d = write_extract1d(xstart=20, xstop=27, extract_width=8)
    x1d = extract(sim.model, extract1d, use_source_posn=True, override_apcorr=apcorr_file)
    ratio = flux_ratio(x1d, sim.truth)
    assert np.max(np.abs(ratio - 1)) < 0.005
