"""The lab's shared edit library. A user's draft is private (their own session, ui/draft.py);
publishing it is an explicit act that puts a copy here for everyone on the server who runs the
same model. The SQL is in workbench/store/library.py; this module is the logic.

    entry = publish(store, settings, owner, spec, payload, scorecard, bundle=bundle)
    entries(store, bundle.model_id)         # newest first
    spec, payload = load(entry)             # re-apply: ui.draft.load_into_draft(spec, payload)
    withdraw(store, entry.entry_id, owner)  # its author only
    compare([a, b])                         # one column per entry, one row per scorecard metric

What an entry holds: the spec JSON, bound to its payload by SHA-256 exactly like a downloaded spec;
the payload as a safetensors file, `<cache>/library/<entry_id>.safetensors` beside the store,
written whole (workbench/atomic.py; never a pickle); a summary of the scorecard it was published
with (concept, tier, score, metric rows, verdicts); the model id and weights hash; the author (an
owner id, workbench/ui/identity.py); the time it was published.

**Publishing the same edit twice replaces.** An entry is one author's one edit: its id is a hash of
the author, the model's weights, what the operations do (`EditSpec.sha256`: name, notes and times
aside) and the payload's bytes. Publishing it again keeps that id and replaces the entry's name,
note and time, and its scorecard when one is given (the earlier scorecard is kept otherwise: the
edit is the same). A changed edit is a new entry. Two authors who publish the same edit get an
entry each, so each can withdraw only their own.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from workbench import atomic
from workbench.edits.spec import EditSpec, pack_payload, unpack_payload

if TYPE_CHECKING:
    from workbench.benchmark.scorecard import Scorecard
    from workbench.config import Settings
    from workbench.models import ModelBundle
    from workbench.store import Store

LIBRARY_DIR = "library"  # beside the store: <cache>/library/<entry_id>.safetensors
NOTE_MAX_CHARS = 2000
NOT_SCORED = "not scored"
# the scorecard metrics the comparison chart shows (shares, 0..1), when an entry has them: the concept,
# the controls, and how repetitive the free generations got (the fluency verdicts' measure)
KEY_METRICS = ("concept answered", "concept answered (name-dependent)", "neighbours answered", "general answered",
               "other concepts first-token acc", "concept generations: repeated 3-grams",
               "general generations: repeated 3-grams")


@dataclass(frozen=True)
class ScoreSummary:
    """What the library keeps of a scorecard: enough to compare edits, not the generations."""

    concept: str
    tier: str
    score: float | None
    outcome: str
    rows: list[dict[str, Any]]  # Scorecard.rows(): group, metric, before, after, delta, n, want
    verdicts: list[str]
    model_weights_sha256: str = ""

    @classmethod
    def of(cls, card: Scorecard) -> ScoreSummary:
        return cls(concept=card.concept, tier=card.tier, score=_number(card.score), outcome=card.outcome,
                   rows=card.rows(), verdicts=list(card.verdicts), model_weights_sha256=card.model_weights_sha256)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScoreSummary:
        """From `Scorecard.to_dict()` (the `.scorecard.json` that `python -m workbench erase` writes)."""
        try:
            return cls(concept=str(raw["concept"]), tier=str(raw["tier"]), score=_number(raw.get("score")),
                       outcome=str(raw.get("outcome", "")), rows=list(raw["metrics"]),
                       verdicts=[str(v) for v in raw.get("verdicts", [])],
                       model_weights_sha256=str(raw.get("model_weights_sha256", "")))
        except (KeyError, TypeError) as err:
            raise ValueError(f"This is not a scorecard JSON (as `erase` writes it): it lacks {err}.") from err

    def after(self, metric: str) -> float | None:
        """The edited model's value of `metric` (None when the scorecard has no such row)."""
        row = next((r for r in self.rows if r.get("metric") == metric), None)
        return None if row is None else _number(row.get("after"))


@dataclass(frozen=True)
class LibraryEntry:
    """One published edit."""

    entry_id: str
    model_id: str
    weights_sha256: str
    name: str
    author: str
    note: str
    published_at: datetime | None
    spec_json: str
    spec_sha256: str
    operations: tuple[str, ...]  # one line per operation (`describe()`)
    payload_path: Path | None  # the safetensors file; None when the edit has no payload
    payload_sha256: str | None
    payload_bytes: int
    scorecard: ScoreSummary | None

    @property
    def spec(self) -> EditSpec:
        return EditSpec.from_json(self.spec_json, what=f"The spec of library entry {self.entry_id}")

    @property
    def label(self) -> str:
        """Name and a short id: unique, for pickers and column headers."""
        return f"{self.name} ({self.entry_id[:6]})"

    @property
    def tier(self) -> str:
        return self.scorecard.tier if self.scorecard else NOT_SCORED

    @property
    def score(self) -> float | None:
        return self.scorecard.score if self.scorecard else None


