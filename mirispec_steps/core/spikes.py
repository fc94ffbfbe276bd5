"""Single-pixel spikes of a dispersed detector image, found against the adjacent rows."""

from __future__ import annotations

import numpy as np

__all__ = ["spectral_spikes"]


def spectral_spikes(
    data: np.ndarray,
    variance: np.ndarray,
    valid: np.ndarray,
    sigma: float = 5.0,
    factor: float = 3.0,
) -> np.ndarray:
    """
    Single-pixel spikes (cosmic rays, hot pixels) found against the adjacent rows.

    In an MRS or LRS detector image the dispersion runs along the rows:
    at a fixed column the signal changes little from one row to the next,
    while a cosmic ray hits one pixel. A pixel is a spike when it exceeds
    the mean of its valid neighbours one row above and below by more than
    ``sigma`` standard deviations plus ``factor`` times that mean.

    Parameters
    ----------
    data, variance : ndarray
        ``(..., rows, columns)`` image(s) and variance (leading axes: integrations).
    valid : ndarray
        Usable pixels.
    sigma : float
        Noise threshold.
    factor : float
        Signal threshold: an unresolved emission line peaks at about 2.3
        times its neighbours one row away, so the default 3 keeps lines.

    Returns
    -------
    ndarray
        Boolean spike mask.

    Examples
    --------
    >>> image = np.ones((5, 3)); image[2, 1] = 50.0
    >>> np.argwhere(spectral_spikes(image, np.full((5, 3), 0.01), image > 0))
    array([[2, 1]])
    """
    values = np.where(valid, data, 0.0)
    usable_variance = np.where(valid, variance, 0.0)
    neighbour_sum = np.zeros_like(values)
    neighbour_count = np.zeros(values.shape, dtype=np.int8)
    neighbour_variance = np.zeros_like(values)
    # The rows above and below (the first and last rows have one neighbour).
    for target, source in ((np.s_[..., 1:, :], np.s_[..., :-1, :]),
                           (np.s_[..., :-1, :], np.s_[..., 1:, :])):  # fmt: skip
        neighbour_sum[target] += values[source]
        neighbour_count[target] += valid[source]
        neighbour_variance[target] += usable_variance[source]
    has_neighbours = neighbour_count > 0
    count = np.where(has_neighbours, neighbour_count, 1.0)
    mean = neighbour_sum / count
    spread = np.sqrt(usable_variance + neighbour_variance / count**2)
    excess = values - mean
    return valid & has_neighbours & (excess > sigma * spread + factor * np.abs(mean))
