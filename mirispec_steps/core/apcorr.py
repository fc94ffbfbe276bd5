"""Aperture correction tables evaluated on whole spectra at once (pure NumPy)."""

from __future__ import annotations

import numpy as np

__all__ = ["bilinear_clamped", "tabulated_correction"]


def _bracket(grid: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower grid index and fractional position of each value, clamped to the grid."""
    clamped = np.clip(values, grid[0], grid[-1])
    index = np.clip(np.searchsorted(grid, clamped, side="right") - 1, 0, grid.size - 2)
    step = grid[index + 1] - grid[index]
    return index, (clamped - grid[index]) / step


def bilinear_clamped(
    size_grid: np.ndarray,
    wavelength_grid: np.ndarray,
    table: np.ndarray,
    size: np.ndarray,
    wavelength: np.ndarray,
) -> np.ndarray:
    """
    Bilinear interpolation in a (wavelength, size) table, constant outside it.

    Parameters
    ----------
    size_grid : ndarray
        Increasing aperture sizes of the table columns.
    wavelength_grid : ndarray
        Increasing wavelengths of the table rows.
    table : ndarray
        Values, shape ``(wavelength_grid.size, size_grid.size)``.
    size, wavelength : ndarray
        Points at which to evaluate (same shape).

    Returns
    -------
    ndarray
        Interpolated values.

    Notes
    -----
    This is what jwst's ``RectBivariateSpline(size, wavelength, table.T,
    kx=1, ky=1)`` returns (FITPACK clamps arguments to the table), evaluated
    for all points in one call instead of one row at a time.
    """
    size = np.asarray(size, dtype=float)
    wavelength = np.asarray(wavelength, dtype=float)
    if size_grid.size == 1 and wavelength_grid.size == 1:
        return np.full(np.broadcast(size, wavelength).shape, float(table[0, 0]))
    si, sf = _bracket(size_grid, size) if size_grid.size > 1 else (0 * size.astype(int), 0 * size)
    wi, wf = (
        _bracket(wavelength_grid, wavelength)
        if wavelength_grid.size > 1
        else (0 * wavelength.astype(int), 0 * wavelength)
    )
    s1 = np.minimum(si + 1, size_grid.size - 1)
    w1 = np.minimum(wi + 1, wavelength_grid.size - 1)
    return (
        table[wi, si] * (1 - wf) * (1 - sf)
        + table[wi, s1] * (1 - wf) * sf
        + table[w1, si] * wf * (1 - sf)
        + table[w1, s1] * wf * sf
    )


def tabulated_correction(
    size_grid: np.ndarray,
    wavelength_grid: np.ndarray,
    table: np.ndarray,
    npixels: np.ndarray,
    wavelength: np.ndarray,
) -> np.ndarray:
    """
    Aperture correction factors for a spectrum (or a stack of spectra).

    Parameters
    ----------
    size_grid, wavelength_grid, table : ndarray
        The reference table, as in :func:`bilinear_clamped`; the wavelength
        axis may be in any order.
    npixels : ndarray
        Aperture width (NPIXELS) per spectral element.
    wavelength : ndarray
        Wavelength per spectral element.

    Returns
    -------
    ndarray
        Multiplicative correction for FLUX (square it for variances).
    """
    order = np.argsort(wavelength_grid)
    return bilinear_clamped(
        np.asarray(size_grid, dtype=float),
        np.asarray(wavelength_grid, dtype=float)[order],
        np.asarray(table, dtype=float)[order],
        npixels,
        wavelength,
    )
