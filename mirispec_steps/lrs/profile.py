"""
The spatial profile the LRS optimal extraction fits: the PSF reference, or measured from the data.

``profile="psf"`` uses the ``psf`` reference file as it is. ``"empirical"``
measures the profile from the data (the integration-mean image for a time
series) as the reference plus a smooth correction
(:mod:`mirispec_steps.lrs.core.empirical_profile`), alternating with the row
fits until the fluxes settle. ``"auto"`` (default) takes the empirical profile
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

from mirispec_steps.core.optimal import fit_rows, solve_rows
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
#: Rows per B-spline interval of the profile along dispersion.
ROWS_PER_INTERVAL = 25
#: Alternations of profile and row fits, and the flux change that ends them (in units of
#: each row's flux error, 95th percentile of the rows).
MAX_ALTERNATIONS = 3
FLUX_TOLERANCE = 0.02
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
    alternations : int
        Profile and row fits made (empirical only).
    flux_variance : ndarray or None
        ``(R,)`` relative variance each row's flux takes from the measured
        profile's own noise (empirical only; added to VAR_FLAT).
    row_snr : ndarray or None
        ``(R,)`` flux S/N of each row in the PSF fit to the (mean) image.
    """

    profiles: list
    kind: str
    reason: str
    median_snr: float
    correction: ProfileSolution | None = None
    window_fraction: np.ndarray | None = None
    alternations: int = 0
    flux_variance: np.ndarray | None = None
    row_snr: np.ndarray | None = None

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
            entry["alternations"] = self.alternations
        return entry


