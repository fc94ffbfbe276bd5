"""The MRS PSF measured from the exposure itself: an empirical correction to a reference PSF.

Every spectral bin of an MRS exposure sees the point source through a
different set of pixel footprints: neighbouring detector rows sit at other
wavelengths, and in coordinates scaled by the PSF's width ``W(lambda)`` the
fixed slice and column edges sweep across the PSF as the wavelength
changes. Fitting all bins at once with one PSF shape in scaled coordinates
(the ePSF idea of Anderson & King 2000, applied along wavelength) measures
that shape on a grid much finer than the pixels.

The model of the light a footprint ``p`` in bin ``k`` receives is

``d_p = F_k g_p (f_p + sum_ij c_ij U_i(p) V_j(p))``

with ``f_p`` the reference PSF's share on the footprint, ``U_i(p)`` and
``V_j(p)`` the integrals of quadratic B-splines over the footprint's extent
in ``u = (alpha - alpha_0) / W`` and ``v = (beta - beta_0) / W``, ``F_k``
the bin's flux and ``g_p`` an optional spectral-shape factor. It is
bilinear: the fluxes are solved exactly for any correction (variable
projection, Golub & Pereyra 1973) and the correction by Gauss-Newton steps
on the reduced problem (Kaufman 1975), the fluxes' normal equations
eliminated by their Schur complement. Nothing loops over bins or pixels in
Python: Gram matrices are accumulated per block of pixels sharing the same
window of basis functions.

Normalisation
    The data fix only the product of flux and PSF, so some assumption must
    set the scale. The correction integrates to zero (one linear constraint
    per wavelength node, averaged over the bins) over the region the data
    see and over the mirror image, through the source, of the field's part
    whose own image is unseen (``PsfSamples.mirror_unseen``): the light of
    the symmetric hull of the field is the reference's plus what the data
    measure, and the light beyond the hull is the reference's far wings.
    A source off the field's centre loses light over one edge that the data
    see, mirrored, on the far side: a diffraction pattern's intensity is
    centrosymmetric (any real pupil's is), and so is any blur by a
    symmetric kernel; only the correction is assumed symmetric there, the
    reference keeps its own shape. Without the mirror, the lost light was
    the reference's, which for a model with Gaussian wings is none: -0.3
    to -0.5% in every band for a diffraction pattern 0.36" off centre. The
    caller decides (``mirror_unseen`` None: the reference's light beyond
    the field is kept, as for a PSF measured on a star that saw it). The
    grid's B-splines vanish at its edge, so the PSF is continuous there.

Priors
    Second differences of the coefficients (roughness) and the coefficients
    themselves (distance from the reference) have Gaussian priors of fixed
    width in units of the PSF's scaled peak density. Where the data carry
    no information (beyond the sampled region, at low S/N) the correction
    tends to zero and the reference PSF is used; at high S/N the data
    dominate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import sparse
from scipy.interpolate import BSpline
from scipy.linalg import cho_factor, cho_solve

from mirispec_steps.core.bspline import bspline_values

__all__ = [
    "CORRECTION_KNOTS",
    "CorrectedPsf",
    "CorrectionGrid",
    "LEVEL_FLOOR",
    "PsfCalibration",
    "PsfSamples",
    "calibrate_psf",
    "node_weights",
]

#: Knots of the correction in FWHM units: 0.25 FWHM in the core, coarser in the wings, out
#: to 8 FWHM (the channel 1 field at 5 micron is about +-6.5 FWHM).
CORRECTION_KNOTS = (-8.0, -6.5, -5.0, -4.0, -3.25, -2.5, -2.0, *(0.25 * np.arange(-6, 7)).tolist(),
                    2.0, 2.5, 3.25, 4.0, 5.0, 6.5, 8.0)  # fmt: skip
#: Prior widths (units of the scaled density, whose peak is ~0.8) of the correction's
#: coefficients and of their second differences along either axis (where the reference is
#: at its peak, for a PSF that is carried to other pixel phases: ``level_floor``).
AMPLITUDE_PRIOR = 1.0
ROUGHNESS_PRIOR = 0.08
#: For a PSF carried to other pixel phases (``mrs_psf``): the prior's widths in proportion
#: to the reference's level under each coefficient, never below this share of its peak. As
#: wide in the wings as in the core, the prior let the wings take oscillations across ``v``
#: that no slice sees (stripes at -2 to -3% of the peak beyond 3 FWHM, where the PSF holds a few
#: thousandths): harmless to the exposures fitted, wrong for any target elsewhere.
LEVEL_FLOOR = 0.05
#: Basis functions of which the data see less than this share (averaged over the bins that
#: touch them) are held at zero: the data barely constrain them.
MIN_COVERAGE = 0.05
#: With a fitted background, a correction flat across the field would trade flux for
#: background: only functions inside this many FWHM are free, the wings beyond are the
#: reference's and the background takes the flat level.
BACKGROUND_EXTENT = 3.25
#: Gauss-Newton iterations and the relative flux change that ends them.
MAX_ITERATIONS = 8
FLUX_TOLERANCE = 1.0e-3
#: Outliers are looked for once the fluxes move by less than this many tolerances (the
#: residuals are then those of the final model to well within the rejection threshold).
REJECTION_START = 10.0


@dataclass(frozen=True)
class CorrectionGrid:
    """
    Quadratic B-splines on simple knots, vanishing at the grid's edges.

    Attributes
    ----------
    knot_values : tuple of float
        Increasing knots (FWHM units), the same along ``u`` and ``v``.
    degree : int
        B-spline degree.

    Examples
    --------
    >>> grid = CorrectionGrid()
    >>> grid.n_basis
    24
    >>> import numpy as np
    >>> bool(np.allclose(grid.integrals(np.array([-9.0]), np.array([9.0]))[0], grid.totals))
    True
    """

    knot_values: tuple = CORRECTION_KNOTS
    degree: int = 2

    @property
    def knots(self) -> np.ndarray:
        """The knots as an array."""
        return np.asarray(self.knot_values, dtype=float)

    @property
    def n_basis(self) -> int:
        """Basis functions per axis."""
        return len(self.knots) - self.degree - 1

    @property
    def extent(self) -> tuple[float, float]:
        """First and last knot."""
        return float(self.knots[0]), float(self.knots[-1])

    @property
    def totals(self) -> np.ndarray:
        """``(n,)`` integral of each basis function."""
        k = self.degree
        return (self.knots[k + 1 :] - self.knots[: -k - 1]) / (k + 1)

    def _padded(self, degree: int, right: int) -> np.ndarray:
        """Knots with ``degree`` extra on the left and ``right`` on the right.

        On simple knots, scipy evaluates true B-splines only inside the base
        interval ``[t_k, t_-k-1]``: padding makes that interval the grid.
        """
        knots = self.knots
        left_step, right_step = knots[1] - knots[0], knots[-1] - knots[-2]
        return np.concatenate([
            knots[0] - left_step * np.arange(degree, 0, -1),
            knots,
            knots[-1] + right_step * np.arange(1, right + 1),
        ])  # fmt: skip

    def values(self, x: np.ndarray) -> np.ndarray:
        """``(N, n)`` basis functions at ``x`` (zero outside the grid)."""
        k = self.degree
        x = np.asarray(x, dtype=float).ravel()
        inside = (x >= self.knots[0]) & (x <= self.knots[-1])
        matrix = np.zeros((x.size, self.n_basis))
        if np.any(inside):
            design = BSpline.design_matrix(x[inside], self._padded(k, k), k).toarray()
            matrix[inside] = design[:, k : k + self.n_basis]
        return matrix

    def cumulative(self, x: np.ndarray) -> np.ndarray:
        """``(N, n)`` integral of each basis function from the grid's start to ``x``."""
        k = self.degree
        # One degree up, on knots reaching past the grid's right end:
        # integral of B_i up to x = (total of B_i) * sum_{j >= i} B_{j, k+1}(x).
        x = np.clip(np.asarray(x, dtype=float).ravel(), self.knots[0], self.knots[-1])
        design = BSpline.design_matrix(x, self._padded(k + 1, k + 2), k + 1).toarray()
        tail = np.cumsum(design[:, ::-1], axis=1)[:, ::-1]
        return tail[:, k + 1 : k + 1 + self.n_basis] * self.totals

    def integrals(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """``(N, n)`` integral of each basis function over ``[low, high]``.

        Exactly zero for functions whose support misses the interval (the
        difference of cumulative sums would leave rounding there).
        """
        low = np.asarray(low, dtype=float).ravel()
        high = np.asarray(high, dtype=float).ravel()
        knots, k = self.knots, self.degree
        touches = (knots[None, : self.n_basis] < high[:, None]) & (
            knots[None, k + 1 :] > low[:, None]
        )
        return np.where(touches, self.cumulative(high) - self.cumulative(low), 0.0)

    def window_integrals(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """
        The nonzero integrals over ``[low, high]`` only: a window of basis functions per interval.

        Returns
        -------
        values : ndarray
            ``(N, w)`` integrals of functions ``start ... start + w - 1``.
        start : ndarray
            ``(N,)`` first function of each window.
        """
        k, n = self.degree, self.n_basis
        knots = self.knots
        low = np.clip(np.asarray(low, dtype=float).ravel(), knots[0], knots[-1])
        high = np.clip(np.asarray(high, dtype=float).ravel(), knots[0], knots[-1])
        # Functions touching [low, high]: support (t_i, t_i+k+1) overlaps it.
        first = np.clip(np.searchsorted(knots, low, side="right") - k - 1, 0, n - 1)
        last = np.clip(np.searchsorted(knots, high, side="left") - 1, 0, n - 1)
        width = int(np.max(last - first + 1, initial=1))
        start = np.minimum(first, n - width)
        index = start[:, None] + np.arange(width)[None, :]
        values = self._cumulative_window(high, index) - self._cumulative_window(low, index)
        touches = (index >= first[:, None]) & (index <= last[:, None])
        return np.where(touches, values, 0.0), start

    def _cumulative_window(self, x: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Integral from the grid's start to ``x`` of the functions ``index`` (``(N, w)``)."""
        k = self.degree
        # k + 2 nonzero functions of degree k + 1 per point, the first at ``first``
        # (padded numbering: function i of the grid is padded function i + k + 1).
        values, first = bspline_values(x, self._padded(k + 1, k + 2), k + 1)
        first = first - (k + 1)
        tail = np.cumsum(values[:, ::-1], axis=1)[:, ::-1]
        relative = index - first[:, None]
        partial = np.take_along_axis(tail, np.clip(relative, 0, k + 1), axis=1)
        share = np.where(relative < 0, 1.0, np.where(relative <= k + 1, partial, 0.0))
        return share * self.totals[np.clip(index, 0, self.n_basis - 1)]


@dataclass
class PsfSamples:
    """
    The (bin, footprint) pairs a calibration fits, flat (all ``(P,)``).

    Attributes
    ----------
    bins : ndarray
        Bin of each pair (0 ... K-1).
    data : ndarray
        Light on the footprint, ``SB x area`` (flux units).
    weight : ndarray
        Inverse variance of ``data`` (0 to leave a pair out).
    reference : ndarray
        The reference PSF's share on the footprint, times the shape factor.
    shape : ndarray
        Spectral-shape factor ``g`` (1 where unknown).
    u_low, u_high, v_low, v_high : ndarray
        Footprint extent in scaled coordinates (offsets from the source over ``W``).
    n_bins : int
        K.
    area : ndarray or None
        Footprint solid angle: with it, every bin also fits a constant
        background surface brightness.
    wavelength : ndarray or None
        Pixel wavelength (micron), for corrections that change with it.
    multiplicity : ndarray or None
        How many pairs each stands for (a pair kept from one bin in ``s``
        stands for ``s``); it only enters the field's coverage, not the fit.
    strip : ndarray or None
        Strip of sky (the slice) of each pair, for the field's coverage.
    exposure : ndarray or None
        Exposure of each pair when several are fitted together: the region
        the data see is the union of the exposures' fields.
    mirror_unseen : ndarray or None
        Share (0 to 1) of the footprint's mirror image through the source
        that falls outside the field its bin sees: the light on the
        footprint also stands for the light the PSF puts on that unseen
        share of its image (the module's normalisation); None: none does.
    """

    bins: np.ndarray
    data: np.ndarray
    weight: np.ndarray
    reference: np.ndarray
    shape: np.ndarray
    u_low: np.ndarray
    u_high: np.ndarray
    v_low: np.ndarray
    v_high: np.ndarray
    n_bins: int
    area: np.ndarray | None = None
    wavelength: np.ndarray | None = None
    multiplicity: np.ndarray | None = None
    strip: np.ndarray | None = None
    exposure: np.ndarray | None = None
    mirror_unseen: np.ndarray | None = None

    @classmethod
    def joined(cls, parts: list[PsfSamples]) -> PsfSamples:
        """
        Several sets of pairs as one (several exposures): bins and strips numbered in turn.

        Parameters
        ----------
        parts : list of PsfSamples
            Sets with the same optional fields.

        Returns
        -------
        PsfSamples
            All pairs; bin ``k`` of the second set is ``K_1 + k``.
        """
        bin_offsets = np.cumsum([0] + [part.n_bins for part in parts[:-1]])
        values = {
            name: np.concatenate([getattr(part, name) for part in parts])
            for name in ("data", "weight", "reference", "shape", "u_low", "u_high", "v_low",
                         "v_high")
        }  # fmt: skip
        values["bins"] = np.concatenate(
            [part.bins + offset for part, offset in zip(parts, bin_offsets, strict=True)]
        )
        for name in ("area", "wavelength", "multiplicity", "mirror_unseen"):
            present = [getattr(part, name) for part in parts]
            values[name] = None if any(v is None for v in present) else np.concatenate(present)
        values["exposure"] = np.concatenate(
            [np.full(part.bins.size, number) for number, part in enumerate(parts)]
        )
        if all(part.strip is not None for part in parts):
            strip_offsets = np.cumsum([0] + [int(part.strip.max()) + 1 for part in parts[:-1]])
            values["strip"] = np.concatenate(
                [part.strip + offset for part, offset in zip(parts, strip_offsets, strict=True)]
            )
        return cls(n_bins=int(sum(part.n_bins for part in parts)), **values)

    def subset(self, keep: np.ndarray) -> PsfSamples:
        """The pairs where ``keep`` is True."""
        fields = ("bins", "data", "weight", "reference", "shape", "u_low", "u_high",
                  "v_low", "v_high")  # fmt: skip
        optional = {
            name: None if getattr(self, name) is None else getattr(self, name)[keep]
            for name in ("area", "wavelength", "multiplicity", "strip", "exposure",
                         "mirror_unseen")
        }  # fmt: skip
        return PsfSamples(**{name: getattr(self, name)[keep] for name in fields},
                          n_bins=self.n_bins, **optional)  # fmt: skip


@dataclass
class PsfCalibration:
    """
    A calibration's result.

    Attributes
    ----------
    grid : CorrectionGrid
        The correction's basis.
    coefficients : ndarray
        ``(L, n, n)`` correction ``c[node, i (u), j (v)]``.
    wavelength_nodes : ndarray
        ``(L,)`` the nodes' wavelengths (one node: the same at all wavelengths).
    flux : ndarray
        ``(K,)`` fluxes fitted with the corrected PSF (NaN for bins without data).
    reference_flux : ndarray
        ``(K,)`` fluxes fitted to the same pairs with the reference PSF.
    chi_square, reference_chi_square : float
        Weighted residual sum with the corrected and with the reference PSF.
    n_pairs : int
        Pairs fitted.
    n_rejected : int
        Pairs left out as outliers.
    effective_parameters : float
        Degrees of freedom the correction used (trace of the data's share
        of the posterior precision).
    iterations : int
        Gauss-Newton steps taken.
    flux_error : ndarray
        ``(K,)`` flux uncertainty from the correction's own uncertainty
        (correlated between bins).
    """

    grid: CorrectionGrid
    coefficients: np.ndarray
    wavelength_nodes: np.ndarray
    flux: np.ndarray
    reference_flux: np.ndarray
    chi_square: float
    reference_chi_square: float
    n_pairs: int
    n_rejected: int
    effective_parameters: float
    iterations: int
    flux_error: np.ndarray

    def corrected(self, reference) -> CorrectedPsf:
        """The reference PSF with this correction."""
        return CorrectedPsf(reference, self.grid, self.coefficients, self.wavelength_nodes)


def node_weights(wavelength: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """
    ``(N, L)`` weights of each wavelength node: linear interpolation, constant beyond the ends.

    Examples
    --------
    >>> node_weights(np.array([5.0, 5.5, 7.0]), np.array([5.0, 6.0])).tolist()
    [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    """
    wavelength = np.asarray(wavelength, dtype=float).ravel()
    nodes = np.asarray(nodes, dtype=float)
    if nodes.size == 1:
        return np.ones((wavelength.size, 1))
    weights = np.zeros((wavelength.size, nodes.size))
    position = np.interp(wavelength, nodes, np.arange(nodes.size))
    lower = np.minimum(np.floor(position).astype(int), nodes.size - 2)
    upper_share = position - lower
    rows = np.arange(wavelength.size)
    weights[rows, lower] = 1.0 - upper_share
    weights[rows, lower + 1] = upper_share
    return weights


class _Design:
    """
    The correction's footprint integrals per pair: a sparse matrix and dense windows.

    Every pair touches a small window of basis functions along ``u`` and
    along ``v``. Pairs are put in the order of their windows' start, so the
    Gram matrix is a sum of small dense products, one per window position.
    ``order`` is that order; the samples must be permuted by it. With
    several wavelength nodes, each pair's window repeats once per node,
    weighted by the pair's interpolation weight.
    """

    def __init__(self, samples: PsfSamples, grid: CorrectionGrid, blend: np.ndarray):
        n = grid.n_basis
        self.n = n
        n_nodes = blend.shape[1]
        self.size = n_nodes * n * n
        along, along_start = grid.window_integrals(samples.u_low, samples.u_high)
        across, across_start = grid.window_integrals(samples.v_low, samples.v_high)
        key = along_start * n + across_start
        self.order = np.argsort(key, kind="stable")
        along, along_start = along[self.order], along_start[self.order]
        across, across_start = across[self.order], across_start[self.order]
        sorted_key = key[self.order]
        self.group_starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
        self.group_stops = np.r_[self.group_starts[1:], sorted_key.size]
        n_pairs, width_u, width_v = along.shape[0], along.shape[1], across.shape[1]
        # (P, L * wu * wv) local design and the global coefficient index of each column.
        local = (along[:, :, None] * across[:, None, :]).reshape(n_pairs, -1)
        blend = blend[self.order]
        self.local = (blend[:, :, None] * local[:, None, :]).reshape(n_pairs, -1)
        # int32 indices: half the memory traffic, and what scipy's sparse matrices use.
        offsets_u = (along_start[:, None] + np.arange(width_u)[None, :]).astype(np.int32)
        offsets_v = (across_start[:, None] + np.arange(width_v)[None, :]).astype(np.int32)
        columns = (offsets_u[:, :, None] * n + offsets_v[:, None, :]).reshape(n_pairs, -1)
        node_offset = (n * n * np.arange(n_nodes)).astype(np.int32)
        self.columns = (node_offset[None, :, None] + columns[:, None, :]).reshape(n_pairs, -1)
        # Each group's columns that are not zero for all its pairs (wing pairs touch few).
        self.group_columns = [
            np.flatnonzero(np.any(self.local[start:stop] != 0, axis=0))
            for start, stop in zip(self.group_starts, self.group_stops, strict=True)
        ]
        width = self.local.shape[1]
        self.matrix = sparse.csr_matrix(
            (self.local.ravel(), self.columns.ravel(), np.arange(0, n_pairs * width + 1, width)),
            shape=(n_pairs, self.size),
        )

    def correction(self, coefficients: np.ndarray) -> np.ndarray:
        """``(P,)`` the correction's share on each footprint."""
        return self.matrix @ coefficients.ravel()

    def gram(self, pair_weight: np.ndarray) -> np.ndarray:
        """``sum_p w_p a_p a_p^T`` over all coefficients."""
        size = self.size
        normal = np.zeros((size, size))
        local = self.local * np.sqrt(pair_weight)[:, None]
        groups = zip(self.group_starts, self.group_stops, self.group_columns, strict=True)
        for start, stop, used in groups:
            block = local[start:stop, used]
            index = self.columns[start, used]
            normal[np.ix_(index, index)] += block.T @ block
        return normal

    def cross(self, pair_weight: np.ndarray, bins: np.ndarray, n_bins: int) -> np.ndarray:
        """``(K, size)``: ``sum_{p in k} w_p a_p``."""
        selector = sparse.csr_matrix(
            (pair_weight, (bins, np.arange(bins.size))), shape=(n_bins, bins.size)
        )
        return (selector @ self.matrix).toarray()

    def vector(self, pair_weight: np.ndarray) -> np.ndarray:
        """``(size,)``: ``sum_p w_p a_p``."""
        return self.matrix.T @ pair_weight


def _second_difference(size: int) -> np.ndarray:
    matrix = np.zeros((max(size - 2, 0), size))
    for row in range(size - 2):
        matrix[row, row : row + 3] = (1.0, -2.0, 1.0)
    return matrix


def _prior(n: int, level: np.ndarray | None = None) -> np.ndarray:
    """
    Precision of the correction's prior over the ``n x n`` coefficients.

    ``level`` (``(n^2,)``, 1 at the reference's peak) scales the widths of
    the coefficients and of the second differences centred on them.
    """
    scale = np.ones(n * n) if level is None else level
    roughness = sparse.csr_matrix(_second_difference(n))
    identity = sparse.identity(n, format="csr")
    centre = np.arange(1, n - 1)
    centre_u = (centre[:, None] * n + np.arange(n)[None, :]).ravel()
    centre_v = (np.arange(n)[:, None] * n + centre[None, :]).ravel()
    precision = sparse.diags(1.0 / (AMPLITUDE_PRIOR * scale) ** 2)
    for rows, centres in ((sparse.kron(roughness, identity), centre_u),
                          (sparse.kron(identity, roughness), centre_v)):  # fmt: skip
        precision = precision + rows.T @ sparse.diags(
            1.0 / (ROUGHNESS_PRIOR * scale[centres]) ** 2) @ rows  # fmt: skip
    return precision.toarray()


def _reference_level(samples: PsfSamples, design: _Design, n_nodes: int) -> np.ndarray:
    """``(n^2,)`` the reference's mean density under each basis function, 1 at the highest."""
    size = design.n * design.n
    extent = (samples.u_high - samples.u_low) * (samples.v_high - samples.v_low)
    with np.errstate(divide="ignore", invalid="ignore"):
        density = np.where(
            (extent > 0) & (samples.shape > 0), samples.reference / (samples.shape * extent), 0.0
        )
    weighted = design.vector(density).reshape(n_nodes, size).sum(axis=0)
    coverage = design.vector(np.ones(samples.bins.size)).reshape(n_nodes, size).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.where(coverage > 0, weighted / coverage, 0.0)
    peak = level.max()
    return level / peak if peak > 0 else np.ones(size)


@dataclass
class _BinFit:
    """Each bin's linear parameters for a fixed PSF: flux, optionally a background."""

    flux: np.ndarray
    background: np.ndarray
    inverse: np.ndarray  # (K, T, T) inverse of each bin's normal matrix (0 where empty)

    def predicted(self, samples: PsfSamples, model: np.ndarray) -> np.ndarray:
        value = np.nan_to_num(self.flux)[samples.bins] * model
        if samples.area is not None:
            value = value + np.nan_to_num(self.background)[samples.bins] * samples.area
        return value


def _terms(samples: PsfSamples, model: np.ndarray) -> list[np.ndarray]:
    return [model] if samples.area is None else [model, samples.area]


def _project(samples: PsfSamples, model: np.ndarray) -> _BinFit:
    """The linear parameters minimising the weighted residual for a fixed PSF share ``model``."""
    terms = _terms(samples, model)
    n_terms, n_bins, w = len(terms), samples.n_bins, samples.weight
    normal = np.empty((n_bins, n_terms, n_terms))
    right = np.empty((n_bins, n_terms))
    for i, first in enumerate(terms):
        right[:, i] = np.bincount(samples.bins, w * first * samples.data, minlength=n_bins)
        for j, second in enumerate(terms[: i + 1]):
            normal[:, i, j] = normal[:, j, i] = np.bincount(
                samples.bins, w * first * second, minlength=n_bins
            )
    scale = np.sqrt(np.abs(np.einsum("kii->ki", normal)))
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = normal / (scale[:, :, None] * scale[:, None, :])
    ok = np.all(scale > 0, axis=1) & (np.abs(np.linalg.det(np.where(
        np.isfinite(scaled), scaled, 0.0))) > 1e-10)  # fmt: skip
    inverse = np.zeros_like(normal)
    inverse[ok] = np.linalg.inv(normal[ok])
    parameters = np.einsum("kij,kj->ki", inverse, right)
    parameters[~ok] = np.nan
    background = parameters[:, 1] if n_terms > 1 else np.zeros(n_bins)
    return _BinFit(parameters[:, 0], background, inverse)


def _chi_square(samples: PsfSamples, model: np.ndarray, fit: _BinFit) -> float:
    residual = samples.data - fit.predicted(samples, model)
    return float(np.sum(samples.weight * residual**2))


def _tiling(samples: PsfSamples) -> np.ndarray:
    """
    ``(P,)`` how many times each pair's bin covers the pair's strip of sky.

    A bin holds one or more detector rows of every slice, each row tiling
    the slice's strip along alpha once: the summed widths over the strip's
    extent count the rows. Without strips, the bin's coverage of the
    central square ``|u|, |v| < 1`` stands for all its pairs.
    """
    if samples.strip is None:
        overlap_u = np.clip(np.minimum(samples.u_high, 1) - np.maximum(samples.u_low, -1), 0, None)
        overlap_v = np.clip(np.minimum(samples.v_high, 1) - np.maximum(samples.v_low, -1), 0, None)
        per_bin = np.bincount(samples.bins, overlap_u * overlap_v, minlength=samples.n_bins) / 4
        return per_bin[samples.bins]
    _, key = np.unique(samples.bins * (int(samples.strip.max()) + 1) + samples.strip,
                       return_inverse=True)  # fmt: skip
    widths = np.bincount(key, samples.u_high - samples.u_low)
    low = np.full(widths.size, np.inf)
    high = np.full(widths.size, -np.inf)
    np.minimum.at(low, key, samples.u_low)
    np.maximum.at(high, key, samples.u_high)
    return (widths / (high - low))[key]


def _observed_integrals(samples: PsfSamples, design: _Design, n_nodes: int) -> np.ndarray:
    """
    ``(n^2,)`` each basis function's integral over the region the data see, averaged over bins.

    Each pair counts once per time its bin covers its strip (``_tiling``)
    and as many pairs as it stands for (``multiplicity``): the bins'
    footprints then integrate a function over the field the data see.
    A pair whose mirror image through the source is outside the field
    (``mirror_unseen``) counts once more for that share: it also
    integrates over the unseen image.
    Several exposures (``exposure``) see the union of their fields: per
    function, the largest of their averages.
    """
    size = design.n * design.n
    multiplicity = (
        np.ones(samples.bins.size) if samples.multiplicity is None else samples.multiplicity
    )
    weight = multiplicity / _tiling(samples)
    if samples.mirror_unseen is not None:
        weight = weight * (1.0 + samples.mirror_unseen)
    exposure = np.zeros(samples.bins.size, int) if samples.exposure is None else samples.exposure
    observed = np.zeros(size)
    for number in np.unique(exposure):
        mine = exposure == number
        n_bins = max(np.unique(samples.bins[mine]).size, 1)
        # The node-expanded columns of one function sum to its unblended integral.
        average = design.vector(np.where(mine, weight, 0.0)).reshape(n_nodes, size).sum(axis=0)
        observed = np.maximum(observed, average / n_bins)
    return observed


class _Normal:
    """Gauss-Newton normal equations of the correction, the bins' parameters eliminated (Schur)."""

    def __init__(self, design: _Design, samples: PsfSamples, model, fit: _BinFit):
        amplitude = np.nan_to_num(fit.flux)[samples.bins] * samples.shape
        residual = samples.data - fit.predicted(samples, model)
        weight = samples.weight
        terms = _terms(samples, model)
        gram = design.gram(weight * amplitude**2)
        gradient = design.vector(weight * amplitude * residual)
        # (K, T, C) and (K, T): each bin parameter's coupling to the correction and residual.
        cross = np.stack(
            [design.cross(weight * amplitude * term, samples.bins, samples.n_bins)
             for term in terms], axis=1,
        )  # fmt: skip
        bin_gradient = np.stack(
            [np.bincount(samples.bins, weight * term * residual, minlength=samples.n_bins)
             for term in terms], axis=1,
        )  # fmt: skip
        response = np.einsum("kij,kjc->kic", fit.inverse, cross)
        #: dF_k / dc at fixed data (up to sign): the flux's response to the correction.
        self.flux_sensitivity = response[:, 0, :]
        size = cross.shape[-1]
        self.reduced = gram - cross.reshape(-1, size).T @ response.reshape(-1, size)
        solved = np.einsum("kij,kj->ki", fit.inverse, bin_gradient)
        self.reduced_gradient = gradient - np.einsum("kic,ki->c", cross, solved)


class _ConstrainedSolver:
    """Solves ``(N + prior) x = b`` subject to ``T x = 0`` (Lagrange multipliers)."""

    def __init__(self, prior: np.ndarray, constraints: np.ndarray):
        self.prior = prior
        self.constraints = np.atleast_2d(constraints)

    def _factor(self, normal):
        return cho_factor(normal + self.prior, check_finite=False)

    def _project(self, factor, vector_or_matrix):
        directions = cho_solve(factor, self.constraints.T, check_finite=False)  # (C, m)
        coupling = self.constraints @ directions  # (m, m)
        return directions, coupling

    def solve(self, normal: np.ndarray, right: np.ndarray) -> np.ndarray:
        factor = self._factor(normal)
        unconstrained = cho_solve(factor, right, check_finite=False)
        directions, coupling = self._project(factor, right)
        multipliers = np.linalg.solve(coupling, self.constraints @ unconstrained)
        return unconstrained - directions @ multipliers

    def covariance(self, normal: np.ndarray) -> np.ndarray:
        """Posterior covariance on the constraints' plane."""
        factor = self._factor(normal)
        inverse = cho_solve(factor, np.eye(normal.shape[0]), check_finite=False)
        directions, coupling = self._project(factor, None)
        return inverse - directions @ np.linalg.solve(coupling, directions.T)


def calibrate_psf(
    samples: PsfSamples,
    grid: CorrectionGrid | None = None,
    max_iterations: int = MAX_ITERATIONS,
    tolerance: float = FLUX_TOLERANCE,
    reject_sigma: float | None = 5.0,
    wavelength_nodes: np.ndarray | None = None,
    level_floor: float | None = None,
) -> PsfCalibration:
    """
    Fit the correction to the reference PSF and the fluxes of every bin together.

    Parameters
    ----------
    samples : PsfSamples
        The pairs (bins with no usable pair get NaN fluxes).
    grid : CorrectionGrid or None
        The correction's basis (default :class:`CorrectionGrid`).
    max_iterations : int
        Gauss-Newton steps at most.
    tolerance : float
        Stop when 95% of the fluxes change by less than this fraction of the median flux.
    reject_sigma : float or None
        After convergence, pairs whose residual exceeds this many sigma
        (unflagged cosmic rays, hot pixels) are left out and the fit
        continues (once); None or 0 keeps every pair.
    wavelength_nodes : ndarray or None
        Wavelengths (micron; needs ``samples.wavelength``) at which the
        correction is free, interpolated linearly between them (a PSF
        whose shape in scaled coordinates drifts across the band); None:
        one correction for all wavelengths.
    level_floor : float or None
        Scale the prior's widths with the reference's level under each
        coefficient, never below this share of its peak (:data:`LEVEL_FLOOR`
        for a PSF that other exposures will use); None: the same widths
        everywhere (a PSF used on the very pairs it was fitted to, which
        cannot see what the prior alone decides).

    Returns
    -------
    PsfCalibration
        The correction, the fluxes and the fit's statistics.

    Examples
    --------
    A Gaussian source fitted with a reference 10% too wide along ``u``:

    >>> import numpy as np
    >>> from scipy.special import ndtr
    >>> rng = np.random.default_rng(1)
    >>> n_bins, per_bin = 200, 60
    >>> centre = rng.uniform(-2.5, 2.5, (2, n_bins * per_bin))
    >>> low, high = centre - 0.3, centre + 0.3
    >>> def share(sigma_u):
    ...     sig = 0.4247
    ...     return ((ndtr(high[0] / sigma_u) - ndtr(low[0] / sigma_u))
    ...             * (ndtr(high[1] / sig) - ndtr(low[1] / sig)))
    >>> bins = np.repeat(np.arange(n_bins), per_bin)
    >>> samples = PsfSamples(bins, 5.0 * share(0.4247), np.full(bins.size, 1e6),
    ...                      share(0.467), np.ones(bins.size), low[0], high[0], low[1],
    ...                      high[1], n_bins)
    >>> result = calibrate_psf(samples)
    >>> bool(abs(np.median(result.flux) / 5.0 - 1) < 2e-3)
    True
    """
    grid = grid or CorrectionGrid()
    samples = samples.subset(samples.weight > 0)
    nodes = np.atleast_1d(np.asarray(
        [0.0] if wavelength_nodes is None else wavelength_nodes, dtype=float))  # fmt: skip
    if nodes.size > 1 and samples.wavelength is None:
        raise ValueError("wavelength nodes need the samples' wavelengths")
    blend = node_weights(
        samples.wavelength if nodes.size > 1 else np.zeros(samples.bins.size), nodes
    )
    design = _Design(samples, grid, blend)
    samples = samples.subset(design.order)
    n = grid.n_basis
    n_nodes = nodes.size
    spatial = np.outer(grid.totals, grid.totals).ravel()
    observed = _observed_integrals(samples, design, n_nodes)
    seen = observed / spatial >= MIN_COVERAGE
    if samples.area is not None:
        knots, k = grid.knots, grid.degree
        inner = (knots[: grid.n_basis] >= -BACKGROUND_EXTENT) & (
            knots[k + 1 :] <= BACKGROUND_EXTENT
        )
        seen &= np.outer(inner, inner).ravel()
    free = np.flatnonzero(np.tile(seen, n_nodes))
    if free.size < 2:
        raise ValueError("the footprints cover too little of the correction's grid to fit it")
    # Each node's correction adds no light to the region the data see and the unseen
    # mirror images of its pairs (the normalisation).
    constraints = np.kron(np.eye(n_nodes), observed[None, :])
    level = (
        None
        if level_floor is None
        else np.maximum(_reference_level(samples, design, n_nodes), level_floor)
    )
    prior = np.kron(np.eye(n_nodes), _prior(n, level))
    solver = _ConstrainedSolver(prior[np.ix_(free, free)], constraints[:, free])
    coefficients = np.zeros(n_nodes * n * n)
    model = samples.reference.copy()
    fit = _project(samples, model)
    flux = fit.flux
    reference_flux = flux
    reference_chi_square = _chi_square(samples, model, fit)
    n_given = samples.bins.size
    median_flux = float(np.nanmedian(np.abs(flux))) if np.any(np.isfinite(flux)) else 0.0
    iterations = 0
    rejected = False
    while iterations < max_iterations:
        iterations += 1
        normal = _Normal(design, samples, model, fit)
        step = solver.solve(
            normal.reduced[np.ix_(free, free)],
            normal.reduced_gradient[free] - solver.prior @ coefficients[free],
        )
        coefficients[free] += step
        model = samples.reference + samples.shape * design.correction(coefficients)
        fit = _project(samples, model)
        new_flux = fit.flux
        moved = np.abs(new_flux - flux)
        change = np.nanpercentile(moved, 95) if np.any(np.isfinite(moved)) else 0.0
        flux = new_flux
        scale = tolerance * max(median_flux, np.finfo(float).tiny)
        if not rejected and reject_sigma and change <= REJECTION_START * scale:
            rejected = True
            residual = samples.data - fit.predicted(samples, model)
            normalised = samples.weight * residual**2
            # Against the fit's own scatter: a model that is only close (noise-free data, an
            # imperfect PSF) must not lose its worst-fitted core pixels.
            spread = max(float(np.mean(normalised[samples.weight > 0])), 1.0)
            outlier = normalised > reject_sigma**2 * spread
            if np.any(outlier):
                samples = samples.subset(np.ones(samples.bins.size, dtype=bool))
                samples.weight = np.where(outlier, 0.0, samples.weight)
                fit = _project(samples, model)
                flux = fit.flux
                continue
        if change <= scale:
            break
    n_rejected = n_given - int(np.count_nonzero(samples.weight > 0))
    if n_rejected:
        # Compare like with like: the reference on the same pairs.
        reference_fit = _project(samples, samples.reference)
        reference_flux = reference_fit.flux
        reference_chi_square = _chi_square(samples, samples.reference, reference_fit)
    # The posterior at the last linearisation: the data's share of the correction's
    # precision, and the flux uncertainty the correction's uncertainty causes.
    covariance = solver.covariance(normal.reduced[np.ix_(free, free)])
    effective = float(np.sum(covariance * normal.reduced[np.ix_(free, free)]))
    sensitivity = normal.flux_sensitivity[:, free]
    flux_error = np.sqrt(np.maximum(np.sum((sensitivity @ covariance) * sensitivity, axis=1), 0))
    flux_error = np.where(np.isfinite(flux), flux_error, np.nan)
    return PsfCalibration(
        grid=grid,
        coefficients=coefficients.reshape(n_nodes, n, n),
        wavelength_nodes=nodes,
        flux=flux,
        reference_flux=reference_flux,
        chi_square=_chi_square(samples, model, fit),
        reference_chi_square=reference_chi_square,
        n_pairs=int(np.count_nonzero(samples.weight > 0)),
        n_rejected=n_rejected,
        effective_parameters=effective,
        iterations=iterations,
        flux_error=flux_error,
    )


#: Footprints evaluated per chunk (keeps the basis integrals' memory bounded).
CHUNK = 65536


class CorrectedPsf:
    """
    A reference PSF plus an empirical correction in coordinates scaled by its FWHM.

    Parameters
    ----------
    reference : MrsPsf or CubePsf
        The reference PSF (its ``fwhm`` sets the scaling).
    grid : CorrectionGrid
        The correction's basis.
    coefficients : ndarray
        ``(n, n)`` correction, or ``(L, n, n)`` at ``wavelength_nodes``.
    wavelength_nodes : ndarray or None
        ``(L,)`` wavelengths of the coefficient sets (linear interpolation).

    Notes
    -----
    The light on a footprint is the reference's plus the integral of the
    correction over the footprint's scaled extent, exactly (B-spline
    integrals). The FWHM reported is the reference's: apertures sized in
    FWHM keep their size whatever the calibration found.
    """

    def __init__(self, reference, grid: CorrectionGrid, coefficients: np.ndarray,
                 wavelength_nodes: np.ndarray | None = None):  # fmt: skip
        self.reference = reference
        self.grid = grid
        coefficients = np.asarray(coefficients, dtype=float)
        self.coefficients = coefficients.reshape((-1, *coefficients.shape[-2:]))
        self.wavelength_nodes = (
            np.zeros(1) if wavelength_nodes is None else np.atleast_1d(wavelength_nodes)
        )

    def fwhm(self, wavelength: np.ndarray | float) -> np.ndarray:
        """The reference's along-slice FWHM (arcsec)."""
        return self.reference.fwhm(wavelength)

    def correction_fraction(
        self, alpha_low, alpha_high, beta_low, beta_high, alpha_centre, beta_centre, wavelength
    ) -> np.ndarray:
        """The correction's share on each footprint (arguments as :meth:`footprint_fraction`)."""
        arrays = np.broadcast_arrays(
            alpha_low, alpha_high, beta_low, beta_high, alpha_centre, beta_centre,
            np.asarray(wavelength, dtype=float),
        )  # fmt: skip
        shape = arrays[0].shape
        flat = [np.asarray(value, dtype=float).ravel() for value in arrays]
        result = np.empty(flat[0].size)
        for start in range(0, result.size, CHUNK):
            part = slice(start, start + CHUNK)
            a_low, a_high, b_low, b_high, a_centre, b_centre, lam = (v[part] for v in flat)
            width = np.asarray(self.reference.fwhm(lam), dtype=float)
            along, start_u = self.grid.window_integrals(
                (np.minimum(a_low, a_high) - a_centre) / width,
                (np.maximum(a_low, a_high) - a_centre) / width,
            )
            across, start_v = self.grid.window_integrals(
                (np.minimum(b_low, b_high) - b_centre) / width,
                (np.maximum(b_low, b_high) - b_centre) / width,
            )
            weights = node_weights(lam, self.wavelength_nodes)
            total = np.zeros(lam.size)
            for node, coefficients in enumerate(self.coefficients):
                # Each footprint's (w_u, w_v) block of coefficients, as a strided view: far
                # cheaper than gathering it element by element.
                windows = sliding_window_view(coefficients, (along.shape[1], across.shape[1]))
                block = windows[start_u, start_v]
                along_block = np.matmul(along[:, None, :], block)[:, 0, :]
                total += weights[:, node] * np.sum(along_block * across, axis=1)
            result[part] = total
        return result.reshape(shape)

    def footprint_fraction(
        self,
        alpha_low: np.ndarray,
        alpha_high: np.ndarray,
        beta_low: np.ndarray,
        beta_high: np.ndarray,
        alpha_centre: float | np.ndarray,
        beta_centre: float | np.ndarray,
        wavelength: np.ndarray,
    ) -> np.ndarray:
        """
        Share of a point source's light on each footprint: the reference's plus the correction's.

        Arguments and result as :meth:`mirispec_steps.mrs.core.psf.MrsPsf.footprint_fraction`;
        a far footprint's share may be slightly negative (not clipped: the total stays exact).
        """
        edges = (alpha_low, alpha_high, beta_low, beta_high, alpha_centre, beta_centre, wavelength)
        return self.reference.footprint_fraction(*edges) + self.correction_fraction(*edges)
