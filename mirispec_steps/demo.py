"""``mirispec-demo``: simulate LRS and MRS exposures, run all five steps and both pipelines.

Everything runs offline on the package's simulator and packaged reference
files. The products, every step's diagnostic plot and a summary figure
(``demo_summary.png``) are written to the output folder, and each spectrum is
compared with the simulated truth on the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import numpy as np

#: LRS wavelengths compared with the truth (the LRS throughput is low outside).
LRS_RANGE = (5.0, 12.0)


def main(argv=None):
    """Run the demo; returns 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo", help="output folder (default: demo/)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from mirispec_steps.simulate import offline_crds

    with warnings.catch_warnings(), offline_crds():
        warnings.simplefilter("ignore")
        lrs = _lrs_demo(out, args.seed)
        mrs = _mrs_demo(out, args.seed)
    summary = _plot_summary(lrs, mrs, out / "demo_summary.png")
    print(f"Summary figure: {summary}")
    return 0


def _lrs_demo(out: Path, seed: int) -> dict:
    """LRS: both extraction steps, then LrsExtractPipeline on the same cal file."""
    from mirispec_steps import LrsBoxExtractStep, LrsExtractPipeline, LrsOptimalExtractStep
    from mirispec_steps.simulate import simulate_lrs, write_lrs_apcorr

    simulated = simulate_lrs("cal", seed=seed, nod_subtracted=False, background=0.0)
    cal_path = out / "demo_lrs_cal.fits"
    simulated.model.save(cal_path)
    apcorr = str(write_lrs_apcorr(out / "demo_lrs_apcorr.fits"))
    extract1d = out / "demo_lrs_extract1d.json"
    aperture = {"id": "ANY", "dispaxis": 2, "xstart": 27, "xstop": 34, "extract_width": 8}
    aperture["use_source_posn"] = True
    extract1d.write_text(json.dumps({"reftype": "EXTRACT1D", "apertures": [aperture]}, indent=2))
    common = {"output_dir": str(out), "save_results": True, "save_plots": True}
    box_references = {"override_extract1d": str(extract1d), "override_apcorr": apcorr}
    box = LrsBoxExtractStep.call(
        str(cal_path), output_file="demo_lrs", **box_references, **common
    )
    optimal = LrsOptimalExtractStep.call(str(cal_path), output_file="demo_lrs", **common)
    pipeline = LrsExtractPipeline.call(
        str(cal_path), output_file="demo_lrs_pipeline",
        steps={"lrs_box_extract": box_references},
        **common,
    )  # fmt: skip
    truth = (simulated.truth.wavelength, simulated.truth.flux)
    spectra = {"LRS box (step)": box, "LRS optimal (step)": optimal}
    for label, x1d, path in (
        ("box step", box, "demo_lrs_box_x1d.fits"),
        ("optimal step", optimal, "demo_lrs_optimal_x1d.fits"),
        ("lrs_extract pipeline (optimal)", pipeline, "demo_lrs_pipeline_x1d.fits"),
    ):
        ratio = _lrs_ratio(x1d, truth)
        print(
            f"LRS {label}: {out / path} (plot .png): median FLUX/truth {np.median(ratio):.4f}, "
            f"max |FLUX/truth - 1| {np.max(np.abs(ratio - 1)):.4f} over {LRS_RANGE[0]:g}-"
            f"{LRS_RANGE[1]:g} um"
        )
    same = np.array_equal(
        pipeline.spec[0].spec_table["FLUX"], optimal.spec[0].spec_table["FLUX"], equal_nan=True
    )
    print(f"LRS pipeline product identical to the optimal step's: {same}")
    return {"spectra": spectra, "truth": truth}


def _lrs_ratio(x1d, truth) -> np.ndarray:
    table = x1d.spec[0].spec_table
    order = np.argsort(truth[0])
    expected = np.interp(table["WAVELENGTH"], truth[0][order], truth[1][order])
    select = (table["WAVELENGTH"] > LRS_RANGE[0]) & (table["WAVELENGTH"] < LRS_RANGE[1])
    return np.asarray(table["FLUX"])[select] / expected[select]


