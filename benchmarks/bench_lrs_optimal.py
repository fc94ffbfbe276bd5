"""Speed of LrsOptimalExtractStep against jwst's optimal extraction, both in this process.

Same method as ``bench_lrs_box.py``: each step's own cost is
``Step.call(step) - Step.call(no-op step)`` on the same in-memory input,
alternating the runs. jwst runs with ``extraction_type="optimal"``,
``optimize_psf_location=True`` and ``subtract_background=True``; ours with
its defaults (location optimised, joint background, outlier rejection,
profile measured from the data when the source is bright), on the same PSF
file; and ours with the measured profile against ours with the file's.

The inputs are simulated with the package's own PSF model (``simulate_lrs``'s
default): a speed benchmark, the matched case; accuracy on PSFs the package
does not model is ``bench_lrs_profile.py``'s.

Run: ``python benchmarks/bench_lrs_optimal.py [--nints 100]``
"""

import argparse
import os
import warnings

os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
warnings.simplefilter("ignore")

from floor_timing import compare_above_floor  # noqa: E402
from jwst.extract_1d import Extract1dStep  # noqa: E402

from mirispec_steps import LrsOptimalExtractStep  # noqa: E402
from mirispec_steps.references import packaged_reference  # noqa: E402
from mirispec_steps.simulate import offline_crds, simulate_lrs  # noqa: E402

PSF = packaged_reference("mirispec_miri_lrs_psf.fits")
EXTRACT1D = packaged_reference("mirispec_miri_lrs_extract1d.json")
JWST_OPTIMAL = {
    "extraction_type": "optimal",
    "optimize_psf_location": True,
    "subtract_background": True,
    "use_source_posn": True,
    "override_psf": PSF,
    "override_extract1d": EXTRACT1D,
    "override_apcorr": "N/A",
    "override_pastasoss": "N/A",
    "override_specprofile": "N/A",
    "override_speckernel": "N/A",
}


def compare(label, model, repeats, ours_kwargs):
    ours = lambda: LrsOptimalExtractStep.call(model, **ours_kwargs)  # noqa: E731
    theirs = lambda: Extract1dStep.call(model, **JWST_OPTIMAL)  # noqa: E731
    return compare_above_floor(label, model, ours, theirs, repeats)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nints", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with offline_crds():
        cal = simulate_lrs("cal", seed=1).model
        compare("full-frame cal, optimal + location + background", cal, args.repeats, {})
        # What the profile measured from the data costs on top of the reference's profile.
        psf_only = {"profile": "psf"}
        ours_psf = lambda: LrsOptimalExtractStep.call(cal, **psf_only)  # noqa: E731
        ours_auto = lambda: LrsOptimalExtractStep.call(cal)  # noqa: E731
        compare_above_floor("full-frame cal: ours measured profile vs ours PSF profile", cal,
                            ours_auto, ours_psf, args.repeats,
                            labels=("measured", "psf"))  # fmt: skip
        cube = simulate_lrs("calints", n_integrations=args.nints, seed=2).model
        own_ours, own_jwst = compare(
            f"slitless calints, {args.nints} integrations, optimal", cube, args.repeats, {}
        )
        print(
            f"  per integration: ours {own_ours / args.nints * 1e3:.3f} ms, "
            f"jwst {own_jwst / args.nints * 1e3:.3f} ms"
        )


if __name__ == "__main__":
    main()
