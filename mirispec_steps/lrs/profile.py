"""
The spatial profile the LRS optimal extraction fits: the PSF reference, or measured from the data.

``profile="psf"`` uses the ``psf`` reference file as it is. ``"empirical"``
measures the profile from the data (the integration-mean image for a time
series) as the reference plus a smooth correction
(:mod:`mirispec_steps.lrs.core.empirical_profile`), fitted together with the
row fluxes until they settle. ``"auto"`` (default) takes the empirical profile
when the source is bright enough to define it, the reference otherwise.

Criterion of ``auto``: the median over rows of the flux S/N of the PSF fit to
the (integration-mean) image is at least :data:`EMPIRICAL_MIN_SNR`, and at
least :data:`EMPIRICAL_MIN_ROWS` rows have a fit. Below that the profile's own
noise and the noise of the fluxes it is scaled by bias it (measured in the
tests and the benchmark; see docs/lrs_optimal_extract.rst).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from mirispec_steps.errors import InputDataError
from mirispec_steps.lrs.core.empirical_profile import (
    ProfileBasis,
    ProfileFitter,
    ProfileLayout,
    ProfileSolution,
)
from mirispec_steps.lrs.core.psf_profile import evaluate_profile

__all__ = ["EMPIRICAL_MIN_ROWS", "EMPIRICAL_MIN_SNR", "ProfileChoice", "choose_profiles"]

log = logging.getLogger(__name__)

#: Median per-row flux S/N (integration-mean image) from which ``auto`` measures the profile.
EMPIRICAL_MIN_SNR = 20.0
#: Rows with a fit needed for an empirical profile.
EMPIRICAL_MIN_ROWS = 40
#: Knots of the profile in the offset from the trace: ``(outer edge, spacing)`` in pixels,
#: fine on the core, coarser on the rings and wings.
KNOT_ZONES = ((3.0, 0.4), (8.0, 1.0), (np.inf, 2.0))
#: Rows per B-spline interval of the profile along dispersion.
ROWS_PER_INTERVAL = 25
#: Gauss-Newton steps of the profile fit at most, and the flux change that ends them (in
#: units of each row's flux error, 95th percentile of the rows).
MAX_ITERATIONS = 4
FLUX_TOLERANCE = 0.05
#: Half width of the measured profile (pixels); it is measured on the whole data region,
#: whose pixels beyond it are where the sky is told apart from the source's wings.
DEFAULT_PROFILE_HALF_WIDTH = 20.0
#: In a nod pair the measured profile reaches this fraction of the traces' separation.
NOD_SUPPORT_FRACTION = 0.8
#: Prior width of the profile correction: this share of the reference profile, plus a
#: floor (fraction of the flux per pixel) where the reference has almost no light.
PRIOR_RELATIVE = 1.0
#: Prior width of the correction's zeroth and first moments (see fit_profile_correction).
MOMENT_SCALE = 1e-4
PRIOR_FLOOR = 1e-4


@dataclass
class ProfileChoice:
    """
    The profiles the extraction fits, and how they were chosen.

    Attributes
    ----------
    profiles : list of ndarray
        ``(R, X)`` source profile(s) on the cutout (negative nod with its sign).
    kind : str
        ``"psf"`` or ``"empirical"``.
    reason : str
        Why (for the log and the product).
    median_snr : float
        Median per-row flux S/N of the PSF fit to the (mean) image.
    correction : ProfileSolution or None
        The fitted correction (empirical only).
    window_fraction : ndarray or None
        ``(R,)`` the reference's share of the light inside the fitted
        columns, the flux scale of the empirical profile.
    iterations : int
        Gauss-Newton steps of the profile fit (empirical only).
    flux_variance : ndarray or None
        ``(R,)`` relative variance each row's flux takes from the measured
        profile's own noise (empirical only; added to VAR_FLAT).
    row_snr : ndarray or None
        ``(R,)`` flux S/N of each row in the PSF fit to the (mean) image.
    row_coordinate : ndarray or None
        ``(R,)`` each row's coordinate (-1..1) in the correction's basis
        (empirical only; see :func:`_row_coordinate`).
    reference : list of ndarray or None
        The reference's profiles on the same columns as ``profiles``.
    """

    profiles: list
    kind: str
    reason: str
    median_snr: float
    correction: ProfileSolution | None = None
    window_fraction: np.ndarray | None = None
    iterations: int = 0
    flux_variance: np.ndarray | None = None
    row_snr: np.ndarray | None = None
    row_coordinate: np.ndarray | None = None
    reference: list | None = None

    @property
    def least_window_fraction(self) -> float:
        """Smallest share of the reference's light inside the fitted columns (rows with light)."""
        fractions = self.window_fraction[self.window_fraction > 0]
        return float(fractions.min()) if fractions.size else float("nan")

    def record(self) -> dict:
        """What the product records (``x1d.mirispec_profile``)."""
        entry = {"profile": self.kind, "reason": self.reason, "median_snr": self.median_snr}
        if self.correction is not None:
            entry["n_rejected"] = self.correction.n_rejected
            entry["chi2_per_pixel"] = self.correction.chi2_per_pixel
            entry["half_width"] = self.correction.layout.half_width
            entry["min_window_fraction"] = self.least_window_fraction
            entry["median_profile_error"] = float(np.nanmedian(np.sqrt(self.flux_variance)))
            entry["iterations"] = self.iterations
        return entry


