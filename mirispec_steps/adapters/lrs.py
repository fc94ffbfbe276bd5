"""Read MIRI LRS datamodels into the arrays the core needs.

Everything here is computed once per exposure: the region that holds data
(the WCS bounding box), the wavelength of every pixel in it, the source
position and the source trace. Arrays handed to the core are
dispersion-major cutouts ``(..., n_disp, n_xdisp)`` of that region; for MIRI
LRS (vertical dispersion) that is simply the detector orientation.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags

from mirispec_steps.errors import InputDataError

__all__ = [
    "LRS_EXP_TYPES",
    "LrsRegion",
    "LrsPixels",
    "check_lrs_input",
    "data_region",
    "read_pixels",
    "region_wavelengths",
    "source_location",
    "source_trace",
    "reference_sky_position",
    "dithered_sky_position",
    "pixel_solid_angle",
    "mirrored_nod_sky_position",
    "sky_position",
]

log = logging.getLogger(__name__)

LRS_EXP_TYPES = ("MIR_LRS-FIXEDSLIT", "MIR_LRS-SLITLESS")
HORIZONTAL, VERTICAL = 1, 2
DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]


def check_lrs_input(model, rectified_ok: bool = True) -> str:
    """
    Check that a model is MIRI LRS data we can extract; return its kind.

    Parameters
    ----------
    model : DataModel
        The input.
    rectified_ok : bool, optional
        Accept rectified (s2d) input.

    Returns
    -------
    str
        ``"s2d"``, ``"cal"`` or ``"calints"``.

    Raises
    ------
    InputDataError
        For another instrument or mode, a model type that is not a spectral
        image, a missing WCS, or data with no finite value.
    """
    exp_type = str(model.meta.exposure.type).upper()
    if model.meta.instrument.name != "MIRI" or exp_type not in LRS_EXP_TYPES:
        raise InputDataError(
            f"input is {model.meta.instrument.name} {exp_type}; this step extracts MIRI LRS "
            f"({', '.join(LRS_EXP_TYPES)}) only"
        )
    if isinstance(model, datamodels.CubeModel):
        kind = "calints"
    elif isinstance(model, datamodels.SlitModel) or _is_resampled(model):
        kind = "s2d"
    elif isinstance(model, datamodels.ImageModel):
        kind = "cal"
    else:
        raise InputDataError(
            f"input is a {type(model).__name__}; expected an LRS s2d (SlitModel/ImageModel), "
            "cal (ImageModel) or calints (CubeModel)"
        )
    if kind == "s2d" and not rectified_ok:
        raise InputDataError("input is a rectified (s2d) image; this step needs cal/calints data")
    if getattr(model.meta, "wcs", None) is None:
        raise InputDataError(
            "input has no WCS (meta.wcs is missing); run jwst's assign_wcs on it first"
        )
    data = model.data
    if data is None or data.size == 0 or not np.any(np.isfinite(data)):
        raise InputDataError("input data has no finite value (all NaN or empty)")
    return kind


def _is_resampled(model) -> bool:
    return str(model.meta.cal_step.resample).upper() == "COMPLETE" or (
        getattr(model.meta, "wcs", None) is not None
        and "v2v3" not in model.meta.wcs.available_frames
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


def data_region(model, disp_limits: tuple[float, float] | None = None) -> LrsRegion:
    """
    The cutout to work on: the WCS bounding box, clipped by dispersion limits.

    Parameters
    ----------
    model : DataModel
        Input with a WCS.
    disp_limits : (float, float) or None
        Inclusive dispersion start/stop from the extraction parameters.

    Returns
    -------
    LrsRegion
        The region (pixels with centres inside the bounding box, generously
        rounded: the WCS returns NaN wavelengths for any pixel outside it).
    """
    dispaxis = dispersion_axis(model)
    full_shape = to_dispersion_major(np.empty(model.data.shape[-2:]), dispaxis).shape
    n_disp, n_xdisp = full_shape
    disp_low, disp_high, xdisp_low, xdisp_high = 0, n_disp - 1, 0, n_xdisp - 1
    box = getattr(model.meta.wcs, "bounding_box", None)
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


def region_wavelengths(model, region: LrsRegion) -> np.ndarray:
    """
    Wavelength (micron) of each cutout pixel, NaN outside the WCS domain.

    Uses the model's own ``wavelength`` array when it has a non-empty one
    (as jwst does), else evaluates the WCS on the cutout only.

    Parameters
    ----------
    model : DataModel
        Input with a WCS.
    region : LrsRegion
        The cutout.

    Returns
    -------
    ndarray
        Dispersion-major wavelengths of the cutout.
    """
    stored = getattr(model, "wavelength", None)
    if stored is not None and np.size(stored) and np.nanmax(np.abs(stored)) > 0:
        return np.array(to_dispersion_major(stored, region.dispaxis)[region.slices], dtype=float)
    x, y = region.detector_xy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(model.meta.wcs(x, y)[2], dtype=float)


@dataclass
class LrsPixels:
    """
    Science pixels of the cutout, invalid pixels set to NaN everywhere.

    Attributes
    ----------
    data, var_rnoise, var_poisson, var_flat : ndarray
        ``(n_int, n_disp, n_xdisp)`` float64 copies of the cutout.
    """

    data: np.ndarray
    var_rnoise: np.ndarray
    var_poisson: np.ndarray
    var_flat: np.ndarray


def read_pixels(model, region: LrsRegion) -> LrsPixels:
    """
    Copy the cutout's data and variances, marking invalid pixels as jwst does.

    A pixel is invalid where any of data, err or the variances is NaN, or
    where DQ has DO_NOT_USE (jwst's ``match_nans_and_flags``). Missing
    variance arrays count as zero variance. The model is not modified.

    Parameters
    ----------
    model : DataModel
        The input.
    region : LrsRegion
        The cutout.

    Returns
    -------
    LrsPixels
        Arrays of shape ``(n_int, n_disp, n_xdisp)``.
    """

    def cut(array, dtype=float):
        if array is None or array.shape[-2:] != model.data.shape[-2:]:
            return None
        view = to_dispersion_major(array, region.dispaxis)
        view = view[(..., *region.slices)]
        return np.array(view, dtype=dtype, ndmin=3)

    data = cut(model.data)
    invalid = ~np.isfinite(data)
    arrays = {}
    for name in ("var_rnoise", "var_poisson", "var_flat"):
        array = cut(getattr(model, name, None)) if model.hasattr(name) else None
        arrays[name] = np.zeros_like(data) if array is None else array
        invalid |= np.isnan(arrays[name])
    if model.hasattr("err"):
        err = cut(model.err, dtype=None)
        if err is not None:
            invalid |= np.isnan(err)
    if model.hasattr("dq"):
        dq = cut(model.dq, dtype=np.uint32)
        if dq is not None:
            invalid |= (dq & DO_NOT_USE) != 0
    data[invalid] = np.nan
    for array in arrays.values():
        array[invalid] = np.nan
    return LrsPixels(data, arrays["var_rnoise"], arrays["var_poisson"], arrays["var_flat"])


def dithered_sky_position(model) -> tuple[float, float] | None:
    """RA/Dec of the source from ``meta.dither.dithered_ra/dec`` (None when unset)."""
    ra, dec = model.meta.dither.dithered_ra, model.meta.dither.dithered_dec
    if ra is None or dec is None:
        return None
    return float(ra), float(dec)


def source_location(model, region: LrsRegion) -> tuple[int, float, float] | None:
    """
    Cross-dispersion position of the source at the middle of the spectrum.

    Same definition as jwst (``location_from_wcs``): the middle dispersion
    pixel of the bounding box, the mean wavelength there, and the detector
    position of the dithered pointing (``meta.dither.dithered_ra/dec``) at
    that wavelength through the inverse WCS.

    Parameters
    ----------
    model : DataModel
        Fixed-slit LRS input with a WCS.
    region : LrsRegion
        The cutout (for the bounding box).

    Returns
    -------
    (int, float, float) or None
        Middle dispersion pixel, its wavelength and the source's
        cross-dispersion position; None (with a warning) when the position
        is unknown or falls outside the bounding box.
    """
    if str(model.meta.exposure.type).upper() != "MIR_LRS-FIXEDSLIT":
        log.warning("Source position is only known for MIR_LRS-FIXEDSLIT; not shifting")
        return None
    sky = dithered_sky_position(model)
    if sky is None:
        log.warning("meta.dither.dithered_ra/dec not set; cannot locate the source")
        return None
    wcs = model.meta.wcs
    box = wcs.bounding_box
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        wavelengths = np.asarray(wcs(x, y)[2], dtype=float)
        if not np.any(np.isfinite(wavelengths)):
            log.warning("No valid wavelength at the middle of the spectrum")
            return None
        middle_wl = float(np.nanmean(wavelengths))
        position = wcs.backward_transform(sky[0], sky[1], middle_wl)
    location = float(position[0] if region.dispaxis == VERTICAL else position[1])
    if not np.isfinite(location) or location < low or location > high:
        log.warning(f"WCS puts the source at {location:.2f}, outside the bounding box")
        return None
    return int(np.round(middle)), middle_wl, location


def source_trace(
    model, region: LrsRegion, wavelength: np.ndarray, sky: tuple[float, float] | None = None
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
    model : DataModel
        Fixed-slit LRS input with a WCS.
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
        sky = dithered_sky_position(model)
    if sky is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        row_wavelength = np.nanmedian(wavelength, axis=1)
        good = np.isfinite(row_wavelength)
        trace = np.full(row_wavelength.size, np.nan)
        if not good.any():
            return None
        position = model.meta.wcs.backward_transform(
            np.full(good.sum(), sky[0]), np.full(good.sum(), sky[1]), row_wavelength[good]
        )
    trace[good] = position[0] if region.dispaxis == VERTICAL else position[1]
    if region.dispaxis == VERTICAL:
        # Refine: the row's wavelength may vary across the slit; evaluate it at the trace.
        y = region.disp_index[good].astype(float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            refined_wl = np.asarray(model.meta.wcs(trace[good], y)[2], dtype=float)
            ok = np.isfinite(refined_wl)
            refined = model.meta.wcs.backward_transform(
                np.full(ok.sum(), sky[0]), np.full(ok.sum(), sky[1]), refined_wl[ok]
            )
        values = trace[good]
        values[ok] = refined[0]
        trace[good] = values
    return trace


def pixel_solid_angle(model) -> float | None:
    """
    Steradians per pixel for converting MJy/sr sums to Jy (None before photom).

    Parameters
    ----------
    model : DataModel
        The exposure.

    Returns
    -------
    float or None
        ``meta.photometry.pixelarea_steradians``; None (FLUX stays in the
        input units, as in jwst) when photom has not run; 1.0 with a
        warning when photom ran but the area is missing.
    """
    if str(model.meta.cal_step.photom).upper() != "COMPLETE":
        log.warning("The photom step has not been run; FLUX stays in the input units.")
        return None
    solid_angle = model.meta.photometry.pixelarea_steradians
    if solid_angle is None:
        log.warning("Pixel area (solid angle) is not populated; the flux will not be correct.")
        return 1.0
    return float(solid_angle)


def reference_sky_position(model) -> tuple[float, float] | None:
    """
    Sky position of the aperture reference point (slit centre, or the slitless
    reference), from ``wcsinfo.v2_ref/v3_ref`` through the WCS.

    Parameters
    ----------
    model : DataModel
        LRS input with a WCS that has a ``v2v3`` frame.

    Returns
    -------
    (float, float) or None
        RA and Dec in degrees, None when the WCS cannot give them.
    """
    wcsinfo = model.meta.wcsinfo
    try:
        transform = model.meta.wcs.get_transform("v2v3", "world")
        ra, dec = transform(wcsinfo.v2_ref, wcsinfo.v3_ref, 0.0)[:2]
    except Exception:
        return None
    if not (np.isfinite(ra) and np.isfinite(dec)):
        return None
    return float(ra), float(dec)


def mirrored_nod_sky_position(model) -> tuple[float, float] | None:
    """
    Sky position of the source's image in the other exposure of a two-point nod.

    In a nod-subtracted exposure the other nod's source appears at the
    mirrored dither offset (``-x_offset, -y_offset``); its sky position is
    found as jwst's ``store_dithered_position`` does for the real one.

    Parameters
    ----------
    model : DataModel
        Fixed-slit LRS input with a WCS and dither offsets.

    Returns
    -------
    (float, float) or None
        RA and Dec in degrees, None when the offsets or WCS are missing.
    """
    from jwst.assign_wcs.miri import store_dithered_position
    from stdatamodels.jwst import datamodels

    dither = model.meta.dither
    if dither.x_offset is None or dither.y_offset is None:
        return None
    probe = datamodels.ImageModel()
    probe.meta.wcs = model.meta.wcs
    probe.meta.wcsinfo = model.meta.wcsinfo.instance
    probe.meta.dither.x_offset = -float(dither.x_offset)
    probe.meta.dither.y_offset = -float(dither.y_offset)
    try:
        store_dithered_position(probe)
    except Exception:
        return None
    ra, dec = probe.meta.dither.dithered_ra, probe.meta.dither.dithered_dec
    if ra is None or dec is None:
        return None
    return float(ra), float(dec)


def sky_position(model, centre_xdisp: float, centre_disp: float) -> tuple[float | None, ...]:
    """
    RA and Dec of a detector position given in dispersion-major indices.

    Parameters
    ----------
    model : DataModel
        Input with a WCS.
    centre_xdisp, centre_disp : float
        Cross-dispersion and dispersion pixel position.

    Returns
    -------
    (float or None, float or None)
        RA, Dec in degrees (None if the WCS gives NaN).
    """
    if dispersion_axis(model) == VERTICAL:
        x, y = centre_xdisp, centre_disp
    else:
        x, y = centre_disp, centre_xdisp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        coords = model.meta.wcs(x, y)
    if np.any(np.isnan(coords)):
        return None, None
    return float(coords[0]), float(coords[1])
