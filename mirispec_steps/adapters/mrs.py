"""MIRI MRS detector geometry: slice, alpha, beta, wavelength and footprint of every pixel.

One adapter for all MRS steps. It reads a datamodel's WCS as made by jwst's
``assign_wcs`` (or the package's built-in WCS, which has the same structure):
``detector`` -> ``alpha_beta`` is a ``RegionsSelector`` whose label mapper
is the slice map (labels ``100 * channel + slice``) and whose per-slice
models give (alpha, beta, lambda). For each channel on the detector it
returns flat arrays over that channel's pixels only, computed once per WCS
object and cached.
"""

from __future__ import annotations

import functools
import logging
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirispec_steps.errors import InputDataError, ReferenceFileError

__all__ = [
    "ChannelGeometry",
    "band_letter",
    "detector_channels",
    "abl_to_pixel",
    "channel_geometry",
    "check_mrs_image",
    "check_mrs_input",
    "is_mrs_exposure",
    "copy_sharing_wcs",
    "load_mrs_maps",
    "mrs_geometry",
    "write_mrs_maps",
]

log = logging.getLogger(__name__)

BAND_LETTERS = {"SHORT": "A", "MEDIUM": "B", "LONG": "C"}
BAND_NAMES = {letter: name for name, letter in BAND_LETTERS.items()}
DETECTOR_CHANNELS = {"MIRIFUSHORT": (1, 2), "MIRIFULONG": (3, 4)}

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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


@dataclass
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


def is_mrs_exposure(model) -> bool:
    """True for a MIRI MRS exposure (``MIR_MRS``); other data is skipped by the MRS steps."""
    exp_type = str(model.meta.exposure.type).upper()
    return str(model.meta.instrument.name).upper() == "MIRI" and exp_type == "MIR_MRS"


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
        return load_mrs_maps(maps, model)
    wcs, transform = _detector_transform(model)
    letter = band_letter(model.meta.instrument.band)
    channels = detector_channels(model.meta.instrument.detector)
    key = (letter, channels, tuple(model.data.shape[-2:]))
    cached = _CACHE.get(wcs)
    if cached is not None and cached[0] == key:
        return cached[1]
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
    _CACHE[wcs] = (key, result)
    return result


_MAP_ARRAYS = (
    "y",
    "x",
    "slice_number",
    "alpha",
    "beta",
    "wavelength",
    "alpha_low",
    "alpha_high",
    "wavelength_low",
    "wavelength_high",
)


def write_mrs_maps(model, path: str | Path) -> Path:
    """
    Save an exposure's MRS geometry as an ``mrsmaps`` reference file (ASDF).

    Parameters
    ----------
    model : IFUImageModel
        MRS exposure with a WCS (from assign_wcs or the built-in geometry).
    path : str or Path
        Output file.

    Returns
    -------
    Path
        The file written.

    Notes
    -----
    The tree holds ``reftype: mrsmaps``, ``detector``, ``band`` (A/B/C),
    ``shape`` (rows, columns) and, under ``channels``, one mapping per
    channel with the flat per-pixel arrays of :class:`ChannelGeometry`
    (``y``, ``x``, ``slice_number``, ``alpha``, ``beta``, ``wavelength``,
    ``alpha_low``, ``alpha_high``, ``wavelength_low``,
    ``wavelength_high``) plus ``slice_beta`` and ``slice_width``. Steps use
    it (``--override_mrsmaps``) for data without a WCS.
    """
    import asdf

    channels = {}
    for geometry in mrs_geometry(model):
        entry = {name: np.asarray(getattr(geometry, name)) for name in _MAP_ARRAYS}
        entry["y"] = entry["y"].astype(np.int16)
        entry["x"] = entry["x"].astype(np.int16)
        entry["slice_number"] = entry["slice_number"].astype(np.int16)
        entry["slice_beta"] = np.asarray(geometry.slice_beta, dtype=float)
        entry["slice_width"] = float(geometry.slice_width)
        channels[str(geometry.channel)] = entry
    tree = {
        "reftype": "mrsmaps",
        "instrument": "MIRI",
        "detector": str(model.meta.instrument.detector).upper(),
        "band": band_letter(model.meta.instrument.band),
        "shape": [int(v) for v in model.data.shape[-2:]],
        "channels": channels,
    }
    path = Path(path)
    asdf.AsdfFile(tree).write_to(path, all_array_compression="zlib")
    return path


def load_mrs_maps(path: str | Path, model=None) -> list[ChannelGeometry]:
    """
    Read an ``mrsmaps`` reference file (see :func:`write_mrs_maps`).

    Parameters
    ----------
    path : str or Path
        The ASDF file.
    model : IFUImageModel or None
        If given, the file must match its detector, band and image shape.

    Returns
    -------
    list of ChannelGeometry
        One per channel in the file, ordered by channel.

    Raises
    ------
    ReferenceFileError
        Unreadable file, missing key, inconsistent arrays, or a file made
        for another detector, band or image shape.
    """
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ReferenceFileError(f"mrsmaps reference file {path} cannot be read: {exc}") from None
    detector, letter, shape, geometries = _read_maps(str(path), stat.st_size, stat.st_mtime_ns)
    if model is not None:
        name = Path(path).name
        wanted = (
            str(model.meta.instrument.detector).upper(),
            band_letter(model.meta.instrument.band),
            tuple(model.data.shape[-2:]),
        )
        if (detector, letter, shape) != wanted:
            raise ReferenceFileError(
                f"mrsmaps reference file {name} is for {detector} band {letter} shape {shape}, "
                f"the exposure is {wanted[0]} band {wanted[1]} shape {wanted[2]}"
            )
    return geometries