def library_dir(store: Store) -> Path:
    """Where the payload files live: `library/` beside the store's DuckDB file (the cache dir)."""
    return Path(store.path).parent / LIBRARY_DIR


def entry_id_of(author: str, spec: EditSpec, payload_sha256: str | None) -> str:
    """One author's one edit (module docstring): same author, weights, operations and payload
    bytes, same id."""
    what = spec.model_copy(update={"payload": None}).sha256()
    key = "\n".join([author, spec.model.weights_sha256, what, payload_sha256 or ""])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _file_stem(name: str) -> str:
    from workbench.jobs.bodies import safe_name  # what the Edit page's downloads are named by

    return safe_name(name)


# ---------------------------------------------------------------------------------- publish
def publish(
    store: Store, settings: Settings, owner: str, spec: EditSpec, payload: dict[str, torch.Tensor] | None,
    scorecard: Scorecard | ScoreSummary | None = None, note: str = "", *, bundle: ModelBundle,
) -> LibraryEntry:
    """Publish `spec` (and its payload tensors) as `owner`, with a summary of `scorecard` when
    given (it must be this edit's: the caller knows which draft it scored). `bundle` is the
    model the library serves: a spec for other weights is refused. `note` defaults to the spec's
    notes. Publishing the same edit again replaces the author's entry (module docstring).

    Raises ValueError with a sentence: an owner id that is not a safe token, a spec for another
    model (or that does not fit it), a scorecard of other weights, a payload or spec over the
    server's upload limit (`Limits.max_upload_bytes`, WORKBENCH_MAX_UPLOAD_BYTES: whatever is in
    the library can also be uploaded on the Edit page), a note over NOTE_MAX_CHARS."""
    from workbench.jobs.manager import check_owner

    author = check_owner(owner)
    if spec.model.weights_sha256 != bundle.weights_sha256:
        raise ValueError(
            f"This edit was made for model {spec.model.id!r} (weights {spec.model.weights_sha256[:12]}...), not "
            f"for the model this library serves, {bundle.model_id!r} (weights {bundle.weights_sha256[:12]}...); "
            "publish it from a workbench that runs that model, in the same dtype.")
    if not spec.operations:
        raise ValueError("This edit has no operations; add some before publishing it.")
    spec.validate_for(bundle, payload=payload or None)  # SpecError (a ValueError) says what does not fit
    note = (note or spec.notes).strip()
    if len(note) > NOTE_MAX_CHARS:
        raise ValueError(f"The note has {len(note):,} characters; a library note is at most {NOTE_MAX_CHARS:,}.")
    summary = ScoreSummary.of(scorecard) if scorecard is not None and not isinstance(scorecard, ScoreSummary) \
        else scorecard
    if summary is not None and summary.model_weights_sha256 not in ("", bundle.weights_sha256):
        raise ValueError("The scorecard was measured on other model weights than this edit's; score the edit "
                         "on this model (Edit & preview, Run scorecard) and publish again.")

    limit = settings.limits.max_upload_bytes
    stem = _file_stem(spec.name)
    data: bytes | None = None
    if spec.payload_names():
        packed, data = pack_payload(spec, payload or {}, f"{stem}.payload.safetensors")
        if len(data) > limit:
            raise ValueError(
                f"The payload has {len(data):,} bytes; the library takes payloads up to {limit:,} bytes (the "
                "server's upload limit, WORKBENCH_MAX_UPLOAD_BYTES), so that anyone can also upload it on the "
                "Edit page. Publish a smaller edit (fewer optimised rows), or ask the admin to raise the limit.")
    else:
        packed = spec.model_copy(deep=True, update={"payload": None})
    spec_json = packed.to_json()
    if len(spec_json.encode()) > limit:
        raise ValueError(f"The spec JSON has {len(spec_json.encode()):,} bytes; the library takes specs up to "
                         f"{limit:,} bytes (the server's upload limit, WORKBENCH_MAX_UPLOAD_BYTES).")

    payload_sha = hashlib.sha256(data).hexdigest() if data is not None else None
    entry_id = entry_id_of(author, spec, payload_sha)
    old = entry(store, entry_id)
    if summary is None and old is not None:
        summary = old.scorecard  # the same edit: its earlier scorecard still describes it
    path = library_dir(store) / f"{entry_id}.safetensors"
    if data is not None:
        atomic.write_bytes(path, data)  # whole or not at all; the row comes after it
    row = {
        "entry_id": entry_id, "model_id": bundle.model_id, "weights_sha256": bundle.weights_sha256,
        "name": spec.name, "author": author, "note": note, "spec_sha256": packed.sha256(), "spec_json": spec_json,
        "operations_json": json.dumps([op.describe() for op in spec.operations]),
        "payload_file": path.name if data is not None else None, "payload_sha256": payload_sha,
        "payload_bytes": len(data) if data is not None else 0,
        "concept": summary.concept if summary else None, "tier": summary.tier if summary else None,
        "score": summary.score if summary else None, "outcome": summary.outcome if summary else None,
        "metrics_json": json.dumps(summary.rows, default=str) if summary else None,
        "verdicts_json": json.dumps(summary.verdicts) if summary else None,
    }
    try:
        store.save_library_entry(row)
    except BaseException:
        if data is not None and old is None:
            path.unlink(missing_ok=True)  # no entry names it
        raise
    published = entry(store, entry_id)
    if published is None:  # pragma: no cover - the row was just written in one transaction
        raise RuntimeError(f"Library entry {entry_id} was not written.")
    return published


