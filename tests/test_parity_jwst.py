"""Parity with jwst's Extract1dStep (box) run for real, offline, on identical inputs.

Our jwst-compatible behaviour (no background clipping, no bad-pixel repair)
must reproduce FLUX, its errors, SURF_BRIGHT, BACKGROUND and NPIXELS to 1e-6.
"""

import numpy as np
import pytest
from jwst.extract_1d import Extract1dStep
from numpy.testing import assert_allclose

from mirispec_steps import LrsBoxExtractStep
from mirispec_steps.flags import DO_NOT_USE

COLUMNS = [
    "WAVELENGTH",
    "FLUX",
    "FLUX_ERROR",
    "FLUX_VAR_POISSON",
    "FLUX_VAR_RNOISE",
    "FLUX_VAR_FLAT",
    "SURF_BRIGHT",
    "SB_ERROR",
    "BACKGROUND",
    "BKGD_ERROR",
    "BKGD_VAR_POISSON",
    "BKGD_VAR_RNOISE",
    "BKGD_VAR_FLAT",
    "NPIXELS",
]
JWST_ONLY_OVERRIDES = {
    "override_psf": "N/A",
    "override_pastasoss": "N/A",
    "override_specprofile": "N/A",
    "override_speckernel": "N/A",
}


def run_both(model, extract1d, apcorr=None, **parameters):
    apcorr_args = (
        {"apply_apcorr": True, "override_apcorr": apcorr} if apcorr else {"apply_apcorr": False}
    )
    theirs = Extract1dStep.call(
        model, override_extract1d=extract1d, **apcorr_args, **JWST_ONLY_OVERRIDES, **parameters
    )
    ours = LrsBoxExtractStep.call(
        model,
        override_extract1d=extract1d,
        bkg_sigma_clip=0.0,
        replace_bad_pixels=False,
        **apcorr_args,
        **parameters,
    )
    return ours, theirs


def assert_parity(ours, theirs):
    ours_table, their_table = ours.spec[0].spec_table, theirs.spec[0].spec_table
    assert len(ours_table) == len(their_table)
    for column in COLUMNS:
        expected = np.asarray(their_table[column], dtype=float)
        actual = np.asarray(ours_table[column], dtype=float)
        assert np.array_equal(np.isnan(actual), np.isnan(expected)), column
        finite = np.isfinite(expected)
        scale = np.max(np.abs(expected[finite])) if finite.any() else 1.0
        assert_allclose(
            actual[finite], expected[finite], rtol=1e-6, atol=1e-9 * scale, err_msg=column
        )
    # jwst flags DO_NOT_USE only; our extra bits (background not fitted...) say more
    assert np.array_equal(np.asarray(ours_table["DQ"]) & DO_NOT_USE, their_table["DQ"])


S2D_CASES = {
    "default_8px": dict(xstart=27, xstop=34),
    "wide_12px": dict(xstart=25, xstop=36),
    "fractional_limits": dict(xstart=26.6, xstop=34.3),
    "bkg_poly1": dict(xstart=27, xstop=34, bkg_coeff=[[0.5], [6.5], [20.5], [26.5]], bkg_order=1),
    "bkg_poly1_smooth21": dict(
        xstart=27,
        xstop=34,
        bkg_coeff=[[0.5], [6.5], [20.5], [26.5]],
        bkg_order=1,
        smoothing_length=21,
    ),
    "bkg_median": dict(
        xstart=27, xstop=34, bkg_coeff=[[0.5], [6.5], [20.5], [26.5]], bkg_fit="median"
    ),
    "bkg_median_smooth21": dict(
        xstart=27,
        xstop=34,
        bkg_coeff=[[0.5], [6.7], [20.2], [26.5]],
        bkg_fit="median",
        smoothing_length=21,
    ),
    "tapered_wavelength": dict(
        src_coeff=[[29.25, -0.25], [31.75, 0.25]], independent_var="wavelength"
    ),
    "tapered_pixel_two_regions": dict(
        src_coeff=[[27.5, 0.002], [30.5], [30.5], [34.5, -0.002]], ystart=10, ystop=370.5
    ),
    "width_centred": dict(xstart=27, xstop=34, extract_width=6.5),
}


@pytest.mark.parametrize("case", sorted(S2D_CASES))
def test_s2d_parity(case, s2d_nod_a, write_extract1d):
    extract1d = write_extract1d(use_source_posn=False, **S2D_CASES[case])
    assert_parity(*run_both(s2d_nod_a.model, extract1d))


def test_s2d_parity_moved_aperture_single_nod(s2d_nod_b, write_extract1d):
    extract1d = write_extract1d(xstart=9, xstop=16, use_source_posn=False)
    ours, theirs = run_both(s2d_nod_b.model, extract1d)
    assert_parity(ours, theirs)
    assert np.nanmedian(ours.spec[0].spec_table["FLUX"]) > 0


def test_s2d_parity_use_source_posn_width(s2d_nod_a, write_extract1d):
    extract1d = write_extract1d(xstart=20, xstop=27, extract_width=8)
    assert_parity(*run_both(s2d_nod_a.model, extract1d, use_source_posn=True))


