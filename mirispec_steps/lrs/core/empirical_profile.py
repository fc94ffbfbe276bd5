"""
The spatial profile of a point source measured from the data, in trace-relative coordinates.

Optimal extraction needs the fraction of the source's light in every pixel
of a row. A PSF model never matches real data exactly; Horne (1986) and
Marsh (1989) measure the profile from the data instead, smoothly along
dispersion. Here the profile is the reference PSF plus a correction
``delta(d, rho)``, a tensor-product cubic B-spline in the offset from the
trace ``d`` (pixels) and a coordinate along the rows ``rho`` (-1..1; the
LRS extraction uses the rows' wavelength).
The trace's tilt and curvature make the pixels of successive rows sample
different sub-pixel phases of ``d``; a light second-difference penalty fills
the phases no row samples.

Every row's background (a polynomial across the row) is a free nuisance in
the fit, so the profile does not depend on any background estimate. A
background polynomial of order <= 5 and a profile correction are
indistinguishable only if the correction can take the polynomial's shape;
the correction is therefore built from B-splines that lie entirely inside
``[-half_width, half_width]``, so it and its first two derivatives vanish
at the window's edges and no polynomial of order <= 5 is in its span.

Normalisation (flux scale): each row's profile is scaled so that its sum
over the pixels of the fit window equals the reference PSF's sum over the
same pixels. The fitted amplitude is then the total flux when the
reference gives the right fraction of light outside the window; the
empirical profile fixes everything inside it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.interpolate import BSpline
from scipy.linalg import blas

from mirispec_steps.core.bspline import bspline_values

__all__ = [
    "ProfileBasis",
    "ProfileFitter",
    "ProfileLayout",
    "ProfileSolution",
    "fit_profile_correction",
]


@dataclass(frozen=True)
class ProfileLayout:
    """
    Where the profile correction lives and how finely it is described.

    Attributes
    ----------
    half_width : float
        The correction is zero beyond this offset from the trace (pixels).
    zones : tuple of (float, float)
        ``(outer edge, knot spacing)`` from the trace outwards (pixels): fine
        knots on the core, coarser ones on the rings and wings; the last zone
        extends to ``half_width``.
    n_row_intervals : int
        B-spline intervals along the rows.
    smoothing : float
        Weight of the second-difference penalty relative to the data
        (fills sub-pixel phases no row samples; small enough to leave the
        sampled ones alone).
    row_breaks : tuple of float
        Row coordinates (-1..1) where the correction may have a kink (the
        reference's own width law has one there, the data's need not): the
        three nearest inner row knots move onto each, the knot count stays.
    """

    half_width: float
    zones: tuple = ((3.0, 0.4), (8.0, 1.0), (np.inf, 2.0))
    n_row_intervals: int = 8
    smoothing: float = 1e-7
    row_breaks: tuple = ()

    def offset_knots(self) -> np.ndarray:
        """Symmetric knots on ``[-half_width, half_width]``, finer near the trace."""
        positive = [0.0]
        for edge, spacing in self.zones:
            edge = min(edge, self.half_width)
            if edge <= positive[-1]:
                continue
            n_intervals = max(int(np.ceil((edge - positive[-1]) / spacing)), 1)
            positive.extend(np.linspace(positive[-1], edge, n_intervals + 1)[1:])
        positive = np.asarray(positive)
        return np.concatenate([-positive[:0:-1], positive])

    def padded_knots(self) -> np.ndarray:
        """The knots with three more either side, so ``offset_knots`` span the base interval."""
        knots = self.offset_knots()
        step = knots[1] - knots[0]
        return np.concatenate([knots[0] - step * np.arange(3, 0, -1), knots,
                               knots[-1] + step * np.arange(1, 4)])  # fmt: skip

    def row_knots(self) -> np.ndarray:
        """Clamped knots on -1..1 (the spline spans the whole range of rows)."""
        inner = np.linspace(-1.0, 1.0, self.n_row_intervals + 1)
        for place in self.row_breaks:
            # A triple knot: the spline stays continuous there but its slope may jump.
            movable = np.arange(1, inner.size - 1)
            if movable.size < 6 or not -1.0 < place < 1.0:
                continue
            nearest = movable[np.argsort(np.abs(inner[movable] - place))[:3]]
            inner[nearest] = place
            inner.sort()
        return np.concatenate([[-1.0] * 3, inner, [1.0] * 3])

    def offset_centres(self) -> np.ndarray:
        """Greville abscissae of the offset splines (J,): where each one weighs most."""
        knots = self.offset_knots()
        return np.array([knots[j + 1 : j + 4].mean() for j in range(knots.size - 4)])

    def row_centres(self) -> np.ndarray:
        """Greville abscissae of the row splines (K,)."""
        knots = self.row_knots()
        return np.array([knots[k + 1 : k + 4].mean() for k in range(knots.size - 4)])


def _cubic_bsplines(points: np.ndarray, knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The four non-zero cubic B-splines at each point and the first one's index."""
    return bspline_values(points, knots, 3)


