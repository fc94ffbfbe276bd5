"""The package's own MIRI MRS geometry, exposed as a real gwcs WCS.

The WCS has jwst's MRS frames (``detector`` -> ``alpha_beta`` -> ``v2v3`` ->
``v2v3vacorr`` -> ``world``) and the same transform structure as jwst's
``assign_wcs.miri.ifu``: a ``RegionsSelector`` whose label mapper is a slice
map on the detector (labels ``100 * channel + slice``) and whose per-slice
models give (alpha, beta, lambda); the inverse selects the slice from beta
(jwst's ``MIRI_AB2Slice``) and the channel from the wavelength. Synthetic and
real data therefore go through the same code path.

The numbers are plausible, not flight values: 21/17/16/12 slices of
0.177/0.280/0.390/0.656 arcsec, along-slice pixels of 0.196/0.196/0.245/0.273
arcsec, slices interleaved on the detector (odd-numbered positions first),
curved slice traces, a wavelength linear in row with a small along-slice
tilt, and the band wavelength ranges of the flight instrument.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.modeling import bind_bounding_box, models
from gwcs import selector
from gwcs.wcs import WCS
from stdatamodels.jwst.transforms.models import MIRI_AB2Slice

from mirispec_steps.mrs.geometry import BAND_NAMES, band_letter, detector_channels
from mirispec_steps.simulate.shared import assign_wcs_offline, spectral_frames

__all__ = [
    "BAND_WAVELENGTHS",
    "assign_real_mrs_wcs",
    "blank_mrs_model",
    "CHANNEL_LAYOUT",
    "ChannelLayout",
    "build_mrs_wcs",
    "point_at_target",
]

#: Band wavelength ranges (micron) of the flight instrument, by channel and band letter.
BAND_WAVELENGTHS = {
    "1A": (4.90, 5.74),
    "1B": (5.66, 6.63),
    "1C": (6.53, 7.65),
    "2A": (7.51, 8.77),
    "2B": (8.67, 10.13),
    "2C": (10.02, 11.70),
    "3A": (11.55, 13.47),
    "3B": (13.34, 15.57),
    "3C": (15.41, 17.98),
    "4A": (17.70, 20.95),
    "4B": (20.69, 24.48),
    "4C": (23.22, 28.10),
}
N_ROWS, N_COLUMNS = 1024, 1032
#: Row about which slice traces curve.
Y_CENTRE = 511.5


@dataclass(frozen=True)
class ChannelLayout:
    """
    Where and how one channel's slices lie on its detector.

    Attributes
    ----------
    n_slices : int
        Number of slices.
    slice_width : float
        Slice width across slices (beta, arcsec).
    alpha_pixel : float
        Along-slice pixel size (alpha, arcsec per column).
    alpha_half_width : float
        Half the field of view along the slice (arcsec).
    first_column : float
        Column of the centre of the first slice position (at ``Y_CENTRE``).
    pitch : float
        Columns between neighbouring slice positions (negative: leftwards).
    trace_slope, trace_curvature : float
        Slice centre column shift ``slope * dy + curvature * dy**2``.
    wavelength_tilt : float
        Wavelength change along the slice, in units of the row step per
        arcsec of alpha (isowavelength lines are not quite horizontal).
    """

    n_slices: int
    slice_width: float
    alpha_pixel: float
    alpha_half_width: float
    first_column: float
    pitch: float
    trace_slope: float = 0.004
    trace_curvature: float = 3.0e-6
    wavelength_tilt: float = 0.6

    @property
    def beta_zero(self) -> float:
        """Beta of the centre of slice 1."""
        return -0.5 * (self.n_slices - 1) * self.slice_width

    def slice_beta(self, number: int) -> float:
        """Beta centre of slice ``number`` (1-based)."""
        return self.beta_zero + (number - 1) * self.slice_width

    def slice_position(self, number: int) -> int:
        """Position index on the detector (slices interleave: 1, 3, 5, ... then 2, 4, ...)."""
        first_half = (self.n_slices + 1) // 2
        return 2 * (number - 1) if number <= first_half else 2 * (number - first_half) - 1

    def centre_column(self, number: int, y: np.ndarray) -> np.ndarray:
        """Column of the slice centre (alpha = 0) at row ``y``."""
        dy = np.asarray(y, dtype=float) - Y_CENTRE
        base = self.first_column + self.slice_position(number) * self.pitch
        return base + self.trace_slope * dy + self.trace_curvature * dy**2


CHANNEL_LAYOUT = {
    1: ChannelLayout(21, 0.177, 0.196, 1.65, 481.0, -22.0),
    2: ChannelLayout(17, 0.280, 0.196, 2.15, 546.0, 29.0),
    3: ChannelLayout(16, 0.390, 0.245, 2.70, 1002.0, -30.5),
    4: ChannelLayout(12, 0.656, 0.273, 3.50, 451.0, -36.5),
}
#: Focal-plane (v2, v3) of each channel's field centre (arcsec).
CHANNEL_V2V3 = {
    1: (-503.65, -318.74),
    2: (-503.38, -319.30),
    3: (-502.99, -318.41),
    4: (-502.78, -319.96),
}


def _wavelength_coefficients(channel: int, letter: str) -> tuple[float, float]:
    """``(lambda at row 0 centre, micron per row)`` of a band."""
    low, high = BAND_WAVELENGTHS[f"{channel}{letter}"]
    step = (high - low) / N_ROWS
    return low + 0.5 * step, step


def _slice_models(channel: int, letter: str, number: int):
    """Forward (x, y) -> (alpha, beta, lambda) and inverse models of one slice."""
    layout = CHANNEL_LAYOUT[channel]
    scale = layout.alpha_pixel
    base = layout.first_column + layout.slice_position(number) * layout.pitch
    slope, curvature = layout.trace_slope, layout.trace_curvature
    # alpha = scale * (x - base - slope * dy - curvature * dy^2), dy = y - Y_CENTRE
    c0 = -scale * (base - slope * Y_CENTRE + curvature * Y_CENTRE**2)
    alpha = models.Polynomial2D(
        2,
        c0_0=c0,
        c1_0=scale,
        c0_1=-scale * (slope - 2 * curvature * Y_CENTRE),
        c0_2=-scale * curvature,
    )
    lambda_zero, lambda_step = _wavelength_coefficients(channel, letter)
    tilt = layout.wavelength_tilt * lambda_step
    # lambda = lambda_zero + lambda_step * y + tilt * alpha(x, y)
    wavelength = models.Polynomial2D(
        2,
        c0_0=lambda_zero + tilt * alpha.c0_0.value,
        c1_0=tilt * alpha.c1_0.value,
        c0_1=lambda_step + tilt * alpha.c0_1.value,
        c0_2=tilt * alpha.c0_2.value,
    )
    beta = models.Const1D(layout.slice_beta(number))
    forward = models.Mapping((0, 1, 0, 0, 1)) | alpha & beta & wavelength
    # Inverse: y = (lambda - lambda_zero - tilt * alpha) / lambda_step, then
    # x = base + slope * dy + curvature * dy^2 + alpha / scale: polynomials in (alpha, lambda).
    y_of = models.Polynomial2D(
        1,
        c0_0=-lambda_zero / lambda_step,
        c1_0=-tilt / lambda_step,
        c0_1=1.0 / lambda_step,
    )
    a0, a1, a2 = y_of.c0_0.value - Y_CENTRE, y_of.c1_0.value, y_of.c0_1.value
    # dy = a0 + a1 * alpha + a2 * lambda
    x_of = models.Polynomial2D(
        2,
        c0_0=base + slope * a0 + curvature * a0**2,
        c1_0=1.0 / scale + slope * a1 + 2 * curvature * a0 * a1,
        c0_1=slope * a2 + 2 * curvature * a0 * a2,
        c2_0=curvature * a1**2,
        c0_2=curvature * a2**2,
        c1_1=2 * curvature * a1 * a2,
    )
    forward.inverse = models.Mapping((0, 2, 0, 2)) | x_of & y_of
    return forward


@functools.lru_cache(maxsize=8)
def slice_map(detector: str, letter: str) -> np.ndarray:
    """
    Slice labels (``100 * channel + slice``, 0 between slices) of every detector pixel.

    A pixel belongs to a slice when its centre lies inside the slice's
    along-slice field of view.
    """
    labels = np.zeros((N_ROWS, N_COLUMNS), dtype=np.int32)
    rows = np.arange(N_ROWS, dtype=float)
    columns = np.arange(N_COLUMNS, dtype=float)
    for channel in detector_channels(detector):
        layout = CHANNEL_LAYOUT[channel]
        half = layout.alpha_half_width / layout.alpha_pixel
        for number in range(1, layout.n_slices + 1):
            centre = layout.centre_column(number, rows)
            inside = np.abs(columns[None, :] - centre[:, None]) < half
            labels[inside] = 100 * channel + number
    labels.setflags(write=False)
    return labels


def selection_range(channel: int, letter: str) -> tuple[float, float]:
    """Wavelengths that select a channel in the inverse transforms: the band, padded.

    The along-slice tilt puts the corner pixels slightly outside the nominal
    band; the padding (a few rows) keeps them invertible.
    """
    low, high = BAND_WAVELENGTHS[f"{channel}{letter}"]
    pad = 8 * (high - low) / N_ROWS
    return (round(low - pad, 6), round(high + pad, 6))


def _detector_to_abl(detector: str, letter: str):
    """jwst's det2abl structure with the built-in slice models."""
    labels = slice_map(detector, letter)
    transforms = {}
    channel_mappers = {}
    for channel in detector_channels(detector):
        layout = CHANNEL_LAYOUT[channel]
        for number in range(1, layout.n_slices + 1):
            transforms[100 * channel + number] = _slice_models(channel, letter, number)
        mapper = MIRI_AB2Slice(layout.beta_zero, layout.slice_width, channel)
        channel_mappers[selection_range(channel, letter)] = selector.LabelMapper(
            inputs=("alpha", "beta", "lam"),
            mapper=mapper,
            inputs_mapping=models.Mapping((1,), n_inputs=3),
        )
    label_mapper = selector.LabelMapperArray(np.array(labels))
    label_mapper.inverse = selector.LabelMapperRange(
        ("alpha", "beta", "lam"), channel_mappers, models.Mapping((2,))
    )
    return selector.RegionsSelector(
        ("x", "y"), ("alpha", "beta", "lam"), label_mapper=label_mapper, selector=transforms
    ).rename("detector_to_abl")


