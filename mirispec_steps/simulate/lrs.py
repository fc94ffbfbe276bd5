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

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from stdatamodels.jwst import datamodels

from mirispec_steps.flags import DO_NOT_USE, NON_SCIENCE
from mirispec_steps.simulate.lrs_geometry import LrsGeometry, build_lrs_wcs
from mirispec_steps.simulate.psf import CumulativeLrsPsf, LrsPsf
from mirispec_steps.simulate.shared import assign_wcs_offline

__all__ = [
    "LrsTruth",
    "SimulatedLrs",
    "default_spectrum",
    "lrs_rate_and_photom",
    "simulate_lrs",
    "write_lrs_apcorr",
]

PIXEL_SCALE = 0.11  # arcsec
PIXEL_SOLID_ANGLE = (PIXEL_SCALE / 206264.806) ** 2  # sr
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
    psf : CumulativeLrsPsf
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
    psf: CumulativeLrsPsf
    noiseless: np.ndarray
    extras: dict = field(default_factory=dict)


@dataclass
class SimulatedLrs:
    """A simulated exposure and its truth."""

    model: object
    truth: LrsTruth


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
    from mirispec_steps.lrs.exposure import mirrored_nod_sky_position, read_exposure

    sky = mirrored_nod_sky_position(read_exposure(model))
    with np.errstate(invalid="ignore"):
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
    with np.errstate(invalid="ignore"):
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
    psf: CumulativeLrsPsf | None = None,
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
    product: str = "slit",
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
    psf : CumulativeLrsPsf or None
        Cross-dispersion PSF (default :class:`LrsPsf`, the package's model;
        accuracy tests use one of ``MISMATCHED_FAMILIES``).
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
    product : {"slit", "image"}
        Model class of cal and calints: ``"slit"`` a ``SlitModel`` (2-D or
        3-D) as jwst 2.0 and later write them (calwebb_spec2 converts LRS
        exposures before calibration, recording the subarray in
        xstart/ystart/xsize/ysize); ``"image"`` the ``ImageModel`` or
        ``CubeModel`` of older products. s2d is always a ``SlitModel``.
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
    model, geometry = _blank_exposure(kind, n_integrations, nod, geometry)
    for name in ("exposure_time", "effective_exposure_time", "measurement_time"):
        setattr(model.meta.exposure, name, float(exposure_time))
    sky = _assign_geometry(model, kind, geometry, reference_dir)
    scene = _scene(
        model, sky, spectrum, psf, background, background_slope, trace_drift, nod_subtracted, kind
    )
    noise_model = _NoiseModel(
        electrons_per_mjysr * exposure_time, read_noise, flat_error, noise, rng
    )
    n_int = n_integrations if kind == "calints" else 1
    data, variances, noiseless = _expose_scene(scene, noise_model, n_int, nod_subtracted)
    dq, cr_pixels = _defects(data, scene.in_box, rng, bad_pixel_fraction, dead_pixels, cosmic_rays)
    _fill_model(model, kind, data, dq, variances)
    if kind != "s2d":
        model = _as_product(model, product)
    truth = LrsTruth(
        rows=scene.rows,
        wavelength=scene.wavelength,
        flux=np.broadcast_to(scene.flux, (n_int, scene.flux.size)).copy()
        if kind == "calints"
        else scene.flux,
        trace=scene.trace,
        negative_trace=scene.negative_trace,
        background=scene.background,
        psf=psf,
        noiseless=noiseless if kind == "calints" else noiseless[0],
        extras={"cosmic_ray_pixels": cr_pixels, "sky_position": sky},
    )
    model.meta.filename = f"mirispec_sim_lrs_{kind}.fits"
    return SimulatedLrs(model, truth)


def _as_product(model, product: str):
    """The exposure in the model class of the product format asked for (jwst's conversion)."""
    if product == "image":
        return model
    if product != "slit":
        raise ValueError(f"product must be 'slit' or 'image', not {product!r}")
    slit = datamodels.SlitModel(model)
    for name in ("xstart", "ystart", "xsize", "ysize"):
        setattr(slit, name, getattr(model.meta.subarray, name))
    slit.meta.wcs = model.meta.wcs
    return slit


def _blank_exposure(kind: str, n_integrations: int, nod: str, geometry: LrsGeometry | None):
    """An empty model of the kind asked for, with its metadata, and the built-in geometry."""
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
    return model, geometry or LrsGeometry()


