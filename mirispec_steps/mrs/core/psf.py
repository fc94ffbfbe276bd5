"""The package's analytic MIRI MRS point-spread function, integrated over pixel footprints.

The PSF in the (alpha, beta) plane is the sum of two axis-aligned elliptical
Gaussians with a common centre: a core whose along-slice FWHM grows linearly
with wavelength (``fwhm = slope * lambda + offset``; Law et al. 2023 measured
0.033 arcsec/micron and 0.106 arcsec) and which is slightly broader across
slices (``axis_ratio`` < 1), plus a faint broad component for the wings.
Being separable, it integrates exactly over the rectangular footprint of an
MRS pixel (its along-slice edges times the slice's beta edges) with error
functions: no sub-sampling and no quadrature error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirispec_steps.core.gaussian import FWHM_TO_SIGMA, gaussian_interval

__all__ = ["CubePsf", "MrsPsf", "gaussian_footprint_fraction", "half_maximum_width"]


def gaussian_footprint_fraction(
    alpha_low: np.ndarray,
    alpha_high: np.ndarray,
    beta_low: np.ndarray,
    beta_high: np.ndarray,
    alpha_centre: float | np.ndarray,
    beta_centre: float | np.ndarray,
    sigma_alpha: float | np.ndarray,
    sigma_beta: float | np.ndarray,
) -> np.ndarray:
    """
    Fraction of a unit axis-aligned 2-D Gaussian falling in each rectangle.

    Parameters
    ----------
    alpha_low, alpha_high, beta_low, beta_high : ndarray
        Rectangle edges (arcsec).
    alpha_centre, beta_centre : float or ndarray
        Gaussian centre.
    sigma_alpha, sigma_beta : float or ndarray
        Standard deviations along alpha and beta.

    Returns
    -------
    ndarray
        The enclosed fraction of each rectangle, in [0, 1].

    Examples
    --------
    >>> float(gaussian_footprint_fraction(-1e3, 1e3, -1e3, 1e3, 0.0, 0.0, 0.3, 0.3))
    1.0
    """
    along = gaussian_interval(alpha_low, alpha_high, alpha_centre, sigma_alpha)
    across = gaussian_interval(beta_low, beta_high, beta_centre, sigma_beta)
    return along * across


@dataclass(frozen=True)
class MrsPsf:
    """
    Analytic MRS PSF: an elliptical Gaussian core plus broad Gaussian wings.

    Attributes
    ----------
    fwhm_slope : float
        Along-slice core FWHM growth (arcsec per micron).
    fwhm_offset : float
        Along-slice core FWHM at zero wavelength (arcsec).
    axis_ratio : float
        Along-slice over across-slice core FWHM (the PSF is broader across
        slices, where the slicer samples it coarsely).
    wing_fraction : float
        Share of the light in the wing component.
    wing_scale : float
        Wing FWHM in units of the core FWHM.

    Notes
    -----
    With ``w = wing_fraction`` the normalised surface density is
    ``(1 - w) G(fwhm) + w G(wing_scale * fwhm)``, so the light falling
    on any set of pixel footprints is a sum of error-function products
    (:func:`gaussian_footprint_fraction`), exact to floating point.

    Examples
    --------
    >>> psf = MrsPsf()
    >>> round(float(psf.fwhm(10.0)), 3)
    0.436
    """

    fwhm_slope: float = 0.033
    fwhm_offset: float = 0.106
    axis_ratio: float = 0.9
    wing_fraction: float = 0.1
    wing_scale: float = 3.0

    def fwhm(self, wavelength: np.ndarray | float) -> np.ndarray:
        """Along-slice core FWHM (arcsec) at ``wavelength`` (micron)."""
        return self.fwhm_slope * np.asarray(wavelength, dtype=float) + self.fwhm_offset

    def core_sigmas(self, wavelength: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Core standard deviations along alpha and beta (arcsec)."""
        sigma_alpha = self.fwhm(wavelength) * FWHM_TO_SIGMA
        return sigma_alpha, sigma_alpha / self.axis_ratio

    def footprint_fraction(
        self,
        alpha_low: np.ndarray,
        alpha_high: np.ndarray,
        beta_low: np.ndarray,
        beta_high: np.ndarray,
        alpha_centre: float | np.ndarray,
        beta_centre: float | np.ndarray,
        wavelength: np.ndarray,
    ) -> np.ndarray:
        """
        Share of a point source's light falling on each pixel footprint.

        Parameters
        ----------
        alpha_low, alpha_high, beta_low, beta_high : ndarray
            Footprint edges (arcsec).
        alpha_centre, beta_centre : float or ndarray
            Source position (arcsec).
        wavelength : ndarray
            Wavelength of each footprint (micron).

        Returns
        -------
        ndarray
            Enclosed fraction per footprint.
        """
        sigma_alpha, sigma_beta = self.core_sigmas(wavelength)
        edges = (alpha_low, alpha_high, beta_low, beta_high, alpha_centre, beta_centre)
        core = gaussian_footprint_fraction(*edges, sigma_alpha, sigma_beta)
        if self.wing_fraction <= 0:
            return core
        wings = gaussian_footprint_fraction(
            *edges, self.wing_scale * sigma_alpha, self.wing_scale * sigma_beta
        )
        return (1.0 - self.wing_fraction) * core + self.wing_fraction * wings

    def density(
        self,
        alpha: np.ndarray,
        beta: np.ndarray,
        alpha_centre: float | np.ndarray,
        beta_centre: float | np.ndarray,
        wavelength: np.ndarray,
    ) -> np.ndarray:
        """Normalised surface density (per arcsec^2) at points (alpha, beta)."""
        sigma_alpha, sigma_beta = self.core_sigmas(wavelength)
        total = 0.0
        components = ((1.0 - self.wing_fraction, 1.0), (self.wing_fraction, self.wing_scale))
        for weight, scale in components:
            if weight <= 0:
                continue
            sa, sb = scale * sigma_alpha, scale * sigma_beta
            exponent = ((alpha - alpha_centre) / sa) ** 2 + ((beta - beta_centre) / sb) ** 2
            total = total + weight * np.exp(-0.5 * exponent) / (2.0 * np.pi * sa * sb)
        return total