def _abl_to_v2v3l(detector: str, letter: str):
    """Per-channel (alpha, beta) -> (v2, v3) offsets, selected by wavelength as in jwst."""
    forward, backward, ranges = {}, {}, {}
    for channel in detector_channels(detector):
        v2, v3 = CHANNEL_V2V3[channel]
        identity = models.Identity(1)
        identity._inputs = ("lam",)  # noqa: SLF001 - jwst names the pass-through input this way
        spatial = models.Shift(v2) & models.Shift(v3)
        forward[channel] = spatial & identity
        backward[channel] = spatial.inverse & models.Identity(1)
        ranges[selection_range(channel, letter)] = models.Mapping(
            (2,), name="mapping_lam"
        ) | models.Const1D(channel, name="channel #")
    mapper = selector.LabelMapperRange(("alpha", "beta", "lam"), ranges, models.Mapping((2,)))
    inverse_mapper = selector.LabelMapperRange(("v2", "v3", "lam"), ranges, models.Mapping((2,)))
    transform = selector.RegionsSelector(
        ("alpha", "beta", "lam"), ("v2", "v3", "lam"), label_mapper=mapper, selector=forward
    )
    transform.inverse = selector.RegionsSelector(
        ("v2", "v3", "lam"),
        ("alpha", "beta", "lam"),
        label_mapper=inverse_mapper,
        selector=backward,
    )
    return transform.rename("abl_to_v2v3l")