@functools.lru_cache(maxsize=4)
def _read_maps(path: str, size: int, mtime_ns: int):
    import asdf

    name = Path(path).name
    try:
        with asdf.open(path, lazy_load=False, memmap=False) as handle:
            tree = handle.tree
            missing = [
                k for k in ("reftype", "detector", "band", "shape", "channels") if k not in tree
            ]
            if missing:
                raise ReferenceFileError(
                    f"mrsmaps reference file {name}: missing key {missing[0]!r}"
                )
            if tree["reftype"] != "mrsmaps":
                raise ReferenceFileError(
                    f"mrsmaps reference file {name}: reftype {tree['reftype']!r} is not 'mrsmaps'"
                )
            detector = str(tree["detector"]).upper()
            letter = band_letter(tree["band"])
            shape = tuple(int(v) for v in tree["shape"])
            geometries = []
            for key in sorted(tree["channels"], key=int):
                entry = tree["channels"][key]
                where = f"mrsmaps reference file {name}, channel {key}"
                absent = [k for k in (*_MAP_ARRAYS, "slice_beta", "slice_width") if k not in entry]
                if absent:
                    raise ReferenceFileError(f"{where}: missing key {absent[0]!r}")
                arrays = [np.asarray(entry[k]) for k in _MAP_ARRAYS]
                sizes = {a.shape for a in arrays}
                if len(sizes) != 1 or arrays[0].ndim != 1:
                    raise ReferenceFileError(f"{where}: per-pixel arrays differ in shape {sizes}")
                arrays[:3] = [a.astype(int) for a in arrays[:3]]
                arrays[3:] = [a.astype(float) for a in arrays[3:]]
                geometries.append(
                    ChannelGeometry(
                        int(key),
                        letter,
                        *arrays,
                        np.asarray(entry["slice_beta"], dtype=float),
                        float(entry["slice_width"]),
                    )
                )
    except ReferenceFileError:
        raise
    except InputDataError as exc:
        raise ReferenceFileError(f"mrsmaps reference file {name}: {exc}") from None
    except Exception as exc:
        raise ReferenceFileError(f"mrsmaps reference file {name} cannot be read: {exc}") from None
    if not geometries:
        raise ReferenceFileError(f"mrsmaps reference file {name}: 'channels' is empty")
    return detector, letter, shape, geometries


def channel_geometry(model, channel: int) -> ChannelGeometry:
    """The geometry of one channel (see :func:`mrs_geometry`)."""
    for geometry in mrs_geometry(model):
        if geometry.channel == channel:
            return geometry
    raise InputDataError(f"channel {channel} is not on this exposure's detector")


def abl_to_pixel(
    model,
    channel: int,
    alpha: np.ndarray,
    beta: np.ndarray,
    wavelength: np.ndarray,
    iterations: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Detector (x, y) of points in (alpha, beta, lambda), exact to the forward model.

    Parameters
    ----------
    model : IFUImageModel
        MRS exposure with a WCS.
    channel : int
        Channel of the points.
    alpha, beta, wavelength : ndarray
        Coordinates (arcsec, arcsec, micron); beta selects the slice.
    iterations : int
        Newton steps on the slice's forward model.

    Returns
    -------
    x, y : ndarray
        Detector coordinates (NaN where beta is outside the channel's slices).

    Notes
    -----
    The flight distortion files carry separately fitted inverse
    polynomials that close the pixel -> (alpha, beta, lambda) -> pixel loop
    only to about 0.1 px at the slice ends. Starting from them, a few Newton
    steps on the forward (alpha, lambda) model of the slice (numerical
    Jacobian) make the inverse consistent with the forward model to well
    below 1e-3 px.
    """
    geometry = channel_geometry(model, channel)
    _, transform = _detector_transform(model)
    alpha, beta, wavelength = (
        np.atleast_1d(np.asarray(v, dtype=float)) for v in (alpha, beta, wavelength)
    )
    number = np.rint((beta - geometry.slice_beta[0]) / geometry.slice_width).astype(int) + 1
    inside = (number >= 1) & (number <= geometry.n_slices)
    x = np.full(alpha.shape, np.nan)
    y = np.full(alpha.shape, np.nan)
    step = 0.01
    for slice_number in np.unique(number[inside]):
        members = inside & (number == slice_number)
        slice_model = transform.selector[100 * channel + int(slice_number)]
        pixels = geometry.slice_number == slice_number
        with np.errstate(invalid="ignore"):
            guess_x, guess_y = slice_model.inverse(
                alpha[members], beta[members], wavelength[members]
            )
        # Points the file's inverse cannot place start from the slice centre.
        guess_x = np.where(np.isfinite(guess_x), guess_x, np.median(geometry.x[pixels]))
        guess_y = np.where(np.isfinite(guess_y), guess_y, np.median(geometry.y[pixels]))
        for _ in range(iterations):
            a0, _, w0 = slice_model(guess_x, guess_y)
            ax, _, wx = slice_model(guess_x + step, guess_y)
            ay, _, wy = slice_model(guess_x, guess_y + step)
            j11, j12 = (ax - a0) / step, (ay - a0) / step
            j21, j22 = (wx - w0) / step, (wy - w0) / step
            determinant = j11 * j22 - j12 * j21
            da, dw = alpha[members] - a0, wavelength[members] - w0
            guess_x = guess_x + (j22 * da - j12 * dw) / determinant
            guess_y = guess_y + (j11 * dw - j21 * da) / determinant
        x[members], y[members] = guess_x, guess_y
    return x, y
