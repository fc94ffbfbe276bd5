"""Levenberg-Marquardt for many small independent least-squares problems at once.

Every problem ``k`` has its own parameters ``p_k`` (``P`` of them) and data
``y_k`` on up to ``M`` points (padded, zero weight). One iteration computes
all residuals and a forward-difference Jacobian with ``P + 1`` vectorised
model evaluations, then solves the ``K`` damped normal equations with one
batched ``numpy.linalg.solve``. Problems that converge stop changing; the
loop ends when all have converged or after ``max_iterations``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

__all__ = ["BatchedFit", "batched_least_squares", "numerical_jacobian"]

#: Points (rows x columns) fitted together: about 130 kB per array.
BLOCK_POINTS = 16384


@dataclass
class BatchedFit:
    """
    Result of :func:`batched_least_squares`.

    Attributes
    ----------
    params : ndarray
        ``(K, P)`` best-fit parameters.
    covariance : ndarray
        ``(K, P, P)`` inverse of ``J^T W J`` at the solution (NaN where singular).
    chi2 : ndarray
        ``(K,)`` weighted sum of squared residuals.
    dof : ndarray
        ``(K,)`` points with weight minus parameters.
    converged : ndarray
        ``(K,)`` an accepted step lowered the chi-square by less than the tolerance.
    stalled : ndarray
        ``(K,)`` no step lowered the chi-square even with the heaviest damping
        (at a minimum to numerical precision, or stuck). Rows with a
        non-finite starting chi-square, and rows still improving when the
        iterations ran out, are neither converged nor stalled.
    """

    params: np.ndarray
    covariance: np.ndarray
    chi2: np.ndarray
    dof: np.ndarray
    converged: np.ndarray
    stalled: np.ndarray

    #: The per-row arrays, in constructor order.
    FIELDS: ClassVar[tuple[str, ...]] = (
        "params",
        "covariance",
        "chi2",
        "dof",
        "converged",
        "stalled",
    )

    @property
    def finished(self) -> np.ndarray:
        """``(K,)`` rows that reached a minimum (converged or stalled) from a finite start."""
        return (self.converged | self.stalled) & np.isfinite(self.chi2)

    def replace_rows(self, rows: np.ndarray, other: BatchedFit) -> None:
        """Overwrite rows ``rows`` with the rows of ``other`` (a fit of those rows)."""
        for name in self.FIELDS:
            getattr(self, name)[rows] = getattr(other, name)

    @property
    def errors(self) -> np.ndarray:
        """``(K, P)`` square roots of the covariance diagonal."""
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.diagonal(self.covariance, axis1=1, axis2=2))


def numerical_jacobian(model: Callable, steps: np.ndarray) -> Callable:
    """
    Wrap ``model(params, rows)`` into ``evaluate(params, rows, jacobian)`` by forward differences.

    Parameters
    ----------
    model : callable
        ``model(params, rows)``: ``(R, P)`` parameters of rows ``rows`` -> ``(R, M)``.
    steps : ndarray
        ``(P,)`` finite-difference steps.

    Returns
    -------
    callable
        ``evaluate(params, rows, jacobian)`` returning values, or values
        and the ``(R, M, P)`` Jacobian.
    """
    steps = np.asarray(steps, dtype=float)

    def evaluate(params, rows, jacobian=False):
        values = model(params, rows)
        if not jacobian:
            return values
        columns = []
        for index, step in enumerate(steps):
            shifted = params.copy()
            shifted[:, index] += step
            columns.append((model(shifted, rows) - values) / step)
        return values, np.stack(columns, axis=-1)

    return evaluate


def batched_least_squares(
    evaluate: Callable,
    initial: np.ndarray,
    data: np.ndarray,
    weight: np.ndarray,
    max_iterations: int = 30,
    tolerance: float = 1e-2,
) -> BatchedFit:
    """
    Minimise ``sum(weight * (data - model(p))**2)`` for every row independently.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(params, rows, jacobian)``: for the ``(R, P)`` parameters
        of rows ``rows`` (indices into ``data``) return the ``(R, M)`` model,
        and with ``jacobian=True`` also its ``(R, M, P)`` derivatives
        (see :func:`numerical_jacobian`).
    initial : ndarray
        ``(K, P)`` starting parameters.
    data : ndarray
        ``(K, M)`` values (anything finite where ``weight`` is 0).
    weight : ndarray
        ``(K, M)`` inverse variances; 0 for padding and rejected points.
    max_iterations : int
        Iteration limit.
    tolerance : float
        Convergence when an accepted step lowers the chi-square by less
        than this (0.01 moves any parameter by about a tenth of its error).

    Returns
    -------
    BatchedFit
        Parameters, covariance, chi-square, degrees of freedom, and how each
        row ended (converged, stalled, or neither).

    Notes
    -----
    Levenberg-Marquardt with Marquardt's diagonal scaling: the damping of a
    row is divided by 10 after an accepted step and multiplied by 10 after
    a rejected one. Each iteration works on the rows that have not
    converged only, so a few slow rows cost little. Every trial is evaluated
    with its derivatives, which an accepted trial hands to the next
    iteration; the covariance is computed at the solution. Rows are fitted
    in blocks of about ``BLOCK_POINTS`` points (independent problems, so the
    result does not depend on the blocking).
    """
    initial = np.asarray(initial, dtype=float)
    # The rows are independent: fitting them in blocks keeps every array of an
    # iteration in the processor cache, which halves the time of large problems.
    block = max(1, BLOCK_POINTS // max(data.shape[1], 1))
    parts = []
    for first in range(0, max(initial.shape[0], 1), block):
        rows = np.arange(first, min(first + block, initial.shape[0]))

        def evaluate_block(params, block_rows, jacobian=False, rows=rows):
            return evaluate(params, rows[block_rows], jacobian)

        # Trial steps may overflow (e.g. exp of a log-width): such rows are simply rejected.
        with np.errstate(all="ignore"):
            parts.append(
                _levenberg_marquardt(
                    evaluate_block,
                    initial[rows],
                    data[rows],
                    weight[rows],
                    max_iterations,
                    tolerance,
                )
            )
    if len(parts) == 1:
        return parts[0]
    return BatchedFit(
        *(np.concatenate([getattr(part, name) for part in parts]) for name in BatchedFit.FIELDS)
    )


def _levenberg_marquardt(evaluate, initial, data, weight, max_iterations, tolerance):
    params = np.array(initial, dtype=float)
    n_rows, n_params = params.shape
    damping = np.full(n_rows, 1e-3)
    converged = np.zeros(n_rows, dtype=bool)
    stalled = np.zeros(n_rows, dtype=bool)
    identity = np.eye(n_params)
    all_rows = np.arange(n_rows)

    def chi_square(values, rows):
        residual = np.where(weight[rows] > 0, data[rows] - values, 0.0)
        return np.sum(weight[rows] * residual * residual, axis=1), residual

    # Trials are evaluated with their Jacobian: an accepted trial's values and
    # derivatives are those of the next iteration, so each costs one evaluation.
    values, jacobian = evaluate(params, all_rows, jacobian=True)
    chi2, _ = chi_square(values, all_rows)
    # Rows that cannot even be evaluated at their start are not iterated.
    hopeless = ~np.isfinite(chi2)
    for _ in range(max_iterations):
        rows = np.flatnonzero(~(converged | stalled | hopeless))
        if rows.size == 0:
            break
        _, residual = chi_square(values[rows], rows)
        row_jacobian = jacobian[rows]
        weighted = row_jacobian * weight[rows][:, :, None]
        normal = np.matmul(weighted.transpose(0, 2, 1), row_jacobian)
        gradient = np.matmul(weighted.transpose(0, 2, 1), residual[:, :, None])[:, :, 0]
        scale = np.diagonal(normal, axis1=1, axis2=2).copy()
        scale[scale <= 0] = 1.0
        damped = normal + damping[rows, None, None] * scale[:, :, None] * identity
        with np.errstate(all="ignore"):
            try:
                update = np.linalg.solve(damped, gradient[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                update = _solve_each(damped, gradient)
        update[~np.all(np.isfinite(update), axis=1)] = 0.0
        trial = params[rows] + update
        trial_values, trial_jacobian = evaluate(trial, rows, jacobian=True)
        trial_chi2, _ = chi_square(trial_values, rows)
        better = np.isfinite(trial_chi2) & (trial_chi2 <= chi2[rows])
        decrease = np.where(better, chi2[rows] - trial_chi2, 0.0)
        accepted = rows[better]
        params[accepted] = trial[better]
        chi2[accepted] = trial_chi2[better]
        values[accepted] = trial_values[better]
        jacobian[accepted] = trial_jacobian[better]
        converged[accepted[decrease[better] < tolerance]] = True
        # A row whose step fails even with heavy damping cannot go further.
        rejected = rows[~better]
        stalled[rejected[damping[rejected] > 1e6]] = True
        damping[accepted] /= 10.0
        damping[rejected] *= 10.0
    weighted = jacobian * weight[:, :, None]
    normal = np.matmul(weighted.transpose(0, 2, 1), jacobian)
    covariance = _invert_each(normal)
    dof = np.sum(weight > 0, axis=1) - n_params
    return BatchedFit(params, covariance, chi2, dof, converged, stalled)


def _solve_each(matrices: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Row-by-row solve where the batched solve meets a singular matrix."""
    result = np.zeros_like(vectors)
    for row, (matrix, vector) in enumerate(zip(matrices, vectors, strict=True)):
        try:
            result[row] = np.linalg.solve(matrix, vector)
        except np.linalg.LinAlgError:
            result[row] = 0.0
    return result


def _invert_each(matrices: np.ndarray) -> np.ndarray:
    """Batched inverse, NaN for singular or non-finite matrices."""
    result = np.full_like(matrices, np.nan)
    finite = np.all(np.isfinite(matrices), axis=(1, 2))
    if not np.any(finite):
        return result
    good = matrices[finite]
    determinant_ok = np.abs(np.linalg.det(good)) > 0
    inverse = np.full_like(good, np.nan)
    if np.any(determinant_ok):
        inverse[determinant_ok] = np.linalg.inv(good[determinant_ok])
    result[finite] = inverse
    return result
