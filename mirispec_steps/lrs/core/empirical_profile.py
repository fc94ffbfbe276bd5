"""
The spatial profile of a point source measured from the data, in trace-relative coordinates.

Optimal extraction needs the fraction of the source's light in every pixel
of a row. A PSF model never matches real data exactly; Horne (1986) and
Marsh (1989) measure the profile from the data instead, smoothly along
dispersion. Here the profile is the reference PSF plus a correction
``delta(d, rho)``, a tensor-product cubic B-spline in the offset from the
trace ``d`` (pixels) and the normalised row coordinate ``rho`` (-1..1).
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
from scipy.linalg import lapack

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
    """

    half_width: float
    zones: tuple = ((3.0, 0.4), (8.0, 1.0), (np.inf, 2.0))
    n_row_intervals: int = 8
    smoothing: float = 1e-7

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
        return np.concatenate([[-1.0] * 3, inner, [1.0] * 3])

    def offset_centres(self) -> np.ndarray:
        """Greville abscissae of the offset splines (J,): where each one weighs most."""
        knots = self.offset_knots()
        return np.array([knots[j + 1 : j + 4].mean() for j in range(knots.size - 4)])

    def row_centres(self) -> np.ndarray:
        """Greville abscissae of the row splines (K,)."""
        knots = self.row_knots()
        return np.array([knots[k + 1 : k + 4].mean() for k in range(knots.size - 4)])


def _offset_basis(offsets: np.ndarray, layout: ProfileLayout) -> np.ndarray:
    """The cubic B-splines lying inside ``[-half_width, half_width]``, at ``offsets``: (..., J)."""
    knots, padded = layout.offset_knots(), layout.padded_knots()
    n_inside = knots.size - 4
    flat = offsets.ravel()
    inside = (flat > knots[0]) & (flat < knots[-1])
    values = np.zeros((flat.size, n_inside))
    if inside.any():
        # The first and last three splines of the padded set reach beyond the window.
        design = BSpline.design_matrix(flat[inside], padded, 3).toarray()
        values[inside] = design[:, 3 : 3 + n_inside]
    return values.reshape(*offsets.shape, n_inside)


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
        return cls(
            [
                np.concatenate(
                    [_offset_basis(offset, layout), *(t[..., None] for t in terms)], axis=-1
                )  # fmt: skip
                for offset, terms in zip(offsets, free, strict=True)
            ],
            _row_basis(rho, layout.row_knots()),
            len(free[0]),
        )


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
        Banded Cholesky factor of the final normal equations (unknowns
        ordered row spline first): their inverse is the coefficients'
        covariance, for :meth:`flux_variance`.
    """

    layout: ProfileLayout
    coefficients: np.ndarray
    n_rejected: int
    chi2_per_pixel: float
    used: np.ndarray
    factor: np.ndarray

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
        # g_r = L_r (x) projected_r, unknowns ordered (k, j); var_r = g_r^T N^-1 g_r,
        # all rows solved at once against the banded Cholesky factor.
        levers = (basis.rows[:, :, None] * projected[:, None, :]).reshape(len(projected), -1)
        # With N = U^T U: g^T N^-1 g = |U^-T g|^2, one triangular solve instead of two.
        halfway, info = lapack.dtbtrs(self.factor, levers.T, uplo="U", trans="T")
        if info != 0:
            raise np.linalg.LinAlgError(f"triangular solve failed (LAPACK info {info})")
        return np.einsum("ir,ir->r", halfway, halfway)

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


def _project_out_background(design, target, weights, background):
    """
    Remove each row's weighted least-squares background from a design and a target.

    ``design`` (R, X, J), ``target`` (R, X), ``weights`` (R, X) and the
    background basis (B, X). What is left is orthogonal (in the row's
    weights) to every background polynomial, so fitting it is the same as
    fitting with a free background per row.
    """
    if background.shape[0] == 0:
        return design, target
    weighted = weights[:, None, :] * background[None, :, :]  # (R, B, X)
    gram = weighted @ background.T
    # Rows with too few pixels for the background keep nothing.
    usable = np.abs(np.linalg.det(gram)) > 1e-300
    gram[~usable] = np.eye(background.shape[0])
    inverse = np.linalg.inv(gram)
    design = design - background.T @ (inverse @ (weighted @ design))
    target = target - (background.T @ (inverse @ (weighted @ target[..., None])))[..., 0]
    design[~usable] = 0.0
    target[~usable] = 0.0
    return design, target


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
    n_splines = layout.offset_knots().size - 4
    penalty = _penalty(n_offset, n_splines, n_row)
    moments = _moment_form(layout.offset_centres(), n_offset, n_row)
    for form in (penalty, moments):
        form.flags.writeable = False
    return penalty, moments


def _banded_upper(system: np.ndarray, bandwidth: int) -> np.ndarray:
    """The upper band of a symmetric matrix in LAPACK's banded storage."""
    band = np.zeros((bandwidth + 1, system.shape[0]))
    for offset in range(bandwidth + 1):
        band[bandwidth - offset, offset:] = np.diagonal(system, offset)
    return band