# ------------------------------------------------------------------------------------ read
def _entry_of(store: Store, row: dict[str, Any]) -> LibraryEntry:
    summary = None
    if _text(row.get("tier")):
        summary = ScoreSummary(concept=_text(row["concept"]), tier=_text(row["tier"]), score=_number(row["score"]),
                               outcome=_text(row["outcome"]), rows=json.loads(row["metrics_json"] or "[]"),
                               verdicts=json.loads(row["verdicts_json"] or "[]"),
                               model_weights_sha256=_text(row["weights_sha256"]))
    published = row.get("published_at")
    payload_file = _text(row.get("payload_file"))
    return LibraryEntry(
        entry_id=str(row["entry_id"]), model_id=_text(row["model_id"]), weights_sha256=_text(row["weights_sha256"]),
        name=_text(row["name"]), author=_text(row["author"]), note=_text(row["note"]),
        published_at=None if published is None or pd.isna(published) else pd.Timestamp(published).to_pydatetime(),
        spec_json=str(row["spec_json"]), spec_sha256=_text(row["spec_sha256"]),
        operations=tuple(json.loads(row["operations_json"] or "[]")),
        payload_path=library_dir(store) / payload_file if payload_file else None,
        payload_sha256=_text(row.get("payload_sha256")) or None,
        payload_bytes=int(_number(row.get("payload_bytes")) or 0), scorecard=summary,
    )


def entries(store: Store, model_id: str | None = None) -> list[LibraryEntry]:
    """The published entries (of one model when given), newest first. Withdrawn ones are gone."""
    return [_entry_of(store, row) for row in store.library_rows(model_id).to_dict("records")]


def entry(store: Store, entry_id: str) -> LibraryEntry | None:
    """One entry by id, or None (never published, or withdrawn)."""
    rows = store.library_rows(entry_id=entry_id).to_dict("records")
    return _entry_of(store, rows[0]) if rows else None


def load(item: LibraryEntry) -> tuple[EditSpec, dict[str, torch.Tensor]]:
    """The entry's spec and payload tensors, to re-apply (`ui.draft.load_into_draft`). The payload
    file is refused unless its bytes are the ones the spec names (SpecError, a ValueError)."""
    spec = item.spec
    if spec.payload is None:
        return spec, {}
    return spec, unpack_payload(spec, payload_data(item))


def payload_data(item: LibraryEntry) -> bytes:
    """The entry's payload file's bytes (ValueError when it has none or the file is gone)."""
    if item.payload_path is None:
        raise ValueError(f"Library entry {item.entry_id} ('{item.name}') has no payload.")
    try:
        return item.payload_path.read_bytes()
    except OSError as err:
        raise ValueError(f"The payload of library entry {item.entry_id} ('{item.name}') cannot be read "
                         f"({err.strerror}): it was withdrawn, or the server's cache was changed.") from err


