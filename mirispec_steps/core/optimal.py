"""Profile-weighted (Horne 1986) optimal extraction, batched over rows.

Every row (one dispersion element of one integration) is an independent
linear fit of the data ``D`` by ``sum_k a_k B_k``: the source profile, an
optional second (negative nod) profile and optional polynomial background
terms. The fit is weighted by the inverse of a *model* variance,
``V = var_rnoise + var_flat + b + k * S`` with ``S`` the fitted signal and
``(b, k)`` regressed from the data's VAR_POISSON, so the weights do not
follow the noise of the data (which would bias the flux low). Outliers are
rejected one per row and iteration at ``reject_sigma``. All rows are solved
at once with batched normal equations; nothing loops over rows in Python.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import median_filter
from scipy.stats import chi2

__all__ = [
    "RowFit",
    "fit_rows",
    "solve_rows",
    "evaluate_rows",
    "polynomial_basis",
    "poisson_variance_model",
    "measured_misfit",
]

#: Rows need a non-degenerate system: the determinant of the unit-diagonal
#: normal matrix (1 for orthogonal terms, 0 for degenerate ones) must exceed
#: this, else the row is flagged.
MIN_DETERMINANT = 1e-10


@dataclass
class RowFit:
    """
    Result of :func:`fit_rows` for ``N`` rows of ``X`` pixels and ``P`` terms.

    Attributes
    ----------
    coefficients : ndarray
        ``(N, P)`` fitted amplitudes (NaN where the fit failed).
    pixel_weights : ndarray
        ``(N, P, X)`` linear weights: ``coefficients = sum(pixel_weights * data)``.
    model : ndarray
        ``(N, X)`` fitted scene.
    variance : ndarray
        ``(N, X)`` model variance used for the final weights.
    var_poisson_model : ndarray
        ``(N, X)`` Poisson part of ``variance``.
    used : ndarray
        ``(N, X)`` pixels in the final fit.
    rejected : ndarray
        ``(N, X)`` pixels rejected as outliers.
    ok : ndarray
        ``(N,)`` rows with a valid fit.
    """

    coefficients: np.ndarray
    pixel_weights: np.ndarray
    model: np.ndarray
    variance: np.ndarray
    var_poisson_model: np.ndarray
    used: np.ndarray
    rejected: np.ndarray
    ok: np.ndarray


def polynomial_basis(n_xdisp: int, order: int) -> np.ndarray:
    """
    Polynomial background basis: plain powers ``x**k`` of ``x = linspace(-1, 1, n_xdisp)``.

    Parameters
    ----------
    n_xdisp : int
        Pixels across the cutout.
    order : int
        Polynomial order (``-1`` for none).

    Returns
    -------
    ndarray
        ``(order + 1, n_xdisp)``, constant term first.

    Examples
    --------
    >>> polynomial_basis(3, 1)
    array([[ 1.,  1.,  1.],
           [-1.,  0.,  1.]])
    """
    coordinate = np.linspace(-1.0, 1.0, n_xdisp)
    return np.array([coordinate**power for power in range(order + 1)]).reshape(-1, n_xdisp)


def poisson_variance_model(
    var_poisson: np.ndarray,
    signal: np.ndarray,
    used: np.ndarray,
    n_rows_per_block: int | None = None,
    smoothing: int = 15,
) -> np.ndarray:
    """
    Model of VAR_POISSON as ``b + k * signal`` per row, regressed on the data's own.

    Parameters
    ----------
    var_poisson : ndarray
        ``(N, X)`` the data's Poisson variance (noisy in real data).
    signal : ndarray
        ``(N, X)`` non-negative model signal (source plus background).
    used : ndarray
        ``(N, X)`` pixels to regress on.
    n_rows_per_block : int or None
        Rows per integration: ``k`` and ``b`` are median-smoothed along
        dispersion within each block of this many rows.
    smoothing : int
        Median window (rows) for ``k`` and ``b``.

    Returns
    -------
    ndarray
        ``(N, X)`` model Poisson variance, never negative.

    Notes
    -----
    ``k`` is the Poisson variance per unit of signal (the inverse of the
    effective gain times the exposure time, in the data's units) and ``b``
    the part not proportional to the modelled signal (for nod-subtracted
    data, the other exposure's background).
    """
    weight = used.astype(float)
    count = weight.sum(axis=1)
    safe = np.maximum(count, 1.0)
    vp = np.where(used, var_poisson, 0.0)
    s = np.where(used, signal, 0.0)
    mean_s = s.sum(axis=1) / safe
    mean_v = vp.sum(axis=1) / safe
    ds = np.where(used, signal - mean_s[:, None], 0.0)
    spread = (ds**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (ds * np.where(used, var_poisson - mean_v[:, None], 0.0)).sum(axis=1) / spread
    slope = np.where(np.isfinite(slope) & (spread > 0), np.maximum(slope, 0.0), 0.0)
    offset = np.maximum(mean_v - slope * mean_s, 0.0)
    if n_rows_per_block and smoothing > 1:
        blocks = slope.size // n_rows_per_block
        slope = median_filter(slope.reshape(blocks, -1), size=(1, smoothing), mode="nearest")
        offset = median_filter(offset.reshape(blocks, -1), size=(1, smoothing), mode="nearest")
        slope, offset = slope.ravel(), offset.ravel()
    return offset[:, None] + slope[:, None] * np.clip(signal, 0.0, None)


def _reject_worst(
    data, model, variance, used, rejected, ok, threshold, robust=None, tolerance=0.0, misfit=0.0,
    background=0.0,
):  # fmt: skip
    """Drop each row's worst pixel beyond ``threshold`` sigma; return the rows changed.

    With ``robust`` (a hit-proof source model, :func:`_robust_source_model`),
    the profile's own uncertainty is added in quadrature to the noise:
    where the profile is not exact (a PSF the model does not describe), a
    bright source's core differs from it by more than its noise, and is no
    outlier. The uncertainty is ``tolerance`` of the model at the row's
    peak, ``tolerance * sqrt(model * peak)`` elsewhere: a profile's errors
    are a growing share of its level in the wings (rings, spikes, a wing
    law), where a fixed share rejected faint pixels by the hundred. Beyond
    that, ``misfit`` of the peak everywhere: what the data show of the
    profile's errors (:func:`measured_misfit`). An excess over the robust
    model (of the data less the fitted ``background``) counts as much as a
    residual from the fit, so a hit the fit has followed is still the worst.
    """
    with np.errstate(invalid="ignore"):
        if robust is None:
            scale = np.sqrt(variance)
            excess = np.abs(data - model)
        else:
            # Rows too sparse for a robust model (the source at the field's edge) take the
            # fit's: no tolerance at all rejected their imperfectly modelled pixels en masse.
            level = np.abs(np.where(np.any(robust != 0, axis=1, keepdims=True), robust, model))
            peak = np.max(np.where(used, level, 0.0), axis=1, keepdims=True)
            scale = np.sqrt(variance + tolerance**2 * level * peak + (misfit * peak) ** 2)
            # Outward from the robust model: up on a positive trace, down on a negative one.
            outward = np.sign(robust) * (data - background - robust)
            excess = np.maximum(np.abs(data - model), outward)
        score = np.where(used, excess / scale, 0.0)
    worst = np.argmax(score, axis=1)
    rows = np.arange(score.shape[0])
    changed = ok & (score[rows, worst] > threshold)
    used[rows[changed], worst[changed]] = False
    rejected[rows[changed], worst[changed]] = True
    return changed


#: Share of a profile's pixels whose misfit the measured floor covers: the rest, and every
#: hit, are judged against it.
MISFIT_QUANTILE = 0.99


def measured_misfit(data, model, variance, used, robust, tolerance, aligned_rows=1) -> float:
    """
    A profile's misfit beyond noise and tolerance, in shares of each row's peak, over all rows.

    Parameters
    ----------
    data, model, variance : ndarray
        ``(N, X)`` data, a first fit's model and the noise variance.
    used : ndarray
        ``(N, X)`` pixels of rows that were fitted.
    robust : ndarray
        ``(N, X)`` the hit-proof source model (:func:`_robust_source_model`).
    tolerance : float
        The profile's assumed relative uncertainty (:func:`_reject_worst`).
    aligned_rows : int
        Where a column is the same place in the profile from row to row (LRS
        cutouts along the trace), each pixel's requirement is the median over
        this many neighbouring rows: a hit pulls its whole row's fit (every
        pixel of a faint row then seems to misfit), a profile's error recurs
        in the rows around. 1: each pixel on its own (MRS bins, whose pixels
        follow no common order).

    Returns
    -------
    float
        The smallest ``f`` for which a share ``MISFIT_QUANTILE`` of the
        pixels, normalised by ``sqrt(variance + tolerance^2 * level * peak
        + f^2 * peak^2)``, lie within that quantile of a unit Gaussian; 0
        when noise and tolerance explain them.

    Notes
    -----
    A PSF model's errors repeat in every row (bin) at the same place in
    the PSF, and where the model is smooth and the PSF has rings they are
    a share of the peak, not of the model's own level (a ring at 3% of
    the peak where the model holds 1%). A hit touches one pixel of one
    row: a high quantile over the whole band measures the first and
    ignores the second. Normalised residuals are held to the noise's own
    distribution, so data with little noise and data with much measure the
    same misfit.
    """
    level = np.abs(robust)
    peak = np.max(np.where(used, level, 0.0), axis=1, keepdims=True)
    judged = used & (peak > 0) & np.isfinite(variance)
    if np.count_nonzero(judged) < 100:
        return 0.0
    target = chi2.isf(1.0 - MISFIT_QUANTILE, 1)
    # Each pixel's floor that would put it at the quantile exactly; the floor is their quantile.
    excess = (data - model) ** 2 / target - variance - tolerance**2 * level * peak
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = np.where(judged, excess / peak**2, np.nan)
    if aligned_rows > 1 and data.shape[0] >= aligned_rows:
        half = aligned_rows // 2
        padded = np.pad(needed, ((half, aligned_rows - 1 - half), (0, 0)), constant_values=np.nan)
        windows = sliding_window_view(padded, aligned_rows, axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
            needed = np.where(judged, np.nanmedian(windows, axis=-1), np.nan)
    value = np.quantile(needed[judged], MISFIT_QUANTILE)
    return float(np.sqrt(value)) if value > 0 else 0.0


def _robust_source_model(data, valid, basis, positive_terms) -> np.ndarray:
    """
    The source model per pixel from a hit-proof amplitude: the median of data over profile.

    Taken over each row's pixels holding at least a quarter of its profile's
    peak in magnitude (three at least, else zero: no judgement against it);
    the profile keeps its sign (the negative trace of a nod pair). One cosmic
    ray cannot move the median, as it can pull the fitted amplitude (a fit
    that follows a hit on the brightest pixel leaves it a small residual and
    every other pixel a large one).
    """
    # Signed: a nod pair's negative trace is a negative term, and its data are negative too.
    profile = basis[:, :positive_terms].sum(axis=1)
    profile = np.broadcast_to(profile[np.arange(data.shape[0]) % profile.shape[0]], data.shape)
    magnitude = np.abs(profile)
    peak = np.max(np.where(valid, magnitude, 0.0), axis=1, keepdims=True)
    strong = valid & (magnitude >= 0.25 * peak) & (magnitude > 0)
    count = strong.sum(axis=1)
    ratio = np.sort(np.where(strong, data / np.where(strong, profile, 1.0), np.inf), axis=1)
    rows = np.arange(data.shape[0])
    last = data.shape[1] - 1
    median = 0.5 * (ratio[rows, np.clip((count - 1) // 2, 0, last)]
                    + ratio[rows, np.clip(count // 2, 0, last)])  # fmt: skip
    amplitude = np.where(count >= 3, np.clip(median, 0.0, None), 0.0)
    return amplitude[:, None] * profile


def _blocks(n_rows: int, basis: np.ndarray) -> int:
    """How many times a row basis ``(R, P, X)`` repeats over ``n_rows`` rows (1: per row)."""
    if basis.shape[0] == n_rows:
        return 1
    if n_rows % basis.shape[0]:
        raise ValueError(f"{n_rows} rows are not a whole number of {basis.shape[0]}-row blocks")
    return n_rows // basis.shape[0]


def evaluate_rows(coefficients: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """
    Model ``sum_p c_p B_p`` for every row.

    Parameters
    ----------
    coefficients : ndarray
        ``(N, P)``.
    basis : ndarray
        ``(N, P, X)``, or ``(R, P, X)`` shared by ``N / R`` consecutive blocks
        of rows (the integrations of a time series).

    Returns
    -------
    ndarray
        ``(N, X)``.
    """
    n_rows = coefficients.shape[0]
    blocks = _blocks(n_rows, basis)
    if blocks == 1:
        return np.einsum("np,npx->nx", coefficients, basis)
    shaped = coefficients.reshape(blocks, basis.shape[0], -1)
    return np.einsum("brp,rpx->brx", shaped, basis).reshape(n_rows, basis.shape[2])


def solve_rows(
    data: np.ndarray, weights: np.ndarray, basis: np.ndarray, pixel_weights: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """
    Weighted linear least squares for every row at once.

    Parameters
    ----------
    data : ndarray
        ``(N, X)`` values (finite where ``weights > 0``).
    weights : ndarray
        ``(N, X)`` inverse variances (0 excludes a pixel).
    basis : ndarray
        ``(N, P, X)`` model terms, or ``(R, P, X)`` shared by consecutive
        blocks of ``R`` rows (never expanded in memory).
    pixel_weights : bool
        Also return the linear pixel weights (costs an ``(N, P, X)`` array).

    Returns
    -------
    coefficients : ndarray
        ``(N, P)``.
    pixel_weights : ndarray or None
        ``(N, P, X)``, with ``coefficients = sum(pixel_weights * data)``.
    ok : ndarray
        ``(N,)`` rows with enough pixels and a non-degenerate system.
    """
    n_rows, n_pixels = data.shape
    n_terms = basis.shape[1]
    blocks = _blocks(n_rows, basis)
    weighted_data = weights * data
    if blocks == 1:
        normal = np.einsum("npx,nqx,nx->npq", basis, basis, weights, optimize=True)
        rhs = np.einsum("npx,nx->np", basis, weighted_data)
    else:
        shape = (blocks, basis.shape[0], n_pixels)
        normal = np.einsum(
            "rpx,rqx,brx->brpq", basis, basis, weights.reshape(shape), optimize=True
        ).reshape(n_rows, n_terms, n_terms)
        rhs = np.einsum("rpx,brx->brp", basis, weighted_data.reshape(shape)).reshape(
            n_rows, n_terms
        )
    n_used = (weights > 0).sum(axis=1)
    ok = n_used >= n_terms
    ok &= np.all(np.diagonal(normal, axis1=1, axis2=2) > 0, axis=1)
    covariance = np.zeros_like(normal)
    if ok.any():
        index = np.flatnonzero(ok)
        # Scale to unit diagonal first so the check is about degeneracy, not units.
        scale = 1.0 / np.sqrt(np.diagonal(normal[index], axis1=1, axis2=2))
        scaled = normal[index] * scale[:, :, None] * scale[:, None, :]
        with np.errstate(all="ignore"):
            determinant = np.linalg.det(scaled)
        invertible = np.isfinite(determinant) & (np.abs(determinant) > MIN_DETERMINANT)
        inverse = np.zeros_like(scaled)
        inverse[invertible] = np.linalg.inv(scaled[invertible])
        covariance[index] = inverse * scale[:, :, None] * scale[:, None, :]
        ok[index[~invertible]] = False
    coefficients = np.einsum("npq,nq->np", covariance, rhs)
    if not pixel_weights:
        return coefficients, None, ok
    if blocks == 1:
        weights_out = np.einsum("npq,nqx->npx", covariance, basis, optimize=True)
    else:
        weights_out = np.einsum(
            "brpq,rqx->brpx",
            covariance.reshape(blocks, basis.shape[0], n_terms, n_terms),
            basis,
            optimize=True,
        ).reshape(n_rows, n_terms, n_pixels)
    return coefficients, weights_out * weights[:, None], ok


def fit_rows(
    data: np.ndarray,
    var_rnoise: np.ndarray,
    var_poisson: np.ndarray,
    var_flat: np.ndarray,
    valid: np.ndarray,
    basis: np.ndarray,
    positive_terms: int,
    reject_sigma: float | None = 5.0,
    max_iterations: int = 6,
    n_rows_per_block: int | None = None,
    variance_iterations: int = 2,
    var_poisson_model: np.ndarray | None = None,
    model_tolerance: float = 0.0,
    measure_misfit: bool = False,
    aligned_rows: int = 1,
) -> RowFit:
    """
    Fit every row with the given basis, Horne-weighted, rejecting outliers.

    Parameters
    ----------
    data : ndarray
        ``(N, X)`` data (anything where ``valid`` is False).
    var_rnoise, var_poisson, var_flat : ndarray
        ``(N, X)`` variance components of the data.
    valid : ndarray
        ``(N, X)`` usable pixels (finite, not flagged, positive variance).
    basis : ndarray
        ``(N, P, X)`` terms: source profile(s) first, then background; or
        ``(R, P, X)`` shared by consecutive blocks of ``R`` rows.
    positive_terms : int
        How many leading terms are source profiles (their absolute model
        feeds the Poisson variance).
    reject_sigma : float or None
        Outlier threshold in model sigma (None or 0: no rejection).
    max_iterations : int
        Rejection passes after the weights have converged (each removes at
        most one pixel per row; only rows that lost a pixel are re-solved).
    n_rows_per_block : int or None
        Rows per integration, for smoothing the variance model.
    variance_iterations : int
        Fits used to converge the model variance (the first is weighted by
        the data's variance).
    var_poisson_model : ndarray or None
        ``(N, X)`` model Poisson variance known in advance (e.g. from the
        scene fitted to the mean of a time series): used as is, and no
        variance iterations are needed.
    model_tolerance : float
        Relative uncertainty of the model at each row's peak (a larger share
        of its level in the wings, :func:`_reject_worst`), added in
        quadrature to the noise when judging outliers only (the weights are
        the noise's): 0 treats the profile as exact. A tolerance also turns on
        ``measure_misfit``.
    measure_misfit : bool
        Judge outliers against the misfit the rows show beyond noise and
        tolerance as well (:func:`measured_misfit`) and against a hit-proof
        source model: a profile that is not exact (a PSF the model does not
        describe) then loses no good pixels, a hit is still found.
    aligned_rows : int
        Rows over which the misfit of a column is a median (columns at the
        same place in the profile from row to row, :func:`measured_misfit`).

    Returns
    -------
    RowFit
        Amplitudes, linear pixel weights and the model.
    """
    clean = np.where(valid, data, 0.0)
    used = valid.copy()
    rejected = np.zeros_like(valid)
    if var_poisson_model is None:
        # Pass 0 weights by the data's own variance; later passes by the model's.
        variance = var_rnoise + var_flat + np.clip(var_poisson, 0, None)
        var_poisson_model = np.where(valid, np.clip(var_poisson, 0, None), 0.0)
    else:
        variance = var_rnoise + var_flat + var_poisson_model
        variance_iterations = 0
    variance = np.where(valid & (variance > 0), variance, np.inf)
    source_basis = basis[:, :positive_terms]
    # The hit-proof source model is made from, and compared with, the data less the fitted
    # background (left in, the source model fell short of every pixel by it).
    judge_profile = bool(reject_sigma) and (model_tolerance > 0 or measure_misfit)
    robust = misfit = None
    for iteration in range(variance_iterations):
        weights = np.where(used, 1.0 / variance, 0.0)
        coefficients, _, ok = solve_rows(clean, weights, basis, pixel_weights=False)
        source_model = evaluate_rows(coefficients[:, :positive_terms], source_basis)
        model = evaluate_rows(coefficients, basis)
        source_data = clean - (model - source_model)
        if judge_profile:
            # Anew with each background: one pulled by a hit must not lower it for good.
            robust = _robust_source_model(source_data, valid, basis, positive_terms)
        if iteration == 0 and judge_profile:
            misfit = measured_misfit(
                source_data, source_model, variance, used & ok[:, None], robust, model_tolerance,
                aligned_rows,
            )  # fmt: skip
        signal = np.abs(source_model) + np.clip(model - source_model, 0.0, None)
        var_poisson_model = poisson_variance_model(
            var_poisson, signal, valid & ok[:, None], n_rows_per_block
        )
        new_variance = var_rnoise + var_flat + var_poisson_model
        variance = np.where(valid & (new_variance > 0), new_variance, np.inf)
        if reject_sigma:
            # Reject before re-weighting: an outlier must not shape the variance model.
            _reject_worst(
                clean, model, variance, used, rejected, ok, reject_sigma, robust,
                model_tolerance, misfit or 0.0, model - source_model,
            )  # fmt: skip
    weights = np.where(used, 1.0 / variance, 0.0)
    coefficients, _, ok = solve_rows(clean, weights, basis, pixel_weights=False)
    model = evaluate_rows(coefficients, basis)
    source_model = evaluate_rows(coefficients[:, :positive_terms], source_basis)
    background = model - source_model
    if judge_profile:
        robust = _robust_source_model(clean - background, valid, basis, positive_terms)
    if judge_profile and misfit is None:
        fitted = used & ok[:, None]
        misfit = measured_misfit(
            clean - background, source_model, variance, fitted, robust, model_tolerance,
            aligned_rows,
        )  # fmt: skip
    # Further rejection passes touch only the rows that lost a pixel.
    for _ in range(max_iterations if reject_sigma else 0):
        changed = _reject_worst(
            clean, model, variance, used, rejected, ok, reject_sigma, robust, model_tolerance,
            misfit or 0.0, background,
        )  # fmt: skip
        if not changed.any():
            break
        rows = np.flatnonzero(changed)
        row_basis = basis[rows % basis.shape[0]]
        weights = np.where(used[rows], 1.0 / variance[rows], 0.0)
        row_coefficients, _, row_ok = solve_rows(
            clean[rows], weights, row_basis, pixel_weights=False
        )
        coefficients[rows], ok[rows] = row_coefficients, row_ok
        model[rows] = evaluate_rows(row_coefficients, row_basis)
        source_model[rows] = evaluate_rows(
            row_coefficients[:, :positive_terms], row_basis[:, :positive_terms]
        )
        background[rows] = model[rows] - source_model[rows]
        if robust is not None:
            robust[rows] = _robust_source_model(
                clean[rows] - background[rows], valid[rows], row_basis, positive_terms
            )
    # Linear pixel weights of the final solution (for variance propagation).
    weights = np.where(used, 1.0 / variance, 0.0)
    coefficients, pixel_weights, final_ok = solve_rows(clean, weights, basis)
    ok &= final_ok
    coefficients[~ok] = np.nan
    return RowFit(
        coefficients, pixel_weights, model, variance, var_poisson_model, used, rejected, ok
    )


def fit_series(
    data: np.ndarray,
    var_rnoise: np.ndarray,
    var_poisson: np.ndarray,
    var_flat: np.ndarray,
    valid: np.ndarray,
    basis: np.ndarray,
    positive_terms: int,
    var_poisson_model: np.ndarray,
    reject_sigma: float | None = 5.0,
    max_iterations: int = 6,
    measure_misfit: bool = False,
    aligned_rows: int = 1,
) -> SeriesFit:
    """
    Fit the rows of a time series with weights shared by all integrations.

    Parameters
    ----------
    data, var_rnoise, var_poisson, var_flat, valid : ndarray
        ``(B * R, X)``: ``B`` integrations of ``R`` rows, as in :func:`fit_rows`.
    basis : ndarray
        ``(R, P, X)`` terms shared by the integrations.
    positive_terms : int
        How many leading terms are source profiles.
    var_poisson_model : ndarray
        ``(R, X)`` model Poisson variance of one integration (from the scene
        fitted to the mean image).
    reject_sigma : float or None
        Outlier threshold in model sigma (None or 0: no rejection).
    max_iterations : int
        Rejection passes for the rows that are re-fitted on their own.
    measure_misfit : bool
        Those rows judge outliers against the misfit they show
        (:func:`fit_rows`).
    aligned_rows : int
        As for :func:`fit_rows`.

    Returns
    -------
    SeriesFit
        The shared weights, and the fits of the rows fitted on their own.

    Notes
    -----
    With the variance model taken from the mean scene, every integration of
    a stable source has the same weights, so the least-squares operator
    ``(B^T W B)^{-1} B^T W`` is computed once per row and applied to all
    integrations by one tensor contraction. Only rows whose usable pixels
    differ from the common set (flagged or NaN pixels) or that hold a pixel
    beyond ``reject_sigma`` are fitted individually by :func:`fit_rows`, with
    the same variance model.
    """
    n_rows, n_terms, n_pixels = basis.shape
    n_blocks = _blocks(data.shape[0], basis)
    shape = (n_blocks, n_rows, n_pixels)
    valid_cube = valid.reshape(shape)
    count = valid_cube.sum(axis=0)
    common = 2 * count > n_blocks
    safe = np.maximum(count, 1)

    def mean_over_integrations(values):
        return np.where(valid_cube, values.reshape(shape), 0.0).sum(axis=0) / safe

    variance = (
        mean_over_integrations(var_rnoise) + mean_over_integrations(var_flat) + var_poisson_model
    )
    common &= np.isfinite(variance) & (variance > 0)
    variance = np.where(common, variance, np.inf)
    weights = np.where(common, 1.0 / variance, 0.0)
    _, operator, row_ok = solve_rows(np.zeros((n_rows, n_pixels)), weights, basis)

    clean = np.where(valid, data, 0.0).reshape(shape)
    coefficients = np.einsum("rpx,brx->brp", operator, clean, optimize=True)
    model = np.einsum("brp,rpx->brx", coefficients, basis, optimize=True)
    refit = np.any(valid_cube != common, axis=2) & row_ok
    if reject_sigma:
        score = np.max(np.abs(clean - model) * np.sqrt(weights), axis=2)
        refit |= score > reject_sigma

    n_total = n_blocks * n_rows
    coefficients = np.where(row_ok[None, :, None], coefficients, np.nan).reshape(n_total, -1)
    rows = np.flatnonzero(refit.ravel())
    own = None
    if rows.size:
        own = fit_rows(
            data[rows],
            var_rnoise[rows],
            var_poisson[rows],
            var_flat[rows],
            valid[rows],
            basis[rows % n_rows],
            positive_terms,
            reject_sigma=reject_sigma,
            max_iterations=max_iterations,
            var_poisson_model=var_poisson_model[rows % n_rows],
            measure_misfit=measure_misfit,
            aligned_rows=aligned_rows,
        )
    fit = SeriesFit(
        coefficients=coefficients,
        model=model.reshape(n_total, n_pixels),
        ok=np.tile(row_ok, n_blocks),
        operator=operator,
        variance=variance,
        var_poisson_model=np.where(common, var_poisson_model, 0.0),
        used=common,
        own_rows=rows,
        own=own,
    )
    if own is not None:
        fit.coefficients[rows] = own.coefficients
        fit.model[rows] = own.model
        fit.ok[rows] = own.ok
    return fit


@dataclass
class SeriesFit:
    """
    Result of :func:`fit_series`: ``B`` integrations of ``R`` rows sharing weights.

    Attributes
    ----------
    coefficients : ndarray
        ``(B * R, P)`` amplitudes (NaN where the fit failed).
    model : ndarray
        ``(B * R, X)`` fitted scene.
    ok : ndarray
        ``(B * R,)`` rows with a valid fit.
    operator : ndarray
        ``(R, P, X)`` shared linear pixel weights.
    variance, var_poisson_model : ndarray
        ``(R, X)`` shared model variance and its Poisson part.
    used : ndarray
        ``(R, X)`` pixels used by the shared weights.
    own_rows : ndarray
        Indices of the rows fitted on their own.
    own : RowFit or None
        Their fit (its rows in the order of ``own_rows``).
    """

    coefficients: np.ndarray
    model: np.ndarray
    ok: np.ndarray
    operator: np.ndarray
    variance: np.ndarray
    var_poisson_model: np.ndarray
    used: np.ndarray
    own_rows: np.ndarray
    own: RowFit | None

    @property
    def n_rejected(self) -> int:
        """Pixels rejected as outliers."""
        return 0 if self.own is None else int(self.own.rejected.sum())

    def expand(self) -> RowFit:
        """The same fit as a :class:`RowFit` with every row's arrays (costs memory)."""
        n_blocks = self.coefficients.shape[0] // self.operator.shape[0]

        def tiled(shared, own_values):
            values = np.tile(shared, (n_blocks,) + (1,) * (shared.ndim - 1))
            if self.own is not None:
                values[self.own_rows] = own_values
            return values

        own = self.own
        n_pixels = self.operator.shape[2]
        rejected = np.zeros((self.coefficients.shape[0], n_pixels), dtype=bool)
        if own is not None:
            rejected[self.own_rows] = own.rejected
        return RowFit(
            coefficients=self.coefficients,
            pixel_weights=tiled(self.operator, None if own is None else own.pixel_weights),
            model=self.model,
            variance=tiled(self.variance, None if own is None else own.variance),
            var_poisson_model=tiled(
                self.var_poisson_model, None if own is None else own.var_poisson_model
            ),
            used=tiled(self.used, None if own is None else own.used),
            rejected=rejected,
            ok=self.ok,
        )