def build_mrs_wcs(model) -> WCS:
    """
    Built-in MRS WCS for the detector and band in ``model.meta.instrument``.

    Parameters
    ----------
    model : IFUImageModel
        MIRI MRS exposure with ``meta.instrument.detector``, ``band`` and the
        ``wcsinfo``/``velocity_aberration`` pointing keywords.

    Returns
    -------
    gwcs.wcs.WCS
        Frames ``detector``, ``alpha_beta``, ``v2v3``, ``v2v3vacorr``, ``world``.
    """
    from jwst.assign_wcs import pointing
    from jwst.assign_wcs.util import transform_bbox_from_shape

    detector_name = str(model.meta.instrument.detector).upper()
    letter = band_letter(model.meta.instrument.band)
    frames = spectral_frames("spectral", ("v2v3", "v2v3vacorr"))
    det2abl = _detector_to_abl(detector_name, letter)
    bind_bounding_box(det2abl, transform_bbox_from_shape((N_ROWS, N_COLUMNS), order="F"), order="F")
    wcsinfo = model.meta.wcsinfo
    scale = model.meta.velocity_aberration.scale_factor
    va_corr = pointing.dva_corr_model(
        va_scale=1.0 if scale is None else scale,
        v2_ref=wcsinfo.v2_ref,
        v3_ref=wcsinfo.v3_ref,
    ) & models.Identity(1)
    tel2sky = pointing.v23tosky(model) & models.Identity(1)
    pipeline = [
        (frames["detector"], det2abl),
        (frames["alpha_beta"], _abl_to_v2v3l(detector_name, letter)),
        (frames["v2v3"], va_corr),
        (frames["v2v3vacorr"], tel2sky),
        (frames["world"], None),
    ]
    return WCS(pipeline)


