"""A whole dithered MRS observation: every grating setting on both detectors, every dither.

A MIRI scientist's point-source observation is 6 to 24 exposures: the three
grating settings (SHORT, MEDIUM, LONG) on both detectors, each at the points
of a dither pattern, all pointed so that the source stays at one sky position.
:func:`simulate_mrs_observation` simulates such a set with
:func:`~mirispec_steps.simulate.mrs.simulate_mrs`: the exposures of one
setting share one instrument (pixel gain, so one ``photom`` and ``fringe``
reference per setting) and differ in noise and in the source's place in the
field, and it writes the files and an association as the pipeline takes them.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from mirispec_steps.simulate.mrs import SimulatedMrs, simulate_mrs
from mirispec_steps.simulate.offline_crds import local_crds

__all__ = [
    "ALL_SETTINGS",
    "FOUR_POINT_DITHER",
    "MrsObservation",
    "ObservedExposure",
    "simulate_mrs_observation",
]

#: (detector, band) of the six grating settings: all twelve bands.
ALL_SETTINGS = tuple(
    (detector, band)
    for detector in ("MIRIFUSHORT", "MIRIFULONG")
    for band in ("SHORT", "MEDIUM", "LONG")
)
#: A 4-point dither (alpha, beta; arcsec) in the spirit of the MRS point-source pattern:
#: the source falls on different slices and columns at every point.
FOUR_POINT_DITHER = ((0.45, 0.32), (-0.45, -0.32), (0.52, -0.41), (-0.38, 0.47))


@dataclass
class ObservedExposure:
    """
    One exposure of the observation.

    Attributes
    ----------
    detector, band : str
        Grating setting.
    dither : int
        Index of the dither point.
    simulated : SimulatedMrs
        Models, references and truth.
    files : dict
        Paths by role (``rate``, ``background``, ``photom``, ``fringe``,
        ``ptcorr`` with a leak, and ``association``: the exposure with its
        background, as calwebb_spec2 associations pair them).
    """

    detector: str
    band: str
    dither: int
    simulated: SimulatedMrs
    files: dict


@dataclass
class MrsObservation:
    """
    A simulated dithered observation.

    Attributes
    ----------
    exposures : list of ObservedExposure
        In setting order, then dither order.
    association : Path
        An association of the science rate files (product ``name``) and each
        exposure's background exposure (``background`` members).
    name : str
        The association's product name.
    """

    exposures: list
    association: Path
    name: str

    @property
    def truth(self):
        """The source's truth (shared by every exposure)."""
        return self.exposures[0].simulated.truth

    def references(self) -> dict:
        """
        The simulated references as CRDS would hand them out.

        Returns
        -------
        dict
            ``photom`` and ``fringe`` to ``{(detector, band): file}``, and
            ``mrsptcorr`` to its file when a spectral leak was simulated (for
            :func:`~mirispec_steps.simulate.offline_crds.local_crds`).
        """
        references = {"photom": {}, "fringe": {}}
        for exposure in self.exposures:
            setting = (exposure.detector, exposure.band)
            for reftype in ("photom", "fringe"):
                references[reftype].setdefault(setting, exposure.files[reftype])
            if "ptcorr" in exposure.files:
                references["mrsptcorr"] = exposure.files["ptcorr"]
        return references

    def crds(self, folder: str | Path):
        """
        A local CRDS serving this observation's references (a context manager).

        Parameters
        ----------
        folder : str or Path
            Folder of the cache.

        Returns
        -------
        contextmanager
            :func:`~mirispec_steps.simulate.offline_crds.local_crds`.
        """
        return local_crds(folder, self.references())


def simulate_mrs_observation(
    folder: str | Path,
    *,
    settings=ALL_SETTINGS,
    dithers=FOUR_POINT_DITHER,
    target: tuple = (10.001, 19.999),
    name: str = "mrs_observation",
    seed: int = 0,
    **kwargs,
) -> MrsObservation:
    """
    Simulate and write every exposure of a dithered MRS observation of one source.

    Parameters
    ----------
    folder : str or Path
        Output folder (created if needed).
    settings : sequence of (str, str)
        (detector, band) grating settings; default all six.
    dithers : sequence of (float, float)
        Source position (alpha, beta; arcsec) at each dither point.
    target : (float, float)
        The source's RA, Dec (degrees); every exposure is pointed so that
        the dither position lands there.
    name : str
        Product name of the association (and file-name prefix).
    seed : int
        Seed of the whole set: each exposure's noise and each setting's
        instrument are drawn from seeds derived from it.
    **kwargs
        Passed to :func:`~mirispec_steps.simulate.mrs.simulate_mrs` (source,
        PSF, fringes, leak, noise...).

    Returns
    -------
    MrsObservation
        The exposures and the association file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    exposures = []
    for detector, band in settings:
        # One instrument per setting: the same seed for every dither's pixel gain.
        setting_seed = zlib.crc32(f"{seed}:{detector}:{band}".encode())
        for index, (alpha, beta) in enumerate(dithers):
            simulated = simulate_mrs(
                detector, band, alpha=alpha, beta=beta, target=target,
                seed=setting_seed + 1000 * (index + 1), calibration_seed=setting_seed, **kwargs,
            )  # fmt: skip
            stem = f"{name}_{detector.lower()}_{band.lower()}_d{index + 1}"
            files = simulated.write(folder, stem=stem)
            files["association"] = _write_association(
                folder / f"{stem}_asn.json", stem, "spec2",
                [(files["rate"], "science"), (files["background"], "background")],
            )  # fmt: skip
            exposures.append(ObservedExposure(detector, band, index, simulated, files))
    association = _write_association(
        folder / f"{name}_asn.json", name, "spec3",
        [(exposure.files["rate"], "science") for exposure in exposures]
        + [(exposure.files["background"], "background") for exposure in exposures],
    )  # fmt: skip
    return MrsObservation(exposures, association, name)


def _write_association(path: Path, product: str, kind: str, members) -> Path:
    """A minimal jwst association (one product) of the given (file, exptype) members."""
    path.write_text(
        json.dumps(
            {
                "asn_type": kind,
                "asn_rule": "mirispec_steps simulated observation",
                "asn_pool": "none",
                "program": "00000",
                "products": [
                    {
                        "name": product,
                        "members": [
                            {"expname": Path(file).name, "exptype": exptype}
                            for file, exptype in members
                        ],
                    }
                ],
            },
            indent=2,
        )
    )
    return path