def _mrs_demo(out: Path, seed: int) -> dict:
    """MRS: calibrate, centroid and extract step by step, then MrsPointSourcePipeline."""
    from mirispec_steps import (
        MrsCalibrateStep,
        MrsCentroidStep,
        MrsExtractStep,
        MrsPointSourcePipeline,
        read_centroid,
    )
    from mirispec_steps.simulate.mrs import simulate_mrs

    simulated = simulate_mrs(seed=seed, time_loss=0.1)
    files = {role: str(path) for role, path in simulated.write(out, stem="demo_mrs").items()}
    references = {"override_photom": files["photom"], "override_fringe": files["fringe"]}
    common = {"output_dir": str(out), "save_results": True, "save_plots": True}
    calibrated = MrsCalibrateStep.call(
        files["rate"], background=files["background"], **references, **common
    )
    centroids = MrsCentroidStep.call(calibrated, save_centroid_table=True, **common)
    spectra = {
        method: MrsExtractStep.call(
            centroids, method=method, output_file="demo_mrs", **common
        )
        for method in ("optimal", "aperture")
    }
    pipeline = MrsPointSourcePipeline.call(
        files["rate"], output_file="demo_mrs_pipeline",
        steps={"mrs_calibrate": {"background": files["background"], **references}},
        **common,
    )  # fmt: skip

    truth = simulated.truth.surface_brightness
    usable = np.isfinite(calibrated.data) & np.isfinite(truth)
    pulls = (calibrated.data[usable] - truth[usable]) / calibrated.err[usable]
    print(
        f"MRS {'/'.join(simulated.truth.band_names)} calibrated to MJy/sr: "
        f"{out / 'demo_mrs_mrscal.fits'}; (data - truth) / ERR over {usable.sum()} pixels: "
        f"mean {np.mean(pulls):+.3f}, std {np.std(pulls):.3f}"
    )
    table = read_centroid(centroids)
    for band in dict.fromkeys(table["band"]):
        rows = table[table["band"] == band]
        offset = np.hypot(
            rows["alpha_smooth"] - simulated.truth.alpha, rows["beta_smooth"] - simulated.truth.beta
        )
        print(
            f"MRS {band} centroids ({out / 'demo_mrs_mrscen.fits'}, plot "
            f"{out / 'demo_mrs_centroid.png'}): {np.mean(rows['status'] == 'ok'):.1%} of "
            f"{len(rows)} bins ok, track within {np.max(offset) * 1e3:.1f} mas of the truth"
        )
    lines = np.array([line.wavelength for line in simulated.truth.lines])
    for label, x1d, path in (
        ("optimal step", spectra["optimal"], "demo_mrs_optimal_x1d.fits"),
        ("aperture step", spectra["aperture"], "demo_mrs_aperture_x1d.fits"),
        ("mrs_point_source pipeline", pipeline, "demo_mrs_pipeline_x1d.fits"),
    ):
        for spec in x1d.spec:
            ratio = _mrs_ratio(spec, simulated, lines)
            snr = np.nanmedian(spec.spec_table["FLUX"] / spec.spec_table["FLUX_ERROR"])
            print(
                f"MRS {spec.name} {label} ({out / path}): median FLUX/truth "
                f"{np.nanmedian(ratio):.4f}, 68% of bins within "
                f"{np.nanpercentile(np.abs(ratio - 1), 68):.2%}, median SNR {snr:.0f}"
            )
    same = all(
        np.array_equal(a.spec_table["FLUX"], b.spec_table["FLUX"], equal_nan=True)
        for a, b in zip(pipeline.spec, spectra["optimal"].spec, strict=True)
    )
    print(f"MRS pipeline product identical to the step-by-step optimal spectra: {same}")
    return {"spectra": spectra, "simulated": simulated, "lines": lines}


def _mrs_ratio(spec, simulated, lines) -> np.ndarray:
    """FLUX / truth away from the emission lines (a bin averages a line over its width)."""
    wavelength = np.asarray(spec.spec_table["WAVELENGTH"])
    clear = np.min(np.abs(wavelength[:, None] - lines[None, :]), axis=1) > 0.02
    flux = np.asarray(spec.spec_table["FLUX"])[clear]
    return flux / simulated.truth.flux(wavelength[clear], spec.name)


def _plot_summary(lrs: dict, mrs: dict, path: Path) -> str:
    """One figure: LRS and MRS spectra against the truth, and their ratios to it."""
    from mirispec_steps.plots import new_figure

    figure, axes = new_figure(
        2, 2, figsize=(13, 7.5), sharex="col", gridspec_kw={"height_ratios": [3, 1]}
    )
    truth = lrs["truth"]
    order = np.argsort(truth[0])
    for index, (label, x1d) in enumerate(lrs["spectra"].items()):
        table = x1d.spec[0].spec_table
        wavelength, flux = np.asarray(table["WAVELENGTH"]), np.asarray(table["FLUX"])
        error = np.asarray(table["FLUX_ERROR"])
        axes[0, 0].fill_between(
            wavelength, (flux - error) * 1e3, (flux + error) * 1e3, color=f"C{index}", alpha=0.3
        )
        axes[0, 0].plot(wavelength, flux * 1e3, color=f"C{index}", lw=0.8, label=label)
        expected = np.interp(wavelength, truth[0][order], truth[1][order])
        axes[1, 0].plot(wavelength, flux / expected - 1, color=f"C{index}", lw=0.6)
    axes[0, 0].plot(truth[0][order], truth[1][order] * 1e3, "k--", lw=0.8, label="truth")
    axes[0, 0].set_title("MIRI LRS (simulated)")

    simulated = mrs["simulated"]
    for index, (method, x1d) in enumerate(mrs["spectra"].items()):
        for channel, spec in enumerate(x1d.spec):
            table = spec.spec_table
            wavelength, flux = np.asarray(table["WAVELENGTH"]), np.asarray(table["FLUX"])
            label = f"MRS {method}" if channel == 0 else None
            axes[0, 1].plot(wavelength, flux * 1e3, color=f"C{index}", lw=0.8, label=label)
            # A bin averages a line over its width: ratios away from the lines only.
            clear = np.min(np.abs(wavelength[:, None] - mrs["lines"][None, :]), axis=1) > 0.02
            ratio = np.where(clear, flux / simulated.truth.flux(wavelength, spec.name) - 1, np.nan)
            axes[1, 1].plot(wavelength, ratio, color=f"C{index}", lw=0.6)
            fine = np.linspace(wavelength.min(), wavelength.max(), 2000)
            axes[0, 1].plot(
                fine, simulated.truth.flux(fine, spec.name) * 1e3, "k--", lw=0.6,
                label="truth" if index == channel == 0 else None,
            )  # fmt: skip
    axes[0, 1].set_title(
        f"MIRI MRS {'/'.join(simulated.truth.band_names)} (simulated; ratios away from lines)"
    )
    for column in range(2):
        axes[0, column].set_ylabel("FLUX (mJy)")
        axes[0, column].legend(fontsize=8)
        axes[1, column].set_ylabel("FLUX / truth - 1")
        axes[1, column].set_ylim(-0.05, 0.05)
        axes[1, column].axhline(0, color="k", lw=0.5)
        axes[1, column].set_xlabel("wavelength (micron)")
    figure.suptitle("mirispec_steps demo: extracted spectra against the simulated truth")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
