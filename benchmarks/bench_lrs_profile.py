"""Accuracy of LRS extractions when the PSF file does not describe the data, side by side.

Every simulation uses a PSF the package does not model (the simulator's
``MISMATCHED_FAMILIES``; ``LrsPsf``, the package's own model, as a control),
noise-free, full-frame cal, built-in geometry; every method gets the same
input and, where it needs one, the packaged ``psf`` reference or the apcorr
made from it. Printed: median and 10th..90th percentile of FLUX/truth - 1
over 5-12 um.

Methods
-------
- ours, ``profile="auto"`` (profile measured from the data) and ``"psf"``;
- jwst 3.0 ``Extract1dStep`` optimal mode (``optimize_psf_location=True``);
- jwst 3.0 ``Extract1dStep`` box (8 px, source-following, apcorr);
- jwst 3.0 ``adaptive_trace_model`` (``psf_optimal=True``), its B-spline
  trace model used as the Horne profile (jwst chains it for oversampling and
  pixel replacement, not extraction; this is the profile it provides);
- specreduce ``HorneExtract`` with its interpolated empirical profile;
- a plain Horne extraction with the time-series tools' profile: the
  background-subtracted image divided by each row's sum, smoothed along
  dispersion over 21 rows (as Eureka!'s ``smooth`` option).

The three last ones get the true trace and the image minus the true sky
(which ours and jwst's do not; the plain Horne is also shown with the sky a
user would fit), and give the flux inside the cutout (the slit): light
beyond it (< 0.1% here) is not restored.

Run: ``python benchmarks/bench_lrs_profile.py``
"""

import logging
import os
import warnings

os.environ.setdefault("STPIPE_DISABLE_CRDS_STEPPARS", "true")
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)

import numpy as np  # noqa: E402
from jwst.adaptive_trace_model import AdaptiveTraceModelStep  # noqa: E402
from jwst.extract_1d import Extract1dStep  # noqa: E402

from mirispec_steps import LrsOptimalExtractStep  # noqa: E402
from mirispec_steps.references import packaged_reference  # noqa: E402
from mirispec_steps.simulate import (  # noqa: E402
    MISMATCHED_FAMILIES,
    LrsPsf,
    offline_crds,
    simulate_lrs,
    write_lrs_apcorr,
)

PSF = packaged_reference("mirispec_miri_lrs_psf.fits")
EXTRACT1D = packaged_reference("mirispec_miri_lrs_extract1d.json")
SKY_DISTANCE = 12.0  # pixels from the trace beyond which a user fits the sky
JWST = {
    "use_source_posn": True, "override_extract1d": EXTRACT1D, "override_pastasoss": "N/A",
    "override_specprofile": "N/A", "override_speckernel": "N/A",
}  # fmt: skip


def deviation(wavelength, flux, truth):
    order = np.argsort(truth.wavelength)
    expected = np.interp(wavelength, truth.wavelength[order], np.asarray(truth.flux)[order])
    select = (wavelength > 5) & (wavelength < 12) & np.isfinite(flux)
    return flux[select] / expected[select] - 1


def x1d_deviation(x1d, truth):
    table = x1d.spec[0].spec_table
    return deviation(np.asarray(table["WAVELENGTH"]), np.asarray(table["FLUX"]), truth)


def cutout(sim, true_sky=True):
    """Slit columns, data minus the sky, variance, offsets from the true trace."""
    model, truth = sim.model, sim.truth
    (x_low, x_high), _ = (tuple(b) for b in model.meta.wcs.bounding_box)
    columns = np.arange(int(np.ceil(x_low)), int(np.floor(x_high)) + 1)
    data = np.asarray(model.data, float)[truth.rows][:, columns]
    offsets = columns[None, :] - truth.trace[:, None]
    if true_sky:
        # An advantage ours and jwst's do not have.
        data = data - np.asarray(truth.background, float)[truth.rows][:, columns]
    else:
        # What a user would do: a line through the columns > 12 px from the trace.
        for row, offset in zip(data, offsets, strict=True):
            sky = np.abs(offset) > SKY_DISTANCE
            row -= np.polyval(np.polyfit(offset[sky], row[sky], 1), offset)
    variance = np.asarray(model.var_rnoise + model.var_poisson + model.var_flat, float)
    variance = variance[truth.rows][:, columns]
    return columns, data, variance, offsets


def to_jy(sim):
    """Surface brightness (MJy/sr) summed over pixels, to Jy."""
    return 1e6 * sim.model.meta.photometry.pixelarea_steradians


def horne(profile, data, variance):
    profile = np.clip(np.nan_to_num(profile), 0, None)
    profile /= profile.sum(axis=1, keepdims=True)
    weight = profile / variance
    return np.sum(weight * data, axis=1) / np.sum(weight * profile, axis=1)


def adaptive_trace(sim):
    model = AdaptiveTraceModelStep.call(sim.model.copy(), skip=False, psf_optimal=True)
    columns, data, variance, _ = cutout(sim)
    trace_model = np.asarray(model.trace_model, float)[sim.truth.rows][:, columns]
    sky = np.asarray(sim.truth.background, float)[sim.truth.rows][:, columns]
    flux = horne(trace_model - sky, data, variance) * to_jy(sim)
    return deviation(sim.truth.wavelength, flux, sim.truth)


