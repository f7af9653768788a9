"""AlphaEdit's null-space projection (workbench/methods/null_space.py): the projector and the
projected solve on tiny tensors, and the `rewrite-null` method on the tiny model taught Paris (a
spec that compiles and changes the concept's text, while the output change on the preserved
sample stays under the projection's bound)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from workbench.adapters import use
from workbench.config import Settings
from workbench.corpus import Corpus, load_wiki
from workbench.edits.compile import compile_spec
from workbench.methods.null_space import (
    leak_bound,
    null_space_projector,
    preserved_covariances,
    projected_ridge,
    solve_projected,
)


def _preserved(d: int = 32, r: int = 20, m: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Preserved keys K0 [m, d] spanning an r-dim subspace (plus a 1e-4 floor) and their E[k k^T]."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, r, generator=g)).Q  # [d, r]
    k0 = torch.randn(m, r, generator=g) * torch.linspace(3, 1, r) @ basis.T + 1e-4 * torch.randn(m, d, generator=g)
    return k0, k0.T @ k0 / m


def test_the_projector_is_a_symmetric_idempotent_projector_on_the_small_eigenvalues() -> None:
    k0, cov = _preserved()
    p = null_space_projector(cov, threshold=1e-3)  # [32, 32]
    assert torch.allclose(p, p.T, atol=1e-6)
    assert torch.allclose(p @ p, p, atol=1e-5)
    assert round(float(p.trace())) == 32 - 20  # the complement of the preserved subspace
    assert (k0 @ p).norm() < 1e-3 * k0.norm()
    assert float(null_space_projector(cov + 0.1 * torch.eye(32), threshold=0.0).abs().max()) == 0.0  # full rank: none


def test_the_projected_solve_fits_the_keys_and_leaves_preserved_keys_alone() -> None:
    k0, cov = _preserved()
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(4, 32, generator=g)  # concept keys: components in both subspaces
    desired = torch.randn(4, 8, generator=g)  # [n, d_model]
    p = null_space_projector(cov, threshold=1e-3)
    dw = solve_projected(keys, desired, p, ridge=0.0)  # [d_mlp, d_model]
    assert torch.allclose(keys @ dw, desired, atol=1e-3)  # 4 keys, a 12-dim null space: an exact fit
    assert (k0 @ dw).norm() < 1e-3 * (keys @ dw).norm()  # preserved keys keep their outputs
    assert torch.allclose(p @ dw, dw, atol=1e-5)  # dW = P X
    # the unprojected minimum-norm fit moves them: the projection is what holds them
    free = torch.linalg.pinv(keys) @ desired
    assert (k0 @ free).norm() > 0.1 * (keys @ free).norm()
    # a larger ridge is a smaller, less exact change
    soft = solve_projected(keys, desired, p, ridge=10.0)
    assert soft.norm() < dw.norm() and (keys @ soft - desired).norm() > (keys @ dw - desired).norm()


def test_the_solve_minimises_the_projected_ridge_objective() -> None:
    _, cov = _preserved()
    g = torch.Generator().manual_seed(2)
    keys, desired = torch.randn(5, 32, generator=g), torch.randn(5, 8, generator=g)
    p = null_space_projector(cov, threshold=1e-3).double()
    ridge = 0.7
    dw = solve_projected(keys, desired, p.float(), ridge).double()
    k, d = keys.double(), desired.double()
    direct = torch.linalg.solve(p @ k.T @ k @ p + ridge * torch.eye(32, dtype=torch.float64), p @ k.T @ d)
    assert torch.allclose(dw, p @ direct, atol=1e-5)


def test_the_leak_bound_holds() -> None:
    """E||h dW||^2 = tr(dW^T C dW) <= (largest eigenvalue left in the null space) x ||X||^2, also
    for a covariance without an exact null space."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(32, 32, generator=g) * torch.logspace(0, -4, 32)  # a spread spectrum
    cov = a @ a.T
    p = null_space_projector(cov, threshold=1e-2)
    evals = torch.linalg.eigvalsh(cov.double())
    assert 0 < round(float(p.trace())) < 32
    bound = leak_bound(cov, p)
    assert bound <= 1e-2 * float(evals[-1]) + 1e-9  # at most the threshold x the largest
    for seed in range(5):
        keys = torch.randn(3, 32, generator=torch.Generator().manual_seed(seed))
        dw = solve_projected(keys, torch.randn(3, 4, generator=g), p, ridge=1e-3).double()
        assert float(torch.trace(dw.T @ cov.double() @ dw)) <= bound * float(dw.pow(2).sum()) * (1 + 1e-6)


