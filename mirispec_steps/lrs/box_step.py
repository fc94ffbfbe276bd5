"""LrsBoxExtractStep: MIRI LRS box extraction that matches jwst and goes past it."""

from __future__ import annotations

import logging

from mirispec_steps.lrs.box import extract_box, resolve_box_parameters
from mirispec_steps.lrs.exposure import is_lrs, read_exposure
from mirispec_steps.lrs.references import load_apcorr, load_extract1d, select_aperture
from mirispec_steps.stepbase import MirispecStep

__all__ = ["LrsBoxExtractStep"]

log = logging.getLogger(__name__)


class LrsBoxExtractStep(MirispecStep):
    """
    Box-extract a MIRI LRS spectrum from s2d, cal or calints data.

    Every parameter of jwst's ``extract_1d`` box mode for MIRI LRS, with the
    same meaning and precedence (step parameter > extract1d reference file >
    default), plus:

    - ``bkg_fit: "mean"`` accepted in the reference file too;
    - ``replace_bad_pixels``: invalid aperture pixels are estimated from the
      cross-dispersion profile of neighbouring rows instead of dropping out
      of the sum; the replaced flux fraction is stored per spectral element
      (``spec.replaced_fraction``);
    - ``bkg_sigma_clip``: iterative outlier rejection in the background
      regions;
    - ``fixed_background``: keep background regions in place when the aperture
      follows the source with ``use_source_posn``;
    - the source trace on cal data registered on the right rows, and the
      aperture correction evaluated once for all rows and integrations.
    """

    class_alias = "lrs_box_extract"
    product_suffix = "box_x1d"

    spec = """
    subtract_background = boolean(default=None)  # subtract background? (None: if bkg_coeff given)
    apply_apcorr = boolean(default=True)  # apply the aperture correction (point sources)
    use_source_posn = boolean(default=None)  # centre the aperture on the source from the WCS
    position_offset = float(default=0)  # extra cross-dispersion shift of the aperture (pixels)
    smoothing_length = integer(default=None)  # odd boxcar along dispersion for the background
    bkg_fit = option("poly", "mean", "median", None, default=None)  # background fit type
    bkg_order = integer(default=None, min=0)  # order of the background polynomial
    bkg_sigma_clip = float(default=5.0, min=0)  # reject background outliers beyond N sigma (0: off)
    replace_bad_pixels = boolean(default=True)  # repair bad aperture pixels from the profile
    fixed_background = boolean(default=False)  # background regions do not follow use_source_posn
    save_plots = boolean(default=False)  # PNG: aperture and background on the image, and the spectrum
    """  # noqa: E501

    reference_file_types = ["extract1d", "apcorr"]

    def process(self, input_data):
        """
        Extract the spectrum.

        Parameters
        ----------
        input_data : str, DataModel or ModelContainer
            LRS s2d, cal or calints, or a container/association of them (as
            calwebb_spec3 passes to ``extract_1d``).

        Returns
        -------
        MultiSpecModel, TSOMultiSpecModel or ModelContainer
            x1d (or x1dints) spectra, one product per input model (a
            container of them for a container input); the input itself,
            marked SKIPPED, when it is not MIRI LRS data.
        """
        return self.process_each(input_data, self._extract_one)

    def needed_references(self, model) -> list[str]:
        """
        extract1d, and apcorr for a point source when the correction is on.

        Parameters
        ----------
        model : DataModel
            One LRS exposure.

        Returns
        -------
        list of str
            Reftypes.
        """
        point = read_exposure(model).source_type == "POINT"
        return ["extract1d", *(["apcorr"] if self.apply_apcorr and point else [])]

    def _extract_one(self, model, index):
        if not is_lrs(model):
            exp_type = model.meta.exposure.type
            return self.skipped(model, f"Input is {model.meta.instrument.name} {exp_type}, not LRS")
        exposure = read_exposure(model)
        references = self.resolve_references(model)
        aperture = select_aperture(load_extract1d(references["extract1d"]), exposure.slit_name)
        params = resolve_box_parameters(
            aperture,
            exposure,
            subtract_background=self.subtract_background,
            bkg_fit=self.bkg_fit,
            bkg_order=self.bkg_order,
            smoothing_length=self.smoothing_length,
            use_source_posn=self.use_source_posn,
            position_offset=self.position_offset,
            bkg_sigma_clip=self.bkg_sigma_clip,
            replace_bad_pixels=self.replace_bad_pixels,
            fixed_background=self.fixed_background,
        )
        apcorr = None
        if references.get("apcorr", "N/A") != "N/A":
            apcorr = load_apcorr(references["apcorr"], exposure.subarray)
        elif self.apply_apcorr and exposure.source_type != "POINT":
            log.info("Aperture correction skipped: source type is not POINT")
        products = extract_box(exposure, params, apcorr)
        result = products.x1d
        self.record_step_status(result, "COMPLETE")
        if self.save_plots:
            from mirispec_steps.lrs.plots import plot_lrs_box

            self.write_side_product(
                "the box extraction plot",
                self.plot_path(result, model, index),
                lambda path: plot_lrs_box(exposure, products, path),
            )
        return result
