"""LrsExtractPipeline and MrsPointSourcePipeline: Pipeline.call, strun, parameter files."""

import subprocess
import sys
from pathlib import Path

import asdf
import numpy as np
import pytest
from conftest import _simulate_mrs_files, truth_at
from stdatamodels.jwst import datamodels
from test_plots import assert_png

from mirispec_steps import (
    LrsExtractPipeline,
    LrsOptimalExtractStep,
    MrsPointSourcePipeline,
)
from mirispec_steps.errors import CrdsUnavailableError, InputDataError
from mirispec_steps.parameter_files import parameter_file, parameter_file_names

STRUN = str(Path(sys.executable).parent / "strun")


def quiet_call(step_class, *args, **parameters):
    return step_class.call(*args, **parameters)


def strun(*arguments, cwd):
    result = subprocess.run([STRUN, *map(str, arguments)], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def median_ratio(x1d, truth, low=5.0, high=12.0):
    table = x1d.spec[0].spec_table
    wavelength = np.asarray(table["WAVELENGTH"])
    select = (wavelength > low) & (wavelength < high) & np.isfinite(table["FLUX"])
    return np.median(np.asarray(table["FLUX"])[select] / truth_at(table, truth)[select])


# ------------------------------------------------------------------ LRS


@pytest.fixture
def lrs_cal_file(tmp_path, cal_nod_a):
    path = tmp_path / "jw01_lrs_cal.fits"
    cal_nod_a.model.save(path)
    return path


def test_lrs_pipeline_call_runs_both_methods(lrs_cal_file, cal_nod_a, apcorr_file, tmp_path):
    x1d = quiet_call(
        LrsExtractPipeline,
        str(lrs_cal_file),
        output_dir=str(tmp_path),
        save_results=True,
        save_plots=True,
        steps={"lrs_box_extract": {"override_apcorr": apcorr_file}},
    )
    # The product is the optimal spectrum, identical to the step run alone.
    alone = quiet_call(LrsOptimalExtractStep, str(lrs_cal_file))
    np.testing.assert_array_equal(x1d.spec[0].spec_table["FLUX"], alone.spec[0].spec_table["FLUX"])
    assert x1d.meta.cal_step.lrs_optimal_extract == "COMPLETE"
    with (
        datamodels.open(tmp_path / "jw01_lrs_x1d.fits") as optimal,
        datamodels.open(tmp_path / "jw01_lrs_box_x1d.fits") as box,
    ):
        assert optimal.meta.cal_step.lrs_optimal_extract == "COMPLETE"
        assert box.meta.cal_step.lrs_box_extract == "COMPLETE"
        assert median_ratio(optimal, cal_nod_a.truth) == pytest.approx(1.0, abs=0.01)
        assert median_ratio(box, cal_nod_a.truth) == pytest.approx(1.0, abs=0.01)
    # box vs optimal comparison, and each step's own diagnostics
    assert_png(tmp_path / "jw01_lrs_x1d.png", min_size=(800, 600))
    assert_png(tmp_path / "jw01_lrs_box_x1d.png", min_size=(800, 400))
    assert_png(tmp_path / "jw01_lrs_optimal_x1d.png", min_size=(1300, 500))
    assert not (tmp_path / "jw01_lrs_optimal_x1d.fits").exists()  # the product is _x1d


def test_lrs_pipeline_on_s2d_runs_box_only(s2d_nod_a, apcorr_file, caplog):
    x1d = quiet_call(
        LrsExtractPipeline,
        s2d_nod_a.model,
        steps={"lrs_box_extract": {"override_apcorr": apcorr_file}},
    )
    assert x1d.meta.cal_step.lrs_box_extract == "COMPLETE"
    assert "optimal extraction needs cal data" in caplog.text
    assert median_ratio(x1d, s2d_nod_a.truth) == pytest.approx(1.0, abs=0.01)


def test_lrs_pipeline_nothing_to_run(cal_nod_a):
    with pytest.raises(InputDataError, match="both lrs_box_extract and lrs_optimal_extract"):
        quiet_call(
            LrsExtractPipeline,
            cal_nod_a.model,
            steps={"lrs_box_extract": {"skip": True}, "lrs_optimal_extract": {"skip": True}},
        )


def test_lrs_pipeline_strun_parameter_file_and_save_parameters(
    lrs_cal_file, cal_nod_a, apcorr_file, tmp_path
):
    saved = tmp_path / "my_lrs_pars.asdf"
    strun(
        parameter_file("mirispec_lrs_extract"),
        lrs_cal_file,
        "--primary=box",
        f"--steps.lrs_box_extract.override_apcorr={apcorr_file}",
        "--steps.lrs_optimal_extract.fit_trace_order=1",
        f"--save-parameters={saved}",
        f"--output_dir={tmp_path}",
        cwd=tmp_path,
    )
    with datamodels.open(tmp_path / "jw01_lrs_x1d.fits") as box:
        assert box.meta.cal_step.lrs_box_extract == "COMPLETE"
        assert median_ratio(box, cal_nod_a.truth) == pytest.approx(1.0, abs=0.01)
    with datamodels.open(tmp_path / "jw01_lrs_optimal_x1d.fits") as optimal:
        assert optimal.meta.cal_step.lrs_optimal_extract == "COMPLETE"
    # The saved parameters record what was run, and run again as a parameter file.
    with asdf.open(saved) as pars:
        assert pars.tree["class"].endswith("LrsExtractPipeline")
        assert pars.tree["parameters"]["primary"] == "box"
        steps = {step["name"]: step["parameters"] for step in pars.tree["steps"]}
        assert steps["lrs_optimal_extract"]["fit_trace_order"] == 1
    again = tmp_path / "again"
    again.mkdir()
    # (stpipe does not save reference-file overrides: they are given again)
    strun(
        saved,
        lrs_cal_file,
        f"--steps.lrs_box_extract.override_apcorr={apcorr_file}",
        f"--output_dir={again}",
        cwd=again,
    )
    with (
        datamodels.open(again / "jw01_lrs_x1d.fits") as box_again,
        datamodels.open(tmp_path / "jw01_lrs_x1d.fits") as box,
    ):
        np.testing.assert_array_equal(
            box_again.spec[0].spec_table["FLUX"], box.spec[0].spec_table["FLUX"]
        )


# ------------------------------------------------------------------ MRS


@pytest.fixture(scope="module")
def mrs_files(tmp_path_factory):
    """A default-geometry MRS 1A/2A rate file with background and references."""
    return _simulate_mrs_files(
        tmp_path_factory.mktemp("mrs_pipeline"), seed=21, alpha=0.25, beta=-0.15
    )


def calibrate_parameters(files):
    return {
        "background": files["background"],
        "override_photom": files["photom"],
        "override_fringe": files["fringe"],
    }


def assert_matches_truth(x1d, simulated, tolerance=0.01):
    assert [spec.name for spec in x1d.spec] == ["1A", "2A"]
    for spec in x1d.spec:
        table = spec.spec_table
        ratio = table["FLUX"] / simulated.truth.flux(table["WAVELENGTH"], spec.name)
        assert np.nanmedian(ratio) == pytest.approx(1.0, abs=tolerance)


def test_mrs_pipeline_call_with_intermediate_products(mrs_files, tmp_path):
    simulated, files = mrs_files
    x1d = quiet_call(
        MrsPointSourcePipeline,
        files["rate"],
        output_dir=str(tmp_path),
        save_results=True,
        save_plots=True,
        steps={
            "mrs_calibrate": {**calibrate_parameters(files), "save_results": True},
            "mrs_centroid": {"save_results": True, "save_centroid_table": True},
            "mrs_extract": {"method": "aperture"},
        },
    )
    assert_matches_truth(x1d, simulated)
    assert x1d.meta.cal_step.mrs_extract == "COMPLETE"
    stem = Path(files["rate"]).name.replace("_rate.fits", "")
    names = {path.name for path in tmp_path.iterdir()}
    for suffix in ("mrscal.fits", "mrscen.fits", "x1d.fits", "centroid.ecsv"):
        assert f"{stem}_{suffix}" in names, names
    with datamodels.open(tmp_path / f"{stem}_mrscal.fits") as calibrated:
        assert calibrated.meta.cal_step.mrs_calibrate == "COMPLETE"
    with datamodels.open(tmp_path / f"{stem}_x1d.fits") as saved:
        assert saved.mirispec_extraction.instance["method"] == "aperture"
    assert_png(tmp_path / f"{stem}_centroid.png", min_size=(800, 500))
    assert_png(tmp_path / f"{stem}_aperture_x1d.png", min_size=(800, 500))
    assert_png(tmp_path / f"{stem}_mrscal.png", min_size=(1200, 450))


def test_mrs_pipeline_strun_parameter_file(mrs_files, tmp_path):
    simulated, files = mrs_files
    calibrate = calibrate_parameters(files)
    strun(
        parameter_file("mirispec_mrs_point_source"),
        files["rate"],
        f"--steps.mrs_calibrate.background={calibrate['background']}",
        f"--steps.mrs_calibrate.override_photom={calibrate['override_photom']}",
        f"--steps.mrs_calibrate.override_fringe={calibrate['override_fringe']}",
        "--steps.mrs_extract.method=aperture",
        "--steps.mrs_extract.radius=2",
        f"--output_dir={tmp_path}",
        cwd=tmp_path,
    )
    (product,) = tmp_path.glob("*_x1d.fits")
    with datamodels.open(product) as x1d:
        assert x1d.mirispec_extraction.instance["method"] == "aperture"
        assert_matches_truth(x1d, simulated)


def test_mrs_pipeline_runs_assign_wcs_on_real_geometry(real_mrs_dir, tmp_path):
    """An archive-like rate file without WCS: jwst's assign_wcs builds it from the real files."""
    from jwst.assign_wcs import AssignWcsStep

    simulated, files = _simulate_mrs_files(
        tmp_path, seed=22, reference_dir=real_mrs_dir, with_wcs=False, alpha=0.2, beta=0.1
    )
    with datamodels.open(files["rate"]) as rate:
        assert rate.meta.wcs is None
    steps = {"mrs_calibrate": calibrate_parameters(files)}
    # Offline and without overrides: a clear error naming what to pass, nothing written.
    output = tmp_path / "out"
    output.mkdir()
    with pytest.raises(CrdsUnavailableError, match="steps.assign_wcs.override_distortion"):
        quiet_call(
            MrsPointSourcePipeline, files["rate"], steps=steps, output_dir=str(output),
            save_results=True,
        )  # fmt: skip
    assert list(output.iterdir()) == []
    assign_wcs = real_assign_wcs_overrides(real_mrs_dir, AssignWcsStep)
    steps["assign_wcs"] = assign_wcs
    x1d = quiet_call(MrsPointSourcePipeline, files["rate"], steps=steps)
    assert x1d.meta.cal_step.mrs_extract == "COMPLETE"
    assert_matches_truth(x1d, simulated)


def real_assign_wcs_overrides(real_mrs_dir, assign_wcs_class, band="12A"):
    """assign_wcs overrides for MIRIFUSHORT band SHORT from tests/data/mrs; N/A for the rest."""
    directory = Path(real_mrs_dir)
    overrides = {
        "override_distortion": str(directory / f"jwst_miri_mrs{band}_distortion_flt9.asdf"),
        "override_specwcs": str(directory / f"jwst_miri_mrs{band}_specwcs_flt9.asdf"),
        "override_regions": str(directory / f"mirispec_test_mrs{band}_regions_recon.asdf"),
        "override_wavelengthrange": str(directory / "jwst_miri_mrs_wavelengthrange_flt9.asdf"),
    }
    for reftype in assign_wcs_class.reference_file_types:
        overrides.setdefault(f"override_{reftype}", "N/A")
    return overrides


def test_mrs_pipeline_without_wcs_and_assign_wcs_skipped(mrs_files):
    _, files = mrs_files
    with datamodels.open(files["rate"]) as rate:
        model = rate.copy()
    model.meta.wcs = None
    with pytest.raises(InputDataError, match="no WCS and assign_wcs is skipped"):
        quiet_call(
            MrsPointSourcePipeline,
            model,
            steps={"assign_wcs": {"skip": True}, "mrs_calibrate": calibrate_parameters(files)},
        )


def test_mrs_pipeline_rejects_a_non_ifu_input(cal_nod_a):
    with pytest.raises(InputDataError, match="expected an MRS rate image"):
        quiet_call(MrsPointSourcePipeline, cal_nod_a.model)


# ------------------------------------------------------------------ parameter files


def test_packaged_parameter_files_match_their_generator():
    from mirispec_steps.parameter_files.make_parameter_files import parameter_files

    expected = parameter_files()
    assert sorted(expected) == parameter_file_names()
    for stem, tree in expected.items():
        with asdf.open(parameter_file(stem)) as packaged:
            for key in ("class", "name", "parameters", "steps"):
                assert packaged.tree[key] == tree[key], (stem, key)


def test_parameter_files_name_importable_classes_and_valid_parameters():
    from stpipe import Step

    for stem in parameter_file_names():
        step = Step.from_config_file(parameter_file(stem))
        assert type(step).__name__ in {
            "MrsPointSourcePipeline",
            "LrsExtractPipeline",
            "MirispecSpec2Pipeline",
            "MirispecSpec3Pipeline",
            "Spec2Pipeline",
            "Spec3Pipeline",
        }, stem


def test_mirispec_pars_command(tmp_path):
    from mirispec_steps.parameter_files import main

    assert main(["--copy-to", str(tmp_path)]) == 0
    assert sorted(p.stem for p in tmp_path.glob("*.asdf")) == parameter_file_names()
    with pytest.raises(SystemExit):
        main(["no_such_file"])
