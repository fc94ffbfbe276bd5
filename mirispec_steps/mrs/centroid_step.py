"""MrsCentroidStep: where the point source is, in every spectral bin of an MRS exposure."""

from __future__ import annotations

import logging

from mirispec_steps.mrs.centroid import centroid_channels, centroid_table, solution_tree
from mirispec_steps.mrs.core.centroid import CentroidSettings
from mirispec_steps.mrs.exposure import attach_solution, copy_sharing_wcs
from mirispec_steps.mrs.references import load_mrs_psf, load_mrs_resolution
from mirispec_steps.mrs.step import CalibratedMrsStep

__all__ = ["MrsCentroidStep"]

log = logging.getLogger(__name__)


class MrsCentroidStep(CalibratedMrsStep):
    """
    Fit the point source's (alpha, beta) in every spectral bin of each channel.

    Spectral bins are ``lambda / R`` wide (resolving power from the
    ``mrsresol`` reference, packaged default Labiano et al. 2021); the
    expected PSF width in each bin comes from the ``mrspsf`` reference. Per bin:
    the slice with most signal, 1-D Gaussian fits along it and across
    slices, then a footprint-integrated 2-D Gaussian plus constant on all of
    the bin's valid pixels, inverse-variance weighted with one outlier
    rejection pass; all bins are fitted together (batched Levenberg-Marquardt).
    Every bin gets a status (ok, low_signal, failed, outlier) and a robust
    polynomial track ``alpha(lambda)``, ``beta(lambda)`` is fitted to the good
    bins. The output is the input model with the solution attached
    (``mirispec_centroid``; read it with ``mirispec_steps.read_centroid``),
    suffix ``mrscen``.
    """

    class_alias = "mrs_centroid"
    product_suffix = "mrscen"

    spec = """
    oversampling = float(default=1.0, min=0.1, max=10)  # spectral bins per resolution element
    rotation = boolean(default=False)  # fit a rotated ellipse in the 2-D stage
    min_snr = float(default=3.0, min=0)  # bins with a weaker amplitude are low_signal
    reject_sigma = float(default=5.0, min=0)  # reject pixels beyond N sigma of the 2-D fit (0: off)
    track_order = integer(default=2, min=0, max=6)  # polynomial order of the smooth track
    clip_sigma = float(default=4.0, min=1)  # bins beyond N sigma of the track are outliers
    reject_spikes = boolean(default=True)  # leave out single-pixel spikes (unflagged cosmic rays)
    fixed_position = float_list(min=2, max=2, default=None)  # two numbers: (alpha, beta) in arcsec; skip fitting
    save_centroid_table = boolean(default=False)  # write the per-bin table (ECSV)
    save_plots = boolean(default=False)  # PNG: alpha and beta per bin (mas) with the smooth track
    """  # noqa: E501

    reference_file_types = ["mrsresol", "mrspsf", "mrsmaps"]

    def process(self, input_data):
        """
        Find the source position per spectral bin.

        Parameters
        ----------
        input_data : str, IFUImageModel or ModelContainer
            Calibrated MRS exposure(s) in MJy/sr (``mrs_calibrate`` output or
            a calwebb_spec2 ``cal`` file) with a WCS, or an ``mrsmaps``
            override.

        Returns
        -------
        IFUImageModel or ModelContainer
            The input with the centroid solution attached; SKIPPED for
            non-MRS data.
        """
        return self.process_each(input_data, self._centroid_one)

    def _centroid_one(self, model, index):
        skipped, maps = self.calibrated_mrs_input(model)
        if skipped is not None:
            return skipped
        references = self.resolve_references(model)
        resolution = load_mrs_resolution(references["mrsresol"])
        psf_reference = load_mrs_psf(references["mrspsf"])
        settings = CentroidSettings(
            rotation=self.rotation,
            min_snr=self.min_snr,
            reject_sigma=self.reject_sigma,
            track_order=self.track_order,
            clip_sigma=self.clip_sigma,
        )
        results = centroid_channels(
            model,
            resolution,
            psf_reference,
            settings,
            oversampling=self.oversampling,
            fixed_position=self.fixed_position,
            maps=maps,
            reject_spikes=self.reject_spikes,
        )
        result = copy_sharing_wcs(model)
        tree = solution_tree(results)
        attach_solution(result, tree)
        self.record_step_status(result, "COMPLETE")
        if self.save_centroid_table or self.save_plots:
            table = centroid_table(tree)
            if self.save_centroid_table:
                self.write_side_product(
                    "the centroid table",
                    self.side_path(model, "centroid", ".ecsv", index),
                    lambda path: table.write(path, format="ascii.ecsv", overwrite=True),
                )
            if self.save_plots:
                from mirispec_steps.mrs.plots import plot_centroid

                self.write_side_product(
                    "the centroid plot",
                    self.side_path(model, "centroid", ".png", index),
                    lambda path: plot_centroid(table, path),
                )
        return result
