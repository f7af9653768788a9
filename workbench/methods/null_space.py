"""AlphaEdit's null-space projection for the key rewrite (method `rewrite-null`, issue 31).

AlphaEdit (Fang et al., ICLR 2025) keeps the outputs of an edited MLP on preserved text where
they are by construction instead of by a penalty: the weight change is projected onto the
approximate null space of the preserved keys K0 (`down_proj` inputs h over a large general
sample), so K0 dW ~ 0 whatever the edit asks for. In our row orientation (out = h @ W_out,
W_out: [d_mlp, d_model]) the projection acts on the d_mlp side: dW = P X.

- `null_space_projector`: P = U0 U0^T from the eigenvectors U0 of the preserved-key second moment
  C = E[h h^T] ([d_mlp, d_mlp]) whose eigenvalues are below `threshold` x the largest one.
  AlphaEdit's rule is the same cut on the singular values of its E[k k^T] (100k Wikipedia
  samples, `nullspace_threshold` 2e-2), but as an absolute number, which only means something
  for the activation scale of the model it was tuned on; relative to the largest eigenvalue the
  rule reads the same on every model and bounds the leak directly (`leak_bound`).
- `solve_projected`: min_X ||K P X - D||^2 + ridge ||X||^2, dW = P X. AlphaEdit's closed form
  (P (K K^T + Kp Kp^T) + L2 I)^-1 P K R^T, with Kp the keys of earlier edits; one concept per spec
  here, so there are no earlier edits, and the neighbour names' keys join C instead.
- `leak_bound`: the largest eigenvalue of P C P, so E||h dW||^2 <= leak_bound * ||X||_F^2 for h
  drawn like C's sample.
- `preserved_covariances`: C of each layer over `tokens` corpus tokens at every position, built
  once per (weights, layer, tokens, corpus, text length) and cached on disk (safetensors) and in
  the process, since it is the same for every concept.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from workbench.atomic import write_bytes
from workbench.corpus import Corpus
from workbench.models import ModelBundle
from workbench.progress import NULL_PROGRESS, Progress

PRESERVED_MAX_LEN = 128  # tokens per corpus text of the preserved sample (every position is a key)
PRESERVED_SEED = 0  # the order the corpus texts are read in
_MEMORY: dict[tuple[str, ...], torch.Tensor] = {}  # the last model's covariances, {key: [d_mlp, d_mlp]}


def null_space_projector(cov: torch.Tensor, threshold: float) -> torch.Tensor:
    """P ([d_mlp, d_mlp], symmetric, idempotent) onto the eigenvectors of `cov` ([d_mlp, d_mlp],
    symmetric PSD) whose eigenvalues are below `threshold` times the largest: the directions the
    preserved keys (almost) never take. threshold 0 gives P = 0 (nothing may change)."""
    evals, evecs = torch.linalg.eigh(cov.double())  # ascending
    small = evecs[:, evals < threshold * evals[-1].clamp_min(0)]  # [d_mlp, m]
    return (small @ small.T).float()


def leak_bound(cov: torch.Tensor, projector: torch.Tensor) -> float:
    """Largest eigenvalue of P C P: E_h ||h P X||^2 = tr(X^T P C P X) <= this x ||X||_F^2."""
    p = projector.double()
    return float(torch.linalg.eigvalsh(p @ cov.double() @ p)[-1].clamp_min(0))


def solve_projected(keys: torch.Tensor, desired: torch.Tensor, projector: torch.Tensor, ridge: float) -> torch.Tensor:
    """dW = P X with X = argmin ||K P X - D||^2 + ridge ||X||^2, keys K [n, d_mlp], desired D
    [n, d_model], P [d_mlp, d_mlp]: the change of W_out ([d_mlp, d_model]) that writes D for K
    with rows only in P's range, so every preserved key k0 (k0 P ~ 0) keeps its output.

    Closed form in the keys' n x n space (push-through identity, P = P^2 = P^T):
        X = (P K^T K P + ridge I)^-1 P K^T D = P K^T (K P K^T + ridge I)^-1 D = P X,
    in float64; a tiny jitter keeps ridge 0 solvable when the projected keys are dependent."""
    k, d, p = keys.double(), desired.double(), projector.double()
    kp = k @ p  # [n, d_mlp], the keys' null-space parts
    gram = kp @ k.T  # [n, n] = K P K^T
    jitter = 1e-10 * float(gram.diagonal().mean().clamp_min(1e-30))
    gram = gram + (ridge + jitter) * torch.eye(len(k), dtype=gram.dtype)
    return (kp.T @ torch.linalg.solve(gram, d)).float()


def projected_ridge(keys: torch.Tensor, projector: torch.Tensor, lam: float) -> float:
    """The ridge of `solve_projected` for a scale-free lam: lam x n x mean ||P k||^2 over the n
    keys, so a fit along one shared key direction keeps 1 / (1 + lam) of its desired output
    (the same n-scaling as solve_delta's lam * n * C)."""
    kp = keys.double() @ projector.double()
    return lam * float((kp * keys.double()).sum())  # n * mean(k P k^T) = sum


def _cache_key(bundle: ModelBundle, corpus: Corpus, layer: int, tokens: int, max_len: int) -> tuple[str, ...]:
    return (bundle.weights_sha256, str(layer), str(tokens), corpus.corpus_id, str(max_len), str(PRESERVED_SEED))


def _cache_path(cache_dir: Path, key: tuple[str, ...]) -> Path:
    sha, layer, tokens, corpus_id, max_len, seed = key
    corpus_tag = hashlib.sha256(corpus_id.encode()).hexdigest()[:12]
    return cache_dir / "null_space" / f"{sha[:16]}-c{corpus_tag}-t{tokens}-len{max_len}-s{seed}" / f"l{layer}.safetensors"


def preserved_covariances(
    bundle: ModelBundle,
    corpus: Corpus,
    layers: Sequence[int],
    tokens: int,
    cache_dir: Path | None = None,
    progress: Progress = NULL_PROGRESS,
) -> dict[int, torch.Tensor]:
    """C = E[h h^T] ({layer: [d_mlp, d_mlp]}) of each layer's down_proj input over `tokens` corpus
    tokens at every position (texts in a fixed shuffled order, PRESERVED_MAX_LEN tokens each).

    Read from the process or from `cache_dir`/null_space/ when built before (per weights hash,
    layer, token count and corpus); the missing layers are built in one pass and written one
    safetensors file per layer, each renamed into place whole (workbench/atomic.py)."""
    from workbench.methods.key_rewrite import key_covariances

    keys = {layer: _cache_key(bundle, corpus, layer, tokens, PRESERVED_MAX_LEN) for layer in layers}
    out: dict[int, torch.Tensor] = {}
    for layer, key in keys.items():
        if key in _MEMORY:
            out[layer] = _MEMORY[key]
        elif cache_dir is not None and _cache_path(cache_dir, key).exists():
            out[layer] = load_file(str(_cache_path(cache_dir, key)))["cov"]
    missing = [layer for layer in layers if layer not in out]
    if missing:
        progress.stage(f"preserved-key covariance: {tokens} corpus tokens, layers {missing} (once per model)",
                       total=None)
        t0 = time.perf_counter()
        texts = [d.text for d in corpus.sample(len(corpus), seed=PRESERVED_SEED)]
        with torch.no_grad():
            built = key_covariances(bundle, texts, missing, tokens, PRESERVED_MAX_LEN)
        progress.message(f"preserved-key covariance built in {time.perf_counter() - t0:.0f} s")
        for layer, cov in built.items():
            out[layer] = cov.contiguous()
            if cache_dir is not None:  # one file per layer, renamed into place whole
                write_bytes(_cache_path(cache_dir, keys[layer]),
                            save({"cov": out[layer]}, metadata={"weights_sha256": keys[layer][0], "layer": str(layer),
                                                                "tokens": str(tokens), "corpus": corpus.corpus_id}))
    if any(key[0] != bundle.weights_sha256 for key in _MEMORY):
        _MEMORY.clear()  # keep one model's covariances in the process
    _MEMORY.update({keys[layer]: out[layer] for layer in layers})
    return {layer: out[layer] for layer in layers}
