"""Spectral bins from the resolving power, and which detector pixels fall in each bin.

A bin centred on ``lambda`` is ``lambda / R(lambda)`` wide; consecutive
centres are one bin width divided by ``oversampling`` apart. A pixel belongs
to every bin whose centre is within half a bin width of its wavelength.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["BinMembers", "SpectralGrid", "bin_members", "spectral_grid"]


@dataclass
class SpectralGrid:
    """
    Centres and widths of spectral bins.

    Attributes
    ----------
    wavelength : ndarray
        ``(K,)`` increasing bin centres (micron).
    width : ndarray
        ``(K,)`` bin widths (micron).
    """

    wavelength: np.ndarray
    width: np.ndarray

    def __len__(self) -> int:
        return int(self.wavelength.size)

    @property
    def wavelength_span(self) -> tuple[float, float]:
        """Wavelengths a model must cover for these bins: one bin width beyond each end."""
        return (
            float(self.wavelength[0] - self.width[0]),
            float(self.wavelength[-1] + self.width[-1]),
        )

    def finer(self, factor: int) -> SpectralGrid:
        """
        Each bin split into ``factor`` equal sub-bins, sorted by wavelength.

        Parameters
        ----------
        factor : int
            Sub-bins per bin.

        Returns
        -------
        SpectralGrid
            ``factor * K`` bins of a ``factor``-th of the width.
        """
        offsets = (np.arange(factor) + 0.5) / factor - 0.5
        centres = (self.wavelength[:, None] + self.width[:, None] * offsets[None, :]).ravel()
        widths = np.repeat(self.width / factor, factor)
        order = np.argsort(centres, kind="stable")
        return SpectralGrid(centres[order], widths[order])


def spectral_grid(
    low: float,
    high: float,
    resolving_power: Callable[[np.ndarray], np.ndarray],
    oversampling: float = 1.0,
) -> SpectralGrid:
    """
    Bins of width ``lambda / R`` stepped across ``[low, high]``.

    Parameters
    ----------
    low, high : float
        Wavelength range covered by data (micron).
    resolving_power : callable
        ``R(lambda)``.
    oversampling : float
        Bins per resolution element (>= 1 means overlapping bins for > 1).

    Returns
    -------
    SpectralGrid
        Bins lying wholly inside ``[low, high]``, strictly increasing.

    Raises
    ------
    ValueError
        ``oversampling`` is not positive, or ``R`` is not finite and
        positive everywhere in ``[low, high]`` (checked on a fine grid first:
        a bin of zero or negative width would never advance).

    Examples
    --------
    >>> grid = spectral_grid(5.0, 5.1, lambda w: 1000.0 + 0 * w)
    >>> len(grid), round(float(grid.width[0]), 4)
    (19, 0.005)
    """
    if not oversampling > 0:
        raise ValueError("oversampling must be > 0")
    if not low < high:
        raise ValueError(f"empty wavelength range {low}-{high}")
    probe = np.linspace(low, high, 1000)
    power = np.asarray(resolving_power(probe), dtype=float)
    if not np.all(np.isfinite(power) & (power > 0)):
        worst = float(probe[np.argmin(np.where(np.isfinite(power), power, -np.inf))])
        raise ValueError(
            f"the resolving power is not positive at {worst:.4f} um (range {low:.4f}-{high:.4f})"
        )
    # Each bin is at least lambda / R_max wide: the loop ends after about
    # (high - low) * R_max / lambda steps.
    centres, widths = [], []
    centre = low
    for _ in range(5):  # first centre half its own width above ``low``
        centre = low + 0.5 * centre / float(resolving_power(centre))
    width = centre / float(resolving_power(centre))
    # A few hundred to a thousand bins per band: 1.5-3 ms.
    while centre + 0.5 * width <= high:
        centres.append(centre)
        widths.append(width)
        centre = centre + width / oversampling
        width = centre / float(resolving_power(centre))
    return SpectralGrid(np.array(centres), np.array(widths))


@dataclass
class BinMembers:
    """
    The pixels of every bin, as a padded index matrix.

    Attributes
    ----------
    index : ndarray
        ``(K, M)`` indices into the pixel arrays (0 where padded).
    inside : ndarray
        ``(K, M)`` True for real members.
    """

    index: np.ndarray
    inside: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        """``(K,)`` members per bin."""
        return self.inside.sum(axis=1)

    def subset(self, keep: np.ndarray) -> BinMembers:
        """
        Only the members where ``keep`` is True, re-packed to the narrowest padding.

        Parameters
        ----------
        keep : ndarray
            ``(K, M)`` members to keep.

        Returns
        -------
        BinMembers
            ``(K, M')`` with ``M'`` the largest number kept in a bin.
        """
        keep = keep & self.inside
        # Stable sort puts each row's kept members first, in their original order.
        order = np.argsort(~keep, axis=1, kind="stable")
        width = max(int(keep.sum(axis=1).max(initial=0)), 1)
        order = order[:, :width]
        inside = np.take_along_axis(keep, order, axis=1)
        index = np.where(inside, np.take_along_axis(self.index, order, axis=1), 0)
        return BinMembers(index, inside)


def bin_members(wavelength: np.ndarray, grid: SpectralGrid) -> BinMembers:
    """
    Pixels whose wavelength is within half a bin width of each bin centre.

    Parameters
    ----------
    wavelength : ndarray
        ``(N,)`` pixel wavelengths.
    grid : SpectralGrid
        The bins.

    Returns
    -------
    BinMembers
        Padded ``(K, M)`` membership, ``M`` the largest bin.
    """
    order = np.argsort(wavelength, kind="stable")
    ordered = wavelength[order]
    first = np.searchsorted(ordered, grid.wavelength - 0.5 * grid.width, side="left")
    stop = np.searchsorted(ordered, grid.wavelength + 0.5 * grid.width, side="right")
    largest = int(np.max(stop - first)) if len(grid) else 0
    position = first[:, None] + np.arange(max(largest, 1))[None, :]
    inside = position < stop[:, None]
    index = order[np.where(inside, position, 0).clip(max=max(order.size - 1, 0))]
    return BinMembers(np.where(inside, index, 0), inside)
