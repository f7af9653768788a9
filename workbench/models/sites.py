"""Where an SAE (or transcoder) reads in the model: a layer and an MLP hook site.

Kept with the model layer so that both the SAE package (catalogues, decoder directions) and
the edit compiler (PISCES) can name a site without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SAESite:
    layer: int
    site: str  # 'hook_mlp_out' | 'mlp.hook_out' | 'mlp.hook_post'

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.{self.site}"

    @classmethod
    def from_hook(cls, hook_name: str) -> SAESite:
        parts = hook_name.split(".")
        if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
            raise ValueError(f"Hook {hook_name!r} is not like 'blocks.6.hook_mlp_out'.")
        site = ".".join(parts[2:])
        if site not in ("hook_mlp_out", "mlp.hook_out", "mlp.hook_post"):
            raise ValueError(f"Feature catalogues support MLP sites only; got {hook_name!r}.")
        return cls(int(parts[1]), site)

    @classmethod
    def of_sae(cls, sae: Any) -> SAESite:
        hook = getattr(sae.cfg.metadata, "hook_name", None)
        if not hook:
            raise ValueError("The SAE's config has no hook_name; say which hook it was trained on.")
        return cls.from_hook(hook)