@functools.lru_cache(maxsize=8)
def _band_positions(n_row: int, n_offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Where each entry of the ``(n_row, 4, J', J')`` upper blocks goes in banded storage.

    Block ``[k, d]`` couples row splines ``k`` and ``k + d``; entry ``[a, b]``
    is the matrix element ``(k J' + a, (k + d) J' + b)``, stored at band row
    ``bandwidth + i - j`` and column ``j``. Returns the flat block indices
    and their band rows and columns (upper triangle, inside the matrix).
    """
    k, d, a, b = np.meshgrid(np.arange(n_row), np.arange(4), np.arange(n_offset),
                             np.arange(n_offset), indexing="ij")  # fmt: skip
    row, column = k * n_offset + a, (k + d) * n_offset + b
    keep = (k + d < n_row) & (column >= row)
    source = np.flatnonzero(keep.ravel())
    bandwidth = 4 * n_offset - 1
    return source, (bandwidth + row - column).ravel()[source], column.ravel()[source]


def _to_band(blocks: np.ndarray) -> np.ndarray:
    """``(n_row, 4, J', J')`` upper blocks -> LAPACK upper banded storage."""
    n_row, _, n_offset, _ = blocks.shape
    source, band_row, band_column = _band_positions(n_row, n_offset)
    band = np.zeros((4 * n_offset, n_row * n_offset))
    band[band_row, band_column] = blocks.reshape(-1)[source]
    return band


def _assemble(row_normal, row_right, row_values, row_intervals):
    """
    Normal equations of the tensor-product fit in banded storage, unknowns ordered ``(k, j)``.

    ``row_normal`` (R, J', J') and ``row_right`` (R, J') are each row's
    normal matrix and right-hand side in the offset splines. A row meets only
    the four row splines of its interval, so the rows are grouped by interval
    and each group adds a 4 x 4 block of (J' x J') blocks: the system is
    block-banded (three blocks either side), and only its upper band is
    built (LAPACK's storage, bandwidth ``4 J' - 1``).
    """
    n_rows, n_offset, _ = row_normal.shape
    n_row = row_values.shape[1]
    flat_normal = row_normal.reshape(n_rows, -1)
    blocks = np.zeros((n_row, 4, n_offset, n_offset))
    right = np.zeros((n_row, n_offset))
    upper = [(p, q) for p in range(4) for q in range(p, 4)]
    for interval in np.unique(row_intervals):
        rows = row_intervals == interval
        active = slice(interval, interval + 4)
        values = row_values[rows, active]  # (n, 4)
        pairs = (values[:, :, None] * values[:, None, :]).reshape(values.shape[0], 16)
        block = (pairs.T @ flat_normal[rows]).reshape(4, 4, n_offset, n_offset)
        for p, q in upper:
            blocks[interval + p, q - p] += block[p, q]
        right[active] += values.T @ row_right[rows]
    return _to_band(blocks), right.ravel()


class ProfileFitter:
    """
    The profile-correction fit of one image, set up once and solved for any trace amplitudes.

    The model of every pixel is ``sum_i A_i(r) delta(d_i, rho_r) + b_r(x)``
    with the amplitudes ``A_i`` of the source's traces (the positive trace,
    and the negative nod if any), ``delta`` shared by the traces and ``b_r``
    a free polynomial per row; the data fitted are the image minus the
    amplitudes times the reference profiles. Each row's background is
    projected out of every trace's basis and of the image once; the design
    is linear in the amplitudes, so a new set of amplitudes only recombines
    per-row products (:meth:`solve`).

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
    """

    def __init__(self, image, variance, valid, basis: ProfileBasis, background,
                 layout: ProfileLayout, prior_scale=None, moment_scale=None):  # fmt: skip
        self.image, self.variance, self.basis = image, variance, basis
        self.background, self.layout = background, layout
        n_row = basis.rows.shape[1]
        self.n_offset = basis.offsets[0].shape[-1]
        self.n_splines = self.n_offset - basis.n_free
        self.row_intervals = np.clip(np.argmax(basis.rows > 0, axis=1), 0, n_row - 4)
        penalty, moments = _cached_forms(layout, self.n_offset, n_row)
        spline_terms = np.flatnonzero((np.arange(n_row * self.n_offset) % self.n_offset)
                                      < self.n_splines)  # fmt: skip
        regulariser = np.zeros((n_row * self.n_offset,) * 2)
        if prior_scale is not None:
            # prior_scale is (J, K); the unknowns are (k, j).
            regulariser[spline_terms, spline_terms] = 1.0 / np.square(prior_scale).T.ravel()
        if moment_scale:
            regulariser += moments / moment_scale**2
        self.bandwidth = 4 * self.n_offset - 1
        self.penalty = _banded_upper(penalty, self.bandwidth)
        self.regulariser = _banded_upper(regulariser, self.bandwidth)
        self.use(valid)

    def use(self, valid: np.ndarray) -> None:
        """Project the background out of the basis and the image on the pixels ``valid``."""
        usable = valid & np.isfinite(self.image) & np.isfinite(self.variance) & (self.variance > 0)
        self.valid = usable
        self.weights = np.where(usable, 1.0 / np.where(usable, self.variance, 1.0), 0.0)
        target = np.where(usable, self.image, 0.0)
        designs = [np.where(usable[..., None], np.nan_to_num(b), 0.0) for b in self.basis.offsets]
        self.projected, self.projected_image = [], None
        for design in designs:
            projected, projected_image = _project_out_background(
                design, target, self.weights, self.background
            )
            self.projected.append(projected)
            self.projected_image = projected_image
        weighted = [(self.weights[..., None] * p).transpose(0, 2, 1) for p in self.projected]
        # Per-row products of every pair of traces, and with the image.
        self.cross = [[w @ p for p in self.projected] for w in weighted]
        self.with_image = [(w @ self.projected_image[..., None])[..., 0] for w in weighted]

    def solve(self, amplitudes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """
        The correction for the traces' amplitudes; returns ``(coefficients, factor)``.

        Parameters
        ----------
        amplitudes : list of ndarray
            ``(R,)`` amplitude of each trace (signed: the negative nod's
            profile enters with its sign); rows with a non-finite amplitude
            must have been left out of ``valid``.

        Returns
        -------
        coefficients : ndarray
            ``(J', K)``.
        factor : ndarray
            Banded Cholesky factor of the normal equations.
        """
        reference = self.n_splines  # index of the unsigned reference in the free terms
        amplitudes = [np.nan_to_num(a) for a in amplitudes]
        row_normal = sum(
            a_i[:, None, None] * a_j[:, None, None] * self.cross[i][j]
            for i, a_i in enumerate(amplitudes) for j, a_j in enumerate(amplitudes)
        )  # fmt: skip
        # Data minus the reference scene: image - sum_j A_j U_j, U_j the reference column.
        row_right = sum(
            a_i[:, None] * (self.with_image[i] - sum(
                a_j[:, None] * self.cross[i][j][:, :, reference]
                for j, a_j in enumerate(amplitudes)
            ))
            for i, a_i in enumerate(amplitudes)
        )  # fmt: skip
        normal, right = _assemble(row_normal, row_right, self.basis.rows, self.row_intervals)
        diagonal = self.bandwidth  # the band row holding the diagonal
        scale = float(np.mean(normal[diagonal])) or 1.0
        system = normal + self.layout.smoothing * scale * self.penalty + self.regulariser
        system[diagonal] += 1e-10 * scale
        factor = linalg.cholesky_banded(system, check_finite=False)
        solution = linalg.cho_solve_banded((factor, False), right, check_finite=False)
        return solution.reshape(-1, self.n_offset).T, factor

    def normalised_residual(self, amplitudes, coefficients) -> np.ndarray:
        """``(data - reference scene - correction - background) / sigma`` on the used pixels."""
        per_row = self.basis.rows @ coefficients.T
        model = sum(
            a[:, None] * np.matmul(p, per_row[..., None])[..., 0]
            for a, p in zip(amplitudes, self.projected, strict=True)
        )
        reference = sum(
            a[:, None] * p[..., self.n_splines]
            for a, p in zip(amplitudes, self.projected, strict=True)
        )
        residual = (self.projected_image - reference - model) * np.sqrt(self.weights)
        return np.where(self.valid, residual, 0.0)

    def fit(self, amplitudes: list[np.ndarray], reject_sigma: float = 0.0) -> ProfileSolution:
        """
        Solve, optionally rejecting pixels beyond ``reject_sigma`` (twice at most).

        Parameters
        ----------
        amplitudes : list of ndarray
            ``(R,)`` amplitude of each trace (signed).
        reject_sigma : float
            Outlier threshold in sigma (scaled up by the fit's chi-square
            when it exceeds 1); 0 keeps every pixel. Rejections change the
            pixels used from then on.

        Returns
        -------
        ProfileSolution
            The correction.
        """
        n_rejected = 0
        for _attempt in range(3):
            coefficients, factor = self.solve(amplitudes)
            normalised = self.normalised_residual(amplitudes, coefficients)
            chi2 = float(np.sum(normalised**2)) / max(int(self.valid.sum()), 1)
            if not reject_sigma:
                break
            outliers = self.valid & (np.abs(normalised) > reject_sigma * max(np.sqrt(chi2), 1.0))
            if not outliers.any():
                break
            n_rejected += int(outliers.sum())
            self.use(self.valid & ~outliers)
        return ProfileSolution(self.layout, coefficients, n_rejected, chi2, self.valid, factor)


def fit_profile_correction(
    image: np.ndarray,
    variance: np.ndarray,
    valid: np.ndarray,
    amplitudes: list[np.ndarray],
    basis: ProfileBasis,
    background: np.ndarray,
    layout: ProfileLayout,
    prior_scale: np.ndarray | None = None,
    moment_scale: float | None = None,
    reject_sigma: float = 5.0,
) -> ProfileSolution:
    """
    Fit the profile correction of an image once (see :class:`ProfileFitter`).

    Parameters
    ----------
    image : ndarray
        ``(R, X)`` data.
    variance : ndarray
        ``(R, X)`` pixel variances.
    valid : ndarray
        ``(R, X)`` pixels to use.
    amplitudes : list of ndarray
        ``(R,)`` amplitude of each trace (signed).
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

    Returns
    -------
    ProfileSolution
        The correction.
    """
    usable = valid.copy()
    for amplitude in amplitudes:
        usable &= np.isfinite(amplitude)[:, None]
    fitter = ProfileFitter(image, variance, usable, basis, background, layout,
                           prior_scale, moment_scale)  # fmt: skip
    return fitter.fit(amplitudes, reject_sigma)
