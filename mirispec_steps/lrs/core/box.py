"""Box sums and bad-pixel repair under an aperture (pure NumPy).

Arrays are dispersion-major ``(n_disp, n_xdisp)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirispec_steps.core.robust import masked_median

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
    overwrite: bool = False,
) -> BadPixelRepair:
    """
    Replace invalid pixels inside an aperture using the neighbours' profile.

    Parameters
    ----------
    data : ndarray
        Background-subtracted data, NaN where invalid: one image
        ``(n_disp, n_xdisp)`` or a series ``(n_int, n_disp, n_xdisp)``.
    var_rnoise, var_poisson, var_flat : ndarray
        Pixel variances (NaN where invalid).
    aperture : ndarray
        ``(n_disp, n_xdisp)`` aperture weights (shared by the integrations);
        only pixels with non-zero weight are repaired.
    half_window : int, optional
        Number of dispersion elements on each side used for the profile.
    max_missing_fraction : float, optional
        A row is left alone (its invalid pixels stay out of the sum) when the
        profile says more than this fraction of its flux is missing.
    overwrite : bool, optional
        Repair the given float64 arrays in place (they are returned) instead
        of copies: for callers that own them.

    Returns
    -------
    BadPixelRepair
        Repaired arrays (shaped like ``data``) and the replaced flux fraction
        per row.

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
    single = data.ndim == 2
    arrays = [np.asarray(a, dtype=float) for a in (data, var_rnoise, var_poisson, var_flat)]
    if single:
        arrays = [a[None] for a in arrays]
    n_int, n_disp, _ = arrays[0].shape
    inside_aperture = aperture > 0
    # Only the aperture's columns matter: work on their bounding window.
    spanned = np.flatnonzero(inside_aperture.any(axis=0))
    window = slice(spanned[0], spanned[-1] + 1) if spanned.size else slice(0, 0)
    invalid = ~np.isfinite(arrays[0][..., window]) & inside_aperture[:, window]
    repaired = arrays if overwrite else [array.copy() for array in arrays]
    replaced = np.zeros(arrays[0].shape, dtype=bool)
    fraction = np.zeros((n_int, n_disp))
    ints, rows = np.nonzero(invalid.any(axis=2))
    if rows.size:
        views = [a[..., window] for a in arrays]
        if overwrite:
            views = [v.copy() for v in views]  # the neighbours must be read before repair
        _repair_rows(views, [a[..., window] for a in repaired], replaced[..., window], fraction,
                     ints, rows, inside_aperture[:, window], aperture[:, window], half_window,
                     max_missing_fraction)  # fmt: skip
    if single:
        repaired = [a[0] for a in repaired]
        replaced, fraction = replaced[0], fraction[0]
    return BadPixelRepair(*repaired, replaced_fraction=fraction, replaced=replaced)


def _repair_rows(arrays, repaired, replaced, fraction, ints, rows, inside_aperture, aperture,
                 half_window, max_missing_fraction) -> None:  # fmt: skip
    """Repair the damaged rows ``(ints, rows)`` in place (see :func:`repair_from_profile`)."""
    data = arrays[0]
    n_disp = data.shape[1]
    columns = inside_aperture[rows]  # (M, X)
    missing = columns & ~np.isfinite(data[ints, rows])
    good = columns & ~missing
    offsets = np.array([o for o in range(-half_window, half_window + 1) if o != 0])
    neighbours = rows[:, None] + offsets[None, :]  # (M, K)
    in_image = (neighbours >= 0) & (neighbours < n_disp)
    neighbours = np.clip(neighbours, 0, n_disp - 1)
    block = data[ints[:, None], neighbours]  # (M, K, X)
    usable = in_image & np.all(np.isfinite(block) | ~columns[:, None, :], axis=2)
    norm = np.where(good[:, None, :], block, 0.0).sum(axis=2)
    ok = usable & (norm > 0)
    candidate = good.any(axis=1) & (ok.sum(axis=1) >= 2)
    if not candidate.any():
        return
    pick = np.flatnonzero(candidate)
    ints, rows, columns, missing, good = (a[pick] for a in (ints, rows, columns, missing, good))
    neighbours, usable, ok = neighbours[pick], usable[pick], ok[pick]
    safe_norm = np.where(ok, norm[pick], 1.0)
    ratio = block[pick] / safe_norm[:, :, None]
    profile = masked_median(ratio, ok[:, :, None] & columns[:, None, :], axis=1)
    row_data = data[ints, rows]
    amplitude = np.where(good, row_data, 0.0).sum(axis=1)
    estimate = amplitude[:, None] * profile
    weights = aperture[rows]
    total = np.where(columns, weights * np.where(missing, estimate, row_data), 0.0).sum(axis=1)
    replaced_flux = np.where(missing, weights * estimate, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        accept = (total > 0) & ~(replaced_flux / total > max_missing_fraction)
    if not accept.any():
        return
    keep = np.flatnonzero(accept)
    ints, rows, missing, neighbours, usable = (
        a[keep] for a in (ints, rows, missing, neighbours, usable)
    )
    repaired[0][ints, rows] = np.where(missing, estimate[keep], row_data[keep])
    for target, source in zip(repaired[1:], arrays[1:], strict=True):
        values = source[ints[:, None], neighbours]
        # Median over the usable neighbours; a NaN among them makes it NaN (as np.median).
        median = masked_median(values, usable[:, :, None] & missing[:, None, :], axis=1)
        target[ints, rows] = np.where(missing, median, target[ints, rows])
    replaced[ints, rows] = missing
    fraction[ints, rows] = replaced_flux[keep] / total[keep]
