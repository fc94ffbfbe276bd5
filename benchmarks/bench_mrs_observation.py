"""A whole dithered MRS observation, end to end: accuracy of the combined spectrum and its cost.

The observation (:func:`~mirispec_steps.simulate.simulate_mrs_observation`):
all six grating settings (12 bands) at the four points of a dither, 24
exposures with their background exposures, one source (a stellar continuum
falling as lambda^-2, 50 mJy at 5 micron, with the simulator's emission
lines), simulated with a PSF the package does not model (``--psf
diffraction``, default, or ``moffat``), with point-source fringes unlike the
fringe flat (:class:`~mirispec_steps.simulate.PointSourceFringes`) and the
1B -> 3A spectral leak, with noise. The references come from a local CRDS,
selected per exposure as online.

1. Serial, in this process, step by step: ``mrs_calibrate`` (each exposure
   with its own background), ``mrs_centroid``, ``mrs_extract``, then
   ``mrs_combine``; the time of each stage.
2. End to end as a user runs a large set: ``run_batch`` of ``mrs_point_source``
   over the 24 per-exposure associations (exposure + background) on a local
   dask cluster of 2 process workers, then ``mrs_combine`` on the 24 x1d
   files; wall time (cluster start timed apart).
3. The combined spectrum against the truth (lines masked, 3 FWHM): per band
   the median of RF_FLUX / truth - 1 over the band interior and in the
   overlaps; the residual-fringe amplitude (2.9 cm^-1) of FLUX and RF_FLUX
   over the truth; the 3A spectrum within 0.15 micron of 12.2 micron before
   (the leak) and after correction. With ``--pulls``, a noise-free twin of
   every exposure is extracted and combined too, and the pulls
   ``(FLUX - FLUX_noise_free) / FLUX_ERROR`` per band measure the combined
   errors apart from the extraction's systematic offset (3A's where the leak
   is negligible: the leak curve's own uncertainty, in the errors, is a
   systematic the twin shares).

The simulated exposures take about 2 GB per observation (4.4 GB with
``--star``); they are deleted at exit unless ``--keep`` (the combined
spectrum and its plot stay).

Run: ``python benchmarks/bench_mrs_observation.py [--psf moffat] [--pulls] [--no-batch] [--keep]``.
"""

import argparse
import atexit
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
warnings.simplefilter("ignore")

import numpy as np  # noqa: E402

from mirispec_steps import (  # noqa: E402
    MrsCalibrateStep,
    MrsCentroidStep,
    MrsCombineStep,
    MrsExtractStep,
)
from mirispec_steps.core.gaussian import FWHM_TO_SIGMA  # noqa: E402
from mirispec_steps.mrs.core.residual_fringe import fringe_amplitude  # noqa: E402
from mirispec_steps.simulate import (  # noqa: E402
    PointSourceFringes,
    default_spectral_leak,
    simulate_mrs_observation,
)
from mirispec_steps.simulate.mrs_psf import MISMATCHED_MRS_FAMILIES  # noqa: E402

#: Leak fraction below which a 3A bin's error holds no leak systematic worth counting.
LEAK_NEGLIGIBLE = 1.0e-4


def star(wavelength):
    """A stellar continuum (Jy): 50 mJy at 5 micron falling as lambda^-2 (a strong 1B leak)."""
    return 0.05 * (np.asarray(wavelength, dtype=float) / 5.0) ** -2


def chain(exposure, noise_free=False, psf_file=None, psf_mode="auto", draw=None):
    """calibrate, centroid, extract one exposure; (x1d, seconds per stage).

    ``noise_free``: its noise-free twin; ``draw``: the same scene with new noise (that seed,
    one per exposure).
    """
    psf = {} if psf_file is None else {"override_mrspsf": psf_file}
    times = {}
    rate, background = exposure.files["rate"], exposure.files["background"]
    if noise_free or draw is not None:
        twin = exposure.simulated.redraw(seed=1 if noise_free else draw, noise=not noise_free)
        rate, background = twin.rate, twin.background
        tag = "_nf_rate" if noise_free else f"_draw{draw}_rate"
        rate.meta.filename = Path(exposure.files["rate"]).name.replace("_rate", tag)
    start = time.perf_counter()
    calibrated = MrsCalibrateStep.call(rate, background=background)
    times["calibrate"] = time.perf_counter() - start
    start = time.perf_counter()
    located = MrsCentroidStep.call(calibrated, **psf)
    times["centroid"] = time.perf_counter() - start
    start = time.perf_counter()
    x1d = MrsExtractStep.call(located, psf=psf_mode, **psf)
    times["extract"] = time.perf_counter() - start
    return x1d, times


