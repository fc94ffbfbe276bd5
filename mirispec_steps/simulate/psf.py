"""Cross-dispersion LRS PSFs for the simulator: the package's model and others.

:class:`LrsPsf` is the package's model (the packaged ``psf`` fallback is
made from it): a pixel-integrated sum of two Gaussians, a diffraction-like
core whose FWHM grows linearly with wavelength (never below the detector's
~1.8 px floor) holding ``1 - wing_fraction`` of the light, and a wide wing
component ``wing_scale`` times broader, standing for the detector
cross-artefact and scattered light.

Accuracy tests must not extract with the PSF that simulated the data, so
three families of other shapes are provided (:data:`MISMATCHED_FAMILIES`):

- :class:`DiffractionLrsPsf`: the line-spread function of a circular
  telescope pupil (first and second diffraction rings) blurred by a
  Gaussian, with a different width law;
- :class:`AsymmetricLrsPsf`: a skewed (split-normal) core and an off-centre
  secondary component;
- :class:`MoffatLrsPsf`: a Moffat profile (power-law wings) whose width
  grows with a different slope.

Every PSF is described by its cumulative distribution across the slit,
``cdf(u, wavelength)``, so pixel integration is exact for any sub-pixel
position and the light in any set of whole pixels sums to the enclosed
fraction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.special import betainc, erf, ndtr

from mirispec_steps.core.gaussian import FWHM_TO_SIGMA

__all__ = [
    "MISMATCHED_FAMILIES",
    "AsymmetricLrsPsf",
    "CumulativeLrsPsf",
    "DiffractionLrsPsf",
    "LrsPsf",
    "MoffatLrsPsf",
]


class CumulativeLrsPsf:
    """Pixel fractions, enclosed light and box fractions from a cumulative profile ``cdf``."""

    def cdf(self, u: np.ndarray, wavelength: np.ndarray | float) -> np.ndarray:
        """Fraction of the light at cross-dispersion offsets below ``u`` pixels."""
        raise NotImplementedError

    def pixel_fractions(self, offset: np.ndarray, wavelength: np.ndarray | float) -> np.ndarray:
        """
        Fraction of the light falling in pixels whose centres are at ``offset``.

        Parameters
        ----------
        offset : ndarray
            Pixel-centre positions relative to the source (pixels).
        wavelength : float or ndarray
            Micron, broadcast against ``offset``.

        Returns
        -------
        ndarray
            Pixel-integrated PSF.
        """
        offset = np.asarray(offset, dtype=float)
        return self.cdf(offset + 0.5, wavelength) - self.cdf(offset - 0.5, wavelength)

    def enclosed(self, half_width: np.ndarray, wavelength: np.ndarray | float) -> np.ndarray:
        """Fraction of light within ``+-half_width`` pixels of the centre (1-D)."""
        half_width = np.asarray(half_width, dtype=float)
        return self.cdf(half_width, wavelength) - self.cdf(-half_width, wavelength)

    def box_fraction(self, width: np.ndarray, wavelength: np.ndarray | float) -> np.ndarray:
        """
        Fraction of the light a box of ``width`` pixels centred on the source collects.

        For whole-pixel box edges and a source at the box centre this is exact
        (the pixel-integrated PSF summed over the box is the PSF integrated
        over the box); fractional edge pixels differ only to second order in
        the PSF gradient at the edge.
        """
        return self.enclosed(0.5 * np.asarray(width, dtype=float), wavelength)


@dataclass
class LrsPsf(CumulativeLrsPsf):
    """
    Cross-dispersion PSF of MIRI LRS.

    Attributes
    ----------
    fwhm_per_micron : float
        Core FWHM in pixels per micron of wavelength.
    min_fwhm : float
        Smallest core FWHM in pixels.
    wing_fraction : float
        Fraction of the light in the wing component.
    wing_scale : float
        Wing sigma over core sigma.
    width_scale : float
        Extra multiplicative factor on all widths (to simulate a PSF mismatch).

    Examples
    --------
    >>> import numpy as np
    >>> psf = LrsPsf()
    >>> offsets = np.arange(-40.0, 41.0)
    >>> round(float(psf.pixel_fractions(offsets, 10.0).sum()), 6)
    1.0
    """

    fwhm_per_micron: float = 0.30
    min_fwhm: float = 1.8
    wing_fraction: float = 0.08
    wing_scale: float = 3.5
    width_scale: float = 1.0

    def core_sigma(self, wavelength: np.ndarray | float) -> np.ndarray:
        """Core Gaussian sigma in pixels at ``wavelength`` (micron)."""
        fwhm = np.maximum(self.min_fwhm, self.fwhm_per_micron * np.asarray(wavelength, float))
        return self.width_scale * fwhm * FWHM_TO_SIGMA

    def cdf(self, u: np.ndarray, wavelength: np.ndarray | float) -> np.ndarray:
        """Fraction of the light at cross-dispersion offsets below ``u`` pixels."""
        sigma = self.core_sigma(wavelength)
        core = erf(u / (np.sqrt(2.0) * sigma))
        wing = erf(u / (np.sqrt(2.0) * sigma * self.wing_scale))
        return 0.5 + 0.5 * ((1.0 - self.wing_fraction) * core + self.wing_fraction * wing)


#: MIRI imager/LRS pixel scale (arcsec) and the telescope's diameter (m), for diffraction.
PIXEL_SCALE_ARCSEC = 0.11
TELESCOPE_DIAMETER_M = 6.5


@dataclass
class AsymmetricLrsPsf(CumulativeLrsPsf):
    """
    A skewed LRS PSF: split-normal core plus an off-centre secondary component.

    The core has different widths either side of its peak (``sigma * (1 -
    skew)`` towards negative offsets, ``sigma * (1 + skew)`` towards positive
    ones), and a secondary Gaussian ``secondary_scale`` times wider, centred
    ``secondary_offset`` pixels from the peak, holds ``secondary_fraction``
    of the light (a ghost or a tilted-pupil lobe). The package's two-Gaussian
    model cannot describe it at any width. The peak is at offset 0.

    Attributes
    ----------
    fwhm_per_micron, min_fwhm : float
        Width law of the core (mean of both sides), as :class:`LrsPsf`.
    skew : float
        Relative width difference of the core's two sides (0: symmetric).
    secondary_fraction, secondary_offset, secondary_scale : float
        Light fraction, centre (pixels) and width (in core sigmas) of the
        secondary component.

    Examples
    --------
    >>> import numpy as np
    >>> psf = AsymmetricLrsPsf()
    >>> round(float(psf.pixel_fractions(np.arange(-40.0, 41.0) + 0.3, 8.0).sum()), 6)
    1.0
    """

    fwhm_per_micron: float = 0.30
    min_fwhm: float = 1.8
    skew: float = 0.2
    secondary_fraction: float = 0.12
    secondary_offset: float = 1.2
    secondary_scale: float = 2.2

    def cdf(self, u: np.ndarray, wavelength: np.ndarray | float) -> np.ndarray:
        """Fraction of the light at cross-dispersion offsets below ``u`` pixels."""
        u = np.asarray(u, dtype=float)
        fwhm = np.maximum(self.min_fwhm, self.fwhm_per_micron * np.asarray(wavelength, float))
        sigma = fwhm * FWHM_TO_SIGMA
        left, right = sigma * (1.0 - self.skew), sigma * (1.0 + self.skew)
        # Split normal: each half keeps its own Gaussian shape, the peak is continuous.
        left_share = left / (left + right)
        core = np.where(
            u < 0.0,
            2.0 * left_share * ndtr(u / left),
            left_share + (1.0 - left_share) * (2.0 * ndtr(u / right) - 1.0),
        )
        secondary = ndtr((u - self.secondary_offset) / (self.secondary_scale * sigma))
        return (1.0 - self.secondary_fraction) * core + self.secondary_fraction * secondary


@dataclass
class MoffatLrsPsf(CumulativeLrsPsf):
    """
    A Moffat LRS PSF: power-law wings and a width law of another slope.

    Across the slit the profile is ``(1 + (x / alpha)^2)^-power`` (the line
    spread of a 2-D Moffat of index ``power + 1/2``), with a FWHM of
    ``fwhm_offset + fwhm_per_micron * lambda`` pixels: wider than the
    package's model at short wavelengths, narrower at long ones.

    Attributes
    ----------
    fwhm_offset, fwhm_per_micron : float
        Width law (pixels, pixels per micron).
    power : float
        Power-law index of the profile (larger: lighter wings).

    Examples
    --------
    >>> import numpy as np
    >>> psf = MoffatLrsPsf()
    >>> round(float(psf.enclosed(np.inf, 10.0)), 6)
    1.0
    """

    fwhm_offset: float = 1.2
    fwhm_per_micron: float = 0.2
    power: float = 2.3

    def cdf(self, u: np.ndarray, wavelength: np.ndarray | float) -> np.ndarray:
        """Fraction of the light at cross-dispersion offsets below ``u`` pixels."""
        u = np.asarray(u, dtype=float)
        fwhm = self.fwhm_offset + self.fwhm_per_micron * np.asarray(wavelength, dtype=float)
        alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / self.power) - 1.0))
        # A scaled Student t: P(|X| < u) = I_{u^2 / (alpha^2 + u^2)}(1/2, power - 1/2).
        with np.errstate(invalid="ignore"):
            inside = betainc(0.5, self.power - 0.5, u**2 / (alpha**2 + u**2))
        return 0.5 + 0.5 * np.sign(u) * np.where(np.isinf(u), 1.0, inside)


@dataclass
class DiffractionLrsPsf(CumulativeLrsPsf):
    """
    A diffraction LRS PSF: the line spread of a circular pupil, blurred, with its rings.

    The profile across the slit is the 1-D Fourier transform of the
    modulation transfer function of a clear circular pupil of diameter
    ``D`` (cut-off ``D / lambda``) times a Gaussian blur of ``blur_sigma``
    pixels (detector diffusion, pointing jitter): a core of FWHM about
    ``lambda / D`` with the first and second diffraction rings. The far wings
    of a real line spread fall as ``1 / x^2`` and hold a few percent of the
    light beyond 15 px; here they are tapered beyond ``taper`` times
    ``lambda / D`` (``exp(-(x / x_t)^4)``, 11 px at 12 um), because light
    that far out is indistinguishable from the sky in any extraction: it is
    set by the reference file (see the flux normalisation of the empirical
    profile), not measured.

    Attributes
    ----------
    blur_sigma : float
        Gaussian blur (pixels).
    taper : float
        Scale of the far-wing taper, in units of ``lambda / D``.
    wavelengths : tuple of float
        First and last wavelength tabulated (micron); the profile is
        interpolated linearly in wavelength between 0.1 um steps and in
        offset between 0.05 px steps.

    Examples
    --------
    >>> import numpy as np
    >>> psf = DiffractionLrsPsf()
    >>> round(float(psf.pixel_fractions(np.arange(-40.0, 41.0), 9.0).sum()), 6)
    1.0
    """

    blur_sigma: float = 0.6
    taper: float = 3.3
    wavelengths: tuple = (3.0, 16.0)

    def cdf(self, u: np.ndarray, wavelength: np.ndarray | float) -> np.ndarray:
        """Fraction of the light at cross-dispersion offsets below ``u`` pixels."""
        u, wavelength = np.broadcast_arrays(
            np.asarray(u, dtype=float), np.asarray(wavelength, dtype=float)
        )
        grid_wave, grid_u, table = self._table()
        # Bilinear interpolation in (wavelength, offset); 0 and 1 beyond the table.
        position = np.clip(
            (wavelength - grid_wave[0]) / (grid_wave[1] - grid_wave[0]), 0, grid_wave.size - 1.001
        )
        low = np.floor(position).astype(int)
        weight = position - low
        step = grid_u[1] - grid_u[0]
        column = np.clip((u - grid_u[0]) / step, 0.0, grid_u.size - 1.001)
        left = np.floor(column).astype(int)
        frac = column - left
        below = table[low, left] * (1 - frac) + table[low, left + 1] * frac
        above = table[low + 1, left] * (1 - frac) + table[low + 1, left + 1] * frac
        return below * (1 - weight) + above * weight

    def _table(self):
        return _diffraction_cdf_table(
            float(self.blur_sigma), float(self.taper), tuple(map(float, self.wavelengths))
        )


@functools.lru_cache(maxsize=8)
def _diffraction_cdf_table(blur_sigma: float, taper: float, wavelengths: tuple):
    """Cumulative line spread of a blurred circular pupil, tapered, per wavelength (read only)."""
    grid_wave = np.arange(wavelengths[0], wavelengths[1] + 1e-9, 0.1)
    grid_u = np.arange(-45.0, 45.0 + 1e-9, 0.05)
    pixel_rad = PIXEL_SCALE_ARCSEC / 206264.806
    # Cut-off frequency D / lambda in cycles per pixel.
    cutoff = TELESCOPE_DIAMETER_M / (grid_wave * 1e-6) * pixel_rad
    # Frequency over the cut-off (midpoints): >= 10 samples per cycle of cos(2 pi f x) at 45 px.
    nu = (np.arange(500) + 0.5) / 500
    mtf = (2.0 / np.pi) * (np.arccos(nu) - nu * np.sqrt(1.0 - nu**2))
    table = np.empty((grid_wave.size, grid_u.size))
    for index, fc in enumerate(cutoff):
        frequency = nu * fc
        transfer = mtf * np.exp(-2.0 * (np.pi * blur_sigma * frequency) ** 2)
        # Even real profile: 2 * integral of transfer * cos(2 pi f x) over f.
        line = 2.0 * (fc / nu.size) * np.cos(2.0 * np.pi * np.outer(grid_u, frequency)) @ transfer
        line *= np.exp(-((grid_u * fc / taper) ** 4))
        line = np.clip(line, 0.0, None)
        cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (line[1:] + line[:-1]))])
        table[index] = cumulative / cumulative[-1]
    for array in (grid_wave, grid_u, table):
        array.flags.writeable = False
    return grid_wave, grid_u, table


#: The simulator's PSFs that the package's model does not contain (for accuracy tests).
MISMATCHED_FAMILIES = {
    "diffraction": DiffractionLrsPsf,
    "asymmetric": AsymmetricLrsPsf,
    "moffat": MoffatLrsPsf,
}


def write_lrs_psf_reference(
    path,
    psf: CumulativeLrsPsf | None = None,
    subpix: int = 10,
    half_extent: float = 30.0,
    wavelengths: np.ndarray | None = None,
    aperture_name: str = "ANY",
):
    """
    Write an LRS ``psf`` reference file (jwst's ``SpecPsfModel`` format) for a PSF model.

    Row ``i`` of the PSF image is the effective (pixel-integrated) PSF at
    ``wave[i]``, sampled ``subpix`` times per pixel from ``-half_extent`` to
    ``+half_extent`` pixels; ``CENTCOL`` is the column of the source centre.

    Parameters
    ----------
    path : str or Path
        Output FITS file.
    psf : CumulativeLrsPsf or None
        The PSF (default :class:`LrsPsf`, the package's model).
    subpix : int
        Samples per pixel.
    half_extent : float
        Pixels covered either side of the centre.
    wavelengths : ndarray or None
        Micron (default 3.5-15 um every 0.1 um).
    aperture_name : str
        ``APERTURE`` of the single PSF ("ANY" matches every slit).

    Returns
    -------
    Path
        The written file.
    """
    from pathlib import Path

    from mirispec_steps.lrs.references import lrs_psf_model

    psf = psf or LrsPsf()
    wave = np.arange(3.5, 15.001, 0.1) if wavelengths is None else np.asarray(wavelengths, float)
    n_columns = int(round(2 * half_extent * subpix)) + 1
    center_col = (n_columns - 1) / 2.0
    offsets = (np.arange(n_columns) - center_col) / subpix
    data = psf.pixel_fractions(offsets[None, :], wave[:, None])
    model = lrs_psf_model(
        wave, data, subpix, center_col,
        f"LRS effective PSF (pixel-integrated) of the simulator's {psf!r}",
        aperture_name=aperture_name,
    )  # fmt: skip
    path = Path(path)
    model.save(path)
    return path
