"""Point-source spectra from MRS detector pixels: exact-overlap aperture sums and optimal fits.

Every spectral bin is a set of detector pixels (rows of a padded
``(K, M)`` membership matrix, :func:`~mirispec_steps.mrs.core.spectral_grid.bin_members`),
each pixel a rectangle in (alpha, beta) with a surface brightness ``SB``
(MJy/sr) and a solid angle ``A`` (arcsec^2). A point source of flux
density ``F`` puts ``SB * A = F * f`` on a pixel, ``f`` being the share of
the PSF that falls on its footprint. Work is done on all bins at once; no
Python loop runs over bins.

Aperture photometry
    ``w`` is the exact fraction of each footprint inside the ellipse
    (:func:`~mirispec_steps.mrs.core.ellipse_overlap.ellipse_overlap`). The
    bin's pixels cover the aperture several times over (neighbouring rows
    of a slice see the same sky at slightly different wavelengths), so the
    mean surface brightness in the aperture is ``sum(w A SB) / sum(w A)``
    and the flux in the aperture that times the ellipse's area. The PSF
    through the very same pixels and weights gives the enclosed fraction
    ``EE = area * sum(w f) / sum(w A)``; the corrected flux is
    ``sum(w A SB) / sum(w f)``. A background from an annulus (chi-clipped
    mean surface brightness) is subtracted, and the PSF light in the annulus
    is subtracted from ``EE`` the same way.

Optimal extraction
    Per bin a Horne-weighted linear fit ``SB * A = F f g + B A`` with the
    model variance of :func:`~mirispec_steps.core.optimal.fit_rows`
    (inverse-variance weights that do not follow the data's noise),
    iterative outlier rejection and an optional constant background ``B``.
    ``g`` carries the spectrum's shape across the bin (its pixels sit at
    slightly different wavelengths): without it a line's peak pixels look
    like outliers and the line flux is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.stats import chi2

from mirispec_steps.core.optimal import fit_rows
from mirispec_steps.mrs.core.ellipse_overlap import EllipticalAperture, ellipse_overlap
from mirispec_steps.mrs.core.spectral_grid import BinMembers, SpectralGrid

__all__ = [
    "BinSpectrum",
    "FootprintPixels",
    "PsfFraction",
    "SpectralShape",
    "aperture_photometry",
    "optimal_extraction",
    "spectral_shape",
]

#: ``psf_fraction(pixel_index, alpha_centre, beta_centre)``: share of the PSF on each footprint.
PsfFraction = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

#: First-pass samples below this many sigma do not shape the spectrum.
SHAPE_MIN_SNR = 5.0
#: Chance that a flat stretch of spectrum is taken for structure and shaped.
SHAPE_FALSE_ALARM = 1.0e-3
#: Samples across a bin for its mean spectral shape.
SHAPE_SAMPLES = 9
#: First-pass samples whose pixels see less than this share of the band's median PSF coverage
#: (the partial samples at a band's ends) do not shape the spectrum: their flux rests on the
#: PSF model's far wings, wrong by far more than their noise.
SHAPE_MIN_COVERAGE = 0.25
#: Relative uncertainty of a PSF model at a bin's peak when judging outliers (a larger share
#: of the model in the wings): a real PSF's core differs from any model by a few percent, far
#: beyond the noise of a bright source, and such pixels are no cosmic rays (judged as
#: outliers they were rejected by the thousand).
PSF_MODEL_TOLERANCE = 0.05


@dataclass
class FootprintPixels:
    """
    One channel's pixels: footprints, surface brightness and variances (all ``(N,)``).

    Attributes
    ----------
    alpha_low, alpha_high, beta_low, beta_high : ndarray
        Footprint edges (arcsec).
    wavelength : ndarray
        Pixel-centre wavelength (micron).
    area : ndarray
        Footprint solid angle (arcsec^2).
    data : ndarray
        Surface brightness (MJy/sr); anything where ``valid`` is False.
    var_poisson, var_rnoise, var_flat : ndarray
        Variance components of ``data``.
    valid : ndarray
        Usable pixels (finite, positive variance, not flagged).
    """

    alpha_low: np.ndarray
    alpha_high: np.ndarray
    beta_low: np.ndarray
    beta_high: np.ndarray
    wavelength: np.ndarray
    area: np.ndarray
    data: np.ndarray
    var_poisson: np.ndarray
    var_rnoise: np.ndarray
    var_flat: np.ndarray
    valid: np.ndarray

    @property
    def variances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The three variance components."""
        return self.var_poisson, self.var_rnoise, self.var_flat


