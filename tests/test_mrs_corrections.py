"""Residual fringes and the 1B spectral leak in 1-D, the shared band grid, the dither tolerance.

The residual-fringe fit is jwst's own (``jwst.residual_fringe.utils``); the
leak correction is checked against jwst's ``spectral_leak.do_correction`` on
identical inputs.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from stdatamodels.jwst import datamodels

from mirispec_steps.errors import ReferenceFileError
from mirispec_steps.mrs.core.combine import combine_dithers
from mirispec_steps.mrs.core.residual_fringe import (
    DETECTOR_FRINGE_PERIOD,
    fringe_amplitude,
    remove_residual_fringes,
)
from mirispec_steps.mrs.core.spectral_leak import LeakCurve, spectral_leak
from mirispec_steps.mrs.references import load_spectral_leak
from mirispec_steps.simulate.mrs import default_spectral_leak, spectral_leak_reference


def _fringed(low, high, n_bins, amplitude, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    wavelength = np.linspace(low, high, n_bins)
    continuum = 0.05 * (wavelength / 5.0) ** -2
    wavenumber = 1.0e4 / wavelength
    # The amplitude drifts across the band, as the point source's contrast does.
    fringe = amplitude * (1 + 0.3 * (wavelength - low) / (high - low))
    pattern = 1.0 + fringe * np.cos(2 * np.pi * wavenumber / DETECTOR_FRINGE_PERIOD + 0.4)
    flux = continuum * pattern * (1.0 + noise * rng.standard_normal(n_bins))
    return wavelength, continuum, flux


@pytest.mark.parametrize(
    ("channel", "low", "high", "n_bins"),
    [(1, 5.66, 6.63, 575), (2, 8.67, 10.13, 510), (3, 11.55, 13.47, 440), (4, 17.7, 20.95, 290)],
)
def test_residual_fringes_are_removed_to_below_half_a_percent(channel, low, high, n_bins):
    wavelength, continuum, flux = _fringed(low, high, n_bins, 0.03, noise=5e-4)
    before = fringe_amplitude(wavelength, flux / continuum - 1)
    fit = remove_residual_fringes(wavelength, flux, channel)
    after = fringe_amplitude(wavelength, fit.flux / continuum - 1)
    assert fit.fitted and fit.message == ""
    assert np.mean(before) > 0.025
    assert np.max(after) < 0.005, after
    assert_allclose(fit.factor * flux, fit.flux)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("amplitude", [0.02, 0.04])
def test_bright_lines_do_not_defeat_the_fringe_fit(amplitude, seed):
    """A bright channel 3C-like spectrum with two strong lines: jwst's default feature
    clipping takes fringe peaks for features there and leaves 2-11% of fringes (more than
    it started with); the other masking, chosen from the data alone, leaves < 0.5%."""
    rng = np.random.default_rng(seed)
    wavelength = np.linspace(15.41, 17.97, 374)
    continuum = 0.05 * (wavelength / 5.0) ** -2
    phase = 2 * np.pi * (1e4 / wavelength) / DETECTOR_FRINGE_PERIOD + rng.uniform(0, 2 * np.pi)
    flux = continuum * (1 + amplitude * np.cos(phase + 0.3 * (wavelength - 15.4)))
    flux *= 1 + 5e-4 * rng.standard_normal(wavelength.size)
    lines = [(15.5551, 0.06), (17.0348, 0.04)]
    for centre, peak in lines:
        flux += peak * np.exp(-0.5 * ((wavelength - centre) / 0.003) ** 2)
    clean = np.all([np.abs(wavelength - centre) > 0.05 for centre, _ in lines], axis=0)
    fit = remove_residual_fringes(wavelength, flux, 3)
    left = fringe_amplitude(wavelength[clean], (fit.flux / continuum - 1)[clean])
    assert fit.fitted and fit.level[1] < 0.25 * fit.level[0]
    assert np.max(left) < 0.005, left


def test_residual_fringe_fit_leaves_too_little_data_alone():
    wavelength, _, flux = _fringed(5.66, 6.63, 575, 0.03)
    flux[10:] = np.nan
    fit = remove_residual_fringes(wavelength, flux, 1)
    assert not fit.fitted and "usable bins" in fit.message
    assert_allclose(fit.flux, flux, equal_nan=True)


def test_fringe_amplitude_measures_a_known_sinusoid():
    wavelength = np.linspace(11.6, 13.4, 900)
    relative = 0.004 * np.cos(2 * np.pi * (1e4 / wavelength) / DETECTOR_FRINGE_PERIOD)
    assert_allclose(fringe_amplitude(wavelength, relative), 0.004, rtol=0.02)
    assert np.all(fringe_amplitude(wavelength, 0.0 * relative) < 1e-12)


def _x1d(wavelength, flux, rf_flux, channel, band):
    table = np.zeros(wavelength.size, dtype=datamodels.MRSSpecModel().get_dtype("spec_table"))
    table["WAVELENGTH"], table["FLUX"], table["RF_FLUX"] = wavelength, flux, rf_flux
    model = datamodels.MRSMultiSpecModel()
    model.spec.append(datamodels.MRSSpecModel(spec_table=table))
    model.meta.instrument.channel, model.meta.instrument.band = channel, band
    return model


def test_leak_matches_jwst_spectral_leak_on_identical_inputs(tmp_path):
    from jwst.spectral_leak.spectral_leak import do_correction

    reference = tmp_path / "mrsptcorr.fits"
    spectral_leak_reference().save(reference)
    wavelength_1b = np.linspace(5.66, 6.63, 575)
    flux_1b = 0.05 * (wavelength_1b / 5.0) ** -2 * (1 + 0.01 * np.sin(40 * wavelength_1b))
    wavelength_3a = np.linspace(11.55, 13.47, 440)
    flux_3a = 0.01 * (wavelength_3a / 12.0) ** -2
    ch1b = _x1d(wavelength_1b, flux_1b, 0.99 * flux_1b, "1", "MEDIUM")
    ch3a = _x1d(wavelength_3a, flux_3a, 0.98 * flux_3a, "3", "SHORT")
    jwst_flux, jwst_rf = do_correction(str(reference), ch1b, ch3a)
    curve = load_spectral_leak(reference)
    leak, error = spectral_leak(wavelength_3a, wavelength_1b, flux_1b, 0.001 * flux_1b, curve)
    rf_leak, _ = spectral_leak(wavelength_3a, wavelength_1b, 0.99 * flux_1b, flux_1b, curve)
    assert_allclose(flux_3a - leak, jwst_flux, rtol=1e-6)
    assert_allclose(0.98 * flux_3a - rf_leak, jwst_rf, rtol=1e-6)
    # The leak peaks at 12.2 micron; its error holds the 1B error and the table's 5%.
    peak = np.argmax(leak)
    assert abs(wavelength_3a[peak] - 12.2) < 0.01
    assert_allclose(error[peak], leak[peak] * np.hypot(0.001, 0.05), rtol=0.02)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("decreasing", "must increase"),
        ("too_large", "must be in \\[0, 1\\)"),
        ("nan", "non-finite"),
        ("missing", "cannot be read"),
    ],
)
def test_malformed_leak_reference_is_named(tmp_path, change, message):
    path = tmp_path / "bad_mrsptcorr.fits"
    if change != "missing":
        reference = spectral_leak_reference()
        table = reference.leakcor_table
        if change == "decreasing":
            table["wavelength"] = table["wavelength"][::-1]
        elif change == "too_large":
            table["frac_leak"][5] = 1.5
        else:
            table["frac_leak"][5] = np.nan
        reference.save(path)
    with pytest.raises(ReferenceFileError, match=f"bad_mrsptcorr.fits.*{message}"):
        load_spectral_leak(path)


def test_simulated_leak_reference_holds_the_simulated_curve(tmp_path):
    path = tmp_path / "mrsptcorr.fits"
    spectral_leak_reference().save(path)
    curve = load_spectral_leak(path)
    # float32 columns, as jwst defines them
    assert_allclose(curve.fraction, default_spectral_leak(curve.wavelength), rtol=1e-4, atol=1e-9)
    assert isinstance(curve, LeakCurve) and curve.fraction.max() == pytest.approx(0.03, rel=1e-3)


def test_bright_dithers_differing_by_residual_fringes_are_kept_and_not_clipped():
    """Errors of 3e-4 of the flux, dithers differing by +-0.3% (their residual fringes have
    different phases): systematics within the tolerance, not corrupted dithers."""
    rng = np.random.default_rng(3)
    wavelength = np.linspace(5.0, 5.7, 1200)
    truth = 0.05 * (wavelength / 5.0) ** -2
    phases = np.array([0.0, 0.4, 0.9, 1.3])[:, None]
    pattern = 0.003 * np.cos(2 * np.pi * (1e4 / wavelength) / 2.9 + phases)
    error = np.full((4, wavelength.size), 3e-4) * truth
    flux = truth * (1 + pattern) + error * rng.standard_normal(error.shape)
    kept = combine_dithers(flux, error, wavelength)
    assert not any(check.excluded for check in kept.checks)
    assert kept.clipped.sum() == 0
    # Without the tolerance the same dithers all look corrupted: the check has teeth.
    strict = combine_dithers(flux, error, wavelength, tolerance=0.0)
    assert sum(check.excluded for check in strict.checks) == 2
    # A corrupted dither (2% scatter) is still found with the tolerance.
    flux[2] = truth * (1 + 0.02 * rng.standard_normal(truth.size))
    found = combine_dithers(flux, error, wavelength)
    assert [check.excluded for check in found.checks] == [False, False, True, False]


def _product(name, spectra):
    """An MRS x1d product holding the given (band, wavelength, flux) spectra."""
    model = datamodels.MRSMultiSpecModel()
    model.meta.exposure.type = "MIR_MRS"
    model.meta.instrument.name = "MIRI"
    model.meta.filename = name
    for band, wavelength, flux in spectra:
        table = np.zeros(wavelength.size, dtype=datamodels.MRSSpecModel().get_dtype("spec_table"))
        table["WAVELENGTH"], table["FLUX"], table["FLUX_ERROR"] = wavelength, flux, 1e-3 * flux
        spec = datamodels.MRSSpecModel(spec_table=table)
        spec.name = band
        model.spec.append(spec)
    return model


def test_combine_step_leak_reference_offline_na_and_override(tmp_path):
    from mirispec_steps import MrsCombineStep
    from mirispec_steps.errors import CrdsUnavailableError

    wavelength_1b = np.linspace(5.66, 6.63, 575)
    wavelength_3a = np.linspace(11.55, 13.47, 440)
    flux_1b, flux_3a = 0.05 * (wavelength_1b / 5) ** -2, 0.05 * (wavelength_3a / 5) ** -2
    products = [
        _product(f"d{index}_x1d.fits", [("1B", wavelength_1b, flux_1b),
                                        ("3A", wavelength_3a, flux_3a)])
        for index in range(2)
    ]  # fmt: skip
    # Offline, no override: stopped before any work, the flag named.
    with pytest.raises(CrdsUnavailableError, match="override_mrsptcorr"):
        MrsCombineStep.call(products, residual_fringe=False)
    skipped = MrsCombineStep.call(products, residual_fringe=False, override_mrsptcorr="N/A")
    assert not skipped.mirispec_combination.instance["spectral_leak"]["applied"]
    reference = tmp_path / "mrsptcorr.fits"
    spectral_leak_reference().save(reference)
    corrected = MrsCombineStep.call(
        products, residual_fringe=False, override_mrsptcorr=str(reference)
    )
    leak, _ = spectral_leak(
        wavelength_3a, wavelength_1b, flux_1b, 1e-3 * flux_1b, load_spectral_leak(reference)
    )
    band_3a = {spec.name: spec.spec_table for spec in corrected.spec}["3A"]
    assert_allclose(band_3a["FLUX"], flux_3a - leak, rtol=1e-9)
    assert np.all(np.isnan(band_3a["RF_FLUX"]))
    assert corrected.mirispec_combination.instance["spectral_leak"]["applied"]
