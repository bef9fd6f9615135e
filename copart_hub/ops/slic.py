"""Differentiable SLIC (the clustering core of SSN, Jampani et al. ECCV 2018).

Every pixel is softly associated with the 9 superpixels around its *initial* grid cell, so
memory is O(9N), never O(N x superpixels). The work is done in a cell-major layout: the pixels
of each initial cell are gathered once into a padded ``[B, S, M, C]`` tensor (S cells, at most
M pixels per cell), after which every association and centre update is a small batched matmul
plus a 3x3 unfold/fold over the (rows x cols) cell grid. Neighbour channels are ordered
row-major over (dy, dx) in {-1, 0, 1}^2, as in the official code. The association is stored as
``[B, S, 9, M]`` so that the softmax over the 9 candidates runs over a non-innermost dimension
(about 10x faster on CPU than a softmax over a last dimension of size 9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

NUM_NEIGHBOURS = 9
MIN_CENTRE_WEIGHT = 1e-3  # centres whose total association is below this are set to 0


def grid_shape(height: int, width: int, n_spixels: int) -> tuple[int, int]:
    """Rows and columns of the initial superpixel grid (``rows * cols <= n_spixels``).

    Raises ``ValueError`` for a non-positive count or one larger than the number of pixels.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1x1 pixels, got {height}x{width}")
    if n_spixels < 1:
        raise ValueError(f"the number of superpixels must be >= 1, got {n_spixels}")
    if n_spixels > height * width:
        raise ValueError(
            f"cannot make {n_spixels} superpixels from a {height}x{width} image "
            f"({height * width} pixels)"
        )
    cols = min(width, max(1, int(math.sqrt(n_spixels * width / height))))
    rows = min(height, max(1, int(math.sqrt(n_spixels * height / width))))
    return rows, cols


