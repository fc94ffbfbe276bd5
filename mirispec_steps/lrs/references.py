"""MIRI LRS reference files: ``extract1d`` (JSON), ``apcorr`` and ``psf`` (jwst's formats).

The operational CRDS files work unchanged. Every loader validates what it
reads and raises :class:`~mirispec_steps.errors.ReferenceFileError` naming
the file and the offending key instead of failing later inside the
algorithm. Parsed files are cached by content identity and handed out
read-only (see :mod:`mirispec_steps.references`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirispec_steps.errors import ReferenceFileError
from mirispec_steps.lrs.core.psf_profile import PsfTable
from mirispec_steps.references import cached_by_content, read_only

__all__ = [
    "ApcorrTable",
    "ApertureParameters",
    "load_apcorr",
    "load_extract1d",
    "load_lrs_psf",
    "lrs_psf_model",
    "select_aperture",
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


@dataclass(frozen=True)
class ApcorrTable:
    """
    The row of a MIRI LRS apcorr reference file that applies to an exposure.

    Attributes
    ----------
    wavelength : ndarray
        Strictly increasing wavelength grid (micron; read-only).
    size : ndarray
        Strictly increasing aperture sizes (pixels, or arcsec if
        ``size_unit`` says so; read-only).
    apcorr : ndarray
        Corrections, shape ``(wavelength.size, size.size)`` (read-only).
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

    Files are parsed once per process (keyed by content identity), since
    opening the datamodel costs more than the extraction.

    Parameters
    ----------
    path : str or Path
        The apcorr reference file.
    subarray : str
        The exposure's subarray name (FULL, SLITLESSPRISM...).

    Returns
    -------
    ApcorrTable
        Validated table, wavelengths sorted (shared, read-only).

    Raises
    ------
    ReferenceFileError
        If the file cannot be read, has no single row for ``subarray``, has
        fewer than two sizes or wavelengths, repeated values on either axis,
        or corrections that are not finite and positive.
    """
    return _read_apcorr(path, subarray.upper())


@cached_by_content("apcorr", maxsize=16)
def _read_apcorr(path: str, subarray: str) -> ApcorrTable:
    from stdatamodels.jwst.datamodels import MirLrsApcorrModel

    name = Path(path).name
    try:
        with MirLrsApcorrModel(path) as model:
            table = model.apcorr_table
            size_unit = str(model.sizeunit or "pixels")
            rows = [r for r in table if str(r["subarray"]).strip().upper() == subarray]
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
    except Exception as exc:  # a datamodel open raises many types for a bad file
        raise ReferenceFileError(f"apcorr reference file {name} cannot be read: {exc}") from None
    if n_wl < 2 or n_size < 2:
        raise ReferenceFileError(
            f"apcorr reference file {name}: needs at least two wavelengths and two sizes "
            f"(nelem_wl={n_wl}, nelem_size={n_size})"
        )
    if not np.all(np.isfinite(apcorr)) or np.any(apcorr <= 0):
        raise ReferenceFileError(f"apcorr reference file {name}: 'apcorr' must be finite and > 0")
    if np.any(np.diff(size) <= 0):
        raise ReferenceFileError(f"apcorr reference file {name}: 'size' must increase strictly")
    order = np.argsort(wavelength, kind="stable")
    wavelength, apcorr = wavelength[order], apcorr[order]
    if not np.all(np.isfinite(wavelength)) or np.any(np.diff(wavelength) <= 0):
        raise ReferenceFileError(
            f"apcorr reference file {name}: 'wavelength' must be finite without repeated values"
        )
    read_only(wavelength, size, apcorr)
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
        Validated table (shared, read-only).

    Raises
    ------
    ReferenceFileError
        If the file cannot be read, has no matching aperture, or its arrays
        are inconsistent.
    """
    return _read_lrs_psf(path, str(slit_name).upper())


@cached_by_content("psf")
def _read_lrs_psf(path: str, slit_name: str) -> PsfTable:
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
    except Exception as exc:  # a datamodel open raises many types for a bad file
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
    return PsfTable.from_rows(data / norm[:, None], wave, float(subpix), float(center_col), name)


def lrs_psf_model(
    wave: np.ndarray,
    data: np.ndarray,
    subpix: float,
    center_col: float,
    description: str,
    aperture_name: str = "ANY",
    exp_types: tuple[str, ...] = ("MIR_LRS-FIXEDSLIT", "MIR_LRS-SLITLESS"),
    pedigree: str = "DUMMY",
):
    """
    An LRS ``psf`` reference (jwst's ``SpecPsfModel``), as :func:`load_lrs_psf` and jwst read it.

    Parameters
    ----------
    wave : ndarray
        ``(W,)`` increasing wavelengths (micron).
    data : ndarray
        ``(W, C)`` effective (pixel-integrated) PSF sampled ``subpix`` times per
        pixel; the pixel whose centre is ``d`` pixels from the source has the
        value at column ``center_col + d * subpix``.
    subpix : float
        Samples per pixel.
    center_col : float
        Column of the source centre.
    description : str
        ``DESCRIP``: how the PSF was made.
    aperture_name : str
        ``APERTURE`` of the PSF ("ANY" matches every slit, in jwst too).
    exp_types : tuple of str
        Exposure types the file is for (``P_EXPTYP``; the first is ``EXP_TYPE``).
    pedigree : str
        ``PEDIGREE``.

    Returns
    -------
    SpecPsfModel
        The model, not yet saved.
    """
    from stdatamodels.jwst.datamodels import SpecPsfModel

    model = SpecPsfModel()
    model.apertures.append(model.apertures.item())
    aperture = model.apertures[0]
    aperture.name = aperture_name
    aperture.subpix = float(subpix)
    aperture.center_col = float(center_col)
    aperture.center_row = float(center_col)
    aperture.data = np.asarray(data, dtype=float)
    aperture.wave = np.asarray(wave, dtype=float)
    model.meta.instrument.name = "MIRI"
    model.meta.instrument.detector = "MIRIMAGE"
    model.meta.instrument.filter = "P750L"
    model.meta.exposure.type = exp_types[0]
    model.meta.exposure.p_exptype = "|".join(exp_types) + "|"
    model.meta.reftype = "PSF"
    model.meta.author = "mirispec_steps"
    model.meta.description = description
    model.meta.pedigree = pedigree
    model.meta.useafter = "2022-01-01T00:00:00"
    return model
