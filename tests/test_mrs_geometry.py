"""MRS detector geometry from the built-in WCS and from the flight WCS (assign_wcs, offline)."""

import numpy as np
import pytest
from stdatamodels.jwst import datamodels

from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs.geometry import mrs_geometry
from mirispec_steps.simulate import (
    assign_real_mrs_wcs,
    blank_mrs_model,
    build_mrs_wcs,
)
from mirispec_steps.simulate.mrs_geometry import BAND_WAVELENGTHS, CHANNEL_LAYOUT

BANDS = [
    (detector, band)
    for detector in ("MIRIFUSHORT", "MIRIFULONG")
    for band in ("SHORT", "MEDIUM", "LONG")
]
EXPECTED_SLICES = {1: 21, 2: 17, 3: 16, 4: 12}
EXPECTED_WIDTH = {1: 0.177, 2: 0.280, 3: 0.390, 4: 0.656}
EXPECTED_ALPHA_PIXEL = {1: 0.196, 2: 0.196, 3: 0.245, 4: 0.273}


def built_in(detector, band):
    model = blank_mrs_model(detector, band)
    model.meta.wcs = build_mrs_wcs(model)
    return model


@pytest.fixture(scope="module")
def real_models(real_mrs_dir):
    models = {}
    for detector, band in (("MIRIFUSHORT", "SHORT"), ("MIRIFULONG", "LONG")):
        models[(detector, band)] = assign_real_mrs_wcs(
            blank_mrs_model(detector, band), real_mrs_dir
        )
    return models


def round_trip_error(model, geometry):
    """Max distance (px) of pixel -> (alpha, beta, lambda) -> pixel through the WCS inverse."""
    transform = model.meta.wcs.get_transform("detector", "alpha_beta")
    x, y = transform.inverse(geometry.alpha, geometry.beta, geometry.wavelength)
    return np.hypot(x - geometry.x, y - geometry.y)


def assert_slices_contiguous(geometry):
    """Every slice is one run of columns on every row it occupies, with no missing rows."""
    for number in range(1, geometry.n_slices + 1):
        inside = geometry.slice_number == number
        rows, columns = geometry.y[inside], geometry.x[inside]
        order = np.lexsort((columns, rows))
        rows, columns = rows[order], columns[order]
        starts = np.flatnonzero(np.r_[True, np.diff(rows) > 0])
        counts = np.diff(np.r_[starts, rows.size])
        spans = columns[np.r_[starts[1:] - 1, rows.size - 1]] - columns[starts] + 1
        assert np.array_equal(spans, counts), f"slice {number}: a row with a gap"
        assert np.all(np.diff(np.unique(rows)) == 1), f"slice {number}: missing rows"


@pytest.mark.parametrize(("detector", "band"), BANDS)
def test_built_in_geometry(detector, band):
    model = built_in(detector, band)
    geometries = mrs_geometry(model)
    assert [g.channel for g in geometries] == sorted(g.channel for g in geometries)
    assert len(geometries) == 2
    for geometry in geometries:
        channel = geometry.channel
        assert geometry.n_slices == EXPECTED_SLICES[channel]
        assert geometry.slice_width == pytest.approx(EXPECTED_WIDTH[channel], rel=1e-6)
        alpha_pixel = np.median(geometry.alpha_high - geometry.alpha_low)
        assert alpha_pixel == pytest.approx(EXPECTED_ALPHA_PIXEL[channel], rel=1e-6)
        low, high = BAND_WAVELENGTHS[geometry.name]
        short, long = geometry.wavelength_range
        assert abs(short - low) < 0.003 * low and abs(long - high) < 0.003 * high
        assert np.all(geometry.wavelength_high > geometry.wavelength_low)
        assert round_trip_error(model, geometry).max() < 0.05
        assert_slices_contiguous(geometry)
        # Slices interleave on the detector (as in flight): slice 2 lies two slice
        # positions from slice 1, the first slice of the second half right next to it.
        second_half = (geometry.n_slices + 1) // 2 + 1
        centres = [np.median(geometry.x[geometry.slice_number == n]) for n in (1, 2, second_half)]
        pitch = abs(CHANNEL_LAYOUT[channel].pitch)
        assert abs(abs(centres[1] - centres[0]) - 2 * pitch) < 1.5
        assert abs(abs(centres[2] - centres[0]) - pitch) < 1.5


def test_geometry_is_cached_per_wcs_and_survives_save(tmp_path):
    model = built_in("MIRIFUSHORT", "SHORT")
    first = mrs_geometry(model)
    assert all(a is b for a, b in zip(mrs_geometry(model), first, strict=True))
    with pytest.raises(ValueError, match="read-only"):
        first[0].alpha[0] = 0.0
    path = tmp_path / "mrs_rate.fits"
    model.save(path)
    with datamodels.open(path) as reopened:
        again = mrs_geometry(reopened)[1]
    assert np.array_equal(again.alpha, first[1].alpha)
    assert np.array_equal(again.slice_number, first[1].slice_number)


@pytest.mark.parametrize(("detector", "band"), [("MIRIFUSHORT", "SHORT"), ("MIRIFULONG", "LONG")])
def test_real_flight_geometry(real_models, real_mrs_dir, detector, band):
    model = real_models[(detector, band)]
    with datamodels.WavelengthrangeModel(
        real_mrs_dir / "jwst_miri_mrs_wavelengthrange_flt9.asdf"
    ) as ranges:
        flight_ranges = dict(zip(ranges.waverange_selector, ranges.wavelengthrange, strict=False))
    geometries = mrs_geometry(model)
    assert len(geometries) == 2
    for geometry in geometries:
        channel = geometry.channel
        assert geometry.n_slices == EXPECTED_SLICES[channel]
        assert geometry.slice_width == pytest.approx(EXPECTED_WIDTH[channel], rel=0.01)
        alpha_pixel = np.median(geometry.alpha_high - geometry.alpha_low)
        assert alpha_pixel == pytest.approx(EXPECTED_ALPHA_PIXEL[channel], rel=0.05)
        short, long = geometry.wavelength_range
        # Inside the flight wavelengthrange file's limits for the band (0.5% slack)...
        limit_low, limit_high = flight_ranges[f"{channel}{band}"]
        assert short > limit_low * 0.995 and long < limit_high * 1.005
        # ...and covering most of the nominal band.
        low, high = BAND_WAVELENGTHS[geometry.name]
        assert min(long, high) - max(short, low) > 0.85 * (high - low)
        # The flight files' own inverse polynomials close the loop to ~0.1 px only
        # (and not at all past the wavelength-range edges).
        flight = round_trip_error(model, geometry)
        assert np.nanmedian(flight) < 0.01 and np.nanmax(flight) < 0.25
        assert_slices_contiguous(geometry)


def test_geometry_errors():
    model = blank_mrs_model()
    with pytest.raises(InputDataError, match="no WCS"):
        mrs_geometry(model)
    lrs = datamodels.ImageModel((10, 10))
    lrs.meta.instrument.name = "MIRI"
    lrs.meta.exposure.type = "MIR_LRS-FIXEDSLIT"
    with pytest.raises(InputDataError, match="not MIRI MRS"):
        mrs_geometry(lrs)
