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

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

__all__ = [
    "RowFit",
    "fit_rows",
    "solve_rows",
    "evaluate_rows",
    "polynomial_basis",
    "poisson_variance_model",
]

#: Rows need a well-conditioned system: the determinant of the unit-diagonal
#: normal matrix (1 for orthogonal terms, 0 for degenerate ones) must exceed
#: 1 / MAX_CONDITION, else the row is flagged.
MAX_CONDITION = 1e10


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
    Background basis: Legendre-like powers of ``linspace(-1, 1, n_xdisp)``.

    Parameters
    ----------
    n_xdisp : int
        Pixels across the cutout.
    order : int
        Polynomial order (``-1`` for none).

    Returns
    -------
    ndarray
        ``(order + 1, n_xdisp)``.
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


def _reject_worst(data, model, variance, used, rejected, ok, threshold):
    """Drop each row's worst pixel beyond ``threshold`` sigma; return the rows changed."""
    with np.errstate(invalid="ignore"):
        score = np.where(used, np.abs(data - model) / np.sqrt(variance), 0.0)
    worst = np.argmax(score, axis=1)
    rows = np.arange(score.shape[0])
    changed = ok & (score[rows, worst] > threshold)
    used[rows[changed], worst[changed]] = False
    rejected[rows[changed], worst[changed]] = True
    return changed


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
        invertible = np.isfinite(determinant) & (np.abs(determinant) > 1.0 / MAX_CONDITION)
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
    signal: np.ndarray | None = None,
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
    signal : ndarray or None
        ``(N, X)`` model signal known in advance (e.g. the scene fitted to
        the mean of a time series): the model variance is built from it
        directly and no variance iterations are needed.

    Returns
    -------
    RowFit
        Amplitudes, linear pixel weights and the model.
    """
    clean = np.where(valid, data, 0.0)
    used = valid.copy()
    rejected = np.zeros_like(valid)
    # Pass 0 weights by the data's own variance; later passes by the model's.
    variance = var_rnoise + var_flat + np.clip(var_poisson, 0, None)
    variance = np.where(valid & (variance > 0), variance, np.inf)
    var_poisson_model = np.where(valid, np.clip(var_poisson, 0, None), 0.0)
    source_basis = basis[:, :positive_terms]
    if signal is not None:
        var_poisson_model = poisson_variance_model(var_poisson, signal, valid, n_rows_per_block)
        new_variance = var_rnoise + var_flat + var_poisson_model
        variance = np.where(valid & (new_variance > 0), new_variance, np.inf)
        variance_iterations = 0
    for _ in range(variance_iterations):
        weights = np.where(used, 1.0 / variance, 0.0)
        coefficients, _, ok = solve_rows(clean, weights, basis, pixel_weights=False)
        source_model = evaluate_rows(coefficients[:, :positive_terms], source_basis)
        model = evaluate_rows(coefficients, basis)
        signal = np.abs(source_model) + np.clip(model - source_model, 0.0, None)
        var_poisson_model = poisson_variance_model(
            var_poisson, signal, valid & ok[:, None], n_rows_per_block
        )
        new_variance = var_rnoise + var_flat + var_poisson_model
        variance = np.where(valid & (new_variance > 0), new_variance, np.inf)
        if reject_sigma:
            # Reject before re-weighting: an outlier must not shape the variance model.
            _reject_worst(clean, model, variance, used, rejected, ok, reject_sigma)
    weights = np.where(used, 1.0 / variance, 0.0)
    coefficients, _, ok = solve_rows(clean, weights, basis, pixel_weights=False)
    model = evaluate_rows(coefficients, basis)
    # Further rejection passes touch only the rows that lost a pixel.
    for _ in range(max_iterations if reject_sigma else 0):
        changed = _reject_worst(clean, model, variance, used, rejected, ok, reject_sigma)
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
    # Linear pixel weights of the final solution (for variance propagation).
    weights = np.where(used, 1.0 / variance, 0.0)
    coefficients, pixel_weights, final_ok = solve_rows(clean, weights, basis)
    ok &= final_ok
    coefficients[~ok] = np.nan
    return RowFit(
        coefficients, pixel_weights, model, variance, var_poisson_model, used, rejected, ok
    )