@dataclass(frozen=True, eq=False)
class SuperpixelGrid:
    """Index tables linking the pixel layout ``[H, W]`` and the cell-major layout ``[S, M]``."""

    height: int
    width: int
    rows: int
    cols: int
    slots_per_cell: int
    pixel_table: Tensor  # [S, M] flat pixel index of each slot; H*W marks a padding slot
    slot_of_pixel: Tensor  # [H*W] flat slot index s*M+m of each pixel
    valid_slots: Tensor  # [S, 1, M] float, 1 for real pixels and 0 for padding
    neighbour_valid: Tensor  # [S, 9] bool, whether cell s + offset exists
    neighbour_bias: Tensor  # [S, 9, 1] float, 0 for existing neighbours and -inf otherwise
    neighbour_index: Tensor  # [S, 9] absolute cell id of each neighbour (clamped when invalid)

    @property
    def num_cells(self) -> int:
        return self.rows * self.cols

    @classmethod
    def create(
        cls, height: int, width: int, n_spixels: int, device: torch.device | str = "cpu"
    ) -> SuperpixelGrid:
        rows, cols = grid_shape(height, width, n_spixels)
        return _cached_grid(height, width, rows, cols, str(torch.device(device)))

    def to_cells(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, S, C, M]`` (padding slots are 0)."""
        b, c = x.shape[:2]
        flat = F.pad(x.reshape(b, c, -1), (0, 1))
        index = self.pixel_table.view(1, 1, -1).expand(b, c, -1)
        cells = torch.gather(flat, 2, index).view(b, c, self.num_cells, self.slots_per_cell)
        return cells.transpose(1, 2).contiguous()  # contiguous: bmm would copy it every time

    def to_pixels(self, x: Tensor) -> Tensor:
        """``[B, S, C, M]`` -> ``[B, C, H, W]``."""
        b, c = x.shape[0], x.shape[2]
        flat = x.transpose(1, 2).reshape(b, c, -1)
        return flat.index_select(2, self.slot_of_pixel).view(b, c, self.height, self.width)

    def gather_neighbours(self, centres: Tensor) -> Tensor:
        """Superpixel features ``[B, S, C]`` -> the 9 neighbours of each cell ``[B, S, 9, C]``."""
        b, s, c = centres.shape
        grid = centres.transpose(1, 2).reshape(b, c, self.rows, self.cols)
        patches = F.unfold(grid, kernel_size=3, padding=1).view(b, c, NUM_NEIGHBOURS, s)
        return patches.permute(0, 3, 2, 1).contiguous()  # strided batches make bmm crawl

    def scatter_neighbours(self, values: Tensor) -> Tensor:
        """Sum per-cell contributions to its 9 neighbours ``[B, S, 9, C]`` -> ``[B, S, C]``."""
        b, s, _, c = values.shape
        cols = values.permute(0, 3, 2, 1).reshape(b, c * NUM_NEIGHBOURS, s)
        summed = F.fold(cols, (self.rows, self.cols), kernel_size=3, padding=1)
        return summed.view(b, c, s).transpose(1, 2)


@lru_cache(maxsize=64)
def _cached_grid(height: int, width: int, rows: int, cols: int, device: str) -> SuperpixelGrid:
    dev = torch.device(device)
    # Initial cell of each pixel: nearest-neighbour upsampling of the rows x cols index map.
    cell_y = torch.div(torch.arange(height) * rows, height, rounding_mode="floor")
    cell_x = torch.div(torch.arange(width) * cols, width, rounding_mode="floor")
    cell = (cell_y[:, None] * cols + cell_x[None, :]).reshape(-1)
    n_pix, n_cells = height * width, rows * cols
    counts = torch.bincount(cell, minlength=n_cells)
    slots = int(counts.max())
    order = torch.argsort(cell, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n_pix) - starts[cell[order]]
    slot_of_pixel = torch.empty(n_pix, dtype=torch.long)
    slot_of_pixel[order] = cell[order] * slots + rank
    table = torch.full((n_cells * slots,), n_pix, dtype=torch.long)
    table[slot_of_pixel] = torch.arange(n_pix)
    table = table.view(n_cells, slots)

    r = torch.arange(n_cells) // cols
    c = torch.arange(n_cells) % cols
    dy = torch.tensor([-1, -1, -1, 0, 0, 0, 1, 1, 1])
    dx = torch.tensor([-1, 0, 1, -1, 0, 1, -1, 0, 1])
    nr, nc = r[:, None] + dy, c[:, None] + dx
    valid = (nr >= 0) & (nr < rows) & (nc >= 0) & (nc < cols)
    index = nr.clamp(0, rows - 1) * cols + nc.clamp(0, cols - 1)
    return SuperpixelGrid(
        height=height,
        width=width,
        rows=rows,
        cols=cols,
        slots_per_cell=slots,
        pixel_table=table.to(dev),
        slot_of_pixel=slot_of_pixel.to(dev),
        valid_slots=(table < n_pix).unsqueeze(1).float().to(dev),
        neighbour_valid=valid.to(dev),
        neighbour_bias=torch.zeros(n_cells, 9, 1)
        .masked_fill(~valid[..., None], -torch.inf)
        .to(dev),
        neighbour_index=index.to(dev),
    )


@dataclass
class SoftAssociation:
    """Soft pixel-to-superpixel association ``Q`` of differentiable SLIC.

    ``q`` is ``[B, S, 9, M]`` in the cell-major layout of ``grid``. Padding slots hold values that
    are never used: pooling weights them by ``grid.valid_slots`` and they map to no pixel.
    """

    q: Tensor
    grid: SuperpixelGrid

    @property
    def num_spixels(self) -> int:
        return self.grid.num_cells

    def pixel_probs(self) -> Tensor:
        """Association over the 9 neighbours in pixel layout ``[B, 9, H, W]``."""
        return self.grid.to_pixels(self.q)

    def hard_labels(self) -> Tensor:
        """Superpixel id of every pixel (argmax over the 9 candidates) ``[B, H, W]``."""
        best = self.q.max(2).indices  # [B, S, M] (max is ~7x faster than argmax on dim 2)
        idx = self.grid.neighbour_index.unsqueeze(0).expand(best.shape[0], -1, -1)
        labels = torch.gather(idx, 2, best)
        return self.grid.to_pixels(labels.unsqueeze(2)).squeeze(1)

    def pool(self, x: Tensor) -> Tensor:
        """Association-weighted superpixel means: ``[B, C, H, W]`` -> ``[B, C, S]``."""
        return _pool_cells(self.grid.to_cells(x), self.q, self.grid).transpose(1, 2)

    def unpool(self, spixel_feats: Tensor) -> Tensor:
        """Soft decoding ``R*_p = sum_i Q_pi S_i``: ``[B, C, S]`` -> ``[B, C, H, W]``."""
        nb = self.grid.gather_neighbours(spixel_feats.transpose(1, 2))  # [B, S, 9, C]
        return self.grid.to_pixels(nb.transpose(-1, -2) @ self.q)


def _pool_cells(cells: Tensor, q: Tensor, grid: SuperpixelGrid) -> Tensor:
    """Centre update ``S_i = sum_p Q_pi F_p / sum_p Q_pi`` -> ``[B, S, C]`` (0 if weight < 1e-3)."""
    b, s = q.shape[:2]
    contrib = torch.bmm(q.flatten(0, 1), cells.flatten(0, 1).transpose(1, 2))  # [B*S, 9, C]
    numer = grid.scatter_neighbours(contrib.view(b, s, NUM_NEIGHBOURS, -1))  # [B, S, C]
    denom = grid.scatter_neighbours(q @ grid.valid_slots.to(q.dtype).transpose(1, 2))  # [B, S, 1]
    ok = denom >= MIN_CENTRE_WEIGHT
    return torch.where(ok, numer / denom.clamp_min(MIN_CENTRE_WEIGHT), torch.zeros_like(numer))


def _associate(cells: Tensor, centres: Tensor, grid: SuperpixelGrid) -> Tensor:
    """Softmax over the 9 candidates of ``-||F_p - S_i||^2`` -> ``[B, S, 9, M]``.

    Missing neighbours (outside the grid) get probability exactly 0.
    """
    nb = grid.gather_neighbours(centres)  # [B, S, 9, C]
    # ||F_p||^2 is the same for all 9 candidates of a pixel, so it cancels in the softmax.
    bias = grid.neighbour_bias.to(nb.dtype) - nb.pow(2).sum(-1, keepdim=True)  # [B, S, 9, 1]
    b, s, _, m = cells.shape
    # 3-D baddbmm on contiguous operands: 4-D broadcast matmul takes a ~8x slower path on CPU
    logits = torch.baddbmm(
        bias.flatten(0, 1).expand(-1, -1, m), nb.flatten(0, 1), cells.flatten(0, 1), alpha=2
    )
    return torch.softmax(logits.view(b, s, NUM_NEIGHBOURS, m), dim=2)


def initial_centres(cells: Tensor, grid: SuperpixelGrid) -> Tensor:
    """Mean feature of each initial grid cell ``[B, S, C]``."""
    counts = grid.valid_slots.sum(2).clamp_min(1)  # [S, 1]
    return cells.sum(3) / counts


def differentiable_slic(
    features: Tensor, n_spixels: int, n_iter: int = 10
) -> tuple[SoftAssociation, Tensor]:
    """Run SSN's differentiable SLIC on pixel features.

    Args:
        features: ``[B, C, H, W]`` pixel features (e.g. scaled XYLab, or learned features).
        n_spixels: requested number of superpixels; the grid has ``rows * cols <= n_spixels``.
        n_iter: number of associations; ``n_iter - 1`` centre updates happen in between
            (the official ``num_steps``: 5 for training, 10 for inference).

    Returns:
        The soft association and the superpixel centres ``[B, C, S]`` used for the last one.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be [B, C, H, W], got shape {tuple(features.shape)}")
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    _, _, h, w = features.shape
    grid = SuperpixelGrid.create(h, w, n_spixels, features.device)
    cells = grid.to_cells(features)
    centres = initial_centres(cells, grid)
    for _ in range(n_iter - 1):
        centres = _pool_cells(cells, _associate(cells, centres, grid), grid)
    q = _associate(cells, centres, grid)
    return SoftAssociation(q, grid), centres.transpose(1, 2)


