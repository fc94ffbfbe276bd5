"""The shared input handling of the steps that work on a calibrated MRS image."""

from __future__ import annotations

from mirispec_steps.errors import InputDataError
from mirispec_steps.mrs.exposure import check_mrs_image, has_wcs, is_calibrated
from mirispec_steps.mrs.geometry import is_mrs_exposure
from mirispec_steps.stepbase import MirispecStep

__all__ = ["CalibratedMrsStep"]


class CalibratedMrsStep(MirispecStep):
    """Base of MrsCentroidStep and MrsExtractStep (not used directly)."""

    def calibrated_mrs_input(self, model):
        """
        Check a calibrated MRS input and find its geometry source.

        Parameters
        ----------
        model : IFUImageModel
            One exposure.

        Returns
        -------
        skipped : DataModel or None
            A SKIPPED copy for non-MRS data (return it), else None.
        maps : str or None
            The ``mrsmaps`` file when the input has no WCS.

        Raises
        ------
        InputDataError
            Not an MRS image, not calibrated, or no WCS and no ``mrsmaps``.
        """
        if not is_mrs_exposure(model):
            exp_type = model.meta.exposure.type
            reason = f"Input is {model.meta.instrument.name} {exp_type}, not MRS"
            return self.skipped(model, reason), None
        check_mrs_image(model, "a calibrated MRS image")
        if not is_calibrated(model):
            raise InputDataError(
                f"input is not calibrated (BUNIT {model.meta.bunit_data!r}): run mrs_calibrate "
                "(or jwst's calwebb_spec2 through photom) first"
            )
        if has_wcs(model):
            return None, None
        if self.get_ref_override("mrsmaps") is None:
            raise InputDataError(
                "the input has no WCS: run jwst's assign_wcs first, or pass "
                "--override_mrsmaps=<mrsmaps file> (see docs/reference_files)"
            )
        return None, self.get_ref_override("mrsmaps")

    def needed_references(self, model) -> list[str]:
        """
        The step's reftypes; ``mrsmaps`` only for an input without a WCS.

        Parameters
        ----------
        model : IFUImageModel
            One exposure.

        Returns
        -------
        list of str
            Reftypes.
        """
        needed = [r for r in self.reference_file_types if r != "mrsmaps"]
        return needed if has_wcs(model) else [*needed, "mrsmaps"]