@dataclass
class BinSpectrum:
    """
    Extracted quantities per spectral bin (all ``(K,)``).

    Attributes
    ----------
    flux : ndarray
        Source flux in MJy/sr x arcsec^2: aperture flux (the ellipse's
        area times its mean net surface brightness) or the fitted total.
    flux_variances : tuple of ndarray
        Poisson, read-noise and flat variance of ``flux``.
    surface_brightness : ndarray
        Mean net surface brightness in the aperture (MJy/sr; NaN for optimal).
    background : ndarray
        Sky background surface brightness (MJy/sr; 0 when none): for an
        annulus, its mean minus the source's PSF wings falling in it.
    background_variances : tuple of ndarray
        Its variance components.
    npixels : ndarray
        Sum of aperture weights (aperture) or pixels fitted (optimal).
    enclosed_fraction : ndarray
        Share of the PSF the flux measures (aperture, net of the annulus);
        1 for optimal extraction (the fit measures the total).
    n_rejected : ndarray
        Pixels rejected as outliers (optimal) or clipped from the annulus.
    flux_weights : scipy.sparse.csr_matrix or None
        ``(K, N)`` the optimal fit's flux as a linear map of the pixels'
        light (data times area): ``flux = flux_weights @ light``; None for
        aperture photometry.
    psf_coverage : ndarray or None
        Sum of the PSF shares of the pixels fitted (optimal; None for
        aperture photometry): a bin cut by the band's end sees a small part.
    """

    flux: np.ndarray
    flux_variances: tuple
    surface_brightness: np.ndarray
    background: np.ndarray
    background_variances: tuple
    npixels: np.ndarray
    enclosed_fraction: np.ndarray
    n_rejected: np.ndarray
    flux_weights: sparse.csr_matrix | None = None
    psf_coverage: np.ndarray | None = None

    @property
    def flux_error(self) -> np.ndarray:
        """Total standard deviation of ``flux``."""
        return np.sqrt(sum(self.flux_variances))

    @property
    def total_flux(self) -> tuple[np.ndarray, np.ndarray]:
        """Flux corrected to the whole PSF, and its error."""
        correction = self.aperture_correction
        return self.flux * correction, self.flux_error * np.abs(correction)

    @property
    def aperture_correction(self) -> np.ndarray:
        """Factor turning ``flux`` into the total flux: ``1 / enclosed_fraction``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.enclosed_fraction > 0, 1.0 / self.enclosed_fraction, np.nan)


def _near_pairs(pixels, members, alpha_centre, beta_centre, reach):
    """(bin, pixel) pairs of usable member pixels whose footprint may touch a disc of ``reach``."""
    index = members.index
    candidate = members.inside & pixels.valid[index]
    alpha_mid = 0.5 * (pixels.alpha_low + pixels.alpha_high)
    beta_mid = 0.5 * (pixels.beta_low + pixels.beta_high)
    half_alpha = 0.5 * np.abs(pixels.alpha_high - pixels.alpha_low)
    half_beta = 0.5 * np.abs(pixels.beta_high - pixels.beta_low)
    candidate &= np.abs(alpha_mid[index] - alpha_centre[:, None]) <= (
        reach[:, None] + half_alpha[index]
    )
    candidate &= np.abs(beta_mid[index] - beta_centre[:, None]) <= reach[:, None] + half_beta[index]
    bins, slots = np.nonzero(candidate)
    return bins, index[bins, slots]


def _bin_sum(bins, values, n_bins):
    return np.bincount(bins, weights=values, minlength=n_bins)


def _overlaps(pixels, bins, pixel, alpha_centre, beta_centre, aperture):
    return ellipse_overlap(
        pixels.alpha_low[pixel],
        pixels.alpha_high[pixel],
        pixels.beta_low[pixel],
        pixels.beta_high[pixel],
        alpha_centre[bins],
        beta_centre[bins],
        EllipticalAperture(
            np.asarray(aperture.semi_major)[bins], aperture.axis_ratio, aperture.position_angle
        ),
    )


def aperture_photometry(
    pixels: FootprintPixels,
    members: BinMembers,
    alpha_centre: np.ndarray,
    beta_centre: np.ndarray,
    aperture: EllipticalAperture,
    psf_fraction: PsfFraction | None = None,
    annulus: tuple[float, float] | None = None,
    clip_sigma: float = 3.0,
    clip_iterations: int = 3,
    shape: SpectralShape | None = None,
) -> BinSpectrum:
    """
    Elliptical-aperture sums with exact footprint overlaps, per bin.

    Parameters
    ----------
    pixels : FootprintPixels
        The channel's pixels.
    members : BinMembers
        ``(K, M)`` pixels of each bin.
    alpha_centre, beta_centre : ndarray
        ``(K,)`` aperture centre per bin (arcsec).
    aperture : EllipticalAperture
        Shape; ``semi_major`` a scalar or ``(K,)`` per bin.
    psf_fraction : callable or None
        PSF share per footprint (:data:`PsfFraction`); gives the enclosed
        fraction (NaN without it).
    annulus : (float, float) or None
        Inner and outer size of a background annulus, as multiples of the
        aperture (the same ellipse scaled); inner must be >= 1.
    clip_sigma : float
        Annulus pixels further than this many sigma from the background
        are left out (iterated ``clip_iterations`` times from the median).
    clip_iterations : int
        Clipping passes.
    shape : SpectralShape or None
        Spectral shape across each bin, folded into the PSF sums (None: flat).

    Returns
    -------
    BinSpectrum
        Aperture flux (not corrected) and the enclosed fraction.

    Notes
    -----
    The flux's variance is propagated exactly through the linear
    combination ``sum(c_p SB_p)`` that produces it, background included,
    for each variance component; the clipping choice is taken as fixed.
    """
    n_bins = members.index.shape[0]
    semi_major = np.broadcast_to(np.asarray(aperture.semi_major, dtype=float), (n_bins,))
    aperture = EllipticalAperture(semi_major, aperture.axis_ratio, aperture.position_angle)
    if annulus is not None and not 1.0 <= annulus[0] < annulus[1]:
        raise ValueError("the annulus must satisfy 1 <= inner < outer (multiples of the aperture)")
    bins, pixel = _near_pairs(pixels, members, alpha_centre, beta_centre, semi_major)
    weight = _overlaps(pixels, bins, pixel, alpha_centre, beta_centre, aperture)
    keep = weight > 0
    bins, pixel, weight = bins[keep], pixel[keep], weight[keep]
    weighted_area = weight * pixels.area[pixel]
    covered = _bin_sum(bins, weighted_area, n_bins)
    source_sum = _bin_sum(bins, weighted_area * pixels.data[pixel], n_bins)
    psf_sum = np.full(n_bins, np.nan)
    if psf_fraction is not None:
        fraction = psf_fraction(pixel, alpha_centre[bins], beta_centre[bins])
        if shape is not None:
            fraction = fraction * shape.relative(bins, pixel)
        psf_sum = _bin_sum(bins, weight * fraction, n_bins)

    background = np.zeros(n_bins)
    background_variances = tuple(np.zeros(n_bins) for _ in range(3))
    background_psf = np.zeros(n_bins)
    n_clipped = np.zeros(n_bins, dtype=int)
    if annulus is not None:
        background, background_variances, background_psf, n_clipped = _annulus_background(
            pixels, members, alpha_centre, beta_centre, aperture, annulus, clip_sigma,
            clip_iterations, psf_fraction, shape,
        )  # fmt: skip

    with np.errstate(divide="ignore", invalid="ignore"):
        mean_brightness = np.where(covered > 0, source_sum / covered, np.nan) - background
        # Aperture pixels enter with weight w A / covered; the annulus mean is independent.
        variances = []
        for component in range(3):
            own = _bin_sum(bins, weighted_area**2 * pixels.variances[component][pixel], n_bins)
            total = own / covered**2 + background_variances[component]
            variances.append(total)
        area = aperture.area
        flux = mean_brightness * area
        flux_variances = tuple(v * area**2 for v in variances)
        enclosed = area * (psf_sum / covered - background_psf)
    empty = ~(covered > 0)
    flux[empty] = np.nan
    if annulus is not None and psf_fraction is not None:
        # Report the sky: the annulus mean minus the source's own wings in it.
        with np.errstate(invalid="ignore", divide="ignore"):
            background = background - flux / enclosed * background_psf
    return BinSpectrum(
        flux=flux,
        flux_variances=flux_variances,
        surface_brightness=mean_brightness,
        background=background,
        background_variances=background_variances,
        npixels=_bin_sum(bins, weight, n_bins),
        enclosed_fraction=enclosed,
        n_rejected=n_clipped,
    )


def _annulus_background(
    pixels, members, alpha_centre, beta_centre, aperture, annulus, clip_sigma, iterations,
    psf_fraction, shape,
):  # fmt: skip
    """Chi-clipped mean surface brightness in the annulus, its variances and its PSF density."""
    n_bins = members.index.shape[0]
    inner, outer = (aperture.scaled(factor) for factor in annulus)
    bins, pixel = _near_pairs(
        pixels, members, alpha_centre, beta_centre, np.asarray(outer.semi_major)
    )
    weight = _overlaps(pixels, bins, pixel, alpha_centre, beta_centre, outer)
    weight -= _overlaps(pixels, bins, pixel, alpha_centre, beta_centre, inner)
    keep = weight > 1e-9
    bins, pixel, weight = bins[keep], pixel[keep], weight[keep]
    weighted_area = weight * pixels.area[pixel]
    values = pixels.data[pixel]
    variance = sum(component[pixel] for component in pixels.variances)
    # Start from each bin's median: robust against a source wing or a hot pixel.
    order = np.lexsort((values, bins))
    counts = np.bincount(bins, minlength=n_bins)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    middle = np.clip(starts + counts // 2, 0, max(values.size - 1, 0))
    level = np.where(counts > 0, values[order][middle] if values.size else 0.0, np.nan)
    used = np.ones(values.size, dtype=bool)
    for _ in range(iterations):
        used = np.abs(values - level[bins]) <= clip_sigma * np.sqrt(variance)
        total = _bin_sum(bins, weighted_area * used, n_bins)
        with np.errstate(divide="ignore", invalid="ignore"):
            level = _bin_sum(bins, weighted_area * used * values, n_bins) / total
    total = _bin_sum(bins, weighted_area * used, n_bins)
    share = np.where(used, weighted_area, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        variances = tuple(
            _bin_sum(bins, share**2 * component[pixel], n_bins) / total**2
            for component in pixels.variances
        )
        psf_density = np.zeros(n_bins)
        if psf_fraction is not None:
            fraction = psf_fraction(pixel, alpha_centre[bins], beta_centre[bins])
            if shape is not None:
                fraction = fraction * shape.relative(bins, pixel)
            psf_density = _bin_sum(bins, np.where(used, weight * fraction, 0.0), n_bins) / total
    level = np.where(total > 0, level, np.nan)
    n_clipped = np.bincount(bins, weights=~used, minlength=n_bins).astype(int)
    return level, variances, psf_density, n_clipped


@dataclass
class SpectralShape:
    """
    The spectrum's shape inside each bin, from a finer first-pass spectrum.

    A bin's pixels sit at different wavelengths, and each averages the
    spectrum over its own wavelength span; for a line narrower than a few
    bins, the few pixels that hold most of the PSF sample the line
    unevenly. Modelling each pixel's flux as the bin's mean flux times
    ``pixel / bin`` (the shape averaged over the pixel's span, over the
    shape averaged uniformly across the bin) makes every bin measure the
    uniform mean of the spectrum over its width, so sums over bins conserve
    line fluxes.

    Attributes
    ----------
    pixel : ndarray
        ``(N,)`` shape averaged over each pixel's wavelength span.
    bin : ndarray
        ``(K,)`` shape averaged across each bin.
    pixel_jacobian, bin_jacobian : scipy.sparse.csr_matrix or None
        ``(N, J)`` and ``(K, J)``: ``pixel`` and ``bin`` as linear maps of
        the first pass's ``J`` fluxes (the interpolation's weights).
    first_pass_weights : scipy.sparse.csr_matrix or None
        ``(J, N)`` the first pass's fluxes as a linear map of the pixels'
        light: with the Jacobians, what the shape's noise does to a bin
        (:func:`shape_noise_factor`).

    Notes
    -----
    The shape is measured on the very pixels it then weights, so its noise
    reaches the bins' fluxes, correlated with their own: at a bin
    signal-to-noise of thousands, where the shape follows residual fringes,
    it widens the flux errors by up to about 13%. :func:`shape_noise_factor`
    propagates it to first order.
    """

    pixel: np.ndarray
    bin: np.ndarray
    pixel_jacobian: sparse.csr_matrix | None = None
    bin_jacobian: sparse.csr_matrix | None = None
    first_pass_weights: sparse.csr_matrix | None = None

    def relative(self, bins: np.ndarray, pixel: np.ndarray) -> np.ndarray:
        """Factor ``g`` of each (bin, pixel) pair: 1 where the shape is unknown."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = self.pixel[pixel] / self.bin[bins]
        good = np.isfinite(ratio) & (self.bin[bins] > 0)
        return np.where(good, np.clip(ratio, 0.0, 10.0), 1.0)