COLOR_SCALE = 0.26  # Lab multiplier of the official code (train and test)
POS_WEIGHT = 2.5  # test-time position scale = POS_WEIGHT * (superpixels per axis) / size


def position_scale(height: int, width: int, n_spixels: int) -> float:
    """Test-time position weight of SSN: ``max(cols / (0.4 W), rows / (0.4 H))``."""
    rows, cols = grid_shape(height, width, n_spixels)
    return POS_WEIGHT * max(cols / width, rows / height)


def xylab_features(image: Tensor, pos_scale: float, color_scale: float = COLOR_SCALE) -> Tensor:
    """SSN's 5 input channels ``[pos*y, pos*x, c*L, c*a, c*b]`` from RGB in [0, 1].

    Args:
        image: ``[B, 3, H, W]`` RGB in [0, 1].
    Returns:
        ``[B, 5, H, W]``; Lab as in ``skimage.color.rgb2lab`` (L in [0, 100]).
    """
    from kornia.color import rgb_to_lab

    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be [B, 3, H, W], got shape {tuple(image.shape)}")
    b, _, h, w = image.shape
    lab = rgb_to_lab(image.clamp(0, 1)) * color_scale
    ys = torch.arange(h, device=image.device, dtype=image.dtype) * pos_scale
    xs = torch.arange(w, device=image.device, dtype=image.dtype) * pos_scale
    yx = torch.stack(torch.meshgrid(ys, xs, indexing="ij")).expand(b, -1, -1, -1)
    return torch.cat([yx, lab], dim=1)
