"""Read MRS exposures into arrays and write results back: the MRS adapter.

The MRS model layer (:mod:`~mirispec_steps.mrs.calibrate`,
:mod:`~mirispec_steps.mrs.centroid`, :mod:`~mirispec_steps.mrs.extract`)
reaches a datamodel only through this module and
:mod:`~mirispec_steps.mrs.geometry`: input checks, slope and variance
images, usable pixels, a channel's pixels for the centroid and extraction
cores, the centroid solution stored on the model, and sky positions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from stdatamodels.jwst import datamodels

from mirispec_steps.core.spikes import spectral_spikes
from mirispec_steps.errors import InputDataError
from mirispec_steps.flags import DO_NOT_USE
from mirispec_steps.mrs.core.calibrate import VarianceImage
from mirispec_steps.mrs.core.centroid import CentroidPixels
from mirispec_steps.mrs.core.extract import FootprintPixels
from mirispec_steps.mrs.geometry import (
    ChannelGeometry,
    band_letter,
    check_mrs_input,
)

__all__ = [
    "CALIBRATED_UNITS",
    "SOLUTION_KEY",
    "Photometry",
    "attach_solution",
    "background_image",
    "calibrated_model",
    "channel_pixels",
    "check_mrs_image",
    "copy_sharing_wcs",
    "footprint_pixels",
    "exposure_mid_time",
    "has_wcs",
    "image_shape",
    "is_calibrated",
    "open_exposure",
    "pixel_dq",
    "sky_position",
    "stored_solution",
    "usable_pixels",
    "variance_image",
]

log = logging.getLogger(__name__)

CALIBRATED_UNITS = ("MJY/SR", "MJY", "JY", "MJY SR-1")
#: Where the centroid solution lives in the model's ASDF tree.
SOLUTION_KEY = "mirispec_centroid"


def has_wcs(model) -> bool:
    """True when the exposure has a WCS (assign_wcs ran)."""
    return getattr(model.meta, "wcs", None) is not None


def open_exposure(entry, role: str):
    """
    A datamodel from a path or a model (models are returned as they are).

    Parameters
    ----------
    entry : str, Path or DataModel
        What the user gave.
    role : str
        What it is (e.g. "background"), for the message.

    Returns
    -------
    DataModel
        The model (the caller closes it if it opened a path).

    Raises
    ------
    InputDataError
        The file cannot be read as a jwst datamodel.
    """
    if not isinstance(entry, (str, Path)):
        return entry
    try:
        return datamodels.open(entry)
    except (OSError, ValueError, TypeError) as exc:
        raise InputDataError(f"{role} {entry} cannot be read: {exc}") from None


def copy_sharing_wcs(model):
    """
    A deep copy of a model whose WCS object is shared with the original, not copied.

    Copying an MRS WCS (dozens of slice transforms) costs more than the
    whole calibration, and nothing in the package modifies a WCS; sharing
    it also lets the geometry cache serve the copy.

    Parameters
    ----------
    model : JwstDataModel
        Model to copy.

    Returns
    -------
    JwstDataModel
        The copy.
    """
    wcs = getattr(model.meta, "wcs", None)
    return model.copy(memo={} if wcs is None else {id(wcs): wcs})


def check_mrs_image(model, expected: str) -> None:
    """
    Refuse anything but a 2-D MRS detector image with known detector and band.

    Parameters
    ----------
    model : DataModel
        The input of an MRS step.
    expected : str
        What the step takes, for the message (e.g. "an MRS rate image").

    Raises
    ------
    InputDataError
        Not an ``IFUImageModel`` with 2-D data, or an unknown detector/band.
    """
    from stdatamodels.jwst.datamodels import IFUImageModel

    if not isinstance(model, IFUImageModel) or model.data.ndim != 2:
        raise InputDataError(
            f"input is a {type(model).__name__} of shape {model.data.shape}; "
            f"expected {expected} (IFUImageModel, 2-D)"
        )
    check_mrs_input(model)


def is_calibrated(model) -> bool:
    """True when the image is already in surface-brightness units or photom-calibrated."""
    unit = str(model.meta.bunit_data or "").strip().upper()
    photom_status = getattr(model.meta.cal_step, "photom", None)
    own_status = getattr(model.meta.cal_step, "mrs_calibrate", None)
    return unit in CALIBRATED_UNITS or "COMPLETE" in (photom_status, own_status)


def background_image(background, model, label: str) -> VarianceImage:
    """
    A background exposure's slopes and variances, checked against the science exposure.

    Parameters
    ----------
    background : IFUImageModel
        The background exposure (DN/s).
    model : IFUImageModel
        The science exposure it must match.
    label : str
        Its name, for messages.

    Returns
    -------
    VarianceImage
        Float64 copies.

    Raises
    ------
    InputDataError
        Not MRS, another detector, band or shape, or already calibrated.
    """
    meta, wanted = background.meta, model.meta
    if str(meta.exposure.type).upper() != "MIR_MRS":
        raise InputDataError(f"background {label} is {meta.exposure.type}, not MIR_MRS")
    if str(meta.instrument.detector).upper() != str(wanted.instrument.detector).upper():
        raise InputDataError(
            f"background {label} is from {meta.instrument.detector}, "
            f"the science exposure from {wanted.instrument.detector}"
        )
    if band_letter(meta.instrument.band) != band_letter(wanted.instrument.band):
        raise InputDataError(
            f"background {label} is band {meta.instrument.band}, "
            f"the science exposure band {wanted.instrument.band}"
        )
    if background.data.shape != model.data.shape:
        raise InputDataError(
            f"background {label} has shape {background.data.shape}, "
            f"the science exposure {model.data.shape}"
        )
    if is_calibrated(background):
        raise InputDataError(f"background {label} is already calibrated (MJy/sr); give slopes")
    return variance_image(background)


def variance_image(model) -> VarianceImage:
    """
    Float64 copies of a model's data and variance components, and its usable pixels.

    Parameters
    ----------
    model : IFUImageModel
        An MRS exposure.

    Returns
    -------
    VarianceImage
        Data, VAR_POISSON, VAR_RNOISE, VAR_FLAT (zeros when absent) and the
        pixels that are finite and not DO_NOT_USE.
    """
    data = np.array(model.data, dtype=float)
    shape = data.shape
    components = []
    for name in ("var_poisson", "var_rnoise", "var_flat"):
        values = getattr(model, name, None) if model.hasattr(name) else None
        values = np.zeros(shape) if values is None or np.size(values) == 0 else values
        components.append(np.array(values, dtype=float))
    dq = np.asarray(model.dq)
    valid = np.isfinite(data) & ((dq & DO_NOT_USE) == 0)
    for values in components:
        valid &= np.isfinite(values)
    return VarianceImage(data, *components, valid)


def usable_pixels(model, reject_spikes: bool = True) -> np.ndarray:
    """
    The image's usable pixels: finite, variance > 0, not DO_NOT_USE, and no spike.

    Parameters
    ----------
    model : IFUImageModel
        Calibrated exposure.
    reject_spikes : bool
        Also drop single-pixel spikes found against the adjacent rows
        (:func:`~mirispec_steps.core.spikes.spectral_spikes`): unflagged
        cosmic rays.

    Returns
    -------
    ndarray
        Boolean image.
    """
    data = np.asarray(model.data, dtype=float)
    variance = np.asarray(model.err, dtype=float) ** 2
    valid = np.isfinite(data) & np.isfinite(variance) & (variance > 0)
    valid &= (np.asarray(model.dq) & DO_NOT_USE) == 0
    if reject_spikes:
        spikes = spectral_spikes(data, variance, valid)
        if np.any(spikes):
            log.info(f"{int(np.count_nonzero(spikes))} single-pixel spikes left out")
        valid &= ~spikes
    return valid


def channel_pixels(
    model, geometry: ChannelGeometry, usable: np.ndarray | None = None
) -> CentroidPixels:
    """
    A channel's surface brightness, variance and usable-pixel mask.

    Parameters
    ----------
    model : IFUImageModel
        Calibrated exposure.
    geometry : ChannelGeometry
        The channel's pixels.
    usable : ndarray or None
        Usable-pixel image (:func:`usable_pixels`); computed if None.

    Returns
    -------
    CentroidPixels
        Arrays over the channel's pixels; unusable pixels (NaN, DO_NOT_USE,
        variance not > 0) have ``valid`` False, data 0 and variance 1.
    """
    pixels = geometry.y, geometry.x
    data = np.asarray(model.data[pixels], dtype=float)
    variance = np.asarray(model.err[pixels], dtype=float) ** 2
    if usable is None:
        usable = usable_pixels(model)
    valid = usable[pixels]
    return CentroidPixels(
        alpha_low=geometry.alpha_low,
        alpha_high=geometry.alpha_high,
        beta=geometry.beta,
        slice_number=geometry.slice_number,
        wavelength=geometry.wavelength,
        data=np.where(valid, data, 0.0),
        variance=np.where(valid, variance, 1.0),
        valid=valid,
        slice_beta=geometry.slice_beta,
        slice_width=geometry.slice_width,
    )


def footprint_pixels(model, geometry: ChannelGeometry, usable: np.ndarray) -> FootprintPixels:
    """
    A channel's footprints, surface brightness and variance components.

    Parameters
    ----------
    model : IFUImageModel
        Calibrated exposure (MJy/sr).
    geometry : ChannelGeometry
        The channel's pixels.
    usable : ndarray
        Usable-pixel image (see :func:`~usable_pixels`).

    Returns
    -------
    FootprintPixels
        Arrays over the channel's pixels; variances fall back to ERR^2 in
        VAR_POISSON when the components are absent.
    """
    pixels = geometry.y, geometry.x

    def component(name):
        values = getattr(model, name, None)
        if values is None or np.shape(values) != model.data.shape:
            return None
        return np.asarray(values[pixels], dtype=float)

    data = np.asarray(model.data[pixels], dtype=float)
    var_poisson, var_rnoise, var_flat = (
        component(name) for name in ("var_poisson", "var_rnoise", "var_flat")
    )
    if var_poisson is None or var_rnoise is None:
        var_poisson = np.asarray(model.err[pixels], dtype=float) ** 2
        var_rnoise = np.zeros_like(data)
    if var_flat is None:
        var_flat = np.zeros_like(data)
    total = var_poisson + var_rnoise + var_flat
    valid = usable[pixels] & np.isfinite(total) & (total > 0)
    return FootprintPixels(
        alpha_low=geometry.alpha_low,
        alpha_high=geometry.alpha_high,
        beta_low=geometry.beta_low,
        beta_high=geometry.beta_high,
        wavelength=geometry.wavelength,
        area=geometry.pixel_area,
        data=np.where(valid, data, 0.0),
        var_poisson=np.where(valid, np.nan_to_num(var_poisson), 0.0),
        var_rnoise=np.where(valid, np.nan_to_num(var_rnoise), 0.0),
        var_flat=np.where(valid, np.nan_to_num(var_flat), 0.0),
        valid=valid,
    )


def stored_solution(model) -> dict | None:
    """
    The centroid solution attached to a model by MrsCentroidStep, as plain arrays.

    Parameters
    ----------
    model : IFUImageModel
        An exposure.

    Returns
    -------
    dict or None
        ``{"version", "channels": {channel: {column: values}}}``; None if absent.
    """
    tree = model.instance.get(SOLUTION_KEY)
    if tree is None:
        return None
    return {
        "version": tree.get("version", 1),
        "channels": {
            key: {
                name: (np.asarray(value) if not isinstance(value, (str, float, int)) else value)
                for name, value in entry.items()
            }
            for key, entry in tree["channels"].items()
        },
    }


def attach_solution(model, tree: dict) -> None:
    """
    Store a centroid solution on a model (survives save and load).

    Parameters
    ----------
    model : IFUImageModel
        The output model (not the user's input).
    tree : dict
        The solution (see :func:`stored_solution`).
    """
    setattr(model, SOLUTION_KEY, tree)


def image_shape(model) -> tuple[int, int]:
    """``(rows, columns)`` of the detector image."""
    return tuple(int(n) for n in model.data.shape[-2:])


def pixel_dq(model) -> np.ndarray:
    """A copy of the DQ array (uint32)."""
    return np.array(model.dq, dtype=np.uint32)


@dataclass(frozen=True)
class Photometry:
    """
    What photom records in a calibrated product.

    Attributes
    ----------
    pixel_area_sr, pixel_area_arcsec2 : float or None
        Nominal pixel solid angle (``PIXAR_SR``, ``PIXAR_A2``).
    conversion_megajanskys : float or None
        ``PHOTMJSR``.
    """

    pixel_area_sr: float | None
    pixel_area_arcsec2: float | None
    conversion_megajanskys: float | None


def calibrated_model(
    model,
    image: VarianceImage,
    dq: np.ndarray,
    invalid: np.ndarray,
    photometry: Photometry,
    fringe_applied: bool,
    background_applied: bool,
):
    """
    A new exposure in MJy/sr: the calibrated arrays on a copy of ``model`` (its WCS shared).

    Parameters
    ----------
    model : IFUImageModel
        The slope image (not modified).
    image : VarianceImage
        Calibrated data and variance components.
    dq : ndarray
        Output DQ.
    invalid : ndarray
        Pixels set to NaN in every array.
    photometry : Photometry
        Recorded in ``meta.photometry``.
    fringe_applied, background_applied : bool
        Recorded in ``meta.cal_step`` (fringe, bkg_subtract); photom is COMPLETE.

    Returns
    -------
    IFUImageModel
        The calibrated exposure.
    """
    result = copy_sharing_wcs(model)
    for name, values in (
        ("data", image.data),
        ("err", image.err),
        ("var_poisson", image.var_poisson),
        ("var_rnoise", image.var_rnoise),
        ("var_flat", image.var_flat),
    ):
        setattr(result, name, np.where(invalid, np.nan, values).astype(np.float32))
    result.dq = dq
    meta = result.meta
    meta.bunit_data = "MJy/sr"
    meta.bunit_err = "MJy/sr"
    for name, value in (
        ("pixelarea_steradians", photometry.pixel_area_sr),
        ("pixelarea_arcsecsq", photometry.pixel_area_arcsec2),
        ("conversion_megajanskys", photometry.conversion_megajanskys),
    ):
        if value is not None:
            setattr(meta.photometry, name, float(value))
    meta.cal_step.fringe = "COMPLETE" if fringe_applied else "SKIPPED"
    meta.cal_step.photom = "COMPLETE"
    if background_applied:
        meta.cal_step.bkg_subtract = "COMPLETE"
    return result


def exposure_mid_time(model) -> float:
    """Exposure mid time (MJD), for the time-dependent throughput correction."""
    return float(model.meta.exposure.mid_time)


def sky_position(model, alpha: float, beta: float, wavelength: float):
    """
    RA, Dec of a position in the MRS field, or (None, None) when the WCS cannot say.

    Parameters
    ----------
    model : IFUImageModel
        The exposure.
    alpha, beta : float
        Position (arcsec).
    wavelength : float
        Micron (selects the channel).

    Returns
    -------
    (float or None, float or None)
        Degrees.
    """
    wcs = getattr(model.meta, "wcs", None)
    if wcs is None or "world" not in wcs.available_frames:
        return None, None
    with np.errstate(invalid="ignore"):
        ra, dec, _ = wcs.get_transform("alpha_beta", "world")(alpha, beta, wavelength)
    if not (np.isfinite(ra) and np.isfinite(dec)):
        return None, None
    return float(ra), float(dec)
