"""Bad-pixel repair of the box extraction: the vectorised repair equals a plain row loop.

The reference below is the straightforward version (one integration, one
row at a time) that the package used before the repair was vectorised over
integrations and rows.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from mirispec_steps.lrs.core.box import repair_from_profile


def plain_repair(data, var_rnoise, var_poisson, var_flat, aperture, half_window=4,
                 max_missing_fraction=0.5):  # fmt: skip
    """One image, row by row (the reference)."""
    n_disp = data.shape[0]
    invalid = ~np.isfinite(data) & (aperture > 0)
    repaired = [array.copy() for array in (data, var_rnoise, var_poisson, var_flat)]
    replaced = np.zeros_like(invalid)
    fraction = np.zeros(n_disp)
    for row in np.flatnonzero(invalid.any(axis=1)):
        columns = aperture[row] > 0
        good = columns & ~invalid[row]
        if not good.any():
            continue
        low, high = max(0, row - half_window), min(n_disp, row + half_window + 1)
        neighbours = [r for r in range(low, high) if r != row]
        block = data[neighbours][:, columns]
        usable = np.all(np.isfinite(block), axis=1)
        if usable.sum() < 2:
            continue
        block = block[usable]
        good_in_columns = good[columns]
        norm = block[:, good_in_columns].sum(axis=1)
        ok = norm > 0
        if ok.sum() < 2:
            continue
        profile = np.median(block[ok] / norm[ok, None], axis=0)
        amplitude = np.sum(data[row, good])
        missing = ~good_in_columns
        weights_in_columns = aperture[row, columns]
        estimate = amplitude * profile
        total = np.sum(weights_in_columns * np.where(missing, estimate, data[row, columns]))
        replaced_flux = np.sum(weights_in_columns[missing] * estimate[missing])
        if total <= 0 or replaced_flux / total > max_missing_fraction:
            continue
        target_columns = np.flatnonzero(columns)[missing]
        repaired[0][row, target_columns] = estimate[missing]
        for array, source in zip(repaired[1:], (var_rnoise, var_poisson, var_flat), strict=True):
            neighbour_var = source[neighbours][:, target_columns][usable]
            array[row, target_columns] = np.median(neighbour_var, axis=0)
        replaced[row, target_columns] = True
        fraction[row] = replaced_flux / total
    return repaired, fraction, replaced


def damaged_series(seed, n_int=6, n_disp=60, n_xdisp=14, bad_fraction=0.03, nan_variance=False):
    """A tilted Gaussian trace with noise, bad pixels, and a tilted fractional aperture."""
    rng = np.random.default_rng(seed)
    rows = np.arange(n_disp)[:, None]
    columns = np.arange(n_xdisp)[None, :]
    centre = 6.0 + 0.03 * rows
    profile = np.exp(-0.5 * ((columns - centre) / 1.2) ** 2)
    data = 100 * profile[None] + rng.normal(0, 1.0, (n_int, n_disp, n_xdisp))
    variances = [rng.uniform(0.5, 2.0, data.shape) for _ in range(3)]
    bad = rng.random(data.shape) < bad_fraction
    bad[0, 0, 5:8] = True  # first row: neighbours on one side only
    bad[-1, -1, 6] = True  # last row
    bad[n_int // 2, 30, 3:10] = True  # most of the row missing: left alone
    data[bad] = np.nan
    for variance in variances:
        variance[bad] = np.nan
    if nan_variance:
        variances[1][3, 20, 6] = np.nan  # a neighbour's variance is NaN, its data is not
        data[3, 21, 6] = np.nan
    lower, upper = centre - 3.3, centre + 3.3
    aperture = np.clip(np.minimum(columns + 0.5, upper) - np.maximum(columns - 0.5, lower), 0, 1)
    return data, variances, aperture


@pytest.mark.parametrize(
    ("seed", "bad_fraction", "nan_variance", "half_window"),
    [(1, 0.01, False, 4), (2, 0.05, False, 4), (3, 0.15, True, 4), (4, 0.05, True, 2)],
)
def test_vectorised_repair_equals_the_plain_loop(seed, bad_fraction, nan_variance, half_window):
    data, variances, aperture = damaged_series(
        seed, bad_fraction=bad_fraction, nan_variance=nan_variance
    )
    result = repair_from_profile(data, *variances, aperture, half_window=half_window)
    n_repaired = 0
    for integration in range(data.shape[0]):
        expected, fraction, replaced = plain_repair(
            data[integration], *(v[integration] for v in variances), aperture,
            half_window=half_window,
        )  # fmt: skip
        got = (result.data, result.var_rnoise, result.var_poisson, result.var_flat)
        for array, reference in zip(got, expected, strict=True):
            assert_allclose(array[integration], reference, rtol=1e-12, atol=0, equal_nan=True)
        assert_allclose(result.replaced_fraction[integration], fraction, rtol=1e-12, atol=1e-15)
        assert_array_equal(result.replaced[integration], replaced)
        n_repaired += int(replaced.sum())
    assert n_repaired > 0  # the cases do exercise the repair
    assert np.count_nonzero(result.replaced_fraction) < np.count_nonzero(
        np.any(~np.isfinite(data) & (aperture > 0), axis=2)
    )  # ... and the rows it must leave alone


def test_one_image_keeps_its_shape():
    data, variances, aperture = damaged_series(5, n_int=1, bad_fraction=0.05)
    result = repair_from_profile(data[0], *(v[0] for v in variances), aperture)
    assert result.data.shape == data.shape[1:]
    assert result.replaced_fraction.shape == (data.shape[1],)
    expected, fraction, _ = plain_repair(data[0], *(v[0] for v in variances), aperture)
    assert_allclose(result.data, expected[0], rtol=1e-12, equal_nan=True)
    assert_allclose(result.replaced_fraction, fraction, rtol=1e-12, atol=1e-15)


def test_repair_leaves_the_input_alone():
    data, variances, aperture = damaged_series(6)
    before = [array.copy() for array in (data, *variances)]
    repair_from_profile(data, *variances, aperture)
    for array, copy in zip((data, *variances), before, strict=True):
        assert_array_equal(array, copy)
