"""The README's demo command, run as a new user would (in-process): products, truth, plots."""

import re

import numpy as np
from stdatamodels.jwst import datamodels
from test_plots import assert_png

from mirispec_steps.demo import main


def test_demo_runs_everything_and_matches_truth(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "demo"
    # all five steps and both pipelines wrote readable x1d files
    for name in (
        "demo_lrs_box_x1d.fits",
        "demo_lrs_optimal_x1d.fits",
        "demo_lrs_pipeline_x1d.fits",
        "demo_lrs_pipeline_box_x1d.fits",
        "demo_mrs_optimal_x1d.fits",
        "demo_mrs_aperture_x1d.fits",
        "demo_mrs_pipeline_x1d.fits",
    ):
        with datamodels.open(out / name) as x1d:
            assert np.isfinite(x1d.spec[0].spec_table["FLUX"]).mean() > 0.9, name
    for name in ("demo_mrs_mrscal.fits", "demo_mrs_mrscen.fits"):
        assert (out / name).is_file()
    # the printed comparisons with the truth
    medians = [float(value) for value in re.findall(r"median FLUX/truth (\d\.\d+)", printed)]
    assert len(medians) == 3 + 3 * 2
    np.testing.assert_allclose(medians, 1.0, atol=0.005)
    assert "LRS pipeline product identical to the optimal step's: True" in printed
    assert "MRS pipeline product identical to the step-by-step optimal spectra: True" in printed
    assert_png(out / "demo_summary.png", min_size=(1200, 650))
    assert len(list(out.glob("*.png"))) >= 12
