"""Where an SAE (or transcoder) reads in the model, and where its decoder writes.

An SAE reads and reconstructs one MLP site. A transcoder (Gemma Scope 2's, SAELens's
`jumprelu_transcoder`) reads the MLP's input (`hook_mlp_in`) and writes its output
(`hook_mlp_out`): its features are features of the MLP itself, and its decoder directions live
where an output SAE's do.

Kept with the model layer so that both the SAE package (catalogues, decoder directions) and
the edit compiler (PISCES) can name a site without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OUTPUT_SITES = ("hook_mlp_out", "mlp.hook_out", "mlp.hook_post")
TRANSCODER_INPUT = "mlp.hook_in"  # the MLP's input after its pre-norm (the bridge's hook that fires)
TRANSCODER_INPUT_NAMES = ("hook_mlp_in", "mlp.hook_in")  # SAELens's Gemma Scope 2 configs say hook_mlp_in


@dataclass(frozen=True)
class SAESite:
    layer: int
    site: str  # what the encoder reads: one of OUTPUT_SITES, or 'mlp.hook_in' for a transcoder
    out_site: str | None = None  # what the decoder writes, when it differs (a transcoder)

    @property
    def hook_name(self) -> str:
        """The hook the encoder reads."""
        return f"blocks.{self.layer}.{self.site}"

    @property
    def decoder_site(self) -> str:
        """The site whose space the decoder directions live in."""
        return self.out_site or self.site

    @property
    def is_transcoder(self) -> bool:
        return self.out_site is not None and self.out_site != self.site

    @classmethod
    def from_hook(cls, hook_name: str) -> SAESite:
        parts = hook_name.split(".")
        if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
            raise ValueError(f"Hook {hook_name!r} is not like 'blocks.6.hook_mlp_out'.")
        site = ".".join(parts[2:])
        if site not in OUTPUT_SITES:
            raise ValueError(f"Feature catalogues support MLP sites only; got {hook_name!r}.")
        return cls(int(parts[1]), site)

    @classmethod
    def transcoder(cls, hook_in: str, hook_out: str) -> SAESite:
        """A transcoder reading layer L's MLP input and writing an MLP output site of layer L.

        SAELens names the input `blocks.L.hook_mlp_in`, meaning the pre-FFN norm's output
        (Gemma Scope 2's `hf_hook_point_in`); in the bridge that tensor is `blocks.L.mlp.hook_in`
        (its `hook_mlp_in` sits before the norm and does not fire in the HF forward pass)."""
        out = cls.from_hook(hook_out)
        parts = hook_in.split(".")
        site_in = ".".join(parts[2:])
        if len(parts) < 3 or parts[0] != "blocks" or parts[1] != str(out.layer) or site_in not in TRANSCODER_INPUT_NAMES:
            raise ValueError(f"A transcoder must read blocks.{out.layer}.{TRANSCODER_INPUT} and write "
                             f"{hook_out!r}; this one reads {hook_in!r}.")
        if out.site == "mlp.hook_post":
            raise ValueError(f"A transcoder writes the MLP output, not its hidden layer ({hook_out!r}).")
        return cls(out.layer, TRANSCODER_INPUT, out.site)

    @classmethod
    def of_sae(cls, sae: Any) -> SAESite:
        meta = sae.cfg.metadata
        hook = getattr(meta, "hook_name", None)
        if not hook:
            raise ValueError("The SAE's config has no hook_name; say which hook it was trained on.")
        hook_out = getattr(meta, "hook_name_out", None) or getattr(sae.cfg, "hook_name_out", None)
        if hook_out and hook_out != hook:
            return cls.transcoder(hook, hook_out)
        return cls.from_hook(hook)
