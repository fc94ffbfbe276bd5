"""Box sums and bad-pixel repair under an aperture (pure NumPy).

Arrays are dispersion-major ``(n_disp, n_xdisp)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BoxSum", "box_sum", "BadPixelRepair", "repair_from_profile"]


@dataclass
class BoxSum:
    """
    Weighted sums of one dispersion-major image under an aperture.

    Attributes
    ----------
    flux : ndarray
        Sum of ``weight * data`` per dispersion element (NaN where no pixel).
    var_rnoise, var_poisson, var_flat : ndarray
        Variance of ``flux`` by noise source.
    npixels : ndarray
        Sum of the weights of the pixels that contributed.
    background : ndarray
        Sum of ``weight * background`` over the same pixels.
    """

    flux: np.ndarray
    var_rnoise: np.ndarray
    var_poisson: np.ndarray
    var_flat: np.ndarray
    npixels: np.ndarray
    background: np.ndarray


def box_sum(
    data: np.ndarray,
    var_rnoise: np.ndarray,
    var_poisson: np.ndarray,
    var_flat: np.ndarray,
    aperture: np.ndarray,
    background: np.ndarray | None = None,
) -> BoxSum:
    """
    Sum background-subtracted data under fractional aperture weights.

    Parameters
    ----------
    data : ndarray
        Background-subtracted data, NaN where invalid.
    var_rnoise, var_poisson, var_flat : ndarray
        Pixel variances.
    aperture : ndarray
        Weights in [0, 1].
    background : ndarray or None, optional
        The background model that was subtracted, summed under the same
        pixels for the BACKGROUND column.

    Returns
    -------
    BoxSum
        Sums per dispersion element.

    Notes
    -----
    As in jwst, invalid pixels simply drop out of the sum (NPIXELS drops
    too); see :func:`repair_from_profile` for the alternative. Variances are
    summed with squared weights, ignoring NaN variances.

    Examples
    --------
    >>> import numpy as np
    >>> ones = np.ones((2, 4))
    >>> box_sum(ones, ones, ones, ones, np.array([[0, 0.5, 1, 0]] * 2)).flux
    array([1.5, 1.5])
    """
    weight = np.where(np.isfinite(data), aperture, 0.0)
    flux = np.sum(np.where(weight != 0, data, 0.0) * weight, axis=1)
    npixels = weight.sum(axis=1)
    squared = weight**2
    with np.errstate(invalid="ignore", over="ignore"):
        variances = [
            np.nansum(component * squared, axis=1)
            for component in (var_rnoise, var_poisson, var_flat)
        ]
    if background is None:
        background_sum = np.zeros_like(flux)
    else:
        background_sum = np.sum(background * weight, axis=1)
        background_sum[~np.isfinite(background_sum)] = 0.0
    flux[np.isclose(npixels, 0)] = np.nan
    return BoxSum(flux, *variances, npixels=npixels, background=background_sum)


@dataclass
class BadPixelRepair:
    """
    Data with invalid aperture pixels replaced by a profile estimate.

    Attributes
    ----------
    data, var_rnoise, var_poisson, var_flat : ndarray
        Repaired copies of the inputs.
    replaced_fraction : ndarray
        Per dispersion element, the fraction of the aperture flux that comes
        from replaced pixels.
    replaced : ndarray of bool
        The pixels that were replaced.
    """

    data: np.ndarray
    var_rnoise: np.ndarray
    var_poisson: np.ndarray
    var_flat: np.ndarray
    replaced_fraction: np.ndarray
    replaced: np.ndarray


def repair_from_profile(
    data: np.ndarray,
    var_rnoise: np.ndarray,
    var_poisson: np.ndarray,
    var_flat: np.ndarray,
    aperture: np.ndarray,
    half_window: int = 4,
    max_missing_fraction: float = 0.5,
) -> BadPixelRepair:
    """
    Replace invalid pixels inside an aperture using the neighbours' profile.

    Parameters
    ----------
    data : ndarray
        Background-subtracted data, NaN where invalid.
    var_rnoise, var_poisson, var_flat : ndarray
        Pixel variances (NaN where invalid).
    aperture : ndarray
        Aperture weights; only pixels with non-zero weight are repaired.
    half_window : int, optional
        Number of dispersion elements on each side used for the profile.
    max_missing_fraction : float, optional
        A row is left alone (its invalid pixels stay out of the sum) when the
        profile says more than this fraction of its flux is missing.

    Returns
    -------
    BadPixelRepair
        Repaired arrays and the replaced flux fraction per row.

    Notes
    -----
    For a row with invalid aperture pixels, the cross-dispersion profile is
    the median, over the ``2 * half_window`` neighbouring rows whose pixels are
    all valid at the same positions, of each row normalised to unit sum over
    the pixels that are valid in the damaged row. The damaged row's valid
    pixels fix the amplitude; each invalid pixel becomes amplitude times
    profile. Its variance is the median variance of the same column in the
    neighbouring rows, so the error bar still counts it. With a near-vertical
    trace the profile barely moves over a few rows, so this recovers the
    flux a dead core pixel would otherwise remove (about a fifth of the
    row for LRS).
    """
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
    return BadPixelRepair(*repaired, replaced_fraction=fraction, replaced=replaced)
