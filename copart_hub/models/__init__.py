"""Model families (one module each). Importing this package registers them."""

from .ssn import SSN, SSNFeatureNet, SuperpixelOutput

__all__ = ["SSN", "SSNFeatureNet", "SuperpixelOutput"]
