"""
LRS optimal extraction with a profile measured from the data, on PSFs the package does not model.

Every accuracy test here simulates with one of the simulator's mismatched
families (``MISMATCHED_FAMILIES``: diffraction, asymmetric, Moffat) and
extracts with the packaged ``psf`` reference (the package's two-Gaussian
model), unless it names an oracle (the true PSF written as the reference).
"""

import logging

import numpy as np
import pytest
from conftest import assert_honest_pulls
from scipy import linalg
from stdatamodels.jwst import datamodels

from mirispec_steps import LrsOptimalExtractStep
from mirispec_steps.errors import InputDataError
from mirispec_steps.lrs.core.empirical_profile import (
    ProfileBasis,
    ProfileFitter,
    ProfileLayout,
    _band_of_inverse,
    _offset_basis,
    fit_profile_correction,
)
from mirispec_steps.simulate import (
    MISMATCHED_FAMILIES,
    DiffractionLrsPsf,
    LrsPsf,
    default_spectrum,
    simulate_lrs,
)
from mirispec_steps.simulate.psf import write_lrs_psf_reference

#: The bar for noise-free data, 5-12 um: |median| and the 10th..90th percentiles.
MEDIAN_BOUND = 0.003
SPREAD_BOUND = 0.005
#: And no stretch of 0.5 um off by more than this (median of its rows): LRS disperses
#: unevenly, so the percentiles hardly see the few rows of 5-6 um.
STRETCH_BOUND = 0.01


def worst_stretch(x1d, truth, width=0.5, low=5.0, high=12.0):
    """Largest |median FLUX / truth - 1| over stretches of ``width`` um (first integration)."""
    wavelength = np.asarray(x1d.spec[0].spec_table["WAVELENGTH"], dtype=float)
    wavelength = np.atleast_2d(wavelength)[0]
    deviation = flux_over_truth(x1d, truth, low, high)[: np.count_nonzero(
        (wavelength > low) & (wavelength < high))]  # fmt: skip
    inside = wavelength[(wavelength > low) & (wavelength < high)]
    medians = [np.median(deviation[(inside >= start) & (inside < start + width)])
               for start in np.arange(low, high, width)
               if np.any((inside >= start) & (inside < start + width))]  # fmt: skip
    return float(np.max(np.abs(medians)))


def flux_over_truth(x1d, truth, low=5.0, high=12.0):
    """FLUX / truth - 1 over ``low``-``high`` um (all integrations for a time series)."""
    table = x1d.spec[0].spec_table
    wavelength = np.atleast_2d(np.asarray(table["WAVELENGTH"], dtype=float))
    flux = np.atleast_2d(np.asarray(table["FLUX"], dtype=float))
    true_flux = np.atleast_2d(np.asarray(truth.flux, dtype=float))
    order = np.argsort(truth.wavelength)
    ratios = []
    for index in range(flux.shape[0]):
        row_wave = wavelength[min(index, wavelength.shape[0] - 1)]
        expected = np.interp(
            row_wave, truth.wavelength[order], true_flux[min(index, len(true_flux) - 1)][order]
        )
        select = (row_wave > low) & (row_wave < high)
        ratios.append(flux[index][select] / expected[select] - 1)
    return np.concatenate(ratios)


# ---------------------------------------------------------------- the simulator's families


@pytest.mark.parametrize("name", sorted(MISMATCHED_FAMILIES))
def test_families_are_normalised_and_not_the_package_model(name):
    family = MISMATCHED_FAMILIES[name]()
    offsets = np.arange(-45.0, 46.0)
    for wavelength in (5.0, 8.0, 12.0):
        for phase in (0.0, 0.3, 0.5):
            total = family.pixel_fractions(offsets + phase, wavelength).sum()
            assert total == pytest.approx(1.0, abs=2e-4)
        ours = family.pixel_fractions(offsets, wavelength)
        model = LrsPsf().pixel_fractions(offsets, wavelength)
        # a different shape at every wavelength, not a rescaled copy
        assert np.max(np.abs(ours - model)) > 0.01 * model.max()


# ---------------------------------------------------------------- the core fit