def spectral_shape(
    wavelength: np.ndarray,
    flux: np.ndarray,
    error: np.ndarray,
    grid: SpectralGrid,
    wavelength_low: np.ndarray,
    wavelength_high: np.ndarray,
    first_pass_weights: sparse.csr_matrix | None = None,
    coverage: np.ndarray | None = None,
) -> SpectralShape | None:
    """
    Pixel and bin averages of a spectrum interpolated through its significant samples.

    Parameters
    ----------
    wavelength, flux, error : ndarray
        A first-pass spectrum, best sampled finer than ``grid``.
    grid : SpectralGrid
        The bins of the final extraction.
    wavelength_low, wavelength_high : ndarray
        ``(N,)`` each pixel's wavelength span.
    first_pass_weights : scipy.sparse.csr_matrix or None
        ``(J, N)`` the first pass's fluxes as a linear map of the pixels'
        light (its ``flux_weights``): given, the shape carries what its
        noise propagation needs.
    coverage : ndarray or None
        The first pass's PSF coverage (``psf_coverage``): samples under
        ``SHAPE_MIN_COVERAGE`` times its median are not used.

    Returns
    -------
    SpectralShape or None
        None when fewer than three samples exceed ``SHAPE_MIN_SNR`` sigma.
    """
    usable = np.isfinite(flux) & np.isfinite(error) & (flux > SHAPE_MIN_SNR * error)
    if coverage is not None and np.any(coverage > 0):
        usable &= coverage >= SHAPE_MIN_COVERAGE * np.median(coverage[coverage > 0])
    if np.count_nonzero(usable) < 3:
        return None
    centres, values = wavelength[usable], flux[usable]
    structured = _structured_bins(centres, values, error[usable], grid)
    if not np.any(structured):
        return None
    offsets = np.linspace(-0.5, 0.5, SHAPE_SAMPLES)
    samples = grid.wavelength[:, None] + grid.width[:, None] * offsets[None, :]
    # Simpson's rule over each pixel's span; a uniform mean across each bin. Both are linear
    # in the usable samples, with the interpolation's weights as the Jacobian.
    middle = 0.5 * (wavelength_low + wavelength_high)
    pixel_map = (
        _interpolation_matrix(wavelength_low, centres)
        + 4.0 * _interpolation_matrix(middle, centres)
        + _interpolation_matrix(wavelength_high, centres)
    ) / 6.0
    n_bins = len(grid)
    averaging = sparse.csr_matrix(
        (np.full(samples.size, 1.0 / SHAPE_SAMPLES),
         (np.repeat(np.arange(n_bins), SHAPE_SAMPLES), np.arange(samples.size))),
        shape=(n_bins, samples.size),
    )  # fmt: skip
    bin_map = averaging @ _interpolation_matrix(samples.ravel(), centres)
    pixel_mean, bin_mean = pixel_map @ values, bin_map @ values
    bin_mean = np.where(structured, bin_mean, np.nan)
    if first_pass_weights is None:
        return SpectralShape(pixel_mean, bin_mean)
    # Columns of every first-pass sample (the unusable ones do not enter).
    embed = sparse.csr_matrix(
        (np.ones(centres.size), (np.arange(centres.size), np.flatnonzero(usable))),
        shape=(centres.size, wavelength.size),
    )
    return SpectralShape(
        pixel_mean,
        bin_mean,
        (pixel_map @ embed).tocsr(),
        (bin_map @ embed).tocsr(),
        first_pass_weights,
    )