def _normalised(raw: list[np.ndarray], reference: list[np.ndarray]) -> tuple[list, np.ndarray]:
    """Scale each row of each profile so its sum over the cutout equals the reference's."""
    scaled = []
    for profile, ref in zip(raw, reference, strict=True):
        with np.errstate(invalid="ignore", divide="ignore"):
            factor = ref.sum(axis=1, keepdims=True) / profile.sum(axis=1, keepdims=True)
        scaled.append(profile * np.where(np.isfinite(factor), factor, 1.0))
    return scaled, np.abs(reference[0].sum(axis=1))


@dataclass
class ProfileScene:
    """
    Where a profile is measured: the whole data region's builder and mean image.

    Attributes
    ----------
    builder : _SceneBuilder
        Reference profiles and background basis on the whole data region.
    mean : _MeanImage
        The integration-mean image of that region.
    """

    builder: object
    mean: object


def choose_profiles(
    mode: str, builder, shift, negative_shift, reject_sigma: float,
    unmodelled_nod: bool = False, measured: ProfileScene | None = None,
) -> ProfileChoice:  # fmt: skip
    """
    The source profiles to fit: the reference, or the reference corrected by the data.

    Parameters
    ----------
    mode : {"auto", "psf", "empirical"}
        The step's ``profile`` parameter.
    builder : _SceneBuilder
        Reference profiles and background basis on the fit window; the
        returned profiles are on its columns.
    shift, negative_shift : ndarray or None
        Trace offsets from the location fit (per row).
    reject_sigma : float
        Outlier threshold of the fits.
    unmodelled_nod : bool
        Nod-subtracted data whose negative trace is not modelled: a measured
        profile would take that trace in, so only the reference is used.
    measured : ProfileScene or None
        The whole data region, where the profile is measured (the sky beyond
        the source's wings tells a profile pedestal from the background);
        needed unless ``mode`` is "psf" or ``unmodelled_nod``.

    Returns
    -------
    ProfileChoice
        The profiles and how they were chosen.

    Raises
    ------
    InputDataError
        ``mode="empirical"`` on a source too faint or too short to define it.
    """
    if mode == "psf" or unmodelled_nod:
        reference = builder.profiles(shift, negative_shift)
    if mode == "psf":
        return ProfileChoice(reference, "psf", "profile='psf'", float("nan"), reference=reference)
    if unmodelled_nod:
        reason = "nod-subtracted data without the negative trace modelled (model_nod_pair=False)"
        if mode == "empirical":
            raise InputDataError(
                f"profile='empirical' cannot measure the profile of {reason}: it would take "
                "the negative trace in; set model_nod_pair=True or profile='psf'"
            )
        log.warning(f"Optimal extraction with the PSF reference's profile: {reason}")
        return ProfileChoice(reference, "psf", reason, float("nan"), reference=reference)
    wide, mean = measured.builder, measured.mean
    support = DEFAULT_PROFILE_HALF_WIDTH
    if wide.negative is not None:
        # A nod pair's traces share the profile: a correction reaching the other trace's
        # core could trade light between the two unseen (see docs); stay short of it.
        separation = float(np.nanmedian(np.abs(wide.negative - wide.trace)))
        support = min(support, NOD_SUPPORT_FRACTION * separation)
    fit = _ProfileFit.set_up(wide, mean, shift, negative_shift, support)
    reference = fit.on_columns(fit.reference, builder)
    # The S/N of the reference profile's fit (the fit's own starting point) decides.
    snr = fit.row_snr()
    n_rows = int(np.count_nonzero(np.isfinite(snr)))
    median_snr = float(np.nanmedian(snr)) if n_rows else 0.0
    faint = median_snr < EMPIRICAL_MIN_SNR or n_rows < EMPIRICAL_MIN_ROWS
    if faint:
        reason = (
            f"median row S/N {median_snr:.1f} over {n_rows} rows; an empirical profile needs "
            f"S/N >= {EMPIRICAL_MIN_SNR:g} over >= {EMPIRICAL_MIN_ROWS} rows"
        )
        if mode == "empirical":
            raise InputDataError(
                f"profile='empirical': the source is too faint or too short to measure its "
                f"profile ({reason}); use profile='psf' or 'auto'"
            )
        log.warning(f"Optimal extraction with the PSF reference's profile: {reason}")
        return ProfileChoice(reference, "psf", reason, median_snr, row_snr=snr,
                             reference=reference)  # fmt: skip
    choice = fit.measure(reject_sigma, builder)
    choice.median_snr = median_snr
    choice.row_snr = snr
    choice.reason = f"median row S/N {median_snr:.1f} >= {EMPIRICAL_MIN_SNR:g} ({mode})"
    log.info(
        f"Optimal extraction with a profile measured from the data ({choice.reason}); "
        f"fit chi2/pixel {choice.correction.chi2_per_pixel:.2f}, "
        f"{choice.correction.n_rejected} pixel(s) left out; the reference PSF puts "
        f"{100 * (1 - choice.least_window_fraction):.2f}% of the light outside the "
        "measured columns at most"
    )
    return choice


