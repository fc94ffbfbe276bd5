"""Time of MRS geometry extraction per band: first call and cached call, built-in and flight WCS.

Run: ``python benchmarks/bench_mrs_geometry.py`` (the flight part needs ``../shared/data/mrs``).
"""

import os
import time
import warnings

os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
warnings.simplefilter("ignore")

from mirispec_steps.adapters.mrs import abl_to_pixel, mrs_geometry  # noqa: E402
from mirispec_steps.simulate import (  # noqa: E402
    assign_real_mrs_wcs,
    blank_mrs_model,
    build_mrs_wcs,
    real_mrs_reference_dir,
)


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def report(label, model):
    geometries, first = timed(lambda: mrs_geometry(model))
    _, cached = timed(lambda: mrs_geometry(model))
    pixels = sum(g.x.size for g in geometries)
    print(f"{label}: {pixels} pixels, first {first * 1e3:.0f} ms, cached {cached * 1e6:.0f} us")
    for geometry in geometries:
        _, inverse = timed(
            lambda g=geometry: abl_to_pixel(model, g.channel, g.alpha, g.beta, g.wavelength)
        )
        print(f"  channel {geometry.name}: exact inverse of all pixels {inverse * 1e3:.0f} ms")


def main():
    for detector, band in (("MIRIFUSHORT", "SHORT"), ("MIRIFULONG", "LONG")):
        model = blank_mrs_model(detector, band)
        model.meta.wcs, build = timed(lambda m=model: build_mrs_wcs(m))
        print(f"built-in WCS {detector} {band}: built in {build * 1e3:.0f} ms")
        report(f"  built-in {detector} {band}", model)
    directory = real_mrs_reference_dir()
    if directory is None:
        print("flight geometry skipped: ../shared/data/mrs not found")
        return
    for detector, band in (("MIRIFUSHORT", "SHORT"), ("MIRIFULONG", "LONG")):
        model, assign = timed(
            lambda d=detector, b=band: assign_real_mrs_wcs(blank_mrs_model(d, b), directory)
        )
        print(f"flight WCS {detector} {band}: AssignWcsStep {assign * 1e3:.0f} ms")
        report(f"  flight {detector} {band}", model)


if __name__ == "__main__":
    main()
