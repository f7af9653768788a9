"""The app's job bodies: each `*_job(...)` returns a `JobFn` (progress -> summary, or (summary,
result)) that `JobManager.start` queues; the pages start them, the library functions they call
do the work. Also where a user's export folder goes (`export_dir`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.config import ExportLimits
from workbench.jobs.manager import SERVER_OWNER, JobFn, check_owner
from workbench.progress import FileProgress

if TYPE_CHECKING:
    from sae_lens import SAE

    from workbench.adapters import Adapter
    from workbench.benchmark.scorecard import EvalOptions
    from workbench.config import Settings
    from workbench.corpus.documents import Corpus
    from workbench.edits.spec import EditSpec
    from workbench.methods.erase import EraseOptions
    from workbench.methods.facts import FactSet
    from workbench.models import ModelBundle
    from workbench.sae.train import SAETrainConfig
    from workbench.store import Store


EXPORT_FORMATS = {"checkpoint": "the edited checkpoint", "lora": "a PEFT LoRA adapter"}


def safe_name(name: str) -> str:
    """`name` as one folder name: runs of other characters become '-', no leading dots."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".-")[:80] or "edit"


def export_dir(exports_dir: Path, owner: str, spec: EditSpec, fmt: str) -> Path:
    """Where `owner`'s export of `spec` goes: `<exports_dir>/<owner>/<name>-<spec sha[:8]>` (a
    LoRA folder with '-lora' after it), so no user's export overwrites another's and a changed
    edit gets its own folder."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    folder = f"{safe_name(spec.name)}-{spec.sha256()[:8]}" + ("-lora" if fmt == "lora" else "")
    return Path(exports_dir) / check_owner(owner) / folder


# ---------------------------------------------------------------------- job bodies
def catalogue_size(tokens: int | None) -> int:
    """Corpus tokens an SAE job catalogues over: `tokens`, or (None) the app's one setting for a
    full SAE's catalogue, `FirstStartConfig.full_catalogue_tokens`, so a catalogue built on Home
    matches the first start's."""
    if tokens is not None:
        return tokens
    from workbench.first_start import FirstStartConfig

    return FirstStartConfig.full_catalogue_tokens


def prepare_job(
    store: Store, bundle: ModelBundle, *, stats_tokens: int = 20_000, layers: list[int] | None = None,
    vocab: bool = True, stats: bool = True,
) -> JobFn:
    """Vocab projections and neuron statistics on the embedded corpus."""

    def run(progress: FileProgress) -> str:
        from workbench.corpus import load_wiki
        from workbench.prepare import (
            PrepareConfig,
            build_neuron_stats,
            build_vocab_projections,
            register_model,
        )

        cfg = PrepareConfig(layers=layers, stat_tokens=stats_tokens)
        reports = []
        register_model(store, bundle)
        if vocab:
            reports += build_vocab_projections(store, bundle, cfg, progress)
        if stats:
            reports += build_neuron_stats(store, bundle, load_wiki("en"), cfg, progress)
        built = [r for r in reports if not r.skipped]
        return f"built {len(built)} slice(s), {len(reports) - len(built)} already up to date"

    return run


def concept_job(
    store: Store, bundle: ModelBundle, name: str, *, titles: list[str] | None = None, terms: list[str] | None = None,
    n_docs: int = 48, neutral_corpus_id: str | None = None, force: bool = False, texts: list[str] | None = None,
) -> JobFn:
    """Build one concept set (corpus titles, terms and/or pasted texts) and its analyses into the store."""

    def run(progress: FileProgress) -> str:
        from workbench.corpus import build_concept_set, load_wiki
        from workbench.prepare import PrepareConfig, build_concept, register_model

        wiki = load_wiki("en")
        concept = build_concept_set(wiki, name, titles=titles or (), terms=terms or (),
                                    n_positive=n_docs, n_negative=2 * n_docs, texts=texts or ())
        progress.message(f"{len(concept.positive)} concept docs, {len(concept.negative)} neutral docs")
        register_model(store, bundle)
        report = build_concept(store, bundle, concept, PrepareConfig(force=force), progress,
                               neutral_corpus_id=neutral_corpus_id)
        if report.skipped:
            return f"concept {concept.concept_id} already built (tick 'rebuild' to redo it)"
        return f"concept {concept.concept_id}: {report.rows} contrast rows in {report.seconds:.1f} s"

    return run


