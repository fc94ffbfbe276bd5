"""Synthetic MIRI LRS exposures with known truth.

:func:`simulate_lrs` makes a fixed-slit ``cal`` (full-frame ImageModel), a
rectified ``s2d`` (SlitModel) or a slitless ``calints`` (CubeModel) with a
point source of known spectrum placed through the exposure's own WCS
(built-in geometry, or the real one from the LRS reference files), a sloped
background, nods, Poisson + read + flat noise with matching VAR_* arrays,
bad pixels and cosmic rays. :func:`write_lrs_apcorr` writes the matching
aperture-correction reference file in jwst's MIRI LRS format.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from stdatamodels.jwst import datamodels
from stdatamodels.jwst.datamodels import dqflags

from mirispec_steps.simulate.lrs_geometry import LrsGeometry, build_lrs_wcs
from mirispec_steps.simulate.psf import LrsPsf
from mirispec_steps.simulate.shared import assign_wcs_offline, shared_data_folder

__all__ = [
    "LrsTruth",
    "SimulatedLrs",
    "simulate_lrs",
    "default_spectrum",
    "write_lrs_apcorr",
    "real_lrs_reference_dir",
]

PIXEL_SCALE = 0.11  # arcsec
PIXEL_SOLID_ANGLE = (PIXEL_SCALE / 206264.806) ** 2  # sr
DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]
#: Dither offsets (arcsec along the slit) of the two nod positions.
NOD_OFFSETS = {"A": 1.0, "B": -1.0}


def default_spectrum(wavelength: np.ndarray) -> np.ndarray:
    """
    A smooth stellar-like spectrum with one emission feature, in Jy.

    Parameters
    ----------
    wavelength : ndarray
        Micron.

    Returns
    -------
    ndarray
        Flux density (Jy): 20 mJy at 5 micron falling as lambda^-1.5, plus a
        Gaussian line at 11.3 micron.
    """
    wavelength = np.asarray(wavelength, dtype=float)
    continuum = 0.020 * (wavelength / 5.0) ** -1.5
    line = 0.004 * np.exp(-0.5 * ((wavelength - 11.3) / 0.15) ** 2)
    return continuum + line


@dataclass
class LrsTruth:
    """
    What went into a simulated exposure.

    Attributes
    ----------
    rows : ndarray
        Dispersion rows (detector y, 0-indexed) covered by the spectrum.
    wavelength : ndarray
        Wavelength of each row (micron).
    flux : ndarray
        Source flux density at each row (Jy), per integration for calints
        (``(n_int, n_rows)``), else ``(n_rows,)``.
    trace : ndarray
        Source x position on each row (pixels, 0-indexed).
    negative_trace : ndarray or None
        Position of the negative nod trace, if any.
    background : ndarray
        Noise-free background image (MJy/sr), full frame of one integration.
    psf : LrsPsf
        The PSF used.
    noiseless : ndarray
        Noise-free data (MJy/sr), same shape as the model's data.
    """

    rows: np.ndarray
    wavelength: np.ndarray
    flux: np.ndarray
    trace: np.ndarray
    negative_trace: np.ndarray | None
    background: np.ndarray
    psf: LrsPsf
    noiseless: np.ndarray
    extras: dict = field(default_factory=dict)


@dataclass
class SimulatedLrs:
    """A simulated exposure and its truth."""

    model: object
    truth: LrsTruth


def real_lrs_reference_dir() -> Path | None:
    """The shared folder of real LRS reference files, if present (for tests and demos)."""
    return shared_data_folder("lrs", "jwst_miri_specwcs_0005.fits")


def _base_metadata(model, exp_type: str, subarray: tuple, nod: str | None) -> None:
    meta = model.meta
    meta.instrument.name = "MIRI"
    meta.instrument.detector = "MIRIMAGE"
    meta.instrument.filter = "P750L"
    meta.exposure.type = exp_type
    meta.exposure.start_time = 60000.0
    meta.exposure.mid_time = 60000.0
    meta.exposure.end_time = 60000.01
    meta.exposure.nints = 1
    meta.observation.date = "2024-01-01"
    meta.observation.time = "00:00:00"
    name, xstart, ystart, xsize, ysize = subarray
    meta.subarray.name = name
    meta.subarray.xstart, meta.subarray.ystart = xstart, ystart
    meta.subarray.xsize, meta.subarray.ysize = xsize, ysize
    meta.wcsinfo.v2_ref = -414.878
    meta.wcsinfo.v3_ref = -400.568
    meta.wcsinfo.vparity = -1
    meta.wcsinfo.v3yangle = 4.83
    meta.wcsinfo.ra_ref = 80.0
    meta.wcsinfo.dec_ref = -69.5
    meta.wcsinfo.roll_ref = 20.0
    meta.wcsinfo.dispersion_direction = 2
    meta.wcsinfo.spectral_order = 1
    meta.pointing.ra_v1 = 80.0
    meta.pointing.dec_v1 = -69.5
    meta.pointing.pa_v3 = 20.0
    meta.velocity_aberration.scale_factor = 1.0
    meta.dither.x_offset = NOD_OFFSETS.get(nod, 0.0) if nod else 0.0
    meta.dither.y_offset = 0.0
    meta.target.source_type = "POINT"
    meta.cal_step.assign_wcs = "COMPLETE"
    meta.cal_step.photom = "COMPLETE"
    meta.photometry.pixelarea_steradians = PIXEL_SOLID_ANGLE
    meta.photometry.pixelarea_arcsecsq = PIXEL_SCALE**2
    meta.bunit_data = "MJy/sr"
    meta.bunit_err = "MJy/sr"


def _assign_real_wcs(model, reference_dir: Path) -> None:
    """Give a full-frame fixed-slit model the real LRS WCS (jwst's AssignWcsStep, offline)."""
    files = {
        "distortion": reference_dir / "jwst_miri_imager_distortion_flt1.asdf",
        "specwcs": reference_dir / "jwst_miri_specwcs_0005.fits",
    }
    result = assign_wcs_offline(model, files)
    model.meta.wcs = result.meta.wcs
    model.meta.dither.dithered_ra = result.meta.dither.dithered_ra
    model.meta.dither.dithered_dec = result.meta.dither.dithered_dec
    model.meta.wcsinfo.s_region = result.meta.wcsinfo.s_region


def _store_dithered_position(model) -> None:
    from jwst.assign_wcs.miri import store_dithered_position

    store_dithered_position(model)


def _other_nod_trace(model, rows, wavelength) -> np.ndarray:
    """Source column on each row had the telescope been at the other nod (through the WCS)."""
    from mirispec_steps.adapters.lrs import mirrored_nod_sky_position

    sky = mirrored_nod_sky_position(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x, _ = model.meta.wcs.backward_transform(
            np.full(rows.size, sky[0]), np.full(rows.size, sky[1]), wavelength
        )
    return np.asarray(x, dtype=float)


def _source_rows_and_trace(model, sky_position, row_range=None):
    """Rows of the spectrum, their wavelength and the source column, from the WCS."""
    wcs = model.meta.wcs
    (x_low, x_high), (y_low, y_high) = (tuple(b) for b in wcs.bounding_box)
    rows = np.arange(int(np.ceil(y_low)), int(np.floor(y_high)) + 1)
    if row_range is not None:
        rows = rows[(rows >= row_range[0]) & (rows <= row_range[1])]
    x_mid = np.full(rows.size, 0.5 * (x_low + x_high))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        wavelength = np.asarray(wcs(x_mid, rows.astype(float))[2], dtype=float)
        good = np.isfinite(wavelength)
        rows, wavelength = rows[good], wavelength[good]
        x, _ = wcs.backward_transform(
            np.full(rows.size, sky_position[0]), np.full(rows.size, sky_position[1]), wavelength
        )
    ok = np.isfinite(x)
    return rows[ok], wavelength[ok], np.asarray(x)[ok]


def _paint_source(image, rows, wavelength, trace, flux_jy, psf, sign=1.0):
    """Add a point-source spectrum (MJy/sr) along a trace."""
    columns = np.arange(image.shape[-1], dtype=float)
    offsets = columns[np.newaxis, :] - trace[:, np.newaxis]
    fractions = psf.pixel_fractions(offsets, wavelength[:, np.newaxis])
    per_row_mjysr = flux_jy * 1.0e-6 / PIXEL_SOLID_ANGLE
    image[..., rows, :] += sign * np.asarray(per_row_mjysr)[..., np.newaxis] * fractions


def simulate_lrs(
    kind: str = "cal",
    *,
    spectrum: Callable[[np.ndarray], np.ndarray] = default_spectrum,
    nod: str = "A",
    nod_subtracted: bool = False,
    n_integrations: int = 1,
    geometry: LrsGeometry | None = None,
    reference_dir: str | Path | None = None,
    psf: LrsPsf | None = None,
    background: float = 40.0,
    background_slope: float = 0.1,
    exposure_time: float = 1000.0,
    electrons_per_mjysr: float = 0.5,
    read_noise: float = 30.0,
    flat_error: float = 0.002,
    noise: bool = True,
    bad_pixel_fraction: float = 0.0,
    dead_pixels: list[tuple[int, int]] | None = None,
    cosmic_rays: int = 0,
    trace_drift: float = 0.0,
    seed: int | None = None,
) -> SimulatedLrs:
    """
    Simulate a MIRI LRS exposure of a point source.

    Parameters
    ----------
    kind : {"cal", "s2d", "calints"}
        Fixed-slit full-frame cal, rectified s2d, or slitless calints.
    spectrum : callable
        Source flux density (Jy) as a function of wavelength (micron).
    nod : {"A", "B"}
        Nod position of the source (dither offset +-1 arcsec along the slit).
    nod_subtracted : bool
        Subtract the other nod (fixed slit): positive and negative traces,
        background cancelled, variances added.
    n_integrations : int
        Integrations for calints.
    geometry : LrsGeometry or None
        Built-in geometry (default: P750L-like; a rectified one for s2d).
    reference_dir : path or None
        Folder holding the real LRS reference files (jwst_miri_specwcs_0005
        and the imager distortion); cal only. The WCS is then built by jwst's
        AssignWcsStep, offline.
    psf : LrsPsf or None
        Cross-dispersion PSF (default :class:`LrsPsf`).
    background : float
        Background at 10 micron on the slit centre (MJy/sr).
    background_slope : float
        Fractional background change per 10 pixels across the slit.
    exposure_time, electrons_per_mjysr, read_noise, flat_error : float
        Noise model: electrons = signal x ``electrons_per_mjysr`` x time;
        read noise in electrons; flat-field error as a fraction of signal.
    noise : bool
        Add noise (False gives the noise-free image with the same variances).
    bad_pixel_fraction : float
        Fraction of pixels in the spectral region flagged DO_NOT_USE and set NaN.
    dead_pixels : list of (x, y)
        Extra pixels flagged DO_NOT_USE and set NaN.
    cosmic_rays : int
        Unflagged cosmic-ray hits (1000 MJy/sr plus Poisson-like scatter).
    trace_drift : float
        Extra linear shift of the true trace (pixels) from the top to the
        bottom of the spectrum, not known to the WCS.
    seed : int or None
        Random seed.

    Returns
    -------
    SimulatedLrs
        The model (fully populated datamodel with WCS) and its truth.
    """
    rng = np.random.default_rng(seed)
    psf = psf or LrsPsf()
    kind = kind.lower()
    if kind == "cal":
        model = datamodels.ImageModel((1024, 1032))
        _base_metadata(model, "MIR_LRS-FIXEDSLIT", ("FULL", 1, 1, 1032, 1024), nod)
    elif kind == "s2d":
        model = datamodels.SlitModel((387, 44))
        _base_metadata(model, "MIR_LRS-FIXEDSLIT", ("FULL", 1, 1, 1032, 1024), nod)
        model.meta.cal_step.resample = "COMPLETE"
        geometry = geometry or LrsGeometry(
            x_ref=21.5,
            y_ref=193.0,
            row_range=(-0.5, 386.5),
            half_width=22.0,
            trace_slope=0.0,
            trace_curvature=0.0,
        )
    elif kind == "calints":
        model = datamodels.CubeModel((n_integrations, 416, 72))
        _base_metadata(model, "MIR_LRS-SLITLESS", ("SLITLESSPRISM", 1, 529, 72, 416), None)
        model.meta.exposure.nints = n_integrations
        model.meta.exposure.integration_start = 1
        model.meta.exposure.integration_end = n_integrations
        model.meta.visit.tsovisit = True
        geometry = geometry or LrsGeometry(
            x_ref=37.5,
            y_ref=250.0,
            row_range=(6.5, 393.5),
            half_width=33.0,
            trace_slope=0.001,
            trace_curvature=0.0,
        )
    else:
        raise ValueError(f"kind must be cal, s2d or calints, not {kind!r}")

    if reference_dir is not None:
        if kind != "cal":
            raise ValueError("the real LRS geometry is available for fixed-slit cal only")
        _assign_real_wcs(model, Path(reference_dir))
    else:
        model.meta.wcs = build_lrs_wcs(model, geometry or LrsGeometry())
        if kind != "calints":
            _store_dithered_position(model)
    if kind == "calints":
        sky = tuple(
            float(v)
            for v in model.meta.wcs.get_transform("v2v3", "world")(
                model.meta.wcsinfo.v2_ref, model.meta.wcsinfo.v3_ref, 0.0
            )[:2]
        )
    else:
        sky = (model.meta.dither.dithered_ra, model.meta.dither.dithered_dec)

    shape2d = model.data.shape[-2:]
    rows, wavelength, trace = _source_rows_and_trace(model, sky)
    if trace_drift:
        trace = trace + trace_drift * (rows - rows[0]) / (rows[-1] - rows[0])
    flux = np.asarray(spectrum(wavelength), dtype=float)

    # Background: grows with wavelength (thermal), sloped across the slit.
    (x_low, x_high), _ = (tuple(b) for b in model.meta.wcs.bounding_box)
    x_centre = 0.5 * (x_low + x_high)
    background_image = np.zeros(shape2d)
    columns = np.arange(shape2d[1], dtype=float)
    thermal = background * (wavelength / 10.0) ** 2
    background_image[rows] = thermal[:, None] * (
        1.0 + background_slope * (columns[None, :] - x_centre) / 10.0
    )
    in_box = np.zeros(shape2d, dtype=bool)
    in_box[rows, max(0, int(np.ceil(x_low))) : int(np.floor(x_high)) + 1] = True
    background_image[~in_box] = 0.0

    source_image = np.zeros(shape2d)
    _paint_source(source_image, rows, wavelength, trace, flux, psf)
    negative_trace = None
    if nod_subtracted:
        if kind != "cal" and kind != "s2d":
            raise ValueError("nod subtraction applies to fixed-slit data")
        negative_trace = _other_nod_trace(model, rows, wavelength)
        model.meta.cal_step.bkg_subtract = "COMPLETE"
        model.meta.dither.primary_type = "ALONG-SLIT-NOD"
        if trace_drift:
            negative_trace = negative_trace + trace_drift * (rows - rows[0]) / (rows[-1] - rows[0])
        negative_image = np.zeros(shape2d)
        _paint_source(negative_image, rows, wavelength, negative_trace, flux, psf)
        negative_image[~in_box] = 0.0
    source_image[~in_box] = 0.0

    n_int = n_integrations if kind == "calints" else 1
    gain_time = electrons_per_mjysr * exposure_time
    rn_var = (read_noise / gain_time) ** 2

    def expose(signal):
        """One noisy realisation of a non-negative signal image, with its variances."""
        expected_e = np.clip(signal, 0, None) * gain_time
        if noise:
            counts = rng.poisson(np.broadcast_to(expected_e, (n_int, *shape2d))) / gain_time
            counts = counts + rng.normal(0.0, np.sqrt(rn_var), (n_int, *shape2d))
            flat = 1.0 + rng.normal(0.0, flat_error, shape2d)
            counts = counts * flat
        else:
            counts = np.broadcast_to(signal, (n_int, *shape2d)).astype(float)
        var_poisson = np.broadcast_to(np.clip(signal, 0, None) / gain_time, (n_int, *shape2d))
        var_flat = np.broadcast_to((flat_error * signal) ** 2, (n_int, *shape2d))
        return counts, var_poisson, np.full((n_int, *shape2d), rn_var), var_flat

    science = expose(source_image + background_image)
    if nod_subtracted:
        reference = expose(negative_image + background_image)
        data = science[0] - reference[0]
        var_poisson = science[1] + reference[1]
        var_rnoise = science[2] + reference[2]
        var_flat = science[3] + reference[3]
        noiseless = source_image - negative_image
    else:
        data, var_poisson, var_rnoise, var_flat = science
        noiseless = source_image + background_image
    data = np.array(data, dtype=np.float64)
    dq = np.zeros((n_int, *shape2d), dtype=np.uint32)
    dq[:, ~in_box] |= dqflags.pixel["NON_SCIENCE"]

    box_pixels = np.argwhere(in_box)
    if bad_pixel_fraction > 0:
        n_bad = int(bad_pixel_fraction * len(box_pixels))
        chosen = box_pixels[rng.choice(len(box_pixels), n_bad, replace=False)]
        dq[:, chosen[:, 0], chosen[:, 1]] |= DO_NOT_USE
    for x, y in dead_pixels or []:
        dq[:, y, x] |= DO_NOT_USE
    cr_pixels = []
    for integration in range(n_int):
        if cosmic_rays:
            hits = box_pixels[rng.choice(len(box_pixels), cosmic_rays, replace=False)]
            data[integration, hits[:, 0], hits[:, 1]] += 1000.0 * (1 + rng.random(cosmic_rays))
            cr_pixels.append(hits)
    data[(dq & DO_NOT_USE) != 0] = np.nan

    squeeze = (lambda a: a[0]) if kind != "calints" else (lambda a: a)
    model.data = squeeze(data).astype(np.float32)
    model.dq = squeeze(dq)
    model.var_poisson = squeeze(np.array(var_poisson, dtype=np.float32))
    model.var_rnoise = squeeze(np.array(var_rnoise, dtype=np.float32))
    model.var_flat = squeeze(np.array(var_flat, dtype=np.float32))
    model.err = np.sqrt(model.var_poisson + model.var_rnoise + model.var_flat).astype(np.float32)
    model.err[np.isnan(model.data)] = np.nan
    for name in ("var_poisson", "var_rnoise", "var_flat"):
        getattr(model, name)[np.isnan(model.data)] = np.nan
    if kind == "calints":
        _add_int_times(model, n_int)

    truth_flux = np.broadcast_to(flux, (n_int, flux.size)).copy() if kind == "calints" else flux
    truth = LrsTruth(
        rows=rows,
        wavelength=wavelength,
        flux=truth_flux,
        trace=trace,
        negative_trace=negative_trace,
        background=background_image,
        psf=psf,
        noiseless=squeeze(np.broadcast_to(noiseless, (n_int, *shape2d))),
        extras={"cosmic_ray_pixels": cr_pixels, "sky_position": sky},
    )
    model.meta.filename = f"mirispec_sim_lrs_{kind}.fits"
    return SimulatedLrs(model, truth)


def _add_int_times(model, n_int: int) -> None:
    dtype = (
        datamodels.CubeModel().get_dtype("int_times")
        if hasattr(datamodels.CubeModel(), "get_dtype")
        else None
    )
    if dtype is None:
        return
    table = np.zeros(n_int, dtype=dtype)
    table["integration_number"] = np.arange(1, n_int + 1)
    start = 60000.0 + np.arange(n_int) * 1e-4
    for name, offset in (("start", 0.0), ("mid", 0.5e-4), ("end", 1e-4)):
        table[f"int_{name}_MJD_UTC"] = start + offset
        table[f"int_{name}_BJD_TDB"] = start + offset + 0.0005
    model.int_times = table


def write_lrs_apcorr(
    path: str | Path,
    psf: LrsPsf | None = None,
    subarrays: tuple[str, ...] = ("FULL", "SLITLESSPRISM"),
) -> Path:
    """
    Write a MIRI LRS apcorr reference file for a PSF model (jwst's format).

    The correction for a box of ``size`` pixels at wavelength ``lambda`` is
    the inverse of the fraction of the light the box collects,
    ``1 / LrsPsf.box_fraction(size, lambda)``.

    Parameters
    ----------
    path : str or Path
        Output FITS file.
    psf : LrsPsf or None
        The PSF (default :class:`LrsPsf`).
    subarrays : tuple of str
        One table row per subarray.

    Returns
    -------
    Path
        The written file.
    """
    psf = psf or LrsPsf()
    wavelength = np.arange(4.0, 15.01, 0.25)
    sizes = np.arange(1, 41)
    grid_size, grid_wave = np.meshgrid(sizes, wavelength)
    apcorr = 1.0 / psf.box_fraction(grid_size.ravel(), grid_wave.ravel()).reshape(grid_size.shape)
    model = datamodels.MirLrsApcorrModel()
    n_wl, n_size = wavelength.size, sizes.size
    dtype = [
        ("subarray", "S17"),
        ("wavelength", "f4", (n_wl,)),
        ("nelem_wl", "i2"),
        ("size", "u1", (n_size,)),
        ("nelem_size", "i2"),
        ("apcorr", "f4", (n_wl, n_size)),
        ("apcorr_err", "f4", (n_wl, n_size)),
    ]
    table = np.zeros(len(subarrays), dtype=dtype)
    for index, name in enumerate(subarrays):
        table[index]["subarray"] = name
        table[index]["nelem_wl"] = wavelength.size
        table[index]["nelem_size"] = sizes.size
        table["wavelength"][index, : wavelength.size] = wavelength
        table["size"][index, : sizes.size] = sizes
        table["apcorr"][index, : wavelength.size, : sizes.size] = apcorr
        table["apcorr_err"][index, : wavelength.size, : sizes.size] = 0.0
    model.apcorr_table = table
    model.sizeunit = "pixels"
    model.meta.instrument.name = "MIRI"
    model.meta.exposure.type = "MIR_LRS-FIXEDSLIT"
    model.meta.reftype = "APCORR"
    model.meta.author = "mirispec_steps simulator"
    model.meta.description = "LRS aperture correction from the mirispec_steps LrsPsf model"
    model.meta.pedigree = "DUMMY"
    model.meta.useafter = "2022-01-01T00:00:00"
    path = Path(path)
    model.save(path)
    return path