def test_s2d_parity_use_source_posn_with_background(s2d_nod_a, write_extract1d):
    extract1d = write_extract1d(
        xstart=22, xstop=29, bkg_coeff=[[0.5], [6.5], [36.5], [42.5]], bkg_order=0
    )
    assert_parity(*run_both(s2d_nod_a.model, extract1d, use_source_posn=True))


def test_s2d_parity_apcorr(s2d_nod_a, write_extract1d, apcorr_file):
    extract1d = write_extract1d(xstart=27, xstop=34, use_source_posn=False)
    ours, theirs = run_both(s2d_nod_a.model, extract1d, apcorr=apcorr_file)
    assert_parity(ours, theirs)


def test_s2d_parity_position_offset(s2d_nod_a, write_extract1d):
    extract1d = write_extract1d(xstart=27, xstop=34, use_source_posn=False)
    assert_parity(*run_both(s2d_nod_a.model, extract1d, position_offset=-1.3))


def test_packaged_default_parity(s2d_nod_a):
    """The packaged extract1d default gives what jwst gives with the operational file."""
    from mirispec_steps.references import packaged_reference

    path = packaged_reference("mirispec_miri_lrs_extract1d.json")
    assert_parity(*run_both(s2d_nod_a.model, path))


CAL_CASES = {
    "default_8px": dict(xstart=329, xstop=336),
    "wide_12px": dict(xstart=327, xstop=338),
    "bkg_poly1": dict(
        xstart=329, xstop=336, bkg_coeff=[[303.5], [309.5], [339.5], [345.5]], bkg_order=1
    ),
    "bkg_poly1_smooth21": dict(
        xstart=329,
        xstop=336,
        bkg_coeff=[[303.5], [309.5], [339.5], [345.5]],
        bkg_order=1,
        smoothing_length=21,
    ),
    "bkg_median": dict(
        xstart=329, xstop=336, bkg_coeff=[[303.5], [309.5], [339.5], [345.5]], bkg_fit="median"
    ),
    "tapered_wavelength": dict(
        src_coeff=[[331.25, -0.25], [333.75, 0.25]], independent_var="wavelength"
    ),
}


@pytest.mark.parametrize("case", sorted(CAL_CASES))
def test_cal_parity(case, cal_nod_a, write_extract1d):
    extract1d = write_extract1d(use_source_posn=False, **CAL_CASES[case])
    assert_parity(*run_both(cal_nod_a.model, extract1d))


def test_cal_parity_use_source_posn_shift(cal_nod_a, write_extract1d):
    """Operational (s2d-frame) limits moved onto the source by use_source_posn."""
    extract1d = write_extract1d(xstart=27, xstop=34)
    assert_parity(*run_both(cal_nod_a.model, extract1d, use_source_posn=True))


def test_cal_parity_apcorr_and_background(cal_nod_a, write_extract1d, apcorr_file):
    extract1d = write_extract1d(
        xstart=329,
        xstop=336,
        bkg_coeff=[[303.5], [309.5], [339.5], [345.5]],
        bkg_order=1,
        use_source_posn=False,
    )
    assert_parity(*run_both(cal_nod_a.model, extract1d, apcorr=apcorr_file))


@pytest.fixture(scope="module")
def calints_small():
    from mirispec_steps.simulate import simulate_lrs

    return simulate_lrs("calints", n_integrations=4, seed=11, bad_pixel_fraction=0.003)


def test_calints_parity_tso_table(calints_small, write_extract1d, apcorr_file):
    """x1dints: every vector column, per integration, plus the time columns from INT_TIMES."""
    extract1d = write_extract1d(
        xstart=34, xstop=41, bkg_coeff=[[20.5], [28.5], [47.5], [55.5]], use_source_posn=False
    )
    ours, theirs = run_both(calints_small.model, extract1d, apcorr=apcorr_file)
    ours_table, their_table = ours.spec[0].spec_table, theirs.spec[0].spec_table
    assert len(ours_table) == len(their_table) == 4
    for column in COLUMNS:
        expected = np.asarray(their_table[column], dtype=float)
        actual = np.asarray(ours_table[column], dtype=float)
        assert actual.shape == expected.shape, column
        assert np.array_equal(np.isnan(actual), np.isnan(expected)), column
        finite = np.isfinite(expected)
        assert_allclose(actual[finite], expected[finite], rtol=1e-6, atol=1e-12, err_msg=column)
    assert np.all(np.isfinite(ours_table["MJD-AVG"]))
    for column in ["INT_NUM", "N_ALONGDISP", "SEGMENT", "MJD-BEG", "MJD-AVG", "TDB-END"]:
        assert_allclose(ours_table[column], their_table[column], rtol=1e-12, err_msg=column)
    for column in ["FLUX", "MJD-AVG", "WAVELENGTH"]:
        assert ours_table.columns[column].unit == their_table.columns[column].unit
    assert ours.spec[0].time_scale == theirs.spec[0].time_scale
    assert ours.spec[0].slit_ra == pytest.approx(theirs.spec[0].slit_ra)
