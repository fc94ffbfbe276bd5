"""Time of a full-frame MRS calibration: MrsCalibrateStep versus jwst's fringe + photom steps.

Both sides run in one process on the same in-memory simulated slope image
(1024 x 1032, built-in WCS, time-dependent correction in the photom file):
ours does background subtraction, fringe, photom and the time correction in
one step; jwst's side is ``FringeStep`` then ``PhotomStep`` (no background
step, so jwst does less work). Also times the model-level calibration alone
(no stpipe) and the geometry it needs for the time correction.

Run: ``python benchmarks/bench_mrs_calibrate.py [--repeats 5]``.
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
warnings.simplefilter("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from floor_timing import compare_above_floor  # noqa: E402
from jwst.fringe import FringeStep  # noqa: E402
from jwst.photom import PhotomStep  # noqa: E402

from mirispec_steps import MrsCalibrateStep  # noqa: E402
from mirispec_steps.mrs.calibrate import (  # noqa: E402
    calibrate_mrs,
    load_backgrounds,
)
from mirispec_steps.mrs.references import load_calibration_references  # noqa: E402
from mirispec_steps.simulate import offline_crds  # noqa: E402
from mirispec_steps.simulate.mrs import simulate_mrs  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_mrs_calibrate_"))
    with offline_crds(folder / "crds"):
        simulated = simulate_mrs(seed=1, time_loss=0.2)
        files = {role: str(path) for role, path in simulated.write(folder).items()}
        rate, background = simulated.rate, simulated.background

        def ours():
            return MrsCalibrateStep.call(
                rate,
                background=background,
                override_photom=files["photom"],
                override_fringe=files["fringe"],
            )

        def theirs():
            fringed = FringeStep.call(rate, override_fringe=files["fringe"])
            return PhotomStep.call(fringed, override_photom=files["photom"], override_area="N/A")

        compare_above_floor(
            "full-frame MRS slope image: ours (bkg + fringe + photom + time) "
            "vs jwst (fringe + photom + time)",
            rate,
            ours,
            theirs,
            args.repeats,
        )

        references = load_calibration_references(rate, files["fringe"], files["photom"])
        combined = load_backgrounds(background, rate, 3.0)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            calibrate_mrs(rate, references, combined)
            times.append(time.perf_counter() - start)
        median_ms = np.median(times) * 1e3
        print(f"\nmodel-level calibrate_mrs (no stpipe, no file reading): {median_ms:.0f} ms")
        start = time.perf_counter()
        load_calibration_references(rate, files["fringe"], files["photom"])
        print(f"reading both reference files: {(time.perf_counter() - start) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
