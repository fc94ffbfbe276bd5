"""The three ways of use (strun, Step.call, inside jwst's Spec3) and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from stdatamodels.jwst import datamodels

from mirispec_steps import LrsBoxExtractStep
from mirispec_steps.errors import (
    CrdsUnavailableError,
    InputDataError,
    ParameterError,
    ReferenceFileError,
)


def call(model, **parameters):
    return LrsBoxExtractStep.call(model, **parameters)


def test_strun_writes_box_x1d(tmp_path, s2d_nod_a, write_extract1d, apcorr_file):
    """The standalone step names its product after the method; a second run warns it replaces it."""
    path = tmp_path / "sim_s2d.fits"
    s2d_nod_a.model.save(path)
    extract1d = write_extract1d(xstart=27, xstop=34, use_source_posn=False)
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "strun"),
            "lrs_box_extract",
            str(path),
            f"--override_extract1d={extract1d}",
            f"--override_apcorr={apcorr_file}",
            f"--output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = tmp_path / "sim_box_x1d.fits"
    assert f"Saved model in {output}" in result.stderr
    assert "Replacing" not in result.stderr
    again = subprocess.run(result.args, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0 and f"Replacing the existing file {output}" in again.stderr
    with datamodels.open(output) as x1d:
        table = x1d.spec[0].spec_table
        assert x1d.meta.cal_step.lrs_box_extract == "COMPLETE"
        assert x1d.meta.ref_file.extract1d.name.endswith("extract1d.json")
        assert table.columns["FLUX"].unit == "Jy"
        assert np.nanmedian(table["FLUX"]) > 0


def test_entry_points_resolve_to_the_public_classes():
    """Every alias stpipe finds for this package imports, names its class, and is unique."""
    from stpipe.entry_points import get_steps
    from stpipe.utilities import import_class

    import mirispec_steps

    ours = [step for step in get_steps() if step.package_name == "mirispec_steps"]
    assert {step.class_alias for step in ours} == {
        "lrs_box_extract", "lrs_optimal_extract", "lrs_extract", "lrs_psf", "mrs_calibrate",
        "mrs_centroid", "mrs_extract", "mrs_psf", "mrs_combine", "mrs_point_source",
        "mirispec_spec2",
        "mirispec_spec3",
    }  # fmt: skip
    for step in ours:
        step_class = import_class(step.class_name)
        assert step_class is getattr(mirispec_steps, step_class.__name__)
        assert step.class_name == f"mirispec_steps.{step_class.__name__}"
        assert step_class.class_alias == step.class_alias
        assert step.is_pipeline == hasattr(step_class, "step_defs")
    others = [step.class_alias for step in get_steps() if step.package_name != "mirispec_steps"]
    assert not {step.class_alias for step in ours} & set(others)
    assert set(mirispec_steps.__all__) <= set(dir(mirispec_steps))


def test_call_does_not_modify_input(cal_nod_a, write_extract1d):
    model = cal_nod_a.model
    before = model.data.copy(), model.dq.copy()
    call(model, override_extract1d=write_extract1d(xstart=329, xstop=336), apply_apcorr=False)
    np.testing.assert_array_equal(model.data, before[0])
    np.testing.assert_array_equal(model.dq, before[1])


def test_wrong_exposure_type(s2d_nod_a, tmp_path):
    """Standalone: an error naming the data, nothing written; inside a pipeline: SKIPPED."""
    from mirispec_steps import LrsExtractPipeline

    model = s2d_nod_a.model.copy()
    model.meta.instrument.name = "NIRSPEC"
    model.meta.exposure.type = "NRS_FIXEDSLIT"
    for step_class in (LrsBoxExtractStep, LrsExtractPipeline):
        with pytest.raises(InputDataError, match="NIRSPEC NRS_FIXEDSLIT, not LRS"):
            step_class.call(model, output_dir=str(tmp_path), save_results=True)
    assert list(tmp_path.iterdir()) == []
    pipeline = LrsExtractPipeline()
    result = pipeline.lrs_box_extract.run(model)
    assert result.meta.cal_step.lrs_box_extract == "SKIPPED"


def test_missing_wcs(s2d_nod_a):
    model = s2d_nod_a.model.copy()
    model.meta.wcs = None
    with pytest.raises(InputDataError, match="no WCS"):
        call(model)


def test_all_nan_data(s2d_nod_a):
    model = s2d_nod_a.model.copy()
    model.data[:] = np.nan
    with pytest.raises(InputDataError, match="no finite value"):
        call(model)


def test_zero_variances(s2d_nod_a, write_extract1d):
    model = s2d_nod_a.model.copy()
    for name in ("var_poisson", "var_rnoise", "var_flat"):
        getattr(model, name)[:] = 0.0
    x1d = call(model, override_extract1d=write_extract1d(xstart=27, xstop=34), apply_apcorr=False)
    table = x1d.spec[0].spec_table
    assert np.all(table["FLUX_ERROR"][np.isfinite(table["FLUX"])] == 0)


@pytest.mark.parametrize(
    "aperture, message",
    [
        (dict(xstart=27, xstop=34, colour="red"), "unknown key 'colour'"),
        (dict(xstart="27", xstop=34), "'xstart' must be"),
        (dict(xstart=34, xstop=27), "'xstart' \\(34\\) > 'xstop'"),
        (dict(src_coeff=[]), "non-empty list"),
        (dict(src_coeff=[[1.0]]), "pairs"),
    ],
)
def test_malformed_extract1d(aperture, message, s2d_nod_a, write_extract1d):
    with pytest.raises(ReferenceFileError, match=message):
        call(s2d_nod_a.model, override_extract1d=write_extract1d(**aperture), apply_apcorr=False)


def test_empty_apertures(tmp_path, s2d_nod_a):
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"apertures": []}))
    with pytest.raises(ReferenceFileError, match="non-empty list"):
        call(s2d_nod_a.model, override_extract1d=str(path), apply_apcorr=False)


def test_not_json(tmp_path, s2d_nod_a):
    path = tmp_path / "broken.json"
    path.write_text("{apertures: [")
    with pytest.raises(ReferenceFileError, match="cannot be read as JSON"):
        call(s2d_nod_a.model, override_extract1d=str(path), apply_apcorr=False)


def test_bkg_order_too_large(s2d_nod_a, write_extract1d):
    extract1d = write_extract1d(xstart=27, xstop=34, bkg_coeff=[[0.5], [2.5]], bkg_order=3)
    with pytest.raises(ParameterError, match="bkg_order=3"):
        call(s2d_nod_a.model, override_extract1d=extract1d, apply_apcorr=False)


def test_crds_unreachable_names_override(s2d_nod_a, write_extract1d):
    """No apcorr override and no CRDS: a clear error, not sys.exit."""
    with pytest.raises(CrdsUnavailableError, match="--override_apcorr"):
        call(s2d_nod_a.model, override_extract1d=write_extract1d(xstart=27, xstop=34))


def test_apcorr_with_repeated_wavelengths(tmp_path, s2d_nod_a, write_extract1d, apcorr_file):
    """A repeated wavelength would divide by zero in the interpolation: refused, named."""
    apcorr = datamodels.MirLrsApcorrModel(apcorr_file)
    table = apcorr.apcorr_table
    table["wavelength"][0, 1] = table["wavelength"][0, 0]
    apcorr.apcorr_table = table
    path = tmp_path / "repeated_apcorr.fits"
    apcorr.save(path)
    with pytest.raises(ReferenceFileError, match="repeated_apcorr.fits: 'wavelength'"):
        call(s2d_nod_a.model, override_extract1d=write_extract1d(xstart=27, xstop=34),
             override_apcorr=str(path))  # fmt: skip


def test_bug_during_crds_lookup_is_not_reported_as_crds_unavailable(
    s2d_nod_a, write_extract1d, monkeypatch
):
    """Only the CRDS client's own failures mean 'CRDS unavailable'; a bug keeps its traceback."""
    from jwst.stpipe import Step as JwstStep

    def broken(self, input_file, reference_file_type):
        raise KeyError("a bug, not a network failure")

    monkeypatch.setattr(JwstStep, "get_reference_file", broken)
    with pytest.raises(KeyError, match="a bug"):
        call(s2d_nod_a.model, override_extract1d=write_extract1d(xstart=27, xstop=34))