def star_psf(folder, family):
    """``mrs_psf`` on a bright standard star (same PSF family, known spectrum) in all 12 bands."""
    from astropy.table import Table

    from mirispec_steps import MrsPsfStep

    def standard(wavelength):
        return 0.3 * (np.asarray(wavelength, dtype=float) / 5.0) ** -2

    stars = simulate_mrs_observation(
        folder / "star", name="star", continuum=standard, lines=(), psf=family,
        point_source_fringes=PointSourceFringes(), bad_pixel_fraction=1e-3, seed=11,
        dithers=((0.25, 0.2), (-0.25, -0.2), (0.25, -0.2), (-0.25, 0.2)),
    )  # fmt: skip
    wavelength = np.linspace(4.5, 29.0, 4000)
    spectrum = Table({"WAVELENGTH": wavelength, "FLUX": standard(wavelength)})
    spectrum["WAVELENGTH"].unit, spectrum["FLUX"].unit = "micron", "Jy"
    spectrum_path = folder / "star_spectrum.ecsv"
    spectrum.write(spectrum_path, overwrite=True)
    with stars.crds(folder / "star_crds"):
        centred = [
            MrsCentroidStep.call(MrsCalibrateStep.call(e.files["rate"],
                                                       background=e.files["background"]))
            for e in stars.exposures
        ]  # fmt: skip
    product = MrsPsfStep.call(centred, star_spectrum=str(spectrum_path))
    path = folder / "star_mrspsf.asdf"
    product.save(path)
    return str(path)


def tidy(folder: Path) -> None:
    """Delete the simulated exposures, references and per-exposure products (gigabytes)."""
    for name in ("data", "star", "crds", "star_crds", "batch"):
        shutil.rmtree(folder / name, ignore_errors=True)


def line_mask(wavelength, truth, band):
    masked = np.zeros(wavelength.size, dtype=bool)
    for line in truth.lines:
        sigma = truth.resolving_power.fwhm(band, line.wavelength) * FWHM_TO_SIGMA
        masked |= np.abs(wavelength - line.wavelength) < 3 * sigma / FWHM_TO_SIGMA
    return masked


def band_pulls(c1d, twin, name, truth):
    """``(FLUX - FLUX_noise_free) / FLUX_ERROR`` of one band, where the noise alone acts."""
    table = {spec.name: spec for spec in c1d.spec[1:]}[name].spec_table
    reference = {spec.name: spec for spec in twin.spec[1:]}[name].spec_table
    wavelength = np.asarray(table["WAVELENGTH"], dtype=float)
    # The grids are the union of the dithers' bins: a noise draw may hold a bin more or less.
    twin_wavelength = np.round(np.asarray(reference["WAVELENGTH"], dtype=float), 9)
    index = np.clip(np.searchsorted(twin_wavelength, np.round(wavelength, 9)), 0,
                    twin_wavelength.size - 1)  # fmt: skip
    shared = twin_wavelength[index] == np.round(wavelength, 9)
    noise_free = np.where(shared, np.asarray(reference["FLUX"], dtype=float)[index], np.nan)
    pull = (np.asarray(table["FLUX"]) - noise_free) / np.asarray(table["FLUX_ERROR"])
    # The leak correction's error holds the leak curve's own uncertainty (5% of the leak), a
    # systematic the noise-free twin shares: the pulls measure the noise, so 3A's are taken
    # where the leak is negligible.
    clean = ~line_mask(wavelength, truth, name)
    no_leak = default_spectral_leak(wavelength) < LEAK_NEGLIGIBLE
    return pull[clean & no_leak & np.isfinite(pull)]


