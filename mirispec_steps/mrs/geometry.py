"""MIRI MRS detector geometry: slice, alpha, beta, wavelength and footprint of every pixel.

One adapter for all MRS steps. It reads a datamodel's WCS as made by jwst's
``assign_wcs`` (or the package's built-in WCS, which has the same structure):
``detector`` -> ``alpha_beta`` is a ``RegionsSelector`` whose label mapper
is the slice map (labels ``100 * channel + slice``) and whose per-slice
models give (alpha, beta, lambda). For each channel on the detector it
returns flat arrays over that channel's pixels only, computed once per WCS
object and cached (the arrays are read-only: every step and thread shares
them). Data without a WCS get the same geometry from an ``mrsmaps`` file
(:mod:`mirispec_steps.mrs.maps`).
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from mirispec_steps.errors import InputDataError

__all__ = [
    "BAND_NAMES",
    "MRS_BANDS",
    "ChannelGeometry",
    "band_letter",
    "check_mrs_input",
    "detector_channels",
    "is_mrs_exposure",
    "mrs_geometry",
]

log = logging.getLogger(__name__)

BAND_LETTERS = {"SHORT": "A", "MEDIUM": "B", "LONG": "C"}
BAND_NAMES = {letter: name for name, letter in BAND_LETTERS.items()}
DETECTOR_CHANNELS = {"MIRIFUSHORT": (1, 2), "MIRIFULONG": (3, 4)}
#: The twelve MRS bands, ``1A`` ... ``4C``.
MRS_BANDS = tuple(f"{channel}{letter}" for channel in "1234" for letter in "ABC")

# Geometry per WCS object; the WCS is never modified, so its identity is its content.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def band_letter(band: str) -> str:
    """``SHORT``/``MEDIUM``/``LONG`` (or ``A``/``B``/``C``) to ``A``/``B``/``C``."""
    value = str(band).upper()
    if value in BAND_LETTERS.values():
        return value
    if value not in BAND_LETTERS:
        raise InputDataError(f"band {band!r} is not an MRS band (SHORT, MEDIUM, LONG)")
    return BAND_LETTERS[value]


def detector_channels(detector: str) -> tuple[int, int]:
    """The two channels on an MRS detector."""
    value = str(detector).upper()
    if value not in DETECTOR_CHANNELS:
        raise InputDataError(
            f"detector {detector!r} is not an MRS detector (MIRIFUSHORT, MIRIFULONG)"
        )
    return DETECTOR_CHANNELS[value]


@dataclass(frozen=True)
class ChannelGeometry:
    """
    One channel's pixels on the detector and their coordinates.

    Attributes
    ----------
    channel : int
        1 to 4.
    band : str
        ``A``, ``B`` or ``C`` (SHORT, MEDIUM, LONG).
    y, x : ndarray
        ``(N,)`` detector row and column of each pixel of the channel's slices.
    slice_number : ndarray
        ``(N,)`` slice of each pixel, 1 to ``n_slices``.
    alpha, beta, wavelength : ndarray
        ``(N,)`` coordinates of the pixel centres (arcsec, arcsec, micron).
    alpha_low, alpha_high : ndarray
        ``(N,)`` along-slice edges of each pixel (alpha at the pixel's column
        edges on its row, from the slice's own model).
    wavelength_low, wavelength_high : ndarray
        ``(N,)`` wavelengths at the pixel's row edges.
    slice_beta : ndarray
        ``(n_slices,)`` beta of each slice centre.
    slice_width : float
        Slice width in beta (arcsec): a pixel spans ``beta +- slice_width / 2``.
    """

    channel: int
    band: str
    y: np.ndarray
    x: np.ndarray
    slice_number: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    wavelength: np.ndarray
    alpha_low: np.ndarray
    alpha_high: np.ndarray
    wavelength_low: np.ndarray
    wavelength_high: np.ndarray
    slice_beta: np.ndarray
    slice_width: float

    def __post_init__(self):
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    @property
    def name(self) -> str:
        """Channel and band, e.g. ``1A``."""
        return f"{self.channel}{self.band}"

    @property
    def n_slices(self) -> int:
        """Number of slices."""
        return int(self.slice_beta.size)

    @property
    def beta_low(self) -> np.ndarray:
        """``(N,)`` lower beta edge of each pixel's slice."""
        return self.beta - 0.5 * self.slice_width

    @property
    def beta_high(self) -> np.ndarray:
        """``(N,)`` upper beta edge of each pixel's slice."""
        return self.beta + 0.5 * self.slice_width

    @property
    def pixel_area(self) -> np.ndarray:
        """``(N,)`` solid angle of each pixel's footprint in (alpha, beta), arcsec^2."""
        return np.abs(self.alpha_high - self.alpha_low) * self.slice_width

    @property
    def wavelength_range(self) -> tuple[float, float]:
        """Shortest and longest pixel-centre wavelength."""
        return float(np.min(self.wavelength)), float(np.max(self.wavelength))


def is_mrs_exposure(model) -> bool:
    """True for a MIRI MRS exposure (``MIR_MRS``); other data is skipped by the MRS steps."""
    exp_type = str(model.meta.exposure.type).upper()
    return str(model.meta.instrument.name).upper() == "MIRI" and exp_type == "MIR_MRS"


def check_mrs_input(model) -> None:
    """
    Refuse anything that is not a MIRI MRS exposure.

    Raises
    ------
    InputDataError
        Not MIRI, not ``MIR_MRS``, or an unknown detector/band.
    """
    instrument = str(model.meta.instrument.name).upper()
    exp_type = str(model.meta.exposure.type).upper()
    if instrument != "MIRI" or exp_type != "MIR_MRS":
        raise InputDataError(f"input is {instrument} {exp_type}, not MIRI MRS (MIR_MRS)")
    detector_channels(model.meta.instrument.detector)
    band_letter(model.meta.instrument.band)


def _detector_transform(model):
    wcs = getattr(model.meta, "wcs", None)
    if wcs is None:
        raise InputDataError(
            "the MRS input has no WCS: run jwst's assign_wcs first (as calwebb_spec2 does)"
        )
    if "alpha_beta" not in wcs.available_frames:
        raise InputDataError(
            f"the WCS has no alpha_beta frame (frames: {wcs.available_frames}); "
            "not an MRS WCS from assign_wcs"
        )
    transform = wcs.get_transform("detector", "alpha_beta")
    if not hasattr(transform, "label_mapper") or not hasattr(transform, "selector"):
        raise InputDataError("the WCS's detector -> alpha_beta transform has no slice selector")
    return wcs, transform


def _channel(transform, labels, rows, columns, channel, letter) -> ChannelGeometry:
    numbers = sorted(int(label) for label in np.unique(labels) if label // 100 == channel)
    parts = []
    for label in numbers:
        inside = labels == label
        y, x = rows[inside], columns[inside]
        slice_model = transform.selector[label]
        alpha, beta, wavelength = slice_model(x, y)
        alpha_left, _, _ = slice_model(x - 0.5, y)
        alpha_right, _, _ = slice_model(x + 0.5, y)
        _, _, wave_below = slice_model(x, y - 0.5)
        _, _, wave_above = slice_model(x, y + 0.5)
        parts.append(
            (
                y,
                x,
                np.full(y.size, label - 100 * channel),
                alpha,
                np.broadcast_to(beta, y.shape),
                wavelength,
                np.minimum(alpha_left, alpha_right),
                np.maximum(alpha_left, alpha_right),
                np.minimum(wave_below, wave_above),
                np.maximum(wave_below, wave_above),
            )
        )
    arrays = [np.concatenate(column) for column in zip(*parts, strict=True)]
    finite = np.all([np.isfinite(a) for a in arrays[3:]], axis=0)
    arrays = [a[finite] for a in arrays]
    slice_beta = np.array([np.median(arrays[4][arrays[2] == n]) for n in np.unique(arrays[2])])
    slice_width = float(np.median(np.diff(slice_beta))) if slice_beta.size > 1 else 0.0
    return ChannelGeometry(channel, letter, *arrays, slice_beta, abs(slice_width))


def mrs_geometry(model, maps: str | Path | None = None) -> list[ChannelGeometry]:
    """
    Geometry of every channel on the exposure's detector (cached).

    Parameters
    ----------
    model : IFUImageModel
        MIRI MRS exposure with an assign_wcs WCS (or the built-in one).
    maps : str, Path or None
        An ``mrsmaps`` reference file (see :func:`write_mrs_maps`), used
        when the model has no WCS.

    Returns
    -------
    list of ChannelGeometry
        One per channel with pixels on the detector, ordered by channel.

    Raises
    ------
    InputDataError
        Not MRS, or no WCS and no maps, or a WCS without the MRS structure.
    ReferenceFileError
        The maps file is malformed or for another detector, band or shape.
    """
    check_mrs_input(model)
    if getattr(model.meta, "wcs", None) is None and maps is not None:
        from mirispec_steps.mrs.maps import load_mrs_maps

        return load_mrs_maps(maps, model)
    wcs, transform = _detector_transform(model)
    letter = band_letter(model.meta.instrument.band)
    channels = detector_channels(model.meta.instrument.detector)
    key = (letter, channels, tuple(model.data.shape[-2:]))
    with _CACHE_LOCK:
        cached = _CACHE.get(wcs)
    if cached is not None and cached[0] == key:
        return list(cached[1])
    n_rows, n_columns = model.data.shape[-2:]
    rows, columns = np.mgrid[:n_rows, :n_columns]
    labels = np.asarray(transform.label_mapper(columns, rows)).astype(int)
    result = []
    for channel in channels:
        if not np.any(labels // 100 == channel):
            log.warning(f"no pixel of channel {channel} in the slice map; channel skipped")
            continue
        result.append(_channel(transform, labels, rows, columns, channel, letter))
    if not result:
        raise InputDataError("the WCS slice map holds no MRS slice")
    with _CACHE_LOCK:
        _CACHE[wcs] = (key, tuple(result))
    return result
