"""MrsExtractStep: aperture and optimal point-source spectra straight from the MRS detector."""

from __future__ import annotations

import logging
from pathlib import Path

from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs.extract import (
    ExtractionSettings,
    apcorr_table,
    extract_channels,
    x1d_model,
)
from mirispec_steps.mrs.references import load_mrs_psf, load_mrs_resolution
from mirispec_steps.mrs.step import CalibratedMrsStep

__all__ = ["MrsExtractStep"]

log = logging.getLogger(__name__)


class MrsExtractStep(CalibratedMrsStep):
    """
    Extract a point source's spectrum per channel from a calibrated MRS exposure, without cubes.

    The source position per spectral bin comes from the centroid solution
    attached by ``mrs_centroid`` (its smooth track), or from the ``alpha``
    and ``beta`` parameters. ``method="optimal"`` (default) fits, per bin,
    the PSF model integrated over every pixel's (alpha, beta) footprint
    (flux times PSF, plus an optional constant background), Horne-weighted
    by a model variance with iterative outlier rejection: FLUX is the total
    flux. ``method="aperture"`` sums the surface brightness in an elliptical
    aperture with exact footprint overlaps, optionally minus an annulus
    background, and corrects to the total flux with the PSF model through
    the very same pixels and weights. The PSF model is the ``mrspsf``
    reference (packaged analytic default, or a PSF cube). The output is
    jwst's MRS x1d (``MRSMultiSpecModel``), one spectrum per channel.
    """

    class_alias = "mrs_extract"

    @property
    def product_suffix(self) -> str:
        """``optimal_x1d`` or ``aperture_x1d``: named after the method (pipelines write ``x1d``)."""
        return f"{self.method}_x1d"

    spec = """
    method = option("optimal", "aperture", default="optimal")  # PSF-weighted fit or aperture sum
    radius = float(default=2.0, min=0.05)  # aperture semi-major axis, in radius_units
    radius_units = option("fwhm", "arcsec", default="fwhm")  # multiples of the PSF FWHM(lambda), or arcsec
    axis_ratio = float(default=1.0, min=0.05, max=1.0)  # aperture semi-minor / semi-major axis
    position_angle = float(default=0.0, min=-360, max=360)  # aperture major axis from +alpha towards +beta (deg)
    subtract_background = boolean(default=False)  # annulus background (aperture) or fitted constant (optimal)
    annulus = float_list(min=2, max=2, default=None)  # two numbers: inner, outer annulus radius in radius_units (None: 1.5, 2 x radius)
    clip_sigma = float(default=3.0, min=0.5)  # annulus pixels beyond N sigma are left out
    apply_apcorr = boolean(default=True)  # correct aperture fluxes to total with the PSF model
    reject_sigma = float(default=5.0, min=0)  # optimal: reject pixels beyond N model sigma (0: off)
    reject_spikes = boolean(default=True)  # leave out single-pixel spikes (unflagged cosmic rays)
    oversampling = float(default=None, min=0.1, max=10)  # bins per resolution element (None: the centroid's grid)
    residual_fringe = boolean(default=True)  # fit each channel's residual fringes with jwst's 1-D code (RF_FLUX), as jwst's ifu_rfcorr
    psf = option("auto", "reference", "empirical", default="auto")  # PSF calibrated on the exposure (empirical), the mrspsf reference, or the calibrated one when the data support it (auto)
    alpha = float(default=None)  # fixed source alpha (arcsec); with beta, replaces the centroid
    beta = float(default=None)  # fixed source beta (arcsec)
    save_apcorr = boolean(default=False)  # write the per-wavelength aperture correction (ECSV)
    save_plots = boolean(default=False)  # PNG: spectra with errors, one bin's pixels and aperture in (alpha, beta)
    plot_wavelength = float(default=None)  # wavelength (um) of the bin drawn in the field (None: mid-band)
    """  # noqa: E501

    reference_file_types = ["mrspsf", "mrsresol", "mrsmaps"]

    def process(self, input_data):
        """
        Extract the point-source spectra.

        Parameters
        ----------
        input_data : str, IFUImageModel or ModelContainer
            Calibrated MRS exposure(s) in MJy/sr with a WCS (or an
            ``mrsmaps`` override), normally the output of ``mrs_centroid``.

        Returns
        -------
        MRSMultiSpecModel or ModelContainer
            x1d spectra, one per channel; the input marked SKIPPED for
            non-MRS data.
        """
        return self.process_each(input_data, self._extract_one)

    def _settings(self) -> ExtractionSettings:
        return ExtractionSettings(
            method=self.method,
            radius=self.radius,
            radius_units=self.radius_units,
            axis_ratio=self.axis_ratio,
            position_angle=self.position_angle,
            subtract_background=self.subtract_background,
            annulus=tuple(self.annulus) if self.annulus else None,
            apply_apcorr=self.apply_apcorr,
            reject_sigma=self.reject_sigma,
            clip_sigma=self.clip_sigma,
            reject_spikes=self.reject_spikes,
            oversampling=self.oversampling,
            alpha=self.alpha,
            beta=self.beta,
            psf=self.psf,
            residual_fringe=self.residual_fringe,
        )

    def _extract_one(self, model, index):
        skipped, maps = self.calibrated_mrs_input(model)
        if skipped is not None:
            return skipped
        if not self.radius > 0:
            raise InputDataError("radius must be > 0")
        settings = self._settings()
        settings.annulus_factors()  # a nonsense annulus fails before any work
        references = self.resolve_references(model)
        psf_path = references["mrspsf"]
        psf_reference = load_mrs_psf(psf_path)
        resolution = load_mrs_resolution(references["mrsresol"])
        results = extract_channels(model, settings, psf_reference, resolution, maps)
        output = x1d_model(model, results, settings, Path(psf_path).name)
        self.record_step_status(output, "COMPLETE")
        if self.save_apcorr and settings.method == "aperture":
            table = apcorr_table(results, settings)
            self.write_side_product(
                "the aperture correction table",
                self.side_path(model, "apcorr", ".ecsv", index),
                lambda path: table.write(path, format="ascii.ecsv", overwrite=True),
            )
        elif self.save_apcorr:
            log.info("save_apcorr: optimal extraction measures the total flux; nothing to save")
        if self.save_plots:
            from mirispec_steps.mrs.plots import plot_mrs_extraction

            self.write_side_product(
                "the extraction plot",
                self.plot_path(output, model, index),
                lambda path: plot_mrs_extraction(
                    model, results, settings, path, self.plot_wavelength
                ),
            )
        return output