def _cell_edges(centres: np.ndarray) -> np.ndarray:
    """Edges of regularly spaced cells given their centres."""
    step = centres[1] - centres[0]
    return np.concatenate([centres - 0.5 * step, [centres[-1] + 0.5 * step]])


def half_maximum_width(profile: np.ndarray, coordinate: np.ndarray) -> float:
    """Full width at half maximum of a sampled single-peaked profile (linear interpolation).

    NaN when the profile does not fall to half its peak on both sides.
    """
    peak = int(np.argmax(profile))
    half = 0.5 * profile[peak]
    below = np.flatnonzero(profile[:peak] < half)
    above = np.flatnonzero(profile[peak:] < half)
    if below.size == 0 or above.size == 0:
        return float("nan")
    left, right = below[-1], peak + above[0]
    left_x = np.interp(half, profile[left : left + 2], coordinate[left : left + 2])
    right_x = np.interp(
        half, profile[right - 1 : right + 1][::-1], coordinate[right - 1 : right + 1][::-1]
    )
    return float(right_x - left_x)


class CubePsf:
    """
    A PSF sampled on a regular (alpha, beta) grid at several wavelengths.

    Each cell's value is the mean surface density over that cell, so the
    cumulative sums of the cells give the light below and left of every
    cell corner exactly; the light on any rectangle comes from that table
    interpolated with a cubic kernel (third order in the cell size, so a
    smooth PSF sampled at FWHM / 8 is integrated to ~1e-4 of the peak).
    Between wavelength planes the enclosed fractions are interpolated
    linearly.

    Parameters
    ----------
    wavelength : ndarray
        ``(W,)`` increasing plane wavelengths (micron).
    alpha, beta : ndarray
        ``(A,)`` and ``(B,)`` regularly spaced cell centres, offsets from
        the PSF centre (arcsec).
    data : ndarray
        ``(W, B, A)`` surface density (any scale: each plane is normalised
        to ``enclosed``; small negative values, as a measured PSF may have
        where pixels do not resolve it, are kept).
    enclosed : ndarray or None
        ``(W,)`` share of the source's light inside the cube at each plane;
        default 1 (no light beyond the cube).

    Notes
    -----
    Without ``enclosed``, light beyond the cube is taken as absent: a cube
    must then be large enough to hold the wings that matter. A cube measured
    on a star of known spectrum (``mrs_psf`` with ``star_spectrum``) carries
    the measured ``enclosed``, which accounts for the light no pixel sees.
    """

    def __init__(self, wavelength, alpha, beta, data, enclosed=None):
        self.wavelength = np.asarray(wavelength, dtype=float)
        self.alpha = np.asarray(alpha, dtype=float)
        self.beta = np.asarray(beta, dtype=float)
        density = np.asarray(data, dtype=float)
        self._alpha_edges = _cell_edges(self.alpha)
        self._beta_edges = _cell_edges(self.beta)
        # A measured cube may dip below zero where pixels do not resolve the PSF: what it
        # predicts for pixel footprints is what was measured, so its cells are kept as they are.
        cells = density
        cumulative = np.zeros((density.shape[0], self.beta.size + 1, self.alpha.size + 1))
        cumulative[:, 1:, 1:] = cells.cumsum(axis=1).cumsum(axis=2)
        self.enclosed = (
            np.ones(self.wavelength.size) if enclosed is None else np.asarray(enclosed, float)
        )
        cumulative *= self.enclosed[:, None, None] / cumulative[:, -1:, -1:]
        #: ``(W, B + 1, A + 1)`` share of each plane's light below and left of each cell corner.
        self.cumulative = cumulative
        # The table with its edge values repeated (one corner below, two above on each axis):
        # the cubic kernel's 4 x 4 corners are then fixed offsets from the first, one flat
        # gather each, where clipped 3-D indexing cost most of a footprint's time.
        padded = np.pad(cumulative, ((0, 0), (1, 2), (1, 2)), mode="edge")
        self._flat_cumulative = padded.ravel()
        self._row_stride = padded.shape[2]
        self._plane_stride = padded.shape[1] * padded.shape[2]
        centre_row = int(np.argmin(np.abs(self.beta)))
        self._fwhm = np.array(
            [half_maximum_width(plane[centre_row], self.alpha) for plane in cells]
        )

    @property
    def wavelength_range(self) -> tuple[float, float]:
        """Shortest and longest plane wavelength."""
        return float(self.wavelength[0]), float(self.wavelength[-1])

    def fwhm(self, wavelength: np.ndarray | float) -> np.ndarray:
        """Along-slice FWHM (arcsec) of the central row, interpolated in wavelength."""
        return np.interp(np.asarray(wavelength, dtype=float), self.wavelength, self._fwhm)

    @staticmethod
    def _axis(coordinate, edges) -> tuple:
        """First of the four corners along one axis and Keys' cubic weights of all four."""
        position = np.clip((coordinate - edges[0]) / (edges[1] - edges[0]), 0, edges.size - 1)
        first = np.minimum(np.floor(position).astype(int), edges.size - 2)
        t = position - first
        weights = (
            ((-0.5 * t + 1.0) * t - 0.5) * t,
            (1.5 * t - 2.5) * t * t + 1.0,
            ((-1.5 * t + 2.0) * t + 0.5) * t,
            (0.5 * t - 0.5) * t * t,
        )
        return first, weights

    def _cumulative_at(self, plane, column_axis, row_axis):
        """A plane's cumulative fraction at a point: cubic convolution of the corner table.

        ``column_axis`` and ``row_axis`` are :meth:`_axis` of the point's alpha
        and beta. Keys' (1981) cubic kernel through the cell-corner values is
        exact for the corners and third-order between them, so a footprint's
        light follows the PSF's gradient inside a cell (a bilinear table would
        treat every cell as uniform, an error of ~1% at the core for cells of
        FWHM / 8).
        """
        (first_column, column_weights), (first_row, row_weights) = column_axis, row_axis
        # Corner (first - 1, first - 1) in the padded table; the others are fixed offsets.
        base = plane * self._plane_stride + first_row * self._row_stride + first_column
        table = self._flat_cumulative
        total = 0.0
        for row, row_weight in enumerate(row_weights):
            start = base + row * self._row_stride
            along = sum(
                weight * table.take(start + column) for column, weight in enumerate(column_weights)
            )
            total = total + row_weight * along
        return total

    def footprint_fraction(
        self,
        alpha_low: np.ndarray,
        alpha_high: np.ndarray,
        beta_low: np.ndarray,
        beta_high: np.ndarray,
        alpha_centre: float | np.ndarray,
        beta_centre: float | np.ndarray,
        wavelength: np.ndarray,
    ) -> np.ndarray:
        """
        Share of a point source's light falling on each pixel footprint.

        Parameters
        ----------
        alpha_low, alpha_high, beta_low, beta_high : ndarray
            Footprint edges (arcsec).
        alpha_centre, beta_centre : float or ndarray
            Source position (arcsec).
        wavelength : ndarray
            Wavelength of each footprint (micron), inside the cube's range.

        Returns
        -------
        ndarray
            Enclosed fraction per footprint.
        """
        shape = np.broadcast(alpha_low, alpha_centre, wavelength).shape
        low_a = np.broadcast_to(np.asarray(alpha_low) - alpha_centre, shape)
        high_a = np.broadcast_to(np.asarray(alpha_high) - alpha_centre, shape)
        low_b = np.broadcast_to(np.asarray(beta_low) - beta_centre, shape)
        high_b = np.broadcast_to(np.asarray(beta_high) - beta_centre, shape)
        wavelength = np.broadcast_to(np.asarray(wavelength, dtype=float), shape)
        last = self.wavelength.size - 1
        if last == 0:
            planes = [(np.zeros(shape, dtype=int), np.ones(shape))]
        else:
            upper = np.clip(np.searchsorted(self.wavelength, wavelength), 1, last)
            step = self.wavelength[upper] - self.wavelength[upper - 1]
            weight = np.clip((wavelength - self.wavelength[upper - 1]) / step, 0.0, 1.0)
            planes = [(upper - 1, 1.0 - weight), (upper, weight)]
        # Each edge's corners and weights once, for both planes and both corners it bounds.
        low_a, high_a = (self._axis(value, self._alpha_edges) for value in (low_a, high_a))
        low_b, high_b = (self._axis(value, self._beta_edges) for value in (low_b, high_b))
        total = np.zeros(shape)
        for plane, weight in planes:
            enclosed = (
                self._cumulative_at(plane, high_a, high_b)
                - self._cumulative_at(plane, low_a, high_b)
                - self._cumulative_at(plane, high_a, low_b)
                + self._cumulative_at(plane, low_a, low_b)
            )
            total += weight * enclosed
        return np.abs(total)
