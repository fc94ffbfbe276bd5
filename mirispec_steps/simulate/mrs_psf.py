"""MRS point-spread functions the package's model does not contain, for the simulator.

The package's MRS PSF (:class:`~mirispec_steps.mrs.core.psf.MrsPsf`, the
packaged ``mrspsf``) is an elliptical Gaussian core plus Gaussian wings,
aligned with the slices. Accuracy tests must extract data simulated with
another PSF, so two families of other shapes are provided
(:data:`MISMATCHED_MRS_FAMILIES`), both sampled as PSF cubes
(:class:`~mirispec_steps.mrs.core.psf.CubePsf`: the light on a pixel footprint
is exact from the cube's cumulative sums):

- :class:`DiffractionMrsPsf`: the diffraction pattern of JWST's segmented
  pupil (18 hexagonal segments, the secondary mirror's obstruction and its
  three struts, rotated on the sky), blurred by an elliptical Gaussian so
  that the core follows a measured-like FWHM law and is elongated across
  slices: rings and six-fold structure;
- :class:`MoffatMrsPsf`: an elliptical, rotated Moffat profile (power-law
  wings) with its own width law.

A third, :func:`gaussian_variant`, stays inside the package's model family
with other parameters (narrower across slices, narrower wings): the case a
parametric fit of the model can solve exactly.

Each cube holds all of its light within a square of half-width
:data:`CHANNEL_EXTENT` around the source, about the channel's field of view:
the simulated PSF is normalised to the light a source at the field's centre
puts on the field. No detector-level (or cube) measurement sees light beyond
the field; an extraction can only take it from its reference PSF. A real
diffraction pattern has about 1% of its light beyond the channel 1 field at
5 micron (:meth:`SampledMrsPsf.light_outside` measures it for any cube), and
that share is an assumption of every MRS flux calibration, ours included.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from mirispec_steps.core.gaussian import FWHM_TO_SIGMA
from mirispec_steps.mrs.core.psf import CubePsf, MrsPsf

__all__ = [
    "CHANNEL_EXTENT",
    "MISMATCHED_MRS_FAMILIES",
    "DiffractionMrsPsf",
    "MoffatMrsPsf",
    "SampledMrsPsf",
    "gaussian_variant",
    "light_outside_field",
]

#: Telescope diameter (m) and arcsec per radian.
TELESCOPE_DIAMETER_M = 6.6
ARCSEC_PER_RADIAN = 648000.0 / np.pi
#: Half-width (arcsec) of a simulated PSF cube per channel: about the field of view's
#: half-size (built-in geometry: 1.75x1.86, 2.25x2.38, 2.82x3.12, 3.64x3.94 arcsec).
CHANNEL_EXTENT = {1: 1.8, 2: 2.3, 3: 3.0, 4: 3.8}
#: Upper wavelength (micron) of each channel.
CHANNEL_LIMITS = ((1, 7.7), (2, 11.9), (3, 18.2), (4, 30.0))
#: Cube cells per core FWHM, and relative wavelength step between cube planes.
CELLS_PER_FWHM = 10
PLANE_STEP = 0.015


def _channel(wavelength: float) -> int:
    return next(channel for channel, limit in CHANNEL_LIMITS if wavelength <= limit)


class SampledMrsPsf:
    """
    A PSF defined by a surface-density function, sampled into cubes on demand.

    Subclasses give ``fwhm_slope`` and ``fwhm_offset`` (the core's
    along-slice FWHM law, arcsec per micron and arcsec) and :meth:`plane`
    (the density on a regular grid at one wavelength). The
    cube covering a call's wavelengths is built once and cached, so a
    simulated exposure's pixels of one channel share one cube.
    """

    #: Sub-samples per cell side when a density is averaged over cells.
    subsamples = 3

    def core_fwhm(self, wavelength: np.ndarray | float) -> np.ndarray:
        """Along-slice core FWHM (arcsec): ``fwhm_slope * lambda + fwhm_offset``."""
        return self.fwhm_slope * np.asarray(wavelength, dtype=float) + self.fwhm_offset

    def plane(self, wavelength: float, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """Surface density (any scale) at cell centres ``beta[:, None], alpha[None, :]``."""
        raise NotImplementedError

    def fwhm(self, wavelength: np.ndarray | float) -> np.ndarray:
        """Along-slice core FWHM (arcsec), as the package's PSF classes name it."""
        return self.core_fwhm(wavelength)

    def cube(self, low: float, high: float) -> CubePsf:
        """The PSF cube covering ``[low, high]`` micron (planes every 1.5%)."""
        return _cube(self, round(float(low), 3), round(float(high), 3))

    def mrspsf_entry(self, low: float, high: float) -> dict:
        """The cube covering ``[low, high]`` as an ``mrspsf`` band entry (the true PSF)."""
        cube = self.cube(low, high)
        return {
            "wavelength": cube.wavelength,
            "alpha": cube.alpha,
            "beta": cube.beta,
            "data": np.diff(np.diff(cube.cumulative, axis=1), axis=2),
        }

    def light_outside(self, wavelength: float, half_width_alpha: float, half_width_beta: float):
        """Share of the light outside a centred rectangle of the given half-widths (arcsec)."""
        cube = self.cube(wavelength, wavelength)
        inside = cube.footprint_fraction(
            -half_width_alpha, half_width_alpha, -half_width_beta, half_width_beta,
            0.0, 0.0, np.array(wavelength),
        )  # fmt: skip
        return 1.0 - float(inside)

    def footprint_fraction(
        self, alpha_low, alpha_high, beta_low, beta_high, alpha_centre, beta_centre, wavelength
    ) -> np.ndarray:
        """Share of the light on each pixel footprint (see :class:`CubePsf`)."""
        wavelength = np.asarray(wavelength, dtype=float)
        cube = self.cube(float(np.min(wavelength)), float(np.max(wavelength)))
        return cube.footprint_fraction(
            alpha_low, alpha_high, beta_low, beta_high, alpha_centre, beta_centre, wavelength
        )


