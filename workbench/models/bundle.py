"""ModelBundle: the HF model (generation) and a TransformerLens bridge (activations) that share
one copy of the weights (never written after load), plus tokenizer, config and weights hash."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from workbench.config import Settings
from workbench.models import layout
from workbench.models.embedded import build_embedded_checkpoint
from workbench.models.gguf import conversion_note, gguf_checkpoint
from workbench.models.hashing import cached_folder_hash
from workbench.models.layout import Architecture
from workbench.models.placement import resolve_device, resolve_dtype
from workbench.models.process import tune_process_after_load, tune_process_before_load
from workbench.models.safety import check_safetensors_folder
from workbench.models.sources import ModelSource, hub_offline
from workbench.models.tiny import TinyConfig, build_tiny_checkpoint

log = logging.getLogger(__name__)


@dataclass(repr=False)  # __repr__ below: one line, never the modules or the tokenizer
class ModelBundle:
    """Everything the workbench needs of one loaded model.

    `hf_model` and `bridge` share parameter storage: `bridge.blocks[l].mlp.W_out` is a view of
    the layer's MLP output projection weight (`models/layout.py` says which, per family). The
    weights are never written after load: edits are adapters added in the forward pass (workbench.adapters), so any
    number of threads read and run the model at once without a lock (the bridge's per-call flags
    are made per-thread at load: models/bridge_threads.py).
    """

    source: ModelSource
    path: Path
    hf_model: Any  # transformers Gemma3ForCausalLM
    bridge: Any  # transformer_lens.model_bridge.TransformerBridge
    tokenizer: Any
    weights_sha256: str
    load_seconds: float = 0.0
    # the settings it was loaded with (cache folder, device, dtype), so later steps on this model
    # (an Edit's SAE folder) read the same cache as the load; None for a bundle built by hand
    settings: Settings | None = None

    def __repr__(self) -> str:
        model_id = self.model_id if len(self.model_id) <= 80 else self.model_id[:77] + "..."
        dtype = str(self.dtype).removeprefix("torch.")
        return (f"ModelBundle({model_id!r}, layers={self.n_layers}, d_model={self.d_model}, "
                f"dtype={dtype}, device={self.device})")

    def edited(self, edit: Any, payload: dict[str, Any] | None = None) -> EditedModel:
        """The model with `edit` applied, over the untouched base (nnsight's `model.edit()`):

            with model.edited(edit):                                # every forward this thread runs
                logits = model.hf(input_ids=ids).logits             # or model.bridge(ids)
                _, cache = model.bridge.run_with_cache(ids)         # the edited activations
            edited = model.edited(edit)                             # a handle, no block needed
            logits = edited(input_ids=ids).logits                   # the edited model's forward
            model.hf(input_ids=ids)                                 # still the base

        `edit` is a notebook `wb.Edit`, an `EditSpec` (compiled here, with its `payload`
        tensors when it has any), a compiled `Adapter`, or None (the base). Both forms are the
        thread-scoped `workbench.adapters.use`: the weights are never written, so outside the
        block or the handle's calls (and in other threads, such as the app's other users) the
        model is the base, bit for bit. The bridge wraps the HF modules in place, so HF and
        TransformerLens forwards both see it."""
        return EditedModel(self, self.adapter_of(edit, payload))

    def adapter_of(self, edit: Any, payload: dict[str, Any] | None = None) -> Any:
        """The compiled `Adapter` of a notebook `Edit`, an `EditSpec` (+ payload) or an Adapter
        (None stays None: the base model)."""
        from workbench.adapters import Adapter

        if edit is None or isinstance(edit, Adapter):
            return edit
        if hasattr(edit, "to_adapter"):  # an EditSpec compiles itself (the edits layer sits above this one)
            return edit.to_adapter(self, payload, (self.settings or Settings.from_env()).saes_dir)
        if isinstance(getattr(edit, "adapter", None), Adapter):  # a notebook Edit
            return edit.adapter
        raise TypeError(f"edited() takes a wb.Edit, an EditSpec or an Adapter, not {type(edit).__name__}.")

    @property
    def hf(self) -> Any:
        """The transformers causal LM (`hf_model`)."""
        return self.hf_model

    @property
    def layout(self) -> Architecture:
        """Where this family keeps its MLP (module paths, norms): `models/layout.py`."""
        return self.architecture

    @property
    def model_id(self) -> str:
        return self.source.model_id

    @property
    def config(self) -> Any:
        return self.hf_model.config

    @property
    def architecture(self) -> Architecture:
        return layout.architecture(self.hf_model)

    @property
    def n_layers(self) -> int:
        return layout.n_layers(self.hf_model)

    @property
    def d_model(self) -> int:
        return layout.d_model(self.hf_model)

    @property
    def d_mlp(self) -> int:  # from the weight: GPT-2's config leaves n_inner unset
        return layout.d_mlp(self.hf_model)

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    @property
    def dtype(self) -> Any:
        """torch dtype the weights are held in (edits compile in it)."""
        return next(self.hf_model.parameters()).dtype

    @property
    def device(self) -> Any:
        return next(self.hf_model.parameters()).device

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.hf_model.parameters())

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"Layer {layer} is out of range: {self.model_id} has layers 0-{self.n_layers - 1}.")

    def check_neurons(self, neurons: list[int]) -> None:
        bad = [n for n in neurons if not 0 <= n < self.d_mlp]
        if bad:
            raise ValueError(f"Neurons {bad[:5]} are out of range: d_mlp is {self.d_mlp}.")

    def summary(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "source": self.source.describe(),
            "path": str(self.path),
            "layers": self.n_layers,
            "d_model": self.d_model,
            "d_mlp": self.d_mlp,
            "vocab_size": self.vocab_size,
            "parameters": sum(p.numel() for p in self.hf_model.parameters()),
            "weights_sha256": self.weights_sha256,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "load_seconds": round(self.load_seconds, 2),
        }


def resolve_checkpoint(source: ModelSource, settings: Settings, progress: Callable[[str], None] | None = None) -> Path:
    """The local safetensors folder for a source, building or downloading it if needed."""
    if source.kind == "embedded":
        return build_embedded_checkpoint(settings.models_dir, progress)
    if source.kind == "tiny":
        return build_tiny_checkpoint(settings.models_dir, TinyConfig(family=source.location or "gemma3"))
    if source.kind == "local":
        return Path(source.location)
    if source.kind == "gguf":
        return gguf_checkpoint(Path(source.location), settings.models_dir, progress)
    if hub_offline():
        raise RuntimeError(
            f"The Hugging Face hub is switched off (HF_HUB_OFFLINE=1), so {source.location!r} "
            "cannot be downloaded. Use the embedded default or a local folder."
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                source.location,
                allow_patterns=["*.safetensors", "*.json", "tokenizer*", "*.model"],
            )
        )
    except Exception as err:  # network errors come in many types
        raise RuntimeError(f"Could not download {source.location!r} from the hub: {err}") from err


class EditedModel:
    """A model with one edit applied, over the untouched base: `ModelBundle.edited(edit)`.

    As a context manager, every forward pass this thread runs in the block is edited. As a handle,
    each call (`edited(...)`, `.generate`, `.run_with_cache`) runs the base model with the edit
    applied for that call only; the base itself never changes."""

    def __init__(self, bundle: ModelBundle, adapter: Any) -> None:
        self.bundle, self.adapter = bundle, adapter
        self._blocks: list[AbstractContextManager[None]] = []

    def __repr__(self) -> str:
        what = "the base" if self.adapter is None else f"{len(self.adapter.layers)} edited layer(s)"
        return f"EditedModel({self.bundle.model_id!r}, {what})"

    def _use(self) -> AbstractContextManager[None]:
        from workbench.adapters import use

        return use(self.bundle, self.adapter)

    def __enter__(self) -> EditedModel:
        block = self._use()
        block.__enter__()
        self._blocks.append(block)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._blocks.pop().__exit__(*exc)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The HF model's forward with the edit applied."""
        with self._use():
            return self.bundle.hf_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """transformers' `generate` with the edit applied."""
        with self._use():
            return self.bundle.hf_model.generate(*args, **kwargs)

    def run_with_cache(self, *args: Any, **kwargs: Any) -> Any:
        """The bridge's `run_with_cache` (TransformerLens hook names) with the edit applied."""
        with self._use():
            return self.bundle.bridge.run_with_cache(*args, **kwargs)


