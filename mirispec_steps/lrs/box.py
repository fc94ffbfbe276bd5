"""LRS box extraction: from an exposure and its parameters to an x1d model.

The model layer between :mod:`~mirispec_steps.lrs.box_step` (thin stpipe
wrapper) and the pure-NumPy core (:mod:`~mirispec_steps.lrs.core`); it reads
the exposure only through :mod:`~mirispec_steps.lrs.exposure` and writes the
x1d with :mod:`~mirispec_steps.x1d`. Parameter precedence and meaning follow
jwst 3.0's ``extract_1d`` for MIRI LRS: step parameter, else the extract1d
reference file, else a default.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from mirispec_steps import flags
from mirispec_steps.errors import InputDataError, ParameterError
from mirispec_steps.lrs import exposure as lrs_exposure
from mirispec_steps.lrs.core.apcorr import tabulated_correction
from mirispec_steps.lrs.core.aperture import (
    centred_region,
    profile_centre,
    profile_from_regions,
    regions_from_coefficients,
)
from mirispec_steps.lrs.core.background import fit_background
from mirispec_steps.lrs.core.box import box_sum, repair_from_profile
from mirispec_steps.lrs.exposure import LrsExposure, LrsRegion
from mirispec_steps.lrs.references import ApcorrTable, ApertureParameters
from mirispec_steps.x1d import SpectrumColumns

__all__ = [
    "BoxParameters",
    "BoxApertures",
    "resolve_box_parameters",
    "build_box_apertures",
    "extract_box",
    "BoxProducts",
]

log = logging.getLogger(__name__)


@dataclass
class BoxParameters:
    """
    Final box-extraction parameters for one exposure (after precedence rules).

    Limits are in the input's pixel frame, 0-indexed and inclusive;
    ``xdisp_start/stop`` are along the cross-dispersion axis (x for LRS).
    ``use_source_posn`` None (unrectified data, not set by the user or the
    file) means: follow the source through the WCS when the nominal
    aperture does not lie on the data (limits given in the s2d frame).
    """

    xdisp_start: float
    xdisp_stop: float
    disp_start: float
    disp_stop: float
    extract_width: float | None
    src_coeff: list | None
    bkg_coeff: list | None
    independent_var: str
    subtract_background: bool
    bkg_fit: str | None
    bkg_order: int
    smoothing_length: int
    use_source_posn: bool | None
    position_offset: float
    bkg_sigma_clip: float | None
    replace_bad_pixels: bool
    fixed_background: bool


def _smoothing(value) -> int:
    length = int(np.round(value)) if value != int(value) else int(value)
    if length != value:
        log.warning(f"Smoothing length must be an integer. Rounding to {length}")
    if length != 0 and length < 3:
        log.warning(f"Smoothing length {length} is not allowed. Setting it to 0.")
        return 0
    if length and length % 2 == 0:
        log.warning(f"Even smoothing lengths are not supported; using {length - 1}.")
        return length - 1
    return length


def resolve_box_parameters(
    aperture: ApertureParameters,
    exposure: LrsExposure,
    *,
    subtract_background: bool | None,
    bkg_fit: str | None,
    bkg_order: int | None,
    smoothing_length: int | None,
    use_source_posn: bool | None,
    position_offset: float,
    bkg_sigma_clip: float | None,
    replace_bad_pixels: bool,
    fixed_background: bool,
) -> BoxParameters:
    """
    Combine step parameters with the reference-file aperture (jwst's rules).

    Parameters
    ----------
    aperture : ApertureParameters
        The selected extract1d aperture.
    exposure : LrsExposure
        The input (shape, exposure type, source type).
    subtract_background, bkg_fit, bkg_order, smoothing_length : optional
        Step parameters; None means "take the reference file's value".
    use_source_posn : bool or None
        None: the reference file's value, else True for fixed-slit point
        sources on rectified data, and on unrectified data "follow the source
        if the nominal aperture misses the data" (see :class:`BoxParameters`).
    position_offset : float
        Extra cross-dispersion shift in pixels.
    bkg_sigma_clip : float or None
        Background outlier clipping threshold (ours).
    replace_bad_pixels : bool
        Repair invalid aperture pixels from the profile (ours).
    fixed_background : bool
        Keep background regions in place when the aperture follows the
        source (ours; jwst moves both).

    Returns
    -------
    BoxParameters
        Parameters ready for :func:`extract_box`.
    """
    ny, nx = exposure.shape
    xstart = aperture.xstart if aperture.xstart is not None else 0
    xstop = aperture.xstop if aperture.xstop is not None else nx - 1
    ystart = aperture.ystart if aperture.ystart is not None else 0
    ystop = aperture.ystop if aperture.ystop is not None else ny - 1
    if exposure.dispaxis == lrs_exposure.VERTICAL:
        xd_start, xd_stop, d_start, d_stop = xstart, xstop, ystart, ystop
    else:
        xd_start, xd_stop, d_start, d_stop = ystart, ystop, xstart, xstop

    bkg_coeff = copy.deepcopy(aperture.bkg_coeff)
    if subtract_background is None:
        subtract_background = bkg_coeff is not None
    if subtract_background and bkg_coeff is None:
        log.warning("subtract_background requested but no bkg_coeff regions are defined")
    fit = None
    order = aperture.bkg_order if bkg_order is None else bkg_order
    order = 0 if order is None else order
    if subtract_background:
        fit = bkg_fit if bkg_fit is not None else (aperture.bkg_fit or "poly")
        if fit == "mean":  # jwst accepts this only as a step parameter; we accept it anywhere
            fit, order = "poly", 0

    if use_source_posn is None and exposure.rectified:
        use_source_posn = aperture.use_source_posn
        if use_source_posn is None:
            use_source_posn = exposure.fixed_slit
        if exposure.source_type != "POINT" and use_source_posn:
            log.info(f"Setting use_source_posn to False for source type {exposure.source_type}")
            use_source_posn = False
    elif use_source_posn is None and aperture.use_source_posn:
        use_source_posn = True
    smoothing = aperture.smoothing_length if smoothing_length is None else smoothing_length
    offset = position_offset if position_offset else (aperture.position_offset or 0.0)
    if bkg_sigma_clip is not None and bkg_sigma_clip < 0:
        raise ParameterError(f"bkg_sigma_clip must be >= 0, got {bkg_sigma_clip}")
    return BoxParameters(
        xdisp_start=float(xd_start),
        xdisp_stop=float(xd_stop),
        disp_start=float(d_start),
        disp_stop=float(d_stop),
        extract_width=aperture.extract_width,
        src_coeff=copy.deepcopy(aperture.src_coeff),
        bkg_coeff=bkg_coeff,
        independent_var=aperture.independent_var,
        subtract_background=bool(subtract_background and bkg_coeff is not None),
        bkg_fit=fit,
        bkg_order=int(order),
        smoothing_length=_smoothing(smoothing or 0),
        use_source_posn=None if use_source_posn is None else bool(use_source_posn),
        position_offset=float(offset),
        bkg_sigma_clip=bkg_sigma_clip or None,
        replace_bad_pixels=replace_bad_pixels,
        fixed_background=fixed_background,
    )


def _shift_coefficients(coefficients, offset):
    if coefficients is None:
        return None
    shifted = copy.deepcopy(coefficients)
    for limit in shifted:
        limit[0] += offset
    return shifted


@dataclass
class BoxApertures:
    """
    Aperture weights on the cutout, after source-position shifts.

    Attributes
    ----------
    source : ndarray
        ``(n_disp, n_xdisp)`` source-aperture weights (fractional at edges).
    background : ndarray or None
        Background-region weights, if background subtraction is on.
    lower, upper : float
        Mean cross-dispersion limits of the source aperture (for the header).
    """

    source: np.ndarray
    background: np.ndarray | None
    lower: float
    upper: float


def _source_regions(params, xd_start, xd_stop, src_coeff, trace, independent, n_rows):
    """Inclusive source limits in jwst's priority order."""
    if src_coeff is not None:
        return regions_from_coefficients(src_coeff, independent)
    if params.extract_width is not None and trace is not None:
        return [centred_region(trace, params.extract_width)]
    if params.extract_width is not None:
        lower, upper = centred_region((xd_start + xd_stop) / 2.0, params.extract_width)
        return [(np.full(n_rows, lower), np.full(n_rows, upper))]
    return [(np.full(n_rows, xd_start), np.full(n_rows, xd_stop))]


def _mean_limits(regions):
    """Aperture extent for the header: extreme mean limits over the regions."""
    lowers = [np.nanmean(lower) for lower, _ in regions]
    uppers = [np.nanmean(upper) for _, upper in regions]
    return float(min(lowers)), float(max(uppers))


def _independent(params, rows, wavelength):
    """jwst's independent variable for coefficient limits: row index or pixel wavelength."""
    return wavelength if params.independent_var == "wavelength" else rows.astype(float)


def _nominal_centre(params, exposure, region, middle_row) -> float:
    """Centre of the unshifted source aperture on the middle row (jwst's ``aperture_center``).

    Evaluated on the full cross-dispersion width of that single row, since the
    nominal aperture (e.g. s2d-frame limits applied to a cal file) may lie
    outside the data region.
    """
    full_index = np.arange(region.full_shape[1])
    if not params.disp_start <= middle_row <= params.disp_stop:
        return float(np.mean(full_index))
    if params.independent_var == "wavelength":
        row_region = LrsRegion(
            np.array([middle_row]), full_index, region.dispaxis, region.full_shape
        )
        independent = lrs_exposure.region_wavelengths(exposure, row_region)
    else:
        independent = np.array([float(middle_row)])
    regions = _source_regions(
        params, params.xdisp_start, params.xdisp_stop, params.src_coeff, None, independent, 1
    )
    profile = profile_from_regions(regions, full_index, 1)
    return profile_centre(profile[0], full_index)


def _follow_when_off_the_data(params: BoxParameters, exposure, region):
    """
    On unrectified data, an aperture given in the s2d frame misses the data: follow the source.

    Returns the parameters to use (with the file's width when it only gives
    limits) and the sky position to follow, or None to keep the limits as given.
    """
    middle_row = int(region.disp_index[region.disp_index.size // 2])
    nominal = _nominal_centre(params, exposure, region, middle_row)
    if region.xdisp_index[0] <= nominal <= region.xdisp_index[-1]:
        return params, None
    sky = lrs_exposure.source_sky_position(exposure)
    if sky is None:
        return params, None
    width = params.extract_width
    if width is None and params.src_coeff is None:
        width = params.xdisp_stop - params.xdisp_start + 1.0
    log.info(
        f"The extract1d aperture (centre column {nominal:.1f}) lies off this unrectified "
        f"image's data (columns {region.xdisp_index[0]}-{region.xdisp_index[-1]}): it is "
        "given in the rectified (s2d) frame. The aperture follows the source trace through "
        f"the WCS instead{'' if width is None else f', {width:g} px wide'} "
        "(use_source_posn=False keeps the limits as given)."
    )
    return dataclasses.replace(params, extract_width=width, use_source_posn=True), sky


def build_box_apertures(
    params: BoxParameters, exposure: LrsExposure, region: LrsRegion, wavelength: np.ndarray
) -> BoxApertures:
    """
    Source and background weights on the cutout, with source-position shifts.

    Parameters
    ----------
    params : BoxParameters
        Resolved parameters.
    exposure : LrsExposure
        The exposure (WCS, dither position).
    region : LrsRegion
        The cutout.
    wavelength : ndarray
        Cutout wavelengths.

    Returns
    -------
    BoxApertures
        The weights; also used by the optimal step for its background regions.
    """
    rows = region.disp_index
    xd_start, xd_stop = params.xdisp_start, params.xdisp_stop
    src_coeff, bkg_coeff = params.src_coeff, params.bkg_coeff
    trace = None
    follow, sky = params.use_source_posn, None
    if follow is None:
        params, sky = _follow_when_off_the_data(params, exposure, region)
        follow = sky is not None
    if follow:
        location = lrs_exposure.source_location(exposure, region, sky)
        if location is not None:
            middle_row, middle_wl, position = location
            nominal = _nominal_centre(params, exposure, region, middle_row)
            offset = position - nominal
            log.info(
                f"Source at column {position:.2f} on row {middle_row} ({middle_wl:.2f} um): "
                f"the aperture moves {offset:+.2f} px from its nominal centre {nominal:.2f}"
            )
            src_coeff = _shift_coefficients(src_coeff, offset)
            if params.fixed_background:
                log.info("Background regions kept fixed (fixed_background=True)")
            else:
                bkg_coeff = _shift_coefficients(bkg_coeff, offset)
            xd_start, xd_stop = xd_start + offset, xd_stop + offset
            trace = lrs_exposure.source_trace(exposure, region, wavelength, sky)
    if params.position_offset:
        offset = params.position_offset
        log.info(f"Applying additional cross-dispersion offset {offset:+.2f} px")
        src_coeff = _shift_coefficients(src_coeff, offset)
        bkg_coeff = _shift_coefficients(bkg_coeff, offset)
        xd_start, xd_stop = xd_start + offset, xd_stop + offset
        if trace is not None:
            trace = trace + offset

    independent = _independent(params, rows, wavelength)
    regions = _source_regions(params, xd_start, xd_stop, src_coeff, trace, independent, rows.size)
    source = profile_from_regions(regions, region.xdisp_index, rows.size)
    lower, upper = _mean_limits(regions)
    outside = (rows < np.ceil(params.disp_start)) | (rows > np.floor(params.disp_stop))
    source[outside] = 0.0
    source[~np.isfinite(wavelength)] = 0.0

    background = None
    if params.subtract_background and bkg_coeff is not None:
        background = profile_from_regions(
            regions_from_coefficients(bkg_coeff, independent),
            region.xdisp_index,
            rows.size,
            # jwst's median takes whole pixels only
            allow_partial=params.bkg_fit != "median",
        )
        background[outside] = 0.0
    return BoxApertures(source, background, lower, upper)


@dataclass
class BoxProducts:
    """
    Everything a box extraction produced for one exposure.

    Attributes
    ----------
    x1d : MultiSpecModel or TSOMultiSpecModel
        The spectra.
    aperture, background_region : ndarray
        Full-frame (dispersion-major) weight images, for plots.
    replaced_fraction : ndarray
        Fraction of the flux from repaired pixels, ``(n_int, n_spectral)``.
    """

    x1d: object
    aperture: np.ndarray
    background_region: np.ndarray | None
    replaced_fraction: np.ndarray


@dataclass
class _Background:
    """The background model on the cutout and its variance under the aperture, per element."""

    model: np.ndarray
    variances: list[np.ndarray]
    failed: np.ndarray


def _spectral_elements(source: np.ndarray, wavelength: np.ndarray):
    """Aperture-weighted wavelength per row, and the rows that make spectral elements.

    jwst trims the spectrum to the rows whose aperture pixels have a wavelength.
    """
    masked_wl = np.where(source > 0, wavelength, np.nan)
    weight_sum = np.where(np.isfinite(masked_wl), source, 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        spectral_wavelength = np.nansum(masked_wl * source, axis=1) / weight_sum
    spectral_wavelength[weight_sum == 0] = np.nan
    return spectral_wavelength, np.isfinite(spectral_wavelength)


def _fit_background(exposure, region, pixels, apertures, params, keep) -> _Background:
    """The background of every row from the background regions (jwst's fit, smoothed)."""
    n_int, n_disp, _ = pixels.data.shape
    none = _Background(
        np.zeros_like(pixels.data),
        [np.zeros((n_int, n_disp)) for _ in range(3)],
        np.zeros((n_int, n_disp), dtype=bool),
    )
    if not params.subtract_background or apertures.background is None:
        return none
    n_bkg_pixels = (apertures.background > 0).sum(axis=1)
    if params.bkg_fit == "poly" and np.all(n_bkg_pixels[keep] < params.bkg_order + 1):
        raise ParameterError(
            f"bkg_order={params.bkg_order} needs at least {params.bkg_order + 1} background "
            f"pixels per row, but the background regions hold at most "
            f"{int(n_bkg_pixels.max())}"
        )
    # Smoothing needs the real rows beyond the cutout (jwst smooths the full image).
    half = params.smoothing_length // 2 if params.smoothing_length > 1 else 0
    first, last = int(region.disp_index[0]), int(region.disp_index[-1])
    before = min(half, first)
    after = min(half, region.full_shape[0] - 1 - last)
    padded_region = LrsRegion(
        np.arange(first - before, last + after + 1),
        region.xdisp_index,
        region.dispaxis,
        region.full_shape,
    )
    padded = pixels if before + after == 0 else lrs_exposure.read_pixels(exposure, padded_region)
    fit = fit_background(
        padded.data,
        padded.var_rnoise,
        padded.var_poisson,
        padded.var_flat,
        background_region=apertures.background,
        aperture=apertures.source,
        method=params.bkg_fit,
        order=params.bkg_order,
        smoothing_length=params.smoothing_length,
        sigma_clip=params.bkg_sigma_clip,
        margin=(before, after),
    )
    failed = fit.singular & keep
    if failed.any():
        log.warning(
            f"Background fit impossible in {int(failed.sum())} spectral element(s) (too few "
            "background pixels); background set to 0 there and flagged"
        )
    return _Background(fit.model, [fit.var_rnoise, fit.var_poisson, fit.var_flat], failed)


def _repair_bad_pixels(subtracted, variances, source, keep):
    """Bad aperture pixels rebuilt from the profile; returns data, variances, replaced fraction."""
    n_int, n_disp, _ = subtracted.shape
    replaced_fraction = np.zeros((n_int, n_disp))
    damaged = np.any(~np.isfinite(subtracted) & (source > 0), axis=(1, 2))
    if not damaged.any():
        return subtracted, variances, replaced_fraction
    # Both are this function's own arrays (read_pixels copies): repaired in place.
    repair = repair_from_profile(subtracted, *variances, source, overwrite=True)
    subtracted = repair.data
    variances = [repair.var_rnoise, repair.var_poisson, repair.var_flat]
    replaced_fraction = repair.replaced_fraction
    n_rows = int(np.count_nonzero(replaced_fraction[:, keep]))
    if n_rows:
        log.info(
            f"Replaced bad aperture pixels from the profile in {n_rows} spectral element(s) "
            f"(flagged FLUX_ESTIMATED); largest replaced flux fraction "
            f"{replaced_fraction.max():.3f}"
        )
    return subtracted, variances, replaced_fraction


def extract_box(
    exposure: LrsExposure, params: BoxParameters, apcorr: ApcorrTable | None
) -> BoxProducts:
    """
    Box-extract an LRS exposure (all integrations at once).

    Parameters
    ----------
    exposure : LrsExposure
        Checked LRS input (s2d, cal or calints); never modified.
    params : BoxParameters
        From :func:`resolve_box_parameters`.
    apcorr : ApcorrTable or None
        Aperture correction to apply (point sources only).

    Returns
    -------
    BoxProducts
        The x1d model and diagnostics.
    """
    region = lrs_exposure.data_region(exposure, (params.disp_start, params.disp_stop))
    wavelength = lrs_exposure.region_wavelengths(exposure, region)
    apertures = build_box_apertures(params, exposure, region, wavelength)
    source = apertures.source
    if not np.any(source > 0):
        raise InputDataError(
            "the extraction aperture holds no pixel with a valid wavelength; "
            f"cross-dispersion limits {apertures.lower:.1f}..{apertures.upper:.1f} vs data "
            f"columns {region.xdisp_index[0]}..{region.xdisp_index[-1]} "
            "(on unrectified data, leave use_source_posn unset or True to follow the source, "
            "or give limits in this image's frame)"
        )
    pixels = lrs_exposure.read_pixels(exposure, region)
    n_int, n_disp, n_xdisp = pixels.data.shape
    if not np.any(np.isfinite(pixels.data) & (source > 0)):
        raise InputDataError("every pixel inside the extraction aperture is NaN or DO_NOT_USE")
    spectral_wavelength, keep = _spectral_elements(source, wavelength)

    background = _fit_background(exposure, region, pixels, apertures, params, keep)
    subtracted = pixels.data - background.model
    variances = [pixels.var_rnoise, pixels.var_poisson, pixels.var_flat]
    replaced_fraction = np.zeros((n_int, n_disp))
    if params.replace_bad_pixels:
        subtracted, variances, replaced_fraction = _repair_bad_pixels(
            subtracted, variances, source, keep
        )

    sums = box_sum(
        subtracted.reshape(-1, n_xdisp),
        *(v.reshape(-1, n_xdisp) for v in variances),
        np.tile(source, (n_int, 1)),
        background.model.reshape(-1, n_xdisp),
    )
    correction = None
    if apcorr is not None:
        correction = _apcorr_factors(apcorr, exposure, sums.npixels, spectral_wavelength, n_int)

    def per_integration(values):
        return values.reshape(n_int, n_disp)[:, keep]

    dq = np.where(per_integration(replaced_fraction.ravel()) > 0, flags.FLUX_ESTIMATED, 0)
    dq |= np.where(background.failed[:, keep], flags.NO_BACKGROUND, 0)
    bkg_var_rnoise, bkg_var_poisson, bkg_var_flat = (v[:, keep] for v in background.variances)
    columns = SpectrumColumns(
        wavelength=spectral_wavelength[keep],
        flux=per_integration(sums.flux),
        var_poisson=per_integration(sums.var_poisson) + bkg_var_poisson,
        var_rnoise=per_integration(sums.var_rnoise) + bkg_var_rnoise,
        var_flat=per_integration(sums.var_flat) + bkg_var_flat,
        background=per_integration(sums.background),
        bkg_var_poisson=bkg_var_poisson,
        bkg_var_rnoise=bkg_var_rnoise,
        bkg_var_flat=bkg_var_flat,
        npixels=per_integration(sums.npixels),
        dq=dq.astype(np.uint32),
    )
    x1d = lrs_exposure.build_lrs_x1d(
        exposure,
        columns,
        region,
        _aperture_centre(source, region),
        (apertures.lower, apertures.upper),
        np.flatnonzero(source.sum(axis=1) > 0),
        correction=None if correction is None else correction[:, keep],
    )
    kept_fraction = replaced_fraction[:, keep]
    x1d.spec[0].replaced_fraction = kept_fraction if exposure.time_series else kept_fraction[0]
    full_source = np.zeros(region.full_shape)
    full_source[region.slices] = source
    full_background = None
    if apertures.background is not None:
        full_background = np.zeros(region.full_shape)
        full_background[region.slices] = apertures.background
    return BoxProducts(x1d, full_source, full_background, kept_fraction)


def _apcorr_factors(apcorr: ApcorrTable, exposure, npixels, wavelength, n_int):
    sizes = apcorr.size
    if apcorr.size_unit.lower().startswith("arcsec"):
        sizes = sizes / lrs_exposure.aperture_pixel_scale(exposure, float(np.nanmin(wavelength)))
    npix = npixels.reshape(n_int, -1)
    wl = np.broadcast_to(wavelength, npix.shape)
    return tabulated_correction(sizes, apcorr.wavelength, apcorr.apcorr, npix, wl)


def _aperture_centre(source, region) -> tuple[float, float]:
    weights = np.clip(source, 0, None)
    if weights.sum() == 0:
        weights = np.ones_like(weights)
    disp, xdisp = np.meshgrid(region.disp_index, region.xdisp_index, indexing="ij")
    return float(np.average(xdisp, weights=weights)), float(np.average(disp, weights=weights))