@functools.lru_cache(maxsize=16)
def _cube(psf: SampledMrsPsf, low: float, high: float) -> CubePsf:
    n_planes = max(2, int(np.ceil(np.log(high / low) / PLANE_STEP)) + 1)
    wavelength = np.geomspace(low * 0.999, high * 1.001, n_planes)
    step = float(np.min(psf.core_fwhm(wavelength))) / CELLS_PER_FWHM
    extent = CHANNEL_EXTENT[_channel(high)]
    half = int(np.ceil(extent / step))
    centres = step * np.arange(-half, half + 1)
    fine = (np.arange(psf.subsamples) + 0.5) / psf.subsamples - 0.5
    sub_centres = (centres[:, None] + step * fine[None, :]).ravel()
    planes = []
    for value in wavelength:
        density = psf.plane(float(value), sub_centres, sub_centres)
        n = psf.subsamples
        cells = density.reshape(centres.size, n, centres.size, n).mean(axis=(1, 3))
        planes.append(np.clip(cells, 0.0, None))
    return CubePsf(wavelength, centres, centres, np.array(planes))


def _rotated(alpha: np.ndarray, beta: np.ndarray, angle_deg: float):
    """Coordinates along and across the rotated axes."""
    angle = np.deg2rad(angle_deg)
    cos, sin = np.cos(angle), np.sin(angle)
    along = cos * alpha[None, :] + sin * beta[:, None]
    across = -sin * alpha[None, :] + cos * beta[:, None]
    return along, across


def _hexagon(x: np.ndarray, y: np.ndarray, flat_to_flat: float) -> np.ndarray:
    """Points inside a flat-topped regular hexagon centred on the origin."""
    half = 0.5 * flat_to_flat
    x, y = np.abs(x), np.abs(y)
    return (y <= half) & (np.sqrt(3.0) * x + y <= 2.0 * half)


