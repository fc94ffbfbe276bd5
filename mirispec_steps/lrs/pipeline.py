"""LrsExtractPipeline: box and optimal extraction of one LRS exposure, side by side."""

from __future__ import annotations

import logging

from jwst.datamodels import ModelContainer

from mirispec_steps.errors import InputDataError
from mirispec_steps.lrs.box_step import LrsBoxExtractStep
from mirispec_steps.lrs.exposure import is_lrs, read_exposure
from mirispec_steps.lrs.optimal_step import LrsOptimalExtractStep
from mirispec_steps.stepbase import MirispecPipeline

__all__ = ["LrsExtractPipeline"]

log = logging.getLogger(__name__)

METHOD_STEPS = {"box": "lrs_box_extract", "optimal": "lrs_optimal_extract"}


class LrsExtractPipeline(MirispecPipeline):
    """
    Extract an LRS exposure with the box and the optimal method.

    Runs ``lrs_box_extract`` and ``lrs_optimal_extract`` on the same input
    (each can be turned off with ``--steps.<step>.skip=True``). The spectrum
    of the ``primary`` method is the pipeline's product (``<root>_x1d``, the
    file downstream tools such as combine_1d read); the other method's is
    saved beside it as ``<root>_<method>_x1d``. With ``save_plots``,
    ``<root>_x1d.png`` compares both spectra with their errors and SNR, and
    each step writes its own diagnostics as ``<root>_<method>_x1d.png``.

    Rectified (s2d) input has no pixel grid for the PSF fit: only the box
    extraction runs, with a warning. A container (an association, as
    calwebb_spec3 passes to ``extract_1d``) runs the primary method only.
    """

    class_alias = "lrs_extract"
    product_suffix = "x1d"

    spec = """
    primary = option("optimal", "box", default="optimal")  # method whose spectrum is the <root>_x1d product
    save_plots = boolean(default=False)  # PNGs: box vs optimal, and each step's diagnostics
    """  # noqa: E501

    step_defs = {
        "lrs_box_extract": LrsBoxExtractStep,
        "lrs_optimal_extract": LrsOptimalExtractStep,
    }

    def process(self, input_data):
        """
        Extract the spectra.

        Parameters
        ----------
        input_data : str, DataModel or ModelContainer
            LRS cal/calints (both methods), s2d (box only), or a container.

        Returns
        -------
        MultiSpecModel, TSOMultiSpecModel or ModelContainer
            The primary method's spectrum (or the other's when the primary
            cannot run).
        """
        model = self.prepare_output(input_data, make_copy=False)
        exposures = list(model) if isinstance(model, ModelContainer) else [model]
        for exposure in exposures:
            if not is_lrs(exposure):
                kind = f"{exposure.meta.instrument.name} {exposure.meta.exposure.type}"
                return self.skipped(model, f"Input is {kind}, not LRS")
        methods = self._methods(model)
        steps = {METHOD_STEPS[m]: getattr(self, METHOD_STEPS[m]) for m in methods}
        for exposure in exposures:
            self.check_step_references(exposure, steps)
        primary = self.primary if self.primary in methods else methods[0]
        if primary != self.primary:
            log.warning(f"{self.primary} extraction cannot run here: {primary} is the product")
        spectra = {}
        for method in methods:
            step = getattr(self, METHOD_STEPS[method])
            # The pipeline saves the primary's spectrum as its own product; each
            # step's side products (the other spectrum, plots) carry the method.
            step.save_results = self.save_results and method != primary
            self.substep_output(step, model, "")
            if self.save_plots and hasattr(step, "save_plots"):
                step.save_plots = True
            spectra[method] = step.run(model)
        result = spectra[primary]
        if self.save_plots and len(spectra) == 2 and not isinstance(model, ModelContainer):
            self._plot(model, spectra)
        return result

    def _methods(self, model) -> list[str]:
        """The methods to run, primary first."""
        methods = [self.primary, *(m for m in METHOD_STEPS if m != self.primary)]
        methods = [m for m in methods if not getattr(self, METHOD_STEPS[m]).skip]
        if not methods:
            raise InputDataError(
                "both lrs_box_extract and lrs_optimal_extract are skipped: nothing to run"
            )
        if isinstance(model, ModelContainer):
            return methods[:1]
        if "optimal" in methods and _is_rectified(model):
            log.warning("input is rectified (s2d): the optimal extraction needs cal data")
            methods.remove("optimal")
            if not methods:
                raise InputDataError(
                    "input is rectified (s2d) and lrs_box_extract is skipped: the optimal "
                    "extraction needs cal/calints data"
                )
        return methods

    def _plot(self, model, spectra) -> None:
        from mirispec_steps.plots import plot_spectra

        self.write_side_product(
            "the box vs optimal plot",
            self.plot_path(spectra["box"], model),
            lambda path: plot_spectra(
                {"box": spectra["box"], "optimal": spectra["optimal"]},
                path,
                title="MIRI LRS: box and optimal extraction (relative 1-sigma error below)",
            ),
        )


def _is_rectified(model) -> bool:
    try:
        return read_exposure(model).rectified
    except InputDataError:
        # Not usable LRS data: each step reports (or skips) it itself.
        return False
