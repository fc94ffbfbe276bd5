"""Which PSF an MRS extraction uses: the reference, or one calibrated on the exposure itself.

``psf="reference"`` uses the ``mrspsf`` reference as it is. ``"empirical"``
measures a correction to it from all bins of the channel at once
(:mod:`mirispec_steps.mrs.core.psf_calibration`) and fails clearly when the
data cannot support one. ``"auto"`` (default) calibrates and keeps the
calibrated PSF when the data clearly prefer it and can pin it down:

- the chi-square gained over the reference exceeds the correction's
  effective number of parameters by ``SIGNIFICANCE`` standard deviations
  of a chi-square with that many degrees of freedom (the correction
  describes structure, not noise), and
- the change the correction makes to the fluxes (median over bins,
  relative) is ``CHANGE_OVER_PSF_ERROR`` times the flux uncertainty the
  correction's own uncertainty causes (correlated between bins): the
  reference's error it removes is clearly larger than the error it brings;
- that change is at least ``CHANGE_OVER_STATISTICAL`` of a bin's
  statistical error: a reference whose error is negligible against the
  noise is kept;

otherwise it falls back to the reference with a log line saying why. The
x1d product records the choice per channel.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from mirispec_steps.core.optimal import poisson_variance_model
from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs.core.extract import FootprintPixels
from mirispec_steps.mrs.core.psf import CubePsf
from mirispec_steps.mrs.core.psf_calibration import (
    PsfCalibration,
    PsfSamples,
    calibrate_psf,
)
from mirispec_steps.mrs.core.spectral_grid import BinMembers

__all__ = [
    "PSF_MODES",
    "PsfChoice",
    "calibration_samples",
    "calibration_weights",
    "choose_psf",
    "median_snr",
    "mirror_unseen",
    "thin_wings",
    "wavelength_nodes",
]

log = logging.getLogger(__name__)

#: The step's ``psf`` options.
PSF_MODES = ("auto", "reference", "empirical")
#: Pairs within this many reference FWHM of the source (along alpha and beta) are fitted.
CALIBRATION_REACH_FWHM = 8.0
#: Beyond this many FWHM (along alpha or beta) the correction's knots are coarse and the
#: pixels faint. For a bright source (median bin S/N above ``BRIGHT_SNR``) only every
#: ``WING_STRIDE``-th bin's pairs there are fitted: the wings change slowly with wavelength,
#: the fit's cost follows the number of pairs, and at that S/N the correction's own flux
#: uncertainty stays far below a bin's. Fainter sources use every pair.
WING_FWHM = 3.0
WING_STRIDE = 4
BRIGHT_SNR = 300.0
#: For a bright source only every ``BRIGHT_BIN_STRIDE``-th bin is fitted at all: the PSF is
#: common to the bins, and half of them pin it down far below a bin's own error.
BRIGHT_BIN_STRIDE = 2
#: Standard deviations of chi-square gain needed to prefer the calibrated PSF.
SIGNIFICANCE = 5.0
#: How much larger than its own flux uncertainty, and than a share of the statistical error,
#: the calibration's change to the fluxes must be for ``auto`` to use it.
CHANGE_OVER_PSF_ERROR = 3.0
CHANGE_OVER_STATISTICAL = 0.3
#: A calibration whose flux uncertainty (relative, correlated between bins) exceeds this
#: fails: the source is too faint to measure a PSF.
MAX_PSF_ERROR = 0.05
#: Fewest bins with data a calibration needs.
MIN_BINS = 20


@dataclass
class PsfChoice:
    """
    The PSF one channel's extraction used, and why.

    Attributes
    ----------
    requested : str
        The step's ``psf`` parameter.
    used : str
        ``reference`` or ``empirical``.
    reason : str
        One line for the log and the product.
    calibration : PsfCalibration or None
        The calibration, when one was attempted and succeeded.
    statistical_error : float
        Median relative statistical flux error of a bin (NaN when not measured).
    """

    requested: str
    used: str
    reason: str
    calibration: PsfCalibration | None = None
    statistical_error: float = float("nan")

    def record(self) -> dict:
        """What the x1d product keeps (plain types)."""
        record = {"requested": self.requested, "used": self.used, "reason": self.reason}
        if self.calibration is not None:
            calibration = self.calibration
            flux = np.abs(calibration.flux)
            with np.errstate(divide="ignore", invalid="ignore"):
                relative = np.nanmedian(calibration.flux_error / flux)
            record.update(
                chi_square=float(calibration.chi_square),
                reference_chi_square=float(calibration.reference_chi_square),
                effective_parameters=float(calibration.effective_parameters),
                pairs=int(calibration.n_pairs),
                rejected=int(calibration.n_rejected),
                psf_flux_error=float(relative),
                statistical_flux_error=float(self.statistical_error),
            )
        return record


def calibration_samples(
    pixels, members, alpha, beta, psf, mirror: bool = False
) -> tuple[PsfSamples, np.ndarray]:
    """
    The calibration's pairs: usable members within reach of the source.

    With ``mirror``, each pair also carries the share of its mirror image through the source
    that falls outside the field (:func:`mirror_unseen`): the calibration then reads the
    light the field loses over its near edges on its far side.
    """
    index = members.index
    width = np.asarray(psf.fwhm(pixels.wavelength), dtype=float)
    alpha_mid = 0.5 * (pixels.alpha_low + pixels.alpha_high)
    beta_mid = 0.5 * (pixels.beta_low + pixels.beta_high)
    reach = CALIBRATION_REACH_FWHM * width[index]
    distance = np.maximum(
        np.abs(alpha_mid[index] - alpha[:, None]), np.abs(beta_mid[index] - beta[:, None])
    )
    wing = distance > WING_FWHM / CALIBRATION_REACH_FWHM * reach
    near = members.inside & pixels.valid[index] & (distance <= reach)
    bins, slots = np.nonzero(near)
    pixel = index[bins, slots]
    # Marks the wing pairs until they are thinned (then: how many pairs each stands for).
    multiplicity = np.where(wing[bins, slots], 0.0, 1.0)
    centre_alpha, centre_beta = alpha[bins], beta[bins]
    wavelength = pixels.wavelength[pixel]
    edges = (
        pixels.alpha_low[pixel], pixels.alpha_high[pixel],
        pixels.beta_low[pixel], pixels.beta_high[pixel],
    )  # fmt: skip
    fraction = psf.footprint_fraction(*edges, centre_alpha, centre_beta, wavelength)
    area = pixels.area[pixel]
    data = pixels.data[pixel] * area
    scale = width[pixel]
    low_a, high_a = np.minimum(edges[0], edges[1]), np.maximum(edges[0], edges[1])
    low_b, high_b = np.minimum(edges[2], edges[3]), np.maximum(edges[2], edges[3])
    samples = PsfSamples(
        bins=bins,
        data=data,
        weight=np.zeros(bins.size),
        reference=fraction,
        shape=np.ones(bins.size),
        u_low=(low_a - centre_alpha) / scale,
        u_high=(high_a - centre_alpha) / scale,
        v_low=(low_b - centre_beta) / scale,
        v_high=(high_b - centre_beta) / scale,
        n_bins=index.shape[0],
        wavelength=wavelength,
        multiplicity=multiplicity,
        # Pixels of one slice share its beta edges.
        strip=np.unique(np.round(low_b, 6), return_inverse=True)[1],
        mirror_unseen=mirror_unseen(pixels, members, alpha, beta, bins, pixel) if mirror else None,
    )
    return samples, pixel


def mirror_unseen(pixels, members, alpha, beta, bins, pixel) -> np.ndarray:
    """
    How much of each pair's mirror image through the source falls outside its bin's field.

    Parameters
    ----------
    pixels : FootprintPixels
        The channel's pixels.
    members : BinMembers
        Every bin's pixels: the field is the union of their footprints, flagged or not
        (a flagged pixel is a hole in the data, not the field's edge).
    alpha, beta : ndarray
        ``(K,)`` source position per bin (arcsec).
    bins, pixel : ndarray
        ``(P,)`` each pair's bin and pixel.

    Returns
    -------
    ndarray
        ``(P,)`` the share of the mirrored footprint outside every slice's extent in the bin
        (0 to 1).
    """
    alpha_low = np.minimum(pixels.alpha_low, pixels.alpha_high)
    alpha_high = np.maximum(pixels.alpha_low, pixels.alpha_high)
    beta_low = np.minimum(pixels.beta_low, pixels.beta_high)
    beta_high = np.maximum(pixels.beta_low, pixels.beta_high)
    rows, slots = np.nonzero(members.inside)
    member = members.index[rows, slots]
    # Slices (strips of constant beta) and each one's alpha extent in each bin.
    strip_low, strip = np.unique(np.round(beta_low[member], 6), return_inverse=True)
    strip_high = np.full(strip_low.size, -np.inf)
    np.maximum.at(strip_high, strip, beta_high[member])
    n_strips = strip_low.size
    key = rows * n_strips + strip
    extent_low = np.full(members.index.shape[0] * n_strips, np.inf)
    extent_high = np.full(extent_low.size, -np.inf)
    np.minimum.at(extent_low, key, alpha_low[member])
    np.maximum.at(extent_high, key, alpha_high[member])
    # The mirrored footprint, and its overlap with the (at most two) slices it reaches.
    image_alpha = (2.0 * alpha[bins] - alpha_high[pixel], 2.0 * alpha[bins] - alpha_low[pixel])
    image_beta = (2.0 * beta[bins] - beta_high[pixel], 2.0 * beta[bins] - beta_low[pixel])
    inside = np.zeros(bins.size)
    reached = [np.searchsorted(strip_low, edge, side="right") - 1 for edge in image_beta]
    for number, candidate in enumerate(reached):
        if number == 1:
            candidate = np.where(candidate == reached[0], -1, candidate)  # counted once
        valid = candidate >= 0
        candidate = np.clip(candidate, 0, None)
        along_beta = np.minimum(image_beta[1], strip_high[candidate]) - np.maximum(
            image_beta[0], strip_low[candidate]
        )
        image_key = bins * n_strips + candidate
        along_alpha = np.minimum(image_alpha[1], extent_high[image_key]) - np.maximum(
            image_alpha[0], extent_low[image_key]
        )
        inside += np.where(valid, np.clip(along_beta, 0, None) * np.clip(along_alpha, 0, None), 0)
    area = (image_alpha[1] - image_alpha[0]) * (image_beta[1] - image_beta[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area > 0, np.clip(1.0 - inside / area, 0.0, 1.0), 0.0)


def thin_wings(samples: PsfSamples, pixel: np.ndarray) -> tuple[PsfSamples, np.ndarray]:
    """
    The pairs of every ``BRIGHT_BIN_STRIDE``-th bin, and of those bins the wing pairs of every
    ``WING_STRIDE``-th only, each standing for ``WING_STRIDE`` (a bright source's PSF).
    """
    wing = samples.multiplicity == 0
    used = samples.bins % BRIGHT_BIN_STRIDE == 0
    keep = used & (~wing | (samples.bins % (BRIGHT_BIN_STRIDE * WING_STRIDE) == 0))
    thinned = samples.subset(keep)
    thinned.multiplicity = np.where(wing[keep], float(WING_STRIDE), 1.0)
    return thinned, pixel[keep]


def median_snr(samples: PsfSamples) -> float:
    """Median bin S/N of a reference fit (weights already set)."""
    w, f = samples.weight, samples.reference
    information = np.bincount(samples.bins, w * f**2, minlength=samples.n_bins)
    projected = np.bincount(samples.bins, w * f * samples.data, minlength=samples.n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = projected / np.sqrt(information)
    return float(np.nanmedian(snr[information > 0])) if np.any(information > 0) else 0.0


#: Calibrations kept for reuse (both methods on one exposure, a pipeline and its steps).
CACHE_SIZE = 8
_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _calibrated(samples: PsfSamples, nodes: np.ndarray) -> PsfCalibration:
    """
    :func:`calibrate_psf` of the samples, reused when the very same pairs were calibrated.

    The key is a digest of every array the fit reads, so a result is reused
    only for identical input; results are never modified after they are made.
    """
    digest = hashlib.blake2b(digest_size=20)
    names = ("bins", "data", "weight", "reference", "shape", "u_low", "u_high", "v_low",
             "v_high", "wavelength", "multiplicity", "strip", "area", "mirror_unseen")  # fmt: skip
    for values in [nodes] + [getattr(samples, name) for name in names]:
        digest.update(b"-" if values is None else np.ascontiguousarray(values).tobytes())
    key = (digest.hexdigest(), samples.n_bins)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    calibration = calibrate_psf(samples, wavelength_nodes=nodes)
    with _CACHE_LOCK:
        _CACHE[key] = calibration
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return calibration


def wavelength_nodes(samples: PsfSamples) -> np.ndarray:
    """The correction's wavelength nodes: the ends of the calibrated pixels' range."""
    wavelength = samples.wavelength[samples.weight > 0]
    return np.array([np.min(wavelength), np.max(wavelength)])


def calibration_weights(
    pixels: FootprintPixels, samples: PsfSamples, pixel: np.ndarray
) -> np.ndarray:
    """Inverse model variances: read noise and flat as given, Poisson from a reference fit."""
    area2 = pixels.area[pixel] ** 2
    var_poisson = pixels.var_poisson[pixel] * area2
    fixed = (pixels.var_rnoise[pixel] + pixels.var_flat[pixel]) * area2
    total = var_poisson + fixed
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(total > 0, 1.0 / total, 0.0)
    numerator = np.bincount(samples.bins, first * samples.data * samples.reference,
                            minlength=samples.n_bins)  # fmt: skip
    denominator = np.bincount(samples.bins, first * samples.reference**2,
                              minlength=samples.n_bins)  # fmt: skip
    with np.errstate(divide="ignore", invalid="ignore"):
        flux = np.where(denominator > 0, numerator / denominator, 0.0)
    signal = np.clip(flux[samples.bins] * samples.reference, 0.0, None)
    # One regression of VAR_POISSON on the modelled signal over the whole channel.
    usable = (total > 0)[None, :]
    modelled = poisson_variance_model(var_poisson[None, :], signal[None, :], usable)[0]
    variance = fixed + modelled
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((variance > 0) & (total > 0), 1.0 / variance, 0.0)


def choose_psf(
    mode: str,
    pixels: FootprintPixels,
    members: BinMembers,
    alpha: np.ndarray,
    beta: np.ndarray,
    reference,
    band: str,
    fit_background: bool = False,
):
    """
    The PSF one channel's extraction uses.

    Parameters
    ----------
    mode : str
        ``auto``, ``reference`` or ``empirical``.
    pixels : FootprintPixels
        The channel's pixels.
    members : BinMembers
        The final grid's bins.
    alpha, beta : ndarray
        ``(K,)`` source position per bin (arcsec).
    reference : MrsPsf or CubePsf
        The ``mrspsf`` reference of the band.
    band : str
        For messages.
    fit_background : bool
        Fit a constant background surface brightness per bin along with the
        flux (as the extraction will).

    Returns
    -------
    psf : MrsPsf, CubePsf or CorrectedPsf
        The PSF to extract with.
    choice : PsfChoice
        What was used and why.

    Raises
    ------
    InputDataError
        ``empirical`` was requested and the data cannot support a calibration.
    """
    if mode == "reference":
        return reference, PsfChoice(mode, "reference", "the reference PSF was requested")
    # A measured cube's light beyond the field was seen by its star's dithers; a model's was
    # not seen at all, and the mirror image of what the field lost is the better guess.
    samples, pixel = calibration_samples(
        pixels, members, alpha, beta, reference, mirror=not isinstance(reference, CubePsf)
    )
    samples.weight = calibration_weights(pixels, samples, pixel)
    if median_snr(samples) > BRIGHT_SNR:
        samples, pixel = thin_wings(samples, pixel)
    else:
        samples.multiplicity = np.ones(samples.bins.size)
    if fit_background:
        samples.area = pixels.area[pixel]
    n_bins = np.unique(samples.bins[samples.weight > 0]).size
    problem = None
    calibration = None
    if n_bins < MIN_BINS:
        problem = f"only {n_bins} bins have usable pixels near the source (need {MIN_BINS})"
    else:
        try:
            calibration = _calibrated(samples, wavelength_nodes(samples))
        except (ValueError, np.linalg.LinAlgError) as exc:
            problem = f"the calibration failed ({exc})"
    if calibration is not None:
        flux = np.abs(calibration.flux)
        statistic = np.bincount(samples.bins, samples.weight * samples.reference**2,
                                minlength=samples.n_bins)  # fmt: skip
        with np.errstate(divide="ignore", invalid="ignore"):
            statistical = np.nanmedian(1.0 / np.sqrt(statistic) / flux)
            psf_error = np.nanmedian(calibration.flux_error / flux)
            change = np.nanmedian(np.abs(calibration.reference_flux / calibration.flux - 1.0))
        gained = calibration.reference_chi_square - calibration.chi_square
        needed = calibration.effective_parameters + SIGNIFICANCE * np.sqrt(
            2.0 * calibration.effective_parameters
        )
        summary = (
            f"chi-square {calibration.reference_chi_square:.4g} -> {calibration.chi_square:.4g} "
            f"with {calibration.effective_parameters:.0f} effective parameters; fluxes change "
            f"by {100 * change:.2f}%, the calibrated PSF's flux error is {100 * psf_error:.2f}%, "
            f"a bin's statistical error {100 * statistical:.2f}%"
        )
        if not psf_error <= MAX_PSF_ERROR:
            problem = f"the source is too faint to pin the PSF down ({summary})"
        elif mode == "auto" and not (
            gained > needed
            and change > CHANGE_OVER_PSF_ERROR * psf_error
            and change > CHANGE_OVER_STATISTICAL * statistical
        ):
            # Forced calibration is harmless here: the reference already describes the data.
            problem = f"the data do not prefer a calibrated PSF ({summary})"
        if problem is None:
            choice = PsfChoice(mode, "empirical", f"calibrated on the exposure: {summary}",
                               calibration, float(statistical))  # fmt: skip
            log.info("Channel %s: PSF %s", band, choice.reason)
            psf = calibration.corrected(reference)
            return psf, choice
    if mode == "empirical":
        raise InputDataError(
            f"band {band}: psf='empirical' cannot be used: {problem}; use psf='auto' to fall "
            "back to the reference PSF"
        )
    log.warning("Channel %s: using the reference PSF: %s", band, problem)
    choice = PsfChoice(mode, "reference", problem, calibration)
    return reference, choice