def _offset_basis(offsets: np.ndarray, layout: ProfileLayout, n_extra: int = 0) -> np.ndarray:
    """
    The cubic B-splines lying inside ``[-half_width, half_width]``, at ``offsets``: (..., J).

    ``n_extra`` zero columns follow the splines (room for the free terms).
    """
    knots, padded = layout.offset_knots(), layout.padded_knots()
    n_inside = knots.size - 4
    flat = offsets.ravel()
    values = np.zeros((flat.size, n_inside + n_extra))
    inside = np.flatnonzero((flat > knots[0]) & (flat < knots[-1]))
    if inside.size:
        # The first and last three splines of the padded set reach beyond the window
        # and are left out: spline s of the padded set is column s - 3.
        splines, first = _cubic_bsplines(flat[inside], padded)
        column = first[:, None] - 3 + np.arange(4)[None, :]
        keep = (column >= 0) & (column < n_inside)
        point = np.broadcast_to(inside[:, None], column.shape)
        values[point[keep], column[keep]] = splines[keep]
    return values.reshape(*offsets.shape, n_inside + n_extra)


def _row_basis(rho: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Clamped cubic B-splines along the rows at ``rho`` (-1..1): (R, K)."""
    design = BSpline.design_matrix(np.clip(rho, -1.0, 1.0), knots, 3)
    return design.toarray()


@dataclass
class ProfileBasis:
    """
    The correction's tensor-product basis at the pixels of a cutout, computed once.

    Attributes
    ----------
    offsets : list of ndarray
        ``(R, X, J + E)`` offset splines at each pixel, one array per trace
        (positive, then the negative nod if any), followed by ``E`` free
        terms: the reference profile (a smooth change of the profile's
        scale along the rows costs nothing; the normalisation removes it)
        and its derivative in the offset (a sub-pixel shift of the profile
        costs nothing either).
    rows : ndarray
        ``(R, K)`` row splines on each row.
    n_free : int
        ``E``, the free terms after the splines.
    """

    offsets: list
    rows: np.ndarray
    n_free: int

    @classmethod
    def at(cls, layout: ProfileLayout, offsets: list[np.ndarray], free: list[list[np.ndarray]],
           rho: np.ndarray) -> ProfileBasis:  # fmt: skip
        """
        The basis at pixel offsets from each trace on rows ``rho`` (-1..1).

        Parameters
        ----------
        layout : ProfileLayout
            The spline layout.
        offsets : list of ndarray
            ``(R, X)`` pixel offsets from each trace.
        free : list of list of ndarray
            Per trace, the ``(R, X)`` free terms (the reference profile and
            its derivative in the offset, unsigned).
        rho : ndarray
            ``(R,)`` normalised row coordinate.

        Returns
        -------
        ProfileBasis
            The basis.
        """
        per_trace = []
        for offset, terms in zip(offsets, free, strict=True):
            values = _offset_basis(offset, layout, len(terms))
            for index, term in enumerate(terms, start=values.shape[-1] - len(terms)):
                values[..., index] = np.nan_to_num(term)
            per_trace.append(values)
        return cls(per_trace, _row_basis(rho, layout.row_knots()), len(free[0]))


@functools.lru_cache(maxsize=8)
def _dense_positions(n: int, bandwidth: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of an upper band in a dense ``(n, n)`` matrix and in LAPACK's storage."""
    row, column = np.nonzero(np.triu(np.ones((n, n), bool)) & ~np.triu(np.ones((n, n), bool),
                                                                        bandwidth + 1))  # fmt: skip
    dense = row * n + column
    banded = (bandwidth + row - column) * n + column
    for positions in (dense, banded):
        positions.flags.writeable = False
    return dense, banded


def _band_of_inverse(factor: np.ndarray, n_offset: int, n_row: int) -> np.ndarray:
    """
    ``N^-1`` within three blocks of the diagonal, from ``N = U^T U`` (banded factor).

    Takahashi's recursion for a block-banded Cholesky factor: ``U Z = U^-T``
    is zero right of the block diagonal, so from the last block row up,
    ``Z_kj = U_kk^-1 (delta_kj U_kk^-T - sum_l U_kl Z_lj)`` for ``j >= k``,
    needing only blocks already on the band. Returns the dense ``(n, n)``
    matrix with those blocks filled (zero elsewhere).
    """
    n = factor.shape[1]
    dense, banded = _dense_positions(n, factor.shape[0] - 1)
    upper = np.zeros((n, n))
    upper.reshape(-1)[dense] = factor.reshape(-1)[banded]
    inverse = np.zeros((n, n))
    identity = np.eye(n_offset)
    for k in range(n_row - 1, -1, -1):
        start, stop = k * n_offset, (k + 1) * n_offset
        end = min(n_row, k + 4) * n_offset
        diagonal_inverse = linalg.solve_triangular(upper[start:stop, start:stop], identity)
        if stop < end:
            coupling = upper[start:stop, stop:end]
            beside = -diagonal_inverse @ (coupling @ inverse[stop:end, stop:end])
            inverse[start:stop, stop:end] = beside
            inverse[stop:end, start:stop] = beside.T
            block = diagonal_inverse @ (diagonal_inverse.T - coupling @ beside.T)
        else:
            block = diagonal_inverse @ diagonal_inverse.T
        inverse[start:stop, start:stop] = 0.5 * (block + block.T)
    return inverse


@dataclass
class ProfileSolution:
    """
    A fitted profile correction.

    Attributes
    ----------
    layout : ProfileLayout
        Its spline layout.
    coefficients : ndarray
        ``(J + E, K)`` tensor-product coefficients (the last ``E`` rows are
        the free terms).
    n_rejected : int
        Pixels left out as outliers.
    chi2_per_pixel : float
        Weighted residual per used pixel after the fit (about 1 when the
        model describes the data to the noise).
    used : ndarray
        ``(R, X)`` pixels the final fit used.
    factor : ndarray
        Banded Cholesky factor of the last step's normal equations
        (unknowns ordered row spline first, the amplitudes projected out):
        their inverse is the coefficients' covariance, for
        :meth:`flux_variance`.
    iterations : int
        Steps made.
    fixed : tuple of int
        Offset terms the last step held (their coefficients have no
        uncertainty: the reference term once the amplitudes are free).
    flux : ndarray or None
        ``(R,)`` each row's flux of the positive trace in the fit (profile
        normalised like the reference over the cutout).
    """

    layout: ProfileLayout
    coefficients: np.ndarray
    n_rejected: int
    chi2_per_pixel: float
    used: np.ndarray
    factor: np.ndarray
    iterations: int = 1
    flux: np.ndarray | None = None
    fixed: tuple = ()

    def flux_variance(self, basis: ProfileBasis, weights: np.ndarray,
                      window_sum: np.ndarray) -> np.ndarray:  # fmt: skip
        """
        Relative variance a row's flux takes from the profile's own noise.

        The profile is normalised over the window, so only the part of a
        change ``dP`` that is not a change of scale matters; a flux
        ``F = sum(w D)`` with ``sum(w P) = 1`` then moves by
        ``-F sum((w - 1 / S) dP)`` (``S`` the profile's window sum).

        Parameters
        ----------
        basis : ProfileBasis
            The basis the correction was fitted in (positive trace first).
        weights : ndarray
            ``(R, X)`` the extraction's linear pixel weights of the flux.
        window_sum : ndarray
            ``(R,)`` the profile's sum over the window.

        Returns
        -------
        ndarray
            ``(R,)`` variance of ``F`` over ``F**2``.
        """
        lit = np.isfinite(window_sum) & (window_sum > 0)  # rows the profile describes
        lever = np.zeros_like(weights)
        lever[lit] = np.nan_to_num(weights[lit]) - 1.0 / window_sum[lit, None]
        projected = (lever[:, None, :] @ basis.offsets[0])[:, 0, :]  # (R, J')
        projected[:, list(self.fixed)] = 0.0
        # g_r = L_r (x) projected_r, unknowns ordered (k, j); var_r = g_r^T N^-1 g_r. A row
        # meets four row splines, so only the 4 x 4 blocks of N^-1 on the block band matter.
        n_offset = projected.shape[1]
        n_row = basis.rows.shape[1]
        interval = np.clip(np.argmax(basis.rows > 0, axis=1), 0, n_row - 4)
        inverse = _band_of_inverse(self.factor, n_offset, n_row)
        variance = np.zeros(len(projected))
        for first in np.unique(interval):
            rows = np.flatnonzero(interval == first)
            levers = (basis.rows[rows, first : first + 4, None]
                      * projected[rows, None, :]).reshape(rows.size, -1)  # fmt: skip
            window = slice(first * n_offset, (first + 4) * n_offset)
            covariance = inverse[window, window]
            variance[rows] = np.einsum("ri,ri->r", levers @ covariance, levers)
        return variance

    def evaluate(self, basis: ProfileBasis, trace: int = 0) -> np.ndarray:
        """
        The correction at the pixels of ``basis`` relative to trace ``trace``.

        Returns
        -------
        ndarray
            ``(R, X)`` correction to add to that trace's reference profile.
        """
        per_row = basis.rows @ self.coefficients.T  # (R, J)
        return np.matmul(basis.offsets[trace], per_row[..., None])[..., 0]


def _background_fit(weights: np.ndarray, background: np.ndarray):
    """
    Each row's weighted least-squares fit of the background polynomial: ``(W B, (B W B^T)^-1)``.

    ``weights`` (R, X) and the background basis (B, X); returns the weighted
    basis (R, B, X), the inverse normal matrices (R, B, B) and the rows with
    enough pixels for the background (the others are to be left out).
    """
    weighted = weights[:, None, :] * background[None, :, :]  # (R, B, X)
    gram = weighted @ background.T
    usable = np.abs(np.linalg.det(gram)) > 1e-300
    gram[~usable] = np.eye(background.shape[0])
    return weighted, np.linalg.inv(gram), usable


def _second_difference(size: int) -> np.ndarray:
    operator = np.zeros((max(size - 2, 0), size))
    for row in range(size - 2):
        operator[row, row : row + 3] = (1.0, -2.0, 1.0)
    return operator


def _penalty(n_offset: int, n_splines: int, n_row: int) -> np.ndarray:
    """
    Second differences along both axes of the spline coefficients, as a (K J', K J') form.

    Unknowns are ordered row spline first (``k * J' + j``, ``J' = n_offset``);
    the last ``n_offset - n_splines`` offset terms (the free terms) are not
    smoothed along the offset.
    """
    along_offset = np.zeros((n_offset, n_offset))
    difference = _second_difference(n_splines)
    along_offset[:n_splines, :n_splines] = difference.T @ difference
    difference = _second_difference(n_row)
    return np.kron(np.eye(n_row), along_offset) + np.kron(difference.T @ difference,
                                                          np.eye(n_offset))  # fmt: skip


def _moment_form(centres: np.ndarray, n_offset: int, n_row: int) -> np.ndarray:
    """
    Sum of the squared zeroth and first moments of the spline part, per row spline.

    A pedestal ``a + b d`` of the correction is, in a nod pair (the same
    profile at two offsets, with opposite signs), exactly a constant across
    the row: the background. The free terms take any real change of scale
    or position, so the splines' own moments can be held near zero.
    """
    scaled = centres / np.max(np.abs(centres))
    form = np.zeros((n_offset, n_offset))
    n_splines = centres.size
    form[:n_splines, :n_splines] = np.outer(np.ones(n_splines), np.ones(n_splines)) + np.outer(
        scaled, scaled
    )
    return np.kron(np.eye(n_row), form)


@functools.lru_cache(maxsize=8)
def _cached_forms(layout: ProfileLayout, n_offset: int, n_row: int) -> tuple:
    """The smoothing penalty and the moment form in LAPACK's upper banded storage."""
    n_splines = layout.offset_knots().size - 4
    bandwidth = 4 * n_offset - 1
    forms = (
        _banded_upper(_penalty(n_offset, n_splines, n_row), bandwidth),
        _banded_upper(_moment_form(layout.offset_centres(), n_offset, n_row), bandwidth),
    )
    for form in forms:
        form.flags.writeable = False
    return forms


def _banded_upper(system: np.ndarray, bandwidth: int) -> np.ndarray:
    """The upper band of a symmetric matrix in LAPACK's banded storage."""
    band = np.zeros((bandwidth + 1, system.shape[0]))
    for offset in range(bandwidth + 1):
        band[bandwidth - offset, offset:] = np.diagonal(system, offset)
    return band


@functools.lru_cache(maxsize=8)
def _band_positions(n_row: int, n_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """
    Where each entry of the ``(n_row, 4, J', J')`` upper blocks goes in banded storage.

    Block ``[k, d]`` couples row splines ``k`` and ``k + d``; entry ``[a, b]``
    is the matrix element ``(k J' + a, (k + d) J' + b)``, stored at band row
    ``bandwidth + i - j`` and column ``j``. Returns the flat indices of the
    entries in the blocks and in the band (upper triangle, inside the matrix).
    """
    k, d, a, b = np.meshgrid(np.arange(n_row), np.arange(4), np.arange(n_offset),
                             np.arange(n_offset), indexing="ij")  # fmt: skip
    row, column = k * n_offset + a, (k + d) * n_offset + b
    keep = (k + d < n_row) & (column >= row)
    source = np.flatnonzero(keep.ravel())
    bandwidth = 4 * n_offset - 1
    band_row = (bandwidth + row - column).ravel()[source]
    destination = band_row * (n_row * n_offset) + column.ravel()[source]
    for positions in (source, destination):
        positions.flags.writeable = False
    return source, destination


def _to_band(blocks: np.ndarray) -> np.ndarray:
    """``(n_row, 4, J', J')`` upper blocks -> LAPACK upper banded storage."""
    n_row, _, n_offset, _ = blocks.shape
    source, destination = _band_positions(n_row, n_offset)
    band = np.zeros((4 * n_offset, n_row * n_offset))
    band.reshape(-1)[destination] = blocks.reshape(-1)[source]
    return band


_UPPER_PAIRS = [(p, q) for p in range(4) for q in range(p, 4)]


def _interval_groups(row_intervals: np.ndarray) -> list[tuple[int, slice | np.ndarray]]:
    """The rows of each row-spline interval: a slice where they are contiguous (no copy)."""
    groups = []
    for interval in np.unique(row_intervals):
        rows = np.flatnonzero(row_intervals == interval)
        if rows[-1] - rows[0] + 1 == rows.size:
            rows = slice(int(rows[0]), int(rows[-1]) + 1)
        groups.append((int(interval), rows))
    return groups


def _assemble(row_normal, row_right, row_values, groups):
    """
    Normal equations of the tensor-product fit in banded storage, unknowns ordered ``(k, j)``.

    ``row_normal`` (R, J', J') and ``row_right`` (R, J') are each row's
    normal matrix and right-hand side in the offset splines. A row meets only
    the four row splines of its interval, so the rows are grouped by interval
    (``groups``, from :func:`_interval_groups`) and each group adds a 4 x 4
    block of (J' x J') blocks, of which the upper ten are built: the system
    is block-banded (three blocks either side), and only its upper band is
    stored (LAPACK's storage, bandwidth ``4 J' - 1``).
    """
    n_rows, n_offset, _ = row_normal.shape
    n_row = row_values.shape[1]
    flat_normal = row_normal.reshape(n_rows, -1)
    blocks = np.zeros((n_row, 4, n_offset, n_offset))
    right = np.zeros((n_row, n_offset))
    first, second = np.array(_UPPER_PAIRS).T
    for interval, rows in groups:
        active = slice(interval, interval + 4)
        values = row_values[rows, active]  # (n, 4)
        pairs = values[:, first] * values[:, second]  # (n, 10)
        block = (pairs.T @ flat_normal[rows]).reshape(-1, n_offset, n_offset)
        for index, (p, q) in enumerate(_UPPER_PAIRS):
            blocks[interval + p, q - p] += block[index]
        right[active] += values.T @ row_right[rows]
    return _to_band(blocks), right.ravel()


@dataclass
class _RowAmplitudes:
    """
    The traces' best amplitudes in every row for one correction.

    Made by :meth:`ProfileFitter.amplitudes`.

    Attributes
    ----------
    values : ndarray
        ``(R, T)`` amplitude of each trace (signed).
    inverse : ndarray
        ``(R, T, T)`` inverse of the amplitudes' normal matrix (their
        covariance; zero where the row has none).
    crossed : list of list of ndarray
        ``crossed[i][j]`` ``(R, J')``: trace ``i``'s basis against trace
        ``j``'s current profile (reused by the step).
    usable : ndarray
        ``(R,)`` rows with amplitudes.
    flux : ndarray
        ``(R,)`` the positive trace's flux, its profile normalised like the
        reference over the cutout (NaN where unusable).
    error : ndarray
        ``(R,)`` the statistical error of ``flux``.
    scale_curvature : ndarray
        ``(R,)`` how fast the chi-square grows when a row's profile sum
        changes with its amplitudes held: ``sum_i A_i^2 p_i^T W p_i`` over
        the squared profile sum (zero where unusable).
    """

    values: np.ndarray
    inverse: np.ndarray
    crossed: list
    usable: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    scale_curvature: np.ndarray


class ProfileFitter:
    """
    The profile-correction fit of one image: correction and amplitudes together.

    The model of every pixel is ``sum_i A_i(r) (u_i + delta(d_i, rho_r)) +
    b_r(x)`` with the reference profiles ``u_i`` and amplitudes ``A_i`` of
    the source's traces (the positive trace, and the negative nod if any),
    the correction ``delta`` shared by the traces and ``b_r`` a free
    polynomial per row. Each row's background is projected out of every
    trace's basis and of the image once (:meth:`use`). The model is
    bilinear: for a given correction the amplitudes are linear and solved
    exactly (:meth:`amplitudes`), and the correction takes Gauss-Newton
    steps with the amplitudes projected out (:meth:`step`; variable
    projection, Golub & Pereyra 1973, with Kaufman's 1975 Jacobian). Both
    reuse per-row products of the projected basis, so a step costs one
    banded solve.

    Parameters
    ----------
    image : ndarray
        ``(R, X)`` data (the background need not be removed).
    variance : ndarray
        ``(R, X)`` pixel variances.
    valid : ndarray
        ``(R, X)`` pixels to use.
    basis : ProfileBasis
        The correction's basis at the pixels (one per trace; the first free
        term of each is that trace's unsigned reference profile).
    background : ndarray
        ``(B, X)`` background polynomial across the row (B = 0: none).
    layout : ProfileLayout
        The spline layout.
    prior_scale : ndarray or None
        ``(J, K)`` how large the correction may plausibly be at each spline
        coefficient (fraction of the flux per pixel): a Gaussian prior of
        that width centred on zero (no correction). It decides the
        directions the data cannot: a broad pedestal of the profile and the
        row's background are nearly the same thing, and the prior gives
        that light to the background where the reference puts little of the
        source. None: no prior.
    moment_scale : float or None
        Prior width of the zeroth and first moments (in the offset) of the
        spline part: the free terms carry real changes of scale and
        position, so these moments only take what the data cannot place
        (see :func:`_moment_form`). None: no such prior.

    Notes
    -----
    Projecting out the background couples all offset splines within a row;
    a row meets only four row splines, so the normal equations are
    block-banded and solved by a banded Cholesky factorisation: the cost
    grows linearly with the number of row splines.

    Alternating the correction and the amplitudes (each solved with the
    other fixed) reaches the same minimum but converges linearly, slowly
    where the amplitudes and a row's profile scale trade against each other;
    variable projection converges in two or three steps.
    """

    def __init__(self, image, variance, valid, basis: ProfileBasis, background,
                 layout: ProfileLayout, prior_scale=None, moment_scale=None):  # fmt: skip
        self.image, self.variance, self.basis = image, variance, basis
        self.background, self.layout = background, layout
        n_row = basis.rows.shape[1]
        self.n_offset = basis.offsets[0].shape[-1]
        self.n_splines = self.n_offset - basis.n_free
        self.row_groups = _interval_groups(np.clip(np.argmax(basis.rows > 0, axis=1), 0, n_row - 4))
        self.bandwidth = 4 * self.n_offset - 1
        self.penalty, moments = _cached_forms(layout, self.n_offset, n_row)
        self.regulariser = np.zeros_like(self.penalty)
        if prior_scale is not None:
            # prior_scale is (J, K); the unknowns are (k, j), the free terms unconstrained.
            diagonal = np.zeros((n_row, self.n_offset))
            diagonal[:, : self.n_splines] = 1.0 / np.square(prior_scale).T
            self.regulariser[self.bandwidth] = diagonal.ravel()
        if moment_scale:
            self.regulariser += moments / moment_scale**2
        self.scale = None
        # Each row's profile sum over the cutout per unknown (the flux normalisation).
        self.column_sums = np.einsum("rxj->rj", basis.offsets[0])
        self.use(valid)

    def use(self, valid: np.ndarray) -> None:
        """
        Per-row products of basis and image on the pixels ``valid``, background projected out.

        With a free background ``b_r`` per row, fitting is the same as fitting
        with the basis and the image projected orthogonally (in the row's
        weights) to every background polynomial. The projected products are
        ``D^T W D - M^T G^-1 M`` with ``M = B W D`` and ``G = B W B^T``
        (``B`` the background basis): the projected design itself is never
        formed.
        """
        usable = valid & np.isfinite(self.image) & np.isfinite(self.variance) & (self.variance > 0)
        weights = np.where(usable, 1.0 / np.where(usable, self.variance, 1.0), 0.0)
        target = np.where(usable, self.image, 0.0)
        n_background = self.background.shape[0]
        if n_background:
            weighted_background, inverse, fitted = _background_fit(weights, self.background)
            # Rows with too few pixels for the background keep nothing.
            usable &= fitted[:, None]
            weights[~fitted] = 0.0
            weighted_background[~fitted] = 0.0
            self.background_fit = (weighted_background, inverse)
        self.valid, self.weights, self.target = usable, weights, target
        self._start = None
        designs = self.basis.offsets
        weighted = [design * weights[..., None] for design in designs]  # (R, X, J')
        n_traces = len(designs)
        self.cross = [[None] * n_traces for _ in range(n_traces)]
        for i in range(n_traces):
            for j in range(i, n_traces):
                self.cross[i][j] = weighted[i].transpose(0, 2, 1) @ designs[j]
        self.with_image = [np.einsum("rxa,rx->ra", w, target) for w in weighted]
        if n_background:
            along = [self.background @ w for w in weighted]  # (R, B, J')
            along_image = np.einsum("rbx,rx->rb", weighted_background, target)
            solved = [inverse @ a for a in along]
            for i in range(n_traces):
                for j in range(i, n_traces):
                    self.cross[i][j] -= along[i].transpose(0, 2, 1) @ solved[j]
                self.with_image[i] -= np.einsum("rba,rb->ra", solved[i], along_image)
        for i in range(n_traces):
            for j in range(i):
                self.cross[i][j] = self.cross[j][i].transpose(0, 2, 1)

    def start(self) -> _RowAmplitudes:
        """The amplitudes of the reference profiles (no correction), computed once per pixel set."""
        if self._start is None:
            self._start = self.amplitudes(np.zeros((self.n_offset, self.basis.rows.shape[1])))
        return self._start

    def amplitudes(self, coefficients: np.ndarray) -> _RowAmplitudes:
        """
        Each row's best amplitudes of the traces' profiles for the correction ``coefficients``.

        The background is already projected out; the amplitudes are the
        linear least-squares solution of the traces' current profiles
        (reference plus correction) against the image, row by row.

        Parameters
        ----------
        coefficients : ndarray
            ``(J', K)`` correction coefficients.

        Returns
        -------
        _RowAmplitudes
            Amplitudes, their errors and the flux they mean (see its attributes).
        """
        per_row = self.basis.rows @ coefficients.T  # (R, J')
        direction = per_row.copy()
        direction[:, self.n_splines] += 1.0  # the profile is the reference plus the correction
        n_traces = len(self.cross)
        crossed = [[np.einsum("rab,rb->ra", self.cross[i][j], direction)
                    for j in range(n_traces)] for i in range(n_traces)]  # fmt: skip
        gram = np.empty((len(direction), n_traces, n_traces))
        for i in range(n_traces):
            for j in range(n_traces):
                gram[:, i, j] = np.einsum("ra,ra->r", direction, crossed[i][j])
        with_data = np.stack([np.einsum("ra,ra->r", direction, w) for w in self.with_image], 1)
        # Rows without a usable pixel (or traces the row cannot tell apart) have no amplitude.
        diagonal = np.einsum("rii->ri", gram)
        usable = np.all(diagonal > 0, axis=1)
        if n_traces > 1:
            determinant = np.linalg.det(gram)
            usable &= determinant > 1e-12 * np.prod(np.where(usable[:, None], diagonal, 1.0), 1)
        gram[~usable] = np.eye(n_traces)
        inverse = np.linalg.inv(gram)
        inverse[~usable] = 0.0
        values = np.einsum("rij,rj->ri", inverse, with_data)
        # Flux of a profile normalised like the reference over the cutout.
        total = np.einsum("ra,ra->r", self.column_sums, direction)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            scale = total / self.column_sums[:, self.n_splines]
            measurable = usable & np.isfinite(scale)
            flux = np.where(measurable, values[:, 0] * scale, np.nan)
            error = np.where(measurable, np.sqrt(inverse[:, 0, 0]) * np.abs(scale), np.nan)
            held = np.einsum("ri,rii->r", values**2, gram) / total**2
        held = np.where(usable & np.isfinite(held), held, 0.0)
        return _RowAmplitudes(values, inverse, crossed, usable, flux, error, held)

    def step(self, coefficients: np.ndarray, row: _RowAmplitudes, project: bool = True,
             damp: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """
        One Gauss-Newton step of the correction, the amplitudes projected out (variable projection).

        The model ``A_r (u_r + B_r c)`` is bilinear; for a given correction
        ``c`` the amplitudes ``A_r`` are linear and solved exactly
        (:meth:`amplitudes`). The step in ``c`` uses Kaufman's Jacobian: the
        design ``A_r B_r`` with the row's current profiles (the directions
        the amplitudes already take) projected out, like the background.

        Parameters
        ----------
        coefficients : ndarray
            ``(J', K)`` current correction.
        row : _RowAmplitudes
            The amplitudes for ``coefficients``.
        project : bool
            Project the amplitudes out (a variable-projection step). False:
            the amplitudes are held fixed and the reference term of the
            correction is free (an alternating step; the first step, whose
            amplitudes are those of the reference profile, takes it: a smooth
            error of those amplitudes along the rows goes into that term).
            True: the reference term is held where it is, since with the
            amplitudes free a change of a row's profile scale is not seen by
            the data.
        damp : bool
            In a projected step, damp the changes of each row's profile sum
            as if the amplitudes were held (for when splines that nearly
            rescale the profile, which nothing but a prior decides, make the
            steps grow; the minimum is the same, the convergence slower).

        Returns
        -------
        coefficients : ndarray
            ``(J', K)`` the corrected coefficients.
        factor : ndarray
            Banded Cholesky factor of the step's normal equations.
        """
        amplitudes = [np.where(row.usable, row.values[:, i], 0.0)
                      for i in range(row.values.shape[1])]  # fmt: skip
        crossed = row.crossed
        row_normal = sum(
            a_i[:, None, None] * a_j[:, None, None] * self.cross[i][j]
            for i, a_i in enumerate(amplitudes) for j, a_j in enumerate(amplitudes)
        )  # fmt: skip
        # What the amplitudes already take: p_k^T W (sum_j A_j B_j) per trace k.
        taken = np.stack(
            [sum(a_j[:, None] * crossed[j][k] for j, a_j in enumerate(amplitudes))
             for k in range(len(amplitudes))], axis=1,
        )  # fmt: skip
        if project:
            row_normal = row_normal - taken.transpose(0, 2, 1) @ (row.inverse @ taken)
        if project and damp:
            # A change of a row's profile sum is taken by its amplitudes and not seen by
            # the chi-square; the step is damped along it as if the amplitudes were held
            # (the damping acts on the step, not on the solution).
            sums = self.column_sums
            row_normal = row_normal + row.scale_curvature[:, None, None] * (
                sums[:, :, None] * sums[:, None, :]
            )
        # Gradient of the chi-square: the residual is already orthogonal to every p_k.
        row_right = sum(
            a_i[:, None] * (self.with_image[i] - sum(
                a_j[:, None] * crossed[i][j] for j, a_j in enumerate(amplitudes)
            ))
            for i, a_i in enumerate(amplitudes)
        )  # fmt: skip
        if project:
            # Hold the reference term: its row entries become the identity, its gradient zero.
            # (Any positive diagonal does; one like the others keeps the system well scaled.)
            reference = self.n_splines
            typical = float(np.mean(np.einsum("rii->ri", row_normal))) or 1.0
            row_normal[:, reference, :] = 0.0
            row_normal[:, :, reference] = 0.0
            row_normal[:, reference, reference] = typical
        normal, right = _assemble(row_normal, row_right, self.basis.rows, self.row_groups)
        diagonal = self.bandwidth  # the band row holding the diagonal
        if self.scale is None:
            # Fixed at the first step: the objective must not change between steps.
            self.scale = float(np.mean(normal[diagonal])) or 1.0
        penalty = self.layout.smoothing * self.scale * self.penalty + self.regulariser
        current = coefficients.T.ravel()
        right = right - blas.dsbmv(self.bandwidth, 1.0, penalty, current)
        if project:
            # The penalty couples the reference term only with itself: no gradient, no step.
            right[self.n_splines :: self.n_offset] = 0.0
        system = normal + penalty
        system[diagonal] += 1e-10 * self.scale
        factor = linalg.cholesky_banded(system, check_finite=False)
        change = linalg.cho_solve_banded((factor, False), right, check_finite=False)
        return (current + change).reshape(-1, self.n_offset).T, factor

    def flux_weights(self, profiles: list[np.ndarray]) -> np.ndarray:
        """
        The linear pixel weights of the first trace's flux in a fit of ``profiles`` (R, X).

        The weighted least-squares fit of the profiles and each row's
        background polynomial on the used pixels: ``F = sum(w D)``. Rows
        without a fit get zero weights.
        """
        design = np.stack([np.where(self.valid, p, 0.0) for p in profiles], axis=-1)  # (R, X, T)
        if self.background.shape[0]:
            weighted_background, inverse = self.background_fit
            fitted = inverse @ (weighted_background @ design)  # (R, B, T)
            design = design - self.background.T @ fitted
        weighted = design * self.weights[..., None]
        normal = weighted.transpose(0, 2, 1) @ design  # (R, T, T)
        usable = np.abs(np.linalg.det(normal)) > 0
        normal[~usable] = np.eye(len(profiles))
        weights = (np.linalg.inv(normal) @ weighted.transpose(0, 2, 1))[:, 0, :]
        weights[~usable] = 0.0
        return weights

    def normalised_residual(self, row: _RowAmplitudes, coefficients) -> np.ndarray:
        """``(data - scene - background) / sigma`` on the used pixels, amplitudes ``row``."""
        per_row = self.basis.rows @ coefficients.T
        per_row[:, self.n_splines] += 1.0
        model = sum(
            np.where(row.usable, row.values[:, index], 0.0)[:, None]
            * np.matmul(design, per_row[..., None])[..., 0]
            for index, design in enumerate(self.basis.offsets)
        )
        residual = np.where(self.valid, self.target - model, 0.0)
        if self.background.shape[0]:
            weighted_background, inverse = self.background_fit
            fitted = inverse @ np.einsum("rbx,rx->rb", weighted_background, residual)[..., None]
            residual = residual - (fitted[..., 0] @ self.background)
        return np.where(self.valid, residual * np.sqrt(self.weights), 0.0)

    def fit(self, reject_sigma: float = 0.0, max_iterations: int = 4,
            tolerance: float = 0.02) -> ProfileSolution:  # fmt: skip
        """
        Fit the correction and the amplitudes together, rejecting outliers on the way.

        Parameters
        ----------
        reject_sigma : float
            Outlier threshold in sigma (scaled up by the fit's chi-square
            when it exceeds 1), applied after the first two steps; 0 keeps
            every pixel. Rejections change the pixels used from then on (and
            a step follows them).
        max_iterations : int
            Steps at most.
        tolerance : float
            The fit has converged when the 95th percentile over rows of a
            step's flux change is below ``tolerance`` times the flux error.

        Returns
        -------
        ProfileSolution
            The correction.
        """
        coefficients = np.zeros((self.n_offset, self.basis.rows.shape[1]))
        row = self.start()
        n_rejected, n_steps = 0, 0
        damp, last_change, factor = False, np.inf, None
        while True:
            before = (coefficients, factor)
            coefficients, factor = self.step(coefficients, row, project=n_steps > 0, damp=damp)
            n_steps += 1
            previous, row = row, self.amplitudes(coefficients)
            with np.errstate(invalid="ignore", divide="ignore"):
                change = np.abs(row.flux - previous.flux) / previous.error
            change = change[np.isfinite(change)]
            size = float(np.percentile(change, 95)) if change.size else 0.0
            if n_steps > 2 and not damp and size > last_change:
                # Growing projected steps: take this one back and damp from now on.
                (coefficients, factor), row, damp = before, previous, True
                if n_steps < max_iterations:
                    continue
                break
            last_change = size
            rejected, checked = False, None
            if reject_sigma and n_steps <= 2:
                normalised = self.normalised_residual(row, coefficients)
                chi2 = float(np.sum(normalised**2)) / max(int(self.valid.sum()), 1)
                limit = reject_sigma * max(np.sqrt(chi2), 1.0)
                outliers = self.valid & (np.abs(normalised) > limit)
                checked = chi2
                if outliers.any():
                    checked = None
                    n_rejected += int(outliers.sum())
                    rejected = True
                    self.use(self.valid & ~outliers)
                    row = self.amplitudes(coefficients)
            if rejected:
                # The next step is measured against the fluxes on the new pixels.
                last_change = np.inf
            settled = size < tolerance
            if (settled and not rejected) or n_steps >= max_iterations:
                break
        if checked is None:
            normalised = self.normalised_residual(row, coefficients)
            chi2 = float(np.sum(normalised**2)) / max(int(self.valid.sum()), 1)
        else:
            chi2 = checked  # the last rejection check's, on the same pixels and solution
        fixed = (self.n_splines,) if n_steps > 1 else ()
        return ProfileSolution(self.layout, coefficients, n_rejected, chi2, self.valid, factor,
                               n_steps, row.flux, fixed)  # fmt: skip


def fit_profile_correction(
    image: np.ndarray,
    variance: np.ndarray,
    valid: np.ndarray,
    basis: ProfileBasis,
    background: np.ndarray,
    layout: ProfileLayout,
    prior_scale: np.ndarray | None = None,
    moment_scale: float | None = None,
    reject_sigma: float = 5.0,
    max_iterations: int = 4,
    tolerance: float = 0.02,
) -> ProfileSolution:
    """
    Fit the profile correction of an image (see :class:`ProfileFitter`).

    Parameters
    ----------
    image : ndarray
        ``(R, X)`` data.
    variance : ndarray
        ``(R, X)`` pixel variances.
    valid : ndarray
        ``(R, X)`` pixels to use.
    basis : ProfileBasis
        The correction's basis at the pixels.
    background : ndarray
        ``(B, X)`` background polynomial across the row.
    layout : ProfileLayout
        The spline layout.
    prior_scale : ndarray or None
        See :class:`ProfileFitter`.
    moment_scale : float or None
        See :class:`ProfileFitter`.
    reject_sigma : float
        Outlier threshold (0: none).
    max_iterations : int
        Gauss-Newton steps at most.
    tolerance : float
        Flux change (in flux errors, 95th percentile of the rows) that ends the steps.

    Returns
    -------
    ProfileSolution
        The correction.

    Examples
    --------
    A Gaussian source 1.4 px wide fitted with a 1.1 px reference on a tilted trace:

    >>> import numpy as np
    >>> from scipy.special import ndtr
    >>> trace = 20.0 + np.linspace(-0.7, 0.7, 120)
    >>> offsets = np.arange(41.0)[None, :] - trace[:, None]
    >>> def pixels(sigma):
    ...     return ndtr((offsets + 0.5) / sigma) - ndtr((offsets - 0.5) / sigma)
    >>> data = 1000.0 * pixels(1.4) + 20.0
    >>> layout = ProfileLayout(half_width=15.0, n_row_intervals=4)
    >>> rho = np.linspace(-1, 1, 120)
    >>> free = [[pixels(1.1), np.gradient(pixels(1.1), axis=1)]]
    >>> basis = ProfileBasis.at(layout, [offsets], free, rho)
    >>> flat = np.ones((1, 41))
    >>> solution = fit_profile_correction(data, np.ones_like(data), data > 0, basis, flat,
    ...                                   layout)
    >>> profile = pixels(1.1) + solution.evaluate(basis)
    >>> profile /= profile.sum(axis=1, keepdims=True)
    >>> bool(np.max(np.abs(profile - pixels(1.4))) < 1e-3)
    True
    """
    fitter = ProfileFitter(image, variance, valid, basis, background, layout,
                           prior_scale, moment_scale)  # fmt: skip
    return fitter.fit(reject_sigma, max_iterations, tolerance)
