"""MRS point-source spectra from the detector: the model layer of MrsExtractStep.

Reads a calibrated MRS exposure and its centroid solution (through
:mod:`~mirispec_steps.mrs.exposure`) into the arrays of
:mod:`mirispec_steps.mrs.core.extract`, extracts every channel on the
detector, and writes jwst's MRS x1d product (``MRSMultiSpecModel``) with the
one shared x1d builder.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from astropy.table import Table, vstack
from stdatamodels.jwst import datamodels

from mirispec_steps import flags
from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs import exposure as mrs_exposure
from mirispec_steps.mrs.centroid import band_grid
from mirispec_steps.mrs.core.ellipse_overlap import EllipticalAperture
from mirispec_steps.mrs.core.extract import (
    BinSpectrum,
    aperture_photometry,
    optimal_extraction,
    spectral_shape,
)
from mirispec_steps.mrs.core.psf_calibration import CorrectedPsf
from mirispec_steps.mrs.core.residual_fringe import remove_residual_fringes
from mirispec_steps.mrs.core.resolution import ResolvingPower
from mirispec_steps.mrs.core.spectral_grid import SpectralGrid, bin_members
from mirispec_steps.mrs.geometry import ChannelGeometry, mrs_geometry
from mirispec_steps.mrs.psf_choice import PSF_MODES, PsfChoice, choose_psf
from mirispec_steps.x1d import (
    SpectrumColumns,
    SpectrumPlacement,
    describe_spectrum,
    make_spec_model,
    make_x1d_model,
)

__all__ = [
    "ARCSEC2_TO_SR",
    "ChannelSpectrum",
    "ExtractionSettings",
    "apcorr_table",
    "extract_channels",
    "source_track",
    "x1d_model",
]

log = logging.getLogger(__name__)

#: Steradians per square arcsecond.
ARCSEC2_TO_SR = (np.pi / 648000.0) ** 2
#: Sub-bins per bin of the first pass that measures the spectral shape.
SHAPE_SUBBINS = 3
#: Optimal fits use the pixels within this many PSF FWHM of the source (in alpha and beta).
FIT_REACH_FWHM = 4.0


@dataclass
class ExtractionSettings:
    """
    Choices of one extraction (the step's parameters).

    Attributes
    ----------
    method : str
        ``optimal`` or ``aperture``.
    radius : float
        Aperture semi-major axis, in ``radius_units``.
    radius_units : str
        ``fwhm`` (multiples of the PSF FWHM at each wavelength) or ``arcsec``.
    axis_ratio : float
        Semi-minor over semi-major axis.
    position_angle : float
        Semi-major axis angle from +alpha towards +beta (degrees).
    subtract_background : bool
        Annulus background (aperture) or a fitted constant (optimal).
    annulus : (float, float) or None
        Inner and outer annulus radii in ``radius_units`` (default 1.5 and
        2 times ``radius``).
    apply_apcorr : bool
        Correct aperture fluxes to total fluxes with the PSF model.
    reject_sigma : float
        Optimal extraction's outlier threshold (0: none).
    clip_sigma : float
        Annulus clipping threshold.
    reject_spikes : bool
        Leave out single-pixel spikes (unflagged cosmic rays).
    oversampling : float or None
        Spectral bins per resolution element; None uses the centroid's grid.
    alpha, beta : float or None
        Fixed source position (arcsec); None uses the centroid track.
    psf : str
        ``auto``, ``reference`` or ``empirical``
        (:mod:`~mirispec_steps.mrs.psf_choice`).
    residual_fringe : bool
        Fit each channel's residual fringes (jwst's 1-D code) into RF_FLUX.
    """

    method: str = "optimal"
    radius: float = 2.0
    radius_units: str = "fwhm"
    axis_ratio: float = 1.0
    position_angle: float = 0.0
    subtract_background: bool = False
    annulus: tuple | None = None
    apply_apcorr: bool = True
    reject_sigma: float = 5.0
    clip_sigma: float = 3.0
    reject_spikes: bool = True
    oversampling: float | None = None
    alpha: float | None = None
    beta: float | None = None
    psf: str = "auto"
    residual_fringe: bool = True

    def annulus_factors(self) -> tuple[float, float] | None:
        """Annulus radii as multiples of the aperture (None without background)."""
        if not self.subtract_background or self.method != "aperture":
            return None
        inner, outer = self.annulus if self.annulus else (1.5 * self.radius, 2.0 * self.radius)
        if not self.radius <= inner < outer:
            raise InputDataError(
                f"annulus {inner}-{outer} {self.radius_units}: need radius ({self.radius}) "
                "<= inner < outer"
            )
        return inner / self.radius, outer / self.radius


@dataclass
class ChannelSpectrum:
    """
    One channel's extraction.

    Attributes
    ----------
    geometry : ChannelGeometry
        The channel's pixels.
    grid : SpectralGrid
        Spectral bins.
    alpha, beta : ndarray
        ``(K,)`` source position per bin (arcsec).
    semi_major : ndarray
        ``(K,)`` aperture semi-major axis (arcsec; aperture method).
    spectrum : BinSpectrum
        The sums.
    psf : MrsPsf, CubePsf or CorrectedPsf
        The PSF the extraction used.
    psf_choice : PsfChoice
        Which PSF that is, and why.
    """

    geometry: ChannelGeometry
    grid: SpectralGrid
    alpha: np.ndarray
    beta: np.ndarray
    semi_major: np.ndarray
    spectrum: BinSpectrum
    psf: object
    psf_choice: PsfChoice


def _check_in_field(geometry: ChannelGeometry, alpha: np.ndarray, beta: np.ndarray) -> None:
    """Refuse a source position outside the channel's field of view."""
    low_beta, high_beta = float(np.min(geometry.beta_low)), float(np.max(geometry.beta_high))
    centre_alpha, centre_beta = float(np.median(alpha)), float(np.median(beta))
    nearest = geometry.slice_number == (
        np.argmin(np.abs(geometry.slice_beta - np.clip(centre_beta, low_beta, high_beta))) + 1
    )
    edges = np.concatenate([geometry.alpha_low[nearest], geometry.alpha_high[nearest]])
    low_alpha, high_alpha = float(np.min(edges)), float(np.max(edges))
    if not (low_beta <= centre_beta <= high_beta and low_alpha <= centre_alpha <= high_alpha):
        raise InputDataError(
            f"source position (alpha, beta) = ({centre_alpha:.3f}, {centre_beta:.3f}) arcsec is "
            f"outside channel {geometry.name}'s field (alpha {low_alpha:.2f} to {high_alpha:.2f}, "
            f"beta {low_beta:.2f} to {high_beta:.2f} arcsec)"
        )


