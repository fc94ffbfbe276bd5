"""LrsOptimalExtractStep: PSF-weighted MIRI LRS extraction on unrectified data."""

from __future__ import annotations

import logging

from stdatamodels.jwst import datamodels

from mirispec_steps.errors import ParameterError
from mirispec_steps.lrs.box import resolve_box_parameters
from mirispec_steps.lrs.exposure import is_lrs, read_exposure
from mirispec_steps.lrs.optimal import OptimalParameters, extract_optimal
from mirispec_steps.lrs.references import load_extract1d, load_lrs_psf, select_aperture
from mirispec_steps.stepbase import MirispecStep

__all__ = ["OPTIMAL_SETTINGS", "LrsOptimalExtractStep", "optimal_parameters"]

log = logging.getLogger(__name__)

#: Background polynomial order across the cutout when no bkg_coeff regions are given.
DEFAULT_CUTOUT_BKG_ORDER = 1
#: Smallest fit window half-width (pixels) that still holds the PSF core and some sky.
MIN_FIT_HALF_WIDTH = 3.0


#: Step parameters that shape the optimal extraction (see the step's spec).
OPTIMAL_SETTINGS = (
    "subtract_background", "bkg_order", "bkg_smoothing_length", "use_source_posn",
    "position_offset", "profile", "optimize_psf_location", "optimize_psf_width",
    "fit_trace_order", "model_nod_pair", "fit_half_width", "reject_sigma", "reject_spikes",
)  # fmt: skip


def _fit_half_width(settings: dict) -> float | None:
    """Columns either side of the trace to fit; None: the whole cutout."""
    return float(settings["fit_half_width"]) or None


def optimal_parameters(aperture, exposure, settings: dict) -> OptimalParameters:
    """
    Optimal-extraction parameters from step settings over an extract1d aperture.

    Parameters
    ----------
    aperture : ApertureParameters
        The extract1d aperture of the exposure's slit.
    exposure : LrsExposure
        The exposure.
    settings : dict
        The values of :data:`OPTIMAL_SETTINGS` (a step's parameters).

    Returns
    -------
    OptimalParameters
        Resolved parameters.

    Raises
    ------
    ParameterError
        A fit window too narrow, or an even smoothing length.
    """
    # None (an old parameter file) meant "yes" before it became a plain boolean.
    subtract = settings["subtract_background"] is not False
    if settings["bkg_order"] is not None:
        order = settings["bkg_order"]
    elif aperture.bkg_coeff is not None:
        order = aperture.bkg_order or 0
    else:
        # The file's bkg_order describes its (absent) bkg_coeff regions; a
        # polynomial across the whole cutout needs a slope for sky gradients.
        order = DEFAULT_CUTOUT_BKG_ORDER
    if settings["fit_trace_order"] is not None and not settings["optimize_psf_location"]:
        log.info("fit_trace_order given: the trace location is fitted")
    background_regions = None
    ny = exposure.shape[0]
    disp_start = aperture.ystart if aperture.ystart is not None else 0
    disp_stop = aperture.ystop if aperture.ystop is not None else ny - 1
    if subtract and aperture.bkg_coeff is not None:
        # The same background regions as box extraction (shifted with the source).
        background_regions = resolve_box_parameters(
            aperture,
            exposure,
            subtract_background=True,
            bkg_fit="poly",
            bkg_order=order,
            smoothing_length=0,
            use_source_posn=settings["use_source_posn"],
            position_offset=settings["position_offset"],
            bkg_sigma_clip=None,
            replace_bad_pixels=False,
            fixed_background=False,
        )
    half_width = settings["fit_half_width"]
    if half_width and half_width < MIN_FIT_HALF_WIDTH:
        raise ParameterError(
            f"fit_half_width={half_width} px leaves too few pixels for the PSF and "
            f"the background; use at least {MIN_FIT_HALF_WIDTH} (or 0 for the whole cutout)"
        )
    smoothing = settings["bkg_smoothing_length"]
    if smoothing and smoothing % 2 == 0:
        raise ParameterError(f"bkg_smoothing_length must be odd, got {smoothing}")
    trace_order = settings["fit_trace_order"]
    return OptimalParameters(
        subtract_background=bool(subtract),
        bkg_order=int(order),
        bkg_smoothing_length=int(smoothing or 0),
        background_regions=background_regions,
        use_source_posn=bool(settings["use_source_posn"]),
        position_offset=float(settings["position_offset"] or 0.0),
        optimize_psf_location=bool(settings["optimize_psf_location"]),
        optimize_psf_width=bool(settings["optimize_psf_width"]),
        fit_trace_order=-1 if trace_order is None else int(trace_order),
        profile=str(settings["profile"]),
        model_nod_pair=bool(settings["model_nod_pair"]),
        reject_sigma=float(settings["reject_sigma"] or 0.0),
        disp_start=float(disp_start),
        disp_stop=float(disp_stop),
        fit_half_width=_fit_half_width(settings),
        reject_spikes=bool(settings["reject_spikes"]),
    )