def scorecard_job(bundle: ModelBundle, concept: str, adapter: Adapter, options: EvalOptions | None = None) -> JobFn:
    """Scorecard of an edit (workbench.benchmark.scorecard) for one concept; the result is the Scorecard.
    `options` are EvalOptions (None: the defaults)."""

    def run(progress: FileProgress) -> tuple[str, Any]:
        from workbench.benchmark.scorecard import EvalOptions, evaluate

        card = evaluate(bundle, concept, adapter, options=options or EvalOptions(), progress=progress)
        return f"score {card.score:.3f}", card

    return run


def export_job(bundle: ModelBundle, adapter: Adapter, spec: EditSpec, out_dir: Path, store: Store | None = None,
               fmt: str = "checkpoint", owner: str = SERVER_OWNER, limits: ExportLimits | None = None) -> JobFn:
    """Write the edit as an edited checkpoint folder (`fmt="checkpoint"`, safetensors for plain
    transformers) or a PEFT LoRA adapter folder (`fmt="lora"`, PEFT and vLLM multi-LoRA), and
    record the spec in the store under `owner`; the result is the folder's path. The pages pass
    `out_dir = export_dir(settings.exports_dir, owner, spec, fmt)` and the server's
    `limits`: expired exports are deleted first, then an export past the owner's quota is
    refused (QuotaExceeded) before anything is written."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")

    def run(progress: FileProgress) -> tuple[str, Path]:
        from workbench.exports import export_checkpoint, export_lora
        from workbench.exports.disk import check_quota, expire_exports, export_bytes, folder_bytes
        from workbench.exports.lora import describe_lora_export

        if limits is not None:
            root = Path(out_dir).parent.parent  # <exports_dir>/<owner>/<folder>
            expire_exports(root, limits)
            need = export_bytes(bundle, adapter, fmt) - folder_bytes(out_dir)  # a re-export replaces its folder
            check_quota(root, owner, need, limits)
        progress.stage(f"exporting {EXPORT_FORMATS[fmt]} to {out_dir}")
        if fmt == "lora":
            path = export_lora(bundle, adapter, spec, out_dir, overwrite=True)
            summary = describe_lora_export(path, len(adapter.deltas))
        else:
            path = export_checkpoint(bundle, adapter, spec, out_dir, overwrite=True)
            summary = f"exported to {path}"
        if store is not None:
            store.save_edit(f"{spec.sha256()[:16]}-{owner}", bundle.model_id, spec.name, spec.to_json(),
                            {"exported_to": str(path), "format": fmt}, owner=owner)
        return summary, path

    return run


def fact_set_job(bundle: ModelBundle, corpus: Corpus, concept: str, about: str = "", chat_template: bool = False) -> JobFn:
    """Build a concept's fact set (methods.facts.build_fact_set); the result is the FactSet, which the
    page shows for editing before the erasure runs. `chat_template`: sample the model through its
    tokenizer's chat template."""

    def run(progress: FileProgress) -> tuple[str, Any]:
        from workbench.methods.facts import build_fact_set

        facts = build_fact_set(bundle, corpus, concept, progress=progress, about=about, chat_template=chat_template)
        return f"{len(facts.facts)} facts about '{facts.concept}'", facts

    return run


def erase_job(bundle: ModelBundle, corpus: Corpus, concept: str, method: str, fact_set: FactSet | None,
              options: EraseOptions) -> JobFn:
    """Run the erase pipeline (methods.erase.erase); the result is the EraseResult (spec, payload,
    candidates, scorecard)."""

    def run(progress: FileProgress) -> tuple[str, Any]:
        from workbench.methods.erase import erase

        result = erase(bundle, corpus, concept, method, progress, fact_set=fact_set, options=options)
        score = f", score {result.scorecard.score:.3f}" if result.scorecard is not None else ""
        return f"erased '{concept}' with {method} in {result.seconds:.0f} s{score}", result

    return run


