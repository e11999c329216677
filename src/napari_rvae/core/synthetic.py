"""Synthetic data with known answers: lattices, rotated glyphs, rotated digits.

Everything here is pure numpy/scipy/scikit-image and seeded, so tests and
benchmarks can check the rVAE against ground truth.

Angle convention (used throughout napari-rvae): degrees, **counter-clockwise as
displayed**, with the image's y axis (rows) pointing down on screen. This is
the convention of :func:`skimage.transform.rotate`: a direction at angle
``theta`` has the array-coordinate step ``(dy, dx) = (-sin theta, cos theta)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

__all__ = [
    "LatticeOptions",
    "SyntheticLattice",
    "make_lattice",
    "SyntheticMovie",
    "MovieTruth",
    "make_movie",
    "write_movie_zarr",
    "make_rotated_shapes",
    "make_rotated_digits",
    "wrap_angle",
    "satellite_positions",
]


def wrap_angle(angle_deg):
    """Wrap angles in degrees into (-180, 180]."""
    a = np.mod(np.asarray(angle_deg, dtype=np.float64) + 180.0, 360.0) - 180.0
    return np.where(a == -180.0, 180.0, a)


def _direction(angle_deg):
    """Array-coordinate unit step (dy, dx) for a displayed CCW angle."""
    t = np.deg2rad(angle_deg)
    return -np.sin(t), np.cos(t)


def satellite_positions(points, angle_deg, spacing: float, options) -> np.ndarray:
    """The (N, 2) (y, x) positions of the satellites of columns at ``points`` with orientations ``angle_deg``.

    Each lies ``options.satellite_distance * spacing`` from its column along the orientation.

    Examples
    --------
    >>> satellite_positions([[10.0, 10.0]], [90.0], 12.0, LatticeOptions(satellite_distance=0.5)).round(6)
    array([[ 4., 10.]])
    """
    uy, ux = _direction(angle_deg)
    return np.asarray(points, dtype=np.float64) + options.satellite_distance * spacing * np.stack([uy, ux], axis=1)


@dataclass
class SyntheticLattice:
    """A synthetic atom-resolved image and its ground truth.

    Attributes
    ----------
    image : ndarray of float32, shape (H, W)
        The noisy image (arbitrary units, background about 0.1, atoms about 1).
    points : ndarray of float, shape (N, 2)
        True (y, x) pixel positions of the atom columns (the main atom of each motif).
    angle_deg : ndarray of float, shape (N,)
        Orientation of each atom's motif/grain, degrees CCW as displayed, in (-180, 180].
    grain : ndarray of int, shape (N,)
        Index of the grain each atom belongs to (into ``grains``).
    species : ndarray of int, shape (N,)
        0 for the main species, 1 for the second species.
    pixel_size : float
        Physical size of one pixel, in ``unit``.
    unit : str
        Physical unit of ``pixel_size``.
    grains : tuple of (y, x, angle_deg)
        The grain seeds (pixel coordinates) and orientations that made the image.
    spacing : float
        Lattice constant in pixels.
    clean : ndarray of float32, shape (H, W)
        The noise-free image.
    """

    image: np.ndarray
    points: np.ndarray
    angle_deg: np.ndarray
    grain: np.ndarray
    species: np.ndarray
    pixel_size: float
    unit: str
    grains: tuple = ()
    spacing: float = 0.0
    clean: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.points)


def _default_grains(shape):
    h, w = shape
    return (
        (0.30 * h, 0.25 * w, 0.0),
        (0.25 * h, 0.78 * w, 30.0),
        (0.78 * h, 0.50 * w, -55.0),
    )


def _lattice_vectors(kind: str):
    """Unit-cell vectors (in units of the spacing, displayed x/y-up coordinates)."""
    if kind == "square":
        return np.array([1.0, 0.0]), np.array([0.0, 1.0])
    if kind in ("hexagonal", "hex"):
        return np.array([1.0, 0.0]), np.array([0.5, np.sqrt(3.0) / 2.0])
    raise InputError(f"Unknown lattice kind {kind!r}: use 'square' or 'hexagonal'.")


def _render(shape, centers, amps, sig_major, sig_minor, angles_deg):
    """Sum of (possibly elongated) 2-D Gaussians; the major axis lies along angle_deg."""
    h, w = shape
    img = np.zeros(h * w, dtype=np.float64)
    if len(centers) == 0:
        return img.reshape(shape)
    r = int(np.ceil(4.0 * float(np.max(sig_major))))
    off = np.arange(-r, r + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    cy = np.round(centers[:, 0]).astype(int)
    cx = np.round(centers[:, 1]).astype(int)
    py = cy[:, None, None] + oy[None]
    px = cx[:, None, None] + ox[None]
    dy = py - centers[:, 0, None, None]
    dx = px - centers[:, 1, None, None]
    uy, ux = _direction(angles_deg)
    uy = np.asarray(uy)[:, None, None]
    ux = np.asarray(ux)[:, None, None]
    along = dy * uy + dx * ux
    across = -dy * ux + dx * uy
    val = amps[:, None, None] * np.exp(
        -0.5 * ((along / sig_major[:, None, None]) ** 2 + (across / sig_minor[:, None, None]) ** 2)
    )
    ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
    np.add.at(img, (py[ok] * w + px[ok]), val[ok])
    return img.reshape(shape)


def _bend(points, angle, shape, bend_deg: float):
    """Bend columns about a centre of curvature above the image (see ``make_lattice``'s ``bend_deg``).

    A column at ``u`` pixels right of the centre and ``v`` above it goes to arc
    angle ``alpha = u / R`` on the circle of radius ``R - v`` about the centre
    of curvature ``R`` above the image centre: the arc's tangent, and with it the
    lattice, is turned counter-clockwise by ``alpha``.
    """
    h, w = shape
    radius = w / np.deg2rad(bend_deg)
    u = points[:, 1] - (w - 1) / 2.0
    v = (h - 1) / 2.0 - points[:, 0]
    alpha = u / radius
    x = (radius - v) * np.sin(alpha)
    y = radius - (radius - v) * np.cos(alpha)
    bent = np.stack([(h - 1) / 2.0 - y, (w - 1) / 2.0 + x], axis=1)
    return bent, angle + np.rad2deg(alpha)


@dataclass(frozen=True)
class LatticeOptions:
    """How :func:`make_lattice` draws the lattice, its motif, its second species and its noise.

    Every field is a keyword of :func:`make_lattice`.

    Parameters
    ----------
    lattice : {"square", "hexagonal"}
    sigma : float
        Gaussian width of the main atom, pixels.
    satellite_distance, satellite_amplitude : float
        Position (in lattice constants) and relative brightness of the satellite.
    second_species : {"sublattice", "region", "random", "none"}
        Where the second species sits: a checkerboard sublattice, a disk in the
        middle of the image, a random ``second_fraction`` of the sites, nowhere.
    second_fraction : float
        Share of the sites that hold the second species with ``"random"``.
    second_amplitude, second_elongation : float
        Relative brightness and major/minor width ratio of the second species.
    region_radius : float, optional
        Radius of the second-species disk (``"region"``), default a fifth of the
        smaller image side.
    bend_deg : float
        Bend the lattice about a centre of curvature above the image so that
        its orientation rises linearly (counter-clockwise) by this many
        degrees from the left edge to the right edge (0 at the centre column);
        ``angle_deg`` holds each column's local orientation. Bending strains the
        lattice by up to ``(H / 2) / R`` across its height (``R = W / bend``
        in radians: 4.4 % for a 256 x 128 image bent by 10 degrees).
    jitter : float
        Standard deviation of random displacements of the columns, pixels.
    background : float
        Constant background level.
    dose : float or None
        Counts per unit intensity for Poisson noise; None for no shot noise.
    noise_sigma : float
        Standard deviation of additive Gaussian noise (after the Poisson noise
        is scaled back to intensity units).
    pixel_size : float
        Calibration stored in the result (``unit`` per pixel).
    unit : str
    """

    lattice: str = "square"
    sigma: float = 1.8
    satellite_distance: float = 0.33
    satellite_amplitude: float = 0.45
    second_species: str | None = "sublattice"
    second_fraction: float = 0.15
    second_amplitude: float = 1.5
    second_elongation: float = 1.6
    region_radius: float | None = None
    bend_deg: float = 0.0
    jitter: float = 0.3
    background: float = 0.1
    dose: float | None = 200.0
    noise_sigma: float = 0.03
    pixel_size: float = 0.25
    unit: str = "Å"


def make_lattice(
    shape=(512, 512), spacing: float = 12.0, grains=None, *, seed: int | None = 0, **options
) -> SyntheticLattice:
    """Make a synthetic atom-resolved polycrystal with known atom orientations.

    Each lattice site holds a *motif* that is not rotationally symmetric: the
    main atom column (a Gaussian) plus a weaker "satellite" column at
    ``satellite_distance * spacing`` along the grain orientation (a dumbbell).
    Rotating a grain therefore rotates the content of the patch cut around each
    atom, which is what the rVAE must recover. The space is split into Voronoi
    grains around the seeds in ``grains``, each with its own orientation. A
    second species, brighter and elongated along the grain orientation, sits
    where ``second_species`` says.

    Parameters
    ----------
    shape : (int, int)
        Image shape (H, W) in pixels.
    spacing : float
        Lattice constant in pixels.
    grains : sequence of (y, x, angle_deg), optional
        Grain seeds in pixel coordinates and their orientations (degrees CCW as
        displayed). By default three grains at 0°, 30° and -55°.
    seed : int or None
    **options
        Any field of :class:`LatticeOptions`, by keyword: ``lattice``,
        ``sigma``, ``satellite_distance``, ``satellite_amplitude``,
        ``second_species``, ``second_fraction``, ``second_amplitude``,
        ``second_elongation``, ``region_radius``, ``bend_deg``, ``jitter``,
        ``background``, ``dose``, ``noise_sigma``, ``pixel_size``, ``unit``.

    Returns
    -------
    SyntheticLattice

    Examples
    --------
    >>> lat = make_lattice((128, 128), grains=((64, 64, 20.0),), seed=1)
    >>> lat.image.shape, lat.image.dtype
    ((128, 128), dtype('float32'))
    >>> bool(np.allclose(lat.angle_deg, 20.0))
    True
    """
    opts = LatticeOptions(**options)
    shape = _check_lattice_shape(shape)
    _check_lattice_options(opts, spacing)
    grains = _check_grains(grains, shape)
    rng = np.random.default_rng(seed)
    points, angle, grain, parity = _grain_sites(shape, spacing, grains, opts.lattice)
    if len(grains) > 1 and len(points):
        keep = _uncrowded_columns(points, grain, spacing)
        points, angle, grain, parity = points[keep], angle[keep], grain[keep], parity[keep]
    if opts.bend_deg:
        points, angle = _bend(points, angle, shape, opts.bend_deg)
    points = points + rng.normal(0.0, opts.jitter, size=points.shape) if opts.jitter > 0 else points
    species = _second_species(opts, points, parity, shape, rng)
    clean = opts.background + _render_motifs(shape, points, angle, species, spacing, opts)
    noisy = _add_noise(clean, opts, rng)
    return _lattice_result(noisy, clean, (points, angle, grain, species), opts, spacing, grains)


def _lattice_result(noisy, clean, sites, opts: LatticeOptions, spacing: float, grains) -> SyntheticLattice:
    """The :class:`SyntheticLattice` of rendered images and their ``(points, angle, grain, species)``:
    the atoms inside the image, in raster order."""
    points, angle, grain, species = sites
    inside = _in_raster_order(points, noisy.shape)
    return SyntheticLattice(
        image=np.asarray(noisy, dtype=np.float32),
        points=points[inside],
        angle_deg=wrap_angle(angle[inside]),
        grain=grain[inside],
        species=species[inside],
        pixel_size=float(opts.pixel_size),
        unit=str(opts.unit),
        grains=grains,
        spacing=float(spacing),
        clean=np.asarray(clean, dtype=np.float32),
    )


def _check_lattice_shape(shape) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"The lattice shape must be two integers (height, width), not {shape!r}.") from None
    if h < 8 or w < 8:
        raise InputError(f"The lattice image must be at least 8 x 8 pixels, not {h} x {w}.")
    return h, w


def _check_lattice_options(opts: LatticeOptions, spacing: float) -> None:
    if not spacing > 2 * opts.sigma:
        raise InputError(
            f"The lattice spacing ({spacing} px) must be larger than twice the atom width ({opts.sigma} px)."
        )
    if opts.second_species not in ("sublattice", "region", "random", "none", None):
        raise InputError(
            f"second_species must be 'sublattice', 'region', 'random' or 'none', not {opts.second_species!r}."
        )
    if opts.second_species == "random" and not 0.0 <= opts.second_fraction <= 1.0:
        raise InputError(f"second_fraction must lie in [0, 1], not {opts.second_fraction!r}.")


def _check_grains(grains, shape) -> tuple:
    """The grains as ``(y, x, angle_deg)`` float triples; the default three where None."""
    if grains is None:
        grains = _default_grains(shape)
    grains = tuple((float(g[0]), float(g[1]), float(g[2])) for g in grains)
    if not grains:
        raise InputError("At least one grain (y, x, angle_deg) is needed.")
    return grains


def _grain_sites(shape, spacing: float, grains: tuple, lattice: str, origins=None):
    """Every grain's lattice sites inside its Voronoi cell (and a spacing beyond the image).

    ``origins``: each grain's lattice origin ``(y, x)``, by default its seed
    (a movie moves a seed, and with it the boundary, over a lattice that stays).
    Returns the sites' ``(y, x)``, their grain's angle, their grain index and
    their checkerboard parity (which sublattice they are on).
    """
    h, w = shape
    seeds = np.array([[g[0], g[1]] for g in grains])
    origins = seeds if origins is None else np.asarray(origins, dtype=float)
    a1, a2 = _lattice_vectors(lattice)
    diag = float(np.hypot(h, w))
    nmax = int(np.ceil(diag / (spacing * min(1.0, abs(a2[1]))))) + 2
    ii, jj = np.meshgrid(np.arange(-nmax, nmax + 1), np.arange(-nmax, nmax + 1), indexing="ij")
    ii = ii.ravel()
    jj = jj.ravel()

    pts, ang, grn, par = [], [], [], []
    for k, (_, _, gang) in enumerate(grains):
        gy, gx = origins[k]
        t = np.deg2rad(gang)
        c, s = np.cos(t), np.sin(t)
        # displayed coordinates (x right, y up), rotated CCW, then to array coords (y down)
        u = ii[:, None] * a1[None] + jj[:, None] * a2[None]
        xd = (c * u[:, 0] - s * u[:, 1]) * spacing
        yd = (s * u[:, 0] + c * u[:, 1]) * spacing
        py = gy - yd
        px = gx + xd
        inside = (py >= -spacing) & (py < h + spacing) & (px >= -spacing) & (px < w + spacing)
        py, px = py[inside], px[inside]
        parity = ((ii + jj)[inside]) % 2
        d2 = (py[:, None] - seeds[None, :, 0]) ** 2 + (px[:, None] - seeds[None, :, 1]) ** 2
        mine = np.argmin(d2, axis=1) == k
        pts.append(np.stack([py[mine], px[mine]], axis=1))
        ang.append(np.full(mine.sum(), gang))
        grn.append(np.full(mine.sum(), k))
        par.append(parity[mine])
    return np.concatenate(pts), np.concatenate(ang), np.concatenate(grn).astype(int), np.concatenate(par)


def _uncrowded_columns(points: np.ndarray, grain: np.ndarray, spacing: float) -> np.ndarray:
    """Mask of the columns to keep: at grain boundaries, drop those that crowd a column of another grain."""
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    pairs = tree.query_pairs(0.7 * spacing, output_type="ndarray")
    keep = np.ones(len(points), dtype=bool)
    for p, q in pairs:
        if keep[p] and keep[q] and grain[p] != grain[q]:
            keep[q] = False
    return keep


def _second_species(opts: LatticeOptions, points, parity, shape, rng) -> np.ndarray:
    """1 where a column is of the second species, else 0."""
    if opts.second_species == "sublattice":
        return parity.astype(int)
    if opts.second_species == "region":
        h, w = shape
        rad = opts.region_radius if opts.region_radius is not None else min(h, w) / 5.0
        return (np.hypot(points[:, 0] - h / 2.0, points[:, 1] - w / 2.0) < rad).astype(int)
    if opts.second_species == "random":
        return (rng.random(len(points)) < opts.second_fraction).astype(int)
    return np.zeros(len(points), dtype=int)


def _render_motifs(shape, points, angle, species, spacing: float, opts: LatticeOptions) -> np.ndarray:
    """The noise-free motifs without background.

    Main column (species 1 brighter and elongated along the orientation) plus a
    satellite at ``satellite_distance * spacing`` along the orientation.
    """
    n = len(points)
    sigma = opts.sigma
    amps = np.where(species == 1, opts.second_amplitude, 1.0)
    sig_major = np.where(species == 1, sigma * opts.second_elongation, sigma)
    sig_minor = np.full(n, sigma)
    sat = satellite_positions(points, angle, spacing, opts)
    centers = np.concatenate([points, sat])
    all_amps = np.concatenate([amps, np.full(n, opts.satellite_amplitude)])
    all_major = np.concatenate([sig_major, np.full(n, 0.8 * sigma)])
    all_minor = np.concatenate([sig_minor, np.full(n, 0.8 * sigma)])
    all_ang = np.concatenate([angle, angle])
    return _render(shape, centers, all_amps, all_major, all_minor, all_ang)


def _add_noise(clean: np.ndarray, opts: LatticeOptions, rng) -> np.ndarray:
    """Poisson shot noise at ``dose``, then additive Gaussian noise of ``noise_sigma``."""
    noisy = clean
    if opts.dose is not None and opts.dose > 0:
        noisy = rng.poisson(np.clip(clean, 0, None) * opts.dose) / float(opts.dose)
    if opts.noise_sigma and opts.noise_sigma > 0:
        noisy = noisy + rng.normal(0.0, opts.noise_sigma, size=noisy.shape)
    return noisy


def _in_raster_order(points: np.ndarray, shape) -> np.ndarray:
    """Indices of the columns within the image's pixel centres, sorted by y, then x."""
    h, w = shape
    inimg = (points[:, 0] >= 0) & (points[:, 0] <= h - 1) & (points[:, 1] >= 0) & (points[:, 1] <= w - 1)
    order = np.lexsort((points[inimg, 1], points[inimg, 0]))
    return np.flatnonzero(inimg)[order]


# --- movies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MovieTruth:
    """The ground truth of one movie frame (no image: cheap to make).

    Attributes
    ----------
    t : int
        Frame index.
    points : ndarray of float, shape (N, 2)
        True (y, x) pixel positions of the atom columns inside the frame, in raster order.
    angle_deg : ndarray of float, shape (N,)
        Orientation of each atom's grain at this frame, degrees CCW as displayed, in (-180, 180].
    grain : ndarray of int, shape (N,)
        Index of each atom's grain.
    species : ndarray of int, shape (N,)
    """

    t: int
    points: np.ndarray
    angle_deg: np.ndarray
    grain: np.ndarray
    species: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


@dataclass(frozen=True)
class SyntheticMovie:
    """A synthetic in-situ movie made frame by frame on demand: nothing but its recipe sits in memory.

    Grain ``k`` keeps its lattice origin at its first seed and turns about it
    at ``rate`` degrees per frame; the Voronoi seed of grain ``moving_grain``
    moves by ``boundary_velocity`` pixels per frame, so its boundaries move over
    lattices that stay. Made by :func:`make_movie`; read its frames with
    :meth:`frame` (image and truth) or :meth:`truth` (truth only), or iterate.
    """

    n_frames: int
    shape: tuple[int, int]
    spacing: float
    grains: tuple  # (y, x, angle0_deg, rate_deg_per_frame) per grain
    boundary_velocity: tuple[float, float]
    moving_grain: int
    seed: int
    options: LatticeOptions
    distinct: int | None = None
    _clean: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return self.n_frames

    def __iter__(self):
        return (self.frame(t) for t in range(self.n_frames))

    def grain_angles(self, t) -> np.ndarray:
        """The true orientation of every grain at frame ``t`` (degrees, wrapped into (-180, 180])."""
        t = self._base(t)
        return wrap_angle([g[2] + g[3] * t for g in self.grains])

    def seeds(self, t) -> np.ndarray:
        """The (G, 2) Voronoi seeds (y, x) at frame ``t``: only the moving grain's differs from frame 0."""
        t = self._base(t)
        seeds = np.array([[g[0], g[1]] for g in self.grains], dtype=float)
        seeds[self.moving_grain] += t * np.asarray(self.boundary_velocity, dtype=float)
        return seeds

    def truth(self, t: int) -> MovieTruth:
        """The atoms of frame ``t`` (positions, orientations, grains) without drawing the image."""
        points, angle, grain, species = self._sites(t)
        inside = _in_raster_order(points, self.shape)
        return MovieTruth(int(t), points[inside], wrap_angle(angle[inside]), grain[inside], species[inside])

    def frame(self, t: int) -> SyntheticLattice:
        """Frame ``t``: the noisy image and its truth (``grains`` holds the (y, x, angle) of this frame)."""
        points, angle, grain, species = self._sites(t)
        clean = self._clean_image(t, points, angle, species)
        noisy = _add_noise(clean, self.options, np.random.default_rng([self.seed, int(t), 1]))
        grains = tuple((float(y), float(x), float(a)) for (y, x), a in zip(self.seeds(t), self.grain_angles(t)))
        return _lattice_result(noisy, clean, (points, angle, grain, species), self.options, self.spacing, grains)

    def _base(self, t) -> int:
        """The frame whose atoms frame ``t`` shows: ``t`` itself, or ``t % distinct`` for a repeating movie."""
        t = int(t)
        if not 0 <= t < self.n_frames:
            raise InputError(f"Frame {t} is outside the movie's {self.n_frames} frames.")
        return t if self.distinct is None else t % self.distinct

    def _sites(self, t):
        base = self._base(t)
        grains = tuple((y, x, a) for (y, x), a in zip(self.seeds(base), self.grain_angles(base)))
        origins = [(g[0], g[1]) for g in self.grains]
        opts = self.options
        points, angle, grain, parity = _grain_sites(self.shape, self.spacing, grains, opts.lattice, origins)
        if len(grains) > 1 and len(points):
            keep = _uncrowded_columns(points, grain, self.spacing)
            points, angle, grain, parity = points[keep], angle[keep], grain[keep], parity[keep]
        rng = np.random.default_rng([self.seed, base])
        if opts.jitter > 0:
            points = points + rng.normal(0.0, opts.jitter, size=points.shape)
        return points, angle, grain, _second_species(opts, points, parity, self.shape, rng)

    def _clean_image(self, t, points, angle, species) -> np.ndarray:
        """The noise-free frame; a repeating movie keeps its few distinct ones."""
        base = self._base(t)
        if base in self._clean:
            return self._clean[base]
        clean = self.options.background + _render_split(self.shape, points, angle, species, self.spacing, self.options)
        if self.distinct is not None:
            self._clean[base] = clean
        return clean


def _render_split(shape, points, angle, species, spacing: float, opts: LatticeOptions) -> np.ndarray:
    """:func:`_render_motifs` with columns and satellites drawn apart, each cut at 4 of its own widths.

    About three times faster than one call (the satellites' Gaussians are
    smaller); it differs from it only in the far tails, which is why
    :func:`make_lattice` keeps its own.
    """
    n = len(points)
    sigma = opts.sigma
    amps = np.where(species == 1, opts.second_amplitude, 1.0)
    sig_major = np.where(species == 1, sigma * opts.second_elongation, sigma)
    image = _render(shape, points, amps, sig_major, np.full(n, sigma), angle)
    if opts.satellite_amplitude:
        sat = satellite_positions(points, angle, spacing, opts)
        small = np.full(n, 0.8 * sigma)
        image += _render(shape, sat, np.full(n, opts.satellite_amplitude), small, small, angle)
    return image


def _default_movie_grains(shape) -> tuple:
    h, w = shape
    return (
        (0.30 * h, 0.25 * w, 0.0, 0.05),
        (0.25 * h, 0.78 * w, 30.0, -0.05),
        (0.78 * h, 0.50 * w, -55.0, 0.1),
    )


def _check_movie_grains(grains, shape, moving_grain) -> tuple:
    if grains is None:
        grains = _default_movie_grains(shape)
    try:
        grains = tuple(tuple(float(v) for v in g) for g in grains)
    except (TypeError, ValueError):
        raise InputError("Movie grains must be (y, x, angle0_deg, rate_deg_per_frame) numbers.") from None
    if not grains or any(len(g) != 4 for g in grains):
        raise InputError("A movie needs at least one grain, each (y, x, angle0_deg, rate_deg_per_frame).")
    if not 0 <= int(moving_grain) < len(grains):
        raise InputError(f"moving_grain must index one of the {len(grains)} grains, not {moving_grain}.")
    return grains


def make_movie(
    n_frames: int,
    shape=(1024, 1024),
    spacing: float = 12.0,
    grains=None,
    *,
    boundary_velocity=(0.0, 0.5),
    moving_grain: int = 0,
    distinct: int | None = None,
    seed: int = 0,
    **options,
) -> SyntheticMovie:
    """Make a synthetic in-situ movie of a polycrystal whose grains turn and whose boundary moves.

    Every frame is a :func:`make_lattice`-style polycrystal (same motif,
    options and noise) made on demand, so a long movie of large frames never
    sits in memory. Grain ``k`` turns at its own rate about its first seed;
    the seed of grain ``moving_grain`` moves at ``boundary_velocity`` and the
    Voronoi boundaries with it, over lattices that stay where they are. Jitter
    is drawn once per frame, noise afresh for every frame, both from ``seed``
    and the frame index: any frame can be made alone, reproducibly.

    Parameters
    ----------
    n_frames : int
    shape : (int, int)
        Frame shape (H, W) in pixels.
    spacing : float
        Lattice constant in pixels.
    grains : sequence of (y, x, angle0_deg, rate_deg_per_frame), optional
        Grain seeds at frame 0, their orientation at frame 0 (degrees CCW as
        displayed) and how fast they turn. Default: three grains at 0, 30 and
        -55 degrees turning by 0.05, -0.05 and 0.1 degrees per frame.
    boundary_velocity : (float, float)
        (vy, vx) pixels per frame of the moving grain's seed.
    moving_grain : int
        Index of the grain whose seed moves.
    distinct : int, optional
        Only this many distinct frames: frame ``t`` shows the atoms of frame
        ``t % distinct`` under fresh noise (cheap long movies for memory tests).
    seed : int
    **options
        Any field of :class:`LatticeOptions`.

    Returns
    -------
    SyntheticMovie

    Examples
    --------
    >>> movie = make_movie(3, (64, 64), grains=[(32, 32, 10.0, 2.0)], seed=1)
    >>> movie.frame(2).image.shape, float(movie.grain_angles(2)[0])
    ((64, 64), 14.0)
    """
    shape = _check_lattice_shape(shape)
    opts = LatticeOptions(**options)
    _check_lattice_options(opts, spacing)
    if int(n_frames) < 1:
        raise InputError(f"A movie needs at least one frame, not {n_frames}.")
    if distinct is not None and int(distinct) < 1:
        raise InputError(f"distinct must be at least 1, not {distinct}.")
    grains = _check_movie_grains(grains, shape, moving_grain)
    velocity = tuple(float(v) for v in boundary_velocity)
    return SyntheticMovie(
        int(n_frames),
        shape,
        float(spacing),
        grains,
        velocity,
        int(moving_grain),
        int(seed),
        opts,
        None if distinct is None else int(distinct),
    )


def write_movie_zarr(path, movie: SyntheticMovie, *, overwrite: bool = False, compressed: bool = False, on_frame=None):
    """Write a movie to a Zarr v3 array of shape (T, H, W), float32, one frame per chunk, frame by frame.

    Only one frame is in memory at a time. The array's attributes hold the
    calibration (``pixel_size``, ``unit``) and the movie's recipe.

    Parameters
    ----------
    path : str or Path
        The Zarr store (a folder) to make; the array is its root.
    movie : SyntheticMovie
    overwrite : bool
        Replace an existing store at ``path`` (else an :class:`InputError`).
    compressed : bool
        Zstandard-compress the chunks (default: raw, so the file is as large
        on disk as in memory and reading costs no decompression).
    on_frame : callable, optional
        Called with each frame index once it is written.

    Returns
    -------
    zarr.Array
    """
    from pathlib import Path

    import zarr

    if Path(path).exists() and not overwrite:
        raise InputError(f"{path} exists already: remove it or pass overwrite=True.")
    h, w = movie.shape
    array = zarr.create_array(
        store=str(path),
        shape=(movie.n_frames, h, w),
        chunks=(1, h, w),
        dtype="float32",
        compressors="auto" if compressed else None,
        dimension_names=("t", "y", "x"),
        overwrite=True,
    )
    array.attrs.update(_movie_attrs(movie))
    for t in range(movie.n_frames):
        array[t] = movie.frame(t).image
        if on_frame is not None:
            on_frame(t)
    return array


def _movie_attrs(movie: SyntheticMovie) -> dict:
    return {
        "pixel_size": float(movie.options.pixel_size),
        "unit": str(movie.options.unit),
        "synthetic_movie": {
            "n_frames": movie.n_frames,
            "shape": list(movie.shape),
            "spacing": movie.spacing,
            "grains": [list(g) for g in movie.grains],
            "boundary_velocity": list(movie.boundary_velocity),
            "moving_grain": movie.moving_grain,
            "distinct": movie.distinct,
            "seed": movie.seed,
            "options": {k: v for k, v in movie.options.__dict__.items()},
        },
    }


def _glyph(size: int) -> np.ndarray:
    """An asymmetric "F"-like glyph centred in a size x size frame, values in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    g = np.zeros((size, size), dtype=np.float64)
    s = size / 28.0
    c = size / 2.0

    def box(y0, y1, x0, x1):
        g[int(round(c + y0 * s)) : int(round(c + y1 * s)), int(round(c + x0 * s)) : int(round(c + x1 * s))] = 1.0

    box(-8, 8, -5, -2)  # stem
    box(-8, -5, -2, 6)  # top bar (long)
    box(-1, 2, -2, 3)  # middle bar (short)
    g = gaussian_filter(g, 0.5 * s)
    return g / g.max()


def _check_rot_args(n, size, max_angle):
    if int(n) < 1:
        raise InputError(f"The number of patches must be at least 1, not {n}.")
    if int(size) < 8:
        raise InputError(f"The patch size must be at least 8 pixels, not {size}.")
    if not 0 <= float(max_angle) <= 180:
        raise InputError(f"max_angle must be between 0 and 180 degrees, not {max_angle}.")


def _rotate_all(images: np.ndarray, angles: np.ndarray) -> np.ndarray:
    from skimage.transform import rotate

    out = np.empty(images.shape, dtype=np.float32)
    for i, (im, a) in enumerate(zip(images, angles)):
        out[i] = rotate(
            np.array(im, dtype=np.float64), float(a), order=1, mode="constant", cval=0.0, preserve_range=True
        )
    return np.clip(out, 0.0, 1.0)


def make_rotated_shapes(n: int = 500, size: int = 28, max_angle: float = 180, seed: int | None = 0):
    """One asymmetric glyph (an "F") rotated by known angles.

    Returns
    -------
    patches : ndarray of float32, shape (n, size, size), values in [0, 1]
    angles_deg : ndarray of float, shape (n,)
        Rotation of each patch, uniform in [-max_angle, max_angle], degrees
        counter-clockwise as displayed (:func:`skimage.transform.rotate`).

    Examples
    --------
    >>> p, a = make_rotated_shapes(4, size=16)
    >>> p.shape, p.dtype, a.shape
    ((4, 16, 16), dtype('float32'), (4,))
    """
    _check_rot_args(n, size, max_angle)
    n, size = int(n), int(size)
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-float(max_angle), float(max_angle), size=n)
    base = _glyph(size)
    return _rotate_all(np.broadcast_to(base, (n, size, size)), angles), angles


def make_rotated_digits(
    n: int = 2000, size: int = 28, max_angle: float = 180, seed: int | None = 0, *, return_source: bool = False
):
    """Handwritten digits (scikit-learn's bundled 8 x 8 set) rotated by known angles.

    The 8 x 8 digits are upscaled to about ``size / sqrt(2)`` and padded to
    ``size x size`` (so rotation does not cut corners), then rotated uniformly in
    [-max_angle, max_angle] degrees, counter-clockwise as displayed.

    Returns
    -------
    patches : ndarray of float32, shape (n, size, size), values in [0, 1]
    angles_deg : ndarray of float, shape (n,)
    digits : ndarray of int, shape (n,)
        The digit (0-9) in each patch.
    source : ndarray of int, shape (n,)
        Only with ``return_source``: the index of the handwritten image each
        patch was made from. Above 1,797 patches images repeat (at other
        angles), so a fair train/test split keeps each source on one side.

    Raises
    ------
    ImportError
        (an :class:`InputError` too) when scikit-learn is not installed.
    """
    _check_rot_args(n, size, max_angle)
    n, size = int(n), int(size)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _MissingExtra(
            "The rotated-digits data set needs scikit-learn: pip install scikit-learn "
            "(or pip install 'napari-rvae[testing]')."
        ) from None
    from skimage.transform import resize

    ds = load_digits()
    imgs = ds.images / 16.0
    labels = ds.target
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(imgs), size=n, replace=n > len(imgs))
    inner = max(8, int(np.floor(size / np.sqrt(2.0))) - 1)  # fits any rotation
    lo = (size - inner) // 2
    small = np.zeros((len(imgs), size, size), dtype=np.float64)
    used = np.unique(idx)
    for i in used:
        small[i, lo : lo + inner, lo : lo + inner] = resize(imgs[i], (inner, inner), order=1, anti_aliasing=False)
    angles = rng.uniform(-float(max_angle), float(max_angle), size=n)
    patches = _rotate_all(small[idx], angles)
    if return_source:
        return patches, angles, labels[idx].astype(int), idx
    return patches, angles, labels[idx].astype(int)


class _MissingExtra(InputError, ImportError):
    """An optional dependency is missing (both an InputError and an ImportError)."""
