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

    with offline_crds():
        lrs = _lrs_demo(out, args.seed)
        mrs = _mrs_demo(out, args.seed)
    summary = _plot_summary(lrs, mrs, out / "demo_summary.png")
    print(f"Summary figure: {summary}")
    return 0


def _lrs_demo(out: Path, seed: int) -> dict:
    """LRS: both extraction steps, then LrsExtractPipeline on the same cal file."""
    from mirispec_steps import LrsBoxExtractStep, LrsExtractPipeline, LrsOptimalExtractStep
    from mirispec_steps.simulate import DiffractionLrsPsf, simulate_lrs, write_lrs_apcorr

    # The data's PSF (diffraction rings) is not the packaged psf reference's (two
    # Gaussians): the optimal extraction measures the profile from the data. The
    # aperture correction is made from the data's PSF, as CRDS's is from the real one.
    data_psf = DiffractionLrsPsf()
    simulated = simulate_lrs("cal", seed=seed, psf=data_psf)
    cal_path = out / "demo_lrs_cal.fits"
    simulated.model.save(cal_path)
    apcorr = str(write_lrs_apcorr(out / "demo_lrs_apcorr.fits", psf=data_psf))
    extract1d = out / "demo_lrs_extract1d.json"
    # The operational aperture (8 px, s2d frame) with sky regions 12-18 px either side.
    aperture = {
        "id": "ANY", "dispaxis": 2, "xstart": 27, "xstop": 34, "use_source_posn": True,
        "bkg_coeff": [[12.5], [18.5], [42.5], [48.5]], "bkg_order": 1, "bkg_fit": "poly",
    }  # fmt: skip
    extract1d.write_text(json.dumps({"reftype": "EXTRACT1D", "apertures": [aperture]}, indent=2))
    common = {"output_dir": str(out), "save_results": True, "save_plots": True}
    box_references = {"override_extract1d": str(extract1d), "override_apcorr": apcorr}
    box = LrsBoxExtractStep.call(str(cal_path), output_file="demo_lrs", **box_references, **common)
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
        method: MrsExtractStep.call(centroids, method=method, output_file="demo_mrs", **common)
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
    for label, x1d, path in (
        ("optimal step", spectra["optimal"], "demo_mrs_optimal_x1d.fits"),
        ("aperture step", spectra["aperture"], "demo_mrs_aperture_x1d.fits"),
        ("mrs_point_source pipeline", pipeline, "demo_mrs_pipeline_x1d.fits"),
    ):
        for spec in x1d.spec:
            ratio = _mrs_ratio(spec, simulated)
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
    return {"spectra": spectra, "simulated": simulated}


def _mrs_ratio(spec, simulated) -> np.ndarray:
    """FLUX / truth, the truth binned like the data (lines included)."""
    wavelength = np.asarray(spec.spec_table["WAVELENGTH"], dtype=float)
    expected = binned_truth(simulated, spec.name, wavelength, np.gradient(wavelength))
    return np.asarray(spec.spec_table["FLUX"]) / expected


def binned_truth(simulated, band: str, wavelength, width) -> np.ndarray:
    """
    The true MRS spectrum as the data measure it: at the band's resolution, averaged over each bin.

    Parameters
    ----------
    simulated : SimulatedMrs
        The simulation.
    band : str
        ``1A`` ...
    wavelength, width : ndarray
        Bin centres and widths (micron).

    Returns
    -------
    ndarray
        Mean flux density (Jy) over each bin.
    """
    offsets = (np.arange(21) + 0.5) / 21 - 0.5
    samples = wavelength[:, None] + width[:, None] * offsets[None, :]
    return simulated.truth.flux(samples.ravel(), band).reshape(samples.shape).mean(axis=1)


def summary_figure(lrs: dict, mrs: dict):
    """
    LRS and MRS spectra against the simulated truth (mJy), with their deviations from it.

    Parameters
    ----------
    lrs : dict
        ``spectra`` (label to x1d) and ``truth`` (wavelength, Jy) of the LRS demo.
    mrs : dict
        ``spectra`` (method to x1d) and ``simulated`` of the MRS demo.

    Returns
    -------
    Figure
        One column for LRS, one per MRS channel.

    Notes
    -----
    The MRS truth is drawn as the instrument sees it: at the band's
    resolving power and averaged over each spectral bin, like the data;
    the deviations include the emission lines.
    """
    from matplotlib.figure import Figure

    from mirispec_steps.plots import spectrum_arrays, spectrum_panels

    channels = [spec.name for spec in next(iter(mrs["spectra"].values())).spec]
    figure = Figure(figsize=(6 + 4.8 * len(channels), 6.8), layout="constrained")
    grid = figure.add_gridspec(2, 1 + len(channels), height_ratios=[3, 1.3],
                               width_ratios=[1.3] + [1.0] * len(channels))  # fmt: skip
    top, bottom = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[1, 0])
    truth = lrs["truth"]
    order = np.argsort(truth[0])
    spectrum_panels(
        top, bottom,
        {label: spectrum_arrays(x1d.spec[0]) for label, x1d in lrs["spectra"].items()},
        (truth[0][order], truth[1][order]),
    )  # fmt: skip
    top.set_title("MIRI LRS (simulated)", loc="left", fontsize=10, pad=22)
    simulated = mrs["simulated"]
    for column, channel in enumerate(channels, start=1):
        top, bottom = figure.add_subplot(grid[0, column]), figure.add_subplot(grid[1, column])
        spectra = {}
        for method, x1d in mrs["spectra"].items():
            spec = next(spec for spec in x1d.spec if spec.name == channel)
            spectra[f"MRS {method}"] = spectrum_arrays(spec)
        spec = next(
            spec for spec in next(iter(mrs["spectra"].values())).spec if spec.name == channel
        )
        wavelength = np.asarray(spec.spec_table["WAVELENGTH"], dtype=float)
        width = np.gradient(wavelength)
        expected = binned_truth(simulated, channel, wavelength, width)
        spectrum_panels(top, bottom, spectra, (wavelength, expected))
        top.set_title(f"MIRI MRS {channel} (simulated; truth binned like the data)",
                      loc="left", fontsize=10, pad=22)  # fmt: skip
    figure.suptitle("mirispec_steps demo: extracted spectra against the simulated truth")
    return figure


def _plot_summary(lrs: dict, mrs: dict, path: Path) -> str:
    """Write :func:`summary_figure`."""
    from mirispec_steps.plots import save_figure

    return save_figure(summary_figure(lrs, mrs), path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