def _row_snr(fit) -> np.ndarray:
    """Flux S/N of every row from the fit's linear weights and model variance."""
    weights = fit.pixel_weights[:, 0, :]
    variance = np.where(fit.used, fit.variance, 0.0)
    error = np.sqrt(np.sum(weights**2 * variance, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.abs(fit.coefficients[:, 0]) / error
    return np.where(fit.ok & np.isfinite(snr), snr, np.nan)


def _fit_mean(mean, basis, n_profiles, reject_sigma):
    return fit_rows(
        mean.data, *mean.variances, mean.valid, basis, n_profiles,
        reject_sigma=reject_sigma or None,
    )  # fmt: skip


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
    reference = builder.profiles(shift, negative_shift)
    if mode == "psf":
        return ProfileChoice(reference, "psf", "profile='psf'", float("nan"))
    if unmodelled_nod:
        reason = "nod-subtracted data without the negative trace modelled (model_nod_pair=False)"
        if mode == "empirical":
            raise InputDataError(
                f"profile='empirical' cannot measure the profile of {reason}: it would take "
                "the negative trace in; set model_nod_pair=True or profile='psf'"
            )
        log.warning(f"Optimal extraction with the PSF reference's profile: {reason}")
        return ProfileChoice(reference, "psf", reason, float("nan"))
    wide, mean = measured.builder, measured.mean
    wide_reference = wide.profiles(shift, negative_shift)
    start = _fit_mean(mean, wide.basis(wide_reference), len(wide_reference), reject_sigma)
    snr = _row_snr(start)
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
        return ProfileChoice(reference, "psf", reason, median_snr, row_snr=snr)
    support = DEFAULT_PROFILE_HALF_WIDTH
    if wide.negative is not None:
        # A nod pair's traces share the profile: a correction reaching the other trace's
        # core could trade light between the two unseen (see docs); stay short of it.
        separation = float(np.nanmedian(np.abs(wide.negative - wide.trace)))
        support = min(support, NOD_SUPPORT_FRACTION * separation)
    choice = _measure(wide, mean, shift, negative_shift, wide_reference, start, reject_sigma,
                      support, builder)  # fmt: skip
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


def _prior_scale(builder, layout: ProfileLayout, rho: np.ndarray) -> np.ndarray:
    """``PRIOR_RELATIVE`` times the reference profile plus ``PRIOR_FLOOR``, at each coefficient."""
    centres = layout.row_centres()
    finite = np.isfinite(builder.row_wavelength)
    wavelength = np.interp(centres, rho[finite], builder.row_wavelength[finite])
    scale = builder.width_scale
    offsets = np.broadcast_to(layout.offset_centres()[None, :] / scale,
                              (centres.size, layout.offset_centres().size))  # fmt: skip
    reference = evaluate_profile(builder.psf, offsets, wavelength).T / scale
    return PRIOR_RELATIVE * np.abs(np.nan_to_num(reference)) + PRIOR_FLOOR


def _measure(builder, mean, shift, negative_shift, reference, start, reject_sigma, half_width,
             target):  # fmt: skip
    """
    Alternate profile and row fits on the mean image until the fluxes settle.

    ``builder``, ``mean`` and ``reference`` are on the region the profile is
    measured on; the returned profiles are on ``target``'s columns, with the
    normalisation found on the measured region.
    """
    n_rows = mean.data.shape[0]
    rho = np.linspace(-1.0, 1.0, n_rows)
    layout = ProfileLayout(
        half_width=float(half_width),
        n_row_intervals=int(np.clip(n_rows // ROWS_PER_INTERVAL, 2, 24)),
    )
    offsets = _trace_offsets(builder, shift, negative_shift)
    variance = sum(mean.variances)
    prior = _prior_scale(builder, layout, rho)
    signs = [1.0] + [-1.0] * (len(reference) - 1)
    free = _free_terms(builder, shift, negative_shift, signs)
    basis = ProfileBasis.at(layout, offsets, free, rho)
    # The alternations only follow the fluxes: one linear solve per row with the start
    # fit's weights (the extraction proper then fits the final profile as usual).
    weights = np.where(start.used, 1.0 / np.where(start.used, start.variance, 1.0), 0.0)
    clean = np.where(start.used, mean.data, 0.0)
    flux_error = np.abs(start.coefficients[:, 0]) / _row_snr(start)
    coefficients = start.coefficients
    profiles, window_fraction = reference, None
    fitter = ProfileFitter(mean.data, variance, mean.valid & start.ok[:, None], basis,
                           builder.background_basis, layout, prior, MOMENT_SCALE)  # fmt: skip
    for alternation in range(MAX_ALTERNATIONS):
        # The negative nod's reference profile carries its sign; the shared correction
        # enters each trace with the same sign as its reference profile.
        amplitudes = [sign * coefficients[:, index] for index, sign in enumerate(signs)]
        # Outliers are found once; later passes only follow the fluxes.
        correction = fitter.fit(amplitudes, (reject_sigma or 0.0) if alternation == 0 else 0.0)
        raw = [
            p + sign * correction.evaluate(basis, index)
            for index, (p, sign) in enumerate(zip(reference, signs, strict=True))
        ]
        profiles, window_fraction = _normalised(raw, reference)
        previous = coefficients[:, 0]
        coefficients, _, ok = solve_rows(clean, weights, builder.basis(profiles),
                                         pixel_weights=False)  # fmt: skip
        coefficients = np.where(ok[:, None], coefficients, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            change = np.abs(coefficients[:, 0] - previous) / flux_error
        # Most rows settle in two passes; a few near a kink of the reference's width
        # law settle slowly and must not hold up the rest.
        if not np.any(np.isfinite(change)) or np.nanpercentile(change, 95) < FLUX_TOLERANCE:
            break
    # The profile's own noise, through the extraction's linear weights of the flux.
    _, pixel_weights, _ = solve_rows(clean, weights, builder.basis(profiles))
    flux_variance = correction.flux_variance(basis, pixel_weights[:, 0, :],
                                             profiles[0].sum(axis=1))  # fmt: skip
    if target is not builder:
        profiles = _on_target(target, shift, negative_shift, layout, rho, signs, correction,
                              raw, profiles)  # fmt: skip
    return ProfileChoice(profiles, "empirical", "", float("nan"), correction, window_fraction,
                         alternation + 1, flux_variance)  # fmt: skip


def _free_terms(builder, shift, negative_shift, signs, step=0.05):
    """Per trace: the unsigned reference profile and its derivative in the offset."""
    nod = negative_shift
    reference = builder.profiles(shift, nod)
    ahead = builder.profiles(shift + step, None if nod is None else nod + step)
    behind = builder.profiles(shift - step, None if nod is None else nod - step)
    return [
        [sign * p, sign * (a - b) / (2 * step)]
        for sign, p, a, b in zip(signs, reference, ahead, behind, strict=True)
    ]


def _trace_offsets(builder, shift, negative_shift) -> list[np.ndarray]:
    offsets = [builder.columns[None, :] - (builder.trace + shift)[:, None]]
    if builder.negative is not None:
        negative = shift if negative_shift is None else negative_shift
        offsets.append(builder.columns[None, :] - (builder.negative + negative)[:, None])
    return offsets


def _on_target(target, shift, negative_shift, layout, rho, signs, correction, raw, measured):
    """The measured profiles on the fit window's columns, scaled as on the measured region."""
    free = _free_terms(target, shift, negative_shift, signs)
    basis = ProfileBasis.at(layout, _trace_offsets(target, shift, negative_shift), free, rho)
    profiles = []
    for index, (terms, sign) in enumerate(zip(free, signs, strict=True)):
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = measured[index].sum(axis=1) / raw[index].sum(axis=1)
        on_target = sign * terms[0] + sign * correction.evaluate(basis, index)
        profiles.append(on_target * np.where(np.isfinite(scale), scale, 1.0)[:, None])
    return profiles
