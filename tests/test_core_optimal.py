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
