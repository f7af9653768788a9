"""Presentation helpers of the SAE feature pages: snippet highlighting (HTML-escaped corpus
text), one-line SAE quality summaries, option labels. Plain Python, tested without Streamlit."""

from __future__ import annotations

import html
import json
import math
from typing import Any

from workbench.sae.catalogue import MARK_CLOSE, MARK_OPEN


def snippet_html(snippet: str, activation: float | None = None, max_act: float | None = None) -> str:
    """A catalogue snippet ('... left [[token]] right') as safe HTML with the active token
    highlighted; the highlight's strength follows activation / max_act. Everything else is
    escaped: snippets are corpus text and may contain markup."""
    strength = 0.85 if not activation or not max_act else max(0.25, min(1.0, activation / max_act))
    start, end = snippet.find(MARK_OPEN), snippet.find(MARK_CLOSE)
    if start < 0 or end < start:
        return html.escape(snippet)
    left, token, right = snippet[:start], snippet[start + len(MARK_OPEN):end], snippet[end + len(MARK_CLOSE):]
    # The fill stays light (at most 0.55) and the token bold and underlined, so a one-character
    # token such as an apostrophe stays readable instead of vanishing in a solid red block.
    mark = (f'<mark style="background: rgba(214, 39, 40, {0.55 * strength:.2f}); color: inherit; '
            f'font-weight: 700; border-bottom: 2px solid #d62728; padding: 0 3px; '
            f'border-radius: 3px">{html.escape(token) or "&nbsp;"}</mark>')
    return html.escape(left) + mark + html.escape(right)


def example_html(snippet: str, activation: float, title: str, max_act: float | None = None) -> str:
    """One top-activation line: activation, article title, highlighted snippet (all escaped)."""
    return (f"<div style='font-family: monospace; font-size: 0.9em; margin: 2px 0'><b>{activation:.2f}</b> · "
            f"<i>{html.escape(title)}</i> · {snippet_html(snippet, activation, max_act)}</div>")


def sae_quality(metrics_json: str | None) -> dict[str, float]:
    """explained_variance, l0, dead_fraction, dense_fraction (what exists) from the stored JSON."""
    try:
        raw = json.loads(metrics_json or "{}")
    except json.JSONDecodeError:
        return {}
    keys = ("explained_variance", "l0", "dead_fraction", "dense_fraction")
    return {k: float(raw[k]) for k in keys if isinstance(raw.get(k), int | float)}


def sae_label(row: dict[str, Any]) -> str:
    """'L6 hook_mlp_out · 4096 features · L0 31 · EV 0.93 · dead 86%' for an SAE selector."""
    q = sae_quality(row.get("metrics_json"))
    parts = [f"L{row['layer']} {str(row['hook']).split('.', 2)[-1]}", f"{int(row['d_sae']):,} features"]
    if "l0" in q:
        parts.append(f"L0 {q['l0']:.0f}")
    if "explained_variance" in q:
        parts.append(f"EV {q['explained_variance']:.2f}")
    if "dead_fraction" in q:
        parts.append(f"dead {q['dead_fraction']:.0%}")
    return " · ".join(parts)


def density_text(density: float) -> str:
    """'fires on 1 in 2,300 tokens (0.043%)' or 'never fired in the catalogue sweep'."""
    if not density or density <= 0 or math.isnan(density):
        return "never fired in the catalogue sweep (dead)"
    return f"fires on 1 in {1 / density:,.0f} tokens ({density:.3%})"


def table_height(n_rows: int, cap: int = 260) -> int:
    """Pixel height of an st.dataframe showing n_rows (header + 35 px a row), at most cap: a
    one-row table should not sit in a box of empty rows."""
    return min(cap, 38 + 35 * max(n_rows, 1) + 2)


def compact(n: int) -> str:
    """2211000 -> '2.2M', 184320 -> '184k', 12 -> '12' (metric tiles are narrow)."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            value = n / size
            return f"{value:.1f}{suffix}" if value < 10 else f"{value:.0f}{suffix}"
    return str(n)


def sae_overview(saes_dir: Any, catalogued: Any) -> Any:
    """Local SAE folders with their held-out quality and whether the store has their catalogue:
    sae_id, layer/site, EV, L0, dead, catalogued, error ('' when loadable)."""
    import pandas as pd

    from workbench.sae.sources import list_local_saes

    done = set(catalogued["sae_id"]) if len(catalogued) else set()
    rows = []
    for e in list_local_saes(saes_dir):
        m = e.get("workbench_metrics", {}).get("metrics", {})
        saved = e.get("workbench_train_config", {})
        cfg = saved.get("config", {})
        rows.append({
            "sae_id": e["sae_id"],
            "site": saved.get("hook_name", "?"),
            "width": cfg.get("width"),
            "EV": round(m["explained_variance"], 3) if "explained_variance" in m else None,
            "L0": round(m["l0"], 1) if "l0" in m else None,
            "dead": f"{m['dead_fraction']:.0%}" if "dead_fraction" in m else "",
            "catalogued": e["sae_id"] in done,
            "error": e.get("error", ""),
        })
    return pd.DataFrame(rows, columns=["sae_id", "site", "width", "EV", "L0", "dead", "catalogued", "error"])


def is_transcoder(sae_row: dict) -> bool:
    """A catalogued transcoder reads the MLP's input (hook `blocks.L.mlp.hook_in`)."""
    from workbench.models.sites import TRANSCODER_INPUT

    return str(sae_row.get("hook", "")).endswith(TRANSCODER_INPUT)


def row_score_text(transcoder: bool) -> str:
    """How the page's row scores s[i, f] are defined, and what a removal does, per kind."""
    if transcoder:
        return ("A transcoder reads the MLP's input and writes its output, so its features are features of "
                "the MLP itself. Score s[i, f]: how much value vector i writes along the feature's decoder "
                "direction (its encoder reads the MLP input, not the rows). Removal sets that component of "
                "the selected rows to -mu x max and keeps the rest of each row; an SAE on the MLP output "
                "instead re-encodes each row through the SAE and rewrites its code.")
    return ("PISCES score s[i, f]: value vector i of the layer read by the feature's encoder. Removal "
            "re-encodes each selected row through the SAE, sets the feature's coefficient to -mu x max, "
            "and decodes it back with the SAE's error term kept.")
