"""Training losses of SCOPS and SSN."""

from .scops import (
    PartBasis,
    ScopsLossWeights,
    equivariance_loss,
    orthonormality_loss,
    semantic_consistency_loss,
)

__all__ = [
    "PartBasis",
    "ScopsLossWeights",
    "equivariance_loss",
    "orthonormality_loss",
    "semantic_consistency_loss",
]
