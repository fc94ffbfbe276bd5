"""MrsExtractStep versus a plain per-bin loop implementation of the same sums.

Both run in one process on the same full-detector calibrated exposure (two
channels, built-in geometry, centroid attached). The plain version, kept
here as the comparison, loops over spectral bins: it selects each bin's
pixels with a wavelength mask, evaluates the same exact ellipse overlaps and
PSF footprint integrals on them, and for the optimal method runs the same
Horne iteration (model variance regressed on VAR_POISSON, outlier rejection
one pixel at a time) with ``numpy.linalg.lstsq``; the spectral shape comes
from the same first pass on bins a third as wide, also one bin at a time.
The script prints both timings, their ratio, and how close the fluxes agree.

Run: ``python benchmarks/bench_mrs_extract.py [--repeats 3]``.
"""

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
warnings.simplefilter("ignore")

import numpy as np  # noqa: E402
from floor_timing import NoOpStep  # noqa: E402

from mirispec_steps import MrsCentroidStep, MrsExtractStep  # noqa: E402
from mirispec_steps.mrs.calibrate import calibrate_mrs, load_backgrounds  # noqa: E402
from mirispec_steps.mrs.core.ellipse_overlap import EllipticalAperture, ellipse_overlap  # noqa: E402
from mirispec_steps.mrs.core.extract import spectral_shape  # noqa: E402
from mirispec_steps.mrs.exposure import footprint_pixels, usable_pixels  # noqa: E402
from mirispec_steps.mrs.extract import (  # noqa: E402
    ARCSEC2_TO_SR,
    FIT_REACH_FWHM,
    ExtractionSettings,
    source_track,
)
from mirispec_steps.mrs.geometry import mrs_geometry  # noqa: E402
from mirispec_steps.mrs.references import (  # noqa: E402
    load_calibration_references,
    load_mrs_psf,
    load_mrs_resolution,
)
from mirispec_steps.references import packaged_reference  # noqa: E402
from mirispec_steps.simulate import offline_crds  # noqa: E402
from mirispec_steps.simulate.mrs import simulate_mrs  # noqa: E402


def _bin_pixels(pixels, centre, width, alpha=None, beta=None, reach=None):
    """A bin's usable pixels; with ``reach``, only those near (alpha, beta) as the step fits.

    Pixels are sorted by wavelength once, so a bin is a slice of that order
    (the plain version is not charged for scanning every pixel per bin).
    """
    if not hasattr(pixels, "order"):
        pixels.order = np.argsort(pixels.wavelength, kind="stable")
        pixels.sorted_wavelength = pixels.wavelength[pixels.order]
    first, stop = np.searchsorted(
        pixels.sorted_wavelength, [centre - width / 2, centre + width / 2], side="left"
    )
    stop = np.searchsorted(pixels.sorted_wavelength, centre + width / 2, side="right")
    members = pixels.order[first:stop]
    chosen = pixels.valid[members]
    if reach is not None:
        alpha_mid = 0.5 * (pixels.alpha_low[members] + pixels.alpha_high[members])
        beta_mid = 0.5 * (pixels.beta_low[members] + pixels.beta_high[members])
        chosen &= (np.abs(alpha_mid - alpha) <= reach) & (np.abs(beta_mid - beta) <= reach)
    return members[chosen]


def _fraction(psf, pixels, members, alpha, beta):
    return psf.footprint_fraction(
        pixels.alpha_low[members],
        pixels.alpha_high[members],
        pixels.beta_low[members],
        pixels.beta_high[members],
        alpha,
        beta,
        pixels.wavelength[members],
    )


def plain_optimal_bin(pixels, members, profile, reject_sigma=5.0):
    """One bin's Horne fit: data variance first, then model variance, then rejection."""
    area = pixels.area[members]
    data = pixels.data[members] * area
    var_poisson = pixels.var_poisson[members] * area**2
    var_other = (pixels.var_rnoise[members] + pixels.var_flat[members]) * area**2
    used = np.ones(members.size, dtype=bool)
    variance = var_other + var_poisson
    flux = np.nan
    for iteration in range(9):
        if used.sum() < 1 or not np.any(profile[used] > 0):
            return np.nan, np.nan
        weight = 1.0 / np.sqrt(variance[used])
        flux = np.linalg.lstsq((profile[used] * weight)[:, None], data[used] * weight, rcond=None)[
            0
        ][0]
        model = flux * profile
        if iteration < 2:
            signal = np.abs(model)
            spread = signal[used] - signal[used].mean()
            slope = max(
                np.sum(spread * (var_poisson[used] - var_poisson[used].mean()))
                / max(np.sum(spread**2), 1e-300),
                0.0,
            )
            offset = max(var_poisson[used].mean() - slope * signal[used].mean(), 0.0)
            variance = var_other + offset + slope * signal
        score = np.where(used, np.abs(data - model) / np.sqrt(variance), 0.0)
        worst = int(np.argmax(score))
        if iteration >= 1 and score[worst] > reject_sigma:
            used[worst] = False
        elif iteration >= 2:
            break
    weight = profile / variance * used
    error = np.sqrt(np.sum(weight**2 * variance) / np.sum(weight * profile) ** 2)
    return flux, error


