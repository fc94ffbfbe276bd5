"""MrsCombineStep: one spectrum from the MRS x1d products of a dither set and its bands."""

from __future__ import annotations

import logging

from mirispec_steps.mrs.combine import CombineSettings, combine_products
from mirispec_steps.mrs.references import load_spectral_leak
from mirispec_steps.stepbase import MirispecStep

__all__ = ["MrsCombineStep"]

log = logging.getLogger(__name__)


class MrsCombineStep(MirispecStep):
    """
    Combine the x1d spectra of a dithered MRS observation and stitch its bands.

    The input is the x1d products of ``mrs_extract`` (or ``mrs_point_source``)
    for one target: any number of dithers, detectors and grating settings, as
    a list, an association or a ModelContainer. Per band, the dithers'
    spectra (on the band's shared grid) are combined by an inverse-variance
    weighted mean with outliers clipped per bin; a dither that disagrees with
    the others as a whole (a scale offset, residuals far beyond its errors,
    most bins empty) is reported and left out. The bands are joined over the
    full range, the overlaps cut at their midpoints (or averaged), and the
    flux ratios of neighbouring bands in their overlaps are measured and
    reported (applied only with ``match_scale``).

    The dithers are judged on their spectra without residual fringes (the
    x1d's RF_FLUX from ``mrs_extract``, else fitted here with jwst's 1-D
    code), and FLUX and RF_FLUX are combined with the same choices
    (``residual_fringe=False``: FLUX only). When both 1B and 3A are present
    the second-order leak of 1B light into 3A is subtracted from both flux
    columns as jwst's ``spectral_leak`` does, with its ``mrsptcorr``
    reference (``--override_mrsptcorr=N/A`` to skip). The product has the
    layout of jwst's MRS Spec3 x1d (``MRSMultiSpecModel``): the stitched
    spectrum first, then each band's combination, with ``NPIXELS`` the
    number of dithers behind each value; the checks of every dither, the
    fringe fits and the leak correction are
    recorded in ``mirispec_combination``.
    """

    class_alias = "mrs_combine"
    product_suffix = "c1d"
    reference_file_types = ["mrsptcorr"]

    spec = """
    clip_sigma = float(default=4.0, min=1.0)  # a value this many sigma from the other dithers' mean is left out of its bin
    scale_tolerance = float(default=0.01, min=0)  # a dither whose flux differs from the others' by more than this share ...
    scale_sigma = float(default=5.0, min=0)  # ... and by more than this many sigma is left out (reported)
    dither_tolerance = float(default=0.01, min=0)  # relative dither-to-dither differences expected beyond the noise (residual fringes, PSF), when judging dithers and outliers
    overlap = option("cut", "average", default="cut")  # band overlaps: cut at the midpoint, or inverse-variance average
    match_scale = boolean(default=False)  # scale each band to its predecessor in their overlap (ratios are always reported)
    pointing_tolerance = float(default=0.1, min=0)  # report dithers extracted further than this (arcsec) from the median position
    residual_fringe = boolean(default=True)  # judge dithers without residual fringes and combine RF_FLUX (fitted with jwst's 1-D code when the x1d has none)
    save_plots = boolean(default=False)  # PNG: the stitched spectrum, the dithers against it, the overlaps
    """  # noqa: E501

    def process(self, *inputs):
        """
        Combine and stitch.

        Parameters
        ----------
        *inputs : list, str, DataModel or ModelContainer
            MRS x1d products of one target: one list, association or
            container, or several files (``strun mrs_combine a_x1d.fits
            b_x1d.fits``).

        Returns
        -------
        MRSMultiSpecModel
            The stitched spectrum (``ALL``) and each band's combination.
        """
        products = self.input_members(*inputs)
        bands = {str(spec.name) for product in products for spec in getattr(product, "spec", [])}
        leak = None
        if {"1B", "3A"} <= bands:
            path = self.resolve_references(products[0])["mrsptcorr"]
            leak = None if path == "N/A" else load_spectral_leak(path)
        settings = CombineSettings(
            clip_sigma=float(self.clip_sigma),
            scale_tolerance=float(self.scale_tolerance),
            scale_sigma=float(self.scale_sigma),
            dither_tolerance=float(self.dither_tolerance),
            overlap=self.overlap,
            match_scale=bool(self.match_scale),
            pointing_tolerance=float(self.pointing_tolerance),
            residual_fringe=bool(self.residual_fringe),
            leak=leak,
        )
        output, combined, spectra = combine_products(products, settings)
        output.meta.cal_step.mrs_combine = "COMPLETE"
        if self.save_plots:
            from mirispec_steps.mrs.plots import plot_mrs_combination

            self.write_side_product(
                "the combination plot",
                self.plot_path(output, products[0]),
                lambda path: plot_mrs_combination(output, combined, spectra, path),
            )
        return output
