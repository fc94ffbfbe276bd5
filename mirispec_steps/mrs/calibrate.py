"""MRS slope image (DN/s) to surface brightness (MJy/sr): the model layer of MrsCalibrateStep.

Order of operations, each in variance space (:mod:`mirispec_steps.mrs.core.calibrate`):

1. subtract the mean of the background exposures (``var += sum(var_i) / n**2``);
2. divide by the ``fringe`` flat;
3. multiply by the ``photom`` conversion ((MJy/sr)/(DN/s), pixel solid angle
   included, as in jwst's MRS photom files);
4. divide by the time-dependent throughput correction when the ``photom``
   file carries jwst's power-law tables (needs each pixel's wavelength:
   from the WCS, or from an ``mrsmaps`` file).

Steps 2 and 3 are jwst's ``fringe`` and ``photom`` arithmetic; pixels whose
reference value is NaN or zero become DO_NOT_USE (jwst turns a NaN fringe
into 1 and a zero photom value into a zero pixel). The exposure is read and
the result written only through :mod:`~mirispec_steps.mrs.exposure`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from mirispec_steps.errors import InputDataError, ReferenceFileError
from mirispec_steps.flags import DO_NOT_USE
from mirispec_steps.mrs import exposure as mrs_exposure
from mirispec_steps.mrs.core.calibrate import VarianceImage, combine_backgrounds, scale_image
from mirispec_steps.mrs.geometry import mrs_geometry
from mirispec_steps.mrs.references import CalibrationReferences

__all__ = [
    "calibrate_mrs",
    "load_backgrounds",
    "time_correction",
]

log = logging.getLogger(__name__)


def _asn_members(path: Path) -> list[Path]:
    """Background members of an association file (all members if none is typed background)."""
    try:
        with open(path) as stream:
            association = json.load(stream)
        members = [m for product in association["products"] for m in product["members"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputDataError(f"background association {path.name} cannot be read: {exc}") from None
    typed = [m for m in members if str(m.get("exptype", "")).lower() == "background"]
    chosen = typed or members
    if not chosen:
        raise InputDataError(f"background association {path.name} lists no members")
    return [path.parent / m["expname"] for m in chosen]


def _expand_background_list(background) -> list:
    """Files and models from the ``background`` parameter (file, list, association)."""
    if background is None:
        return []
    entries = background if isinstance(background, (list, tuple)) else [background]
    expanded = []
    for entry in entries:
        if isinstance(entry, str) and not entry.strip():
            continue
        if isinstance(entry, (str, Path)) and str(entry).lower().endswith(".json"):
            expanded.extend(_asn_members(Path(entry)))
        else:
            expanded.append(entry)
    return expanded


def load_backgrounds(background, model, sigma: float) -> VarianceImage | None:
    """
    The combined background exposure (DN/s) for a science exposure.

    Parameters
    ----------
    background : str, Path, DataModel, list of them, or None
        Background exposure(s), or an association file whose ``background``
        members (or all members) are the exposures.
    model : IFUImageModel
        The science exposure they must match.
    sigma : float
        Outlier rejection across three or more exposures (0: off).

    Returns
    -------
    VarianceImage or None
        The combined background, None when no background was given.

    Raises
    ------
    InputDataError
        A background that cannot be read, is not MRS, is for another
        detector or band, has another shape, or is already calibrated.
    """
    entries = _expand_background_list(background)
    if not entries:
        return None
    images = []
    for entry in entries:
        opened = mrs_exposure.open_exposure(entry, "background")
        label = entry if opened is not entry else (opened.meta.filename or "in memory")
        try:
            images.append(mrs_exposure.background_image(opened, model, Path(str(label)).name))
        finally:
            if opened is not entry:
                opened.close()
    log.info(f"Subtracting the mean of {len(images)} background exposure(s)")
    return combine_backgrounds(images, sigma)


def time_correction(geometries, tables: dict, mid_time: float, shape) -> np.ndarray:
    """
    jwst's MRS time-dependent throughput correction (divide the data by it).

    Parameters
    ----------
    geometries : list of ChannelGeometry
        Pixel wavelengths of each channel on the detector.
    tables : dict
        Power-law tables by channel (``binwave``, ``alpha``, ``year1value``,
        ``tsoft``, ``t0``).
    mid_time : float
        Exposure mid time (MJD).
    shape : tuple
        Image shape.

    Returns
    -------
    ndarray
        The correction, 1 off the slices and NaN where the tables give no
        usable value (not finite, or not positive: those pixels become
        DO_NOT_USE).

    Notes
    -----
    Per wavelength bin, ``c = ((t - t0 + tsoft) / (365 + tsoft)) ** alpha *
    year1value``, capped at 1, then interpolated linearly in wavelength
    (extrapolated linearly outside the bins), as jwst's ``photom`` does.
    """
    correction = np.ones(shape)
    for geometry in geometries:
        table = tables.get(geometry.channel)
        if table is None:
            raise ReferenceFileError(
                f"the photom file has no time-dependence table for channel {geometry.channel}"
            )
        norm = (365.0 + table["tsoft"]) ** table["alpha"] / table["year1value"]
        grid = np.minimum((mid_time - table["t0"] + table["tsoft"]) ** table["alpha"] / norm, 1.0)
        binwave = table["binwave"]
        wavelength = geometry.wavelength
        values = np.interp(wavelength, binwave, grid)
        below, above = wavelength < binwave[0], wavelength > binwave[-1]
        values[below] = grid[0] + (wavelength[below] - binwave[0]) * (grid[1] - grid[0]) / (
            binwave[1] - binwave[0]
        )
        values[above] = grid[-1] + (wavelength[above] - binwave[-1]) * (grid[-1] - grid[-2]) / (
            binwave[-1] - binwave[-2]
        )
        values[~(values > 0)] = np.nan
        correction[geometry.y, geometry.x] = values
    return correction


def calibrate_mrs(
    model,
    references: CalibrationReferences,
    background: VarianceImage | None = None,
    apply_time_correction: bool = True,
    maps: str | None = None,
    reference_uncertainty: bool = False,
):
    """
    Calibrate an MRS slope image to surface brightness.

    Parameters
    ----------
    model : IFUImageModel
        Slope image (DN/s); not modified.
    references : CalibrationReferences
        Fringe and photom content.
    background : VarianceImage or None
        Combined background slopes to subtract.
    apply_time_correction : bool
        Apply the photom file's time-dependent correction when it has one.
    maps : str or None
        ``mrsmaps`` file for pixel wavelengths when the model has no WCS.
    reference_uncertainty : bool
        Add the fringe and photom uncertainties to ``VAR_FLAT``
        (``S**2 * ((sigma_f / f)**2 + (sigma_p / p)**2)``; jwst does not).

    Returns
    -------
    IFUImageModel
        A new model in MJy/sr with propagated variances and DQ.

    Raises
    ------
    InputDataError
        The time correction is needed but no pixel wavelengths are known.
    """
    image = mrs_exposure.variance_image(model)
    if background is not None:
        image = image.subtract(background)
    fringe = references.fringe
    image = scale_image(image, 1.0 / np.where(fringe == 0, np.nan, fringe))
    image = scale_image(image, references.sensitivity)
    if references.time_tables and apply_time_correction:
        image = scale_image(image, 1.0 / _time_dependence(model, references, maps))
    elif references.time_tables:
        log.info("MRS time-dependent correction available but not applied")
    if reference_uncertainty:
        with np.errstate(invalid="ignore", divide="ignore"):
            relative = (references.fringe_err / fringe) ** 2 + (
                references.sensitivity_err / references.sensitivity
            ) ** 2
        image.var_flat = image.var_flat + image.data**2 * np.where(
            np.isfinite(relative), relative, 0.0
        )
    dq = mrs_exposure.pixel_dq(model) | references.photom_dq
    invalid = ~image.valid | ~np.isfinite(image.data) | ((dq & DO_NOT_USE) != 0)
    dq[invalid] |= DO_NOT_USE
    log.info(
        f"Calibrated to MJy/sr: {int(np.count_nonzero(~invalid))} usable pixels, "
        f"{int(np.count_nonzero(invalid))} DO_NOT_USE"
    )
    return mrs_exposure.calibrated_model(
        model,
        image,
        dq,
        invalid,
        mrs_exposure.Photometry(
            references.pixel_area_sr,
            references.pixel_area_arcsec2,
            references.conversion_megajanskys,
        ),
        fringe_applied=references.fringe_applied,
        background_applied=background is not None,
    )


def _time_dependence(model, references: CalibrationReferences, maps) -> np.ndarray:
    """The photom file's time-dependent throughput at the exposure's mid time, per pixel."""
    if not mrs_exposure.has_wcs(model) and maps is None:
        raise InputDataError(
            "the photom file carries a time-dependent correction, which needs each pixel's "
            "wavelength: assign a WCS (jwst's assign_wcs), pass --override_mrsmaps, or set "
            "--apply_time_correction=False"
        )
    geometries = mrs_geometry(model, maps=maps)
    correction = time_correction(
        geometries,
        references.time_tables,
        mrs_exposure.exposure_mid_time(model),
        mrs_exposure.image_shape(model),
    )
    unusable = int(np.count_nonzero(~np.isfinite(correction)))
    if unusable:
        log.warning(
            f"The time-dependence tables give no positive throughput for {unusable} pixel(s): "
            "flagged DO_NOT_USE"
        )
    log.info("Applied the MRS time-dependent throughput correction")
    return correction