def tilted_rows(reference_sigma, true_sigma, background, n_rows=120, n_columns=41):
    """Rows of a Gaussian source on a tilted trace: data, variance, offsets, reference profile."""
    columns = np.arange(n_columns, dtype=float)
    trace = 20.0 + np.linspace(-0.7, 0.7, n_rows)  # the tilt samples sub-pixel phases
    offsets = columns[None, :] - trace[:, None]

    def pixel_gaussian(sigma):
        from scipy.special import ndtr

        return ndtr((offsets + 0.5) / sigma) - ndtr((offsets - 0.5) / sigma)

    flux = 1000.0 * (1.0 + 0.5 * np.sin(np.linspace(0, 3, n_rows)))
    data = flux[:, None] * pixel_gaussian(true_sigma) + background
    variance = np.full(data.shape, 1.0)
    return (
        data,
        variance,
        offsets,
        pixel_gaussian(reference_sigma),
        pixel_gaussian(true_sigma),
        flux,
    )


def corrected_profile(data, variance, offsets, reference, flux, background_order=1):
    layout = ProfileLayout(half_width=15.0, n_row_intervals=4)
    rho = np.linspace(-1, 1, data.shape[0])
    derivative = np.gradient(reference, axis=1)
    basis = ProfileBasis.at(layout, [offsets], [[reference, derivative]], rho)
    background = np.vander(np.linspace(-1, 1, data.shape[1]), background_order + 1,
                           increasing=True).T  # fmt: skip
    correction = fit_profile_correction(
        data, variance, np.ones(data.shape, bool), basis, background, layout
    )
    profile = reference + correction.evaluate(basis)
    return profile / profile.sum(axis=1, keepdims=True)


def test_core_fit_recovers_a_wider_profile_whatever_the_background():
    """Reference sigma 1.1 px, truth 1.4 px, a sloped sky per row: the true shape comes back."""
    rng = np.random.default_rng(2)
    sky = rng.uniform(5, 50, (120, 1)) + rng.uniform(-1, 1, (120, 1)) * np.arange(41)[None, :]
    data, variance, offsets, reference, truth, flux = tilted_rows(1.1, 1.4, sky)
    profile = corrected_profile(data, variance, offsets, reference, flux)
    expected = truth / truth.sum(axis=1, keepdims=True)
    assert np.max(np.abs(profile - expected)) < 2e-3 * expected.max()
    # the reference alone is far off, so the test can fail
    assert np.max(np.abs(reference / reference.sum(1, keepdims=True) - expected)) > 0.05
    # the sky never leaks into the profile: another sky gives the same profile
    other = corrected_profile(data - sky + 3.0 * sky[::-1], variance, offsets, reference, flux)
    np.testing.assert_allclose(other, profile, atol=1e-6 * expected.max())


def noisy_tilted_rows():
    """The tilted-trace scene (reference 1.1 px, truth 1.4 px) with unit noise, and its basis."""
    rng = np.random.default_rng(5)
    data, variance, offsets, reference, truth, flux = tilted_rows(1.1, 1.4, 20.0)
    data = data + rng.normal(0.0, 1.0, data.shape)
    layout = ProfileLayout(half_width=15.0, n_row_intervals=4)
    rho = np.linspace(-1, 1, data.shape[0])
    basis = ProfileBasis.at(layout, [offsets], [[reference, np.gradient(reference, axis=1)]], rho)
    return data, variance, reference, truth, flux, layout, basis


def test_alternating_and_joint_fits_reach_the_same_profile():
    """Variable projection converges in a few steps to what many alternations approach."""
    data, variance, reference, truth, flux, layout, basis = noisy_tilted_rows()
    prior = np.full((layout.offset_knots().size - 4, layout.n_row_intervals + 3), 0.3)

    def fitter():
        return ProfileFitter(data, variance, np.ones(data.shape, bool), basis,
                             np.ones((1, data.shape[1])), layout, prior, 1e-4)  # fmt: skip

    def normalised(coefficients):
        correction = np.matmul(basis.offsets[0], (basis.rows @ coefficients.T)[..., None])
        profile = reference + correction[..., 0]
        return profile / profile.sum(axis=1, keepdims=True)

    joint = fitter().fit(0.0, max_iterations=8, tolerance=1e-3)
    assert joint.iterations < 8  # converged, not stopped
    # Alternation: the correction with the fluxes held, then the fluxes, many times.
    alternating = fitter()
    coefficients, row = np.zeros_like(joint.coefficients), alternating.start()
    for _ in range(80):
        coefficients, _ = alternating.step(coefficients, row, project=False)
        row = alternating.amplitudes(coefficients)
    expected = normalised(coefficients)
    np.testing.assert_allclose(normalised(joint.coefficients), expected,
                               atol=1e-3 * expected.max())  # fmt: skip
    truth = truth / truth.sum(axis=1, keepdims=True)
    assert np.max(np.abs(normalised(joint.coefficients) - truth)) < 0.01 * truth.max()


