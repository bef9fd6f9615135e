"""Readers for the real datasets used in training and evaluation."""

from .paths import shared_data_root

__all__ = ["shared_data_root"]