def assign_real_mrs_wcs(model, reference_dir):
    """
    The flight MRS WCS from CRDS-format files, through jwst's AssignWcsStep, offline.

    Parameters
    ----------
    model : IFUImageModel
        MIRI MRS exposure (detector, channel, band and pointing keywords set).
    reference_dir : str or Path
        Folder holding ``jwst_miri_mrs{12,34}{A,B,C}_distortion_flt9.asdf``,
        the matching ``specwcs``, a ``regions`` file and
        ``jwst_miri_mrs_wavelengthrange_flt9.asdf`` (see ``shared/data``).

    Returns
    -------
    IFUImageModel
        A copy of ``model`` with the WCS assigned.
    """
    folder = Path(reference_dir)
    channels = "".join(str(c) for c in detector_channels(model.meta.instrument.detector))
    stem = f"mrs{channels}{band_letter(model.meta.instrument.band)}"
    regions = sorted(folder.glob(f"*{stem}_regions*.asdf"))
    files = {
        "distortion": folder / f"jwst_miri_{stem}_distortion_flt9.asdf",
        "specwcs": folder / f"jwst_miri_{stem}_specwcs_flt9.asdf",
        "regions": regions[0] if regions else folder / f"jwst_miri_{stem}_regions.asdf",
        "wavelengthrange": folder / "jwst_miri_mrs_wavelengthrange_flt9.asdf",
    }
    return assign_wcs_offline(model, files)


