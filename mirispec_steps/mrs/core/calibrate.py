"""Slope-image arithmetic in variance space: background combination and calibration factors.

Every operation keeps the three variance components of jwst's products
(``VAR_POISSON``, ``VAR_RNOISE``, ``VAR_FLAT``) separately and transforms
them exactly: a difference adds variances, a multiplicative factor scales
them by its square. No variance is ever derived from a relative error
(``err / data``), which is undefined for the near-zero signals left after
background subtraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirispec_steps.core.robust import nan_mean, nan_median

__all__ = ["VarianceImage", "combine_backgrounds", "scale_image"]


@dataclass
class VarianceImage:
    """
    A slope or surface-brightness image with its variance components.

    Attributes
    ----------
    data : ndarray
        Values.
    var_poisson, var_rnoise, var_flat : ndarray
        Variance components, same shape as ``data``.
    valid : ndarray
        Boolean mask of usable pixels.
    """

    data: np.ndarray
    var_poisson: np.ndarray
    var_rnoise: np.ndarray
    var_flat: np.ndarray
    valid: np.ndarray

    @property
    def err(self) -> np.ndarray:
        """Total uncertainty ``sqrt(var_poisson + var_rnoise + var_flat)``."""
        return np.sqrt(self.var_poisson + self.var_rnoise + self.var_flat)

    def subtract(self, other: VarianceImage) -> VarianceImage:
        """
        ``self - other``, variances added, valid where both are.

        Parameters
        ----------
        other : VarianceImage
            E.g. a background estimate.

        Returns
        -------
        VarianceImage
            The difference.
        """
        return VarianceImage(
            self.data - other.data,
            self.var_poisson + other.var_poisson,
            self.var_rnoise + other.var_rnoise,
            self.var_flat + other.var_flat,
            self.valid & other.valid,
        )


def scale_image(image: VarianceImage, factor: np.ndarray) -> VarianceImage:
    """
    Multiply by a per-pixel factor; variances scale by its square.

    Pixels whose factor is not finite or is zero become invalid (their
    values are left to the caller to blank), never infinite.

    Parameters
    ----------
    image : VarianceImage
        Input.
    factor : ndarray
        Multiplicative factor (e.g. ``photom`` sensitivity, ``1 / fringe``).

    Returns
    -------
    VarianceImage
        The scaled image.

    Examples
    --------
    >>> ones = np.ones(2)
    >>> image = VarianceImage(ones * 3, ones, ones, 0 * ones, ones > 0)
    >>> scale_image(image, np.array([2.0, np.nan])).var_poisson
    array([ 4., nan])
    """
    usable = np.isfinite(factor) & (factor != 0)
    factor = np.where(usable, factor, np.nan)
    square = factor * factor
    return VarianceImage(
        image.data * factor,
        image.var_poisson * square,
        image.var_rnoise * square,
        image.var_flat * square,
        image.valid & usable,
    )


def combine_backgrounds(images: list[VarianceImage], sigma: float = 3.0) -> VarianceImage:
    """
    Average background exposures pixel by pixel, with outlier rejection.

    Parameters
    ----------
    images : list of VarianceImage
        The background exposures (same shape).
    sigma : float
        With three or more exposures, a value further than ``sigma``
        standard deviations (its own variance plus that of the reference)
        from the median of the others is rejected (a cosmic ray or a glitch
        in one exposure); 0 disables it.

    Returns
    -------
    VarianceImage
        Mean of the accepted values; each variance component is
        ``sum(var_i) / n**2`` over the ``n`` accepted exposures. Valid
        where at least one exposure is.

    Notes
    -----
    The reference is the median of all exposures' values, so with three
    or more a single outlier cannot move it far; the tolerance adds the
    tested value's variance and that of the median (``pi / 2`` times the
    variance of a mean).
    """
    data = np.stack([image.data for image in images])
    accepted = np.stack([image.valid & np.isfinite(image.data) for image in images])
    variances = {
        name: np.stack([getattr(image, name) for image in images])
        for name in ("var_poisson", "var_rnoise", "var_flat")
    }
    if sigma > 0 and len(images) >= 3:
        masked = np.where(accepted, data, np.nan)
        total = variances["var_poisson"] + variances["var_rnoise"] + variances["var_flat"]
        total = np.where(accepted, total, np.nan)
        # Pixels flagged in every exposure have no reference.
        with np.errstate(invalid="ignore"):
            reference = nan_median(masked, axis=0)
            count = np.maximum(np.sum(accepted, axis=0), 1)
            # Variance of a median of n values: about pi / 2 times that of their mean.
            reference_variance = 0.5 * np.pi * nan_mean(total, axis=0) / count
        for index in range(len(images)):
            with np.errstate(invalid="ignore"):
                spread = np.sqrt(total[index] + reference_variance)
                outlier = np.abs(masked[index] - reference) > sigma * spread
            accepted[index] &= ~outlier
    count = accepted.sum(axis=0)
    valid = count > 0
    safe_count = np.where(valid, count, 1)
    mean = np.where(accepted, data, 0.0).sum(axis=0) / safe_count
    combined = {
        name: np.where(accepted, stack, 0.0).sum(axis=0) / safe_count**2
        for name, stack in variances.items()
    }
    return VarianceImage(
        np.where(valid, mean, np.nan),
        combined["var_poisson"],
        combined["var_rnoise"],
        combined["var_flat"],
        valid,
    )
