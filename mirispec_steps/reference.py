"""Reference-file loading and validation shared by all steps.

Standard jwst reftypes keep jwst's formats (``extract1d`` JSON, ``apcorr``
FITS), so the operational CRDS files work unchanged. Every loader validates
what it reads and raises :class:`ReferenceFileError` naming the file and the
offending key instead of failing later deep inside the algorithm.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirispec_steps.adapters.mrs import band_letter
from mirispec_steps.core.mrs_psf import CubePsf, MrsPsf
from mirispec_steps.core.psf_profile import PsfTable
from mirispec_steps.core.resolution import BandResolution, ResolvingPower
from mirispec_steps.errors import ReferenceFileError

__all__ = [
    "ApertureParameters",
    "load_extract1d",
    "select_aperture",
    "ApcorrTable",
    "load_apcorr",
    "load_lrs_psf",
    "load_mrs_resolution",
    "MrsPsfReference",
    "load_mrs_psf",
    "write_mrs_psf",
    "CalibrationReferences",
    "load_calibration_references",
]

_NUMBER = (int, float)
_APERTURE_KEYS = {
    "id": (str,),
    "region_type": (str,),
    "spectral_order": (int, str),
    "dispaxis": (int,),
    "xstart": _NUMBER,
    "xstop": _NUMBER,
    "ystart": _NUMBER,
    "ystop": _NUMBER,
    "extract_width": _NUMBER,
    "src_coeff": (list,),
    "bkg_coeff": (list,),
    "bkg_fit": (str,),
    "bkg_order": (int,),
    "smoothing_length": _NUMBER,
    "independent_var": (str,),
    "use_source_posn": (bool,),
    "position_offset": _NUMBER,
}


@dataclass
class ApertureParameters:
    """
    One aperture of an extract1d reference file, validated.

    Attributes mirror the JSON keys; ``None`` means the key was absent.
    """

    id: str
    xstart: float | None = None
    xstop: float | None = None
    ystart: float | None = None
    ystop: float | None = None
    extract_width: float | None = None
    src_coeff: list | None = None
    bkg_coeff: list | None = None
    bkg_fit: str | None = None
    bkg_order: int | None = None
    smoothing_length: float | None = None
    independent_var: str = "pixel"
    use_source_posn: bool | None = None
    position_offset: float | None = None
    dispaxis: int | None = None
    source: str = ""


def _fail(path, message):
    raise ReferenceFileError(f"extract1d reference file {Path(path).name}: {message}")


def _check_coefficients(path, where, key, value):
    if not isinstance(value, list) or len(value) == 0:
        _fail(path, f"{where}: '{key}' must be a non-empty list of coefficient lists")
    if len(value) % 2:
        _fail(path, f"{where}: '{key}' must hold pairs of lower and upper limits")
    for item in value:
        if (
            not isinstance(item, list)
            or not item
            or not all(isinstance(c, _NUMBER) and not isinstance(c, bool) for c in item)
        ):
            _fail(path, f"{where}: '{key}' entries must be non-empty lists of numbers")


def load_extract1d(path: str | Path) -> list[ApertureParameters]:
    """
    Read and validate a jwst ``extract1d`` JSON reference file.

    Parameters
    ----------
    path : str or Path
        The JSON file.

    Returns
    -------
    list of ApertureParameters
        The target apertures of the file, in file order.

    Raises
    ------
    ReferenceFileError
        If the file is not JSON, has no apertures, or an aperture has an
        unknown key, a value of the wrong type, an empty region or a start
        beyond its stop.
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        _fail(path, "must be a JSON file")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(path, f"cannot be read as JSON ({exc})")
    if not isinstance(content, dict):
        _fail(path, "top level must be an object")
    apertures = content.get("apertures")
    if not isinstance(apertures, list) or not apertures:
        _fail(path, "'apertures' must be a non-empty list")
    result = []
    for index, aperture in enumerate(apertures):
        where = f"apertures[{index}]"
        if not isinstance(aperture, dict):
            _fail(path, f"{where} must be an object")
        if "id" not in aperture:
            _fail(path, f"{where} has no 'id'")
        for key, value in aperture.items():
            if key not in _APERTURE_KEYS:
                _fail(path, f"{where} has unknown key '{key}'")
            expected = _APERTURE_KEYS[key]
            if isinstance(value, bool) and bool not in expected:
                _fail(path, f"{where}: '{key}' must be {expected[0].__name__}, not bool")
            if not isinstance(value, expected):
                names = " or ".join(t.__name__ for t in expected)
                _fail(path, f"{where}: '{key}' must be {names}, got {type(value).__name__}")
        if aperture.get("region_type", "target") != "target":
            continue
        for key in ("src_coeff", "bkg_coeff"):
            if key in aperture:
                _check_coefficients(path, where, key, aperture[key])
        for start, stop in (("xstart", "xstop"), ("ystart", "ystop")):
            if start in aperture and stop in aperture and aperture[start] > aperture[stop]:
                _fail(path, f"{where}: '{start}' ({aperture[start]}) > '{stop}' ({aperture[stop]})")
        if "extract_width" in aperture and aperture["extract_width"] <= 0:
            _fail(path, f"{where}: 'extract_width' must be positive")
        if aperture.get("bkg_fit", "poly") not in ("poly", "mean", "median"):
            _fail(path, f"{where}: 'bkg_fit' must be poly, mean or median")
        if aperture.get("bkg_order", 0) < 0:
            _fail(path, f"{where}: 'bkg_order' must be >= 0")
        var = str(aperture.get("independent_var", "pixel")).lower()
        if not (var.startswith("pixel") or var.startswith("wavelength")):
            _fail(path, f"{where}: 'independent_var' must be pixel or wavelength")
        fields = {k: v for k, v in aperture.items() if k in ApertureParameters.__dataclass_fields__}
        fields["independent_var"] = "wavelength" if var.startswith("wavelength") else "pixel"
        result.append(ApertureParameters(**fields, source=path.name))
    if not result:
        _fail(path, "no aperture has region_type 'target'")
    return result


