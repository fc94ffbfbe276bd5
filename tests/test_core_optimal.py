"""Core optimal-extraction solvers on analytic Gaussian rows (no datamodels)."""

import numpy as np
import pytest
from conftest import assert_honest_pulls
from numpy.testing import assert_allclose

from mirispec_steps.core.optimal import fit_rows, fit_series, polynomial_basis

N_ROWS, N_PIXELS = 30, 25


def gaussian_basis(n_rows=N_ROWS, n_pixels=N_PIXELS, order=1):
    """(R, P, X): a unit-sum Gaussian profile per row plus a background polynomial."""
    x = np.arange(n_pixels)
    centre = 12.0 + 0.03 * np.arange(n_rows)
    profile = np.exp(-0.5 * ((x[None, :] - centre[:, None]) / 1.6) ** 2)
    profile /= profile.sum(axis=1, keepdims=True)
    background = np.broadcast_to(polynomial_basis(n_pixels, order), (n_rows, order + 1, n_pixels))
    return np.concatenate([profile[:, None, :], background], axis=1)


def series(n_int, seed, flux=5000.0, sky=20.0, read_noise=3.0):
    """Integrations of a constant source with Poisson + read noise, and their VAR arrays."""
    rng = np.random.default_rng(seed)
    basis = gaussian_basis()
    truth = flux * basis[:, 0] + sky + 2.0 * basis[:, 2]
    expected = np.broadcast_to(truth, (n_int, N_ROWS, N_PIXELS))
    data = rng.poisson(expected) + rng.normal(0, read_noise, expected.shape)
    var_poisson = np.clip(data, 0, None).astype(float)
    var_rnoise = np.full(expected.shape, read_noise**2)
    var_flat = np.zeros(expected.shape)
    flat = [a.reshape(-1, N_PIXELS) for a in (data, var_rnoise, var_poisson, var_flat)]
    return basis, truth, flat


@pytest.mark.parametrize("with_defects", [False, True])
def test_shared_weights_equal_per_row_fit_with_the_same_variance(with_defects):
    n_int = 8
    basis, truth, (data, var_rnoise, var_poisson, var_flat) = series(n_int, seed=1)
    valid = np.ones(data.shape, dtype=bool)
    if with_defects:
        valid[5, 12] = False  # a flagged pixel in one integration
        data[40, 13] += 5000.0  # a cosmic ray in another
    var_poisson_model = truth  # per integration, Poisson variance = expected counts
    shared = fit_series(
        data, var_rnoise, var_poisson, var_flat, valid, basis, 1, var_poisson_model
    ).expand()
    per_row = fit_rows(
        data,
        var_rnoise,
        var_poisson,
        var_flat,
        valid,
        basis,
        1,
        n_rows_per_block=N_ROWS,
        var_poisson_model=np.tile(var_poisson_model, (n_int, 1)),
    )
    assert_allclose(shared.coefficients, per_row.coefficients, rtol=1e-9, atol=1e-9)
    assert_allclose(shared.pixel_weights, per_row.pixel_weights, rtol=1e-9, atol=1e-15)
    assert np.array_equal(shared.used, per_row.used)
    assert np.array_equal(shared.rejected, per_row.rejected)
    if with_defects:
        assert shared.rejected[40, 13] and not shared.used[5, 12]


def test_shared_weights_pulls():
    """Flux errors implied by the shared weights are honest over many integrations."""
    n_int = 400
    basis, truth, (data, var_rnoise, var_poisson, var_flat) = series(n_int, seed=2, flux=800.0)
    valid = np.ones(data.shape, dtype=bool)
    fit = fit_series(data, var_rnoise, var_poisson, var_flat, valid, basis, 1, truth).expand()
    weights = fit.pixel_weights[:, 0, :]
    error = np.sqrt(np.sum(weights**2 * (var_rnoise + fit.var_poisson_model), axis=1))
    pull = (fit.coefficients[:, 0] - 800.0) / error
    assert_honest_pulls(pull)