def smoothed_profile(sim, length=21, true_sky=True):
    from scipy.ndimage import uniform_filter1d

    _, data, variance, _ = cutout(sim, true_sky)
    normalised = data / data.sum(axis=1, keepdims=True)
    profile = uniform_filter1d(normalised, length, axis=0, mode="nearest")
    flux = horne(profile, data, variance) * to_jy(sim)
    return deviation(sim.truth.wavelength, flux, sim.truth)


def specreduce_horne(sim):
    from astropy import units as u
    from astropy.nddata import NDData, VarianceUncertainty
    from specreduce.extract import HorneExtract
    from specreduce.tracing import ArrayTrace

    columns, data, variance, _ = cutout(sim)
    # specreduce wants dispersion along x: transpose (cross-dispersion, dispersion).
    image = NDData(
        data.T * u.MJy / u.sr, uncertainty=VarianceUncertainty(variance.T * (u.MJy / u.sr) ** 2),
        mask=~np.isfinite(data.T),
    )  # fmt: skip
    trace = ArrayTrace(image, sim.truth.trace - columns[0])
    spectrum = HorneExtract(image, trace, spatial_profile="interpolated_profile")()
    flux = np.asarray(spectrum.flux.value) * to_jy(sim)
    return deviation(sim.truth.wavelength, flux, sim.truth)


def line(label, values):
    if isinstance(values, str):
        print(f"  {label:38s} {values}")
        return
    low, median, high = np.percentile(values, [10, 50, 90])
    print(f"  {label:38s} {100 * median:+7.2f}%   {100 * low:+7.2f} .. {100 * high:+7.2f}%")


def main():
    apcorr = str(write_lrs_apcorr("/tmp/bench_lrs_profile_apcorr.fits"))
    families = {"LrsPsf (control: the reference's own)": LrsPsf(), **{
        name: family() for name, family in MISMATCHED_FAMILIES.items()}}  # fmt: skip
    with offline_crds():
        for name, psf in families.items():
            sim = simulate_lrs("cal", noise=False, seed=3, psf=psf)
            print(f"\n{name}: median FLUX/truth - 1, 10th .. 90th percentile (5-12 um)")
            line("ours, profile measured (auto)", x1d_deviation(
                LrsOptimalExtractStep.call(sim.model), sim.truth))  # fmt: skip
            line("ours, profile of the psf file", x1d_deviation(
                LrsOptimalExtractStep.call(sim.model, profile="psf"), sim.truth))  # fmt: skip
            line("jwst optimal (psf file)", x1d_deviation(Extract1dStep.call(
                sim.model, extraction_type="optimal", optimize_psf_location=True,
                subtract_background=True, override_psf=PSF, override_apcorr="N/A", **JWST,
            ), sim.truth))  # fmt: skip
            line("jwst box 8 px + apcorr (psf file)", x1d_deviation(Extract1dStep.call(
                sim.model, extraction_type="box", override_apcorr=apcorr, override_psf="N/A",
                **JWST,
            ), sim.truth))  # fmt: skip
            line("jwst adaptive_trace_model as profile", adaptive_trace(sim))
            try:
                line("specreduce Horne, interpolated profile", specreduce_horne(sim))
            except ImportError:
                line("specreduce Horne, interpolated profile", "(specreduce not installed)")
            line("plain Horne, smoothed data profile", smoothed_profile(sim))
            line("  the same, sky fitted > 12 px away", smoothed_profile(sim, true_sky=False))


def noisy(n_draws=8, scale=0.001):
    """Bias and scatter over noisy draws (row S/N ~50), diffraction PSF."""
    from mirispec_steps.simulate import DiffractionLrsPsf, default_spectrum
    from mirispec_steps.simulate.psf import write_lrs_psf_reference

    family = DiffractionLrsPsf()
    oracle = str(write_lrs_psf_reference("/tmp/bench_lrs_profile_oracle.fits", family))
    results = {}
    with offline_crds():
        for seed in range(n_draws):
            sim = simulate_lrs("cal", seed=100 + seed, psf=family,
                               spectrum=lambda w: scale * default_spectrum(w))  # fmt: skip
            runs = {
                "ours, profile measured (auto)": x1d_deviation(
                    LrsOptimalExtractStep.call(sim.model), sim.truth),
                "ours with the true PSF (oracle)": x1d_deviation(LrsOptimalExtractStep.call(
                    sim.model, profile="psf", override_psf=oracle), sim.truth),
                "plain Horne, smoothed, sky fitted": smoothed_profile(sim, true_sky=False),
            }  # fmt: skip
            try:
                runs["specreduce Horne (true sky)"] = specreduce_horne(sim)
            except ImportError:
                pass
            for label, values in runs.items():
                results.setdefault(label, []).append(values)
    print(f"\nDiffraction PSF, {n_draws} noisy draws, row S/N ~50: bias and scatter of "
          "FLUX/truth - 1 (5-12 um)")  # fmt: skip
    for label, values in results.items():
        values = np.concatenate(values)
        print(f"  {label:38s} bias {100 * np.mean(values):+6.2f}%  scatter "
              f"{100 * np.std(values):5.2f}%")  # fmt: skip


if __name__ == "__main__":
    main()
    noisy()