def download_files(item: LibraryEntry) -> list[tuple[str, bytes]]:
    """(file name, bytes) of the spec JSON and, when it has one, its payload, named as the Edit
    page names its downloads (`<name>.json`, `<name>.payload.safetensors`: the spec names the
    payload file by name and SHA-256; keep the two together)."""
    spec = item.spec
    files = [(f"{_file_stem(spec.name)}.json", item.spec_json.encode("utf-8"))]
    if spec.payload is not None:
        files.append((spec.payload.file, payload_data(item)))
    return files


# -------------------------------------------------------------------------------- withdraw
def withdraw(store: Store, entry_id: str, owner: str) -> LibraryEntry:
    """Take `owner`'s entry out of the library: its row is deleted, then its payload file.
    PermissionError for anyone but its author, ValueError for an id that is not (or no longer)
    there. Returns what was withdrawn."""
    found = entry(store, entry_id)
    if found is None:
        raise ValueError(f"There is no library entry {entry_id!r}; it may have been withdrawn already.")
    if found.author != owner:
        raise PermissionError(f"Only its author can withdraw library entry {entry_id} ('{found.name}', published "
                              f"by {found.author}); you are {owner}.")
    if not store.delete_library_entry(entry_id, owner):
        raise ValueError(f"Library entry {entry_id} was withdrawn meanwhile.")
    if found.payload_path is not None:
        found.payload_path.unlink(missing_ok=True)
    return found


# ------------------------------------------------------------------------- tables for pages
def _published(item: LibraryEntry) -> str:
    return item.published_at.strftime("%Y-%m-%d %H:%M") if item.published_at else ""


def listing(items: Sequence[LibraryEntry], owner: str | None = None) -> pd.DataFrame:
    """The library as a table of text, one row per entry: name, author ('you' marked), tier,
    score, concept ('—' for an entry published without a scorecard), published, id, note,
    operations."""
    return pd.DataFrame([{
        "name": e.name,
        "author": e.author + (" (you)" if owner is not None and e.author == owner else ""),
        "tier": e.tier,
        "score": "—" if e.score is None else f"{e.score:.3f}",
        "concept": e.scorecard.concept if e.scorecard else "—",
        "published": _published(e),
        "id": e.entry_id,
        "note": e.note,
        "operations": f"{len(e.operations)}: " + "; ".join(e.operations),
    } for e in items], columns=["name", "author", "tier", "score", "concept", "published", "id", "note",
                                "operations"])


def _cell(row: dict[str, Any] | None) -> str:
    """A metric of one entry: the edited model's value, its change from the base in brackets."""
    if row is None:
        return "—"
    after, delta = _number(row.get("after")), _number(row.get("delta"))
    if after is None:
        return "—"
    return f"{after:.3f}" + ("" if delta is None else f" ({delta:+.3f})")


def compare(items: Sequence[LibraryEntry]) -> pd.DataFrame:
    """Side by side: one column per entry (its label), one row for author, tier, score, concept
    and operations, then one per scorecard metric (any entry's, in first-seen order) with the
    edited model's value and its change from the base ('—' where an entry lacks it). Text cells,
    ready to show. ValueError for fewer than two entries."""
    if len(items) < 2:
        raise ValueError("Pick two or more library entries to compare.")
    metrics: list[str] = []
    for e in items:
        for row in e.scorecard.rows if e.scorecard else []:
            if row.get("metric") not in metrics:
                metrics.append(str(row.get("metric")))
    columns: dict[str, list[str]] = {}
    for e in items:
        by_metric = {str(r.get("metric")): r for r in (e.scorecard.rows if e.scorecard else [])}
        score = "—" if e.score is None else f"{e.score:.3f}"
        columns[e.label] = [e.author, e.tier, score, e.scorecard.concept if e.scorecard else "—",
                            f"{len(e.operations)}: " + "; ".join(e.operations),
                            *(_cell(by_metric.get(m)) for m in metrics)]
    return pd.DataFrame(columns, index=pd.Index(["author", "tier", "score", "concept", "operations", *metrics],
                                                name="entry"))


def key_metrics(items: Sequence[LibraryEntry], metrics: Sequence[str] = KEY_METRICS) -> pd.DataFrame:
    """Long table for a bar chart: entry (label), metric, value — the score and the key metrics
    (edited model's values, shares of prompts) of the entries that were scored."""
    rows = []
    for e in items:
        if e.scorecard is None:
            continue
        if e.score is not None:
            rows.append({"entry": e.label, "metric": "score", "value": e.score})
        for m in metrics:
            value = e.scorecard.after(m)
            if value is not None:
                rows.append({"entry": e.label, "metric": m, "value": value})
    return pd.DataFrame(rows, columns=["entry", "metric", "value"])