def source_track(
    model,
    geometry: ChannelGeometry,
    usable: np.ndarray,
    settings: ExtractionSettings,
    resolution: ResolvingPower,
) -> tuple[SpectralGrid, np.ndarray, np.ndarray]:
    """
    The channel's spectral bins and the source position in each.

    Parameters
    ----------
    model : IFUImageModel
        Calibrated exposure, with or without a centroid solution.
    geometry : ChannelGeometry
        The channel.
    usable : ndarray
        Usable-pixel image.
    settings : ExtractionSettings
        ``oversampling``, ``alpha`` and ``beta``.
    resolution : ResolvingPower
        For a grid built here (no centroid, or ``oversampling`` given).

    Returns
    -------
    grid : SpectralGrid
        The bins: the centroid's, or ``lambda / R`` bins at ``oversampling``.
    alpha, beta : ndarray
        ``(K,)`` the fixed position, or the centroid's smooth track.

    Raises
    ------
    InputDataError
        No centroid and no position, or a position outside the field.
    """
    tree = mrs_exposure.stored_solution(model)
    entry = None if tree is None else tree["channels"].get(str(geometry.channel))
    fixed = settings.alpha is not None and settings.beta is not None
    if (settings.alpha is None) != (settings.beta is None):
        raise InputDataError("give both alpha and beta for a fixed source position, or neither")
    if entry is None and not fixed:
        raise InputDataError(
            f"channel {geometry.name} has no centroid solution and no position was given: run "
            "mrs_centroid (MrsCentroidStep) first, or pass alpha and beta (arcsec)"
        )
    if entry is not None and settings.oversampling is None:
        grid = SpectralGrid(
            np.asarray(entry["wavelength"], dtype=float), np.asarray(entry["bin_width"], float)
        )
    else:
        valid = usable[geometry.y, geometry.x]
        if not np.any(valid):
            raise InputDataError(f"channel {geometry.name} has no usable pixel")
        grid = band_grid(geometry, valid, resolution, settings.oversampling or 1.0)
    if fixed:
        alpha = np.full(len(grid), float(settings.alpha))
        beta = np.full(len(grid), float(settings.beta))
    else:
        wavelength = np.asarray(entry["wavelength"], dtype=float)
        known = np.isfinite(entry["alpha_smooth"]) & np.isfinite(entry["beta_smooth"])
        if not np.any(known):
            raise InputDataError(f"channel {geometry.name}: the centroid track is undefined")
        alpha = np.interp(grid.wavelength, wavelength[known], entry["alpha_smooth"][known])
        beta = np.interp(grid.wavelength, wavelength[known], entry["beta_smooth"][known])
    if len(grid) == 0:
        raise InputDataError(f"channel {geometry.name}: no spectral bin fits in the data")
    _check_in_field(geometry, alpha, beta)
    return grid, alpha, beta