def point_at_target(model, alpha: float, beta: float, target, reference_dir=None):
    """
    The exposure pointed so that the field position (alpha, beta) is the target's sky position.

    A dithered observation keeps its target fixed on the sky while the
    telescope moves: each exposure's pointing (``wcsinfo.ra_ref``/``dec_ref``)
    is set so that the source's field position maps to ``target``, and the WCS
    is rebuilt (built-in, or the flight one through jwst's assign_wcs when
    ``reference_dir`` is given). Three fixed-point steps bring the position
    to well below a milliarcsecond.

    Parameters
    ----------
    model : IFUImageModel
        An exposure with a WCS (not modified).
    alpha, beta : float
        The source's position in the field (arcsec).
    target : (float, float)
        RA, Dec (deg).
    reference_dir : str, Path or None
        The flight geometry files, when the exposure uses them.

    Returns
    -------
    IFUImageModel
        A copy with the new pointing, WCS and ``meta.target`` position.
    """
    letter = band_letter(model.meta.instrument.band)
    channel = int(str(model.meta.instrument.channel)[0])
    wavelength = float(np.mean(BAND_WAVELENGTHS[f"{channel}{letter}"]))
    pointed = model.copy()
    for _ in range(3):
        ra, dec, _ = pointed.meta.wcs.get_transform("alpha_beta", "world")(alpha, beta, wavelength)
        pointed.meta.wcsinfo.ra_ref += target[0] - float(ra)
        pointed.meta.wcsinfo.dec_ref += target[1] - float(dec)
        if reference_dir is not None:
            pointed = assign_real_mrs_wcs(pointed, reference_dir)
        else:
            pointed.meta.wcs = build_mrs_wcs(pointed)
    pointed.meta.target.ra, pointed.meta.target.dec = float(target[0]), float(target[1])
    return pointed


def blank_mrs_model(detector: str = "MIRIFUSHORT", band: str = "SHORT", pointing=(10.0, 20.0)):
    """
    An empty MRS slope image (``IFUImageModel``, DN/s) with the metadata assign_wcs needs.

    Parameters
    ----------
    detector : str
        ``MIRIFUSHORT`` (channels 1, 2) or ``MIRIFULONG`` (3, 4).
    band : str
        ``SHORT``, ``MEDIUM`` or ``LONG``.
    pointing : (float, float)
        RA, Dec (deg) of the reference point.

    Returns
    -------
    IFUImageModel
        Zero data of shape (1024, 1032).
    """
    from stdatamodels.jwst import datamodels

    channels = "".join(str(c) for c in detector_channels(detector))
    band_name = BAND_NAMES[band_letter(band)]
    model = datamodels.IFUImageModel((N_ROWS, N_COLUMNS))
    meta = model.meta
    meta.instrument.name = "MIRI"
    meta.instrument.detector = str(detector).upper()
    meta.instrument.channel = channels
    meta.instrument.band = band_name
    meta.exposure.type = "MIR_MRS"
    meta.exposure.start_time = 60000.0
    meta.exposure.mid_time = 60000.0
    meta.exposure.end_time = 60000.01
    meta.observation.date = "2023-01-01"
    meta.observation.time = "00:00:00"
    meta.subarray.name = "FULL"
    meta.subarray.xstart, meta.subarray.ystart = 1, 1
    meta.subarray.xsize, meta.subarray.ysize = N_COLUMNS, N_ROWS
    v2, v3 = CHANNEL_V2V3[int(channels[0])]
    wcsinfo = meta.wcsinfo
    wcsinfo.v2_ref, wcsinfo.v3_ref = v2, v3
    wcsinfo.v3yangle, wcsinfo.vparity = 0.0, -1
    wcsinfo.ra_ref, wcsinfo.dec_ref, wcsinfo.roll_ref = pointing[0], pointing[1], 0.0
    meta.pointing.ra_v1, meta.pointing.dec_v1, meta.pointing.pa_v3 = pointing[0], pointing[1], 0.0
    meta.velocity_aberration.scale_factor = 1.0
    meta.dither.primary_type = "NONE"
    model.meta.bunit_data = "DN/s"
    model.meta.bunit_err = "DN/s"
    return model
