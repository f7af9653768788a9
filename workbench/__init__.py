"""Concept-erasure workbench: find, inspect and surgically remove knowledge stored in MLP weights."""

__version__ = "0.1.0"
