"""MRS PSF self-calibration: accuracy on PSFs the package does not model, and its cost.

For each simulated PSF family (:mod:`mirispec_steps.simulate.mrs_psf`) and
geometry (built-in 1A/2A and 3A/4A; flight 1A/2A and 3C/4C when the real
geometry files are in ``tests/data/mrs``), one noise-free exposure is
simulated with that PSF, calibrated, centroided with ``MrsCentroidStep`` and
extracted with the packaged analytic ``mrspsf``: with ``psf="reference"``
(the model alone) and ``psf="auto"`` (calibrated on the exposure), both
methods. It prints median and p10..p90 of FLUX / truth - 1 per band, the
share of the family's light beyond the field and beyond the field's
symmetric hull through the source (which no measurement sees: the
calibration reads the light between the two, mirrored, on the field's far
side), and the times of the centroid and of each extraction. Before timing, the
objects alive are frozen out of the garbage collector's reach, as the batch
runner's workers do (stpipe runs a full ``gc.collect()`` at every step start:
~0.13 s per step in a process holding jwst; ``--no-freeze`` keeps that cost).

Run: ``python benchmarks/bench_mrs_psf.py [--flight] [--families diffraction,moffat]
[--no-residual-fringe]`` (the last times the chain without jwst's residual-fringe fit,
which runs on every spectrum by default and is no part of the PSF work).
"""

import argparse
import gc
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
warnings.simplefilter("ignore")

import numpy as np  # noqa: E402

from mirispec_steps import MrsCentroidStep, MrsExtractStep  # noqa: E402
from mirispec_steps.mrs.calibrate import calibrate_mrs, load_backgrounds  # noqa: E402
from mirispec_steps.mrs.core.psf import MrsPsf  # noqa: E402
from mirispec_steps.mrs.geometry import mrs_geometry  # noqa: E402
from mirispec_steps.mrs.references import load_calibration_references  # noqa: E402
from mirispec_steps.simulate.mrs import simulate_mrs  # noqa: E402
from mirispec_steps.simulate.mrs_psf import (  # noqa: E402
    MISMATCHED_MRS_FAMILIES,
    light_outside_field,
)

FLIGHT_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "mrs"
POSITION = (0.3, -0.2)


def calibrated(folder, family, detector, band, flight):
    """A noise-free exposure simulated with ``family``, calibrated (model layer)."""
    extra = {"reference_dir": FLIGHT_DIR} if flight else {}
    simulated = simulate_mrs(
        detector, band, psf=MISMATCHED_MRS_FAMILIES[family](), noise=False,
        bad_pixel_fraction=0.0, alpha=POSITION[0], beta=POSITION[1], seed=1, **extra,
    )  # fmt: skip
    files = simulated.write(folder)
    references = load_calibration_references(simulated.rate, files["fringe"], files["photom"])
    background = load_backgrounds(simulated.background, simulated.rate, 3.0)
    return simulated, calibrate_mrs(simulated.rate, references, background)


def summary(x1d, simulated):
    rows = {}
    for spec in x1d.spec:
        table = spec.spec_table
        ratio = table["FLUX"] / simulated.truth.flux(table["WAVELENGTH"], spec.name) - 1
        rows[spec.name] = np.nanpercentile(ratio, [50, 10, 90]) * 100
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flight", action="store_true", help="also the flight geometry")
    parser.add_argument("--families", default="diffraction,moffat,gaussian_variant")
    parser.add_argument("--no-freeze", action="store_true", help="keep stpipe's gc cost")
    parser.add_argument(
        "--no-residual-fringe", action="store_true",
        help="extract without the residual-fringe fit (jwst's, run on every spectrum by default)",
    )  # fmt: skip
    args = parser.parse_args()
    cases = [("MIRIFUSHORT", "SHORT", False), ("MIRIFULONG", "SHORT", False)]
    if args.flight:
        cases += [("MIRIFUSHORT", "SHORT", True), ("MIRIFULONG", "LONG", True)]
    print("FLUX / truth - 1 (%): median [p10..p90]; packaged analytic mrspsf, noise-free")
    for family in args.families.split(","):
        for detector, band, flight in cases:
            with tempfile.TemporaryDirectory() as folder:
                simulated, model = calibrated(folder, family, detector, band, flight)
                if not args.no_freeze:
                    gc.collect()
                    gc.freeze()
                start = time.perf_counter()
                centred = MrsCentroidStep.call(model)
                centroid_time = time.perf_counter() - start
                results, times = {}, {}
                for mode in ("reference", "auto"):
                    for method in ("optimal", "aperture"):
                        start = time.perf_counter()
                        x1d = MrsExtractStep.call(
                            centred, method=method, psf=mode,
                            residual_fringe=not args.no_residual_fringe,
                        )  # fmt: skip
                        times[mode, method] = time.perf_counter() - start
                        results[mode, method] = summary(x1d, simulated)
                unseen = {}
                for geometry in mrs_geometry(model):
                    middle = float(np.nanmedian(geometry.wavelength))
                    unseen[geometry.name] = [
                        100 * light_outside_field(psf, geometry, *POSITION, middle, mirrored)
                        for mirrored in (False, True)
                        for psf in (simulated.truth.psf, MrsPsf())
                    ]
            where = "flight" if flight else "built-in"
            chain = centroid_time + times["auto", "optimal"] + times["auto", "aperture"]
            print(
                f"\n{family}, {where} {detector} {band}: centroid {centroid_time:.2f} s; "
                f"chain (centroid, auto optimal, auto aperture) {chain:.2f} s"
            )
            for (mode, method), rows in results.items():
                text = "  ".join(
                    f"{name} {m:+.2f} [{lo:+.2f}..{hi:+.2f}]" for name, (m, lo, hi) in rows.items()
                )
                print(f"  {mode:9s} {method:8s} {times[mode, method]:5.2f} s  {text}")
            text = ", ".join(
                f"{name} {truth:.2f}% (reference {reference:.2f}%), beyond its symmetric hull "
                f"{hull_truth:.2f}% ({hull_reference:.2f}%)"
                for name, (truth, reference, hull_truth, hull_reference) in unseen.items()
            )
            print(f"  light beyond the field at mid-band: {text}")


if __name__ == "__main__":
    main()