def _interpolation_matrix(x: np.ndarray, centres: np.ndarray) -> sparse.csr_matrix:
    """
    ``(len(x), len(centres))`` weights of :func:`numpy.interp` through ``centres``.

    Examples
    --------
    >>> import numpy as np
    >>> centres = np.array([0.0, 1.0, 3.0])
    >>> matrix = _interpolation_matrix(np.array([-1.0, 0.5, 2.0, 4.0]), centres)
    >>> values = np.array([1.0, 3.0, 7.0])
    >>> bool(np.allclose(matrix @ values, np.interp([-1.0, 0.5, 2.0, 4.0], centres, values)))
    True
    """
    x = np.asarray(x, dtype=float).ravel()
    right = np.clip(np.searchsorted(centres, x, side="right"), 1, centres.size - 1)
    left = right - 1
    # Beyond the ends numpy.interp holds the end values: the clip does the same.
    upper = np.clip((x - centres[left]) / (centres[right] - centres[left]), 0.0, 1.0)
    return sparse.csr_matrix(
        (np.column_stack([1.0 - upper, upper]).ravel(),
         (np.repeat(np.arange(x.size), 2), np.column_stack([left, right]).ravel())),
        shape=(x.size, centres.size),
    )  # fmt: skip


def _structured_bins(centres, values, error, grid: SpectralGrid) -> np.ndarray:
    """Bins whose neighbourhood (+-1.5 bin widths) is not flat within the noise.

    Where the first pass shows no significant structure, a shape taken
    from it would only add its noise to the bin (at high signal-to-noise
    comparable to the bin's own error), so those bins stay flat.
    """
    weight = 1.0 / error**2
    sums = [np.concatenate([[0.0], np.cumsum(term)]) for term in (weight, weight * values,
            weight * values**2, np.ones_like(values))]  # fmt: skip
    first = np.searchsorted(centres, grid.wavelength - 1.5 * grid.width, side="left")
    stop = np.searchsorted(centres, grid.wavelength + 1.5 * grid.width, side="right")
    s0, s1, s2, count = (total[stop] - total[first] for total in sums)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi_square = s2 - s1**2 / s0
    dof = np.maximum(count - 1, 1)
    return (count >= 2) & (chi_square > chi2.isf(SHAPE_FALSE_ALARM, dof))


