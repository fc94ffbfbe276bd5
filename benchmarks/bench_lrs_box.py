"""Speed of LrsBoxExtractStep against jwst's Extract1dStep, both in this process.

stpipe's ``Step.run`` starts with a ``gc.collect()`` that costs the same for
every step; each step's own cost is measured above that floor as
``Step.call(step) - Step.call(no-op step)`` on the same in-memory input,
alternating the runs. Prints raw times, the floor and the ratios.

Also times what the bad-pixel repair adds to a 300-integration series with 1% bad pixels.

Run: ``python benchmarks/bench_lrs_box.py [--nints 1000]``
"""

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
warnings.simplefilter("ignore")

from floor_timing import compare_above_floor  # noqa: E402
from jwst.extract_1d import Extract1dStep  # noqa: E402

from mirispec_steps import LrsBoxExtractStep  # noqa: E402
from mirispec_steps.simulate import offline_crds, simulate_lrs, write_lrs_apcorr  # noqa: E402

JWST_EXTRA = {
    "override_psf": "N/A",
    "override_pastasoss": "N/A",
    "override_specprofile": "N/A",
    "override_speckernel": "N/A",
}


def compare(label, model, extract1d, apcorr, repeats):
    ours = lambda: LrsBoxExtractStep.call(  # noqa: E731
        model, override_extract1d=extract1d, override_apcorr=apcorr
    )
    theirs = lambda: Extract1dStep.call(  # noqa: E731
        model, override_extract1d=extract1d, override_apcorr=apcorr, **JWST_EXTRA
    )
    return compare_above_floor(label, model, ours, theirs, repeats)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nints", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    apcorr = str(write_lrs_apcorr(work / "apcorr.fits"))
    with offline_crds():
        cal = simulate_lrs("cal", seed=1).model
        extract1d = work / "cal.json"
        extract1d.write_text(
            json.dumps(
                {
                    "apertures": [
                        {
                            "id": "ANY",
                            "dispaxis": 2,
                            "xstart": 329,
                            "xstop": 336,
                            "bkg_coeff": [[303.5], [309.5], [339.5], [345.5]],
                            "bkg_order": 1,
                            "use_source_posn": False,
                        }
                    ]
                }
            )
        )
        compare(
            "full-frame cal, box + poly background + apcorr",
            cal,
            str(extract1d),
            apcorr,
            args.repeats,
        )
        cube = simulate_lrs("calints", n_integrations=args.nints, seed=2).model
        slitless = work / "slitless.json"
        slitless.write_text(
            json.dumps(
                {
                    "apertures": [
                        {
                            "id": "ANY",
                            "dispaxis": 2,
                            "xstart": 34,
                            "xstop": 41,
                            "use_source_posn": False,
                        }
                    ]
                }
            )
        )
        own_ours, own_jwst = compare(
            f"slitless calints, {args.nints} integrations, box + apcorr",
            cube,
            str(slitless),
            apcorr,
            max(1, args.repeats // 3),
        )
        print(
            f"  per integration: ours {own_ours / args.nints * 1e3:.3f} ms, "
            f"jwst {own_jwst / args.nints * 1e3:.3f} ms"
        )
        repair_cost(slitless, apcorr, args.repeats)


def repair_cost(extract1d, apcorr, repeats, n_int=300, bad_fraction=0.01):
    """What the bad-pixel repair adds: 300 integrations with 1% bad pixels, repair on vs off."""
    cube = simulate_lrs(
        "calints", n_integrations=n_int, seed=3, bad_pixel_fraction=bad_fraction
    ).model

    def run(repair):
        start = time.perf_counter()
        LrsBoxExtractStep.call(
            cube, override_extract1d=str(extract1d), override_apcorr=apcorr,
            replace_bad_pixels=repair,
        )  # fmt: skip
        return time.perf_counter() - start

    times = {True: [], False: []}
    for _ in range(max(1, repeats)):
        for repair in (False, True):
            times[repair].append(run(repair))
    with_repair, without = min(times[True]), min(times[False])
    print(
        f"bad-pixel repair, {n_int} integrations with {bad_fraction:.0%} bad pixels: "
        f"{with_repair * 1e3:.0f} ms with, {without * 1e3:.0f} ms without "
        f"(repair adds {with_repair / without - 1:+.0%}; target < +30%)"
    )


if __name__ == "__main__":
    main()