def _row_coordinate(row_wavelength: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    The coordinate along the rows the correction is smooth in: wavelength, scaled to -1..1.

    A PSF's departure from its model follows the wavelength (its width law),
    and LRS disperses unevenly (near 5 um a row spans three times the
    wavelength it spans near 10 um): knots even in wavelength follow the
    profile where it changes fastest. Rows without a wavelength take their
    neighbours'. Without a monotonic wavelength, the row index.

    Returns ``rho`` per row and the wavelength at ``rho = -1`` and ``+1``.
    """
    n_rows = row_wavelength.size
    rows = np.arange(n_rows)
    finite = np.isfinite(row_wavelength)
    if np.count_nonzero(finite) >= 2:
        filled = np.interp(rows, rows[finite], row_wavelength[finite])
        steps = np.diff(filled)
        low, high = float(filled.min()), float(filled.max())
        if high > low and (np.all(steps >= 0) or np.all(steps <= 0)):
            return 2.0 * (filled - low) / (high - low) - 1.0, np.array([low, high])
    return np.linspace(-1.0, 1.0, n_rows), np.array([np.nan, np.nan])


def _prior_scale(builder, layout: ProfileLayout, rho: np.ndarray, ends) -> np.ndarray:
    """``PRIOR_RELATIVE`` times the reference profile plus ``PRIOR_FLOOR``, at each coefficient."""
    centres = layout.row_centres()
    if np.all(np.isfinite(ends)):
        wavelength = ends[0] + (centres + 1.0) / 2.0 * (ends[1] - ends[0])
    else:
        finite = np.isfinite(builder.row_wavelength)
        wavelength = np.interp(centres, rho[finite], builder.row_wavelength[finite])
    scale = builder.width_scale
    offsets = np.broadcast_to(layout.offset_centres()[None, :] / scale,
                              (centres.size, layout.offset_centres().size))  # fmt: skip
    reference = evaluate_profile(builder.psf, offsets, wavelength).T / scale
    return PRIOR_RELATIVE * np.abs(np.nan_to_num(reference)) + PRIOR_FLOOR


@dataclass
class _ProfileFit:
    """
    The profile fit of the mean image, set up once: the S/N check and the measurement.

    Attributes
    ----------
    builder : _SceneBuilder
        The region the profile is measured on.
    mean : _MeanImage
        Its (integration-)mean image.
    reference : list of ndarray
        The reference profiles there (signed).
    signs : list of float
        Each trace's sign.
    basis : ProfileBasis
        The correction's basis at the pixels.
    row_coordinate : ndarray
        ``(R,)`` the rows' coordinate in the basis.
    fitter : ProfileFitter
        The fit.
    """

    builder: object
    mean: object
    reference: list
    signs: list
    basis: ProfileBasis
    row_coordinate: np.ndarray
    fitter: ProfileFitter

    @classmethod
    def set_up(cls, builder, mean, shift, negative_shift, half_width) -> _ProfileFit:
        """The basis and the per-row products of the fit (no solve yet)."""
        n_rows = mean.data.shape[0]
        rho, ends = _row_coordinate(builder.row_wavelength)
        breaks = ()
        if np.all(np.isfinite(ends)):
            breaks = tuple(2.0 * (kink - ends[0]) / (ends[1] - ends[0]) - 1.0
                           for kink in builder.psf.width_kinks)  # fmt: skip
        layout = ProfileLayout(
            half_width=float(half_width),
            zones=KNOT_ZONES,
            n_row_intervals=int(np.clip(n_rows // ROWS_PER_INTERVAL, 2, 24)),
            row_breaks=breaks,
        )
        reference = builder.profiles(shift, negative_shift)
        signs = [1.0] + [-1.0] * (len(reference) - 1)
        free = _free_terms(builder, reference, shift, negative_shift, signs)
        basis = ProfileBasis.at(layout, builder.trace_offsets(shift, negative_shift), free, rho)
        fitter = ProfileFitter(mean.data, sum(mean.variances), mean.valid, basis,
                               builder.background_basis, layout,
                               _prior_scale(builder, layout, rho, ends), MOMENT_SCALE)  # fmt: skip
        return cls(builder, mean, reference, signs, basis, rho, fitter)

    def row_snr(self) -> np.ndarray:
        """``(R,)`` flux S/N of each row with the reference profile (NaN: no fit)."""
        start = self.fitter.start()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.abs(start.flux) / start.error

    def measure(self, reject_sigma: float, target) -> ProfileChoice:
        """
        Fit the correction and the fluxes together; the profiles on ``target``'s columns.

        ``target``'s columns are a subset of the measured region's; the
        profiles keep the normalisation found on the measured region.
        """
        basis, signs = self.basis, self.signs
        fitter = self.fitter
        correction = fitter.fit(reject_sigma or 0.0, MAX_ITERATIONS, FLUX_TOLERANCE)
        # The negative nod's reference profile carries its sign; the shared correction
        # enters each trace with the same sign as its reference profile.
        raw = [
            p + sign * correction.evaluate(basis, index)
            for index, (p, sign) in enumerate(zip(self.reference, signs, strict=True))
        ]
        profiles, window_fraction = _normalised(raw, self.reference)
        # The profile's own noise, through the extraction's linear weights of the flux.
        pixel_weights = fitter.flux_weights(profiles)
        flux_variance = correction.flux_variance(basis, pixel_weights,
                                                 profiles[0].sum(axis=1))  # fmt: skip
        return ProfileChoice(self.on_columns(profiles, target), "empirical", "", float("nan"),
                             correction, window_fraction, correction.iterations, flux_variance,
                             row_coordinate=self.row_coordinate,
                             reference=self.on_columns(self.reference, target))  # fmt: skip

    def on_columns(self, images: list[np.ndarray], target) -> list[np.ndarray]:
        """``(R, X)`` images of the measured region on ``target``'s columns (a subset)."""
        columns = self.builder.columns
        if target is self.builder:
            return images
        chosen = np.searchsorted(columns, target.columns)
        if not np.array_equal(columns[np.clip(chosen, 0, columns.size - 1)], target.columns):
            raise RuntimeError("the fit window is outside the region the profile is measured on")
        return [np.ascontiguousarray(image[:, chosen]) for image in images]


def _free_terms(builder, reference, shift, negative_shift, signs):
    """Per trace: the unsigned reference profile and its derivative in the trace's shift."""
    slopes = builder.shift_derivatives(shift, negative_shift)
    return [
        [sign * p, sign * slope] for sign, p, slope in zip(signs, reference, slopes, strict=True)
    ]
