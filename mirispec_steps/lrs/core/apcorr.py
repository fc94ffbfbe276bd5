"""Aperture correction tables evaluated on whole spectra at once."""

from __future__ import annotations

import numpy as np
from scipy.interpolate import RectBivariateSpline

__all__ = ["tabulated_correction"]


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
    size_grid : ndarray
        Strictly increasing aperture sizes of the table columns (2 or more).
    wavelength_grid : ndarray
        Strictly increasing wavelengths of the table rows (2 or more).
    table : ndarray
        Corrections, ``(wavelength_grid.size, size_grid.size)``.
    npixels : ndarray
        Aperture width (NPIXELS) per spectral element.
    wavelength : ndarray
        Wavelength per spectral element (same shape as ``npixels``).

    Returns
    -------
    ndarray
        Multiplicative correction for FLUX (square it for variances); NaN
        where the size or the wavelength is not finite.

    Notes
    -----
    jwst's interpolation (``RectBivariateSpline(size, wavelength, table.T,
    kx=1, ky=1)``: bilinear, constant beyond the table), evaluated for all
    elements in one call instead of one row at a time.

    Examples
    --------
    >>> sizes, waves = np.array([1.0, 3.0]), np.array([5.0, 10.0])
    >>> table = np.array([[2.0, 1.0], [3.0, 1.5]])
    >>> tabulated_correction(sizes, waves, table, np.array([2.0, 9.0]), np.array([5.0, 20.0]))
    array([1.5, 1.5])
    """
    interpolator = RectBivariateSpline(
        np.asarray(size_grid, dtype=float),
        np.asarray(wavelength_grid, dtype=float),
        np.asarray(table, dtype=float).T,
        kx=1,
        ky=1,
    )
    npixels = np.asarray(npixels, dtype=float)
    wavelength = np.broadcast_to(np.asarray(wavelength, dtype=float), npixels.shape)
    known = np.isfinite(npixels) & np.isfinite(wavelength)
    correction = np.full(npixels.shape, np.nan)
    correction[known] = interpolator.ev(npixels[known], wavelength[known])
    return correction