def select_aperture(apertures: list[ApertureParameters], slit_name: str) -> ApertureParameters:
    """
    Pick the aperture for a slit name, as jwst does (exact id, or "ANY").

    Parameters
    ----------
    apertures : list of ApertureParameters
        From :func:`load_extract1d`.
    slit_name : str
        The input's slit name (for MIRI LRS, its EXP_TYPE).

    Returns
    -------
    ApertureParameters
        The first matching aperture.

    Raises
    ------
    ReferenceFileError
        If no aperture matches.
    """
    for aperture in apertures:
        if aperture.id != "dummy" and aperture.id in (slit_name, "ANY") or slit_name == "ANY":
            return aperture
    ids = ", ".join(a.id for a in apertures)
    raise ReferenceFileError(
        f"extract1d reference file {apertures[0].source}: no aperture with id "
        f"'{slit_name}' or 'ANY' (ids present: {ids})"
    )


@dataclass
class ApcorrTable:
    """
    The row of a MIRI LRS apcorr reference file that applies to an exposure.

    Attributes
    ----------
    wavelength : ndarray
        Wavelength grid (micron).
    size : ndarray
        Aperture sizes (pixels, or arcsec if ``size_unit`` says so).
    apcorr : ndarray
        Corrections, shape ``(wavelength.size, size.size)``.
    size_unit : str
        Unit of ``size``.
    source : str
        File name.
    """

    wavelength: np.ndarray
    size: np.ndarray
    apcorr: np.ndarray
    size_unit: str
    source: str


def load_apcorr(path: str | Path, subarray: str) -> ApcorrTable:
    """
    Read the row of a MIRI LRS apcorr file (jwst's ``MirLrsApcorrModel``) for a subarray.

    Files are parsed once per process (keyed by path, size and modification
    time), since opening the datamodel costs more than the extraction.

    Parameters
    ----------
    path : str or Path
        The apcorr reference file.
    subarray : str
        The exposure's subarray name (FULL, SLITLESSPRISM...).

    Returns
    -------
    ApcorrTable
        Validated table.

    Raises
    ------
    ReferenceFileError
        If the file cannot be read or has no single row for ``subarray``.
    """
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ReferenceFileError(f"apcorr reference file {path} cannot be read: {exc}") from None
    table = _read_apcorr(str(path), subarray.upper(), stat.st_size, stat.st_mtime_ns)
    return dataclasses.replace(
        table,
        wavelength=table.wavelength.copy(),
        size=table.size.copy(),
        apcorr=table.apcorr.copy(),
    )


