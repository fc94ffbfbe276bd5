"""Locating a PSF trace by minimising the scene model's chi-square.

The profile position enters the fit non-linearly, so the chi-square of the
linear (amplitude + background) fit is evaluated row by row on a grid of
trial shifts, for all rows at once. Summing the per-row curves over all
rows gives one global shift (what jwst's ``optimize_psf_location`` fits);
summing them over blocks of rows gives local shifts, to which a smooth
polynomial along dispersion is fitted (a trace that drifts from the WCS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["ShiftSolution", "chi2_curves", "best_shift", "fit_shift_polynomial"]


@dataclass
class ShiftSolution:
    """
    A fitted trace offset.

    Attributes
    ----------
    shift : ndarray
        Offset per row (pixels) to add to the nominal trace.
    coefficients : ndarray
        Polynomial coefficients in the normalised row coordinate (lowest
        order first); one value for a global shift.
    block_rows, block_shifts, block_errors : ndarray
        Local solutions the polynomial was fitted to (empty for a global
        shift).
    """

    shift: np.ndarray
    coefficients: np.ndarray
    block_rows: np.ndarray
    block_shifts: np.ndarray
    block_errors: np.ndarray


def chi2_curves(
    chi2_of_shift: Callable[[np.ndarray], np.ndarray], base_shift: np.ndarray, grid: np.ndarray
) -> np.ndarray:
    """
    Per-row chi-square for each trial shift added to ``base_shift``.

    Parameters
    ----------
    chi2_of_shift : callable
        Maps a per-row shift ``(n_rows,)`` to per-row chi-square ``(n_rows,)``
        (NaN for rows without a fit).
    base_shift : ndarray
        ``(n_rows,)`` current shift.
    grid : ndarray
        ``(n_trials,)`` offsets to try.

    Returns
    -------
    ndarray
        ``(n_trials, n_rows)``.
    """
    return np.array([chi2_of_shift(base_shift + offset) for offset in grid])


def _parabola_minimum(grid, curve):
    """Minimum of a sampled curve refined by a parabola through its lowest 3 points."""
    index = int(np.nanargmin(curve))
    index = min(max(index, 1), grid.size - 2)
    y0, y1, y2 = curve[index - 1 : index + 2]
    step = grid[1] - grid[0]
    curvature = (y0 - 2 * y1 + y2) / step**2
    if not np.isfinite(curvature) or curvature <= 0:
        return float(grid[int(np.nanargmin(curve))]), np.inf
    position = grid[index] - step * (y2 - y0) / (2 * (y0 - 2 * y1 + y2))
    position = float(np.clip(position, grid[0], grid[-1]))
    # chi2 = chi2_min + curvature/2 (s - s0)^2, so sigma = sqrt(2 / curvature)
    return position, float(np.sqrt(2.0 / curvature))


def best_shift(curves: np.ndarray, grid: np.ndarray) -> tuple[float, float]:
    """
    Global shift minimising the chi-square summed over rows.

    Parameters
    ----------
    curves : ndarray
        ``(n_trials, n_rows)`` from :func:`chi2_curves`.
    grid : ndarray
        The trial offsets.

    Returns
    -------
    (float, float)
        Best offset and its 1-sigma uncertainty (pixels).
    """
    rows = np.all(np.isfinite(curves), axis=0)
    total = curves[:, rows].sum(axis=1) if rows.any() else np.zeros(grid.size)
    return _parabola_minimum(grid, total)


def fit_shift_polynomial(
    curves: np.ndarray,
    grid: np.ndarray,
    order: int,
    block_size: int = 16,
    clip_sigma: float = 4.0,
) -> ShiftSolution:
    """
    Smooth offset along dispersion: local minima in blocks of rows, polynomial fit.

    Parameters
    ----------
    curves : ndarray
        ``(n_trials, n_rows)`` per-row chi-square curves, offsets relative to
        the trace the curves were computed around.
    grid : ndarray
        The trial offsets.
    order : int
        Polynomial order in the normalised row coordinate.
    block_size : int
        Rows summed per local solution.
    clip_sigma : float
        Blocks deviating more than this (in their own errors, after scaling by
        the scatter) are rejected once.

    Returns
    -------
    ShiftSolution
        Per-row offsets relative to that trace.
    """
    n_rows = curves.shape[1]
    coordinate = np.linspace(-1.0, 1.0, n_rows)
    finite_rows = np.all(np.isfinite(curves), axis=0)
    centres, shifts, errors = [], [], []
    for start in range(0, n_rows, block_size):
        rows = np.arange(start, min(start + block_size, n_rows))
        rows = rows[finite_rows[rows]]
        if rows.size < max(2, block_size // 4):
            continue
        position, error = _parabola_minimum(grid, curves[:, rows].sum(axis=1))
        if np.isfinite(error) and grid[0] < position < grid[-1]:
            centres.append(coordinate[rows].mean())
            shifts.append(position)
            errors.append(error)
    centres, shifts, errors = (np.asarray(v, dtype=float) for v in (centres, shifts, errors))
    if centres.size < order + 2:
        global_shift, _ = best_shift(curves, grid)
        return ShiftSolution(
            np.full(n_rows, global_shift), np.array([global_shift]), centres, shifts, errors
        )
    keep = np.ones(centres.size, dtype=bool)
    for _ in range(2):
        coefficients = np.polynomial.polynomial.polyfit(
            centres[keep], shifts[keep], order, w=1.0 / errors[keep]
        )
        residual = (shifts - np.polynomial.polynomial.polyval(centres, coefficients)) / errors
        scatter = max(1.0, float(np.sqrt(np.mean(residual[keep] ** 2))))
        new_keep = np.abs(residual) < clip_sigma * scatter
        if np.array_equal(new_keep, keep) or new_keep.sum() < order + 2:
            break
        keep = new_keep
    shift = np.polynomial.polynomial.polyval(coordinate, coefficients)
    return ShiftSolution(shift, coefficients, centres, shifts, errors)
