"""Gaussian widths and intervals shared by the PSF models, the fits and the simulator."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

__all__ = ["FWHM_TO_SIGMA", "gaussian_interval"]

#: Standard deviation of a Gaussian per unit of full width at half maximum.
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def gaussian_interval(
    low: np.ndarray,
    high: np.ndarray,
    centre: float | np.ndarray,
    sigma: float | np.ndarray,
    exact_tails: bool = True,
) -> np.ndarray:
    """
    Probability of a Gaussian ``N(centre, sigma)`` between ``low`` and ``high``.

    Parameters
    ----------
    low, high : ndarray
        Interval edges.
    centre, sigma : float or ndarray
        Gaussian centre and standard deviation.
    exact_tails : bool
        Keep full relative precision far right of the centre, where
        ``1 - ndtr`` loses digits, by mirroring those intervals to the left.
        Fits that evaluate this many times can switch it off: the loss is
        in relative, not absolute, precision.

    Returns
    -------
    ndarray
        The probabilities.

    Examples
    --------
    >>> round(float(gaussian_interval(-1.0, 1.0, 0.0, 1.0)), 4)
    0.6827
    """
    lower = (np.asarray(low) - centre) / sigma
    upper = (np.asarray(high) - centre) / sigma
    if not exact_tails:
        return ndtr(upper) - ndtr(lower)
    mirror = lower > 0
    return ndtr(np.where(mirror, -lower, upper)) - ndtr(np.where(mirror, -upper, lower))