@functools.lru_cache(maxsize=16)
def _read_apcorr(path: str, subarray: str, size: int, mtime_ns: int) -> ApcorrTable:
    from stdatamodels.jwst.datamodels import MirLrsApcorrModel

    name = Path(str(path)).name
    try:
        with MirLrsApcorrModel(str(path)) as model:
            table = model.apcorr_table
            size_unit = str(model.sizeunit or "pixels")
            rows = [r for r in table if str(r["subarray"]).strip().upper() == subarray.upper()]
            if len(rows) != 1:
                raise ReferenceFileError(
                    f"apcorr reference file {name}: expected one row for subarray "
                    f"'{subarray}', found {len(rows)}"
                )
            row = rows[0]
            n_wl, n_size = int(row["nelem_wl"]), int(row["nelem_size"])
            wavelength = np.array(row["wavelength"][:n_wl], dtype=float)
            size = np.array(row["size"][:n_size], dtype=float)
            apcorr = np.array(row["apcorr"][:n_wl, :n_size], dtype=float)
    except ReferenceFileError:
        raise
    except Exception as exc:
        raise ReferenceFileError(f"apcorr reference file {name} cannot be read: {exc}") from None
    if n_wl < 1 or n_size < 1 or not np.all(np.isfinite(apcorr)) or np.any(apcorr <= 0):
        raise ReferenceFileError(f"apcorr reference file {name}: 'apcorr' must be finite and > 0")
    if np.any(np.diff(size) <= 0):
        raise ReferenceFileError(f"apcorr reference file {name}: 'size' must increase")
    return ApcorrTable(wavelength, size, apcorr, size_unit, name)


def load_lrs_psf(path: str | Path, slit_name: str | None = None) -> PsfTable:
    """
    Read an LRS ``psf`` reference file (jwst's ``SpecPsfModel``) into a :class:`PsfTable`.

    The aperture named ``slit_name``, or one named ANY/NONE, is used (as in
    jwst). Rows with a non-finite wavelength are dropped, rows are sorted by
    wavelength and each is normalised to unit sum over whole-pixel steps.

    Parameters
    ----------
    path : str or Path
        The reference file.
    slit_name : str or None
        The exposure's slit/aperture name.

    Returns
    -------
    PsfTable
        Validated table (a private copy).

    Raises
    ------
    ReferenceFileError
        If the file cannot be read, has no matching aperture, or its arrays
        are inconsistent.
    """
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ReferenceFileError(f"psf reference file {path} cannot be read: {exc}") from None
    table = _read_lrs_psf(str(path), str(slit_name).upper(), stat.st_size, stat.st_mtime_ns)
    return dataclasses.replace(
        table, data=table.data.copy(), wave=table.wave.copy(), _spline=table.spline_coefficients
    )


@functools.lru_cache(maxsize=8)
def _read_lrs_psf(path: str, slit_name: str, size: int, mtime_ns: int) -> PsfTable:
    from stdatamodels.jwst.datamodels import SpecPsfModel

    name = Path(path).name
    try:
        with SpecPsfModel(path) as model:
            chosen = None
            for aperture in model.apertures:
                aperture_name = str(aperture.name).upper()
                if aperture_name in ("NONE", "ANY") or aperture_name == slit_name:
                    chosen = aperture
                    break
            if chosen is None:
                raise ReferenceFileError(
                    f"psf reference file {name}: no aperture named '{slit_name}', ANY or NONE"
                )
            data = np.array(chosen.data, dtype=float)
            wave = np.array(chosen.wave, dtype=float)
            subpix = chosen.subpix
            center_col = chosen.center_col
    except ReferenceFileError:
        raise
    except Exception as exc:
        raise ReferenceFileError(f"psf reference file {name} cannot be read: {exc}") from None
    if data.ndim != 2 or wave.ndim != 1 or data.shape[0] != wave.size:
        raise ReferenceFileError(
            f"psf reference file {name}: PSF image {data.shape} does not match WAVE {wave.shape}"
        )
    if subpix is None or not np.isfinite(subpix) or subpix <= 0:
        raise ReferenceFileError(f"psf reference file {name}: SUBPIX must be > 0, got {subpix}")
    if center_col is None or not 0 <= center_col <= data.shape[1] - 1:
        raise ReferenceFileError(
            f"psf reference file {name}: CENTCOL {center_col} is outside the PSF image"
        )
    keep = np.isfinite(wave) & np.all(np.isfinite(data), axis=1)
    data, wave = data[keep], wave[keep]
    order = np.argsort(wave)
    data, wave = data[order], wave[order]
    norm = data.sum(axis=1) / float(subpix)
    if wave.size < 2 or np.any(norm <= 0) or np.any(np.diff(wave) <= 0):
        raise ReferenceFileError(
            f"psf reference file {name}: needs at least two distinct wavelengths with "
            "positive, finite PSF rows"
        )
    return PsfTable(data / norm[:, None], wave, float(subpix), float(center_col), name)


