"""What a browser may reach on the server: SAE folders and model files under the admin's
allow-lists, and the Hugging Face hub only when the admin turns it on.

A path typed into a page is resolved (`~`, `..`, symlinks) before it is compared with the
allowed roots (`Settings.sae_folders`: the cache's SAE dir plus WORKBENCH_SAE_ROOTS;
`Settings.model_folders`: the cache's model dir plus WORKBENCH_MODEL_ROOTS), so neither a `..`
nor a symlink leads out of them. A refusal is one sentence that names no file and says nothing
about whether the path exists. "Hub off" (the default) means the local HF cache only: files
already there load, the network is never used (`sae.sources.local_hf_cache_only`).

The pages call these functions; the CLI and the notebook API are the admin's own and never do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from workbench.config import Settings
from workbench.models.sources import PACKAGED_GGUFS, ModelSource, parse_source
from workbench.sae.sources import SAELoadError, check_sae_folder

SAE_REFUSAL = "That folder is not in the server's SAE folders; ask the admin to add it (WORKBENCH_SAE_ROOTS)."
MODEL_REFUSAL = ("That model is not in the server's model folders; ask the admin to add its folder "
                 "(WORKBENCH_MODEL_ROOTS).")
HUB_REFUSAL = ("Downloads from the Hugging Face hub are off on this server; ask the admin to start it with "
               "WORKBENCH_ALLOW_HUB=1.")


class NotAllowed(ValueError):
    """A browser named something the server's settings do not let it reach; the message is one
    sentence for the page."""


def resolve_under(typed: str, roots: Sequence[Path]) -> Path | None:
    """`typed` resolved (a relative path against the first root), or None when it does not lie
    in one of `roots` (each resolved too). Never reads what is inside."""
    text = typed.strip()
    if not text or "\x00" in text or not roots:
        return None
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(roots[0]) / path
    path = path.resolve()
    for root in roots:
        base = Path(root).expanduser().resolve()
        if path == base or base in path.parents:
            return path
    return None


def browser_sae_folder(settings: Settings, typed: str) -> Path:
    """The SAE folder a page may catalogue for `typed`, checked (SAELens format, safetensors):
    NotAllowed with one sentence otherwise (never naming the files found there)."""
    path = resolve_under(typed, settings.sae_folders)
    if path is None:
        raise NotAllowed(SAE_REFUSAL)
    try:
        check_sae_folder(path, detail=False)
    except SAELoadError as err:
        raise NotAllowed(str(err)) from None
    return path


def browser_model_source(settings: Settings, typed: str) -> ModelSource:
    """The model source a page may load for `typed`: a named one ('embedded', 'tiny', 'tiny:<family>',
    a packaged GGUF), the server's own WORKBENCH_MODEL, a file or folder under
    `settings.model_folders`, or a hub id ('hub:<org/name>', 'org/name') when the admin allows
    the hub; NotAllowed with one sentence otherwise."""
    text = typed.strip()
    own = settings.model_source.strip()
    if text == own or text in ("", "embedded", "default", "tiny", *PACKAGED_GGUFS) or text.startswith("tiny:"):
        return parse_source(text)
    path = resolve_under(text, settings.model_folders)
    if path is not None and path.exists():
        try:
            return parse_source(str(path))
        except ValueError as err:
            raise NotAllowed(str(err)) from None
    own_path = Path(own).expanduser()
    if own_path.is_absolute() and own_path.exists() and Path(text).expanduser().resolve() == own_path.resolve():
        return parse_source(own)
    if text.startswith("hub:") or ("/" in text and not text.startswith((".", "/", "~"))):
        if not settings.allow_hub:
            raise NotAllowed(HUB_REFUSAL)
        return ModelSource("hub", text.removeprefix("hub:"))
    if path is not None:
        raise NotAllowed("There is no model file or folder by that name in the server's model folders.")
    raise NotAllowed(MODEL_REFUSAL)


def describe_reach(settings: Settings) -> str:
    """One line for the Home page: which SAE folders, whether hub downloads are on and whether
    users may pick their own model or placement."""
    roots = settings.sae_folders
    first = _short(roots[0], settings)
    more = f" (+{len(roots) - 1} more)" if len(roots) > 1 else ""
    hub = "on" if settings.allow_hub else "off (the server's local HF cache only)"
    models = "on" if settings.user_models else "off (the server's model only)"
    return f"SAE folders: {first}{more} · hub downloads: {hub} · users' own models and placements: {models}"


def _short(path: Path, settings: Settings) -> str:
    try:
        return str(Path("cache") / Path(path).relative_to(settings.cache_dir))
    except ValueError:
        return str(path)
