"""Run `python -m workbench` in a subprocess, hold it at a pause point and SIGKILL it there, and
say what is inconsistent in a store a killed build left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from workbench.atomic import OLD_MARK, TMP_MARK
from workbench.config import REPO_ROOT
from workbench.pause import PAUSE_ENV
from workbench.store import open_store


def env(pause: str | None = None) -> dict[str, str]:
    out = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO_ROOT), "WORKBENCH_AUTOPREPARE": "0"}
    out.pop(PAUSE_ENV, None)
    if pause is not None:
        out[PAUSE_ENV] = pause
    return out


def command(cache: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "workbench", "--model", "tiny", "--cache", str(cache), *args]


def run(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command to its end; assert it succeeded."""
    done = subprocess.run(command(cache, *args), env=env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def kill_at(cache: Path, pause: str, *args: str) -> str:
    """Start a command, wait until it reports that it holds at the pause point `pause` (a line on
    its stderr; no fixed sleep), SIGKILL it there and return the stage it held at."""
    proc = subprocess.Popen(command(cache, *args), env=env(pause), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        for line in proc.stderr:  # ends when the process exits without pausing
            seen.append(line)
            if "WORKBENCH_PAUSED " in line:
                stage = line.rpartition("WORKBENCH_PAUSED ")[2].strip()
                proc.send_signal(signal.SIGKILL)
                assert proc.wait(timeout=60) == -signal.SIGKILL
                return stage
        raise AssertionError(f"exited ({proc.wait()}) without reaching {pause!r}:\n{''.join(seen)[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def leftovers(folder: Path) -> list[str]:
    """Temporary or set-aside names in a folder (workbench/atomic.py)."""
    return sorted(p.name for p in folder.iterdir() if TMP_MARK in p.name or OLD_MARK in p.name) \
        if folder.is_dir() else []


def store_problems(store_path: Path) -> list[str]:
    """What a store says is built but lacks, or holds without saying it is built."""
    store = open_store(store_path, read_only=True)
    problems: list[str] = []

    def count(sql: str, params: list[object]) -> int:
        return int(store.df(sql, params).iloc[0, 0])

    try:
        marks = store.builds()
        marked = {(r.model_id, r.artefact, r.part) for r in marks.itertuples()}
        for model_id, artefact, part in sorted(marked):
            layer = int(part.split("=")[1]) if part.startswith("layer=") else None
            if artefact.startswith("vocab:"):
                n = count("SELECT count(*) FROM value_vector_tokens WHERE model_id = ? AND lens = ? AND layer = ?",
                          [model_id, artefact.split(":")[1], layer])
                need = {"value_vector_tokens": n}
            elif artefact.startswith("stats:"):
                _, site, corpus_id = artefact.split(":", 2)
                args = [model_id, corpus_id, site, layer]
                need = {t: count(f"SELECT count(*) FROM {t} WHERE model_id = ? AND corpus_id = ? AND site = ? "
                                 "AND layer = ?", args) for t in ("neuron_stats", "hist_edges")}
            elif artefact.startswith("concept:"):
                concept_id = artefact.removeprefix("concept:")
                need = {t: count(f"SELECT count(*) FROM {t} WHERE model_id = ? AND concept_id = ?", [model_id, concept_id])
                        for t in ("neuron_contrast", "concept_vectors")}
                need["concept_sets"] = count("SELECT count(*) FROM concept_sets WHERE concept_id = ?", [concept_id])
                for side in ("pos", "neg"):
                    need[f"hist_edges {side}"] = count("SELECT count(*) FROM hist_edges WHERE model_id = ? AND "
                                                       "corpus_id = ?", [model_id, f"concept:{concept_id}:{side}"])
            else:
                continue
            problems += [f"{artefact}/{part} is marked built without {what}" for what, n in need.items() if not n]
        stats = store.df("SELECT DISTINCT model_id, corpus_id, site, layer FROM neuron_stats")
        for r in stats.itertuples():
            if (r.model_id, f"stats:{r.site}:{r.corpus_id}", f"layer={r.layer}") not in marked:
                problems.append(f"neuron_stats of {r.corpus_id} layer {r.layer} without a built mark")
        for concept_id in store.df("SELECT concept_id FROM concept_sets")["concept_id"]:
            if not any(a == f"concept:{concept_id}" for _, a, _ in marked):
                problems.append(f"concept set {concept_id} without a built concept")
        saes = set(store.df("SELECT sae_id FROM saes")["sae_id"])
        featured = set(store.df("SELECT DISTINCT sae_id FROM features")["sae_id"])
        problems += [f"catalogue {s} without features" for s in sorted(saes - featured)]
        problems += [f"features of {s} without its catalogue row" for s in sorted(featured - saes)]
    finally:
        store.close()
    return problems