def load_bundle(
    source: ModelSource,
    settings: Settings | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    tune_process: bool = False,
) -> ModelBundle:
    """Load a model source as a ModelBundle, on `settings.device` in `settings.dtype`
    (default: float32, CUDA when torch sees a GPU, else the CPU).

    `tune_process=True` also applies the speed and memory settings of a process that serves
    one model to many threads (the app and the CLI pass it): `MKL_DISABLE_FAST_MM=1` in
    `os.environ`, glibc's `mallopt` (a fixed mmap threshold, two arenas) and a `malloc_trim`
    after the load, the measured CPU unembedding put in place of this model's `lm_head.forward`,
    the tokenizer's unused Python vocabulary tables dropped, and what the load left alive frozen
    out of Python's garbage collector (`gc.freeze`). The first two affect the whole
    process for its life (mallopt cannot be undone), which is why the default leaves them off;
    none changes a result. What each does and why: `workbench/models/process.py`."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    from workbench.models.bridge_threads import make_call_state_thread_local
    from workbench.models.tokenizer_threads import serialise_encoding

    make_call_state_thread_local()  # the shared model runs in many threads (models/bridge_threads.py)
    settings = settings or Settings.from_env()
    if tune_process:
        tune_process_before_load()  # before the first large allocation and product (models/process.py)
    t0 = time.perf_counter()
    path = resolve_checkpoint(source, settings, progress)
    source = replace(source, note=conversion_note(path) or source.note)  # "dequantised from Q4_1 GGUF ..."
    check_safetensors_folder(path)
    _check_architecture(path)
    tokenizer = _load_tokenizer(path, drop_tables=tune_process)
    if len(tokenizer) < 100:
        raise RuntimeError(
            f"The tokenizer in {path} is empty or missing ({len(tokenizer)} tokens); save the "
            "tokenizer files beside the weights."
        )
    device, dtype = resolve_device(settings.device), resolve_dtype(settings.dtype)
    hf_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, use_safetensors=True).to(device)  # type: ignore[arg-type]
    hf_model.eval()
    hf_model.requires_grad_(False)
    bridge = TransformerBridge.boot_transformers(
        str(path), hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )
    bridge.eval()
    _check_shared(hf_model, bridge)
    serialise_encoding(bridge.tokenizer)  # one tokenizer, many threads (models/tokenizer_threads.py)
    digest = cached_folder_hash(path, hf_model)
    if tune_process:
        tune_process_after_load(hf_model)  # the measured unembedding, the freed heap back (models/process.py)
    return ModelBundle(
        source=source,
        path=path,
        hf_model=hf_model,
        bridge=bridge,
        tokenizer=bridge.tokenizer,
        weights_sha256=digest,
        load_seconds=time.perf_counter() - t0,
        settings=settings,
    )


def _check_architecture(path: Path) -> layout.Architecture:
    """The folder's family from config.json, before any weight is read: an unknown one gets
    the sentence naming the supported families (layout.UnsupportedArchitecture)."""
    import json

    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path} has no config.json, so its architecture is unknown.")
    try:
        model_type = json.loads(config.read_text()).get("model_type", "")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config} is not valid JSON: {err}") from err
    return layout.architecture_for(str(model_type))


def _load_tokenizer(path: Path, *, drop_tables: bool = False) -> Any:
    """The tokenizer, loaded once with `add_bos_token=True`.

    The TransformerLens bridge wants a tokenizer that prepends BOS and, when handed one that
    was not loaded with that flag, loads a second copy from disk. For Gemma 3's 262k-token
    vocabulary a copy costs ~180 MB, so ask for the flag up front; the bundle uses the
    bridge's tokenizer either way. Tokenizers without a BOS token refuse the flag, and keep
    their default.

    A class in FILE_BACKED_TOKENIZERS is not constructed: its from_pretrained builds Python
    copies of tokenizer.json's vocabulary and merges only to rebuild the same Rust tokenizer,
    and that heap stays fragmented after they are freed (13 MB for Gemma 3). Such a folder is
    loaded straight from its tokenizer.json, with the class's padding side.

    `drop_tables` (the load's `tune_process`) frees the Python vocabulary tables the tokenizer
    keeps after construction (`_drop_construction_tables`): private attributes, so only on request.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    kwargs: dict[str, Any] = {}
    loader: Any = AutoTokenizer
    cls = _configured_tokenizer_class(path)
    if cls in FILE_BACKED_TOKENIZERS and (path / "tokenizer.json").exists():
        loader, kwargs = PreTrainedTokenizerFast, {"padding_side": FILE_BACKED_TOKENIZERS[cls]}
    try:
        tokenizer = loader.from_pretrained(str(path), add_bos_token=True, **kwargs)
    except (ValueError, TypeError, AttributeError):
        tokenizer = loader.from_pretrained(str(path), **kwargs)
    if drop_tables:
        _drop_construction_tables(tokenizer)
    return tokenizer


# Tokenizer classes whose from_pretrained only rebuilds tokenizer.json's own Rust tokenizer
# (checked: the same ids, decodes and padding on 3,000 corpus articles and special-token text,
# tests/integration/test_embedded_tokenizer.py), with the padding side the class defaults to.
FILE_BACKED_TOKENIZERS = {"GemmaTokenizer": "left"}


def _configured_tokenizer_class(path: Path) -> str | None:
    """The tokenizer class a checkpoint's tokenizer_config.json names (None without one)."""
    import json

    try:
        value = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _drop_construction_tables(tokenizer: Any) -> None:
    """Free the Python copies of the vocabulary and merges that a fast tokenizer keeps after
    building its Rust backend (`_vocab`: 262k-entry dict, `_merges`: 515k tuples for Gemma 3,
    ~170 MB). transformers 5 reads them only while constructing the backend, which encodes,
    decodes and saves on its own, so the bundle's tokenizer works the same without them."""
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        return
    for name in ("_vocab", "_merges"):
        if isinstance(getattr(tokenizer, name, None), (dict, list)):
            setattr(tokenizer, name, None)


def _check_shared(hf_model: Any, bridge: Any) -> None:
    """Fail loudly if the bridge ever stops sharing W_out storage with the HF model."""
    hf_ptr = layout.w_out(hf_model, 0).data_ptr()
    tl_ptr = bridge.blocks[0].mlp.W_out.data_ptr()
    if hf_ptr != tl_ptr:
        raise RuntimeError("TransformerLens bridge does not share weights with the HF model.")