def _on_grid(grid: SpectralGrid, finer: SpectralGrid, track: tuple) -> tuple:
    """A per-bin track interpolated onto another grid."""
    return tuple(np.interp(finer.wavelength, grid.wavelength, values) for values in track)


def _extract(pixels, grid, track, settings, psf, members=None, shape=None) -> BinSpectrum:
    """One extraction pass of the chosen method over ``grid``."""
    alpha, beta, semi_major = track
    if members is None:
        members = bin_members(pixels.wavelength, grid)
    if settings.method == "aperture":

        def psf_fraction(pixel, alpha_centre, beta_centre):
            return psf.footprint_fraction(
                pixels.alpha_low[pixel],
                pixels.alpha_high[pixel],
                pixels.beta_low[pixel],
                pixels.beta_high[pixel],
                alpha_centre,
                beta_centre,
                pixels.wavelength[pixel],
            )

        return aperture_photometry(
            pixels,
            members,
            alpha,
            beta,
            EllipticalAperture(semi_major, settings.axis_ratio, settings.position_angle),
            psf_fraction if settings.apply_apcorr else None,
            settings.annulus_factors(),
            settings.clip_sigma,
            shape=shape,
        )
    # Pixels further than a few FWHM hold a negligible share of the PSF: fit only the rest.
    reach = FIT_REACH_FWHM * np.asarray(psf.fwhm(grid.wavelength), dtype=float)
    index = members.index
    alpha_mid = 0.5 * (pixels.alpha_low + pixels.alpha_high)
    beta_mid = 0.5 * (pixels.beta_low + pixels.beta_high)
    near = (np.abs(alpha_mid[index] - alpha[:, None]) <= reach[:, None]) & (
        np.abs(beta_mid[index] - beta[:, None]) <= reach[:, None]
    )
    members = members.subset(near & pixels.valid[index])
    index = members.index
    fraction = psf.footprint_fraction(
        pixels.alpha_low[index],
        pixels.alpha_high[index],
        pixels.beta_low[index],
        pixels.beta_high[index],
        alpha[:, None],
        beta[:, None],
        pixels.wavelength[index],
    )
    return optimal_extraction(
        pixels,
        members,
        grid,
        np.where(members.inside, fraction, 0.0),
        settings.subtract_background,
        settings.reject_sigma or None,
        shape=shape,
    )


#: First passes kept for reuse: both methods on one exposure make the same one.
SHAPE_CACHE_SIZE = 4
_SHAPE_CACHE: OrderedDict = OrderedDict()
_SHAPE_LOCK = threading.Lock()