def sae_job(store: Store, bundle: ModelBundle, settings: Settings, cfg: SAETrainConfig,
            catalogue_tokens: int | None = None) -> JobFn:
    """Train an SAE (cached per config: a finished config is not retrained) and catalogue it
    into the store, so the Feature browser can show it. `catalogue_tokens`: None for the app's
    full catalogue (`catalogue_size`)."""

    def run(progress: FileProgress) -> str:
        from workbench.sae.index import catalogue_into_store
        from workbench.sae.train import train_sae

        result = train_sae(bundle, cfg, settings, progress=progress)
        m = result.metrics
        quality = f"{result.sae_id}: EV {m.explained_variance:.3f}, L0 {m.l0:.1f}, dead {m.dead_fraction:.0%}"
        progress.message(quality)
        cat = catalogue_into_store(store, bundle, result.sae, result.sae_id, result.sha256, result.path,
                                   m.to_dict(), max_tokens=catalogue_size(catalogue_tokens), progress=progress)
        return f"{quality}; {cat.d_sae} features catalogued"

    return run


def sae_catalogue_job(store: Store, bundle: ModelBundle, path: Path, catalogue_tokens: int | None = None) -> JobFn:
    """Catalogue a local SAE folder into the store."""

    def run(progress: FileProgress) -> str:
        from workbench.sae.index import catalogue_folder

        cat = catalogue_folder(store, bundle, path, max_tokens=catalogue_size(catalogue_tokens), progress=progress)
        return f"{cat.sae_id}: {cat.d_sae} features catalogued over {cat.n_tokens:,} tokens"

    return run


def sae_contrast_job(store: Store, bundle: ModelBundle, sae: SAE[Any], sae_id: str, concept_id: str,
                     max_tokens: int = 20_000) -> JobFn:
    """Mean activation of every SAE feature on a stored concept set's documents vs neutral ones,
    saved so the Feature browser can rank features by concept."""

    def run(progress: FileProgress) -> str:
        import json

        from workbench.corpus import build_concept_set, load_wiki
        from workbench.sae.catalogue import feature_contrast

        row = store.concept_sets().set_index("concept_id").loc[concept_id]
        wiki = load_wiki("en")
        titles = [t for t in json.loads(row["positive_titles_json"]) if wiki.has(t)]  # pasted texts are not stored
        if not titles:
            raise ValueError(f"Concept set '{row['name']}' was built from pasted text only, which the store does "
                             "not keep; rebuild it with corpus titles or terms to rank SAE features by it.")
        concept = build_concept_set(wiki, str(row["name"]), titles=titles,
                                    terms=json.loads(row["terms_json"]), n_negative=int(row["n_negative"]))
        progress.stage(f"SAE feature activations on '{row['name']}' vs neutral documents")
        contrast = feature_contrast(bundle, sae, concept, max_tokens=max_tokens)
        store.save_feature_contrast(sae_id, concept_id, contrast)
        top = contrast.head(3)["feature"].tolist()
        return f"contrast of {len(contrast):,} features on '{row['name']}'; strongest: {top}"

    return run


def pretrained_sae_job(store: Store, bundle: ModelBundle, release: str, sae_id: str,
                       catalogue_tokens: int | None = None, hub: bool = False) -> JobFn:
    """Load an SAE from SAELens's registry (the local HF cache; the hub too when `hub`, which the
    page passes as Settings.allow_hub; a clear error otherwise) and catalogue it into the store."""

    def run(progress: FileProgress) -> str:
        from workbench.sae.index import catalogue_pretrained

        progress.stage(f"loading {release}/{sae_id}")
        cat = catalogue_pretrained(store, bundle, release, sae_id, max_tokens=catalogue_size(catalogue_tokens),
                                   progress=progress, hub=hub)
        return f"{cat.sae_id}: {cat.d_sae} features catalogued over {cat.n_tokens:,} tokens"

    return run
