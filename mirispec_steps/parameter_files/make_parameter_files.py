"""Write the packaged stpipe parameter files: ``python make_parameter_files.py``.

Each file names the class to run and only the parameters that differ from
that class's defaults or that users commonly tune, in stpipe's ASDF layout
(``class``, ``name``, ``parameters``, ``steps``).
"""

from __future__ import annotations

from pathlib import Path

import asdf

# Hooks given as "Class(parameters)" (no dots in the values): the spectra are jwst's
# x1d products of the exposure, hence suffix x1d (the steps' own default names the method).
MRS_EXTRACT_HOOKS = [
    "mirispec_steps.MrsCentroidStep",
    "mirispec_steps.MrsExtractStep(save_results=True, suffix='x1d')",
]
LRS_EXTRACT_HOOKS = ["mirispec_steps.LrsOptimalExtractStep(save_results=True, suffix='x1d')"]


def _step(class_path: str, name: str, **parameters) -> dict:
    return {"class": class_path, "name": name, "parameters": parameters}


def parameter_files() -> dict:
    """
    The parameter files' contents by file stem.

    Returns
    -------
    dict
        ASDF trees.
    """
    return {
        "mirispec_mrs_point_source": {
            "class": "mirispec_steps.MrsPointSourcePipeline",
            "name": "mrs_point_source",
            "parameters": {"save_plots": False},
            "steps": [
                _step(
                    "mirispec_steps.MrsCentroidStep",
                    "mrs_centroid",
                    oversampling=1.0,
                    track_order=2,
                    save_centroid_table=False,
                ),
                _step(
                    "mirispec_steps.MrsExtractStep",
                    "mrs_extract",
                    method="optimal",
                    radius=2.0,
                    radius_units="fwhm",
                    apply_apcorr=True,
                ),
            ],
        },
        "mirispec_lrs_extract": {
            "class": "mirispec_steps.LrsExtractPipeline",
            "name": "lrs_extract",
            "parameters": {"primary": "optimal", "save_plots": False},
            "steps": [
                _step(
                    "mirispec_steps.LrsBoxExtractStep",
                    "lrs_box_extract",
                    apply_apcorr=True,
                    bkg_sigma_clip=5.0,
                ),
                _step(
                    "mirispec_steps.LrsOptimalExtractStep",
                    "lrs_optimal_extract",
                    optimize_psf_location=True,
                    model_nod_pair=True,
                ),
            ],
        },
        "mirispec_spec2_miri": {
            "class": "mirispec_steps.MirispecSpec2Pipeline",
            "name": "mirispec_spec2",
            "parameters": {},
            "steps": [
                # LRS: the optimal extraction needs the unrectified cal image.
                _step(
                    "jwst.resample.resample_spec_step.ResampleSpecStep", "resample_spec", skip=True
                ),
                _step(
                    "mirispec_steps.LrsExtractPipeline",
                    "extract_1d",
                    primary="optimal",
                ),
                _step(
                    "mirispec_steps.MrsExtractStep",
                    "mrs_extract",
                    method="optimal",
                ),
            ],
        },
        "mirispec_spec3_lrs": {
            "class": "mirispec_steps.MirispecSpec3Pipeline",
            "name": "mirispec_spec3",
            "parameters": {},
            "steps": [
                _step(
                    "jwst.resample.resample_spec_step.ResampleSpecStep", "resample_spec", skip=True
                ),
                _step(
                    "mirispec_steps.LrsExtractPipeline",
                    "extract_1d",
                    primary="optimal",
                ),
            ],
        },
        "mirispec_spec3_mrs": {
            "class": "mirispec_steps.MirispecSpec3Pipeline",
            "name": "mirispec_spec3",
            "parameters": {},
            "steps": [
                _step("mirispec_steps.MrsCentroidStep", "mrs_centroid", oversampling=1.0),
                _step("mirispec_steps.MrsExtractStep", "mrs_extract", method="optimal"),
                _step(
                    "mirispec_steps.MrsCombineStep",
                    "mrs_combine",
                    overlap="cut",
                    residual_fringe=True,
                    save_plots=True,
                ),
            ],
        },
        "calwebb_spec2_mrs_hooks": {
            "class": "jwst.pipeline.calwebb_spec2.Spec2Pipeline",
            "name": "calwebb_spec2",
            "parameters": {},
            "steps": [
                _step("jwst.cube_build.cube_build_step.CubeBuildStep", "cube_build", skip=True),
                _step(
                    "jwst.extract_1d.extract_1d_step.Extract1dStep",
                    "extract_1d",
                    skip=True,
                    post_hooks=MRS_EXTRACT_HOOKS,
                ),
            ],
        },
        "calwebb_spec3_lrs_hooks": {
            "class": "jwst.pipeline.calwebb_spec3.Spec3Pipeline",
            "name": "calwebb_spec3",
            "parameters": {},
            "steps": [
                _step(
                    "jwst.resample.resample_spec_step.ResampleSpecStep", "resample_spec", skip=True
                ),
                _step(
                    "jwst.extract_1d.extract_1d_step.Extract1dStep",
                    "extract_1d",
                    skip=True,
                    post_hooks=LRS_EXTRACT_HOOKS,
                ),
            ],
        },
    }


def write_parameter_files(folder: str | Path) -> list[Path]:
    """
    Write every parameter file into ``folder``.

    Parameters
    ----------
    folder : str or Path
        Output folder.

    Returns
    -------
    list of Path
        The files written.
    """
    folder = Path(folder)
    written = []
    for stem, tree in parameter_files().items():
        path = folder / f"{stem}.asdf"
        asdf.AsdfFile(tree).write_to(path)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_parameter_files(Path(__file__).parent):
        print(path)