def _psf_identity(psf) -> tuple:
    """What makes two PSF objects give the same fractions (the objects are never mutated)."""
    if isinstance(psf, CorrectedPsf):
        return (
            id(psf.reference),
            psf.coefficients.tobytes(),
            psf.wavelength_nodes.tobytes(),
            psf.grid.knots.tobytes(),
            psf.grid.degree,
        )
    return (id(psf),)


def _shape_pass(pixels, finer: SpectralGrid, track: tuple, settings, psf) -> BinSpectrum:
    """
    The optimal fit on the finer grid that gives the spectral shape, reused for identical input.

    The key is a digest of every pixel array, the grid and the track, the
    settings the fit reads and the PSF's identity; the cached value keeps the
    PSF (and its reference) alive, so an identity cannot be reused while cached.
    """
    digest = hashlib.blake2b(digest_size=20)
    arrays = [getattr(pixels, field.name) for field in fields(pixels)]
    for values in [*arrays, finer.wavelength, finer.width, *track[:2]]:
        digest.update(np.ascontiguousarray(values).tobytes())
    key = (
        digest.hexdigest(),
        _psf_identity(psf),
        settings.subtract_background,
        settings.reject_sigma,
    )
    with _SHAPE_LOCK:
        if key in _SHAPE_CACHE:
            _SHAPE_CACHE.move_to_end(key)
            return _SHAPE_CACHE[key][0]
    first = _extract(pixels, finer, track, replace(settings, method="optimal"), psf)
    with _SHAPE_LOCK:
        _SHAPE_CACHE[key] = (first, psf, getattr(psf, "reference", None))
        while len(_SHAPE_CACHE) > SHAPE_CACHE_SIZE:
            _SHAPE_CACHE.popitem(last=False)
    return first


def extract_channels(
    model,
    settings: ExtractionSettings,
    psf_reference,
    resolution: ResolvingPower,
    maps=None,
) -> list[ChannelSpectrum]:
    """
    Extract every channel on the exposure's detector.

    Parameters
    ----------
    model : IFUImageModel
        Calibrated MRS exposure (MJy/sr) with a WCS (or ``maps``).
    settings : ExtractionSettings
        Method and aperture.
    psf_reference : MrsPsfReference
        The PSF model per band (``mrspsf``).
    resolution : ResolvingPower
        Resolving power (grids built without a centroid).
    maps : str or None
        ``mrsmaps`` file for data without a WCS.

    Returns
    -------
    list of ChannelSpectrum
        Ordered by channel.
    """
    if settings.psf not in PSF_MODES:
        raise InputDataError(f"psf must be one of {', '.join(PSF_MODES)}, got {settings.psf!r}")
    usable = mrs_exposure.usable_pixels(model, settings.reject_spikes)
    results = []
    for geometry in sorted(mrs_geometry(model, maps=maps), key=lambda g: g.channel):
        grid, alpha, beta = source_track(model, geometry, usable, settings, resolution)
        reference = psf_reference.for_band(geometry.name, *grid.wavelength_span)
        pixels = mrs_exposure.footprint_pixels(model, geometry, usable)
        members = bin_members(pixels.wavelength, grid)
        if settings.radius_units == "fwhm":
            semi_major = settings.radius * np.asarray(reference.fwhm(grid.wavelength), dtype=float)
        else:
            semi_major = np.full(len(grid), float(settings.radius))
        track = (alpha, beta, semi_major)
        shape = None
        needs_psf = settings.method == "optimal" or settings.apply_apcorr
        mode = settings.psf if needs_psf else "reference"
        # The PSF first (a line's bins misfit, but they are few against the band's), then
        # the spectrum's shape inside each bin with it.
        psf, choice = choose_psf(
            mode, pixels, members, alpha, beta, reference, geometry.name,
            settings.subtract_background,
        )  # fmt: skip
        if needs_psf:
            # A PSF fit on bins a third as wide gives the spectrum's shape inside each bin
            # (aperture sums over so few pixels would show their sampling, not the spectrum).
            finer = grid.finer(SHAPE_SUBBINS)
            first = _shape_pass(pixels, finer, _on_grid(grid, finer, track), settings, psf)
            shape = spectral_shape(
                finer.wavelength,
                *first.total_flux,
                grid,
                geometry.wavelength_low,
                geometry.wavelength_high,
                first.flux_weights,
                first.psf_coverage,
            )
        spectrum = _extract(pixels, grid, track, settings, psf, members, shape)
        _report(geometry, settings, spectrum)
        results.append(
            ChannelSpectrum(geometry, grid, alpha, beta, semi_major, spectrum, psf, choice)
        )
    return results


