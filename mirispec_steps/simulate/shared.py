"""What the LRS and MRS simulators share: jwst's spectroscopic WCS frames, offline assign_wcs."""

from __future__ import annotations

from pathlib import Path

import gwcs.coordinate_frames as cf
from astropy import coordinates as coord
from astropy import units as u

__all__ = ["assign_wcs_offline", "spectral_frames"]


def spectral_frames(spectral_name: str, focal_planes: tuple[str, ...]) -> dict:
    """
    jwst's MIRI spectroscopic frames, in pipeline order.

    Parameters
    ----------
    spectral_name : str
        Name of the spectral frame in the focal planes and the world frame
        (jwst uses ``spec`` for LRS, ``spectral`` for MRS).
    focal_planes : tuple of str
        Names of the (v2, v3, lambda) frames after ``alpha_beta``
        (``("v2v3",)`` for LRS, ``("v2v3", "v2v3vacorr")`` for MRS).

    Returns
    -------
    dict
        ``detector``, ``alpha_beta``, each focal plane, ``world``.
    """
    frames = {"detector": cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))}
    alpha_beta = cf.Frame2D(
        name="alpha_beta_spatial",
        axes_order=(0, 1),
        unit=(u.arcsec, u.arcsec),
        axes_names=("alpha", "beta"),
    )
    spec_local = cf.SpectralFrame(
        name="alpha_beta_spectral", axes_order=(2,), unit=(u.micron,), axes_names=("lambda",)
    )
    frames["alpha_beta"] = cf.CompositeFrame([alpha_beta, spec_local], name="alpha_beta")
    spec = cf.SpectralFrame(
        name=spectral_name, axes_order=(2,), unit=(u.micron,), axes_names=("lambda",)
    )
    for name in focal_planes:
        spatial = cf.Frame2D(
            name=f"{name}_spatial",
            axes_order=(0, 1),
            unit=(u.arcsec, u.arcsec),
            axes_names=("v2", "v3"),
        )
        frames[name] = cf.CompositeFrame([spatial, spec], name=name)
    icrs = cf.CelestialFrame(
        name="icrs",
        reference_frame=coord.ICRS(),
        axes_order=(0, 1),
        unit=(u.deg, u.deg),
        axes_names=("RA", "DEC"),
    )
    frames["world"] = cf.CompositeFrame([icrs, spec], name="world")
    return frames


def assign_wcs_offline(model, files: dict):
    """
    Run jwst's AssignWcsStep with the given reference files and no CRDS server.

    Parameters
    ----------
    model : DataModel
        Exposure with the keywords assign_wcs needs (not modified).
    files : dict
        Reference type -> path for the types the mode uses; every other type
        the step asks for is overridden with "N/A".

    Returns
    -------
    DataModel
        A new model with the WCS assigned.

    Raises
    ------
    FileNotFoundError
        A reference file does not exist.
    RuntimeError
        The step did not assign the WCS.
    """

    from jwst.assign_wcs import AssignWcsStep

    from mirispec_steps.simulate.offline_crds import offline_crds

    missing = [str(path) for path in files.values() if not Path(path).exists()]
    if missing:
        raise FileNotFoundError(f"reference files not found: {', '.join(missing)}")
    overrides = {f"override_{reftype}": "N/A" for reftype in AssignWcsStep.reference_file_types}
    overrides.update({f"override_{reftype}": str(path) for reftype, path in files.items()})
    with offline_crds():
        result = AssignWcsStep.call(model.copy(), **overrides)
    if result.meta.cal_step.assign_wcs != "COMPLETE":
        raise RuntimeError("jwst's AssignWcsStep did not assign the WCS")
    return result
