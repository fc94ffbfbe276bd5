"""An ``mrspsf`` PSF cube measured on a bright point source: the model layer of MrsPsfStep.

The exposures (typically a 4-point dither of a standard star: the source at
four pixel phases) are calibrated together: per band, one correction to the
reference PSF (:mod:`mirispec_steps.mrs.core.psf_calibration`) fitted to
every bin of every exposure at once, each exposure with its own fluxes and
its own centroid track. The corrected PSF is then sampled into a cube
(:class:`~mirispec_steps.mrs.core.psf.CubePsf` format) that any later
extraction can use with ``--override_mrspsf``.

Normalisation: the cube is the calibrated PSF as it was fitted, so the star
extracted with its own cube gets back the fluxes of the calibration. Like the
self-calibration, that PSF keeps the reference's share of the light the data
see, and the light beyond the field of view is the reference's. A cube is cut
at ``CUBE_EXTENT_FWHM`` FWHM; its ``enclosed`` is the share of the PSF's light
inside (the reference's wings beyond it stay counted). Given the star's known
spectrum, the normalisation is measured instead: the fluxes fitted with the
measured PSF, divided by the star's, smoothed over the band (a quadratic in
wavelength), scale ``enclosed``; this is what no detector-level fit can see
(light beyond the field, and the reference's error there). It is the
detector-level counterpart of the aperture correction
jwst measures on standard stars.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion, maximum_filter

from mirispec_steps import flags
from mirispec_steps.core.robust import robust_sigma
from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs import exposure as mrs_exposure
from mirispec_steps.mrs.core.psf import half_maximum_width
from mirispec_steps.mrs.core.psf_calibration import (
    LEVEL_FLOOR,
    CorrectedPsf,
    PsfCalibration,
    PsfSamples,
    calibrate_psf,
)
from mirispec_steps.mrs.core.spectral_grid import bin_members
from mirispec_steps.mrs.extract import ARCSEC2_TO_SR, ExtractionSettings, source_track
from mirispec_steps.mrs.geometry import mrs_geometry
from mirispec_steps.mrs.psf_choice import (
    calibration_samples,
    calibration_weights,
    median_snr,
    thin_wings,
    wavelength_nodes,
)

__all__ = [
    "BandPsf",
    "MrsPsfBuildSettings",
    "build_mrs_psf",
    "mrspsf_bands",
    "psf_plane",
    "star_flux_from_table",
]

log = logging.getLogger(__name__)

#: Cube half-width in FWHM (at the band's longest wavelength), cells per FWHM (shortest),
#: and planes per band.
CUBE_EXTENT_FWHM = 8.0
CELLS_PER_FWHM = 8
N_PLANES = 12
#: A source whose calibrated PSF is this much wider than the reference's is not a point source.
MAX_WIDTH_RATIO = 1.5
#: A second peak holding this share of the main peak's density, beyond 1.5 FWHM, is a
#: second source.
SECOND_PEAK = 0.1
#: Share of the bins with a saturated pixel within 1 FWHM of the source that is refused.
MAX_SATURATED_BINS = 0.01
#: The point-source checks look this many FWHM around the source (the correction reaches 8).
CHECK_EXTENT_FWHM = 7.0
#: Where the star's exposures did not see the sky, the reference is scaled by the measured
#: light ratio in annuli this wide (FWHM), taken from annuli the star saw at least this much.
RATIO_ANNULUS_FWHM = 0.5
MIN_ANNULUS_COVERAGE = 0.25
#: The sky the exposures saw is mapped in cells of this size (FWHM), out to this distance,
#: in this many wavelength groups per band (the field, in FWHM, shrinks along a band).
SEEN_CELL_FWHM = 0.125
SEEN_EXTENT_FWHM = 10.0
SEEN_GROUPS = 8
#: Border of the seen sky not counted as seen (FWHM): about one pixel in channels 3 and 4.
SEEN_MARGIN_FWHM = 0.5


@dataclass
class MrsPsfBuildSettings:
    """
    Choices of a PSF build.

    Attributes
    ----------
    min_snr : float
        Smallest median bin S/N of an exposure.
    """

    min_snr: float = 50.0


#: The measured light share must lie between these (else the star spectrum does not match).
LIGHT_SHARE_RANGE = (0.5, 1.1)
#: Bins further than this many robust standard deviations from the smooth share are ignored.
LIGHT_SHARE_CLIP = 4.0


@dataclass
class SeenSky:
    """
    Where the star's exposures saw the sky, in offsets from the star scaled by the FWHM.

    Attributes
    ----------
    wavelength_edges : ndarray
        ``(G + 1,)`` edges of the wavelength groups (micron).
    cell : float
        Cell size (FWHM).
    seen : ndarray
        ``(G, n, n)`` [v, u] True where a pixel footprint of some exposure
        (some bin of the group) covers the cell's centre; cell ``i`` is
        centred on ``(i - n // 2) * cell``.
    """

    wavelength_edges: np.ndarray
    cell: float
    seen: np.ndarray

    def at(self, wavelength: float, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Seen (bool) at scaled offsets ``(u, v)``, from the group holding ``wavelength``."""
        group = int(np.clip(np.searchsorted(self.wavelength_edges, wavelength) - 1, 0,
                            self.seen.shape[0] - 1))  # fmt: skip
        half = self.seen.shape[1] // 2
        column = np.rint(np.asarray(u) / self.cell).astype(int) + half
        row = np.rint(np.asarray(v) / self.cell).astype(int) + half
        inside = (column >= 0) & (column <= 2 * half) & (row >= 0) & (row <= 2 * half)
        result = np.zeros(np.shape(column), dtype=bool)
        result[inside] = self.seen[group][row[inside], column[inside]]
        return result


def seen_sky(samples: PsfSamples, wavelength_range: tuple) -> SeenSky:
    """
    Rasterise the pairs' footprints (scaled offsets) per wavelength group.

    Parameters
    ----------
    samples : PsfSamples
        Every exposure's calibration pairs, with their wavelengths.
    wavelength_range : (float, float)
        The band's wavelengths (micron).

    Returns
    -------
    SeenSky
        ``SEEN_GROUPS`` groups, cells of ``SEEN_CELL_FWHM``.
    """
    low, high = wavelength_range
    edges = np.linspace(low, high, SEEN_GROUPS + 1)
    half = int(np.ceil(SEEN_EXTENT_FWHM / SEEN_CELL_FWHM))
    size = 2 * half + 1
    group = np.clip(np.searchsorted(edges, samples.wavelength) - 1, 0, SEEN_GROUPS - 1)

    def first_last(lower, upper):
        # Cells whose centres lie inside [lower, upper] (scaled offsets).
        first = np.ceil(np.minimum(lower, upper) / SEEN_CELL_FWHM).astype(int) + half
        last = np.floor(np.maximum(lower, upper) / SEEN_CELL_FWHM).astype(int) + half
        return np.clip(first, 0, size), np.clip(last + 1, 0, size)

    u_first, u_stop = first_last(samples.u_low, samples.u_high)
    v_first, v_stop = first_last(samples.v_low, samples.v_high)
    covering = (u_stop > u_first) & (v_stop > v_first)
    # A 2-D difference table per group: +1/-1 at the rectangles' corners, summed up.
    difference = np.zeros((SEEN_GROUPS, size + 1, size + 1))
    covering_group = group[covering]
    for rows, columns, sign in ((v_first, u_first, 1), (v_first, u_stop, -1),
                                (v_stop, u_first, -1), (v_stop, u_stop, 1)):  # fmt: skip
        np.add.at(difference, (covering_group, rows[covering], columns[covering]), sign)
    counts = difference.cumsum(axis=1).cumsum(axis=2)[:, :size, :size]
    # The outermost pixels see only their inner side's light: a correction fitted there
    # is free beyond it (within those same pixels), so the border is not counted as seen.
    margin = int(round(SEEN_MARGIN_FWHM / SEEN_CELL_FWHM))
    structure = np.ones((1, 2 * margin + 1, 2 * margin + 1), dtype=bool)
    return SeenSky(edges, SEEN_CELL_FWHM, binary_erosion(counts > 0.5, structure))


@dataclass
class BandPsf:
    """
    One band's measured PSF.

    Attributes
    ----------
    band : str
        ``1A`` ... ``4C``.
    psf : CorrectedPsf
        Reference plus correction.
    calibration : PsfCalibration
        The joint fit over every exposure.
    wavelength_range : (float, float)
        Wavelengths the exposures cover (micron).
    n_exposures : int
        Exposures that contributed.
    seen : SeenSky or None
        Where the exposures saw the sky (None: everywhere the cube reaches).
    light_share : ndarray or None
        Polynomial coefficients (in wavelength scaled to the band, -0.5..0.5)
        of the fitted flux over the star's known flux; None without one.
    """

    band: str
    psf: CorrectedPsf
    calibration: PsfCalibration
    wavelength_range: tuple
    n_exposures: int
    seen: SeenSky | None = None
    light_share: np.ndarray | None = None

    def measured_share(self, wavelength: np.ndarray) -> np.ndarray | None:
        """Fitted flux / the star's flux at ``wavelength`` (None without a star spectrum)."""
        if self.light_share is None:
            return None
        low, high = self.wavelength_range
        scaled = (np.asarray(wavelength, dtype=float) - 0.5 * (low + high)) / (high - low)
        return np.polynomial.polynomial.polyval(scaled, self.light_share)


def _saturated_share(model, geometry, members, alpha, beta, width) -> float:
    """Share of the bins with a saturated pixel within one FWHM of the source."""
    dq = np.asarray(model.dq)[geometry.y, geometry.x]
    saturated = (dq & flags.SATURATED) != 0
    if not np.any(saturated):
        return 0.0
    index = members.index
    alpha_mid = 0.5 * (geometry.alpha_low + geometry.alpha_high)
    beta_mid = 0.5 * (geometry.beta_low + geometry.beta_high)
    near = members.inside & (
        np.hypot(alpha_mid[index] - alpha[:, None], beta_mid[index] - beta[:, None])
        <= width[:, None]
    )
    return float(np.mean(np.any(near & saturated[index], axis=1)))


def build_mrs_psf(
    models,
    psf_reference,
    resolution,
    settings: MrsPsfBuildSettings,
    star_flux: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """
    Measure the PSF of every band the exposures cover.

    Parameters
    ----------
    models : list of IFUImageModel
        Calibrated exposures of one point source, each with a centroid
        solution (``mrs_centroid``).
    psf_reference : MrsPsfReference
        The reference PSF to correct.
    resolution : ResolvingPower
        Resolving power (the spectral grid).
    settings : MrsPsfBuildSettings
        Thresholds.
    star_flux : callable or None
        The star's flux density (Jy) at given wavelengths (micron): measure
        each band's light share (see the module's notes); None keeps the
        reference's.

    Returns
    -------
    dict
        Band name to :class:`BandPsf`.

    Raises
    ------
    InputDataError
        An exposure too faint or saturated, a calibration that fails, or a
        PSF that is not a single point source's (extended, or two sources).
    """
    per_band: dict[str, list] = {}
    extraction = ExtractionSettings()
    for model in models:
        name = model.meta.filename
        usable = mrs_exposure.usable_pixels(model, True)
        for geometry in mrs_geometry(model):
            grid, alpha, beta = source_track(model, geometry, usable, extraction, resolution)
            reference = psf_reference.for_band(geometry.name, *grid.wavelength_span)
            pixels = mrs_exposure.footprint_pixels(model, geometry, usable)
            members = bin_members(pixels.wavelength, grid)
            width = np.asarray(reference.fwhm(grid.wavelength), dtype=float)
            saturated = _saturated_share(model, geometry, members, alpha, beta, width)
            if saturated > MAX_SATURATED_BINS:
                raise InputDataError(
                    f"{name}, band {geometry.name}: {100 * saturated:.1f}% of the bins have a "
                    "saturated pixel within one FWHM of the source; a PSF cannot be measured "
                    "on a saturated star"
                )
            # No mirror image: the cube serves targets at other positions, and the light it
            # puts where no exposure looked is the reference's, scaled where the sky was seen
            # (seen_sky), not any one field's mirror image.
            samples, pixel = calibration_samples(pixels, members, alpha, beta, reference)
            samples.weight = calibration_weights(pixels, samples, pixel)
            snr = median_snr(samples)
            if not snr >= settings.min_snr:
                raise InputDataError(
                    f"{name}, band {geometry.name}: median bin S/N {snr:.1f} is below "
                    f"min_snr = {settings.min_snr:g}; mrs_psf needs a bright point source"
                )
            samples, pixel = thin_wings(samples, pixel)
            per_band.setdefault(geometry.name, []).append((samples, reference, grid))
    if not per_band:
        raise InputDataError("the input holds no MRS exposure")
    results = {band: _calibrate_band(band, entries) for band, entries in per_band.items()}
    if star_flux is not None:
        for band, result in results.items():
            grids = [grid for _, _, grid in per_band[band]]
            result.light_share = _light_share(result, grids, star_flux)
    return results


def _light_share(result: BandPsf, grids: list, star_flux) -> np.ndarray:
    """Quadratic in scaled wavelength through fitted flux / star flux, clipped iteratively."""
    wavelength = np.concatenate([grid.wavelength for grid in grids])
    # The fit's fluxes are surface brightness (MJy/sr) times arcsec^2.
    flux = result.calibration.flux * ARCSEC2_TO_SR * 1.0e6
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = flux / np.asarray(star_flux(wavelength), dtype=float)
    low, high = result.wavelength_range
    scaled = (wavelength - 0.5 * (low + high)) / (high - low)
    keep = np.isfinite(ratio)
    if keep.sum() < 10:
        raise InputDataError(
            f"band {result.band}: the star spectrum covers {keep.sum()} measured bins; "
            "it must cover the band"
        )
    for _ in range(5):
        coefficients = np.polynomial.polynomial.polyfit(scaled[keep], ratio[keep], 2)
        residual = ratio - np.polynomial.polynomial.polyval(scaled, coefficients)
        spread = robust_sigma(residual[keep])
        clipped = np.isfinite(ratio) & (np.abs(residual) <= LIGHT_SHARE_CLIP * spread)
        if np.array_equal(clipped, keep):
            break
        keep = clipped
    share = np.polynomial.polynomial.polyval(scaled[keep], coefficients)
    lowest, highest = LIGHT_SHARE_RANGE
    if not (np.min(share) > lowest and np.max(share) < highest):
        raise InputDataError(
            f"band {result.band}: the fluxes measured with the PSF are {np.min(share):.3g} to "
            f"{np.max(share):.3g} times the star spectrum's (expected {lowest:g} to "
            f"{highest:g}): is it this star's spectrum, in Jy against micron?"
        )
    log.info(
        f"Band {result.band}: measured flux / star spectrum {np.min(share):.4f} to "
        f"{np.max(share):.4f} ({keep.sum()} bins): the PSF cube's light share"
    )
    return coefficients


def star_flux_from_table(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """
    A star's flux density from a table file, interpolated linearly in wavelength.

    Parameters
    ----------
    path : str
        Any table astropy reads (ECSV, FITS, an x1d file's first spectrum)
        with columns ``WAVELENGTH`` (micron) and ``FLUX`` (Jy); units, when
        the columns carry them, are converted.

    Returns
    -------
    callable
        ``flux(wavelength)`` in Jy, NaN outside the table's range.

    Raises
    ------
    InputDataError
        Unreadable file, missing columns, wavelengths not increasing, or
        fluxes not positive and finite.
    """
    from astropy import units as u
    from astropy.table import Table

    name = str(path)
    try:
        table = Table.read(name)
    except Exception as exc:  # astropy raises many types for unreadable tables
        raise InputDataError(f"star spectrum {name} cannot be read as a table: {exc}") from None
    columns = {column.upper(): column for column in table.colnames}
    if "WAVELENGTH" not in columns or "FLUX" not in columns:
        raise InputDataError(f"star spectrum {name} needs columns WAVELENGTH and FLUX")
    wavelength_column, flux_column = table[columns["WAVELENGTH"]], table[columns["FLUX"]]
    try:
        wavelength = (
            np.asarray(wavelength_column, dtype=float)
            if wavelength_column.unit is None
            else wavelength_column.quantity.to_value(u.micron, equivalencies=u.spectral())
        )
        flux = (
            np.asarray(flux_column, dtype=float)
            if flux_column.unit is None
            else flux_column.quantity.to_value(
                u.Jy, equivalencies=u.spectral_density(wavelength * u.micron)
            )
        )
    except u.UnitConversionError as exc:
        raise InputDataError(
            f"star spectrum {name}: units cannot be converted to micron and Jy ({exc})"
        ) from None
    if wavelength.size < 2 or not np.all(np.diff(wavelength) > 0):
        raise InputDataError(f"star spectrum {name}: WAVELENGTH must increase")
    if not np.all(np.isfinite(flux) & (flux > 0)):
        raise InputDataError(f"star spectrum {name}: FLUX must be positive and finite")

    def flux_at(where):
        return np.interp(np.asarray(where, float), wavelength, flux, left=np.nan, right=np.nan)

    return flux_at


def _calibrate_band(band: str, entries: list) -> BandPsf:
    """One correction fitted to all exposures of a band (their bins numbered in turn)."""
    joined = PsfSamples.joined([samples for samples, _, _ in entries])
    try:
        # The cube serves targets at other pixel phases: what the star's slices cannot see
        # must be as smooth as the reference's level there (the prior's, scaled).
        calibration = calibrate_psf(joined, wavelength_nodes=wavelength_nodes(joined),
                                    level_floor=LEVEL_FLOOR)  # fmt: skip
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise InputDataError(f"band {band}: the PSF calibration failed ({exc})") from None
    reference = entries[0][1]
    psf = calibration.corrected(reference)
    low = min(grid.wavelength_span[0] for _, _, grid in entries)
    high = max(grid.wavelength_span[1] for _, _, grid in entries)
    seen = seen_sky(joined, (low, high))
    result = BandPsf(band, psf, calibration, (low, high), len(entries), seen)
    _check_point_source(result)
    log.info(
        f"Band {band}: PSF measured on {len(entries)} exposure(s), {calibration.n_pairs} pixels; "
        f"chi-square {calibration.reference_chi_square:.4g} with the reference -> "
        f"{calibration.chi_square:.4g}"
    )
    return result


def psf_plane(psf, wavelength: float, half_width: float, cell: float, seen: SeenSky | None = None):
    """
    Mean surface density of ``psf`` on a square grid of cells at one wavelength.

    A calibrated PSF is sampled as it was fitted where the star's exposures
    saw the sky (``seen``): the fluxes the calibration measured belong to
    that PSF. Where they did not (the far wings in directions no dither
    reached, which a target elsewhere in the field may see), the correction
    is unconstrained (a basis function seen at its edge only may take any
    value beyond), so the reference is used there, scaled by the
    calibrated-to-reference light ratio measured at the same distance from
    the centre (``_radial_ratio``), the ratio of the last well-seen distance
    holding beyond.
    """
    half = int(np.ceil(half_width / cell))
    centres = cell * np.arange(-half, half + 1)
    low_a, low_b = np.meshgrid(centres - 0.5 * cell, centres - 0.5 * cell)
    edges = (low_a, low_a + cell, low_b, low_b + cell, 0.0, 0.0, np.full(low_a.shape, wavelength))
    measured = psf.footprint_fraction(*edges)
    if seen is None or not isinstance(psf, CorrectedPsf):
        return centres, measured / cell**2
    width = float(psf.fwhm(wavelength))
    grid_a, grid_b = np.meshgrid(centres / width, centres / width)
    observed = seen.at(wavelength, grid_a, grid_b)
    reference = psf.reference.footprint_fraction(*edges)
    ratio = _radial_ratio(np.hypot(grid_a, grid_b), measured, reference, observed)
    return centres, np.where(observed, measured, ratio * reference) / cell**2


def _radial_ratio(radius, measured, reference, seen) -> np.ndarray:
    """Per cell, the measured / reference light of the seen cells in its annulus (FWHM units)."""
    annulus = np.floor(radius / RATIO_ANNULUS_FWHM).astype(int)
    n_annuli = int(annulus.max()) + 1
    seen = seen.astype(float)
    seen_measured = np.bincount(annulus.ravel(), (seen * measured).ravel(), n_annuli)
    seen_reference = np.bincount(annulus.ravel(), (seen * reference).ravel(), n_annuli)
    coverage = np.bincount(annulus.ravel(), seen.ravel(), n_annuli) / np.bincount(
        annulus.ravel(), minlength=n_annuli
    )
    ratio = np.ones(n_annuli)
    last = 1.0
    for index in range(n_annuli):
        # An annulus the star barely saw takes the ratio of the last one it saw well.
        if coverage[index] >= MIN_ANNULUS_COVERAGE and seen_reference[index] > 0:
            last = seen_measured[index] / seen_reference[index]
        ratio[index] = last
    return ratio[annulus]


def _check_point_source(result: BandPsf) -> None:
    """Refuse a measured PSF much wider than the reference's, or with a second peak."""
    middle = float(np.mean(result.wavelength_range))
    width = float(result.psf.fwhm(middle))
    centres, density = psf_plane(result.psf, middle, CHECK_EXTENT_FWHM * width, width / 8)
    centre_row = density[density.shape[0] // 2]
    # NaN (no half maximum inside the checked region) counts as too wide.
    widest = max(
        half_maximum_width(centre_row, centres),
        half_maximum_width(density[:, density.shape[1] // 2], centres),
        key=lambda value: np.inf if np.isnan(value) else value,
    )
    if not widest <= MAX_WIDTH_RATIO * width:
        raise InputDataError(
            f"band {result.band}: the measured PSF is {widest:.2f} arcsec wide "
            f"(FWHM), the reference's {width:.2f}: the source is extended, not a point source"
        )
    peak = density.max()
    radius = np.hypot(*np.meshgrid(centres, centres))
    local = (density == maximum_filter(density, size=5)) & (radius > 1.5 * width)
    if np.any(local & (density > SECOND_PEAK * peak)):
        raise InputDataError(
            f"band {result.band}: the measured PSF has a second peak beyond 1.5 FWHM holding "
            f"more than {100 * SECOND_PEAK:.0f}% of the main peak: two sources in the field?"
        )


def mrspsf_bands(results: dict) -> dict:
    """
    The measured PSFs as ``mrspsf`` cube entries.

    The format is :func:`mirispec_steps.mrs.references.load_mrs_psf`'s.

    Parameters
    ----------
    results : dict
        Band to :class:`BandPsf`.

    Returns
    -------
    dict
        Band to ``{wavelength, alpha, beta, data, enclosed}``: ``N_PLANES`` planes
        over the band's wavelengths padded by 2%, cells of 1/8 of the
        shortest wavelength's FWHM out to 8 FWHM of the longest's. The
        densities are kept as measured, negative where the pixels do not
        resolve the PSF (pixel-sized footprints integrate them correctly).
    """
    bands = {}
    for band, result in results.items():
        low, high = result.wavelength_range
        wavelength = np.linspace(low * 0.98, high * 1.02, N_PLANES)
        cell = float(result.psf.fwhm(wavelength[0])) / CELLS_PER_FWHM
        half_width = CUBE_EXTENT_FWHM * float(result.psf.fwhm(wavelength[-1]))
        planes = []
        for value in wavelength:
            centres, density = psf_plane(result.psf, float(value), half_width, cell, result.seen)
            planes.append(density)
        bands[band] = {
            "wavelength": wavelength,
            "alpha": centres,
            "beta": centres,
            "data": np.array(planes),
        }
        # The fluxes were fitted with the calibrated PSF as it is over the whole sky; the
        # cube's planes hold its light inside the cube (the reference's wings beyond it are
        # not in them), and with a star spectrum that PSF is the measured share of the light.
        inside = np.array(planes).sum(axis=(1, 2)) * cell**2
        share = result.measured_share(wavelength)
        bands[band]["enclosed"] = inside * (1.0 if share is None else share)
    return bands
