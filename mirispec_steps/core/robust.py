"""Robust statistics shared by both modes: row quantiles, MAD scatter, clipped fits, boxcars.

One implementation of each: the LRS background clipping and the MRS
centroid rejection use the same scatter estimate, the LRS trace drift and
the MRS centroid track the same clipped polynomial, the LRS box background
and the LRS optimal background the same NaN-aware boxcar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAD_TO_SIGMA",
    "ClippedPolynomial",
    "clipped_polyfit",
    "nan_boxcar",
    "masked_median",
    "nan_mean",
    "nan_median",
    "robust_sigma",
    "row_quantile",
]

#: Standard deviation of a Gaussian per unit of median absolute deviation.
MAD_TO_SIGMA = 1.4826


def nan_mean(values: np.ndarray, axis: int) -> np.ndarray:
    """
    Mean of the non-NaN values along ``axis``; NaN where there is none, without a warning.

    Equal to ``np.nanmean``. NumPy warns about all-NaN slices, and silencing
    that with ``warnings.catch_warnings`` is not thread-safe (the filters are
    process-wide; another thread's exit restores them mid-run), so the
    package computes such statistics without warnings.

    Parameters
    ----------
    values : ndarray
        The values.
    axis : int
        The axis to average.

    Returns
    -------
    ndarray
        The means.

    Examples
    --------
    >>> nan_mean(np.array([[1.0, np.nan], [3.0, np.nan]]), axis=0)
    array([ 2., nan])
    """
    values = np.asarray(values, dtype=float)
    valid = ~np.isnan(values)
    count = valid.sum(axis=axis)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def masked_median(values: np.ndarray, mask: np.ndarray, axis: int = -1) -> np.ndarray:
    """
    Median of the masked values along ``axis``, as ``np.median`` of them; NaN where none.

    A NaN among the masked values makes the median NaN (as ``np.median``).

    Parameters
    ----------
    values : ndarray
        The values.
    mask : ndarray of bool
        The values to use (broadcast against ``values``).
    axis : int
        The axis.

    Returns
    -------
    ndarray
        The medians.

    Examples
    --------
    >>> masked_median(np.array([[4.0, 1.0, 9.0, 2.0]]), np.array([[True, True, False, True]]))
    array([2.])
    """
    values = np.asarray(values, dtype=float)
    mask = np.moveaxis(np.broadcast_to(mask, values.shape), axis, -1)
    values = np.moveaxis(values, axis, -1)
    n_counted = mask.sum(axis=-1, keepdims=True)
    has_nan = np.any(mask & np.isnan(values), axis=-1)
    ordered = np.sort(np.where(mask & ~np.isnan(values), values, np.inf), axis=-1)
    if ordered.shape[-1] == 0:
        return np.full(ordered.shape[:-1], np.nan)
    low = np.take_along_axis(ordered, np.maximum(n_counted - 1, 0) // 2, axis=-1)[..., 0]
    high = np.take_along_axis(ordered, np.minimum(n_counted // 2, ordered.shape[-1] - 1),
                              axis=-1)[..., 0]  # fmt: skip
    with np.errstate(invalid="ignore"):
        median = (low + high) / 2
    return np.where(has_nan | (n_counted[..., 0] == 0), np.nan, median)


def nan_median(values: np.ndarray, axis: int) -> np.ndarray:
    """
    Median of the non-NaN values along ``axis`` (``np.nanmedian``); NaN where none, no warning.

    Parameters
    ----------
    values : ndarray
        The values.
    axis : int
        The axis.

    Returns
    -------
    ndarray
        The medians.

    Examples
    --------
    >>> nan_median(np.array([[1.0, np.nan], [5.0, np.nan], [2.0, np.nan]]), axis=0)
    array([ 2., nan])
    """
    values = np.asarray(values, dtype=float)
    return masked_median(values, ~np.isnan(values), axis)


def row_quantile(values: np.ndarray, mask: np.ndarray | None, quantile: float) -> np.ndarray:
    """
    Quantile of each row's masked values, linear between order statistics.

    Parameters
    ----------
    values : ndarray
        ``(..., M)`` values.
    mask : ndarray or None
        ``(..., M)`` values to use (None: the finite ones).
    quantile : float
        In [0, 1]; 0.5 is the median.

    Returns
    -------
    ndarray
        ``(...)``; NaN for rows without a value.

    Examples
    --------
    >>> row_quantile(np.array([[1.0, 5.0, 2.0, 9.0], [3.0, 0.0, 0.0, 0.0]]),
    ...              np.array([[True, True, True, False], [True, False, False, False]]), 0.5)
    array([2., 3.])
    """
    values = np.asarray(values, dtype=float)
    mask = np.isfinite(values) if mask is None else mask & np.isfinite(values)
    ordered = np.sort(np.where(mask, values, np.inf), axis=-1)
    count = mask.sum(axis=-1)
    position = quantile * np.maximum(count - 1, 0)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, np.maximum(count - 1, 0))
    fraction = position - low
    below = np.take_along_axis(ordered, low[..., None], axis=-1)[..., 0]
    above = np.take_along_axis(ordered, high[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):
        result = below + fraction * (above - below)
    return np.where(count > 0, result, np.nan)


def robust_sigma(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """
    Scatter of each row from its median absolute deviation (``1.4826 * MAD``).

    Parameters
    ----------
    values : ndarray
        ``(..., M)`` values.
    mask : ndarray or None
        Values to use (None: the finite ones).

    Returns
    -------
    ndarray
        ``(...)`` standard deviation a Gaussian with that MAD has; NaN for
        rows without a value.

    Examples
    --------
    >>> round(float(robust_sigma(np.array([-1.0, 0.0, 1.0, 100.0]))), 4)
    1.4826
    """
    values = np.asarray(values, dtype=float)
    mask = np.isfinite(values) if mask is None else mask & np.isfinite(values)
    median = row_quantile(values, mask, 0.5)
    deviation = np.abs(values - median[..., None])
    return MAD_TO_SIGMA * row_quantile(deviation, mask, 0.5)


@dataclass(frozen=True)
class ClippedPolynomial:
    """
    Result of :func:`clipped_polyfit`.

    Attributes
    ----------
    coefficients : ndarray
        Polynomial coefficients, lowest order first (NaN when nothing was usable).
    inliers : ndarray
        Points kept in the final fit.
    scatter : float
        Robust scatter of the normalised residuals (at least 1).
    """

    coefficients: np.ndarray
    inliers: np.ndarray
    scatter: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The polynomial at ``x``."""
        return np.polynomial.polynomial.polyval(x, self.coefficients)


def clipped_polyfit(
    x: np.ndarray,
    y: np.ndarray,
    error: np.ndarray,
    order: int,
    clip_sigma: float = 4.0,
    usable: np.ndarray | None = None,
    max_iterations: int = 10,
) -> ClippedPolynomial:
    """
    Weighted polynomial fit with iterative rejection of outlying points.

    Parameters
    ----------
    x, y, error : ndarray
        ``(N,)`` points and their 1-sigma errors.
    order : int
        Polynomial order (lowered when too few points remain).
    clip_sigma : float
        Points further than this from the fit, in their errors times the
        robust scatter of the normalised residuals (if above 1), are dropped.
    usable : ndarray or None
        Points allowed in the fit (default all); a dropped point may come
        back when the fit moves.
    max_iterations : int
        Fits at most; the loop ends earlier when the inliers stop changing.

    Returns
    -------
    ClippedPolynomial
        Coefficients, inliers and scatter.

    Notes
    -----
    Weights are ``1 / error``. The scatter is ``1.4826 * median(|r|)`` of the
    normalised residuals ``r = (y - fit) / error`` of the inliers, so a few
    outliers do not widen the clipping and underestimated errors do not
    make it too tight. The order drops to ``count - 2`` when fewer than
    ``order + 2`` points are left.

    Examples
    --------
    >>> x = np.linspace(-1, 1, 21)
    >>> y = 2 + 3 * x
    >>> y[5] += 100
    >>> fit = clipped_polyfit(x, y, np.ones_like(x), order=1)
    >>> np.round(fit.coefficients, 6).tolist(), bool(fit.inliers[5])
    ([2.0, 3.0], False)
    """
    x, y, error = (np.asarray(v, dtype=float) for v in (x, y, error))
    usable = np.ones(x.shape, dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    usable = usable & np.isfinite(x) & np.isfinite(y) & np.isfinite(error) & (error > 0)
    inliers = usable.copy()
    if not inliers.any():
        return ClippedPolynomial(np.full(order + 1, np.nan), inliers, 1.0)
    coefficients = np.zeros(order + 1)
    scatter = 1.0
    for _ in range(max_iterations):
        count = int(np.count_nonzero(inliers))
        used_order = int(min(order, max(count - 2, 0)))
        coefficients = np.polynomial.polynomial.polyfit(
            x[inliers], y[inliers], used_order, w=1.0 / error[inliers]
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            normalised = (y - np.polynomial.polynomial.polyval(x, coefficients)) / error
        scatter = max(MAD_TO_SIGMA * float(np.median(np.abs(normalised[inliers]))), 1.0)
        keep = usable & (np.abs(normalised) <= clip_sigma * scatter)
        if count <= used_order + 2 or np.array_equal(keep, inliers) or not keep.any():
            break
        inliers = keep
    padded = np.zeros(order + 1)
    padded[: coefficients.size] = coefficients
    return ClippedPolynomial(padded, inliers, scatter)


def nan_boxcar(
    values: np.ndarray, length: int, axis: int = -2, extend_edges: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """
    Running mean of the finite values over ``length`` samples along one axis.

    Parameters
    ----------
    values : ndarray
        Any shape; NaN values are left out of the means.
    length : int
        Odd window length; 1 or less returns the values themselves.
    axis : int
        Axis to smooth along.
    extend_edges : bool
        Extend the array with copies of its first and last slices (jwst's
        ``boundary="extend"``); otherwise windows are truncated at the ends.

    Returns
    -------
    mean : ndarray
        The running mean (NaN where a window holds no finite value).
    count : ndarray
        Finite values in each window.

    Notes
    -----
    Cumulative sums give every window in one pass, O(n) whatever the
    length. With ``extend_edges`` this equals astropy's ``convolve`` with a
    uniform kernel, ``boundary="extend"`` and NaN interpolation, as jwst's
    extract_1d smooths the background.

    Examples
    --------
    >>> nan_boxcar(np.array([1.0, np.nan, 3.0, 5.0]), 3, axis=0)[0]
    array([1., 2., 4., 4.])
    """
    values = np.asarray(values, dtype=float)
    if length <= 1:
        return values.copy(), np.isfinite(values).astype(float)
    moved = np.moveaxis(values, axis, 0)
    half = length // 2
    if extend_edges:
        before, after = np.repeat(moved[:1], half, axis=0), np.repeat(moved[-1:], half, axis=0)
    else:
        before = after = np.full((half, *moved.shape[1:]), np.nan)
    padded = np.concatenate([before, moved, after], axis=0)
    finite = np.isfinite(padded)
    zeros = np.zeros((1, *moved.shape[1:]))
    value_sum = np.concatenate([zeros, np.cumsum(np.where(finite, padded, 0.0), axis=0)])
    count_sum = np.concatenate([zeros, np.cumsum(finite, axis=0, dtype=float)])
    total = value_sum[length:] - value_sum[:-length]
    count = count_sum[length:] - count_sum[:-length]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
    return np.moveaxis(mean, 0, axis), np.moveaxis(count, 0, axis)
