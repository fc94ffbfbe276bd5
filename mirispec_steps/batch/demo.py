"""``mirispec-batch --demo``: simulated LRS and MRS exposures, two batches on a local cluster.

Four LRS fixed-slit cal exposures (two nod pairs of different sources) go
through ``lrs_extract`` and four MRS rate exposures (repeats of one
pointing) through ``mrs_point_source``, offline, on a local dask cluster. The manifests
and a summary line per batch are printed, with each spectrum compared with
its simulated truth.

The LRS data are simulated with a PSF the package does not model
(``DiffractionLrsPsf``) and extracted with the packaged reference; the MRS
data are simulated with the package's own MRS PSF model and extracted with
the packaged ``mrspsf`` made from it: the MRS comparison is the matched case
only (the demo shows the batch machinery, not MRS accuracy on real PSFs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["run_demo"]

#: MRS exposures of the demo (repeats of one pointing).
MRS_EXPOSURES = 4


def run_demo(folder: Path, workers: int | None = None) -> int:
    """
    Simulate the exposures in ``folder / "inputs"`` and run both batches into ``folder``.

    Parameters
    ----------
    folder : Path
        Output folder.
    workers : int or None
        Local workers (default: one per core).

    Returns
    -------
    int
        0 when every input was done, 1 otherwise.
    """
    from mirispec_steps.batch.manifest import summary_line
    from mirispec_steps.batch.runner import run_batch
    from mirispec_steps.simulate import offline_crds

    inputs = folder / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    failed = 0
    with offline_crds():
        lrs_truth, apcorr = _simulate_lrs(inputs)
        mrs_truth, references = _simulate_mrs(inputs)
        for label, pattern, step, parameters, truths in (
            ("LRS", "demo_lrs_*_cal.fits", "lrs_extract",
             [f"--steps.lrs_box_extract.override_apcorr={apcorr}"], lrs_truth),
            ("MRS", "demo_mrs_?_rate.fits", "mrs_point_source", references, mrs_truth),
        ):  # fmt: skip
            manifest = run_batch(
                [str(inputs / pattern)], step, parameters, output_dir=folder / label.lower(),
                workers=workers,
            )  # fmt: skip
            print(f"{label} batch ({step}): {summary_line(manifest)}")
            if label == "MRS":
                print("  (MRS simulated and extracted with the same PSF model: matched case)")
            for record in manifest.records:
                outcome = _compare(record, manifest, truths)
                print(f"  {Path(record.input).name}: {record.status} in {record.seconds:.1f} s, "
                      f"peak {record.peak_memory_mb:.0f} MiB -> {outcome}")  # fmt: skip
            failed += manifest.counts()["failed"]
    return 1 if failed else 0


def _simulate_lrs(inputs: Path):
    from mirispec_steps.simulate import DiffractionLrsPsf, simulate_lrs, write_lrs_apcorr

    psf = DiffractionLrsPsf()
    truths = {}
    for index, (nod, scale) in enumerate((("A", 1.0), ("B", 1.0), ("A", 0.5), ("B", 0.5))):
        simulated = simulate_lrs(
            "cal", nod=nod, seed=100 + index, psf=psf,
            spectrum=lambda wavelength, s=scale: s * 2e-3 * (wavelength / 10.0) ** -1.5,
        )  # fmt: skip
        name = f"demo_lrs_{index + 1}"
        simulated.model.save(inputs / f"{name}_cal.fits")
        truths[name] = (simulated.truth.wavelength, simulated.truth.flux)
    apcorr = write_lrs_apcorr(inputs / "demo_lrs_apcorr.fits", psf=psf)
    return truths, apcorr


def _simulate_mrs(inputs: Path):
    from mirispec_steps.simulate.mrs import simulate_mrs

    # One scene and one set of calibration references, four exposures (noise drawn anew).
    first = simulate_mrs(seed=200, alpha=0.3, beta=-0.2)
    truths, references = {}, []
    for index in range(MRS_EXPOSURES):
        simulated = first if index == 0 else first.redraw(seed=200 + index)
        files = simulated.write(inputs, stem=f"demo_mrs_{index + 1}")
        truths[f"demo_mrs_{index + 1}"] = simulated
        if not references:
            references = [
                f"--steps.mrs_calibrate.override_photom={files['photom']}",
                f"--steps.mrs_calibrate.override_fringe={files['fringe']}",
                # The dedicated sky exposure of the first one serves all.
                f"--steps.mrs_calibrate.background={files['background']}",
            ]
    return truths, references


def _compare(record, manifest, truths) -> str:
    """Median FLUX/truth of the record's x1d (5-12 um for LRS, per band for MRS)."""
    from stdatamodels.jwst import datamodels

    from mirispec_steps.demo import LRS_RANGE, binned_truth

    if record.status != "done":
        return record.error.splitlines()[0] if record.error else record.status
    root = Path(record.input).name.rsplit("_", 1)[0]
    name = f"{root}_x1d.fits"  # the primary product (optimal extraction)
    if name not in record.outputs or root not in truths:
        return "no x1d"
    with datamodels.open(manifest.output_dir / name) as x1d:
        parts = []
        for spec in x1d.spec:
            table = spec.spec_table
            wavelength = np.asarray(table["WAVELENGTH"], dtype=float)
            flux = np.asarray(table["FLUX"], dtype=float)
            truth = truths[root]
            if isinstance(truth, tuple):
                order = np.argsort(truth[0])
                expected = np.interp(wavelength, truth[0][order], truth[1][order])
                select = (wavelength > LRS_RANGE[0]) & (wavelength < LRS_RANGE[1])
                label = "LRS"
            else:
                expected = binned_truth(truth, spec.name, wavelength, np.gradient(wavelength))
                select = np.isfinite(flux)
                label = spec.name
            parts.append(
                f"{label} median FLUX/truth {np.nanmedian(flux[select] / expected[select]):.4f}"
            )
    return f"{name}: " + ", ".join(parts)
