"""Read MIRI LRS datamodels into the arrays the core needs: the LRS adapter.

The model layer (:mod:`~mirispec_steps.lrs.box`, :mod:`~mirispec_steps.lrs.optimal`)
reads an exposure only through this module. :func:`read_exposure` checks the
input and records once what the extraction needs to know about it
(:class:`LrsExposure`); the functions below turn it into arrays, computed
once per exposure: the region that holds data (the WCS bounding box), the
wavelength of every pixel in it, the science pixels, the source position and
trace. Arrays handed to the core are dispersion-major cutouts
``(..., n_disp, n_xdisp)`` of that region; for MIRI LRS (vertical
dispersion) that is simply the detector orientation.

Whether an exposure is rectified (s2d) or not (cal, calints) is decided from
what the data are, never from the model class: jwst 2.0 and later write LRS
cal and calints products as ``SlitModel`` (2-D or 3-D), older ones as
``ImageModel``/``CubeModel``, and resample_spec's s2d is a ``SlitModel`` too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from stdatamodels.jwst import datamodels

from mirispec_steps.core.robust import nan_median
from mirispec_steps.errors import InputDataError
from mirispec_steps.flags import DO_NOT_USE, NON_SCIENCE, SATURATED
from mirispec_steps.x1d import SpectrumColumns, SpectrumPlacement, build_x1d

__all__ = [
    "LRS_EXP_TYPES",
    "LrsExposure",
    "LrsPixels",
    "LrsRegion",
    "aperture_pixel_scale",
    "build_lrs_x1d",
    "data_region",
    "dithered_sky_position",
    "is_lrs",
    "mirrored_nod_sky_position",
    "pixel_solid_angle",
    "read_exposure",
    "read_pixels",
    "reference_sky_position",
    "region_wavelengths",
    "sky_position",
    "source_location",
    "source_sky_position",
    "source_trace",
    "to_dispersion_major",
]

log = logging.getLogger(__name__)

LRS_EXP_TYPES = ("MIR_LRS-FIXEDSLIT", "MIR_LRS-SLITLESS")
HORIZONTAL, VERTICAL = 1, 2
NOD_PAIR_PATTERNS = ("ALONG-SLIT-NOD", "2-POINT-NOD")
#: Model classes an LRS s2d, cal or calints product comes in (jwst 1.x and 2.x+).
LRS_MODEL_CLASSES = (datamodels.ImageModel, datamodels.SlitModel, datamodels.CubeModel)


@dataclass(frozen=True)
class LrsExposure:
    """
    An LRS exposure checked for extraction, with what the model layer needs to know.

    Attributes
    ----------
    model : DataModel
        The input (never modified; read through this module's functions).
    kind : str
        ``s2d`` (rectified), ``cal`` (one unrectified image) or ``calints``
        (unrectified integrations).
    exp_type : str
        ``MIR_LRS-FIXEDSLIT`` or ``MIR_LRS-SLITLESS``.
    dispaxis : int
        1 (horizontal) or 2 (vertical, LRS).
    shape : tuple of int
        ``(ny, nx)`` of one image.
    n_integrations : int
        Images in the data (1 for s2d and cal).
    source_type : str or None
        ``POINT``, ``EXTENDED`` or unknown.
    subarray : str
        Subarray name (``FULL``, ``SLITLESSPRISM``...).
    slit_name : str
        Name matched against extract1d apertures (jwst's rules: the exposure
        type, or an ImageModel's ``name``).
    model_name : str or None
        The model's own ``name`` (matched against psf apertures, as jwst does).
    nod_subtracted : bool
        The other nod was subtracted (``bkg_subtract`` COMPLETE on a
        two-point nod pattern): a negative trace is in the data.
    """

    model: object
    kind: str
    exp_type: str
    dispaxis: int
    shape: tuple[int, int]
    n_integrations: int
    source_type: str | None
    subarray: str
    slit_name: str
    model_name: str | None
    nod_subtracted: bool

    @property
    def time_series(self) -> bool:
        """True for calints (one spectrum per integration, x1dints)."""
        return self.kind == "calints"

    @property
    def rectified(self) -> bool:
        """True for a resampled (s2d) image."""
        return self.kind == "s2d"

    @property
    def fixed_slit(self) -> bool:
        """True for fixed-slit data (the dithered source position is known)."""
        return self.exp_type == "MIR_LRS-FIXEDSLIT"


def is_lrs(model) -> bool:
    """True for a MIRI LRS exposure (fixed slit or slitless) of any product level."""
    return str(model.meta.instrument.name).upper() == "MIRI" and (
        str(model.meta.exposure.type).upper() in LRS_EXP_TYPES
    )


def read_exposure(model, rectified_ok: bool = True) -> LrsExposure:
    """
    Check that a model is MIRI LRS data we can extract, and describe it.

    Parameters
    ----------
    model : DataModel
        The input.
    rectified_ok : bool, optional
        Accept rectified (s2d) input.

    Returns
    -------
    LrsExposure
        The checked exposure.

    Raises
    ------
    InputDataError
        For another instrument or mode, a model that cannot hold LRS images,
        a missing WCS, or data with no finite value.
    """
    exp_type = str(model.meta.exposure.type).upper()
    if not is_lrs(model):
        raise InputDataError(
            f"input is {model.meta.instrument.name} {exp_type}; this step extracts MIRI LRS "
            f"({', '.join(LRS_EXP_TYPES)}) only"
        )
    if (
        not isinstance(model, LRS_MODEL_CLASSES)
        or model.data is None
        or model.data.ndim
        not in (
            2,
            3,
        )
    ):
        raise InputDataError(
            f"input is a {type(model).__name__}; expected an LRS s2d, cal or calints product "
            "(SlitModel, or ImageModel/CubeModel from jwst before 2.0)"
        )
    if getattr(model.meta, "wcs", None) is None:
        raise InputDataError(
            "input has no WCS (meta.wcs is missing); run jwst's assign_wcs on it first"
        )
    if _is_resampled(model):
        if model.data.ndim != 2:
            raise InputDataError("input is a resampled stack of images; expected one s2d image")
        kind = "s2d"
    else:
        kind = "calints" if model.data.ndim == 3 else "cal"
    if kind == "s2d" and not rectified_ok:
        raise InputDataError("input is a rectified (s2d) image; this step needs cal/calints data")
    data = model.data
    if data.size == 0 or not np.any(np.isfinite(data)):
        raise InputDataError("input data has no finite value (all NaN or empty)")
    source_type = getattr(model, "source_type", None) if model.hasattr("source_type") else None
    source_type = source_type or model.meta.target.source_type
    slit_name = exp_type
    if isinstance(model, datamodels.ImageModel) and getattr(model, "name", None):
        slit_name = model.name
    nod_subtracted = str(model.meta.cal_step.bkg_subtract).upper() == "COMPLETE" and (
        str(model.meta.dither.primary_type).upper() in NOD_PAIR_PATTERNS
    )
    return LrsExposure(
        model=model,
        kind=kind,
        exp_type=exp_type,
        dispaxis=dispersion_axis(model),
        shape=tuple(int(n) for n in data.shape[-2:]),
        n_integrations=int(data.shape[0]) if data.ndim == 3 else 1,
        source_type=None if source_type is None else str(source_type).upper(),
        subarray=str(model.meta.subarray.name or "FULL").upper(),
        slit_name=slit_name,
        model_name=getattr(model, "name", None) if model.hasattr("name") else None,
        nod_subtracted=nod_subtracted,
    )


def _is_resampled(model) -> bool:
    """Rectified data: resample ran, or the WCS has no focal-plane (v2v3) frame."""
    return str(model.meta.cal_step.resample).upper() == "COMPLETE" or (
        "v2v3" not in model.meta.wcs.available_frames
    )


def dispersion_axis(model) -> int:
    """
    The dispersion direction (1 horizontal, 2 vertical), defaulting to LRS's 2.

    Parameters
    ----------
    model : DataModel
        The input.

    Returns
    -------
    int
        1 or 2.
    """
    axis = model.meta.wcsinfo.dispersion_direction
    return VERTICAL if axis is None else int(axis)


def to_dispersion_major(array: np.ndarray, dispaxis: int) -> np.ndarray:
    """View an image (or stack) with dispersion along the second-to-last axis."""
    return array if dispaxis == VERTICAL else np.swapaxes(array, -1, -2)


@dataclass
class LrsRegion:
    """
    The part of the detector that holds data, in dispersion-major indices.

    Attributes
    ----------
    disp_index : ndarray
        Dispersion pixel index of each row of the cutout.
    xdisp_index : ndarray
        Cross-dispersion pixel index of each column of the cutout.
    dispaxis : int
        1 (horizontal) or 2 (vertical, LRS).
    full_shape : tuple of int
        Dispersion-major shape of the whole image.
    """

    disp_index: np.ndarray
    xdisp_index: np.ndarray
    dispaxis: int
    full_shape: tuple[int, int]

    @property
    def slices(self) -> tuple[slice, slice]:
        """Slices of the cutout in a dispersion-major full image."""
        return (
            slice(int(self.disp_index[0]), int(self.disp_index[-1]) + 1),
            slice(int(self.xdisp_index[0]), int(self.xdisp_index[-1]) + 1),
        )

    def detector_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """Detector (x, y) of every cutout pixel, dispersion-major."""
        disp, xdisp = np.meshgrid(self.disp_index, self.xdisp_index, indexing="ij")
        disp, xdisp = disp.astype(float), xdisp.astype(float)
        return (xdisp, disp) if self.dispaxis == VERTICAL else (disp, xdisp)


def data_region(exposure: LrsExposure, disp_limits: tuple[float, float] | None = None) -> LrsRegion:
    """
    The cutout to work on: the WCS bounding box, clipped by dispersion limits.

    Parameters
    ----------
    exposure : LrsExposure
        The exposure.
    disp_limits : (float, float) or None
        Inclusive dispersion start/stop from the extraction parameters.

    Returns
    -------
    LrsRegion
        The region (pixels with centres inside the bounding box, generously
        rounded: the WCS returns NaN wavelengths for any pixel outside it).

    Raises
    ------
    InputDataError
        The limits leave no pixel inside the bounding box.
    """
    dispaxis = exposure.dispaxis
    full_shape = to_dispersion_major(np.empty(exposure.shape), dispaxis).shape
    n_disp, n_xdisp = full_shape
    disp_low, disp_high, xdisp_low, xdisp_high = 0, n_disp - 1, 0, n_xdisp - 1
    box = getattr(exposure.model.meta.wcs, "bounding_box", None)
    if box is not None:
        (x_low, x_high), (y_low, y_high) = (tuple(b) for b in box)
        if dispaxis == VERTICAL:
            xd, dd = (x_low, x_high), (y_low, y_high)
        else:
            xd, dd = (y_low, y_high), (x_low, x_high)
        xdisp_low = max(xdisp_low, int(np.floor(xd[0])))
        xdisp_high = min(xdisp_high, int(np.ceil(xd[1])))
        disp_low = max(disp_low, int(np.floor(dd[0])))
        disp_high = min(disp_high, int(np.ceil(dd[1])))
    if disp_limits is not None:
        disp_low = max(disp_low, int(np.ceil(disp_limits[0])))
        disp_high = min(disp_high, int(np.floor(disp_limits[1])))
    if disp_low > disp_high or xdisp_low > xdisp_high:
        raise InputDataError(
            "the extraction limits leave no pixel inside the WCS bounding box "
            f"(dispersion {disp_low}..{disp_high}, cross-dispersion {xdisp_low}..{xdisp_high})"
        )
    return LrsRegion(
        np.arange(disp_low, disp_high + 1),
        np.arange(xdisp_low, xdisp_high + 1),
        dispaxis,
        full_shape,
    )


def _wcs(exposure: LrsExposure, *pixel):
    """The WCS at pixel positions; NaN (without warnings) outside its domain."""
    with np.errstate(invalid="ignore"):
        return exposure.model.meta.wcs(*pixel)


def _backward(exposure: LrsExposure, ra, dec, wavelength):
    """Detector position of a sky position at given wavelengths (inverse WCS)."""
    with np.errstate(invalid="ignore"):
        return exposure.model.meta.wcs.backward_transform(ra, dec, wavelength)


def region_wavelengths(exposure: LrsExposure, region: LrsRegion) -> np.ndarray:
    """
    Wavelength (micron) of each cutout pixel, NaN outside the WCS domain.

    Uses the model's own ``wavelength`` array when it has a non-empty one
    (as jwst does), else evaluates the WCS on the cutout only.

    Parameters
    ----------
    exposure : LrsExposure
        The exposure.
    region : LrsRegion
        The cutout.

    Returns
    -------
    ndarray
        Dispersion-major wavelengths of the cutout.
    """
    model = exposure.model
    stored = getattr(model, "wavelength", None) if model.hasattr("wavelength") else None
    if stored is not None and np.size(stored) and np.nanmax(np.abs(stored)) > 0:
        return np.array(to_dispersion_major(stored, region.dispaxis)[region.slices], dtype=float)
    x, y = region.detector_xy()
    return np.asarray(_wcs(exposure, x, y)[2], dtype=float)


@dataclass
class LrsPixels:
    """
    Science pixels of the cutout, invalid pixels set to NaN everywhere.

    Attributes
    ----------
    data, var_rnoise, var_poisson, var_flat : ndarray
        ``(n_int, n_disp, n_xdisp)`` float64 copies of the cutout.
    non_science : ndarray
        ``(n_int, n_disp, n_xdisp)`` pixels flagged NON_SCIENCE in DQ (outside
        the slit or the illuminated area; valid for box extraction as in
        jwst, but not part of any source or sky model).
    saturated : ndarray
        ``(n_int, n_disp, n_xdisp)`` pixels flagged SATURATED in DQ (usable or
        not: a ramp fitted from its first groups keeps the flag).
    """

    data: np.ndarray
    var_rnoise: np.ndarray
    var_poisson: np.ndarray
    var_flat: np.ndarray
    non_science: np.ndarray
    saturated: np.ndarray

    @property
    def variances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(var_rnoise, var_poisson, var_flat)``."""
        return self.var_rnoise, self.var_poisson, self.var_flat


def read_pixels(
    exposure: LrsExposure, region: LrsRegion, integrations: slice = slice(None)
) -> LrsPixels:
    """
    Copy the cutout's data and variances, marking invalid pixels as jwst does.

    A pixel is invalid where any of data, err or the variances is NaN, or
    where DQ has DO_NOT_USE (jwst's ``match_nans_and_flags``). Missing
    variance arrays count as zero variance. The model is not modified.

    Parameters
    ----------
    exposure : LrsExposure
        The exposure.
    region : LrsRegion
        The cutout.
    integrations : slice
        The integrations to read (a time series read in parts).

    Returns
    -------
    LrsPixels
        Arrays of shape ``(n_int, n_disp, n_xdisp)``.
    """
    model = exposure.model

    def cut(name, dtype=float):
        array = getattr(model, name, None) if model.hasattr(name) else None
        if array is None or array.shape[-2:] != model.data.shape[-2:]:
            return None
        view = to_dispersion_major(array, region.dispaxis)
        if view.ndim == 3:
            view = view[integrations]
        view = view[(..., *region.slices)]
        return np.array(view, dtype=dtype, ndmin=3)

    data = cut("data")
    invalid = ~np.isfinite(data)
    arrays = {}
    for name in ("var_rnoise", "var_poisson", "var_flat"):
        array = cut(name)
        arrays[name] = np.zeros_like(data) if array is None else array
        invalid |= np.isnan(arrays[name])
    err = cut("err", dtype=None)
    if err is not None:
        invalid |= np.isnan(err)
    dq = cut("dq", dtype=np.uint32)
    non_science = np.zeros(data.shape, dtype=bool)
    saturated = np.zeros(data.shape, dtype=bool)
    if dq is not None:
        invalid |= (dq & DO_NOT_USE) != 0
        non_science = np.broadcast_to((dq & NON_SCIENCE) != 0, data.shape).copy()
        saturated = np.broadcast_to((dq & SATURATED) != 0, data.shape).copy()
    data[invalid] = np.nan
    for array in arrays.values():
        array[invalid] = np.nan
    return LrsPixels(
        data, arrays["var_rnoise"], arrays["var_poisson"], arrays["var_flat"], non_science,
        saturated,
    )  # fmt: skip


def dithered_sky_position(exposure: LrsExposure) -> tuple[float, float] | None:
    """RA/Dec of the source from ``meta.dither.dithered_ra/dec`` (None when unset)."""
    dither = exposure.model.meta.dither
    if dither.dithered_ra is None or dither.dithered_dec is None:
        return None
    return float(dither.dithered_ra), float(dither.dithered_dec)


def source_sky_position(exposure: LrsExposure) -> tuple[float, float] | None:
    """
    Where the source is on the sky: the dithered pointing (fixed slit), else the aperture reference.

    Parameters
    ----------
    exposure : LrsExposure
        LRS exposure with a WCS.

    Returns
    -------
    (float, float) or None
        RA and Dec in degrees; None when neither is known.
    """
    sky = dithered_sky_position(exposure) if exposure.fixed_slit else None
    return sky if sky is not None else reference_sky_position(exposure)


def source_location(
    exposure: LrsExposure, region: LrsRegion, sky: tuple[float, float] | None = None
) -> tuple[int, float, float] | None:
    """
    Cross-dispersion position of the source at the middle of the spectrum.

    Same definition as jwst (``location_from_wcs``): the middle dispersion
    pixel of the bounding box, the mean wavelength there, and the detector
    position of the dithered pointing (``meta.dither.dithered_ra/dec``) at
    that wavelength through the inverse WCS.

    Parameters
    ----------
    exposure : LrsExposure
        LRS exposure with a WCS.
    region : LrsRegion
        The cutout (for the bounding box).
    sky : (float, float) or None
        The source's RA, Dec; None: the dithered pointing, known for fixed
        slit only (as in jwst).

    Returns
    -------
    (int, float, float) or None
        Middle dispersion pixel, its wavelength and the source's
        cross-dispersion position; None (with a warning) when the position
        is unknown or falls outside the bounding box.
    """
    if sky is None:
        if not exposure.fixed_slit:
            log.warning("Source position is only known for MIR_LRS-FIXEDSLIT; not shifting")
            return None
        sky = dithered_sky_position(exposure)
        if sky is None:
            log.warning("meta.dither.dithered_ra/dec not set; cannot locate the source")
            return None
    box = exposure.model.meta.wcs.bounding_box
    if box is None:
        (x_low, x_high) = (-0.5, region.full_shape[1] - 0.5)
        (y_low, y_high) = (-0.5, region.full_shape[0] - 0.5)
    else:
        (x_low, x_high), (y_low, y_high) = (tuple(b) for b in box)
    if region.dispaxis == VERTICAL:
        middle = (y_low + y_high) / 2.0
        xdisp = np.arange(int(round(x_high)), dtype=float)
        x, y = xdisp, np.full(xdisp.size, middle)
        low, high = x_low, x_high
    else:
        middle = (x_low + x_high) / 2.0
        xdisp = np.arange(int(round(y_high)), dtype=float)
        x, y = np.full(xdisp.size, middle), xdisp
        low, high = y_low, y_high
    wavelengths = np.asarray(_wcs(exposure, x, y)[2], dtype=float)
    if not np.any(np.isfinite(wavelengths)):
        log.warning("No valid wavelength at the middle of the spectrum")
        return None
    middle_wl = float(np.nanmean(wavelengths))
    position = _backward(exposure, sky[0], sky[1], middle_wl)
    location = float(position[0] if region.dispaxis == VERTICAL else position[1])
    if not np.isfinite(location) or location < low or location > high:
        log.warning(f"WCS puts the source at column {location:.2f}, outside the bounding box")
        return None
    return int(np.round(middle)), middle_wl, location


def source_trace(
    exposure: LrsExposure,
    region: LrsRegion,
    wavelength: np.ndarray,
    sky: tuple[float, float] | None = None,
) -> np.ndarray | None:
    """
    Exact cross-dispersion position of the source on every cutout row.

    For each dispersion row, the wavelength of that row (median over the
    cutout's valid pixels) is sent with the dithered pointing through the
    inverse WCS. Unlike jwst 3.0, whose trace for cal files is evaluated at
    row indices counted from 0 but stored from the bounding-box start (about
    7 rows off for LRS), this is registered on the row it belongs to.

    Parameters
    ----------
    exposure : LrsExposure
        LRS exposure with a WCS.
    region : LrsRegion
        The cutout.
    wavelength : ndarray
        Cutout wavelengths from :func:`region_wavelengths`.
    sky : (float, float) or None
        Sky position to trace; default the dithered pointing.

    Returns
    -------
    ndarray or None
        Trace position per cutout row (NaN where the row has no
        wavelength), or None when the source position is unknown.
    """
    if sky is None:
        sky = dithered_sky_position(exposure)
    if sky is None:
        return None
    row_wavelength = nan_median(wavelength, axis=1)
    good = np.isfinite(row_wavelength)
    trace = np.full(row_wavelength.size, np.nan)
    if not good.any():
        return None
    n_good = int(good.sum())
    position = _backward(
        exposure, np.full(n_good, sky[0]), np.full(n_good, sky[1]), row_wavelength[good]
    )
    trace[good] = position[0] if region.dispaxis == VERTICAL else position[1]
    if region.dispaxis == VERTICAL:
        # Refine: the row's wavelength may vary across the slit; evaluate it at the trace.
        y = region.disp_index[good].astype(float)
        refined_wl = np.asarray(_wcs(exposure, trace[good], y)[2], dtype=float)
        ok = np.isfinite(refined_wl)
        refined = _backward(
            exposure, np.full(ok.sum(), sky[0]), np.full(ok.sum(), sky[1]), refined_wl[ok]
        )
        values = trace[good]
        values[ok] = refined[0]
        trace[good] = values
    return trace


def pixel_solid_angle(exposure: LrsExposure) -> float | None:
    """
    Steradians per pixel for converting MJy/sr sums to Jy (None before photom).

    Parameters
    ----------
    exposure : LrsExposure
        The exposure.

    Returns
    -------
    float or None
        ``meta.photometry.pixelarea_steradians``; None (FLUX stays in the
        input units, as in jwst) when photom has not run; 1.0 with a
        warning when photom ran but the area is missing.
    """
    meta = exposure.model.meta
    if str(meta.cal_step.photom).upper() != "COMPLETE":
        log.warning("The photom step has not been run; FLUX stays in the input units.")
        return None
    solid_angle = meta.photometry.pixelarea_steradians
    if solid_angle is None:
        log.warning("Pixel area (solid angle) is not populated; the flux will not be correct.")
        return 1.0
    return float(solid_angle)


def reference_sky_position(exposure: LrsExposure) -> tuple[float, float] | None:
    """
    Sky position of the aperture reference point (slit centre, or the slitless
    reference), from ``wcsinfo.v2_ref/v3_ref`` through the WCS.

    Parameters
    ----------
    exposure : LrsExposure
        LRS exposure with a WCS that has a ``v2v3`` frame.

    Returns
    -------
    (float, float) or None
        RA and Dec in degrees, None when the WCS cannot give them.
    """
    model = exposure.model
    wcsinfo = model.meta.wcsinfo
    if "v2v3" not in model.meta.wcs.available_frames or wcsinfo.v2_ref is None:
        return None
    transform = model.meta.wcs.get_transform("v2v3", "world")
    with np.errstate(invalid="ignore"):
        ra, dec = transform(wcsinfo.v2_ref, wcsinfo.v3_ref, 0.0)[:2]
    if not (np.isfinite(ra) and np.isfinite(dec)):
        return None
    return float(ra), float(dec)


def mirrored_nod_sky_position(exposure: LrsExposure) -> tuple[float, float] | None:
    """
    Sky position of the source's image in the other exposure of a two-point nod.

    In a nod-subtracted exposure the other nod's source appears at the
    mirrored dither offset (``-x_offset, -y_offset``); its sky position is
    found as jwst's ``store_dithered_position`` does for the real one.

    Parameters
    ----------
    exposure : LrsExposure
        Fixed-slit LRS exposure with a WCS and dither offsets.

    Returns
    -------
    (float, float) or None
        RA and Dec in degrees, None when the offsets are missing or the WCS
        cannot place them.
    """
    from jwst.assign_wcs.miri import store_dithered_position

    model = exposure.model
    dither = model.meta.dither
    if dither.x_offset is None or dither.y_offset is None:
        return None
    probe = datamodels.ImageModel()
    probe.meta.wcs = model.meta.wcs
    probe.meta.wcsinfo = model.meta.wcsinfo.instance
    probe.meta.dither.x_offset = -float(dither.x_offset)
    probe.meta.dither.y_offset = -float(dither.y_offset)
    store_dithered_position(probe)
    ra, dec = probe.meta.dither.dithered_ra, probe.meta.dither.dithered_dec
    if ra is None or dec is None or not (np.isfinite(ra) and np.isfinite(dec)):
        return None
    return float(ra), float(dec)


def sky_position(
    exposure: LrsExposure, centre_xdisp: float, centre_disp: float
) -> tuple[float | None, float | None]:
    """
    RA and Dec of a detector position given in dispersion-major indices.

    Parameters
    ----------
    exposure : LrsExposure
        LRS exposure with a WCS.
    centre_xdisp, centre_disp : float
        Cross-dispersion and dispersion pixel position.

    Returns
    -------
    (float or None, float or None)
        RA, Dec in degrees (None if the WCS gives NaN).
    """
    if exposure.dispaxis == VERTICAL:
        x, y = centre_xdisp, centre_disp
    else:
        x, y = centre_disp, centre_xdisp
    coords = _wcs(exposure, x, y)
    if np.any(np.isnan(coords)):
        return None, None
    return float(coords[0]), float(coords[1])


def aperture_pixel_scale(exposure: LrsExposure, wavelength: float) -> float:
    """
    Arcsec per cross-dispersion pixel at the reference point (jwst's ``compute_scale``).

    Parameters
    ----------
    exposure : LrsExposure
        LRS exposure with a WCS.
    wavelength : float
        Micron.

    Returns
    -------
    float
        The scale, for aperture sizes tabulated in arcsec.
    """
    from jwst.assign_wcs.util import compute_scale

    wcsinfo = exposure.model.meta.wcsinfo
    centre = (wcsinfo.ra_ref, wcsinfo.dec_ref, wavelength)
    return float(compute_scale(exposure.model.meta.wcs, centre, disp_axis=exposure.dispaxis)) * 3600


def build_lrs_x1d(
    exposure: LrsExposure,
    columns: SpectrumColumns,
    region: LrsRegion,
    centre: tuple[float, float],
    xdisp_limits: tuple[float, float],
    rows: np.ndarray,
    correction: np.ndarray | None = None,
):
    """
    The x1d (x1dints for a time series) of an LRS extraction, described as jwst does.

    Parameters
    ----------
    exposure : LrsExposure
        The exposure.
    columns : SpectrumColumns
        ``(n_int, n_elements)`` sums.
    region : LrsRegion
        The cutout the spectrum was extracted from.
    centre : (float, float)
        Cross-dispersion and dispersion position of the aperture centre (its sky
        position is recorded).
    xdisp_limits : (float, float)
        Cross-dispersion extent of the aperture (0-indexed).
    rows : ndarray
        Cutout rows of the first and last spectral element (only the ends matter).
    correction : ndarray or None
        Aperture correction applied to the fluxes.

    Returns
    -------
    MultiSpecModel or TSOMultiSpecModel
        The product.
    """
    ra, dec = sky_position(exposure, *centre)
    placement = SpectrumPlacement(
        ra,
        dec,
        (*xdisp_limits, int(region.disp_index[rows[0]]), int(region.disp_index[rows[-1]])),
        region.dispaxis,
        exposure.slit_name,
        exposure.source_type,
    )
    return build_x1d(
        exposure.model,
        columns,
        pixel_solid_angle(exposure),
        placement,
        correction=correction,
        time_series=exposure.time_series,
    )
