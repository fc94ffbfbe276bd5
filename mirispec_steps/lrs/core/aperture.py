"""Aperture weights for box extraction (pure NumPy).

Arrays are *dispersion-major*: shape ``(n_disp, n_xdisp)``, one row per
dispersion element (a detector row for MIRI LRS), one column per
cross-dispersion pixel. Limits follow jwst's extract_1d conventions exactly:

- ``start``/``stop`` limits are pixel indices, inclusive; a limit of 1.7
  includes 30% of pixel 1 (fractional weights at both ends);
- polynomial ``src_coeff``/``bkg_coeff`` limits are pixel *edges* measured
  from pixel centres, so they are turned into inclusive limits by adding
  0.5 to the lower and subtracting 0.5 from the upper value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "fractional_weights",
    "regions_from_coefficients",
    "centred_region",
    "profile_from_regions",
    "profile_centre",
]

Region = tuple[np.ndarray, np.ndarray]


def fractional_weights(
    xdisp_index: np.ndarray,
    lower: np.ndarray | float,
    upper: np.ndarray | float,
    profile: np.ndarray,
    allow_partial: bool = True,
) -> np.ndarray:
    """
    Add one aperture region, given by inclusive limits, to a weight image.

    Parameters
    ----------
    xdisp_index : ndarray
        Cross-dispersion pixel index of each column, shape ``(n_xdisp,)``.
    lower, upper : float or ndarray
        Inclusive lower and upper limits: scalars, one per dispersion element
        ``(n_disp,)``, or one per pixel ``(n_disp, n_xdisp)`` (limits that are
        polynomials of each pixel's own wavelength).
    profile : ndarray
        Weight image ``(n_disp, n_xdisp)``, updated in place and returned.
    allow_partial : bool, optional
        Give partially covered edge pixels their covered fraction; otherwise
        only fully covered pixels count.

    Returns
    -------
    ndarray
        ``profile``, with pixels inside the region set to 1 and edge pixels
        to their covered fraction (never lowering an existing weight).

    Notes
    -----
    Identical to jwst's ``_set_weight_from_limits``: a pixel with index ``i``
    gets ``i - lower + 1`` at the lower edge and ``upper - i + 1`` at the
    upper edge when that lies strictly between 0 and 1.

    Examples
    --------
    >>> import numpy as np
    >>> fractional_weights(np.arange(5.0), 1.7, 3.0, np.zeros((1, 5)))
    array([[0. , 0.3, 1. , 1. , 0. ]])
    """
    index = np.broadcast_to(xdisp_index[np.newaxis, :], profile.shape)
    lower_2d = _as_limit_image(lower, profile.shape)
    upper_2d = _as_limit_image(upper, profile.shape)
    profile[(index >= lower_2d) & (index <= upper_2d)] = 1.0
    if allow_partial:
        for partial in (index - lower_2d + 1.0, upper_2d - index + 1.0):
            take = (partial > 0) & (partial < 1) & (profile < partial)
            profile[take] = partial[take]
    return profile


def _as_limit_image(limit, shape: tuple[int, int]) -> np.ndarray:
    limit = np.asarray(limit, dtype=float)
    if limit.ndim == 1:
        limit = limit.reshape(-1, 1)
    return np.broadcast_to(limit, shape)


def _polynomial(coefficients: Sequence[float], x: np.ndarray) -> np.ndarray:
    """Evaluate a polynomial given constant-term-first coefficients."""
    return np.polynomial.polynomial.polyval(x, np.asarray(coefficients, dtype=float))


def regions_from_coefficients(
    coefficients: Sequence[Sequence[float]], independent: np.ndarray
) -> list[Region]:
    """
    Inclusive limits of regions given as polynomial edges (jwst's ``*_coeff``).

    Parameters
    ----------
    coefficients : list of list of float
        Alternating lower and upper edge polynomials, constant term first.
    independent : ndarray
        The independent variable: dispersion pixel index per element
        ``(n_disp,)``, or the wavelength of every pixel ``(n_disp, n_xdisp)``.

    Returns
    -------
    list of (ndarray, ndarray)
        Inclusive (lower, upper) limits per region, shaped like ``independent``.
    """
    regions = []
    for lower_coeff, upper_coeff in zip(coefficients[::2], coefficients[1::2], strict=True):
        lower = _polynomial(lower_coeff, independent) + 0.5
        upper = _polynomial(upper_coeff, independent) - 0.5
        regions.append((lower, upper))
    return regions


def centred_region(centre: np.ndarray | float, width: float) -> Region:
    """
    Inclusive limits of a region of ``width`` pixels centred on ``centre``.

    Parameters
    ----------
    centre : float or ndarray
        Centre in pixel index (a trace, or a fixed position).
    width : float
        Full width in pixels.

    Returns
    -------
    (ndarray, ndarray)
        Inclusive lower and upper limits.
    """
    lower = np.asarray(centre, dtype=float) - (width - 1.0) / 2.0
    return lower, lower + width - 1.0


def profile_from_regions(
    regions: Sequence[Region],
    xdisp_index: np.ndarray,
    n_disp: int,
    allow_partial: bool = True,
) -> np.ndarray:
    """
    Weight image of the union of several regions.

    Parameters
    ----------
    regions : list of (ndarray, ndarray)
        Inclusive limits per region.
    xdisp_index : ndarray
        Cross-dispersion pixel index of each column.
    n_disp : int
        Number of dispersion elements.
    allow_partial : bool, optional
        Keep fractional edge weights.

    Returns
    -------
    ndarray
        Weights in [0, 1], shape ``(n_disp, n_xdisp)``.
    """
    profile = np.zeros((n_disp, xdisp_index.size))
    for lower, upper in regions:
        fractional_weights(xdisp_index, lower, upper, profile, allow_partial)
    return profile


def profile_centre(profile_row: np.ndarray, xdisp_index: np.ndarray) -> float:
    """
    Weighted mean cross-dispersion position of one row of an aperture.

    Parameters
    ----------
    profile_row : ndarray
        Aperture weights of one dispersion element.
    xdisp_index : ndarray
        Cross-dispersion pixel index of each column.

    Returns
    -------
    float
        The weighted centre (plain mean if the row has no weight).
    """
    weights = np.clip(profile_row, 0.0, None)
    if weights.sum() == 0:
        weights = np.ones_like(weights)
    return float(np.average(xdisp_index, weights=weights))
