"""Tensor ops: coordinate grids, warps, differentiable SLIC, superpixel pooling."""

from .coordinates import (
    Convention,
    concentration_loss,
    coordinate_axis,
    coordinate_grid,
    part_centres,
    soft_argmax,
    spatial_softmax,
)
from .warps import (
    TPSTransform,
    control_grid,
    random_mcs_tps,
    random_scops_tps,
    tps_grid,
    tps_transform_points,
)

__all__ = [
    "Convention",
    "TPSTransform",
    "concentration_loss",
    "control_grid",
    "coordinate_axis",
    "coordinate_grid",
    "part_centres",
    "random_mcs_tps",
    "random_scops_tps",
    "soft_argmax",
    "spatial_softmax",
    "tps_grid",
    "tps_transform_points",
]