def measure(c1d, truth, twin=None, draws=()):
    """Print the accuracy table of a combined product.

    ``draws``: more combined products of the same scene with new noise; the pulls are then
    pooled over all the noise draws (one draw's pull std has a statistical scatter of
    ``1 / sqrt(2 N)`` over ``N`` bins, and bins of dithers share realisations).
    """
    bands = {spec.name: spec for spec in c1d.spec[1:]}
    ranges = {name: (spec.spec_table["WAVELENGTH"][0], spec.spec_table["WAVELENGTH"][-1])
              for name, spec in bands.items()}  # fmt: skip
    twin_bands = {} if twin is None else {spec.name: spec for spec in twin.spec[1:]}
    print(f"{'band':>4} {'interior':>9} {'overlaps':>9} {'fringe FLUX':>12} {'fringe RF':>10}"
          f" {'pull std':>9} {'pull mean':>9}")  # fmt: skip
    worst = {"interior": 0.0, "overlap": 0.0, "fringe": 0.0}
    for name, spec in bands.items():
        table = spec.spec_table
        wavelength = np.asarray(table["WAVELENGTH"], dtype=float)
        expected = truth.flux(wavelength, name)
        clean = ~line_mask(wavelength, truth, name)
        in_overlap = np.zeros(wavelength.size, dtype=bool)
        for other, (low, high) in ranges.items():
            if other != name:
                in_overlap |= (wavelength >= low) & (wavelength <= high)
        relative_rf = np.asarray(table["RF_FLUX"]) / expected - 1
        relative = np.asarray(table["FLUX"]) / expected - 1
        interior = float(np.nanmedian(relative_rf[clean & ~in_overlap]))
        overlap = float(np.nanmedian(relative_rf[clean & in_overlap])) if np.any(
            clean & in_overlap) else np.nan  # fmt: skip
        before = float(np.mean(fringe_amplitude(wavelength[clean], relative[clean])))
        after = float(np.mean(fringe_amplitude(wavelength[clean], relative_rf[clean])))
        pulls = (np.nan, np.nan)
        if name in twin_bands:
            pull = [band_pulls(product, twin, name, truth) for product in (c1d, *draws)]
            pulls = (float(np.std(np.concatenate(pull))), float(np.mean(np.concatenate(pull))))
            spread = [float(np.std(values)) for values in pull]
        worst["interior"] = max(worst["interior"], abs(interior))
        if np.isfinite(overlap):
            worst["overlap"] = max(worst["overlap"], abs(overlap))
        worst["fringe"] = max(worst["fringe"], after)
        per_draw = f"  (draws {min(spread):.3f}-{max(spread):.3f})" if draws else ""
        print(f"{name:>4} {100 * interior:+8.2f}% {100 * overlap:+8.2f}% {100 * before:11.2f}% "
              f"{100 * after:9.2f}% {pulls[0]:9.3f} {pulls[1]:+9.3f}{per_draw}")  # fmt: skip
        if name == "3A":
            near = clean & (np.abs(wavelength - 12.2) < 0.15)
            leak = c1d.mirispec_combination.instance["spectral_leak"]
            print(f"     3A at 12.2 micron: leak up to {100 * leak.get('peak_share', 0):.1f}% "
                  f"of the flux; after correction FLUX {100 * np.nanmedian(relative[near]):+.2f}%,"
                  f" RF_FLUX {100 * np.nanmedian(relative_rf[near]):+.2f}%")  # fmt: skip
    print(
        f"worst band interior {100 * worst['interior']:.2f}%, overlap "
        f"{100 * worst['overlap']:.2f}%, residual fringe {100 * worst['fringe']:.2f}%"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--psf", default="diffraction", choices=sorted(MISMATCHED_MRS_FAMILIES))
    parser.add_argument("--pulls", action="store_true", help="extract noise-free twins too")
    parser.add_argument(
        "--noise-draws", type=int, default=1,
        help="with --pulls: noise draws of the scene the pulls are pooled over (each ~90 s)",
    )  # fmt: skip
    parser.add_argument("--no-batch", action="store_true", help="skip the dask end-to-end run")
    parser.add_argument(
        "--star",
        action="store_true",
        help="extract with mrs_psf's PSF from a standard star of the same family",
    )
    parser.add_argument("--extract-psf", default="auto", choices=("auto", "reference"))
    parser.add_argument("--keep", action="store_true", help="keep the simulated exposures")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_mrs_observation_"))
    if not args.keep:
        atexit.register(tidy, folder)
    psf_file = None
    if args.star:
        start = time.perf_counter()
        psf_file = star_psf(folder, MISMATCHED_MRS_FAMILIES[args.psf]())
        print(f"standard-star PSF (mrs_psf, 24 exposures) built in "
              f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    start = time.perf_counter()
    observation = simulate_mrs_observation(
        folder / "data", continuum=star, psf=MISMATCHED_MRS_FAMILIES[args.psf](),
        point_source_fringes=PointSourceFringes(), spectral_leak=default_spectral_leak,
        bad_pixel_fraction=1e-3, seed=7,
    )  # fmt: skip
    print(f"simulated {len(observation.exposures)} exposures ({args.psf} PSF, not the package's) "
          f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
    with observation.crds(folder / "crds"):
        totals = {"calibrate": 0.0, "centroid": 0.0, "extract": 0.0}
        spectra = []
        start = time.perf_counter()
        for exposure in observation.exposures:
            x1d, times = chain(exposure, psf_file=psf_file, psf_mode=args.extract_psf)
            spectra.append(x1d)
            for stage, seconds in times.items():
                totals[stage] += seconds
        start_combine = time.perf_counter()
        c1d = MrsCombineStep.call(spectra, output_dir=str(folder), save_results=True,
                                  save_plots=True)  # fmt: skip
        totals["combine"] = time.perf_counter() - start_combine
        serial = time.perf_counter() - start
        print("serial, one process: " + ", ".join(f"{stage} {seconds:.1f} s"
                                                  for stage, seconds in totals.items())
              + f"; total {serial:.1f} s ({serial / len(spectra):.2f} s per exposure)")  # fmt: skip
        twin, draws = None, []
        if args.pulls:
            twins = [chain(exposure, True, psf_file, args.extract_psf)[0]
                     for exposure in observation.exposures]  # fmt: skip
            twin = MrsCombineStep.call(twins)
            for draw in range(2, args.noise_draws + 1):
                # Every exposure its own seed: one seed for all would give the four dithers
                # the same noise, pixel for pixel, and their errors would not be independent.
                draws.append(MrsCombineStep.call([
                    chain(exposure, psf_file=psf_file, psf_mode=args.extract_psf,
                          draw=1000 * draw + number)[0]
                    for number, exposure in enumerate(observation.exposures)
                ]))  # fmt: skip
        measure(c1d, observation.truth, twin, draws)
        print(f"plot: {folder / 'mrs_observation_mirifushort_short_d1_c1d.png'}")
        if not args.no_batch:
            from mirispec_steps.batch import run_batch

            associations = [str(e.files["association"]) for e in observation.exposures]
            parameters = [f"--steps.mrs_extract.psf={args.extract_psf}"]
            if psf_file:
                parameters += [f"--steps.{name}.override_mrspsf={psf_file}"
                               for name in ("mrs_centroid", "mrs_extract")]  # fmt: skip
            start = time.perf_counter()
            output = folder / "batch"
            # run_batch's own local cluster (2 process workers; its start is counted).
            manifest = run_batch(associations, "mrs_point_source", parameters,
                                 output_dir=output, workers=2)  # fmt: skip
            batch = time.perf_counter() - start
            start = time.perf_counter()
            MrsCombineStep.call(sorted(str(p) for p in output.glob("*_x1d.fits")))
            combine = time.perf_counter() - start
            failed = [record for record in manifest.records if record.status == "failed"]
            print(
                "end to end on 2 dask workers (cluster start included): "
                f"mrs_point_source x {len(associations)} {batch:.1f} s, mrs_combine "
                f"{combine:.1f} s, total {batch + combine:.1f} s; {len(failed)} failed"
            )


if __name__ == "__main__":
    main()
