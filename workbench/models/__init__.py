"""Model sources and the ModelBundle (HF model + TransformerLens view sharing one set of weights)."""

from workbench.models.bundle import ModelBundle, load_bundle
from workbench.models.safety import UnsafeCheckpointError
from workbench.models.sources import ModelSource, parse_source

__all__ = ["ModelBundle", "ModelSource", "UnsafeCheckpointError", "load_bundle", "parse_source"]
