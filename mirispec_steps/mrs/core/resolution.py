"""MIRI MRS resolving power per band.

``R(lambda) = c0 + c1 (lambda - lambda0) + c2 (lambda - lambda0)^2`` with
per-band coefficients (the packaged defaults are those of Labiano et al.
2021); the spectral resolution element is ``lambda / R``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BandResolution", "ResolvingPower"]


@dataclass(frozen=True)
class BandResolution:
    """
    Resolving power of one band.

    Attributes
    ----------
    wavelength_range : tuple of float
        Band limits (micron).
    reference_wavelength : float
        ``lambda0`` of the polynomial (micron).
    coefficients : tuple of float
        ``(c0, c1, c2)``.
    """

    wavelength_range: tuple[float, float]
    reference_wavelength: float
    coefficients: tuple[float, ...]

    def __call__(self, wavelength: np.ndarray | float) -> np.ndarray:
        """Resolving power at ``wavelength`` (micron)."""
        offset = np.asarray(wavelength, dtype=float) - self.reference_wavelength
        return np.polynomial.polynomial.polyval(offset, self.coefficients)


@dataclass(frozen=True)
class ResolvingPower:
    """
    Resolving power of every band, e.g. ``ResolvingPower(...)["1A"](5.3)``.

    Attributes
    ----------
    bands : dict
        ``BandResolution`` by band name (``1A`` ... ``4C``).
    source : str
        Where the coefficients come from (file name).
    """

    bands: dict
    source: str = ""

    def __getitem__(self, band: str) -> BandResolution:
        """The resolving power of ``band`` (``1A`` ... ``4C``)."""
        return self.bands[band]

    def fwhm(self, band: str, wavelength: np.ndarray | float) -> np.ndarray:
        """Spectral resolution element ``lambda / R`` (micron)."""
        return np.asarray(wavelength, dtype=float) / self.bands[band](wavelength)
