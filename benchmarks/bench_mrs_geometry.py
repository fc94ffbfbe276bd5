"""Time of MRS geometry extraction per band: first call and cached call, built-in and flight WCS.

Run: ``python benchmarks/bench_mrs_geometry.py`` (flight geometry from ``tests/data/mrs``).
"""

import os
import time
from pathlib import Path

os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")

from mirispec_steps.mrs.geometry import mrs_geometry  # noqa: E402
from mirispec_steps.simulate import (  # noqa: E402
    assign_real_mrs_wcs,
    blank_mrs_model,
    build_mrs_wcs,
)

REAL_MRS_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "mrs"


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def report(label, model):
    geometries, first = timed(lambda: mrs_geometry(model))
    _, cached = timed(lambda: mrs_geometry(model))
    pixels = sum(g.x.size for g in geometries)
    print(f"{label}: {pixels} pixels, first {first * 1e3:.0f} ms, cached {cached * 1e6:.0f} us")


def main():
    for detector, band in (("MIRIFUSHORT", "SHORT"), ("MIRIFULONG", "LONG")):
        model = blank_mrs_model(detector, band)
        model.meta.wcs, build = timed(lambda m=model: build_mrs_wcs(m))
        print(f"built-in WCS {detector} {band}: built in {build * 1e3:.0f} ms")
        report(f"  built-in {detector} {band}", model)
    directory = REAL_MRS_DIR
    for detector, band in (("MIRIFUSHORT", "SHORT"), ("MIRIFULONG", "LONG")):
        model, assign = timed(
            lambda d=detector, b=band: assign_real_mrs_wcs(blank_mrs_model(d, b), directory)
        )
        print(f"flight WCS {detector} {band}: AssignWcsStep {assign * 1e3:.0f} ms")
        report(f"  flight {detector} {band}", model)


if __name__ == "__main__":
    main()