def test_growing_steps_are_damped_not_followed():
    """Without priors, splines that nearly rescale the profile are undecided: no blow-up."""
    data, variance, reference, truth, flux, layout, basis = noisy_tilted_rows()
    fitter = ProfileFitter(data, variance, np.ones(data.shape, bool), basis,
                           np.ones((1, data.shape[1])), layout)  # fmt: skip
    solution = fitter.fit(0.0, max_iterations=8, tolerance=0.05)
    # Noise moves single rows by ~0.3%; undamped steps moved them by tens of percent.
    assert np.max(np.abs(solution.flux / flux - 1)) < 0.02
    assert abs(np.median(solution.flux / flux - 1)) < 0.002
    profile = reference + solution.evaluate(basis)
    profile /= profile.sum(axis=1, keepdims=True)
    truth = truth / truth.sum(axis=1, keepdims=True)
    assert np.max(np.abs(profile - truth)) < 0.02 * truth.max()


def test_flux_variance_from_the_band_of_the_inverse_is_exact():
    """Takahashi's recursion gives the blocks of N^-1 a dense inverse gives."""
    rng = np.random.default_rng(3)
    n_offset, n_row = 5, 7
    size = n_offset * n_row
    block = np.arange(size) // n_offset
    near = np.abs(block[:, None] - block[None, :]) <= 3
    matrix = np.where(near, rng.normal(size=(size, size)), 0.0)
    matrix = np.where(near, matrix @ matrix.T, 0.0) + 40.0 * np.eye(size)
    bandwidth = 4 * n_offset - 1
    band = np.zeros((bandwidth + 1, size))
    for offset in range(bandwidth + 1):
        band[bandwidth - offset, offset:] = np.diagonal(matrix, offset)
    inverse = _band_of_inverse(linalg.cholesky_banded(band), n_offset, n_row)
    dense = np.linalg.inv(matrix)
    np.testing.assert_allclose(inverse[near], dense[near], atol=1e-14 * np.abs(dense).max())
    assert not inverse[~near].any()  # nothing beyond the band is claimed


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_bsplines_equal_scipys(seed):
    from scipy.interpolate import BSpline

    layout = ProfileLayout(half_width=20.0)
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-25.0, 25.0, (50, 47))
    knots, padded = layout.offset_knots(), layout.padded_knots()
    flat = offsets.ravel()
    inside = (flat > knots[0]) & (flat < knots[-1])
    expected = np.zeros((flat.size, knots.size - 4))
    design = BSpline.design_matrix(flat[inside], padded, 3).toarray()
    expected[inside] = design[:, 3 : 3 + knots.size - 4]
    np.testing.assert_allclose(_offset_basis(offsets, layout).reshape(flat.size, -1), expected,
                               atol=1e-15)  # fmt: skip


def test_row_coordinate_follows_the_wavelength():
    from mirispec_steps.lrs.profile import _row_coordinate

    wavelength = np.concatenate([[np.nan], 14.0 - np.linspace(0, 9, 99) ** 1.2 / 1.2])
    rho, ends = _row_coordinate(wavelength)
    assert rho[0] == rho[1]  # a row without a wavelength takes its neighbour's
    np.testing.assert_allclose(np.diff(rho[1:]) / np.diff(wavelength[1:]),
                               2.0 / (ends[1] - ends[0]))  # fmt: skip
    folded = np.concatenate([np.linspace(5, 10, 50), np.linspace(10, 6, 50)])
    np.testing.assert_array_equal(_row_coordinate(folded)[0], np.linspace(-1, 1, 100))