def optimal_extraction(
    pixels: FootprintPixels,
    members: BinMembers,
    grid: SpectralGrid,
    psf: np.ndarray,
    fit_background: bool = False,
    reject_sigma: float | None = 5.0,
    max_iterations: int = 6,
    shape: SpectralShape | None = None,
) -> BinSpectrum:
    """
    Horne-weighted PSF fits per bin, all bins at once.

    Parameters
    ----------
    pixels : FootprintPixels
        The channel's pixels.
    members : BinMembers
        ``(K, M)`` pixels of each bin.
    grid : SpectralGrid
        The bins.
    psf : ndarray
        ``(K, M)`` PSF share on each member's footprint, at the bin's
        source position and the pixel's own wavelength.
    fit_background : bool
        Fit a constant background surface brightness per bin.
    reject_sigma : float or None
        Outlier threshold in model sigma (None or 0: no rejection).
    max_iterations : int
        Rejection passes (each removes at most the worst pixel per bin).
    shape : SpectralShape or None
        Spectral shape across each bin (None: flat).

    Returns
    -------
    BinSpectrum
        Total flux per bin (``enclosed_fraction`` 1).
    """
    index, inside = members.index, members.inside
    area = pixels.area[index]
    valid = inside & pixels.valid[index]
    data = np.where(valid, pixels.data[index] * area, 0.0)
    variances = [np.where(valid, component[index] * area**2, 0.0) for component in pixels.variances]

    source = psf
    if shape is not None:
        source = psf * shape.relative(np.arange(index.shape[0])[:, None], index)
    terms = [source, area] if fit_background else [source]
    basis = np.stack([np.where(valid, term, 0.0) for term in terms], axis=1)
    var_poisson, var_rnoise, var_flat = variances
    result = fit_rows(
        data, var_rnoise, var_poisson, var_flat, valid, basis, 1, reject_sigma, max_iterations,
        model_tolerance=PSF_MODEL_TOLERANCE,
    )  # fmt: skip
    weights = result.pixel_weights
    used = result.used
    propagated = (result.var_poisson_model, variances[1], variances[2])
    flux_variances = tuple(
        np.sum(np.where(used, weights[:, 0, :] ** 2 * v, 0.0), axis=1) for v in propagated
    )
    n_bins = index.shape[0]
    flux = result.coefficients[:, 0]
    rows = np.broadcast_to(np.arange(n_bins)[:, None], index.shape)
    flux_weights = sparse.csr_matrix(
        (weights[:, 0, :][used], (rows[used], index[used])), shape=(n_bins, pixels.data.size)
    )
    if shape is not None and shape.first_pass_weights is not None and not fit_background:
        factor = shape_noise_factor(
            flux_weights, np.where(used, source, 0.0), index, flux, shape,
            _pixel_variance(sum(propagated), used, index, pixels.data.size),
        )  # fmt: skip
        flux_variances = tuple(variance * factor for variance in flux_variances)
    if fit_background:
        background = result.coefficients[:, 1]
        background_variances = tuple(
            np.sum(np.where(used, weights[:, 1, :] ** 2 * v, 0.0), axis=1) for v in propagated
        )
    else:
        background = np.zeros(n_bins)
        background_variances = tuple(np.zeros(n_bins) for _ in range(3))
    return BinSpectrum(
        flux=flux,
        flux_variances=flux_variances,
        surface_brightness=np.full(n_bins, np.nan),
        background=background,
        background_variances=background_variances,
        npixels=used.sum(axis=1).astype(float),
        enclosed_fraction=np.ones(n_bins),
        n_rejected=result.rejected.sum(axis=1),
        flux_weights=flux_weights,
        psf_coverage=np.sum(np.where(used, psf, 0.0), axis=1),
    )


