"""LrsPsfStep: an LRS ``psf`` reference file built from exposures of a bright point source."""

from __future__ import annotations

import logging

from mirispec_steps.errors import InputDataError
from mirispec_steps.lrs.exposure import is_lrs, read_exposure
from mirispec_steps.lrs.optimal_step import OPTIMAL_SETTINGS, optimal_parameters
from mirispec_steps.lrs.psf_builder import PsfBuildSettings, build_psf, measure_psf
from mirispec_steps.lrs.references import load_extract1d, load_lrs_psf, select_aperture
from mirispec_steps.stepbase import MirispecStep

__all__ = ["LrsPsfStep"]

log = logging.getLogger(__name__)

#: How the profile is measured (the optimal extraction's settings, profile from the data).
MEASUREMENT = {
    "subtract_background": True, "bkg_order": None, "bkg_smoothing_length": 0,
    "position_offset": 0.0, "profile": "auto", "optimize_psf_location": True,
    "optimize_psf_width": False, "fit_half_width": 0.0, "reject_sigma": 5.0,
    "reject_spikes": True,
}  # fmt: skip


class LrsPsfStep(MirispecStep):
    """
    Build an LRS ``psf`` reference (jwst's ``SpecPsfModel``) from a bright point source.

    Every input exposure (cal or calints; both nods of a fixed-slit pair,
    several slit positions) is prepared as for optimal extraction and its
    spatial profile measured from the data; the profiles are sampled on a
    sub-pixel grid, averaged over the exposures with S/N-squared weights
    and normalised like the reference files jwst and
    :class:`~mirispec_steps.LrsOptimalExtractStep` read. Outside the
    wavelengths the data cover, the current ``psf`` reference is kept. The
    file works unchanged with ``--override_psf`` in both this package's and
    jwst's optimal extraction. Sources that would make a wrong PSF (too
    faint, saturated in the core, extended, on the slit's edge) are refused
    and nothing is written.
    """

    class_alias = "lrs_psf"
    product_suffix = "psf"

    spec = """
    subpix = integer(default=10, min=1, max=50)  # samples per pixel across dispersion in the new table
    half_extent = float(default=30.0, min=5)  # pixels either side of the source covered by the table
    wavelength_step = float(default=0.05, min=0.005, max=1.0)  # wavelength spacing of the table (micron)
    min_snr = float(default=50.0, min=5)  # smallest median row S/N of an input exposure
    use_source_posn = boolean(default=True)  # place the trace at the dithered source position
    fit_trace_order = integer(default=None, min=0, max=5)  # fit a smooth polynomial trace offset
    model_nod_pair = boolean(default=True)  # model the negative trace of nod-subtracted data
    save_plots = boolean(default=False)  # PNG: the new PSF against the reference it replaces
    """  # noqa: E501

    reference_file_types = ["extract1d", "psf"]

    def process(self, *inputs):
        """
        Measure the PSF.

        Parameters
        ----------
        *inputs : str, DataModel, list or ModelContainer
            LRS cal or calints exposure(s) of a bright point source with a WCS:
            one or several files or models, a list, or an association.

        Returns
        -------
        SpecPsfModel
            The new ``psf`` reference.
        """
        members = self.input_members(*inputs)
        settings = PsfBuildSettings(
            subpix=int(self.subpix), half_extent=float(self.half_extent),
            wavelength_step=float(self.wavelength_step), min_snr=float(self.min_snr),
        )  # fmt: skip
        measured, exp_types, reference = [], [], None
        for model in members:
            if not is_lrs(model):
                raise InputDataError(
                    f"{model.meta.filename}: {model.meta.instrument.name} "
                    f"{model.meta.exposure.type} is not MIRI LRS; lrs_psf needs LRS exposures"
                )
            exposure = read_exposure(model, rectified_ok=False)
            references = self.resolve_references(model)
            aperture = select_aperture(load_extract1d(references["extract1d"]), exposure.slit_name)
            psf = load_lrs_psf(references["psf"], exposure.model_name)
            reference = reference or psf
            params = optimal_parameters(aperture, exposure, self._measurement())
            measured.append(measure_psf(exposure, params, psf, settings))
            exp_types.append(str(model.meta.exposure.type))
        result = build_psf(measured, reference, settings, tuple(dict.fromkeys(exp_types)))
        # A reference file has no cal_step; its DESCRIP says how it was made.
        result.meta.filename = members[0].meta.filename
        if self.save_plots:
            from mirispec_steps.lrs.plots import plot_lrs_psf

            self.write_side_product(
                "the PSF comparison plot",
                self.plot_path(result, members[0]),
                lambda path: plot_lrs_psf(result, reference, path),
            )
        return result

    def _measurement(self) -> dict:
        """The optimal extraction's settings for measuring the profile."""
        return {name: MEASUREMENT.get(name, getattr(self, name, None)) for name in OPTIMAL_SETTINGS}
