"""The DQ flags the package reads and writes: jwst's pixel flags, by name, in one place.

Images use jwst's pixel flags. Spectra (the x1d ``DQ`` column) use the same
flag values, as jwst's extract_1d does. A spectral element carries

``DO_NOT_USE``
    when it has no flux (every pixel invalid, the fit failed, or the PSF
    reference does not cover its wavelength);
``FLUX_ESTIMATED``
    when part of its flux was rebuilt from the profile (bad aperture pixels
    repaired; jwst's pixel_replace uses the same flag for the pixels it
    fills, and the x1d's ``replaced_fraction`` says how much);
``OTHER_BAD_PIXEL``
    when its background could not be fitted (too few background pixels:
    the background is 0 there);
``OUTLIER``
    when pixels of it were rejected as outliers by the fit.
"""

from __future__ import annotations

from stdatamodels.jwst.datamodels import dqflags

__all__ = [
    "DEAD",
    "DO_NOT_USE",
    "FLUX_ESTIMATED",
    "HOT",
    "NON_SCIENCE",
    "NO_BACKGROUND",
    "OUTLIER",
    "SATURATED",
    "flag_names",
]

DO_NOT_USE = dqflags.pixel["DO_NOT_USE"]
NON_SCIENCE = dqflags.pixel["NON_SCIENCE"]
DEAD = dqflags.pixel["DEAD"]
HOT = dqflags.pixel["HOT"]
SATURATED = dqflags.pixel["SATURATED"]
#: Part of the element's flux was rebuilt (bad-pixel repair).
FLUX_ESTIMATED = dqflags.pixel["FLUX_ESTIMATED"]
#: The background could not be fitted for the element (jwst has no sky flag).
NO_BACKGROUND = dqflags.pixel["OTHER_BAD_PIXEL"]
#: Pixels of the element were rejected as outliers.
OUTLIER = dqflags.pixel["OUTLIER"]


def flag_names(value: int) -> list[str]:
    """
    jwst's names of the flags set in a DQ value.

    Parameters
    ----------
    value : int
        A DQ value.

    Returns
    -------
    list of str
        Flag names, lowest bit first.

    Examples
    --------
    >>> flag_names(DO_NOT_USE | OUTLIER)
    ['DO_NOT_USE', 'OUTLIER']
    """
    return [name for name, bit in dqflags.pixel.items() if bit and int(value) & bit]
