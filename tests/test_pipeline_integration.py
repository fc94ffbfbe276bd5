"""Our LRS box extraction inside jwst's calwebb_spec3, by configuration only.

calwebb_spec3 on an LRS fixed-slit association with resample_spec skipped
extracts each nod exposure and combines the spectra with combine_1d. Here
its ``extract_1d`` is skipped and LrsBoxExtractStep runs as that step's
post-hook (a configured Step instance, or a class-path string), so jwst's own
``combine_1d`` consumes our x1d products. jwst runs for real, offline.
"""

import numpy as np
import pytest
from jwst.associations import asn_from_list
from jwst.associations.lib.rules_level3_base import DMS_Level3_Base
from jwst.pipeline import Spec3Pipeline
from stdatamodels.jwst import datamodels

from mirispec_steps import LrsBoxExtractStep
from mirispec_steps.simulate import simulate_lrs


@pytest.fixture(scope="module")
def nod_association(tmp_path_factory):
    directory = tmp_path_factory.mktemp("spec3")
    names = []
    truths = []
    for index, nod in enumerate(("A", "B")):
        sim = simulate_lrs("cal", nod=nod, seed=40 + index)
        name = f"jw01234001001_0310{index + 1}_00001_mirimage_cal.fits"
        sim.model.meta.filename = name
        sim.model.meta.exposure.exposure_time = 1000.0
        sim.model.meta.exposure.integration_time = 1000.0
        sim.model.save(directory / name)
        names.append(name)
        truths.append(sim.truth)
    association = asn_from_list.asn_from_list(
        names, rule=DMS_Level3_Base, product_name="jw01234-o001_t001_miri_p750l"
    )
    path = directory / "spec3_asn.json"
    _, serialised = association.dump(format="json")
    path.write_text(serialised)
    return path, truths


def run_spec3(asn_path, output_dir, hook, monkeypatch):
    # Hooks without a parent step write their own products into the working directory.
    monkeypatch.chdir(output_dir)
    steps = {
        "outlier_detection": {"skip": True},
        "pixel_replace": {"skip": True},
        "resample_spec": {"skip": True},
        "extract_1d": {"skip": True, "post_hooks": [hook]},
        # Steps this mode does not run; skipped so the pipeline does not
        # prefetch their reference files from CRDS (offline here).
        "cube_build": {"skip": True},
        "photom": {"skip": True},
        "spectral_leak": {"skip": True},
    }
    Spec3Pipeline.call(str(asn_path), steps=steps, output_dir=str(output_dir), save_results=True)
    combined = sorted(output_dir.glob("*_c1d.fits"))
    assert len(combined) == 1, sorted(p.name for p in output_dir.iterdir())
    return datamodels.open(combined[0])


def combined_ratio(c1d, truth):
    table = c1d.spec[0].spec_table
    wavelength = np.asarray(table["WAVELENGTH"])
    flux = np.asarray(table["FLUX"])
    order = np.argsort(truth.wavelength)
    expected = np.interp(wavelength, truth.wavelength[order], truth.flux[order])
    select = (wavelength > 5) & (wavelength < 12) & np.isfinite(flux)
    assert select.sum() > 150
    return wavelength[select], flux[select] / expected[select]


def test_spec3_post_hook_instance_feeds_combine_1d(
    nod_association, tmp_path, write_extract1d, apcorr_file, monkeypatch
):
    """Our step, configured in Python, as extract_1d's post-hook; combine_1d averages the nods."""
    asn_path, truths = nod_association
    extract1d = write_extract1d(xstart=20, xstop=27, extract_width=8, use_source_posn=True)
    hook = LrsBoxExtractStep(
        override_extract1d=str(extract1d), override_apcorr=str(apcorr_file), bkg_sigma_clip=4.0
    )
    with run_spec3(asn_path, tmp_path, hook, monkeypatch) as c1d:
        assert c1d.meta.cal_step.combine_1d == "COMPLETE"
        _, ratio = combined_ratio(c1d, truths[0])
    # Both nods extracted by our step with apcorr on, then averaged by jwst.
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01)


def test_spec3_post_hook_class_path(nod_association, tmp_path, monkeypatch):
    """The hook as a class-path string, as in a parameter file or on the strun command line.

    stpipe splits such a string on its last '.', so argument values must not
    contain dots (no file paths): the packaged extract1d default is used here.
    """
    asn_path, truths = nod_association
    hook = "mirispec_steps.LrsBoxExtractStep(apply_apcorr=False, use_source_posn=True)"
    with run_spec3(asn_path, tmp_path, hook, monkeypatch) as c1d:
        wavelength, ratio = combined_ratio(c1d, truths[0])
    # The operational 8-px aperture, not aperture corrected, keeps the PSF's box fraction.
    fraction = truths[0].psf.box_fraction(8.0, wavelength)
    assert np.median(ratio / fraction) == pytest.approx(1.0, abs=0.01)
    assert np.median(ratio) < 0.995


# ------------------------------------------------ packaged recipes: Spec3 (LRS)


def test_spec3_subclass_parameter_file_runs_our_optimal_extraction(
    nod_association, tmp_path, monkeypatch
):
    """mirispec_spec3 from its packaged parameter file: our optimal spectra, combined by jwst."""
    from mirispec_steps import MirispecSpec3Pipeline
    from mirispec_steps.parameter_files import parameter_file

    asn_path, truths = nod_association
    monkeypatch.chdir(tmp_path)
    steps = {name: {"skip": True} for name in ("outlier_detection", "cube_build", "photom")}
    steps["spectral_leak"] = {"skip": True}
    MirispecSpec3Pipeline.call(
        str(asn_path),
        config_file=parameter_file("mirispec_spec3_lrs"),
        steps=steps,
        output_dir=str(tmp_path),
        save_results=True,
    )
    (combined,) = tmp_path.glob("*_c1d.fits")
    with datamodels.open(combined) as c1d:
        assert c1d.meta.cal_step.combine_1d == "COMPLETE"
        _, ratio = combined_ratio(c1d, truths[0])
    # Per-exposure x1d products are ours, written under jwst's names.
    x1d_files = sorted(tmp_path.glob("*_x1d.fits"))
    assert len(x1d_files) == 2
    with datamodels.open(x1d_files[0]) as x1d:
        assert x1d.meta.cal_step.lrs_optimal_extract == "COMPLETE"
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01)


def test_spec3_hooks_parameter_file(nod_association, tmp_path, monkeypatch):
    """calwebb_spec3 (jwst's own class) configured by the packaged hooks file."""
    from mirispec_steps.parameter_files import parameter_file

    asn_path, truths = nod_association
    monkeypatch.chdir(tmp_path)
    steps = {
        name: {"skip": True}
        for name in ("outlier_detection", "pixel_replace", "cube_build", "photom", "spectral_leak")
    }
    Spec3Pipeline.call(
        str(asn_path),
        config_file=parameter_file("calwebb_spec3_lrs_hooks"),
        steps=steps,
        output_dir=str(tmp_path),
        save_results=True,
    )
    (combined,) = tmp_path.glob("*_c1d.fits")
    with datamodels.open(combined) as c1d:
        _, ratio = combined_ratio(c1d, truths[0])
    assert np.median(ratio) == pytest.approx(1.0, abs=0.01)
