"""2-D toy densities generated in code from fixed seeds: no files, no download.

`two_moons`, `circles`, `eight_gaussians`, `checkerboard`, `pinwheel`,
`spirals`: each split is an independent draw from its own seed sequence, with
a label per point (the mixture component). `eight_gaussians` and
`checkerboard` know their true differential entropy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from tfflow.data.core import SPLITS, Batching, DatasetInfo, Source, check_split
from tfflow.data.names import TOY_DATASETS
from tfflow.data.pipelines import continuous_batches

__all__ = ["SPLIT_SIZES", "TOY_DATASETS", "ToySource"]

# Examples per split unless the caller says otherwise.
SPLIT_SIZES: Mapping[str, int] = {"train": 20_000, "validation": 2_000, "test": 5_000}


class ToySource(Source):
    """A toy density (`TOY_DATASETS`): points [2] and their component labels.

    Args:
      name: One of `TOY_DATASETS`.
      where: The public function resolving it (starts error messages).
      split_sizes: Examples per split where they differ from `SPLIT_SIZES`.
    """

    def __init__(self, name: str, *, where: str,
                 split_sizes: Mapping[str, int | None] | None = None) -> None:
        super().__init__(name, where=where)
        self._toy = _TOYS[name]
        self._sizes = dict(SPLIT_SIZES)
        self._sizes.update({split: size for split, size in (split_sizes or {}).items()
                            if size is not None})

    def info(self) -> DatasetInfo:
        toy = self._toy
        entropy = toy.true_entropy() if toy.true_entropy is not None else None
        return DatasetInfo(name=self.name, kind="toy2d", event_shape=(2,), num_levels=None,
                           num_classes=toy.num_classes, true_entropy=entropy)

    def read(self, split: str, batching: Batching) -> tf.data.Dataset:
        points, labels = self._split(split)
        return continuous_batches(points.astype(np.float32), labels, batching)

    def array(self, split: str) -> np.ndarray:
        """The split's points, float64 [N, 2]."""
        return self._split(split)[0]

    def _split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        check_split(self._where, self.name, split)
        # Distinct seed sequences per split: the splits are independent draws.
        rng = np.random.default_rng([self._toy.seed, SPLITS.index(split)])
        return self._toy.sample(rng, self._sizes[split])


@dataclasses.dataclass(frozen=True)
class _Toy:
    sample: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    num_classes: int
    seed: int
    true_entropy: Callable[[], float] | None = None


