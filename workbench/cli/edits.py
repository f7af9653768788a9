"""CLI for edits: `erase`, `compare`, `apply`, `evaluate`, `export-checkpoint`, `export-adapter`
(wired in by workbench/cli/main.py).

The same library calls as the app's Edit & preview page: erase.erase, spec.save_spec /
load_spec, compile.compile_spec, generate.stream_pair, evaluate.evaluate,
exports.export_checkpoint, exports.export_lora.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from workbench.cli.common import UserError, load_bundle_for
from workbench.models.safety import refuse_pickle_file


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from workbench.benchmark.relearn import RelearnConfig
    from workbench.methods.erase import DEFAULT_METHOD, METHODS

    r = RelearnConfig()
    relearn_help = (f"also run the relearning test: fine-tune a copy of the edited model on up to {r.max_paragraphs} "
                    f"sentences about the concept ({r.epochs} epochs, lr {r.lr:g}, {r.weights} weights) and probe it "
                    "again; its row sits beside the re-introduction rows (minutes on a CPU)")

    p = sub.add_parser("erase", help="erase a concept: fact set -> edit spec (+ payload) -> scorecard")
    p.add_argument("--concept", required=True,
                   help="a title of the embedded corpus ('Harry Potter') or any name; a name close to titles "
                        "gets them suggested (see --as-name)")
    p.add_argument("--about", default="", help="one line about a concept without an article, e.g. "
                                               "'action-adventure game series': guides its kind and the samples")
    p.add_argument("--as-name", action="store_true",
                   help="erase the name as given even where close titles exist: facts from the corpus sentences "
                        "that mention it and the model's own samples")
    p.add_argument("--out", required=True, help="where to write the spec JSON (payload goes beside it)")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS),
                   help=f"erasure method (default {DEFAULT_METHOD}; pisces and pisces-rows need a local SAE at the default SAE layer: `sae train`)")
    p.add_argument("--steps", type=int, help="optimisation steps (the methods that optimise: optimise*, pisces-rows, rewrite-optimise)")
    p.add_argument("--candidates", type=int, default=10, help="candidate rows/features to print")
    p.add_argument("--facts", help="a fact-set JSON (edited by hand) instead of building one")
    p.add_argument("--no-eval", action="store_true", help="skip the scorecard")
    p.add_argument("--search-strength", action="store_true",
                   help="raise the method's strength (x0.5, x1, x2) until the concept is gone or a control breaks, "
                        "scoring each level; keeps the strongest level whose controls held (up to 3x the time)")
    p.add_argument("--chat-template", action="store_true",
                   help="instruct models: sample the model's facts and the scorecard's generations through the "
                        "tokenizer's chat template (each prompt as one user turn); recorded in the spec")
    p.add_argument("--relearn", action="store_true", help=relearn_help)
    p.set_defaults(func=cmd_erase)

    p = sub.add_parser("compare", help="several erasure methods on one fact set, scored, side by side "
                                       "(the Erase page's 'Compare methods')")
    p.add_argument("--concept", required=True, help="a corpus title or any name, as for `erase`")
    p.add_argument("--about", default="", help="one line about a concept without an article, as for `erase`")
    p.add_argument("--as-name", action="store_true", help="erase the name as given, as for `erase`")
    p.add_argument("--methods", default=",".join([DEFAULT_METHOD, "rmu", "elm"]),
                   help=f"comma-separated methods, run in this order (default: %(default)s; any of {', '.join(METHODS)})")
    p.add_argument("--facts", help="a fact-set JSON for every method (default: built once, by the first method's erase)")
    p.add_argument("--steps", type=int, help="optimisation steps of the methods that optimise")
    p.add_argument("--chat-template", action="store_true", help="as for `erase`")
    p.add_argument("--relearn", action="store_true", help=relearn_help + "; for every method")
    p.add_argument("--out-dir", help="also write each method's spec (+ payload) and scorecard here as <method>.json, "
                                     "the fact set as facts.json and the table as compare.csv")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("apply", help="base vs edited generations of a spec")
    p.add_argument("spec")
    p.add_argument("--prompt", action="append", required=True, help="repeatable")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--chat-template", action="store_true",
                   help="instruct models: send each prompt as one user turn of the tokenizer's chat template")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("evaluate", help="scorecard of a spec for a concept")
    p.add_argument("spec")
    p.add_argument("--concept", required=True)
    p.add_argument("--json", help="also write the scorecard JSON here")
    p.add_argument("--relearn", action="store_true", help=relearn_help)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export-checkpoint", help="write an edited safetensors checkpoint folder")
    p.add_argument("spec")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-adapter", help="write a PEFT LoRA adapter folder (PEFT, vLLM multi-LoRA)")
    p.add_argument("spec")
    p.add_argument("--out", required=True)
    p.add_argument("--base-model", help="base model name for adapter_config.json (default: the spec's model id)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export_adapter)


def _load(args: argparse.Namespace, path_text: str) -> tuple[Any, Any, Any, Any]:
    """Bundle, spec, payload and compiled adapter; every failure is a UserError sentence."""
    from workbench.edits.compile import compile_spec
    from workbench.edits.spec import SpecError, load_spec
    from workbench.sae.sources import spec_sae_loader

    path = Path(path_text)
    try:
        refuse_pickle_file(path)
    except ValueError as err:
        raise UserError(str(err)) from err
    if not path.exists():
        raise UserError(f"Spec file {path} does not exist.")
    try:
        spec, payload = load_spec(path)
    except SpecError as err:
        raise UserError(str(err)) from err
    settings, bundle = load_bundle_for(args)
    try:
        spec.validate_for(bundle, payload=payload)
        adapter = compile_spec(spec, bundle, sae_loader=spec_sae_loader(settings.saes_dir), payload=payload or None)
    except (SpecError, ValueError) as err:
        raise UserError(str(err)) from err
    return bundle, spec, payload, adapter


def print_scorecard(card: Any) -> None:
    print(f"\n{card.headline}")
    print(f"Scorecard: {card.concept}  (score {card.score:.3f}; terms "
          + ", ".join(f"{k} {v:.2f}" for k, v in card.score_terms.items()) + ")")
    print(f"{'group':<12} {'metric':<40} {'before':>8} {'after':>8} {'delta':>8} {'n':>5}  want")
    for r in card.rows():
        fmt = lambda v: f"{v:8.3f}" if isinstance(v, int | float) else f"{'-':>8}"  # noqa: E731
        print(f"{r['group']:<12} {r['metric']:<40} {fmt(r['before'])} {fmt(r['after'])} {fmt(r['delta'])} {r['n']:>5}  {r['want']}")
    for v in card.verdicts:
        print(f"  {v}")
    for g in card.generations[:2]:
        print(f"\n  prompt: {g['prompt']}\n  before: {g['before']}\n  after:  {g['after']}")


def print_candidates(candidates: list[Any], n: int) -> None:
    from dataclasses import asdict

    if not candidates or n <= 0:
        return
    rows = [asdict(c) for c in candidates[:n]]
    cols = list(rows[0])
    print(f"\nCandidates (top {len(rows)} of {len(candidates)}):")
    print("  " + "  ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print("  " + "  ".join(f"{r[c]:>14.4g}" if isinstance(r[c], float) else f"{str(r[c]):>14}" for c in cols))


def concept_and_facts(args: argparse.Namespace, corpus: Any) -> Any:
    """Check `--concept` (saying when it is erased as a name) and read `--facts`; the FactSet, or
    None for erase to build one. Every failure is a UserError sentence."""
    from workbench.methods.erase import check_concept
    from workbench.methods.facts import FactSet

    try:
        how = check_concept(corpus, args.concept, as_name=args.as_name)
    except ValueError as err:
        raise UserError(str(err)) from err
    if how == "name":
        print(f"{args.concept!r} is not a corpus title: its facts come from the {len(corpus.containing([args.concept]))} "
              "article(s) that mention it and from the model's own samples.")
    if not args.facts:
        return None
    try:
        return FactSet.from_json(Path(args.facts).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"Cannot read the fact set {args.facts}: {err}") from err


def cmd_erase(args: argparse.Namespace) -> int:
    from workbench.corpus import load_wiki
    from workbench.edits.spec import save_spec
    from workbench.methods.erase import erase, erase_options
    from workbench.progress import TqdmProgress

    if args.relearn and args.no_eval:
        raise UserError("--relearn is part of the scorecard; drop --no-eval to run it.")
    corpus = load_wiki("en")
    facts = concept_and_facts(args, corpus)
    settings, bundle = load_bundle_for(args)
    progress = TqdmProgress()
    options = erase_options(args.method, steps=args.steps, score=not args.no_eval, relearn=args.relearn,
                            chat_template=args.chat_template, saes_dir=settings.saes_dir)
    search = None
    try:
        if args.search_strength:
            from workbench.methods.strength import search_strength

            search = search_strength(bundle, corpus, args.concept, args.method, progress, options=options,
                                     fact_set=facts, about=args.about, as_name=args.as_name)
            result = search.chosen
        else:
            result = erase(bundle, corpus, args.concept, args.method, progress, fact_set=facts, about=args.about,
                           as_name=args.as_name, options=options)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
    finally:
        progress.close()
    if search is not None:
        print(search.summary())
        for lev in search.levels:
            print(f"  x{lev.level:g}: {lev.outcome} ({lev.seconds:.0f} s)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = save_spec(result.spec, out, payload=result.payload or None)
    facts_path = out.with_suffix(".facts.json")
    facts_path.write_text(result.fact_set.to_json())
    print(f"wrote {out} ({len(spec.operations)} operation(s)"
          + (f", payload {spec.payload.file}" if spec.payload else "") + f") in {result.seconds:.0f} s; "
          f"fact set ({len(result.fact_set.facts)} facts, editable) in {facts_path}")
    print_candidates(result.candidates, args.candidates)
    if result.scorecard is not None:
        print_scorecard(result.scorecard)
        out.with_suffix(".scorecard.json").write_text(result.scorecard.to_json())
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Each method's `erase` (scored) on one fact set, one after the other, then the table of
    benchmark/compare.py, the same as the Erase page's."""
    from workbench.benchmark.compare import base_sentence, compare_frame, compare_text
    from workbench.corpus import load_wiki
    from workbench.edits.spec import save_spec
    from workbench.methods.erase import METHODS, check_method, erase, erase_options
    from workbench.progress import TqdmProgress

    methods = list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise UserError(f"Unknown erasure method(s) {', '.join(unknown) or '(none given)'}; choose from "
                        f"{', '.join(METHODS)}.")
    corpus = load_wiki("en")
    facts = concept_and_facts(args, corpus)
    settings, bundle = load_bundle_for(args)
    options = {m: erase_options(m, steps=args.steps, relearn=args.relearn, chat_template=args.chat_template,
                                saes_dir=settings.saes_dir) for m in methods}
    for m in methods:  # what cannot run here is said before any method's work starts
        try:
            check_method(bundle, m, options[m])
        except (ValueError, FileNotFoundError) as err:
            raise UserError(f"{m}: {err}") from err
    out = Path(args.out_dir) if args.out_dir else None
    runs = []
    for m in methods:
        print(f"\n{m}: erasing '{args.concept}'" + (f" on the same {len(facts.facts)} facts" if facts else ""))
        progress = TqdmProgress()
        try:  # the first erase builds the fact set when none was given; every later one gets that same set
            result = erase(bundle, corpus, args.concept, m, progress, fact_set=facts, about=args.about,
                           as_name=args.as_name, options=options[m])
        except (ValueError, FileNotFoundError) as err:
            raise UserError(f"{m}: {err}") from err
        finally:
            progress.close()
        facts = result.fact_set
        runs.append((m, result))
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            save_spec(result.spec, out / f"{m}.json", payload=result.payload or None)
            if result.scorecard is not None:
                (out / f"{m}.scorecard.json").write_text(result.scorecard.to_json())
    frame = compare_frame(runs)
    assert facts is not None  # set by the first run
    print(f"\n{len(runs)} methods on the same {len(facts.facts)} facts of '{facts.concept}':\n{compare_text(frame)}")
    print(base_sentence(runs))
    if out is not None:
        (out / "facts.json").write_text(facts.to_json())
        frame.to_csv(out / "compare.csv", index=False)
        print(f"\nwrote each method's spec and scorecard, facts.json and compare.csv to {out}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from workbench.generate import GenerationResult, SamplingParams, stream_pair

    bundle, spec, _, adapter = _load(args, args.spec)
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    if spec.chat_template and not args.chat_template:
        print("note: this edit was made through the chat template; add --chat-template to preview it the same way.")
    for prompt in args.prompt:
        print(f"\nprompt: {prompt}")
        results = (GenerationResult(prompt=prompt, edited=False), GenerationResult(prompt=prompt, edited=True))
        try:  # base and edited decode as one batch of 2; a terminal shows them one after the other
            pieces: tuple[list[str], list[str]] = ([], [])
            for side, piece in stream_pair(bundle, prompt, adapter, params, results=results,
                                           chat_template=args.chat_template):
                pieces[side].append(piece)
        except ValueError as err:
            raise UserError(str(err)) from err
        for label, res, text in zip(("base  ", "edited"), results, pieces, strict=True):
            print(f"  {label}: {''.join(text)}   [{res.tokens_per_second:.1f} tok/s, {res.stop_reason}]")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from workbench.benchmark.relearn import RelearnConfig
    from workbench.benchmark.scorecard import EvalOptions, evaluate
    from workbench.progress import NULL_PROGRESS, TqdmProgress

    bundle, _, _, adapter = _load(args, args.spec)
    progress = TqdmProgress() if args.relearn else NULL_PROGRESS  # the relearning test reports each step
    try:
        options = EvalOptions(relearn=RelearnConfig() if args.relearn else None)
        card = evaluate(bundle, args.concept, adapter, options=options, progress=progress)
    except KeyError as err:
        raise UserError(err.args[0] if err.args else f"Unknown concept {args.concept!r}.") from err
    finally:
        progress.close()
    print_scorecard(card)
    if args.json:
        Path(args.json).write_text(card.to_json())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from workbench.exports import export_checkpoint

    bundle, spec, _, adapter = _load(args, args.spec)
    try:
        out = export_checkpoint(bundle, adapter, spec, Path(args.out), overwrite=args.overwrite)
    except (ValueError, FileExistsError) as err:
        raise UserError(str(err)) from err
    print(f"wrote {out}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0


def cmd_export_adapter(args: argparse.Namespace) -> int:
    from workbench.exports import export_lora
    from workbench.exports.lora import describe_lora_export

    bundle, spec, _, adapter = _load(args, args.spec)
    try:
        out = export_lora(bundle, adapter, spec, Path(args.out), base_model=args.base_model, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as err:
        raise UserError(str(err)) from err
    print(describe_lora_export(out, len(adapter.deltas)).replace("; vLLM", "\n  vLLM", 1))
    return 0