def _assign_geometry(model, kind: str, geometry: LrsGeometry, reference_dir) -> tuple:
    """Give the model its WCS (built-in, or real via assign_wcs); return the source RA, Dec."""
    if reference_dir is not None:
        if kind != "cal":
            raise ValueError("the real LRS geometry is available for fixed-slit cal only")
        _assign_real_wcs(model, Path(reference_dir))
    else:
        model.meta.wcs = build_lrs_wcs(model, geometry)
        if kind != "calints":
            _store_dithered_position(model)
    if kind == "calints":
        transform = model.meta.wcs.get_transform("v2v3", "world")
        wcsinfo = model.meta.wcsinfo
        return tuple(float(v) for v in transform(wcsinfo.v2_ref, wcsinfo.v3_ref, 0.0)[:2])
    return (model.meta.dither.dithered_ra, model.meta.dither.dithered_dec)


@dataclass
class _Scene:
    """The noise-free scene of one integration (MJy/sr) and where the source lies."""

    rows: np.ndarray
    wavelength: np.ndarray
    trace: np.ndarray
    negative_trace: np.ndarray | None
    flux: np.ndarray
    source: np.ndarray
    negative: np.ndarray | None
    background: np.ndarray
    in_box: np.ndarray


def _scene(
    model, sky, spectrum, psf, background, background_slope, trace_drift, nod_subtracted, kind
) -> _Scene:
    """The source along its trace, the other nod's (if subtracted) and the sky, noise-free."""
    shape = model.data.shape[-2:]
    rows, wavelength, trace = _source_rows_and_trace(model, sky)
    drift = trace_drift * (rows - rows[0]) / (rows[-1] - rows[0]) if trace_drift else 0.0
    trace = trace + drift
    flux = np.asarray(spectrum(wavelength), dtype=float)
    # Background: grows with wavelength (thermal), sloped across the slit.
    (x_low, x_high), _ = (tuple(b) for b in model.meta.wcs.bounding_box)
    x_centre = 0.5 * (x_low + x_high)
    background_image = np.zeros(shape)
    columns = np.arange(shape[1], dtype=float)
    thermal = background * (wavelength / 10.0) ** 2
    background_image[rows] = thermal[:, None] * (
        1.0 + background_slope * (columns[None, :] - x_centre) / 10.0
    )
    in_box = np.zeros(shape, dtype=bool)
    in_box[rows, max(0, int(np.ceil(x_low))) : int(np.floor(x_high)) + 1] = True
    background_image[~in_box] = 0.0
    source_image = np.zeros(shape)
    _paint_source(source_image, rows, wavelength, trace, flux, psf)
    source_image[~in_box] = 0.0
    negative_trace = negative_image = None
    if nod_subtracted:
        if kind not in ("cal", "s2d"):
            raise ValueError("nod subtraction applies to fixed-slit data")
        negative_trace = _other_nod_trace(model, rows, wavelength) + drift
        model.meta.cal_step.bkg_subtract = "COMPLETE"
        model.meta.dither.primary_type = "ALONG-SLIT-NOD"
        negative_image = np.zeros(shape)
        _paint_source(negative_image, rows, wavelength, negative_trace, flux, psf)
        negative_image[~in_box] = 0.0
    return _Scene(
        rows, wavelength, trace, negative_trace, flux, source_image, negative_image,
        background_image, in_box,
    )  # fmt: skip


@dataclass
class _NoiseModel:
    """Poisson, read and flat-field noise of a MJy/sr image, with matching variances."""

    electrons_per_unit: float
    read_noise: float
    flat_error: float
    noise: bool
    rng: np.random.Generator

    def expose(self, signal: np.ndarray, n_int: int):
        """One realisation per integration of a non-negative signal, and its variances."""
        shape = (n_int, *signal.shape)
        gain_time = self.electrons_per_unit
        rn_var = (self.read_noise / gain_time) ** 2
        expected = np.clip(signal, 0, None)
        if self.noise:
            counts = self.rng.poisson(np.broadcast_to(expected * gain_time, shape)) / gain_time
            counts = counts + self.rng.normal(0.0, np.sqrt(rn_var), shape)
            counts = counts * (1.0 + self.rng.normal(0.0, self.flat_error, signal.shape))
        else:
            counts = np.broadcast_to(signal, shape).astype(float)
        var_poisson = np.broadcast_to(expected / gain_time, shape)
        var_flat = np.broadcast_to((self.flat_error * signal) ** 2, shape)
        return counts, [var_poisson, np.full(shape, rn_var), var_flat]


