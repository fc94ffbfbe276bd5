"""The ``mrsmaps`` reference type: an exposure's MRS geometry saved for data without a WCS.

An ``mrsmaps`` file (ASDF) holds, per channel, the flat per-pixel arrays of
:class:`~mirispec_steps.mrs.geometry.ChannelGeometry`. Steps use it through
``--override_mrsmaps`` when the input has no WCS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirispec_steps.errors import InputDataError, ReferenceFileError
from mirispec_steps.mrs.geometry import ChannelGeometry, band_letter, mrs_geometry
from mirispec_steps.references import cached_by_content

__all__ = ["load_mrs_maps", "write_mrs_maps"]

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
    detector, letter, shape, geometries = _read_maps(path)
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
    return list(geometries)


@cached_by_content("mrsmaps", maxsize=4)
def _read_maps(path: str):
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
    return detector, letter, shape, tuple(geometries)
