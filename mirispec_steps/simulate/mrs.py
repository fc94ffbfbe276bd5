"""Synthetic MIRI MRS slope images with known truth, and their matching reference files.

The forward model, pixel by pixel over every slice of both channels of a
detector (geometry from the exposure's WCS, built-in or flight):

1. Surface brightness (MJy/sr) of the scene averaged over the pixel's
   footprint in (alpha, beta): a point source ``F(lambda) * PSF`` (the PSF
   integrated exactly over the footprint, :class:`~mirispec_steps.mrs.core.psf.MrsPsf`)
   plus optional extended emission, plus a uniform background. Emission
   lines have the instrumental profile of the band's resolving power
   (:mod:`~mirispec_steps.mrs.core.resolution`) and are averaged over each
   pixel's wavelength span.
2. Slope (DN/s) = surface brightness x pixel solid angle x response x
   pixel-to-pixel gain x fringes x (optional) time-dependent throughput loss.
   The fringes are a Fabry-Perot pattern of period 2.9 cm^-1; the point
   source may have its own (:class:`PointSourceFringes`: another contrast
   and phase, so that residual fringes survive the fringe flat), and channel
   3A may receive 1B light in second order (``spectral_leak``).
3. Noise: Poisson on the collected electrons and Gaussian read noise, with
   matching ``VAR_POISSON`` and ``VAR_RNOISE``; dead and hot pixels flagged in
   DQ; optional unflagged cosmic rays.

The ``photom`` reference written alongside holds exactly the inverse of
step 2's conversion (``1 / (solid angle x response x gain)``) with the
pixel solid angles in ``PIXSIZ`` and ``PIXAR_*`` keywords; the ``fringe``
reference holds the fringe pattern. Calibrating the noise-free slope image
with them gives back the scene's surface brightness to float precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mirispec_steps.core.gaussian import FWHM_TO_SIGMA, gaussian_interval
from mirispec_steps.flags import DEAD, DO_NOT_USE, HOT
from mirispec_steps.mrs.core.psf import MrsPsf, gaussian_footprint_fraction
from mirispec_steps.mrs.core.resolution import ResolvingPower
from mirispec_steps.mrs.exposure import copy_sharing_wcs
from mirispec_steps.mrs.geometry import ChannelGeometry, mrs_geometry
from mirispec_steps.simulate.mrs_geometry import (
    assign_real_mrs_wcs,
    blank_mrs_model,
    build_mrs_wcs,
    point_at_target,
)

__all__ = [
    "DEFAULT_LINES",
    "EmissionLine",
    "ExtendedEmission",
    "MrsTruth",
    "PointSourceFringes",
    "SimulatedMrs",
    "default_mrs_background",
    "default_mrs_continuum",
    "default_resolving_power",
    "default_spectral_leak",
    "simulate_mrs",
    "spectral_leak_reference",
]

#: (MJy/sr) per (Jy/arcsec^2).
JY_ARCSEC2_TO_MJY_SR = 1.0e-6 / (np.pi / 648000.0) ** 2
#: Steradians per square arcsecond.
ARCSEC2_TO_SR = (np.pi / 648000.0) ** 2


@dataclass(frozen=True)
class EmissionLine:
    """
    An unresolved emission line.

    Attributes
    ----------
    wavelength : float
        Rest = observed wavelength (micron).
    flux : float
        Integrated flux density ``integral F_nu d lambda`` (Jy micron).
    name : str
        Label.
    """

    wavelength: float
    flux: float
    name: str = ""


#: One bright line in most bands (wavelengths of common ISM lines).
DEFAULT_LINES = (
    EmissionLine(5.3402, 2.0e-4, "[FeII]"),
    EmissionLine(6.9853, 2.0e-4, "[ArII]"),
    EmissionLine(8.9914, 3.0e-4, "[ArIII]"),
    EmissionLine(10.5105, 4.0e-4, "[SIV]"),
    EmissionLine(12.8136, 6.0e-4, "[NeII]"),
    EmissionLine(15.5551, 6.0e-4, "[NeIII]"),
    EmissionLine(17.0348, 4.0e-4, "H2 S(1)"),
    EmissionLine(18.7130, 8.0e-4, "[SIII]"),
    EmissionLine(25.8903, 1.0e-3, "[OIV]"),
)


@dataclass(frozen=True)
class PointSourceFringes:
    """
    How a point source's fringes differ from the extended-source fringe flat.

    The fringe flat is measured on extended illumination; a point source
    fills a smaller cone of angles through the detector substrate, so its
    fringes have a higher contrast and a phase that depends on where it
    falls across the slice. After the fringe flat, a point source keeps a
    residual ``(1 + c a cos(phi + delta)) / (1 + a cos(phi))``: a few percent
    for the defaults with a flat amplitude ``a`` of 0.1.

    Attributes
    ----------
    contrast : float
        Point-source fringe amplitude over the flat's, ``c``.
    phase : float
        Phase offset ``delta`` (radians) at alpha = 0.
    phase_per_arcsec : float
        Change of ``delta`` with the source's alpha (radians per arcsec), so
        dithers see different residuals.
    """

    contrast: float = 1.2
    phase: float = 0.25
    phase_per_arcsec: float = 0.15

    def offset(self, alpha: float) -> float:
        """The phase offset (radians) for a source at ``alpha`` (arcsec)."""
        return self.phase + self.phase_per_arcsec * alpha


def default_spectral_leak(wavelength: np.ndarray) -> np.ndarray:
    """
    Share of the 6.1 micron flux density that leaks into channel 3A (illustrative).

    A Gaussian bump of 3% peaking at 12.2 micron (FWHM 0.35 micron): the
    second order of the 3A grating passing 1B light, the systematic jwst's
    ``spectral_leak`` step corrects. The shape and height are illustrative,
    not the flight calibration; the flight values come from CRDS
    (``mrsptcorr``).

    Parameters
    ----------
    wavelength : ndarray
        Channel 3A wavelengths (micron).

    Returns
    -------
    ndarray
        ``F_leak(lambda) / F(lambda / 2)``.
    """
    wavelength = np.asarray(wavelength, dtype=float)
    sigma = 0.35 * FWHM_TO_SIGMA
    return 0.03 * np.exp(-0.5 * ((wavelength - 12.2) / sigma) ** 2)


def spectral_leak_reference(leak: Callable[[np.ndarray], np.ndarray] = default_spectral_leak):
    """
    A ``mrsptcorr`` reference (jwst's format) holding a leak curve.

    Parameters
    ----------
    leak : callable
        ``F_leak(lambda) / F(lambda / 2)`` over channel 3A.

    Returns
    -------
    MirMrsPtCorrModel
        Its ``leakcor_table`` sampled every 5 nm over 11.4-13.6 micron
        (``err_leak`` 5% of the leak); the other tables are empty.
    """
    from stdatamodels.jwst import datamodels

    wavelength = np.arange(11.4, 13.6 + 1e-9, 0.005)
    fraction = np.asarray(leak(wavelength), dtype=float)
    table = np.zeros(
        wavelength.size, dtype=datamodels.MirMrsPtCorrModel().get_dtype("leakcor_table")
    )
    table["wavelength"], table["frac_leak"], table["err_leak"] = (
        wavelength,
        fraction,
        0.05 * fraction,
    )
    reference = datamodels.MirMrsPtCorrModel(leakcor_table=table)
    meta = reference.meta
    meta.reftype = "MRSPTCORR"
    meta.description = "Simulated MRS spectral leak (mirispec_steps; illustrative values)"
    meta.author, meta.pedigree = "mirispec_steps.simulate", "DUMMY"
    meta.useafter = "2022-05-01T00:00:00"
    meta.instrument.name, meta.instrument.detector = "MIRI", "N/A"
    meta.exposure.type = "MIR_MRS"
    return reference


def default_mrs_continuum(wavelength: np.ndarray) -> np.ndarray:
    """Source continuum (Jy): a rising dust-like spectrum, 20 mJy at 10 micron."""
    wavelength = np.asarray(wavelength, dtype=float)
    return 0.02 * (wavelength / 10.0) ** 1.5 * (1.0 + 0.05 * np.sin(wavelength))


def default_mrs_background(wavelength: np.ndarray) -> np.ndarray:
    """Sky plus telescope background (MJy/sr): zodiacal light rising into the thermal."""
    wavelength = np.asarray(wavelength, dtype=float)
    return 0.5 * (wavelength / 5.0) ** 2.5 + 40.0 * np.exp(-(((28.0 - wavelength) / 6.0) ** 2))


def default_resolving_power() -> ResolvingPower:
    """The packaged resolving-power coefficients (Labiano et al. 2021)."""
    from mirispec_steps.mrs.references import load_mrs_resolution
    from mirispec_steps.references import packaged_reference

    return load_mrs_resolution(packaged_reference("mirispec_miri_mrs_resolution.json"))


@dataclass(frozen=True)
class ExtendedEmission:
    """
    A smooth extended component: an axis-aligned 2-D Gaussian in (alpha, beta).

    Attributes
    ----------
    peak : float
        Peak surface brightness (MJy/sr) at 10 micron.
    alpha, beta : float
        Centre (arcsec).
    sigma_alpha, sigma_beta : float
        Widths (arcsec).
    spectral_index : float
        ``peak * (lambda / 10 micron) ** spectral_index``.
    """

    peak: float = 20.0
    alpha: float = 0.0
    beta: float = 0.0
    sigma_alpha: float = 2.0
    sigma_beta: float = 2.0
    spectral_index: float = 1.0

    def footprint_mean(self, geometry: ChannelGeometry) -> np.ndarray:
        """Surface brightness averaged over each pixel footprint (MJy/sr)."""
        fraction = gaussian_footprint_fraction(
            geometry.alpha_low,
            geometry.alpha_high,
            geometry.beta_low,
            geometry.beta_high,
            self.alpha,
            self.beta,
            self.sigma_alpha,
            self.sigma_beta,
        )
        level = self.peak * (geometry.wavelength / 10.0) ** self.spectral_index
        return (
            level
            * fraction
            * 2.0
            * np.pi
            * self.sigma_alpha
            * self.sigma_beta
            / (geometry.pixel_area)
        )


@dataclass
class MrsTruth:
    """
    What went into a simulated MRS exposure.

    Attributes
    ----------
    alpha, beta : float
        Point-source position (arcsec).
    continuum : callable
        Source continuum ``F(lambda)`` (Jy).
    lines : tuple of EmissionLine
        Emission lines.
    psf : MrsPsf
        The PSF.
    resolving_power : ResolvingPower
        Line widths come from it.
    band_names : list of str
        Bands on the detector (e.g. ``["1A", "2A"]``).
    surface_brightness : ndarray
        ``(1024, 1032)`` noise-free, background-free scene (MJy/sr) on slice
        pixels, NaN elsewhere: what a perfect calibration returns.
    background : ndarray
        Background surface brightness (MJy/sr), NaN off slices.
    source_surface_brightness : ndarray
        The point source's part of ``surface_brightness``.
    rate : ndarray
        Noise-free slope image of the science exposure (DN/s).
    background_rate : ndarray
        Noise-free slope image of the background exposure (DN/s).
    fringe, sensitivity, pixel_area : ndarray
        Fringe pattern of extended light (the fringe flat), photom conversion
        ((MJy/sr)/(DN/s)) and pixel solid angle (arcsec^2) used, NaN off
        slices for the last two.
    time_loss : ndarray
        Throughput loss factor applied (1 without a time-dependent loss).
    source_fringe : ndarray
        Fringe pattern the point source sees (``fringe`` unless
        ``point_source_fringes`` was given).
    leak : ndarray
        Flux density (Jy) of 1B light added to the point source's spectrum
        at each channel 3A pixel (zero elsewhere and without a leak).
    bad_pixels : ndarray
        Boolean map of the dead and hot pixels (flagged DO_NOT_USE).
    cosmic_rays : ndarray
        ``(n, 2)`` (row, column) of the unflagged cosmic-ray hits.
    extras : dict
        Anything else worth keeping (exposure time, gain, read noise...).
    """

    alpha: float
    beta: float
    continuum: Callable[[np.ndarray], np.ndarray]
    lines: tuple
    psf: MrsPsf
    resolving_power: ResolvingPower
    band_names: list
    surface_brightness: np.ndarray
    background: np.ndarray
    source_surface_brightness: np.ndarray
    rate: np.ndarray
    background_rate: np.ndarray
    fringe: np.ndarray
    sensitivity: np.ndarray
    pixel_area: np.ndarray
    time_loss: np.ndarray
    source_fringe: np.ndarray
    leak: np.ndarray
    bad_pixels: np.ndarray
    cosmic_rays: np.ndarray
    extras: dict = field(default_factory=dict)

    def flux(self, wavelength: np.ndarray, band: str) -> np.ndarray:
        """
        Source flux density (Jy) at the band's resolution: continuum plus lines.

        Parameters
        ----------
        wavelength : ndarray
            Wavelengths (micron).
        band : str
            ``1A`` ... ``4C``: sets the line widths.

        Returns
        -------
        ndarray
            ``F(lambda)`` seen by the instrument.
        """
        wavelength = np.asarray(wavelength, dtype=float)
        total = np.asarray(self.continuum(wavelength), dtype=float).copy()
        for line in self.lines:
            sigma = self.resolving_power.fwhm(band, line.wavelength) * FWHM_TO_SIGMA
            profile = np.exp(-0.5 * ((wavelength - line.wavelength) / sigma) ** 2)
            total += line.flux * profile / (np.sqrt(2.0 * np.pi) * sigma)
        return total


@dataclass
class SimulatedMrs:
    """
    A simulated MRS exposure, its background exposure and matching references.

    Attributes
    ----------
    rate : IFUImageModel
        Science slope image (DN/s).
    background : IFUImageModel
        Background exposure (DN/s): same band, no source, its own noise.
    photom : MirMrsPhotomModel
        ``photom`` reference that calibrates ``rate`` exactly.
    fringe : FringeModel
        ``fringe`` reference holding the simulated fringes.
    truth : MrsTruth
        The input scene and every factor applied.
    ptcorr : MirMrsPtCorrModel or None
        ``mrsptcorr`` reference of the simulated spectral leak (None without one).
    """

    rate: object
    background: object
    photom: object
    fringe: object
    truth: MrsTruth
    ptcorr: object = None

    def redraw(self, seed: int | None = None, noise: bool | None = None) -> SimulatedMrs:
        """
        The same scene and references with new noise in both exposures.

        Parameters
        ----------
        seed : int or None
            Random seed of the new draw.
        noise : bool or None
            Draw noise (None: as in the original simulation).

        Returns
        -------
        SimulatedMrs
            New exposures; references and truth shared with this one.
        """
        rng = np.random.default_rng(seed)
        detector_noise = self.truth.extras["noise"]
        if noise is not None:
            detector_noise = dataclasses.replace(detector_noise, noise=noise)
        rate = detector_noise.expose(self.rate, self.truth.rate, rng, with_hits=True)
        background = detector_noise.expose(
            self.background, self.truth.background_rate, rng, with_hits=False
        )
        return SimulatedMrs(rate, background, self.photom, self.fringe, self.truth, self.ptcorr)

    def write(self, folder: str | Path, stem: str | None = None) -> dict:
        """
        Save the exposures and references as FITS files.

        Parameters
        ----------
        folder : str or Path
            Output folder (created if needed).
        stem : str or None
            File-name stem; default from detector and band, e.g.
            ``mrs_mirifushort_short``.

        Returns
        -------
        dict
            Paths by role: ``rate``, ``background``, ``photom``, ``fringe``
            (and ``ptcorr`` with a spectral leak).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        instrument = self.rate.meta.instrument
        stem = stem or f"mrs_{instrument.detector}_{instrument.band}".lower()
        paths = {
            "rate": folder / f"{stem}_rate.fits",
            "background": folder / f"{stem}_bkg_rate.fits",
            "photom": folder / f"{stem}_photom.fits",
            "fringe": folder / f"{stem}_fringe.fits",
        }
        if self.ptcorr is not None:
            paths["ptcorr"] = folder / f"{stem}_mrsptcorr.fits"
        for role, path in paths.items():
            getattr(self, role).save(path)
        return paths


def _pixel_line_flux(geometry: ChannelGeometry, lines, resolving_power, band: str) -> np.ndarray:
    """Line flux density (Jy) averaged over each pixel's wavelength span."""
    total = np.zeros(geometry.wavelength.size)
    span = geometry.wavelength_high - geometry.wavelength_low
    low_band, high_band = geometry.wavelength_range
    for line in lines:
        sigma = resolving_power.fwhm(band, line.wavelength) * FWHM_TO_SIGMA
        if not low_band - 10 * sigma < line.wavelength < high_band + 10 * sigma:
            continue
        near = np.abs(geometry.wavelength - line.wavelength) < 10 * sigma + span
        fraction = gaussian_interval(
            geometry.wavelength_low[near], geometry.wavelength_high[near], line.wavelength, sigma
        )
        total[near] += line.flux * fraction / span[near]
    return total


def _response(geometry: ChannelGeometry) -> np.ndarray:
    """Smooth spectrophotometric response (DN/s per MJy/sr per arcsec^2)."""
    low, high = geometry.wavelength_range
    phase = (geometry.wavelength - low) / (high - low)
    scale = {1: 0.8, 2: 0.6, 3: 0.35, 4: 0.15}[geometry.channel]
    return scale * (1.0 + 0.25 * np.sin(np.pi * phase) - 0.1 * phase)


#: Optical thickness (micron) of the detector substrate: fringes every 2.9 cm^-1 in
#: wavenumber (0.007 micron at 5 micron, 0.2 micron at 27 micron), the main MRS fringe
#: that jwst's residual-fringe fit looks for.
FRINGE_OPTICAL_THICKNESS = 1.0e4 / (2.0 * 2.9)


def _fringes(
    geometry: ChannelGeometry, amplitude: float, contrast: float = 1.0, offset: float = 0.0
) -> np.ndarray:
    """Detector fringes: a Fabry-Perot pattern in wavenumber, its phase drifting with column."""
    if amplitude == 0:
        return np.ones(geometry.wavelength.size)
    phase = 4.0 * np.pi * FRINGE_OPTICAL_THICKNESS / geometry.wavelength + 0.02 * geometry.x
    return 1.0 + contrast * amplitude * np.cos(phase + offset)


def _leaked_flux(geometry: ChannelGeometry, continuum, lines, resolving_power, leak) -> np.ndarray:
    """Flux density (Jy) of 1B light at half the wavelength reaching channel 3A pixels."""
    half = dataclasses.replace(
        geometry,
        wavelength=geometry.wavelength / 2,
        wavelength_low=geometry.wavelength_low / 2,
        wavelength_high=geometry.wavelength_high / 2,
    )
    source = np.asarray(continuum(half.wavelength), dtype=float) + _pixel_line_flux(
        half, lines, resolving_power, "1B"
    )
    return np.asarray(leak(geometry.wavelength), dtype=float) * source


def _time_coefficients(time_loss: float) -> dict:
    """Power-law throughput-loss tables (jwst's MRS photom format) for all four channels."""
    from mirispec_steps.simulate.mrs_geometry import BAND_WAVELENGTHS

    tables = {}
    dtype = [
        ("binwave", "f4"),
        ("alpha", "f4"),
        ("year1value", "f4"),
        ("tsoft", "f4"),
        ("t0", "f4"),
    ]
    for channel in (1, 2, 3, 4):
        low = BAND_WAVELENGTHS[f"{channel}A"][0] - 0.2
        high = BAND_WAVELENGTHS[f"{channel}C"][1] + 0.2
        binwave = np.linspace(low, high, 25)
        # Loss after one year grows with wavelength: 1 - time_loss at the long end.
        year1 = 1.0 - time_loss * ((binwave - 4.5) / 24.0) ** 2
        table = np.zeros(binwave.size, dtype=dtype)
        table["binwave"] = binwave
        table["alpha"] = -0.6
        table["year1value"] = year1
        table["tsoft"] = 100.0
        table["t0"] = 59500.0
        tables[channel] = table
    return tables


def _time_loss_factor(table, wavelength: np.ndarray, mid_time: float) -> np.ndarray:
    """Throughput factor at ``mid_time`` (jwst's bounded power law, linear in wavelength)."""
    binwave = table["binwave"].astype(float)
    norm = (365.0 + table["tsoft"].astype(float)) ** table["alpha"] / table["year1value"]
    grid = (mid_time - table["t0"].astype(float) + table["tsoft"]) ** table["alpha"] / norm
    grid = np.minimum(grid, 1.0)
    inside = np.interp(wavelength, binwave, grid)
    below = grid[0] + (wavelength - binwave[0]) * (grid[1] - grid[0]) / (binwave[1] - binwave[0])
    above = grid[-1] + (wavelength - binwave[-1]) * (grid[-1] - grid[-2]) / (
        binwave[-1] - binwave[-2]
    )
    outside = np.where(wavelength < binwave[0], below, above)
    return np.where((wavelength < binwave[0]) | (wavelength > binwave[-1]), outside, inside)


def _reference_metadata(reference, model, reftype: str, description: str) -> None:
    meta = reference.meta
    meta.reftype = reftype
    meta.description = description
    meta.author = "mirispec_steps.simulate"
    meta.pedigree = "DUMMY"
    meta.useafter = "2022-01-01T00:00:00"
    meta.instrument.name = "MIRI"
    meta.instrument.detector = model.meta.instrument.detector
    meta.instrument.channel = model.meta.instrument.channel
    meta.instrument.band = model.meta.instrument.band
    exposure = getattr(meta, "exposure", None)
    if exposure is not None:
        exposure.type = "MIR_MRS"


def _label_exposures(rate_model, background_model) -> None:
    rate_model.meta.target.source_type = "POINT"
    rate_model.meta.filename = "simulated_rate.fits"
    background_model.meta.observation.bkgdtarg = True
    background_model.meta.filename = "simulated_bkg_rate.fits"


@dataclass
class DetectorNoise:
    """
    How slopes become measured slope images: noise, bad pixels, cosmic rays.

    Attributes
    ----------
    exposure_time : float
        Effective integration time (s).
    electrons_per_dn : float
        Gain.
    read_noise : float
        Read-noise standard deviation of a slope (DN/s).
    noise : bool
        Draw noise (False: noise-free slopes, expected variances).
    hot, dead : ndarray
        Boolean maps of hot and dead pixels (flagged DO_NOT_USE).
    hits : ndarray
        ``(n, 2)`` cosmic-ray pixels of the science exposure.
    with_wcs : bool
        Keep the WCS on the exposures.
    """

    exposure_time: float
    electrons_per_dn: float
    read_noise: float
    noise: bool
    hot: np.ndarray
    dead: np.ndarray
    hits: np.ndarray
    with_wcs: bool

    def expose(self, template, rate: np.ndarray, rng, with_hits: bool):
        """
        A measured slope image (``IFUImageModel``) of the noise-free ``rate``.

        The template's WCS object is shared, not copied (it is read-only
        here, and the geometry cache then serves every exposure).
        """
        shape = rate.shape
        electrons_per_rate = self.electrons_per_dn * self.exposure_time
        expected = np.clip(rate, 0.0, None)
        if self.noise:
            counts = rng.poisson(expected * electrons_per_rate)
            measured = counts / electrons_per_rate + self.read_noise * rng.standard_normal(shape)
            var_poisson = np.clip(measured, 0.0, None) / electrons_per_rate
        else:
            measured = rate.copy()
            var_poisson = expected / electrons_per_rate
        if with_hits and self.hits.size:
            peak = np.nanmax(rate)
            measured[self.hits[:, 0], self.hits[:, 1]] += 5.0 * peak + 100.0 * self.read_noise
        var_rnoise = np.full(shape, self.read_noise**2)
        measured[self.hot] += 50.0 + 10.0 * np.nanmax(rate)
        measured[self.dead] = np.nan
        dq = np.zeros(shape, dtype=np.uint32)
        dq[self.dead] = DO_NOT_USE | DEAD
        dq[self.hot] = DO_NOT_USE | HOT
        exposure = copy_sharing_wcs(template)
        if not self.with_wcs:
            exposure.meta.wcs = None
        exposure.data = measured.astype(np.float32)
        exposure.dq = dq
        exposure.var_poisson = var_poisson.astype(np.float32)
        exposure.var_rnoise = var_rnoise.astype(np.float32)
        exposure.err = np.sqrt(var_poisson + var_rnoise).astype(np.float32)
        for values in (exposure.err, exposure.var_poisson, exposure.var_rnoise):
            values[self.dead] = np.nan
        exposure.meta.exposure.exposure_time = self.exposure_time
        exposure.meta.exposure.effective_exposure_time = self.exposure_time
        return exposure


def simulate_mrs(
    detector: str = "MIRIFUSHORT",
    band: str = "SHORT",
    *,
    alpha: float = 0.0,
    beta: float = 0.0,
    continuum: Callable[[np.ndarray], np.ndarray] = default_mrs_continuum,
    lines: tuple = DEFAULT_LINES,
    extended: ExtendedEmission | None = None,
    psf=None,
    resolving_power: ResolvingPower | None = None,
    background: Callable[[np.ndarray], np.ndarray] | None = default_mrs_background,
    fringe_amplitude: float = 0.1,
    point_source_fringes: PointSourceFringes | None = None,
    spectral_leak: Callable[[np.ndarray], np.ndarray] | None = None,
    gain_variation: float = 0.03,
    time_loss: float = 0.0,
    exposure_time: float = 1000.0,
    electrons_per_dn: float = 3.1,
    read_noise: float = 0.01,
    noise: bool = True,
    bad_pixel_fraction: float = 1.0e-3,
    cosmic_rays: int = 0,
    reference_dir: str | Path | None = None,
    with_wcs: bool = True,
    target: tuple | None = None,
    seed: int | None = None,
    calibration_seed: int | None = None,
) -> SimulatedMrs:
    """
    Simulate an MRS slope image of a point source, its background exposure and references.

    Parameters
    ----------
    detector : str
        ``MIRIFUSHORT`` (channels 1 and 2) or ``MIRIFULONG`` (3 and 4).
    band : str
        ``SHORT``, ``MEDIUM`` or ``LONG``.
    alpha, beta : float
        Point-source position in the MRS field (arcsec); both channels.
    continuum : callable
        Source continuum ``F(lambda)`` (Jy); use ``lambda w: 0 * w`` for none.
    lines : tuple of EmissionLine
        Emission lines (integrated fluxes in Jy micron).
    extended : ExtendedEmission or None
        Optional extended emission (added to the truth, not subtracted).
    psf : object or None
        The PSF: anything with ``footprint_fraction`` (the package's
        :class:`MrsPsf`, a :class:`~mirispec_steps.mrs.core.psf.CubePsf`, or a
        family of :mod:`mirispec_steps.simulate.mrs_psf` the package does not
        model); default :class:`MrsPsf`.
    resolving_power : ResolvingPower or None
        Line widths; default the packaged Labiano et al. (2021) coefficients.
    background : callable or None
        Uniform background ``B(lambda)`` (MJy/sr) in both exposures.
    fringe_amplitude : float
        Fringe modulation depth (0 for none) of extended light: the fringe flat.
    point_source_fringes : PointSourceFringes or None
        The point source's own fringes (contrast and phase unlike the flat's,
        leaving residual fringes after it); default the flat's (none left).
    spectral_leak : callable or None
        ``F_leak(lambda) / F(lambda / 2)`` of 1B light reaching channel 3A
        (e.g. :func:`default_spectral_leak`); its ``mrsptcorr`` reference is
        returned as ``ptcorr``. Default no leak.
    gain_variation : float
        RMS of the pixel-to-pixel response variation.
    time_loss : float
        Throughput lost at 28 micron one year after launch; when > 0 the
        photom reference carries jwst's power-law time-dependence tables and
        the slopes include the loss at the exposure's mid time.
    exposure_time : float
        Effective integration time (s) for the Poisson noise.
    electrons_per_dn : float
        Gain.
    read_noise : float
        Read-noise standard deviation of a slope (DN/s).
    noise : bool
        Draw noise; if False, the slopes are the noise-free values (the
        variances still describe the expected noise).
    bad_pixel_fraction : float
        Fraction of dead (NaN) and hot pixels, flagged DO_NOT_USE in DQ,
        the same in both exposures.
    cosmic_rays : int
        Unflagged cosmic-ray hits in the science exposure (positions in
        ``truth.cosmic_rays``).
    reference_dir : str, Path or None
        Folder of real MRS geometry files (``shared/data/mrs``): use the
        flight WCS through jwst's AssignWcsStep instead of the built-in one.
    with_wcs : bool
        Keep the WCS on the output models (archive rate files have none).
    target : (float, float) or None
        RA, Dec (deg) of the source: the exposure is pointed so that
        (alpha, beta) falls there, as the exposures of a dither do
        (:func:`~mirispec_steps.simulate.mrs_geometry.point_at_target`);
        default the fixed pointing of the blank model.
    seed : int or None
        Random seed.
    calibration_seed : int or None
        Seed of the instrument's pixel-to-pixel gain alone, so that several
        exposures (the dithers of a band) share one instrument and one
        ``photom`` reference; default drawn with ``seed``.

    Returns
    -------
    SimulatedMrs
        Models, references and truth.
    """
    rng = np.random.default_rng(seed)
    psf = psf or MrsPsf()
    resolving_power = resolving_power or default_resolving_power()
    model = blank_mrs_model(detector, band)
    if reference_dir is not None:
        model = assign_real_mrs_wcs(model, reference_dir)
    else:
        model.meta.wcs = build_mrs_wcs(model)
    if target is not None:
        model = point_at_target(model, alpha, beta, target, reference_dir)
    gain_rng = rng if calibration_seed is None else np.random.default_rng(calibration_seed)
    scene = _mrs_scene(
        model, gain_rng, alpha, beta, continuum, lines, extended, psf, resolving_power, background,
        fringe_amplitude, gain_variation, time_loss, point_source_fringes, spectral_leak,
    )  # fmt: skip
    science_rate, background_rate = scene.rates()
    bad, hot, dead, hits = _mrs_defects(scene.on_slices, rng, bad_pixel_fraction, cosmic_rays)
    detector_noise = DetectorNoise(
        exposure_time, electrons_per_dn, read_noise, noise, hot, dead, hits, with_wcs
    )
    rate_model = detector_noise.expose(model, science_rate, rng, with_hits=True)
    background_model = detector_noise.expose(model, background_rate, rng, with_hits=False)
    _label_exposures(rate_model, background_model)
    photom, fringe_model = _mrs_references(model, scene)
    truth = MrsTruth(
        alpha=alpha,
        beta=beta,
        continuum=continuum,
        lines=tuple(lines),
        psf=psf,
        resolving_power=resolving_power,
        band_names=scene.band_names,
        surface_brightness=scene.scene,
        background=scene.sky,
        source_surface_brightness=scene.source,
        rate=science_rate,
        background_rate=background_rate,
        fringe=scene.fringe,
        sensitivity=1.0 / scene.conversion,
        pixel_area=scene.area,
        time_loss=scene.time_factor,
        source_fringe=scene.source_fringe,
        leak=scene.leak,
        bad_pixels=bad,
        cosmic_rays=hits,
        extras={"noise": detector_noise, "extended": extended},
    )
    ptcorr = None if spectral_leak is None else spectral_leak_reference(spectral_leak)
    return SimulatedMrs(rate_model, background_model, photom, fringe_model, truth, ptcorr)


@dataclass
class _MrsScene:
    """Per-pixel images of one exposure: scene, factors from sky to slope, time tables."""

    band_names: list
    scene: np.ndarray
    source: np.ndarray
    sky: np.ndarray
    conversion: np.ndarray
    fringe: np.ndarray
    source_fringe: np.ndarray
    leak: np.ndarray
    area: np.ndarray
    time_factor: np.ndarray
    time_tables: dict | None

    @property
    def on_slices(self) -> np.ndarray:
        return np.isfinite(self.conversion)

    def rates(self) -> tuple[np.ndarray, np.ndarray]:
        """Noise-free slopes (DN/s) of the science and the background exposure."""
        factor = self.conversion * self.fringe * self.time_factor
        # The point source has its own fringes; everything else the flat's.
        source_factor = self.conversion * self.source_fringe * self.time_factor
        science = (self.scene - self.source + self.sky) * factor + self.source * source_factor
        science = np.where(self.on_slices, science, 0.0)
        background = np.where(self.on_slices, self.sky * factor, 0.0)
        return science, background


def _mrs_scene(
    model, rng, alpha, beta, continuum, lines, extended, psf, resolving_power, background,
    fringe_amplitude, gain_variation, time_loss, point_source_fringes, spectral_leak,
) -> _MrsScene:  # fmt: skip
    """Surface brightness of the source, extended emission and sky on every slice pixel."""
    shape = model.data.shape

    def blank(fill=np.nan):
        return np.full(shape, fill, dtype=float)

    scene, source, sky, conversion, area = blank(), blank(), blank(), blank(), blank()
    fringe, source_fringe, time_factor = np.ones(shape), np.ones(shape), np.ones(shape)
    leak = np.zeros(shape)
    time_tables = _time_coefficients(time_loss) if time_loss > 0 else None
    mid_time = float(model.meta.exposure.mid_time)
    band_names = []
    for geometry in mrs_geometry(model):
        band_names.append(geometry.name)
        pixels = (geometry.y, geometry.x)
        fraction = psf.footprint_fraction(
            geometry.alpha_low,
            geometry.alpha_high,
            geometry.beta_low,
            geometry.beta_high,
            alpha,
            beta,
            geometry.wavelength,
        )
        flux = np.asarray(continuum(geometry.wavelength), dtype=float) + _pixel_line_flux(
            geometry, lines, resolving_power, geometry.name
        )
        if spectral_leak is not None and geometry.name == "3A":
            leak[pixels] = _leaked_flux(geometry, continuum, lines, resolving_power, spectral_leak)
            flux = flux + leak[pixels]
        point = flux * fraction / geometry.pixel_area * JY_ARCSEC2_TO_MJY_SR
        source[pixels] = point
        scene[pixels] = point + (0.0 if extended is None else extended.footprint_mean(geometry))
        sky[pixels] = 0.0 if background is None else background(geometry.wavelength)
        pixel_gain = 1.0 + gain_variation * rng.standard_normal(geometry.wavelength.size)
        conversion[pixels] = geometry.pixel_area * _response(geometry) * pixel_gain
        area[pixels] = geometry.pixel_area
        fringe[pixels] = _fringes(geometry, fringe_amplitude)
        source_fringe[pixels] = (
            fringe[pixels]
            if point_source_fringes is None
            else _fringes(
                geometry, fringe_amplitude, point_source_fringes.contrast,
                point_source_fringes.offset(alpha),
            )
        )  # fmt: skip
        if time_tables is not None:
            time_factor[pixels] = _time_loss_factor(
                time_tables[geometry.channel], geometry.wavelength, mid_time
            )
    return _MrsScene(
        band_names, scene, source, sky, conversion, fringe, source_fringe, leak, area,
        time_factor, time_tables,
    )  # fmt: skip


def _mrs_defects(on_slices, rng, bad_pixel_fraction, cosmic_rays):
    """Bad pixels (hot and dead, as in both exposures) and cosmic-ray hits of the science one."""
    shape = on_slices.shape
    bad = rng.random(shape) < bad_pixel_fraction
    hot = bad & (rng.random(shape) < 0.3)
    dead = bad & ~hot
    hits = np.empty((0, 2), dtype=int)
    if cosmic_rays > 0:
        rows, columns = np.nonzero(on_slices & ~bad)
        chosen = rng.choice(rows.size, size=cosmic_rays, replace=False)
        hits = np.column_stack([rows[chosen], columns[chosen]])
    return bad, hot, dead, hits


def _mrs_references(model, scene: _MrsScene):
    """The photom and fringe references that calibrate the simulated slopes exactly."""
    from stdatamodels.jwst import datamodels

    shape = scene.conversion.shape
    on_slices = scene.on_slices
    photom = datamodels.MirMrsPhotomModel()
    _reference_metadata(photom, model, "PHOTOM", "Simulated MRS photom (mirispec_steps)")
    sensitivity = 1.0 / scene.conversion
    photom.data = sensitivity.astype(np.float32)
    photom.err = (0.01 * sensitivity).astype(np.float32)
    photom.dq = np.where(on_slices, 0, DO_NOT_USE).astype(np.uint32)
    photom.pixsiz = scene.area.astype(np.float32)
    nominal_area = float(np.nanmean(scene.area[scene.area > 0]))
    photom.meta.photometry.pixelarea_arcsecsq = nominal_area
    photom.meta.photometry.pixelarea_steradians = nominal_area * ARCSEC2_TO_SR
    photom.meta.photometry.conversion_megajanskys = 1.0
    if scene.time_tables is not None:
        for channel, table in scene.time_tables.items():
            setattr(photom, f"timecoeff_powerlaw_ch{channel}", table)
    fringe_model = datamodels.FringeModel(data=scene.fringe.astype(np.float32))
    _reference_metadata(fringe_model, model, "FRINGE", "Simulated MRS fringe flat (mirispec_steps)")
    fringe_model.err = np.zeros(shape, dtype=np.float32)
    fringe_model.dq = np.zeros(shape, dtype=np.uint32)
    return photom, fringe_model