def _sample_two_moons(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles of radius 2, isotropic Gaussian noise of std 0.2.

    Upper moon: centre (-1, -0.5), angles [0, pi]; lower moon: centre (1, 0.5),
    angles [pi, 2 pi]; equal weights (label = moon).
    """
    labels = rng.integers(0, 2, size=n)
    angle = rng.uniform(0.0, math.pi, size=n) + math.pi * labels
    centre = np.where(labels[:, None] == 0, [-1.0, -0.5], [1.0, 0.5])
    arc = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centre + arc + 0.2 * rng.standard_normal((n, 2)), labels


def _sample_circles(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles of radius 1.5 and 3 about the origin, equal weights.

    Uniform angle, isotropic Gaussian noise of std 0.15; label 0 = inner circle.
    """
    labels = rng.integers(0, 2, size=n)
    radius = np.where(labels == 0, 1.5, 3.0)
    angle = rng.uniform(0.0, 2.0 * math.pi, size=n)
    ring = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return ring + 0.15 * rng.standard_normal((n, 2)), labels


_EIGHT_GAUSSIANS_RADIUS = 2.0 * math.sqrt(2.0)
_EIGHT_GAUSSIANS_STD = math.sqrt(2.0) / 4.0


def _sample_eight_gaussians(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal mixture of 8 isotropic Gaussians with std sqrt(2)/4 ~ 0.354.

    Means on the circle of radius 2 sqrt(2) ~ 2.83 at angles k pi / 4,
    k = 0..7 (label = k). Neighbouring means are 6.1 std apart.
    """
    labels = rng.integers(0, 8, size=n)
    angle = labels * (math.pi / 4.0)
    centre = _EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centre + _EIGHT_GAUSSIANS_STD * rng.standard_normal((n, 2)), labels


def _sample_checkerboard(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform on the 8 dark squares of a 4x4 board of side-2 squares over [-4, 4]^2.

    Square (i, j), i, j in 0..3, covers [-4 + 2i, -2 + 2i] x [-4 + 2j, -2 + 2j]
    and is dark when i + j is even. Support area 32, entropy log 32.
    Label = index of the square, 0..7.
    """
    labels = rng.integers(0, 8, size=n)
    column = labels % 4
    row = 2 * (labels // 4) + column % 2  # the dark square of that column
    corner = np.stack([-4.0 + 2.0 * column, -4.0 + 2.0 * row], axis=1)
    return corner + rng.uniform(0.0, 2.0, size=(n, 2)), labels


def _sample_pinwheel(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Five curved arms, equal weights (label = arm).

    Per point: radial r ~ N(1, 0.3^2), tangential t ~ N(0, 0.1^2); the point
    (r, t) is rotated by 2 pi k / 5 + 0.25 exp(r) and scaled by 2.
    """
    labels = rng.integers(0, 5, size=n)
    radial = 1.0 + 0.3 * rng.standard_normal(n)
    tangential = 0.1 * rng.standard_normal(n)
    angle = 2.0 * math.pi * labels / 5.0 + 0.25 * np.exp(radial)
    cos, sin = np.cos(angle), np.sin(angle)
    points = np.stack([cos * radial - sin * tangential, sin * radial + cos * tangential], axis=1)
    return 2.0 * points, labels


def _sample_spirals(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved Archimedean spirals, point-symmetric about the origin.

    Arm 0: (t / 3) (-cos t, sin t) with t = 3 pi sqrt(u), u ~ U[0, 1) (uniform
    in area, up to radius pi); arm 1 is its negative (label = arm). Isotropic
    Gaussian noise of std 0.1.
    """
    labels = rng.integers(0, 2, size=n)
    turn = 3.0 * math.pi * np.sqrt(rng.uniform(size=n))
    arm = (turn / 3.0)[:, None] * np.stack([-np.cos(turn), np.sin(turn)], axis=1)
    sign = np.where(labels == 0, 1.0, -1.0)[:, None]
    return sign * arm + 0.1 * rng.standard_normal((n, 2)), labels


@functools.cache
def _eight_gaussians_entropy() -> float:
    return _circular_mixture_entropy(8, _EIGHT_GAUSSIANS_RADIUS, _EIGHT_GAUSSIANS_STD)


def _circular_mixture_entropy(num_components: int, radius: float, std: float) -> float:
    """Differential entropy (nats) of an equal mixture of isotropic Gaussians on a circle.

    Deterministic quadrature, not Monte Carlo: the density is symmetric under
    the dihedral group of order 2K, so -p log p is integrated over the wedge
    0 <= angle <= pi/K in polar coordinates (composite 16-point Gauss-Legendre
    in r on panels of std/2 out to radius + 14 std, 32-point in angle) and
    multiplied by 2K. For the eight_gaussians parameters the result agrees to
    1e-11 with grids 4x coarser and 2x finer per axis. It is 0.0063 nats
    below log 8 + entropy of one component: the components overlap slightly.
    """
    r_max = radius + 14.0 * std
    num_panels = int(math.ceil(r_max / (0.5 * std)))
    nodes, weights = np.polynomial.legendre.leggauss(16)
    edges = np.linspace(0.0, r_max, num_panels + 1)
    half_width, middle = 0.5 * np.diff(edges)[:, None], 0.5 * (edges[1:] + edges[:-1])[:, None]
    r, r_weights = (middle + half_width * nodes).ravel(), (half_width * weights).ravel()
    wedge = math.pi / num_components
    angle_nodes, angle_weights = np.polynomial.legendre.leggauss(32)
    theta, theta_weights = 0.5 * wedge * (angle_nodes + 1.0), 0.5 * wedge * angle_weights

    rr, tt = np.meshgrid(r, theta, indexing="ij")
    centre_angles = 2.0 * math.pi * np.arange(num_components) / num_components
    sq_dist = ((rr * np.cos(tt))[..., None] - radius * np.cos(centre_angles)) ** 2 + (
        (rr * np.sin(tt))[..., None] - radius * np.sin(centre_angles)) ** 2
    log_components = -sq_dist / (2.0 * std**2) - math.log(2.0 * math.pi * std**2 * num_components)
    peak = log_components.max(axis=-1)
    log_p = peak + np.log(np.exp(log_components - peak[..., None]).sum(axis=-1))
    integrand = -np.exp(log_p) * log_p * rr  # r dr dtheta is the area element
    return float(2 * num_components * np.einsum("i,j,ij->", r_weights, theta_weights, integrand))


_TOYS: dict[str, _Toy] = {
    "two_moons": _Toy(_sample_two_moons, num_classes=2, seed=101),
    "circles": _Toy(_sample_circles, num_classes=2, seed=102),
    "eight_gaussians": _Toy(_sample_eight_gaussians, num_classes=8, seed=103,
                            true_entropy=_eight_gaussians_entropy),
    "checkerboard": _Toy(_sample_checkerboard, num_classes=8, seed=104,
                         true_entropy=lambda: math.log(32.0)),
    "pinwheel": _Toy(_sample_pinwheel, num_classes=5, seed=105),
    "spirals": _Toy(_sample_spirals, num_classes=2, seed=106),
}

if tuple(_TOYS) != TOY_DATASETS:  # names.py lists them for code that must not import TF
    raise ImportError(f"tfflow.data.toy: the densities {tuple(_TOYS)} differ from "
                      f"tfflow.data.names.TOY_DATASETS {TOY_DATASETS}.")
