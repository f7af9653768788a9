"""The lab's edit library (workbench/edits/library.py) on the tiny model: publish, list, reload
round trip, republishing replaces, only the author withdraws, the comparison table, refusals
with their sentences, and the store's migration to the library table."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from workbench.benchmark.scorecard import MetricRow, Scorecard
from workbench.config import Limits, Settings
from workbench.edits import library
from workbench.edits.spec import (
    AblateValueVectors,
    EditSpec,
    ModelRef,
    OptimiseValueVectors,
    SpecError,
    ValueVectorDelta,
    binary_kind,
)
from workbench.models import ModelBundle
from workbench.store import SCHEMA_VERSION, Store

ALICE, BOB = "anon-00000000000000a1", "anon-00000000000000b2"


def make_spec(bundle: ModelBundle, name: str = "erase-paris", rows: tuple[int, ...] = (3, 4),
              seed: int = 0) -> tuple[EditSpec, dict[str, torch.Tensor]]:
    """An ablation and an optimised delta (a payload tensor), as an erase leaves them."""
    delta = torch.randn(len(rows), bundle.d_model, generator=torch.Generator().manual_seed(seed))
    spec = EditSpec(name=name, notes="paris, optimise", model=ModelRef(id=bundle.model_id,
                                                                       weights_sha256=bundle.weights_sha256),
                    operations=[AblateValueVectors(layer=0, neurons=[1, 2]),
                                OptimiseValueVectors(targets=[ValueVectorDelta(layer=1, rows=list(rows),
                                                                               delta="opt.l1")])])
    return spec, {"opt.l1": delta}


def make_card(bundle: ModelBundle, name_dep_after: float = 0.05, general_after: float = 0.9) -> Scorecard:
    metrics = [MetricRow("efficacy", "concept answered", 0.8, name_dep_after, 10, "low"),
               MetricRow("efficacy", "concept answered (name-dependent)", 0.8, name_dep_after, 10, "low"),
               MetricRow("specificity", "neighbours answered", 0.5, 0.5, 8, "= base"),
               MetricRow("specificity", "general answered", 0.9, general_after, 40, "= base"),
               MetricRow("specificity", "other concepts first-token acc", 0.8, 0.8, 60, "= base"),
               MetricRow("fluency", "neutral perplexity", 20.0, 20.1, 900, "= base")]
    return Scorecard("Paris", "test", bundle.weights_sha256, metrics, 0.71, {}, ["PASS: concept answered 0.05"], [])


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store(settings.store_path)


def library_files(store: Store) -> list[Path]:
    folder = library.library_dir(store)
    return sorted(folder.iterdir()) if folder.exists() else []


def test_publish_lists_and_reloads_the_same_spec_and_payload(store: Store, settings: Settings,
                                                             tiny_bundle: ModelBundle) -> None:
    spec, payload = make_spec(tiny_bundle)
    card = make_card(tiny_bundle)
    entry = library.publish(store, settings, ALICE, spec, payload, card, bundle=tiny_bundle)

    assert entry.author == ALICE and entry.model_id == tiny_bundle.model_id and entry.name == "erase-paris"
    assert entry.note == "paris, optimise"  # the spec's notes when no note is given
    assert entry.published_at is not None and len(entry.operations) == 2
    assert entry.payload_path == settings.cache_dir / "library" / f"{entry.entry_id}.safetensors"
    data = entry.payload_path.read_bytes()
    assert binary_kind(data) == "a safetensors file" and entry.payload_bytes == len(data)
    assert library_files(store) == [entry.payload_path]  # written whole: no temporary sibling left
    summary = entry.scorecard
    assert summary is not None and summary.tier == card.tier and summary.score == pytest.approx(0.71)
    assert summary.rows == card.rows() and summary.verdicts == card.verdicts and summary.concept == "Paris"

    assert [e.entry_id for e in library.entries(store, tiny_bundle.model_id)] == [entry.entry_id]
    assert library.entries(store, "another-model") == []
    assert library.entry(store, entry.entry_id) == entry

    loaded, tensors = library.load(entry)
    assert loaded.model_dump(exclude={"payload"}) == spec.model_dump(exclude={"payload"})
    assert loaded.payload is not None and loaded.payload.file == "erase-paris.payload.safetensors"
    assert set(tensors) == {"opt.l1"} and torch.equal(tensors["opt.l1"], payload["opt.l1"])
    loaded.validate_for(tiny_bundle, payload=tensors)  # re-applies as it was published
    names = [name for name, _ in library.download_files(entry)]
    assert names == ["erase-paris.json", "erase-paris.payload.safetensors"]


def test_an_edit_without_payload_publishes_and_reloads_without_a_file(store: Store, settings: Settings,
                                                                      tiny_bundle: ModelBundle) -> None:
    spec, _ = make_spec(tiny_bundle)
    spec = spec.model_copy(update={"operations": spec.operations[:1]})
    entry = library.publish(store, settings, ALICE, spec, None, bundle=tiny_bundle)
    assert entry.payload_path is None and entry.scorecard is None and entry.tier == library.NOT_SCORED
    assert library_files(store) == []
    loaded, tensors = library.load(entry)
    assert tensors == {} and loaded.sha256() == spec.sha256()


def test_republishing_the_same_edit_replaces_the_authors_entry(store: Store, settings: Settings,
                                                               tiny_bundle: ModelBundle) -> None:
    spec, payload = make_spec(tiny_bundle)
    first = library.publish(store, settings, ALICE, spec, payload, make_card(tiny_bundle), bundle=tiny_bundle)
    renamed = spec.model_copy(update={"name": "erase-paris-v2"})
    again = library.publish(store, settings, ALICE, renamed, payload, None, note="better name", bundle=tiny_bundle)
    assert again.entry_id == first.entry_id and again.name == "erase-paris-v2" and again.note == "better name"
    assert again.scorecard == first.scorecard  # the same edit: its earlier scorecard is kept
    assert len(library.entries(store)) == 1 and library_files(store) == [first.payload_path]

    bobs = library.publish(store, settings, BOB, spec, payload, None, bundle=tiny_bundle)  # same edit, other author
    changed_spec, changed = make_spec(tiny_bundle, seed=1)  # other payload tensors: another edit
    other = library.publish(store, settings, ALICE, changed_spec, changed, None, bundle=tiny_bundle)
    ids = {e.entry_id for e in library.entries(store)}
    assert ids == {first.entry_id, bobs.entry_id, other.entry_id} and len(ids) == 3


def test_only_the_author_withdraws_and_withdrawing_deletes_the_payload(store: Store, settings: Settings,
                                                                       tiny_bundle: ModelBundle) -> None:
    spec, payload = make_spec(tiny_bundle)
    entry = library.publish(store, settings, ALICE, spec, payload, None, bundle=tiny_bundle)
    assert entry.payload_path is not None
    with pytest.raises(PermissionError, match=f"Only its author can withdraw library entry {entry.entry_id}"):
        library.withdraw(store, entry.entry_id, BOB)
    assert library.entry(store, entry.entry_id) is not None and entry.payload_path.exists()

    gone = library.withdraw(store, entry.entry_id, ALICE)
    assert gone.entry_id == entry.entry_id
    assert library.entries(store) == [] and library.entry(store, entry.entry_id) is None
    assert not entry.payload_path.exists() and library_files(store) == []
    with pytest.raises(ValueError, match="no library entry .* withdrawn already"):
        library.withdraw(store, entry.entry_id, ALICE)
    with pytest.raises(ValueError, match="withdrawn, or the server's cache was changed"):
        library.load(entry)  # a page that still holds the entry gets a sentence, not a traceback


def test_refusals_say_why_and_write_nothing(store: Store, settings: Settings, tiny_bundle: ModelBundle) -> None:
    spec, payload = make_spec(tiny_bundle)
    other = spec.model_copy(update={"model": ModelRef(id="gemma-3-270m", weights_sha256="f" * 64)})
    with pytest.raises(ValueError, match="not for the model this library serves"):
        library.publish(store, settings, ALICE, other, payload, None, bundle=tiny_bundle)
    small = replace(settings, limits=Limits(max_upload_bytes=256))
    with pytest.raises(ValueError, match=r"The payload has [\d,]+ bytes; the library takes payloads up to 256 bytes"):
        library.publish(store, small, ALICE, spec, payload, None, bundle=tiny_bundle)
    with pytest.raises(SpecError, match="no payload was given"):
        library.publish(store, settings, ALICE, spec, {}, None, bundle=tiny_bundle)
    with pytest.raises(ValueError, match="A job owner must be"):
        library.publish(store, settings, "../bob", spec, payload, None, bundle=tiny_bundle)
    foreign = replace(make_card(tiny_bundle), model_weights_sha256="e" * 64)
    with pytest.raises(ValueError, match="scorecard was measured on other model weights"):
        library.publish(store, settings, ALICE, spec, payload, foreign, bundle=tiny_bundle)
    with pytest.raises(ValueError, match="no operations"):
        library.publish(store, settings, ALICE, spec.model_copy(update={"operations": []}), {}, bundle=tiny_bundle)
    assert library.entries(store) == [] and library_files(store) == []


def test_compare_puts_entries_side_by_side(store: Store, settings: Settings, tiny_bundle: ModelBundle) -> None:
    spec_a, pay_a = make_spec(tiny_bundle, "strong")
    spec_b, pay_b = make_spec(tiny_bundle, "gentle", seed=2)
    spec_c, _ = make_spec(tiny_bundle, "unscored")
    a = library.publish(store, settings, ALICE, spec_a, pay_a, make_card(tiny_bundle, 0.0, 0.7), bundle=tiny_bundle)
    b = library.publish(store, settings, BOB, spec_b, pay_b, make_card(tiny_bundle, 0.4, 0.9), bundle=tiny_bundle)
    c = library.publish(store, settings, BOB, spec_c.model_copy(update={"operations": spec_c.operations[:1]}), None,
                        bundle=tiny_bundle)
    table = library.compare([a, b, c])
    assert list(table.columns) == [a.label, b.label, c.label]
    assert list(table.index[:5]) == ["author", "tier", "score", "concept", "operations"]
    assert "general answered" in table.index and "neutral perplexity" in table.index
    assert table.loc["author", a.label] == ALICE and table.loc["author", b.label] == BOB
    assert table.loc["general answered", a.label] == "0.700 (-0.200)"
    assert table.loc["general answered", b.label] == "0.900 (+0.000)"
    assert table.loc["general answered", c.label] == "—" and table.loc["tier", c.label] == library.NOT_SCORED
    assert table.loc["operations", c.label].startswith("1: ablate")
    bars = library.key_metrics([a, b, c])
    assert set(bars["entry"]) == {a.label, b.label}  # the unscored entry has no bars
    assert bars.query("metric == 'general answered'")["value"].tolist() == [0.7, 0.9]
    with pytest.raises(ValueError, match="two or more"):
        library.compare([a])
    listed = library.listing(library.entries(store), owner=ALICE).set_index("id")
    assert listed.loc[a.entry_id, "author"] == f"{ALICE} (you)" and listed.loc[b.entry_id, "author"] == BOB
    assert listed.loc[a.entry_id, "score"] == "0.710" and listed.loc[c.entry_id, "score"] == "—"


def test_a_changed_payload_file_is_refused_on_reload(store: Store, settings: Settings,
                                                     tiny_bundle: ModelBundle) -> None:
    spec, payload = make_spec(tiny_bundle)
    entry = library.publish(store, settings, ALICE, spec, payload, None, bundle=tiny_bundle)
    assert entry.payload_path is not None
    data = bytearray(entry.payload_path.read_bytes())
    data[-1] ^= 1
    entry.payload_path.write_bytes(bytes(data))
    with pytest.raises(SpecError, match="changed or belongs to another spec"):
        library.load(entry)


def test_a_version_3_store_migrates_to_the_library_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.store import core, schema

    path = tmp_path / "old.duckdb"
    monkeypatch.setattr(core, "MIGRATIONS", schema.MIGRATIONS[:3])
    monkeypatch.setattr(core, "SCHEMA_VERSION", 3)
    old = Store(path)
    assert old.schema_version() == 3 and not old.has_library()
    assert old.library_rows().empty  # reads of an older store see an empty library
    old.save_edit("e1", "m", "paris", "{}", owner="alice")
    old.close()
    monkeypatch.undo()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION == 4 and store.has_library()
    assert list(store.edits()["edit_id"]) == ["e1"] and store.library_rows().empty


def test_the_cli_publishes_lists_shows_and_withdraws(settings: Settings, tiny_bundle: ModelBundle, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m workbench library ...` goes through the same functions; bad input exits 2 with a sentence."""
    import re
    from argparse import Namespace

    from workbench.cli import main
    from workbench.cli.library import cli_owner
    from workbench.edits.spec import load_spec, save_spec

    def run(*args: str) -> int:
        return main(["--model", "tiny", "--cache", str(settings.cache_dir), "library", *args])

    spec, payload = make_spec(tiny_bundle, "cli-edit")
    path = tmp_path / "cli-edit.json"
    save_spec(spec, path, payload=payload)
    card = tmp_path / "cli-edit.scorecard.json"
    card.write_text(make_card(tiny_bundle).to_json())

    assert run("list") == 0
    assert "The library has no edits" in capsys.readouterr().out
    assert run("publish", str(path), "--scorecard", str(card), "--note", "from the CLI", "--owner", ALICE) == 0
    printed = capsys.readouterr().out
    found = re.search(rf"published ([0-9a-f]{{12}}): 'cli-edit' by {ALICE} .*tier ", printed)
    assert found, printed
    entry_id = found.group(1)
    assert run("list") == 0
    listed = capsys.readouterr().out
    assert entry_id in listed and ALICE in listed and "cli-edit" in listed

    out = tmp_path / "back" / "again.json"
    out.parent.mkdir()
    assert run("show", entry_id, "--out", str(out)) == 0
    shown = capsys.readouterr().out
    assert "from the CLI" in shown and "scorecard  Paris" in shown and "general answered" in shown
    again, tensors = load_spec(out)
    assert again.name == "cli-edit" and again.operations == spec.operations
    assert torch.equal(tensors["opt.l1"], payload["opt.l1"])

    assert run("withdraw", entry_id, "--owner", BOB) == 2
    assert "Only its author can withdraw" in capsys.readouterr().err
    assert run("show", "nosuchentry") == 2
    assert "There is no library entry 'nosuchentry'" in capsys.readouterr().err
    assert run("withdraw", entry_id, "--owner", ALICE) == 0
    assert f"withdrew {entry_id}" in capsys.readouterr().out
    assert run("list") == 0
    assert entry_id not in capsys.readouterr().out

    assert run("publish", str(path)) == 0  # no --owner: the OS user, as an owner token
    assert f"by {cli_owner(Namespace(owner=None))} " in capsys.readouterr().out
    assert run("publish", str(tmp_path / "missing.json")) == 2
    assert "does not exist" in capsys.readouterr().err
