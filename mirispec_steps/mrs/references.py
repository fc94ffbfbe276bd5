"""MRS reference files: ``mrsresol``, ``mrspsf`` (ours); ``fringe``, ``photom``, ``mrsptcorr``.

Every loader validates what it reads and raises
:class:`~mirispec_steps.errors.ReferenceFileError` naming the file and the
key. Parsed package files are cached by content identity and shared
read-only (see :mod:`mirispec_steps.references`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirispec_steps.errors import ReferenceFileError
from mirispec_steps.mrs.core.psf import CubePsf, MrsPsf
from mirispec_steps.mrs.core.resolution import BandResolution, ResolvingPower
from mirispec_steps.mrs.geometry import MRS_BANDS, band_letter
from mirispec_steps.references import cached_by_content

__all__ = [
    "CalibrationReferences",
    "band_resolving_power",
    "MRS_PSF_PARAMETERS",
    "MrsPsfReference",
    "load_calibration_references",
    "load_mrs_psf",
    "load_mrs_resolution",
    "load_spectral_leak",
    "write_mrs_psf",
]


def _band_entries(reftype: str, name: str, bands) -> list[tuple[str, object, str]]:
    """The ``bands`` mapping of an MRS reference file, checked: (band, entry, where) per band."""
    if not isinstance(bands, dict) or not bands:
        raise ReferenceFileError(f"{reftype} reference file {name}: no 'bands' mapping")
    entries = []
    for band, entry in bands.items():
        where = f"{reftype} reference file {name}, band {band!r}"
        if band not in MRS_BANDS:
            raise ReferenceFileError(f"{where}: not an MRS band ({', '.join(MRS_BANDS)})")
        entries.append((band, entry, where))
    return entries


def load_mrs_resolution(path: str | Path) -> ResolvingPower:
    """
    Read an MRS resolving-power file (package reftype ``mrsresol``, JSON).

    The file holds, under ``bands``, one entry per band ``1A`` ... ``4C``
    with ``wavelength_range`` ``[low, high]`` (micron),
    ``reference_wavelength`` ``lambda0`` and ``coefficients``
    ``[c0, c1, c2]`` of ``R = c0 + c1 (lambda - lambda0) + c2 (lambda - lambda0)^2``.

    Parameters
    ----------
    path : str or Path
        The JSON file.

    Returns
    -------
    ResolvingPower
        Validated coefficients for the bands in the file.

    Raises
    ------
    ReferenceFileError
        Unreadable file, unknown band, missing key, or a resolving power
        that is not positive across its band.
    """
    name = Path(path).name
    try:
        with open(path) as stream:
            content = json.load(stream)
    except (OSError, ValueError) as exc:
        raise ReferenceFileError(f"mrsresol reference file {name} cannot be read: {exc}") from None
    bands = content.get("bands") if isinstance(content, dict) else None
    result = {}
    for band, entry, where in _band_entries("mrsresol", name, bands):
        try:
            low, high = (float(v) for v in entry["wavelength_range"])
            reference = float(entry["reference_wavelength"])
            coefficients = tuple(float(v) for v in entry["coefficients"])
        except KeyError as exc:
            raise ReferenceFileError(f"{where}: missing key {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ReferenceFileError(f"{where}: malformed value ({exc})") from None
        if not (0 < low < high) or not coefficients:
            raise ReferenceFileError(f"{where}: 'wavelength_range' must be 0 < low < high")
        band_resolution = BandResolution((low, high), reference, coefficients)
        if np.any(~(band_resolution(np.linspace(low, high, 50)) > 0)):
            raise ReferenceFileError(f"{where}: 'coefficients' give R <= 0 inside the band")
        result[band] = band_resolution
    return ResolvingPower(result, name)


def band_resolving_power(resolution: ResolvingPower, band: str, low: float, high: float):
    """
    The resolving power of a band, checked to be usable over the data's wavelengths.

    Parameters
    ----------
    resolution : ResolvingPower
        From :func:`load_mrs_resolution`.
    band : str
        ``1A`` ... ``4C``.
    low, high : float
        Wavelengths the data cover (micron).

    Returns
    -------
    BandResolution
        ``R(lambda)``.

    Raises
    ------
    ReferenceFileError
        The band is missing, or R is not finite and positive over the data.
    """
    if band not in resolution.bands:
        raise ReferenceFileError(
            f"mrsresol reference file {resolution.source} has no band {band} (it holds "
            f"{', '.join(sorted(resolution.bands)) or 'none'}); pass --override_mrsresol"
        )
    power = resolution[band](np.linspace(low, high, 1000))
    if not np.all(np.isfinite(power) & (power > 0)):
        raise ReferenceFileError(
            f"mrsresol reference file {resolution.source}, band {band}: the resolving power is "
            f"not positive everywhere in the data's {low:.4f}-{high:.4f} um"
        )
    return resolution[band]


#: Negative cells of a cube plane may hold at most this share of its total (a measured PSF
#: dips below zero only where pixels do not resolve it).
MAX_NEGATIVE_LIGHT = 0.25
#: Bounds of a cube's optional ``enclosed`` share of the light (a measured normalisation).
MIN_ENCLOSED, MAX_ENCLOSED = 0.5, 1.1
#: Parameters of an analytic ``mrspsf`` band entry (see :class:`MrsPsf`).
MRS_PSF_PARAMETERS = ("fwhm_slope", "fwhm_offset", "axis_ratio", "wing_fraction", "wing_scale")


@dataclass
class MrsPsfReference:
    """
    The MRS PSF model per band (package reftype ``mrspsf``).

    Attributes
    ----------
    bands : dict
        Band name (``1A`` ...) to ``(psf, (low, high))``: a
        :class:`~mirispec_steps.mrs.core.psf.MrsPsf` or
        :class:`~mirispec_steps.mrs.core.psf.CubePsf` and the wavelengths
        (micron) it covers.
    kind : str
        ``analytic`` or ``cube``.
    source : str
        File name, for messages.
    """

    bands: dict
    kind: str
    source: str

    def for_band(self, band: str, low: float, high: float):
        """
        The PSF of a band, checked to cover ``[low, high]``.

        Parameters
        ----------
        band : str
            ``1A`` ... ``4C``.
        low, high : float
            Wavelengths to be extracted (micron).

        Returns
        -------
        MrsPsf or CubePsf
            The band's PSF.

        Raises
        ------
        ReferenceFileError
            The band is missing or its wavelengths do not cover the range.
        """
        if band not in self.bands:
            raise ReferenceFileError(
                f"mrspsf reference file {self.source} has no PSF for band {band} "
                f"(it holds {', '.join(sorted(self.bands)) or 'none'}); pass "
                "--override_mrspsf=<file covering the band>"
            )
        psf, (first, last) = self.bands[band]
        if low < first or high > last:
            raise ReferenceFileError(
                f"mrspsf reference file {self.source}, band {band}: the PSF covers "
                f"{first:.4f}-{last:.4f} um, the data {low:.4f}-{high:.4f} um"
            )
        return psf


def _regular_axis(where: str, key: str, values) -> np.ndarray:
    axis = np.asarray(values, dtype=float)
    if axis.ndim != 1 or axis.size < 2 or not np.all(np.isfinite(axis)):
        raise ReferenceFileError(f"{where}: {key!r} must be a finite 1-D array of 2+ values")
    steps = np.diff(axis)
    if np.any(steps <= 0) or (key != "wavelength" and np.ptp(steps) > 1e-6 * abs(steps[0])):
        kind = "increasing" if key == "wavelength" else "increasing and regularly spaced"
        raise ReferenceFileError(f"{where}: {key!r} must be {kind}")
    return axis


def _mrs_psf_band(where: str, kind: str, entry) -> tuple:
    if not isinstance(entry, dict):
        raise ReferenceFileError(f"{where}: entry must be a mapping")
    try:
        if kind == "analytic":
            low, high = (float(v) for v in entry["wavelength_range"])
            values = {key: float(entry[key]) for key in MRS_PSF_PARAMETERS}
            if not 0 < low < high:
                raise ReferenceFileError(f"{where}: 'wavelength_range' must be 0 < low < high")
            psf = MrsPsf(**values)
            if np.any(psf.fwhm(np.array([low, high])) <= 0) or not (
                values["axis_ratio"] > 0
                and 0 <= values["wing_fraction"] < 1
                and values["wing_scale"] > 0
            ):
                raise ReferenceFileError(
                    f"{where}: needs FWHM > 0 across the band, axis_ratio > 0, "
                    "0 <= wing_fraction < 1 and wing_scale > 0"
                )
            return psf, (low, high)
        wavelength = _regular_axis(where, "wavelength", entry["wavelength"])
        alpha = _regular_axis(where, "alpha", entry["alpha"])
        beta = _regular_axis(where, "beta", entry["beta"])
        data = np.asarray(entry["data"], dtype=float)
        enclosed = entry.get("enclosed")
        enclosed = None if enclosed is None else np.asarray(enclosed, dtype=float)
    except KeyError as exc:
        raise ReferenceFileError(f"{where}: missing key {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ReferenceFileError(f"{where}: malformed value ({exc})") from None
    expected = (wavelength.size, beta.size, alpha.size)
    if data.shape != expected:
        raise ReferenceFileError(
            f"{where}: 'data' has shape {data.shape}, expected (wavelength, beta, alpha) "
            f"= {expected}"
        )
    if not np.all(np.isfinite(data)):
        raise ReferenceFileError(f"{where}: 'data' must be finite")
    totals = data.sum(axis=(1, 2))
    if np.any(totals <= 0):
        raise ReferenceFileError(f"{where}: a wavelength plane of 'data' holds no light")
    negative = np.clip(data, None, 0.0).sum(axis=(1, 2))
    if np.any(-negative > MAX_NEGATIVE_LIGHT * totals):
        raise ReferenceFileError(
            f"{where}: negative cells hold more than {100 * MAX_NEGATIVE_LIGHT:.0f}% of a "
            "wavelength plane's light"
        )
    if enclosed is not None and not (
        enclosed.shape == wavelength.shape
        and np.all(np.isfinite(enclosed))
        and np.all((enclosed > MIN_ENCLOSED) & (enclosed <= MAX_ENCLOSED))
    ):
        raise ReferenceFileError(
            f"{where}: 'enclosed' must hold one share of the light per wavelength plane, "
            f"between {MIN_ENCLOSED:g} and {MAX_ENCLOSED:g}"
        )
    return CubePsf(wavelength, alpha, beta, data, enclosed), (
        float(wavelength[0]),
        float(wavelength[-1]),
    )


def load_mrs_psf(path: str | Path) -> MrsPsfReference:
    """
    Read an MRS PSF file (package reftype ``mrspsf``, ASDF).

    The tree holds ``model`` (``analytic`` or ``cube``) and ``bands``, a
    mapping from band (``1A`` ... ``4C``) to either the analytic
    parameters (``wavelength_range``, ``fwhm_slope``, ``fwhm_offset``,
    ``axis_ratio``, ``wing_fraction``, ``wing_scale``) or a cube
    (``wavelength`` ``(W,)``, ``alpha`` ``(A,)``, ``beta`` ``(B,)`` regular
    cell centres relative to the PSF centre in arcsec, ``data`` ``(W, B, A)``
    surface density, and optionally ``enclosed`` ``(W,)``, the share of the
    light inside the cube, measured on a star of known spectrum).

    Parameters
    ----------
    path : str or Path
        The ASDF file.

    Returns
    -------
    MrsPsfReference
        Validated PSF per band.

    Raises
    ------
    ReferenceFileError
        Unreadable file, unknown model or band, missing key, or values
        that cannot describe a PSF.
    """
    return _read_mrs_psf(path)


@cached_by_content("mrspsf")
def _read_mrs_psf(path: str) -> MrsPsfReference:
    import asdf

    name = Path(path).name
    try:
        with asdf.open(path, lazy_load=False, memmap=False) as handle:
            tree = {key: handle.tree[key] for key in ("model", "bands") if key in handle.tree}
            kind = tree.get("model")
            bands = tree.get("bands")
            if isinstance(bands, dict):
                bands = {
                    band: {key: np.array(value) for key, value in entry.items()}
                    if isinstance(entry, dict)
                    else entry
                    for band, entry in bands.items()
                }
    except Exception as exc:  # asdf raises many types for a bad file
        raise ReferenceFileError(f"mrspsf reference file {name} cannot be read: {exc}") from None
    if kind not in ("analytic", "cube"):
        raise ReferenceFileError(
            f"mrspsf reference file {name}: 'model' must be 'analytic' or 'cube', got {kind!r}"
        )
    result = {
        band: _mrs_psf_band(where, kind, entry)
        for band, entry, where in _band_entries("mrspsf", name, bands)
    }
    return MrsPsfReference(result, kind, name)


def write_mrs_psf(path: str | Path, bands: dict, kind: str = "analytic", **meta) -> Path:
    """
    Write an ``mrspsf`` reference file.

    Parameters
    ----------
    path : str or Path
        Target ASDF file.
    bands : dict
        Band to entry, as described in :func:`load_mrs_psf`.
    kind : str
        ``analytic`` or ``cube``.
    **meta
        Extra metadata (``description``, ``author``, ``pedigree`` ...).

    Returns
    -------
    Path
        The file written (validated by reading it back).
    """
    import asdf

    path = Path(path)
    tree = {
        "meta": {"reftype": "MRSPSF", "instrument": "MIRI", **meta},
        "model": kind,
        "bands": bands,
    }
    asdf.AsdfFile(tree).write_to(path, all_array_compression="zlib")
    load_mrs_psf(path)
    return path


@dataclass
class CalibrationReferences:
    """
    The ``fringe`` and ``photom`` reference content the calibration needs.

    Attributes
    ----------
    fringe : ndarray
        Fringe flat (the slopes are divided by it).
    fringe_err : ndarray
        Its uncertainty.
    sensitivity : ndarray
        Photom conversion ((MJy/sr)/(DN/s)).
    sensitivity_err : ndarray
        Its uncertainty.
    photom_dq : ndarray
        Photom DQ, OR-ed into the science DQ (as jwst does).
    time_tables : dict
        Power-law time-dependence tables by channel (empty when absent).
    pixel_area_sr, pixel_area_arcsec2 : float or None
        ``PIXAR_SR`` and ``PIXAR_A2`` of the photom file.
    conversion_megajanskys : float or None
        The file's ``PHOTMJSR``.
    fringe_applied : bool
        False when no fringe reference was given (``N/A``).
    """

    fringe: np.ndarray
    fringe_err: np.ndarray
    sensitivity: np.ndarray
    sensitivity_err: np.ndarray
    photom_dq: np.ndarray
    time_tables: dict
    pixel_area_sr: float | None
    pixel_area_arcsec2: float | None
    conversion_megajanskys: float | None
    fringe_applied: bool = True


def _check_reference_matches(reference, model, reftype: str, name: str) -> None:
    """Refuse a reference made for another detector/band or image shape."""
    shape = tuple(model.data.shape[-2:])
    if tuple(reference.data.shape) != shape:
        raise ReferenceFileError(
            f"{reftype} reference file {name}: SCI shape {tuple(reference.data.shape)} "
            f"does not match the exposure's {shape}"
        )
    instrument = reference.meta.instrument
    detector = getattr(instrument, "detector", None)
    if detector and str(detector).upper() != str(model.meta.instrument.detector).upper():
        raise ReferenceFileError(
            f"{reftype} reference file {name} is for {detector}, "
            f"the exposure is {model.meta.instrument.detector}"
        )
    band = getattr(instrument, "band", None)
    if band and str(band).upper() not in ("ANY", "N/A"):
        if band_letter(band) != band_letter(model.meta.instrument.band):
            raise ReferenceFileError(
                f"{reftype} reference file {name} is for band {band}, "
                f"the exposure is {model.meta.instrument.band}"
            )


def _read_reference(model_class, path: str, reftype: str, exposure, read):
    """Open a jwst reference model, check it matches the exposure, and ``read`` it."""
    name = Path(path).name
    try:
        with model_class(path) as reference:
            _check_reference_matches(reference, exposure, reftype, name)
            return read(reference, name)
    except ReferenceFileError:
        raise
    except Exception as exc:
        raise ReferenceFileError(f"{reftype} reference file {name} cannot be read: {exc}") from None


def _read_photom(photom, name: str) -> dict:
    shape = photom.data.shape
    photom_dq = _optional_array(photom, "dq", shape, "photom", name).astype(np.uint32)
    tables = {}
    for channel in (1, 2, 3, 4):
        try:
            table = photom.getarray_noinit(f"timecoeff_powerlaw_ch{channel}")
        except AttributeError:
            continue
        tables[channel] = {
            column: np.asarray(table[column], dtype=float)
            for column in ("binwave", "alpha", "year1value", "tsoft", "t0")
        }
    return {
        "sensitivity": np.array(photom.data, dtype=float),
        "sensitivity_err": _optional_array(photom, "err", shape, "photom", name),
        "photom_dq": photom_dq,
        "time_tables": tables,
        "pixel_area_sr": photom.meta.photometry.pixelarea_steradians,
        "pixel_area_arcsec2": photom.meta.photometry.pixelarea_arcsecsq,
        "conversion_megajanskys": photom.meta.photometry.conversion_megajanskys,
    }


def load_calibration_references(exposure, fringe_path: str, photom_path: str):
    """
    Read and check the MRS ``fringe`` and ``photom`` references for an exposure.

    Parameters
    ----------
    exposure : IFUImageModel
        The exposure (detector, band and shape must match).
    fringe_path, photom_path : str
        Reference files (``N/A`` for fringe skips the fringe flat).

    Returns
    -------
    CalibrationReferences
        Arrays as float64 copies.

    Raises
    ------
    ReferenceFileError
        Unreadable file, or one made for another detector, band or shape.
    """
    from stdatamodels.jwst import datamodels

    shape = exposure.data.shape[-2:]
    fringe_applied = fringe_path not in (None, "N/A")
    if fringe_applied:
        fringe, fringe_err = _read_reference(
            datamodels.FringeModel,
            fringe_path,
            "fringe",
            exposure,
            lambda model, name: (
                np.array(model.data, dtype=float),
                _optional_array(model, "err", shape, "fringe", name),
            ),
        )
    else:
        fringe, fringe_err = np.ones(shape), np.zeros(shape)
    photom = _read_reference(
        datamodels.MirMrsPhotomModel, photom_path, "photom", exposure, _read_photom
    )
    return CalibrationReferences(
        fringe=fringe, fringe_err=fringe_err, fringe_applied=fringe_applied, **photom
    )


def _optional_array(model, attribute: str, shape, reftype: str, name: str) -> np.ndarray:
    """An optional reference array: zeros when absent, an error when of another shape."""
    if not model.hasattr(attribute) or getattr(model, attribute) is None:
        return np.zeros(shape)
    values = np.asarray(getattr(model, attribute), dtype=float)
    if values.size == 0:
        return np.zeros(shape)
    if values.shape != tuple(shape):
        raise ReferenceFileError(
            f"{reftype} reference file {name}: {attribute.upper()} has shape {values.shape}, "
            f"SCI has {tuple(shape)}"
        )
    return values


def load_spectral_leak(path: str | Path):
    """
    Read and check the leak table of an ``mrsptcorr`` reference (jwst's spectral_leak format).

    Parameters
    ----------
    path : str or Path
        ``MirMrsPtCorrModel`` file.

    Returns
    -------
    LeakCurve
        Wavelength (increasing), leak fraction and its error (zero when the
        table has no ``err_leak``).

    Raises
    ------
    ReferenceFileError
        Unreadable file, no ``leakcor_table``, or a table that is not
        finite, increasing in wavelength, with fractions in [0, 1).
    """
    from stdatamodels.jwst import datamodels

    from mirispec_steps.mrs.core.spectral_leak import LeakCurve

    name = Path(path).name
    try:
        with datamodels.MirMrsPtCorrModel(str(path)) as reference:
            table = reference.leakcor_table
            columns = {
                key.lower(): np.asarray(table[key], dtype=float) for key in table.dtype.names
            }
    except Exception as exc:
        raise ReferenceFileError(f"mrsptcorr reference file {name} cannot be read: {exc}") from None
    where = f"mrsptcorr reference file {name}, leakcor_table"
    for key in ("wavelength", "frac_leak"):
        if key not in columns:
            raise ReferenceFileError(f"{where}: no {key!r} column")
    wavelength, fraction = columns["wavelength"], columns["frac_leak"]
    error = columns.get("err_leak", np.zeros(wavelength.size))
    if wavelength.size < 2:
        raise ReferenceFileError(f"{where}: fewer than two rows")
    if not (np.all(np.isfinite(wavelength)) and np.all(np.isfinite(fraction))):
        raise ReferenceFileError(f"{where}: non-finite values")
    if np.any(np.diff(wavelength) <= 0):
        raise ReferenceFileError(f"{where}: 'wavelength' must increase")
    if np.any((fraction < 0) | (fraction >= 1)):
        raise ReferenceFileError(f"{where}: 'frac_leak' must be in [0, 1)")
    return LeakCurve(wavelength, fraction, np.nan_to_num(np.abs(error)))