def _expose_scene(scene: _Scene, noise_model: _NoiseModel, n_int: int, nod_subtracted: bool):
    """Measured data, variances (poisson, rnoise, flat) and the noise-free truth per integration."""
    science, variances = noise_model.expose(scene.source + scene.background, n_int)
    if nod_subtracted:
        reference, reference_variances = noise_model.expose(
            scene.negative + scene.background, n_int
        )
        data = science - reference
        variances = [a + b for a, b in zip(variances, reference_variances, strict=True)]
        noiseless = scene.source - scene.negative
    else:
        data = science
        noiseless = scene.source + scene.background
    noiseless = np.broadcast_to(noiseless, (n_int, *noiseless.shape))
    return np.array(data, dtype=np.float64), variances, noiseless


def _defects(data, in_box, rng, bad_pixel_fraction, dead_pixels, cosmic_rays):
    """Flag bad pixels (NaN, DO_NOT_USE) and add unflagged cosmic rays, in place; DQ and hits."""
    n_int = data.shape[0]
    dq = np.zeros(data.shape, dtype=np.uint32)
    dq[:, ~in_box] |= NON_SCIENCE
    box_pixels = np.argwhere(in_box)
    if bad_pixel_fraction > 0:
        n_bad = int(bad_pixel_fraction * len(box_pixels))
        chosen = box_pixels[rng.choice(len(box_pixels), n_bad, replace=False)]
        dq[:, chosen[:, 0], chosen[:, 1]] |= DO_NOT_USE
    for x, y in dead_pixels or []:
        dq[:, y, x] |= DO_NOT_USE
    hits_per_integration = []
    for integration in range(n_int):
        if cosmic_rays:
            hits = box_pixels[rng.choice(len(box_pixels), cosmic_rays, replace=False)]
            data[integration, hits[:, 0], hits[:, 1]] += 1000.0 * (1 + rng.random(cosmic_rays))
            hits_per_integration.append(hits)
    data[(dq & DO_NOT_USE) != 0] = np.nan
    return dq, hits_per_integration


def _fill_model(model, kind: str, data, dq, variances) -> None:
    """The model's arrays (float32 as in jwst products), NaN wherever the data are NaN."""

    def shaped(array, dtype=np.float32):
        # Contiguous like arrays read from a file (a broadcast variance would keep its strides).
        array = np.ascontiguousarray(array, dtype=dtype)
        return array if kind == "calints" else np.ascontiguousarray(array[0])

    model.data = shaped(data)
    model.dq = shaped(dq, np.uint32)
    for name, values in zip(("var_poisson", "var_rnoise", "var_flat"), variances, strict=True):
        setattr(model, name, shaped(values))
    model.err = np.sqrt(model.var_poisson + model.var_rnoise + model.var_flat).astype(np.float32)
    missing = np.isnan(model.data)
    for name in ("err", "var_poisson", "var_rnoise", "var_flat"):
        getattr(model, name)[missing] = np.nan
    if kind == "calints":
        _add_int_times(model, data.shape[0])


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


def lrs_relative_response(wavelength: np.ndarray) -> np.ndarray:
    """The simulator's LRS relative response: smooth, 0.55-1 over 4-15 um, peak near 8 um."""
    wavelength = np.asarray(wavelength, dtype=float)
    return 1.0 - 0.45 * ((wavelength - 8.0) / 7.0) ** 2