def _report(geometry, settings, spectrum: BinSpectrum) -> None:
    good = np.isfinite(spectrum.flux)
    snr = np.nanmedian(spectrum.flux[good] / spectrum.flux_error[good]) if good.any() else np.nan
    message = (
        f"Channel {geometry.name}: {settings.method} extraction of {good.size} bins "
        f"({int(np.count_nonzero(~good))} empty), median SNR {snr:.1f}"
    )
    if settings.method == "aperture" and settings.apply_apcorr:
        message += f", aperture correction {np.nanmedian(spectrum.aperture_correction):.3f}"
    if settings.method == "optimal":
        message += f", {int(spectrum.n_rejected.sum())} pixels rejected"
    log.info(message)


def _columns(result: ChannelSpectrum, settings: ExtractionSettings):
    """Builder columns, the solid angle per NPIXELS unit, and the correction."""
    spectrum = result.spectrum
    npixels = spectrum.npixels
    if settings.method == "aperture":
        count = np.where(npixels > 0, npixels, 1.0)
        area = np.pi * result.semi_major**2 * settings.axis_ratio
        # The builder multiplies by solid angle per pixel: the aperture's, spread over NPIXELS.
        solid_angle = area * ARCSEC2_TO_SR / count
        scale = count / area
        correction = spectrum.aperture_correction if settings.apply_apcorr else None
    else:
        solid_angle = ARCSEC2_TO_SR
        scale = np.ones_like(npixels)
        correction = None
    count = np.where(npixels > 0, npixels, 1.0)
    # Pixels rejected by the optimal fit flag their bin (annulus clipping is routine).
    rejected = spectrum.n_rejected > 0 if settings.method == "optimal" else False
    dq = np.where(rejected, flags.OUTLIER, 0).astype(np.uint32)
    columns = SpectrumColumns(
        wavelength=result.grid.wavelength,
        flux=spectrum.flux * scale,
        var_poisson=spectrum.flux_variances[0] * scale**2,
        var_rnoise=spectrum.flux_variances[1] * scale**2,
        var_flat=spectrum.flux_variances[2] * scale**2,
        background=spectrum.background * count,
        bkg_var_poisson=spectrum.background_variances[0] * count**2,
        bkg_var_rnoise=spectrum.background_variances[1] * count**2,
        bkg_var_flat=spectrum.background_variances[2] * count**2,
        npixels=npixels,
        dq=dq,
        surface_brightness=settings.method == "aperture",
    )
    return columns, solid_angle, correction


