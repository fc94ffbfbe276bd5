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

from mirispec_steps.core.robust import clipped_polyfit

__all__ = [
    "ShiftSolution",
    "best_shift",
    "chi2_curves",
    "fit_shift_polynomial",
    "parabola_minimum",
]


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


def parabola_minimum(grid: np.ndarray, curve: np.ndarray) -> tuple[float, float, bool]:
    """
    Minimum of a sampled chi-square curve, refined by a parabola through its lowest 3 points.

    Parameters
    ----------
    grid : ndarray
        Regularly spaced trial values (shifts, width scales...).
    curve : ndarray
        Chi-square at each trial value.

    Returns
    -------
    (float, float, bool)
        The minimum, its 1-sigma uncertainty (``sqrt(2 / curvature)``;
        infinite when the curve is not convex there), and whether it lies
        on the first or last grid point (the true minimum may lie beyond).

    Examples
    --------
    >>> grid = np.linspace(-1, 1, 9)
    >>> position, error, on_edge = parabola_minimum(grid, 4 * (grid - 0.3) ** 2)
    >>> round(position, 6), round(error, 6), on_edge
    (0.3, 0.5, False)
    """
    lowest = int(np.nanargmin(curve))
    on_edge = lowest in (0, grid.size - 1)
    index = min(max(lowest, 1), grid.size - 2)
    y0, y1, y2 = curve[index - 1 : index + 2]
    step = grid[1] - grid[0]
    curvature = (y0 - 2 * y1 + y2) / step**2
    if not np.isfinite(curvature) or curvature <= 0:
        return float(grid[lowest]), np.inf, on_edge
    position = grid[index] - step * (y2 - y0) / (2 * (y0 - 2 * y1 + y2))
    position = float(np.clip(position, grid[0], grid[-1]))
    # chi2 = chi2_min + curvature/2 (s - s0)^2, so sigma = sqrt(2 / curvature)
    return position, float(np.sqrt(2.0 / curvature)), on_edge


def best_shift(curves: np.ndarray, grid: np.ndarray) -> tuple[float, float, bool]:
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
    (float, float, bool)
        Best offset, its 1-sigma uncertainty (pixels), and whether it lies
        on the edge of the grid (see :func:`parabola_minimum`).
    """
    rows = np.all(np.isfinite(curves), axis=0)
    total = curves[:, rows].sum(axis=1) if rows.any() else np.zeros(grid.size)
    return parabola_minimum(grid, total)


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
        Blocks deviating more than this from the polynomial (in their own
        errors, scaled by the robust scatter) are left out
        (:func:`~mirispec_steps.core.robust.clipped_polyfit`).

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
        position, error, on_edge = parabola_minimum(grid, curves[:, rows].sum(axis=1))
        if np.isfinite(error) and not on_edge:
            centres.append(coordinate[rows].mean())
            shifts.append(position)
            errors.append(error)
    centres, shifts, errors = (np.asarray(v, dtype=float) for v in (centres, shifts, errors))
    if centres.size < order + 2:
        global_shift, _, _ = best_shift(curves, grid)
        return ShiftSolution(
            np.full(n_rows, global_shift), np.array([global_shift]), centres, shifts, errors
        )
    fit = clipped_polyfit(centres, shifts, errors, order, clip_sigma)
    return ShiftSolution(fit(coordinate), fit.coefficients, centres, shifts, errors)
