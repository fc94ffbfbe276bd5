"""MrsCalibrateStep: MIRI MRS slopes (DN/s) to surface brightness (MJy/sr)."""

from __future__ import annotations

import logging

from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs.calibrate import calibrate_mrs, load_backgrounds
from mirispec_steps.mrs.exposure import check_mrs_image, has_wcs, is_calibrated
from mirispec_steps.mrs.geometry import is_mrs_exposure
from mirispec_steps.mrs.references import load_calibration_references
from mirispec_steps.stepbase import MirispecStep

__all__ = ["MrsCalibrateStep"]

log = logging.getLogger(__name__)


class MrsCalibrateStep(MirispecStep):
    """
    Calibrate a MIRI MRS slope image: background, fringe flat, photom, time dependence.

    The arithmetic of jwst's ``bkg_subtract`` (pixel-based), ``fringe`` and
    ``photom`` steps for MRS in one pass, in variance space: the background
    is the mean of one or several background exposures (outliers rejected
    with three or more) and its variances add to the science variances;
    calibration factors scale every variance component by their square.
    Pixels with NaN or zero reference values are flagged DO_NOT_USE.
    The output is an ``IFUImageModel`` in MJy/sr (suffix ``mrscal``).
    """

    class_alias = "mrs_calibrate"
    product_suffix = "mrscal"

    spec = """
    background = force_list(default=None)  # background exposure(s): file(s), list or association
    background_sigma = float(default=3.0, min=0)  # reject background outliers beyond N sigma (3+ exposures; 0: off)
    apply_time_correction = boolean(default=True)  # apply photom's time-dependent correction if present
    reference_uncertainty = boolean(default=False)  # add fringe/photom uncertainties to VAR_FLAT
    save_plots = boolean(default=False)  # PNG: calibrated image and its S/N
    """  # noqa: E501

    reference_file_types = ["fringe", "photom", "mrsmaps"]

    def process(self, input_data):
        """
        Calibrate the exposure(s).

        Parameters
        ----------
        input_data : str, IFUImageModel or ModelContainer
            MRS slope image(s) in DN/s.

        Returns
        -------
        IFUImageModel or ModelContainer
            Calibrated image(s) in MJy/sr; the input, marked SKIPPED, when
            it is not MIRI MRS.
        """
        return self.process_each(input_data, self._calibrate_one)

    def needed_references(self, model) -> list[str]:
        """
        fringe and photom; ``mrsmaps`` too when given and the input has no WCS.

        Parameters
        ----------
        model : IFUImageModel
            One exposure.

        Returns
        -------
        list of str
            Reftypes.
        """
        maps = not has_wcs(model) and self.get_ref_override("mrsmaps") is not None
        return ["fringe", "photom", *(["mrsmaps"] if maps else [])]

    def _calibrate_one(self, model, index):
        if not is_mrs_exposure(model):
            exp_type = model.meta.exposure.type
            return self.skipped(model, f"Input is {model.meta.instrument.name} {exp_type}, not MRS")
        check_mrs_image(model, "an MRS rate image in DN/s")
        if is_calibrated(model):
            raise InputDataError(
                f"input is already calibrated (BUNIT {model.meta.bunit_data!r}, photom "
                f"{getattr(model.meta.cal_step, 'photom', None)}): refusing to calibrate twice"
            )
        paths = self.resolve_references(model)
        if paths["photom"] == "N/A":
            raise InputDataError("no photom reference file: pass --override_photom=<path>")
        background = load_backgrounds(self.background, model, self.background_sigma)
        references = load_calibration_references(model, paths["fringe"], paths["photom"])
        maps = paths.get("mrsmaps")
        result = calibrate_mrs(
            model,
            references,
            background=background,
            apply_time_correction=self.apply_time_correction,
            maps=maps,
            reference_uncertainty=self.reference_uncertainty,
        )
        self.record_step_status(result, "COMPLETE")
        if self.save_plots:
            from mirispec_steps.mrs.plots import plot_mrs_calibrated

            self.write_side_product(
                "the calibration plot",
                self.plot_path(result, model, index),
                lambda path: plot_mrs_calibrated(result, path, maps=maps),
            )
        return result
