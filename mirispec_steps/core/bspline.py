"""B-spline values at many points at once (de Boor's recursion, vectorised over points)."""

from __future__ import annotations

import numpy as np

__all__ = ["bspline_values"]


def bspline_values(
    points: np.ndarray, knots: np.ndarray, degree: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """
    The ``degree + 1`` non-zero B-splines at each point.

    Parameters
    ----------
    points : ndarray
        ``(N,)`` evaluation points, inside ``[knots[degree], knots[-degree - 1])``.
    knots : ndarray
        Strictly increasing knots.
    degree : int
        Spline degree.

    Returns
    -------
    values : ndarray
        ``(N, degree + 1)`` the non-zero B-splines at each point.
    first : ndarray
        ``(N,)`` index of the first of them.

    Notes
    -----
    The same recursion as scipy's ``BSpline.design_matrix``, without its
    per-call checks (which loop over the points in Python).

    Examples
    --------
    >>> import numpy as np
    >>> values, first = bspline_values(np.array([3.5]), np.arange(8.0), 3)
    >>> round(float(values.sum()), 12), int(first[0])
    (1.0, 0)
    """
    points = np.asarray(points, dtype=float)
    interval = np.searchsorted(knots, points, side="right") - 1
    left = np.empty((points.size, degree))
    right = np.empty((points.size, degree))
    values = np.ones((points.size, 1))
    for order in range(1, degree + 1):
        left[:, order - 1] = points - knots[interval + 1 - order]
        right[:, order - 1] = knots[interval + order] - points
        raised = np.empty((points.size, order + 1))
        carried = np.zeros(points.size)
        for r in range(order):
            share = values[:, r] / (right[:, r] + left[:, order - 1 - r])
            raised[:, r] = carried + right[:, r] * share
            carried = left[:, order - 1 - r] * share
        raised[:, order] = carried
        values = raised
    return values, interval - degree