def _pixel_variance(variance, used, index, n_pixels) -> np.ndarray:
    """``(N,)`` each used pixel's variance (a pixel belongs to one bin), 0 elsewhere."""
    per_pixel = np.zeros(n_pixels)
    per_pixel[index[used]] = variance[used]
    return per_pixel


def shape_noise_factor(
    flux_weights: sparse.csr_matrix,
    source: np.ndarray,
    index: np.ndarray,
    flux: np.ndarray,
    shape: SpectralShape,
    pixel_variance: np.ndarray,
) -> np.ndarray:
    """
    Factor on each bin's flux variance for the noise of the spectral shape it was fitted with.

    Parameters
    ----------
    flux_weights : scipy.sparse.csr_matrix
        ``(K, N)`` the final fit's flux as a linear map of the pixels' light.
    source : ndarray
        ``(K, M)`` the fit's source term on each member (PSF share times the
        shape factor; 0 where unused).
    index : ndarray
        ``(K, M)`` the members' pixel indices.
    flux : ndarray
        ``(K,)`` fitted fluxes.
    shape : SpectralShape
        The shape, with its Jacobians and the first pass's weights.
    pixel_variance : ndarray
        ``(N,)`` each pixel's variance.

    Returns
    -------
    ndarray
        ``(K,)`` total over direct variance (1 where the shape was not used).

    Notes
    -----
    A bin's fit ``F g_p P_p`` with ``g_p = pixel_p / bin_k`` (both linear in
    the first pass's fluxes ``f = V x``, ``x`` the pixels' light) gives, to
    first order, ``dF = u . dx - F (sum_p W_p (A_p / pixel_p) - (sum_p W_p)
    B_k / bin_k) . V dx`` with ``u`` the fit's weights and ``W_p = u_p g_p
    P_p`` (summing to 1: a uniform change of the shape leaves ``F``
    unchanged once divided out). The variance is ``sum_p (dF/dx_p)^2
    sigma_p^2``: the shape's own noise and its correlation with the bin's
    (the first pass reads the same pixels) are both in it.
    """
    n_bins = index.shape[0]
    rows = np.broadcast_to(np.arange(n_bins)[:, None], index.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = flux_weights.multiply(
            sparse.csr_matrix(
                (source[source != 0], (rows[source != 0], index[source != 0])),
                shape=flux_weights.shape,
            )  # fmt: skip
        ).tocsr()
        pixel_scale = np.where(shape.pixel > 0, 1.0 / shape.pixel, 0.0)
        bin_scale = np.where(np.isfinite(shape.bin) & (shape.bin > 0), 1.0 / shape.bin, 0.0)
    # Bins without a shape (flat) have no shape noise: their rows vanish.
    known = sparse.diags(np.where(bin_scale > 0, 1.0, 0.0))
    sensitivity = known @ (
        share @ sparse.diags(pixel_scale) @ shape.pixel_jacobian
        - sparse.diags(np.asarray(share.sum(axis=1)).ravel() * bin_scale) @ shape.bin_jacobian
    )
    total = flux_weights - sparse.diags(flux) @ (sensitivity @ shape.first_pass_weights)
    direct = flux_weights.multiply(flux_weights) @ pixel_variance
    combined = total.multiply(total) @ pixel_variance
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(direct > 0, combined / direct, 1.0)
