"""Model families (one module each). Importing this package registers them."""

from .backbone import TimmBackbone
from .dff import DFF
from .dve import DenseDescriptorNet
from .mcs import MCSGenerator, MCSModel, MCSSegmentation, MCSSegmenter
from .part_base import PartModel
from .scops import SCOPS
from .ssn import SSN, SSNFeatureNet, SuperpixelOutput

__all__ = [
    "DFF",
    "SCOPS",
    "SSN",
    "DenseDescriptorNet",
    "MCSGenerator",
    "MCSModel",
    "MCSSegmentation",
    "MCSSegmenter",
    "PartModel",
    "SSNFeatureNet",
    "SuperpixelOutput",
    "TimmBackbone",
]