def test_the_relative_ridge_keeps_one_over_one_plus_lam_along_a_shared_key() -> None:
    g = torch.Generator().manual_seed(4)
    key = torch.randn(1, 32, generator=g)
    keys = key.expand(6, -1)  # six frames, one key direction
    desired = torch.randn(1, 8, generator=g).expand(6, -1)
    p = torch.eye(32)
    for lam in (0.1, 1.0, 3.0):
        dw = solve_projected(keys, desired, p, projected_ridge(keys, p, lam))
        assert torch.allclose(key @ dw, desired[:1] / (1 + lam), atol=1e-4)


def test_rewrite_null_is_registered_with_the_ridge_as_its_strength() -> None:
    from workbench.methods.erase import METHODS, REWRITE_NULL, EraseOptions

    knob = METHODS["rewrite-null"].strength
    assert knob is not None and REWRITE_NULL.null_space_tokens > 0 and REWRITE_NULL.target == "counterfactual"
    stronger = knob.scale(EraseOptions(), 2.0).rewrite
    assert stronger is not None and stronger.lams == tuple(x / 2 for x in REWRITE_NULL.lams)
    assert stronger.null_space_tokens == REWRITE_NULL.null_space_tokens


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return load_wiki("en")


def test_preserved_covariances_are_cached_on_disk_and_reused(tiny_bundle, corpus, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from workbench.methods import null_space

    first = preserved_covariances(tiny_bundle, corpus, [1, 2], 600, tmp_path)
    files = sorted(p.name for p in (tmp_path / "null_space").rglob("*.safetensors"))
    assert files == ["l1.safetensors", "l2.safetensors"]
    null_space._MEMORY.clear()  # from disk now
    again = preserved_covariances(tiny_bundle, corpus, [2], 600, tmp_path)
    assert torch.equal(again[2], first[2]) and first[1].shape == (tiny_bundle.d_mlp, tiny_bundle.d_mlp)


def test_rewrite_null_compiles_changes_the_concept_and_keeps_the_preserved_sample(session_settings: Settings, corpus) -> None:  # type: ignore[no-untyped-def]
    from workbench.methods.erase import REWRITE_NULL, EraseOptions, erase
    from workbench.methods.facts import build_fact_set
    from workbench.methods.frames import FramesConfig
    from workbench.methods.key_rewrite import held_names, neighbour_frames, null_space_projectors
    from workbench.methods.retain import RetainConfig, retain_split
    from workbench.models import load_bundle, parse_source
    from workbench.models.tiny import TinyConfig, build_tiny_checkpoint
    from workbench.progress import NULL_PROGRESS

    path = build_tiny_checkpoint(session_settings.models_dir, TinyConfig(family="gemma3", taught="Paris"))
    bundle = load_bundle(parse_source(str(path)), session_settings)
    facts = build_fact_set(bundle, corpus, "Paris", samples_per_prompt=0)
    facts = replace(facts, facts=facts.facts[:6])  # a few texts: the counterfactual target is the slow part
    cfg = replace(REWRITE_NULL, layers=(1, 2), repr_layers=(3,), steps=4, frame_batch=8, cov_tokens=600,
                  null_space_tokens=3000, null_space_threshold=0.05, lams=(0.1,),
                  retain=RetainConfig(n_neutral=6, n_neighbours=3, max_len=32),
                  frames=FramesConfig(n_neighbour_names=2, cf_nonces=1, cf_topk=16, cf_batch=4))
    result = erase(bundle, corpus, "Paris", "rewrite-null", fact_set=facts, options=EraseOptions(rewrite=cfg, score=False))
    adapter = compile_spec(result.spec, bundle, payload=result.payload)
    ids = bundle.tokenizer("Paris is the capital and largest city of", return_tensors="pt").input_ids
    with torch.no_grad():
        before = bundle.hf_model(ids).logits
        with use(bundle, adapter):
            during = bundle.hf_model(ids).logits
    assert not torch.allclose(before, during, atol=1e-6)

    # the same projectors again (the preserved sample comes from memory now), and the bound per layer
    neighbours, neutral = retain_split(corpus, facts, cfg.retain)
    kept = neighbour_frames(bundle, facts, held_names(neighbours, neutral, cfg), cfg.retain.max_len)
    projectors, leaks = null_space_projectors(bundle, corpus, [1, 2], kept, cfg, NULL_PROGRESS)
    covs = preserved_covariances(bundle, corpus, [1, 2], cfg.null_space_tokens)
    for t in result.spec.operations[0].targets:
        dw = result.payload[t.delta].double()  # [d_mlp, d_model], every row of the layer
        assert 0 < round(float(projectors[t.layer].trace())) < bundle.d_mlp and dw.abs().max() > 0
        assert torch.allclose(projectors[t.layer].double() @ dw, dw, atol=1e-5 * float(dw.abs().max()))
        change = float(torch.trace(dw.T @ covs[t.layer].double() @ dw))  # E||h dW||^2 on the preserved sample
        assert change <= leaks[t.layer] * float(dw.pow(2).sum()) * (1 + 1e-4)
