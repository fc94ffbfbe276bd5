"""Warning-free NaN statistics equal NumPy's (they replace nanmean/nanmedian in threads)."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from mirispec_steps.core.robust import masked_median, nan_mean, nan_median


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("nan_fraction", [0.0, 0.3, 0.9])
def test_nan_statistics_equal_numpy_and_do_not_warn(axis, nan_fraction):
    rng = np.random.default_rng(int(nan_fraction * 10) + axis)
    values = rng.normal(size=(7, 6, 5))
    values[rng.random(values.shape) < nan_fraction] = np.nan
    values[0, 0, :] = np.nan  # an all-NaN slice along the last axis
    values[:, 1, 1] = np.nan  # ... and along the first
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mean, median = nan_mean(values, axis), nan_median(values, axis)
    assert not caught
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert_array_equal(mean, np.nanmean(values, axis=axis))
        assert_array_equal(median, np.nanmedian(values, axis=axis))


def test_masked_median_uses_only_the_masked_values():
    values = np.array([[4.0, 1.0, 9.0, 2.0], [np.nan, 3.0, 5.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    mask = np.array([[True, True, False, True], [True, True, True, False], [False] * 4])
    result = masked_median(values, mask)
    assert result[0] == 2.0
    assert np.isnan(result[1])  # a NaN among the used values, as np.median
    assert np.isnan(result[2])  # nothing to use