def _imperfect_profile_rows(case, n_rows=40, flux=1.0e7, seed=3):
    """
    Rows of a bright source whose true profile is not the model's, and that model.

    ``wings``: the core 3% wider than the model's and wings three times the model's at a
    thousandth of the peak (a wing law the model lacks). ``narrow``: a core of 0.45 pixel
    (fewer than three pixels above a quarter of the peak: too few for the robust amplitude)
    4% wider than the model's. ``ring``: a ring the model lacks, 3% of the peak where the
    model holds about 1% (a diffraction ring under a smooth model: beyond what the
    tolerance law allows, only the misfit the data show can tell it from hits).
    """
    x = np.arange(N_PIXELS, dtype=float)
    centre = 12.0 + 0.02 * np.arange(n_rows)[:, None]

    def profile(sigma, wing):
        core = np.exp(-0.5 * ((x - centre) / sigma) ** 2)
        shape = core + wing * np.exp(-np.abs(x - centre) / 6.0)
        return shape / shape.sum(axis=1, keepdims=True)

    if case == "wings":
        model, truth = profile(1.6, 1e-3), profile(1.6 * 1.03, 3e-3)
    elif case == "ring":
        model = profile(1.6, 1e-3)
        ring = np.exp(-0.5 * ((np.abs(x - centre) - 5.0) / 0.6) ** 2)
        truth = model + 0.03 * model.max(axis=1, keepdims=True) * ring
        truth /= truth.sum(axis=1, keepdims=True)
    else:
        model, truth = profile(0.45, 0.0), profile(0.45 * 1.04, 0.0)
    rng = np.random.default_rng(seed)
    expected = flux * truth + 50.0
    data = rng.poisson(expected) + rng.normal(0.0, 5.0, expected.shape)
    variances = (np.full(data.shape, 25.0), np.clip(data, 0, None).astype(float),
                 np.zeros(data.shape))  # fmt: skip
    basis = np.stack([model, np.ones_like(model)], axis=1)
    return data, variances, basis


def test_outliers_are_judged_on_the_source_alone():
    """
    Exact profile, a bright source (peak 12k) over a background of 2000 fitted as a basis
    term: judged against the profile's own misfit, no pixel is an outlier, and a hit of 0.3 of
    the peak beside the core (one row in eight) is. The hit-proof source model is compared
    with the data less the fitted background; compared with the data, every pixel exceeded it
    by the background, and each row lost its worst pixels, eight of them (320 in all).
    """
    x = np.arange(31)
    profile = np.exp(-0.5 * ((x - 15.0) / 1.6) ** 2)
    profile = np.tile(profile / profile.sum(), (40, 1))
    rng = np.random.default_rng(0)
    data = rng.poisson(1e5 * profile + 2000.0) + rng.normal(0.0, 5.0, profile.shape)
    var_rnoise, var_poisson = np.full(data.shape, 25.0), np.clip(data, 0, None).astype(float)
    var_flat, valid = np.zeros(data.shape), np.ones(data.shape, dtype=bool)
    basis = np.stack([profile, np.ones_like(profile)], axis=1)
    fit = fit_rows(data, var_rnoise, var_poisson, var_flat, valid, basis, 1, 5.0,
                   measure_misfit=True)  # fmt: skip
    assert not fit.rejected.any(), int(fit.rejected.sum())
    rows = np.arange(0, data.shape[0], 8)
    hit = data.copy()
    hit[rows, 17] += 0.3 * data[rows].max(axis=1)
    fit = fit_rows(hit, var_rnoise, var_poisson, var_flat, valid, basis, 1, 5.0,
                   measure_misfit=True)  # fmt: skip
    assert fit.rejected[rows, 17].all()
    assert fit.rejected.sum() == rows.size


@pytest.mark.parametrize("case", ["wings", "narrow", "ring"])
def test_an_imperfect_profile_is_no_outlier_but_a_hit_is(case):
    """Matched noise, mismatched profile (the point): with a model tolerance of 5% at the
    peak and the misfit the rows show, no pixel of a profile wrong by 3-4% in its core, 3x in
    its faint wings or by a ring is an outlier; a cosmic ray of 0.3 of the peak beside the
    core still is, in every row it hits (one in eight: a misfit in most rows is the
    profile's, whatever its cause)."""
    data, (var_rnoise, var_poisson, var_flat), basis = _imperfect_profile_rows(case)
    valid = np.ones(data.shape, dtype=bool)
    fit = fit_rows(data, var_rnoise, var_poisson, var_flat, valid, basis, 1, 5.0,
                   model_tolerance=0.05)  # fmt: skip
    assert not fit.rejected.any(), np.argwhere(fit.rejected)[:5]
    hit = data.copy()
    rows = np.arange(0, data.shape[0], 8)
    column = np.argmax(basis[rows, 0], axis=1) + 2
    hit[rows, column] += 0.3 * data[rows].max(axis=1)
    fit = fit_rows(hit, var_rnoise, var_poisson, var_flat, valid, basis, 1, 5.0,
                   model_tolerance=0.05)  # fmt: skip
    assert fit.rejected[rows, column].all()
    assert fit.rejected.sum() == rows.size