@functools.lru_cache(maxsize=4)
def jwst_pupil(samples: int = 160, rotation: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """
    JWST's primary mirror as a transmission grid: 18 hexagonal segments, obstruction, struts.

    Parameters
    ----------
    samples : int
        Grid points across the 6.6 m square.
    rotation : float
        Rotation of the pupil on the sky (degrees).

    Returns
    -------
    coordinate : ndarray
        ``(samples,)`` grid coordinate (m).
    transmission : ndarray
        ``(samples, samples)`` 0/1 transmission ``[y, x]``.
    """
    coordinate = (np.arange(samples) - 0.5 * (samples - 1)) * (TELESCOPE_DIAMETER_M / samples)
    angle = np.deg2rad(rotation)
    x0, y0 = np.meshgrid(coordinate, coordinate)
    x = np.cos(angle) * x0 + np.sin(angle) * y0
    y = -np.sin(angle) * x0 + np.cos(angle) * y0
    flat = 1.32  # segment flat-to-flat (m); 7 mm gaps are below the grid's resolution
    pitch = flat  # distance between neighbouring segment centres (flat-topped, touching)
    transmission = np.zeros_like(x, dtype=bool)
    for ring_q in range(-2, 3):
        for ring_r in range(-2, 3):
            ring_s = -ring_q - ring_r
            ring = max(abs(ring_q), abs(ring_r), abs(ring_s))
            if ring == 0 or ring > 2:
                continue
            # Axial hexagon coordinates to the centres of flat-topped hexagons.
            centre_x = pitch * np.sqrt(3.0) / 2.0 * ring_q
            centre_y = pitch * (ring_r + 0.5 * ring_q)
            transmission |= _hexagon(x - centre_x, y - centre_y, flat)
    transmission &= np.hypot(x, y) > 0.37  # secondary mirror obstruction (~0.74 m)
    for strut in (90.0, 210.0, 330.0):
        direction = np.deg2rad(strut)
        along = x * np.cos(direction) + y * np.sin(direction)
        across = -x * np.sin(direction) + y * np.cos(direction)
        transmission &= ~((along > 0) & (np.abs(across) < 0.05))
    return coordinate, transmission.astype(float)


@dataclass(frozen=True)
class DiffractionMrsPsf(SampledMrsPsf):
    """
    Diffraction by JWST's segmented pupil, blurred to an MRS-like core and elongated.

    The pupil's far-field intensity (a matrix Fourier transform at the
    cube's sampling) is convolved with an elliptical Gaussian whose
    along-slice FWHM makes the core's FWHM close to ``fwhm_slope * lambda +
    fwhm_offset`` (blur FWHM ``sqrt(target^2 - (lambda/D)^2)``) and which is
    ``elongation`` times longer across slices (the slicer's and the
    spectrometer's own blur). Rings, six-fold structure and the struts'
    spikes survive in the wings.

    Attributes
    ----------
    fwhm_slope, fwhm_offset : float
        Core FWHM law aimed at (arcsec per micron, arcsec).
    elongation : float
        Across-slice over along-slice blur width.
    rotation : float
        Pupil rotation on the sky (degrees).

    Examples
    --------
    >>> psf = DiffractionMrsPsf()
    >>> bool(0.25 < float(psf.cube(5.0, 5.2).fwhm(5.1)) < 0.4)
    True
    """

    fwhm_slope: float = 0.033
    fwhm_offset: float = 0.106
    elongation: float = 1.15
    rotation: float = 8.0

    def plane(self, wavelength, alpha, beta):
        coordinate, pupil = jwst_pupil(rotation=self.rotation)
        scale = 2.0 * np.pi / (wavelength * 1e-6) / ARCSEC_PER_RADIAN
        along = np.exp(-1j * scale * np.outer(alpha, coordinate))  # (A, X)
        across = np.exp(-1j * scale * np.outer(beta, coordinate))  # (B, Y)
        field = across @ pupil @ along.T  # (B, A)
        intensity = np.abs(field) ** 2
        diffraction = wavelength * 1e-6 / TELESCOPE_DIAMETER_M * ARCSEC_PER_RADIAN
        target = float(self.core_fwhm(wavelength))
        blur = np.sqrt(max(target**2 - diffraction**2, (0.3 * target) ** 2))
        step = alpha[1] - alpha[0]
        sigma_alpha = blur * FWHM_TO_SIGMA / step
        return gaussian_filter(
            intensity, (self.elongation * sigma_alpha, sigma_alpha), mode="constant"
        )


@dataclass(frozen=True)
class MoffatMrsPsf(SampledMrsPsf):
    """
    An elliptical, rotated Moffat PSF: power-law wings and its own width law.

    The density is ``(1 + (a / w_a)^2 + (b / w_b)^2)^-power`` in coordinates
    ``(a, b)`` rotated by ``rotation`` from (alpha, beta), with FWHM
    ``fwhm_offset + fwhm_slope * lambda`` along ``a`` and that over
    ``axis_ratio`` along ``b``.

    Attributes
    ----------
    fwhm_slope, fwhm_offset : float
        Width law (arcsec per micron, arcsec).
    axis_ratio : float
        FWHM along ``a`` over FWHM along ``b``.
    power : float
        Moffat index (wings fall as ``r^(-2 power)``).
    rotation : float
        Angle of ``a`` from +alpha towards +beta (degrees).

    Examples
    --------
    >>> psf = MoffatMrsPsf()
    >>> round(float(psf.core_fwhm(10.0)), 3)
    0.45
    """

    fwhm_slope: float = 0.030
    fwhm_offset: float = 0.15
    axis_ratio: float = 0.85
    power: float = 2.5
    rotation: float = 12.0

    def plane(self, wavelength, alpha, beta):
        along, across = _rotated(alpha, beta, self.rotation)
        width = float(self.core_fwhm(wavelength)) / (2.0 * np.sqrt(2.0 ** (1.0 / self.power) - 1))
        radius2 = (along / width) ** 2 + (across * self.axis_ratio / width) ** 2
        return (1.0 + radius2) ** -self.power


def light_outside_field(
    psf, geometry, alpha: float, beta: float, wavelength: float, mirrored: bool = False
) -> float:
    """
    Share of a point source's light that falls outside a channel's field at one wavelength.

    The field is the union of the slices (each slice's along-slice extent
    and beta edges, from the pixels within 1% of ``wavelength``). No
    measurement on the detector sees this light: an extraction takes it
    from its reference PSF, so a reference that puts ``r`` outside where
    the truth puts ``t`` biases every flux by about ``r - t``. The MRS
    self-calibration also reads, mirrored through the source, the light
    over the field's far side (:mod:`mirispec_steps.mrs.core.psf_calibration`):
    ``mirrored=True`` measures what is left beyond that symmetric hull.

    Parameters
    ----------
    psf : object
        Anything with the PSF classes' ``footprint_fraction``.
    geometry : ChannelGeometry
        The channel.
    alpha, beta : float
        Source position (arcsec).
    wavelength : float
        Micron.
    mirrored : bool
        Outside the union of the field and its mirror image through the source.

    Returns
    -------
    float
        The share outside the field (or its symmetric hull).
    """
    near = np.abs(geometry.wavelength - wavelength) < 0.01 * wavelength
    slices = []
    for slice_number in np.unique(geometry.slice_number[near]):
        chosen = near & (geometry.slice_number == slice_number)
        slices.append((
            np.min(np.minimum(geometry.alpha_low[chosen], geometry.alpha_high[chosen])),
            np.max(np.maximum(geometry.alpha_low[chosen], geometry.alpha_high[chosen])),
            np.min(geometry.beta_low[chosen]),
            np.max(geometry.beta_high[chosen]),
        ))  # fmt: skip
    if mirrored:
        images = [(2 * alpha - a1, 2 * alpha - a0, 2 * beta - b1, 2 * beta - b0)
                  for a0, a1, b0, b1 in slices]  # fmt: skip
        slices = _union_of_rectangles(slices + images)
    inside = 0.0
    for edges in slices:
        inside += float(psf.footprint_fraction(
            *(np.array(edge) for edge in edges), alpha, beta, np.array(wavelength)))  # fmt: skip
    return 1.0 - inside


def _union_of_rectangles(rectangles: list[tuple]) -> list[tuple]:
    """Disjoint rectangles ``(a0, a1, b0, b1)`` covering the union of the given ones."""
    cuts = np.unique([edge for rectangle in rectangles for edge in rectangle[2:]])
    pieces = []
    for low, high in zip(cuts[:-1], cuts[1:], strict=True):
        middle = 0.5 * (low + high)
        spans = sorted((a0, a1) for a0, a1, b0, b1 in rectangles if b0 <= middle < b1)
        merged = []
        for start, stop in spans:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        pieces += [(start, stop, low, high) for start, stop in merged]
    return pieces


def gaussian_variant() -> MrsPsf:
    """The package's own model with other parameters: 10% narrower across slices, narrower wings."""
    return MrsPsf(axis_ratio=1.0, wing_scale=2.5)


#: PSF families for accuracy tests, by name (each call makes a fresh PSF).
MISMATCHED_MRS_FAMILIES = {
    "diffraction": DiffractionMrsPsf,
    "moffat": MoffatMrsPsf,
    "gaussian_variant": gaussian_variant,
}