def plain_channel(pixels, grid, alpha, beta, semi_major, psf, method):
    """Both passes, one bin at a time."""
    sub = 3
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    fine_centres = (grid.wavelength[:, None] + grid.width[:, None] * offsets).ravel()
    fine_widths = np.repeat(grid.width / sub, sub)
    order = np.argsort(fine_centres)
    fine_centres, fine_widths = fine_centres[order], fine_widths[order]
    first = np.full((fine_centres.size, 2), np.nan)
    for k in range(fine_centres.size):
        a = np.interp(fine_centres[k], grid.wavelength, alpha)
        b = np.interp(fine_centres[k], grid.wavelength, beta)
        reach = FIT_REACH_FWHM * psf.fwhm(fine_centres[k])
        members = _bin_pixels(pixels, fine_centres[k], fine_widths[k], a, b, reach)
        first[k] = plain_optimal_bin(pixels, members, _fraction(psf, pixels, members, a, b))
    shape = spectral_shape(
        fine_centres, first[:, 0], first[:, 1], grid, pixels.wavelength_low, pixels.wavelength_high
    )
    flux = np.full(len(grid), np.nan)
    for k in range(len(grid)):
        reach = FIT_REACH_FWHM * psf.fwhm(grid.wavelength[k]) if method == "optimal" else None
        members = _bin_pixels(pixels, grid.wavelength[k], grid.width[k], alpha[k], beta[k], reach)
        profile = _fraction(psf, pixels, members, alpha[k], beta[k])
        if shape is not None:
            profile = profile * shape.relative(np.full(members.size, k), members)
        if method == "optimal":
            flux[k] = plain_optimal_bin(pixels, members, profile)[0]
            continue
        weight = ellipse_overlap(
            pixels.alpha_low[members],
            pixels.alpha_high[members],
            pixels.beta_low[members],
            pixels.beta_high[members],
            alpha[k],
            beta[k],
            EllipticalAperture(semi_major[k]),
        )
        area = pixels.area[members]
        flux[k] = np.sum(weight * area * pixels.data[members]) / np.sum(weight * profile)
    return flux * ARCSEC2_TO_SR * 1e6


class _Pixels:
    """Footprint pixels plus the wavelength span the shape needs."""

    def __init__(self, pixels, geometry):
        self.__dict__.update(vars(pixels))
        self.wavelength_low = geometry.wavelength_low
        self.wavelength_high = geometry.wavelength_high


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_mrs_extract_"))
    with offline_crds(folder / "crds"):
        simulated = simulate_mrs(seed=2, alpha=0.3, beta=-0.2)
        files = {role: str(path) for role, path in simulated.write(folder).items()}
        references = load_calibration_references(simulated.rate, files["fringe"], files["photom"])
        calibrated = calibrate_mrs(
            simulated.rate, references, load_backgrounds(simulated.background, simulated.rate, 3)
        )
        calibrated.meta.filename = "bench_mrscal.fits"
        centred = MrsCentroidStep.call(calibrated)
        timings, products, floors = {}, {}, []
        NoOpStep.call(centred)
        for method in ("optimal", "aperture"):
            # The plain loop uses the reference PSF: so does the step here (psf=reference).
            MrsExtractStep.call(centred, method=method, psf="reference")  # warm up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                NoOpStep.call(centred)
                floors.append(time.perf_counter() - start)
                start = time.perf_counter()
                products[method] = MrsExtractStep.call(centred, method=method, psf="reference")
                times.append(time.perf_counter() - start)
            timings[method] = float(np.median(times))
        floor = float(np.median(floors))

        psf_reference = load_mrs_psf(packaged_reference("mirispec_miri_mrs_psf.asdf"))
        resolution = load_mrs_resolution(packaged_reference("mirispec_miri_mrs_resolution.json"))
        plain_times, plain_flux = {}, {}
        for method in ("optimal", "aperture"):
            settings = ExtractionSettings(method=method)
            start = time.perf_counter()
            usable = usable_pixels(centred, settings.reject_spikes)
            for geometry in mrs_geometry(centred):
                grid, alpha, beta = source_track(centred, geometry, usable, settings, resolution)
                psf = psf_reference.for_band(
                    geometry.name, grid.wavelength[0] - grid.width[0], grid.wavelength[-1] * 1.001
                )
                pixels = _Pixels(footprint_pixels(centred, geometry, usable), geometry)
                semi_major = settings.radius * psf.fwhm(grid.wavelength)
                plain_flux[method, geometry.name] = plain_channel(
                    pixels, grid, alpha, beta, semi_major, psf, method
                )
            plain_times[method] = time.perf_counter() - start
    bins = sum(len(spec.spec_table) for spec in products["optimal"].spec)
    together = timings["optimal"] + timings["aperture"]
    plain_together = plain_times["optimal"] + plain_times["aperture"]
    print(f"full detector, 2 channels, {bins} spectral bins")
    for method in ("optimal", "aperture"):
        print(
            f"  {method:8s}: MrsExtractStep.call (median of {args.repeats}) "
            f"{timings[method] * 1e3:.0f} ms, "
            f"plain per-bin loop {plain_times[method] * 1e3:.0f} ms, "
            f"ratio {plain_times[method] / timings[method]:.1f}x"
        )
    print(
        f"  both methods: {together * 1e3:.0f} ms (target < 1000 ms), plain "
        f"{plain_together * 1e3:.0f} ms, ratio {plain_together / together:.1f}x (target 10x)"
    )
    own = together - 2 * floor
    print(
        f"  stpipe floor (no-op Step.call) {floor * 1e3:.0f} ms per call; own cost of both "
        f"methods {own * 1e3:.0f} ms, ratio {plain_together / own:.1f}x"
    )
    for method in ("optimal", "aperture"):
        for spec in products[method].spec:
            ours = np.asarray(spec.spec_table["FLUX"])
            theirs = plain_flux[method, spec.name]
            both = np.isfinite(ours) & np.isfinite(theirs)
            difference = np.abs(ours[both] / theirs[both] - 1)
            print(
                f"  {method} {spec.name}: median |step/plain - 1| = {np.median(difference):.1e}, "
                f"99th percentile {np.percentile(difference, 99):.1e}"
            )


if __name__ == "__main__":
    main()