def lrs_rate_and_photom(simulated: SimulatedLrs, photmjsr: float = 60.0):
    """
    The uncalibrated slope image (rate, DN/s, no WCS) of a simulated fixed-slit cal, and
    the ``photom`` reference (jwst's ``MirLrsPhotomModel``) that calibrates it back.

    jwst's photom multiplies LRS slopes by ``PHOTMJSR * relresponse(lambda)``
    with each pixel's wavelength from the WCS; the rate is the cal divided by
    exactly that, so calwebb_spec2 (assign_wcs, photom) on the rate returns the
    simulated cal.

    Parameters
    ----------
    simulated : SimulatedLrs
        A fixed-slit ``cal`` simulation (any product format).
    photmjsr : float
        The scalar conversion (MJy/sr per DN/s).

    Returns
    -------
    (ImageModel, MirLrsPhotomModel)
        The rate (as a level-2a product: assign_wcs and photom not run) and the reference.
    """
    model = simulated.model
    if model.data.ndim != 2 or str(model.meta.cal_step.resample).upper() == "COMPLETE":
        raise ValueError("lrs_rate_and_photom needs a fixed-slit cal simulation")
    (x_low, x_high), (y_low, y_high) = (tuple(b) for b in model.meta.wcs.bounding_box)
    rows = np.arange(int(np.ceil(y_low)), int(np.floor(y_high)) + 1)
    columns = np.arange(max(int(np.ceil(x_low)), 0), int(np.floor(x_high)) + 1)
    y, x = np.meshgrid(rows, columns, indexing="ij")
    with np.errstate(invalid="ignore"):
        wavelength = np.asarray(model.meta.wcs(x.astype(float), y.astype(float))[2])
    conversion = np.full(model.data.shape, np.nan)
    conversion[y, x] = photmjsr * lrs_relative_response(wavelength)
    scale = np.where(np.isfinite(conversion), 1.0 / conversion, 0.0)
    rate = datamodels.ImageModel(model.data.shape)
    rate.update(model, only="PRIMARY")
    rate.meta.wcsinfo = model.meta.wcsinfo.instance
    rate.meta.dither = model.meta.dither.instance
    rate.meta.target.source_type = None  # srctype decides, as in the archive's rate files
    rate.data = (np.nan_to_num(model.data) * scale).astype(np.float32)
    for name in ("var_poisson", "var_rnoise", "var_flat"):
        setattr(rate, name, (np.nan_to_num(getattr(model, name)) * scale**2).astype(np.float32))
    rate.err = np.sqrt(rate.var_poisson + rate.var_rnoise + rate.var_flat).astype(np.float32)
    rate.dq = np.array(model.dq, dtype=np.uint32)
    missing = np.isnan(model.data)
    for name in ("data", "err", "var_poisson", "var_rnoise", "var_flat"):
        getattr(rate, name)[missing] = np.nan
    rate.meta.bunit_data = rate.meta.bunit_err = "DN/s"
    for step in ("assign_wcs", "photom", "srctype", "resample", "extract_1d"):
        setattr(rate.meta.cal_step, step, None)
    rate.meta.photometry.pixelarea_steradians = None
    rate.meta.photometry.pixelarea_arcsecsq = None
    rate.meta.wcs = None
    rate.meta.filename = "mirispec_sim_lrs_rate.fits"

    grid = np.linspace(3.5, 15.5, 241)
    table = np.zeros(
        1,
        dtype=[
            ("filter", "S12"), ("subarray", "S17"), ("photmjsr", "<f4"), ("uncertainty", "<f4"),
            ("nelem", "<i2"), ("wavelength", "<f4", (grid.size,)),
            ("relresponse", "<f4", (grid.size,)), ("reluncertainty", "<f4", (grid.size,)),
        ],
    )  # fmt: skip
    table[0] = ("P750L", "FULL", photmjsr, 0.0, grid.size, grid, lrs_relative_response(grid), 0)
    photom = datamodels.MirLrsPhotomModel()
    photom.phot_table = table
    photom.meta.instrument.name = "MIRI"
    photom.meta.instrument.detector = "MIRIMAGE"
    photom.meta.instrument.filter = "P750L"
    photom.meta.exposure.type = "MIR_LRS-FIXEDSLIT"
    photom.meta.reftype = "PHOTOM"
    photom.meta.author = "mirispec_steps simulator"
    photom.meta.description = "LRS photom matching the mirispec_steps simulator's response"
    photom.meta.pedigree = "DUMMY"
    photom.meta.useafter = "2022-01-01T00:00:00"
    photom.meta.photometry.pixelarea_steradians = PIXEL_SOLID_ANGLE
    photom.meta.photometry.pixelarea_arcsecsq = PIXEL_SCALE**2
    return rate, photom


def write_lrs_apcorr(
    path: str | Path,
    psf: CumulativeLrsPsf | None = None,
    subarrays: tuple[str, ...] = ("FULL", "SLITLESSPRISM"),
) -> Path:
    """
    Write a MIRI LRS apcorr reference file for a PSF model (jwst's format).

    The correction for a box of ``size`` pixels at wavelength ``lambda`` is
    the inverse of the fraction of the light the box collects,
    ``1 / psf.box_fraction(size, lambda)``.

    Parameters
    ----------
    path : str or Path
        Output FITS file.
    psf : CumulativeLrsPsf or None
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
    model.meta.description = f"LRS aperture correction from the PSF {type(psf).__name__}"
    model.meta.pedigree = "DUMMY"
    model.meta.useafter = "2022-01-01T00:00:00"
    path = Path(path)
    model.save(path)
    return path