def test_cal_with_s2d_frame_limits_follows_the_source(caplog):
    """The operational (s2d-frame) limits on a cal file: the box follows the source, 8 px wide."""
    from conftest import truth_at

    from mirispec_steps.simulate import simulate_lrs

    sim = simulate_lrs("cal", noise=False, background=0.0, seed=13)
    table = call(sim.model, apply_apcorr=False).spec[0].spec_table
    assert "rectified (s2d) frame" in caplog.text
    assert np.nanmedian(table["NPIXELS"]) == pytest.approx(8.0)
    select = (table["WAVELENGTH"] > 5) & (table["WAVELENGTH"] < 12)
    # without the aperture correction, an 8 px box centred on the source holds the PSF's
    # 8 px fraction of the light (the simulated PSF's own number)
    ratio = np.asarray(table["FLUX"])[select] / truth_at(table, sim.truth)[select]
    enclosed = sim.truth.psf.box_fraction(8.0, np.asarray(table["WAVELENGTH"])[select])
    assert np.median(ratio / enclosed) == pytest.approx(1.0, abs=0.003)
    # keeping the limits as given is the user's explicit choice, with an explanation
    with pytest.raises(InputDataError, match="use_source_posn"):
        call(sim.model, apply_apcorr=False, use_source_posn=False)


def test_packaged_extract1d_matches_operational_file():
    from conftest import OPERATIONAL_EXTRACT1D

    from mirispec_steps.references import packaged_reference

    ours = json.loads(open(packaged_reference("mirispec_miri_lrs_extract1d.json")).read())
    theirs = json.loads(OPERATIONAL_EXTRACT1D.read_text())
    assert ours["apertures"] == theirs["apertures"]


def test_operational_file_works_unchanged(s2d_nod_a):
    from conftest import OPERATIONAL_EXTRACT1D

    x1d = call(s2d_nod_a.model, override_extract1d=str(OPERATIONAL_EXTRACT1D), apply_apcorr=False)
    assert np.nanmedian(x1d.spec[0].spec_table["NPIXELS"]) == 8