class LrsOptimalExtractStep(MirispecStep):
    """
    Optimal (Horne 1986) extraction of a MIRI LRS point source from cal or calints data.

    Each row along the WCS trace is fitted with the PSF profile from the
    ``psf`` reference file (jwst's LRS format; a packaged default from the
    package's PSF model), weighted by the inverse of a model variance, with
    iterative outlier rejection, an optional background polynomial (fitted
    jointly, or from background pixels and smoothed along dispersion), an
    optional negative nod trace, and a trace position refined by the scene
    model's chi-square (one global shift, or a polynomial along dispersion).
    FLUX is the total flux of the source (the profile is normalised to the
    whole PSF), so no aperture correction applies.
    """

    class_alias = "lrs_optimal_extract"
    product_suffix = "optimal_x1d"

    spec = """
    subtract_background = boolean(default=True)  # fit the background with the source (bkg_coeff regions if given, else the fit window)
    bkg_order = integer(default=None, min=0)  # background polynomial order (None: the extract1d bkg_order with bkg_coeff regions, else 1)
    bkg_smoothing_length = integer(default=0, min=0)  # smooth the background along dispersion over N rows (0: joint per-row fit)
    use_source_posn = boolean(default=True)  # centre on the dithered source position (else the aperture reference point)
    position_offset = float(default=0)  # extra cross-dispersion offset (pixels)
    profile = option("auto", "psf", "empirical", default="auto")  # spatial profile: PSF reference, measured from the data, or measured when bright enough
    optimize_psf_location = boolean(default=True)  # fit a global shift of the trace
    optimize_psf_width = boolean(default=False)  # fit a global width scale of the PSF model
    fit_trace_order = integer(default=None, min=0, max=5)  # fit a smooth polynomial trace offset of this order
    model_nod_pair = boolean(default=True)  # model the negative trace of nod-subtracted data
    fit_half_width = float(default=15, min=0)  # fit the columns within N px of the trace(s) (0: whole cutout; a profile is measured on the whole cutout)
    reject_sigma = float(default=5.0, min=0)  # reject outliers beyond N model sigma (0: off)
    reject_spikes = boolean(default=True)  # leave out single-pixel spikes (unflagged cosmic rays) found against the adjacent rows
    save_scene_model = boolean(default=False)  # save the fitted scene as an image
    save_residual_image = boolean(default=False)  # save data minus scene
    save_profile = boolean(default=False)  # save the normalised spatial profile
    save_plots = boolean(default=False)  # PNG: trace and its fit, data and residual, spectrum
    """  # noqa: E501

    reference_file_types = ["extract1d", "psf"]

    def process(self, input_data):
        """
        Extract the spectrum.

        Parameters
        ----------
        input_data : str, DataModel or ModelContainer
            LRS cal (ImageModel) or calints (CubeModel) with a WCS, or a
            container of them.

        Returns
        -------
        MultiSpecModel, TSOMultiSpecModel or ModelContainer
            x1d (x1dints) spectra; the input, marked SKIPPED, when it is not
            MIRI LRS data.
        """
        return self.process_each(input_data, self._extract_one)

    def _extract_one(self, model, index):
        if not is_lrs(model):
            exp_type = model.meta.exposure.type
            return self.skipped(model, f"Input is {model.meta.instrument.name} {exp_type}, not LRS")
        exposure = read_exposure(model, rectified_ok=False)
        references = self.resolve_references(model)
        aperture = select_aperture(load_extract1d(references["extract1d"]), exposure.slit_name)
        psf = load_lrs_psf(references["psf"], exposure.model_name)
        params = self._parameters(aperture, exposure)
        products = extract_optimal(exposure, params, psf)
        result = products.x1d
        self.record_step_status(result, "COMPLETE")
        self._save_images(model, products, index)
        if self.save_plots:
            from mirispec_steps.lrs.plots import plot_lrs_optimal

            self.write_side_product(
                "the optimal extraction plot",
                self.plot_path(result, model, index),
                lambda path: plot_lrs_optimal(exposure, products, path),
            )
        return result

    def _parameters(self, aperture, exposure) -> OptimalParameters:
        """Step parameters over the extract1d aperture's values."""
        return optimal_parameters(
            aperture, exposure, {name: getattr(self, name) for name in OPTIMAL_SETTINGS}
        )

    def _save_images(self, model, products, index):
        """Scene model, residual and profile as images named like the x1d."""
        wanted = {
            "scene_model": (self.save_scene_model, "scene"),
            "residual": (self.save_residual_image, "residual"),
            "profile": (self.save_profile, "profile"),
        }
        for suffix, (save, attribute) in wanted.items():
            if not save:
                continue
            # Built on access only (products.scene/residual are lazy).
            image = getattr(products, attribute)
            if image.ndim == 3 and image.shape[0] > 1:
                output = datamodels.CubeModel(data=image.astype("float32"))
            else:
                output = datamodels.ImageModel(
                    data=image.reshape(image.shape[-2:]).astype("float32")
                )
            output.update(model, only="PRIMARY")
            output.meta.wcs = None
            self.record_step_status(output, "COMPLETE")
            path = self.side_path(model, suffix, ".fits", index)
            self.write_side_product(f"the {attribute} image", path, output.save)