# ---------------------------------------------------------------- accuracy on mismatched PSFs

CASES = {
    "cal": {},
    "cal nod pair": {"nod_subtracted": True},
    "calints slitless": {"n_integrations": 4},
    "cal real geometry": {"real": True},
    "cal real geometry nod pair": {"real": True, "nod_subtracted": True},
}


@pytest.mark.parametrize("family", sorted(MISMATCHED_FAMILIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_noise_free_accuracy_on_mismatched_psfs(case, family, real_reference_dir):
    """Simulated with the family, extracted with the packaged two-Gaussian reference (defaults)."""
    options = dict(CASES[case])
    if options.pop("real", False):
        options["reference_dir"] = real_reference_dir
    kind = "calints" if "calints" in case else "cal"
    sim = simulate_lrs(kind, noise=False, seed=3, psf=MISMATCHED_FAMILIES[family](), **options)
    measured = LrsOptimalExtractStep.call(sim.model)
    assert measured.mirispec_profile.profile == "empirical"
    deviation = flux_over_truth(measured, sim.truth)
    reference_only = flux_over_truth(LrsOptimalExtractStep.call(sim.model, profile="psf"),
                                     sim.truth)  # fmt: skip
    low, median, high = np.percentile(deviation, [10, 50, 90])
    stretch = worst_stretch(measured, sim.truth)
    print(f"{case}, {family}: median {median:+.4f}, p10..p90 {low:+.4f}..{high:+.4f}, "
          f"worst 0.5 um {stretch:.4f}; reference profile: median "
          f"{np.median(reference_only):+.4f}")  # fmt: skip
    assert abs(median) <= MEDIAN_BOUND
    assert -SPREAD_BOUND <= low and high <= SPREAD_BOUND
    assert stretch <= STRETCH_BOUND
    assert np.median(np.abs(deviation)) < np.median(np.abs(reference_only))


def test_the_references_kink_is_followed(tmp_path):
    """
    The packaged reference's width law has a kink at 6 um (its 1.8 px floor), the data's not.

    Simulated with the diffraction family, extracted with the packaged reference: the
    correction's row knots meet at the kink, so the rows around it are right too (with
    smooth knots they were up to 0.9% off).
    """
    from mirispec_steps.lrs.references import load_lrs_psf
    from mirispec_steps.references import packaged_reference

    packaged = load_lrs_psf(packaged_reference("mirispec_miri_lrs_psf.fits"))
    assert packaged.width_kinks == pytest.approx([6.0])
    family = MISMATCHED_FAMILIES["diffraction"]()
    smooth = write_lrs_psf_reference(tmp_path / "smooth.fits", family)
    assert load_lrs_psf(str(smooth)).width_kinks == []
    sim = simulate_lrs("cal", noise=False, seed=3, psf=family)
    x1d = LrsOptimalExtractStep.call(sim.model)
    wavelength = np.asarray(x1d.spec[0].spec_table["WAVELENGTH"])
    deviation = flux_over_truth(x1d, sim.truth)
    inside = wavelength[(wavelength > 5) & (wavelength < 12)]
    near = (inside > 5.8) & (inside < 6.2)
    assert near.sum() >= 5
    assert np.max(np.abs(deviation[near])) < 0.003


def test_oracle_reference_is_exact(tmp_path):
    """With the true PSF as the reference both profiles are right: the machinery adds no bias."""
    family = MISMATCHED_FAMILIES["moffat"]()
    oracle = write_lrs_psf_reference(tmp_path / "oracle_psf.fits", family)
    sim = simulate_lrs("cal", noise=False, seed=3, psf=family)
    for profile in ("psf", "empirical"):
        x1d = LrsOptimalExtractStep.call(sim.model, profile=profile, override_psf=str(oracle))
        assert np.median(np.abs(flux_over_truth(x1d, sim.truth))) < 2e-4


# ---------------------------------------------------------------- noise


def draws(family, scale, n_draws, **parameters):
    """Relative errors, pulls and the profile chosen, over noisy draws of one scene."""
    relative, pulls, kinds = [], [], set()
    for seed in range(n_draws):
        sim = simulate_lrs("cal", seed=500 + seed, psf=family,
                           spectrum=lambda w: scale * default_spectrum(w))  # fmt: skip
        x1d = LrsOptimalExtractStep.call(sim.model, **parameters)
        kinds.add(x1d.mirispec_profile.profile)
        table = x1d.spec[0].spec_table
        deviation = flux_over_truth(x1d, sim.truth)
        relative.append(deviation)
        wavelength = np.asarray(table["WAVELENGTH"])
        select = (wavelength > 5) & (wavelength < 12)
        error = np.asarray(table["FLUX_ERROR"])[select] / np.asarray(table["FLUX"])[select]
        pulls.append(deviation / error / (1 + deviation))
    return np.concatenate(relative), np.concatenate(pulls), kinds


def test_bright_source_pulls():
    """Diffraction PSF, median row S/N ~50: the measured profile's error bars hold."""
    _, pulls, kinds = draws(DiffractionLrsPsf(), 0.001, 8)
    assert kinds == {"empirical"}
    assert pulls.size > 2000
    assert 0.95 <= np.std(pulls) <= 1.05
    assert_honest_pulls(pulls, systematic=0.15, label="measured profile, S/N ~50")


def test_faint_source_uses_the_reference_and_adds_no_noise(tmp_path):
    """Read-noise-limited (row S/N ~5): auto takes the reference; scatter within 5% of an oracle
    that knows the true PSF."""
    family = DiffractionLrsPsf()
    oracle = write_lrs_psf_reference(tmp_path / "oracle_psf.fits", family)
    relative, _, kinds = draws(family, 0.0001, 8)
    assert kinds == {"psf"}
    oracle_relative, _, _ = draws(family, 0.0001, 8, profile="psf", override_psf=str(oracle))
    assert np.std(relative) <= 1.05 * np.std(oracle_relative)


# ---------------------------------------------------------------- choice, record, refusals


@pytest.fixture(scope="module")
def faint_cal():
    return simulate_lrs("cal", seed=7, psf=DiffractionLrsPsf(),
                        spectrum=lambda w: 0.0002 * default_spectrum(w))  # fmt: skip


def test_auto_says_why_it_took_the_reference(faint_cal, caplog):
    with caplog.at_level(logging.WARNING, logger="mirispec_steps"):
        x1d = LrsOptimalExtractStep.call(faint_cal.model)
    record = x1d.mirispec_profile
    assert record.profile == "psf"
    assert "an empirical profile needs S/N >= 20" in record.reason
    assert any("PSF reference's profile" in r.message for r in caplog.records)


def test_forced_empirical_on_a_faint_source_is_refused(faint_cal):
    with pytest.raises(InputDataError, match="too faint or too short to measure its profile"):
        LrsOptimalExtractStep.call(faint_cal.model, profile="empirical")


def test_nod_pair_without_its_negative_trace_keeps_the_reference():
    sim = simulate_lrs("cal", noise=False, seed=7, nod_subtracted=True, psf=DiffractionLrsPsf())
    x1d = LrsOptimalExtractStep.call(sim.model, model_nod_pair=False)
    assert x1d.mirispec_profile.profile == "psf"
    with pytest.raises(InputDataError, match="negative trace"):
        LrsOptimalExtractStep.call(sim.model, model_nod_pair=False, profile="empirical")


def test_the_product_says_which_profile(tmp_path):
    sim = simulate_lrs("cal", noise=False, seed=3, psf=DiffractionLrsPsf())
    x1d = LrsOptimalExtractStep.call(sim.model)
    path = tmp_path / "x1d.fits"
    x1d.save(path)
    from astropy.io import fits

    assert fits.getheader(path)["OPTPROF"] == "EMPIRICAL"
    with datamodels.open(path) as reopened:
        record = reopened.mirispec_profile
        assert record.profile == "empirical"
        assert record.median_snr > 100
        assert 1 <= record.iterations <= 4
        # the reference's share of the light inside the fitted columns (the flux scale)
        assert 0.99 < record.min_window_fraction <= 1.0
