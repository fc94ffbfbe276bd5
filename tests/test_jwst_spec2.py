"""Our MRS extraction inside jwst's calwebb_spec2, run for real offline on the real MRS geometry.

jwst's own steps do the work up to photom (assign_wcs from tests/data/mrs,
background subtraction from the association, srctype, fringe and photom with
the simulator's references); flat_field and straylight are skipped because
their reference files are not available offline. Then our centroid and
extraction replace cube_build and extract_1d, either through the
MirispecSpec2Pipeline subclass or through hooks on jwst's own class, both
from the packaged parameter files.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from jwst.assign_wcs import AssignWcsStep
from jwst.pipeline import Spec2Pipeline
from stdatamodels.jwst import datamodels
from test_pipelines import real_assign_wcs_overrides

from mirispec_steps import MirispecSpec2Pipeline
from mirispec_steps.parameter_files import parameter_file

PRODUCT = "jw01523003001_03102_00001_mirifushort"

#: Spec2 steps that run on MIRI MRS here; every other one is skipped (offline, no references).
RUNNING = {"assign_wcs", "bkg_subtract", "srctype", "fringe", "photom", "cube_build", "extract_1d"}


@pytest.fixture(scope="module")
def spec2_association(real_mrs_dir, tmp_path_factory):
    from conftest import _simulate_mrs_files

    folder = tmp_path_factory.mktemp("spec2_mrs")
    simulated, files = _simulate_mrs_files(
        folder, stem=PRODUCT, seed=41, reference_dir=real_mrs_dir, with_wcs=False,
        alpha=0.2, beta=0.1,
    )  # fmt: skip
    association = {
        "asn_type": "spec2",
        "asn_rule": "Asn_Lv2Spec",
        "asn_id": "a3001",
        "asn_pool": "none",
        "program": "01523",
        "products": [
            {
                "name": PRODUCT,
                "members": [
                    {"expname": Path(files["rate"]).name, "exptype": "science"},
                    {"expname": Path(files["background"]).name, "exptype": "background"},
                ],
            }
        ],
    }
    path = folder / "spec2_asn.json"
    path.write_text(json.dumps(association))
    return path, simulated, files


def offline_steps(real_mrs_dir, files, pipeline_class):
    """Step parameters that let calwebb_spec2 run offline on MRS."""
    steps = {
        "assign_wcs": real_assign_wcs_overrides(real_mrs_dir, AssignWcsStep),
        "fringe": {"override_fringe": files["fringe"]},
        "photom": {"override_photom": files["photom"], "override_area": "N/A"},
    }
    for name, step_class in pipeline_class.step_defs.items():
        reftypes = step_class.reference_file_types
        if name in RUNNING and isinstance(reftypes, list):  # (a pipeline's is a property)
            # jwst prefetches every reftype of every step it will run.
            for reftype in reftypes:
                steps.setdefault(name, {}).setdefault(f"override_{reftype}", "N/A")
        elif name not in ("mrs_centroid", "mrs_extract"):
            steps.setdefault(name, {})["skip"] = True
    return steps


def run_spec2(pipeline_class, config, association, steps, output, monkeypatch):
    monkeypatch.chdir(output)
    pipeline_class.call(
        str(association), config_file=parameter_file(config), steps=steps,
        output_dir=str(output), save_results=True,
    )  # fmt: skip
    names = sorted(path.name for path in output.iterdir())
    assert f"{PRODUCT}_cal.fits" in names and f"{PRODUCT}_x1d.fits" in names, names
    assert not any(name.endswith("_s3d.fits") for name in names), names
    return datamodels.open(output / f"{PRODUCT}_x1d.fits")


def assert_spectra_match_truth(x1d, simulated, method):
    assert x1d.mirispec_extraction.instance["method"] == method
    assert [spec.name for spec in x1d.spec] == ["1A", "2A"]
    for spec in x1d.spec:
        table = spec.spec_table
        ratio = table["FLUX"] / simulated.truth.flux(table["WAVELENGTH"], spec.name)
        assert np.nanmedian(ratio) == pytest.approx(1.0, abs=0.005)


def test_subclass_replaces_cube_build_and_extract_1d(
    spec2_association, real_mrs_dir, tmp_path, monkeypatch
):
    association, simulated, files = spec2_association
    steps = offline_steps(real_mrs_dir, files, MirispecSpec2Pipeline)
    # A parameter of our step, passed as for any jwst substep.
    steps["mrs_extract"] = {"method": "aperture"}
    with run_spec2(
        MirispecSpec2Pipeline, "mirispec_spec2_miri", association, steps, tmp_path, monkeypatch
    ) as x1d:
        assert_spectra_match_truth(x1d, simulated, "aperture")
        assert x1d.meta.cal_step.mrs_extract == "COMPLETE"
    # jwst's own calibration ran before ours; the cal product carries the centroid.
    with datamodels.open(tmp_path / f"{PRODUCT}_cal.fits") as cal:
        assert cal.meta.cal_step.photom == "COMPLETE"
        assert cal.meta.cal_step.bkg_subtract == "COMPLETE"
        assert cal.meta.cal_step.mrs_centroid == "COMPLETE"


def test_hooks_on_jwst_spec2_and_our_log_lines(
    spec2_association, real_mrs_dir, tmp_path, monkeypatch, capfd
):
    """jwst's Spec2Pipeline configured by the packaged hooks file; our log lines stay visible."""
    association, simulated, files = spec2_association
    steps = offline_steps(real_mrs_dir, files, Spec2Pipeline)
    with run_spec2(
        Spec2Pipeline, "calwebb_spec2_mrs_hooks", association, steps, tmp_path, monkeypatch
    ) as x1d:
        assert_spectra_match_truth(x1d, simulated, "optimal")
    log_text = capfd.readouterr().err
    assert "jwst.photom.photom - INFO" in log_text
    assert "mirispec_steps.mrs.centroid - INFO - Channel 1A" in log_text
    assert "mirispec_steps.mrs.extract - INFO - Channel 2A: optimal extraction" in log_text
