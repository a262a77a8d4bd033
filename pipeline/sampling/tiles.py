"""Tile layouts over a latent canvas larger than the prior's training size.

Why: the denoiser was trained on one latent size (16×16 for the shipped prior), so on a
photo's latent it sees tiles of exactly that size and their predictions are put back into
one canvas (`pipeline/models/tiled_denoiser.py`, docs/method.md §7). A layout is the product
of two 1-D axes; on each axis a tile has an origin (its window is [origin, origin + tile))
and a *cell*, the span its prediction is written to. Two kinds:

  * overlap (`spread_axis`): the fewest tiles whose neighbours overlap by at least `overlap`
    latent pixels, spread evenly from 0 to the edge (the last tile is edge-aligned, and the
    spare length widens the overlaps instead of piling up in the last one). The cell is the
    whole window; overlapping predictions are blended with `window_profile`. `overlap=0`
    is the cheapest cover ("cut"), the reference tile count for cost ratios.
  * shifted (`shifted_axis`): the non-overlapping partition moved by an offset in
    [0, tile), drawn per step from the sample's own seed (`step_offset`), as in PaDIS and
    SpotDiffusion: each cell takes one tile's prediction, nothing is blended, and the seams
    move every step. A cell cut by the canvas edge takes the tile aligned to that edge, so
    the denoiser sees real latent around it, not padding.

Canvases smaller than a tile are the caller's to pad: `canvas_size` and `reflect_pad` pad
the image (in pixels, by reflection, bottom and right) so its latent is at least one tile
and a whole number of latent pixels; the caller crops the decoded result back. Padding the
image rather than the noisy latent keeps the padded part a plausible image that the reverse
process carries along with the rest, instead of duplicated noise the prior never saw.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import cached_property

import torch

# The seeding purpose of the shifted layout's offsets (a stream apart from the sampler's noise).
TILE_SHIFT = "tile_shift"
TILINGS = ("overlap", "shifted", "whole")


def window_profile(tile: int, ramp: int, floor: float) -> torch.Tensor:
    """1-D blending weights over a tile: a raised-cosine ramp of `ramp` pixels at each end.

    w(u) = floor + (1 − floor)·sin²(π/2 · min(d/ramp, 1)), d = distance of pixel centre u + ½
    to the nearest tile edge. Two neighbours whose overlap equals the ramp cross-fade as
    cos² + sin² = 1; the floor keeps every weight positive whatever the ramp, so a pixel at
    the canvas edge (covered by one tile's edge only) still normalises to that tile.
    `ramp = 0` gives a flat window (plain average where tiles overlap).
    """
    u = torch.arange(tile, dtype=torch.float64) + 0.5
    if ramp <= 0:
        return torch.ones(tile, dtype=torch.float64)
    d = torch.minimum(u, tile - u)
    return floor + (1.0 - floor) * torch.sin(0.5 * math.pi * (d / ramp).clamp(max=1.0)) ** 2


@dataclass(frozen=True)
class Axis:
    """One axis of a layout: tile origins, the cell each tile writes, and its window ramp."""

    length: int
    tile: int
    origins: tuple[int, ...]
    cells: tuple[tuple[int, int], ...]
    ramp: int = 0
    floor: float = 1e-3

    @property
    def count(self) -> int:
        return len(self.origins)

    def profiles(self) -> torch.Tensor:
        """(count, tile) float64 weights: the window inside the tile's cell, zero outside it."""
        base = window_profile(self.tile, self.ramp, self.floor)
        out = torch.zeros(self.count, self.tile, dtype=torch.float64)
        for i, (o, (a, b)) in enumerate(zip(self.origins, self.cells)):
            out[i, a - o:b - o] = base[a - o:b - o]
        return out

    def index(self, device=None) -> torch.Tensor:
        """(count, tile) long: the canvas coordinates of each tile's window."""
        return (torch.tensor(self.origins, dtype=torch.long).view(-1, 1)
                + torch.arange(self.tile, dtype=torch.long).view(1, -1)).to(device)

    @cached_property
    def phases(self) -> int:
        """The smallest g such that the windows of tiles i and i + g never overlap (tiles of one
        phase can be written at once without two of them touching the same pixel)."""
        g = 1
        while any(self.origins[i + g] < self.origins[i] + self.tile for i in range(self.count - g)):
            g += 1
        return g


def _check(length: int, tile: int) -> None:
    if tile < 1:
        raise ValueError(f"tile must be at least 1, got {tile}")
    if length < tile:
        raise ValueError(f"canvas side {length} is smaller than the tile {tile}: pad the image first "
                         f"(pipeline.sampling.tiles.canvas_size / reflect_pad)")


def spread_axis(length: int, tile: int, overlap: int, floor: float = 1e-3) -> Axis:
    """The fewest tiles with neighbour overlaps ≥ `overlap`, origins spread evenly, last at the edge.

    m = ⌈(n − o)/(T − o)⌉ tiles; origin_j = ⌊j·(n − T)/(m − 1)⌋, so every gap is at most
    T − o. The window ramp is the smallest overlap that occurs (≥ o).
    """
    _check(length, tile)
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in 0..{tile - 1}, got {overlap}")
    m = -(-(length - overlap) // (tile - overlap))
    origins = tuple((j * (length - tile)) // (m - 1) for j in range(m)) if m > 1 else (0,)
    ramp = min((tile - (b - a) for a, b in zip(origins, origins[1:])), default=0)
    return Axis(length, tile, origins, tuple((o, o + tile) for o in origins), ramp, floor)


def shifted_axis(length: int, tile: int, offset: int) -> Axis:
    """The partition into cells [−offset + j·T, −offset + (j+1)·T) ∩ [0, n), one tile per cell.

    A cell's tile is the window at its start, moved inside the canvas when the cell is cut by
    an edge; cells that would share a window share one tile (so a canvas of exactly one tile
    is one tile whatever the offset).
    """
    _check(length, tile)
    if not 0 <= offset < tile:
        raise ValueError(f"offset must be in 0..{tile - 1}, got {offset}")
    origins: list[int] = []
    cells: list[tuple[int, int]] = []
    for start in range(-offset, length, tile):
        cell = (max(start, 0), min(start + tile, length))
        origin = min(max(start, 0), length - tile)
        if origins and origins[-1] == origin:
            cells[-1] = (cells[-1][0], cell[1])
        else:
            origins.append(origin)
            cells.append(cell)
    return Axis(length, tile, tuple(origins), tuple(cells), 0, 1.0)


@dataclass(frozen=True)
class TileLayout:
    """A separable layout over an (h, w) latent canvas: tiles (i, j) = rows y.i × columns x.j."""

    y: Axis
    x: Axis

    @property
    def tile(self) -> int:
        return self.y.tile

    @property
    def shape(self) -> tuple[int, int]:
        return self.y.length, self.x.length

    @property
    def num_tiles(self) -> int:
        return self.y.count * self.x.count

    def weights(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """(my, mx, T, T) blending weights of every tile (zero outside its cell)."""
        wy, wx = self.y.profiles(), self.x.profiles()
        return (wy[:, None, :, None] * wx[None, :, None, :]).to(dtype=dtype, device=device)

    def phase_groups(self) -> list[tuple[slice, slice]]:
        """Tile subsets (rows, columns) whose windows are pairwise disjoint, in a fixed order:
        one group can be written into a canvas with a single indexed assignment."""
        gy, gx = self.y.phases, self.x.phases
        return [(slice(py, None, gy), slice(px, None, gx)) for py in range(gy) for px in range(gx)]


@dataclass(frozen=True)
class Tiling:
    """How a canvas is cut for the denoiser: mode, the prior's tile size, overlap, window floor.

    The default (overlap, 2 of 16 latent pixels) costs about (16/14)² ≈ 1.3× the tiles of a
    non-overlapping cut on large canvases; 50 % overlap (`overlap = tile // 2`, the peers'
    choice) costs about 4×; `shifted` about 1.05×. `whole` runs the denoiser untiled on the whole
    canvas (a comparison arm: the prior never saw more than one tile); its layout is the
    non-overlapping cut, which only counts its cost in tile equivalents.
    """

    tile: int
    mode: str = "overlap"
    overlap: int = 2
    floor: float = 1e-3

    def __post_init__(self):
        if self.mode not in TILINGS:
            raise ValueError(f"tiling mode must be one of {TILINGS}, got {self.mode!r}")
        if self.tile < 1 or not 0 <= self.overlap < self.tile:
            raise ValueError(f"tiling needs tile ≥ 1 and overlap in 0..tile−1, got tile={self.tile}, "
                             f"overlap={self.overlap}")
        if not 0.0 < self.floor <= 1.0:
            raise ValueError(f"window floor must be in (0, 1], got {self.floor}")

    @property
    def per_step(self) -> bool:
        """Whether the layout changes from step to step (and so needs the sample's seed)."""
        return self.mode == "shifted"

    def layout(self, height: int, width: int, seed: int = 0, k: int = 0) -> TileLayout:
        """The layout of an (height, width) canvas at grid step k for a sample with this shift seed."""
        if self.mode != "shifted":
            overlap = self.overlap if self.mode == "overlap" else 0
            return TileLayout(spread_axis(height, self.tile, overlap, self.floor),
                              spread_axis(width, self.tile, overlap, self.floor))
        dy, dx = step_offset(seed, k, self.tile)
        return TileLayout(shifted_axis(height, self.tile, dy), shifted_axis(width, self.tile, dx))


def step_offset(seed: int, k: int, tile: int) -> tuple[int, int]:
    """The shifted layout's (dy, dx) at grid step k: a hash of (seed, k), stateless.

    Stateless so that a sample's offsets do not depend on how many steps it sat out while
    batch partners ran, nor on the order tiles are computed in."""
    digest = hashlib.blake2b(f"{int(seed)}\x00{int(k)}".encode(), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % tile, (value // tile) % tile


def cut_tiles(height: int, width: int, tile: int) -> int:
    """Tiles of the cheapest cover (no overlap), the reference for tiling cost ratios."""
    return -(-height // tile) * -(-width // tile)


def canvas_size(height: int, width: int, factor: int, tile: int) -> tuple[int, int]:
    """The padded image size whose latent holds at least one tile: multiples of the
    autoencoder's factor, each side at least tile·factor pixels."""
    if min(height, width, factor, tile) < 1:
        raise ValueError(f"canvas_size needs positive sizes, got {height}×{width}, factor {factor}, tile {tile}")
    side = lambda n: max(-(-n // factor) * factor, tile * factor)  # noqa: E731
    return side(height), side(width)


def reflect_pad(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad (…, H, W) to (…, height, width) at the bottom and right by mirror reflection.

    Any amount (even more than the image, or a one-pixel image), unlike F.pad's reflect: the
    index folds back and forth across the image with period 2(n − 1)."""
    def mirror(n: int, size: int) -> torch.Tensor:
        if size < n:
            raise ValueError(f"reflect_pad cannot shrink a side of {n} to {size}")
        if n == 1:
            return torch.zeros(size, dtype=torch.long)
        i = torch.arange(size) % (2 * (n - 1))
        return torch.where(i < n, i, 2 * (n - 1) - i)

    rows = mirror(x.shape[-2], height).to(x.device)
    cols = mirror(x.shape[-1], width).to(x.device)
    return x.index_select(-2, rows).index_select(-1, cols)