MRS_BANDS = tuple(f"{channel}{letter}" for channel in "1234" for letter in "ABC")


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
        :class:`~mirispec_steps.core.mrs_psf.MrsPsf` or
        :class:`~mirispec_steps.core.mrs_psf.CubePsf` and the wavelengths
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
    if not np.all(np.isfinite(data)) or np.any(data < 0):
        raise ReferenceFileError(f"{where}: 'data' must be finite and non-negative")
    if np.any(data.sum(axis=(1, 2)) <= 0):
        raise ReferenceFileError(f"{where}: a wavelength plane of 'data' holds no light")
    return CubePsf(wavelength, alpha, beta, data), (float(wavelength[0]), float(wavelength[-1]))


def load_mrs_psf(path: str | Path) -> MrsPsfReference:
    """
    Read an MRS PSF file (package reftype ``mrspsf``, ASDF).

    The tree holds ``model`` (``analytic`` or ``cube``) and ``bands``, a
    mapping from band (``1A`` ... ``4C``) to either the analytic
    parameters (``wavelength_range``, ``fwhm_slope``, ``fwhm_offset``,
    ``axis_ratio``, ``wing_fraction``, ``wing_scale``) or a cube
    (``wavelength`` ``(W,)``, ``alpha`` ``(A,)``, ``beta`` ``(B,)`` regular
    cell centres relative to the PSF centre in arcsec, ``data`` ``(W, B, A)``
    surface density).

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
    path = str(path)
    stat = os.stat(path) if os.path.exists(path) else None
    return _read_mrs_psf(path, stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1)


@functools.lru_cache(maxsize=8)
def _read_mrs_psf(path: str, size: int, mtime_ns: int) -> MrsPsfReference:
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
            return read(reference)
    except ReferenceFileError:
        raise
    except Exception as exc:
        raise ReferenceFileError(f"{reftype} reference file {name} cannot be read: {exc}") from None


def _read_photom(photom) -> dict:
    shape = photom.data.shape
    photom_dq = np.array(photom.dq, dtype=np.uint32) if photom.dq is not None else None
    if photom_dq is None or photom_dq.shape != tuple(shape):
        photom_dq = np.zeros(shape, dtype=np.uint32)
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
        "sensitivity_err": _optional_array(photom, "err", shape),
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
            lambda model: (np.array(model.data, dtype=float), _optional_array(model, "err", shape)),
        )
    else:
        fringe, fringe_err = np.ones(shape), np.zeros(shape)
    photom = _read_reference(
        datamodels.MirMrsPhotomModel, photom_path, "photom", exposure, _read_photom
    )
    return CalibrationReferences(
        fringe=fringe, fringe_err=fringe_err, fringe_applied=fringe_applied, **photom
    )


def _optional_array(model, attribute: str, shape) -> np.ndarray:
    """An optional reference array, zeros when absent or of another shape."""
    if not model.hasattr(attribute):
        return np.zeros(shape)
    values = np.asarray(getattr(model, attribute), dtype=float)
    return values if values.shape == tuple(shape) else np.zeros(shape)
