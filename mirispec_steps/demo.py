"""``mirispec-demo``: simulate an LRS exposure, box- and optimal-extract it, plot both."""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import numpy as np


def main(argv=None):
    """Run the demo; returns 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo", help="output folder (default: demo/)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")

    from mirispec_steps import LrsBoxExtractStep, LrsOptimalExtractStep
    from mirispec_steps.plotting import plot_spectra
    from mirispec_steps.simulate import offline_crds, simulate_lrs, write_lrs_apcorr

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), offline_crds():
        warnings.simplefilter("ignore")
        sim = simulate_lrs("cal", seed=args.seed, nod_subtracted=False, background=0.0)
        cal_path = out / "demo_lrs_cal.fits"
        sim.model.save(cal_path)
        apcorr = write_lrs_apcorr(out / "demo_lrs_apcorr.fits")
        extract1d = out / "demo_lrs_extract1d.json"
        extract1d.write_text(
            json.dumps(
                {
                    "reftype": "EXTRACT1D",
                    "apertures": [
                        {
                            "id": "ANY",
                            "dispaxis": 2,
                            "xstart": 27,
                            "xstop": 34,
                            "extract_width": 8,
                            "use_source_posn": True,
                        }
                    ],
                },
                indent=2,
            )
        )
        x1d = LrsBoxExtractStep.call(
            str(cal_path),
            override_extract1d=str(extract1d),
            override_apcorr=str(apcorr),
            output_dir=str(out),
            save_results=True,
        )
        optimal = LrsOptimalExtractStep.call(str(cal_path))
        optimal.save(out / "demo_lrs_optimal_x1d.fits")
    table = x1d.spec[0].spec_table
    order = np.argsort(sim.truth.wavelength)
    truth = np.interp(table["WAVELENGTH"], sim.truth.wavelength[order], sim.truth.flux[order])
    select = (table["WAVELENGTH"] > 5) & (table["WAVELENGTH"] < 12)
    ratio = np.asarray(table["FLUX"])[select] / truth[select]
    opt_table = optimal.spec[0].spec_table
    opt_truth = np.interp(
        opt_table["WAVELENGTH"], sim.truth.wavelength[order], sim.truth.flux[order]
    )
    opt_select = (opt_table["WAVELENGTH"] > 5) & (opt_table["WAVELENGTH"] < 12)
    opt_ratio = np.asarray(opt_table["FLUX"])[opt_select] / opt_truth[opt_select]
    plot = plot_spectra(
        {"box extraction": x1d, "optimal extraction": optimal},
        out / "demo_lrs_x1d.png",
        (sim.truth.wavelength, sim.truth.flux),
    )
    print(
        f"x1d written to {out / 'demo_lrs_x1d.fits'} (box) and "
        f"{out / 'demo_lrs_optimal_x1d.fits'} (optimal); plot {plot}"
    )
    for name, values in (("box", ratio), ("optimal", opt_ratio)):
        print(
            f"{name} extraction vs truth (5-12 um): median FLUX/truth = {np.median(values):.4f}, "
            f"max |FLUX/truth - 1| = {np.max(np.abs(values - 1)):.4f}"
        )
    _mrs_demo(out, args.seed)
    return 0


def _mrs_demo(out: Path, seed: int) -> None:
    """Simulate an MRS 1A/2A exposure with its background and references, and calibrate it."""
    from mirispec_steps import MrsCalibrateStep, MrsCentroidStep, MrsExtractStep, read_centroid
    from mirispec_steps.simulate import offline_crds
    from mirispec_steps.simulate.mrs import simulate_mrs

    with warnings.catch_warnings(), offline_crds():
        warnings.simplefilter("ignore")
        simulated = simulate_mrs(seed=seed, time_loss=0.1)
        files = simulated.write(out, stem="demo_mrs")
        calibrated = MrsCalibrateStep.call(
            str(files["rate"]),
            background=str(files["background"]),
            override_photom=str(files["photom"]),
            override_fringe=str(files["fringe"]),
            output_dir=str(out),
            save_results=True,
        )
        centroids = MrsCentroidStep.call(
            calibrated,
            output_dir=str(out),
            save_results=True,
            save_centroid_table=True,
            save_plots=True,
        )
        spectra = {
            method: MrsExtractStep.call(
                centroids,
                method=method,
                output_dir=str(out),
                output_file=f"demo_mrs_{method}",
                save_results=True,
                save_plots=True,
            )
            for method in ("optimal", "aperture")
        }
    table = read_centroid(centroids)
    truth = simulated.truth.surface_brightness
    usable = np.isfinite(calibrated.data) & np.isfinite(truth)
    pulls = (calibrated.data[usable] - truth[usable]) / calibrated.err[usable]
    print(
        f"MRS {'/'.join(simulated.truth.band_names)} calibrated to MJy/sr: "
        f"{out / 'demo_mrs_mrscal.fits'}; (data - truth) / ERR over {usable.sum()} pixels: "
        f"mean {np.mean(pulls):+.3f}, std {np.std(pulls):.3f}"
    )
    for band in dict.fromkeys(table["band"]):
        rows = table[table["band"] == band]
        ok = rows["status"] == "ok"
        offset = np.hypot(
            rows["alpha_smooth"] - simulated.truth.alpha, rows["beta_smooth"] - simulated.truth.beta
        )
        print(
            f"MRS {band} centroids ({out / 'demo_mrs_mrscen.fits'}, plot "
            f"{out / 'demo_mrs_centroid.png'}): {ok.mean():.1%} of {len(rows)} bins ok, "
            f"track within {np.max(offset) * 1e3:.1f} mas of the true position"
        )
    lines = [line.wavelength for line in simulated.truth.lines]
    for method, x1d in spectra.items():
        for spec in x1d.spec:
            spectrum = spec.spec_table
            wavelength = spectrum["WAVELENGTH"]
            # compare away from the emission lines (a bin averages a line over its width)
            clear = np.min(np.abs(wavelength[:, None] - np.array(lines)[None, :]), axis=1) > 0.02
            ratio = spectrum["FLUX"][clear] / simulated.truth.flux(wavelength[clear], spec.name)
            snr = np.nanmedian(spectrum["FLUX"] / spectrum["FLUX_ERROR"])
            print(
                f"MRS {spec.name} {method} spectrum ({out / f'demo_mrs_{method}_x1d.fits'}, "
                f"plot .png): median FLUX / truth {np.nanmedian(ratio):.4f}, "
                f"68% of bins within {np.nanpercentile(np.abs(ratio - 1), 68):.2%}, "
                f"median SNR {snr:.0f}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