def x1d_model(model, results: list[ChannelSpectrum], settings: ExtractionSettings, psf_name: str):
    """
    jwst's MRS x1d product: one ``MRSSpecModel`` per channel, ordered by channel.

    Parameters
    ----------
    model : IFUImageModel
        The exposure.
    results : list of ChannelSpectrum
        Extractions.
    settings : ExtractionSettings
        Recorded in the product (``mirispec_extraction``).
    psf_name : str
        PSF reference file name (recorded).

    Returns
    -------
    MRSMultiSpecModel
        FLUX in Jy, SURF_BRIGHT and BACKGROUND in MJy/sr.
    """
    spectra = []
    channels = {}
    for result in results:
        columns, solid_angle, correction = _columns(result, settings)
        spec = make_spec_model(columns, solid_angle, correction, datamodels.MRSSpecModel)
        fringes = (
            _remove_residual_fringes(spec, result.geometry)
            if settings.residual_fringe
            else {"fitted": False, "reason": "residual_fringe=False"}
        )
        centre = len(result.grid) // 2
        ra, dec = mrs_exposure.sky_position(
            model,
            float(np.median(result.alpha)),
            float(np.median(result.beta)),
            float(result.grid.wavelength[centre]),
        )
        geometry = result.geometry
        limits = (
            float(geometry.x.min()),
            float(geometry.x.max()),
            float(geometry.y.min()),
            float(geometry.y.max()),
        )
        describe_spectrum(
            spec, model, SpectrumPlacement(ra, dec, limits, 2, geometry.name, "POINT")
        )
        spectra.append(spec)
        channels[str(geometry.channel)] = {
            "band": geometry.name,
            "alpha": np.asarray(result.alpha, dtype=float),
            "beta": np.asarray(result.beta, dtype=float),
            "semi_major": np.asarray(result.semi_major, dtype=float),
            "psf": result.psf_choice.record(),
            "residual_fringe": fringes,
            "aperture_correction": np.asarray(
                result.spectrum.aperture_correction
                if settings.method == "aperture" and settings.apply_apcorr
                else np.ones(len(result.grid))
            ),
        }
    output = make_x1d_model(model, spectra, False, datamodels.MRSMultiSpecModel)
    record = {key: value for key, value in asdict(settings).items() if value is not None}
    if "annulus" in record:
        record["annulus"] = [float(v) for v in record["annulus"]]
    output.mirispec_extraction = {**record, "psf_file": psf_name, "channels": channels}
    return output


def _remove_residual_fringes(spec, geometry) -> dict:
    """RF_FLUX (and RF_SURF_BRIGHT) of one channel's spectrum, as jwst's ``ifu_rfcorr``."""
    table = spec.spec_table
    flux = np.asarray(table["FLUX"], dtype=float)
    fit = remove_residual_fringes(np.asarray(table["WAVELENGTH"], float), flux, geometry.channel)
    good = np.isfinite(flux)
    table["RF_FLUX"] = np.where(good, fit.flux, np.nan)
    table["RF_SURF_BRIGHT"] = np.where(good, np.asarray(table["SURF_BRIGHT"]) * fit.factor, np.nan)
    if not fit.fitted:
        log.warning(f"Channel {geometry.name}: residual fringes not removed: {fit.message}")
        return {"fitted": False, "reason": fit.message}
    amplitude = float(np.sqrt(2.0 * np.mean((fit.factor[good] - 1.0) ** 2))) if good.any() else 0.0
    log.info(
        f"Channel {geometry.name}: residual fringes of amplitude {100 * amplitude:.2f}% fitted"
    )
    return {"fitted": True, "amplitude": amplitude}


def apcorr_table(results: list[ChannelSpectrum], settings: ExtractionSettings) -> Table:
    """
    The per-wavelength aperture correction of every channel.

    Parameters
    ----------
    results : list of ChannelSpectrum
        Aperture extractions.
    settings : ExtractionSettings
        The aperture.

    Returns
    -------
    astropy.table.Table
        Columns ``channel``, ``band``, ``wavelength`` (um), ``radius``
        (arcsec semi-major axis), ``enclosed_fraction`` and ``apcorr``
        (the factor applied to FLUX).
    """
    tables = []
    for result in results:
        size = len(result.grid)
        tables.append(
            Table(
                {
                    "channel": np.full(size, result.geometry.channel),
                    "band": np.full(size, result.geometry.name),
                    "wavelength": result.grid.wavelength,
                    "radius": result.semi_major,
                    "enclosed_fraction": result.spectrum.enclosed_fraction,
                    "apcorr": result.spectrum.aperture_correction,
                }
            )
        )
    table = vstack(tables) if len(tables) > 1 else tables[0]
    table["wavelength"].unit = "um"
    table["radius"].unit = "arcsec"
    table.meta["method"] = settings.method
    table.meta["radius"] = f"{settings.radius} {settings.radius_units}"
    return table
