"""Edit operations as pure functions, each checked against a hand computation on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.ops import ablate, neuron_adjust, pisces, project, prune


class IdentityReluSae:
    """enc(z) = relu(z W_enc + b_enc), dec(c) = c W_dec + b_dec; identity matrices by default."""

    def __init__(self, w_enc: torch.Tensor, w_dec: torch.Tensor, b_dec: torch.Tensor | None = None) -> None:
        self.W_enc = w_enc  # [d, F]
        self.W_dec = w_dec  # [F, d]
        self.b_enc = torch.zeros(w_enc.shape[1])
        self.b_dec = torch.zeros(w_dec.shape[1]) if b_dec is None else b_dec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc + self.b_enc)

    def decode(self, c: torch.Tensor) -> torch.Tensor:
        return c @ self.W_dec + self.b_dec


W_OUT = torch.tensor(
    [
        [2.0, 0.0, 0.0],
        [1.0, 1.0, 0.0],
        [-3.0, 0.0, 1.0],
        [0.5, 0.0, 0.0],
    ]
)  # [m=4, d=3]


def identity_sae() -> IdentityReluSae:
    return IdentityReluSae(torch.eye(3), torch.eye(3))


# ----------------------------------------------------------------------------- PISCES
def test_mu_schedules() -> None:
    assert pisces.mu_for_layer(10, 0, 26, "gemma26") == pytest.approx(1.0)
    assert pisces.mu_for_layer(10, 9, 26, "gemma26") == pytest.approx(10.0)
    assert pisces.mu_for_layer(10, 12, 26, "gemma26") == 10.0
    # relative for 18 layers: mu*(0.1 + 0.9*l/6) for l < 7
    assert pisces.mu_for_layer(10, 3, 18, "relative") == pytest.approx(10 * (0.1 + 0.9 * 3 / 6))
    assert pisces.mu_for_layer(10, 6, 18, "relative") == pytest.approx(10.0)
    assert pisces.mu_for_layer(10, 0, 18, "none") == 10.0


def test_pisces_reference_mode_matches_hand_computation() -> None:
    # feature 0: rho = [2, 1, -3, 0.5]; tau 0.5 -> |rho| > 1.5 -> rows {0, 2}; M_l = 3
    # c'_0 = s * eta * mu_l * M_l = -1 * 1 * 2 * 3 = -6
    res = pisces.pisces_rewrite(W_OUT, identity_sae(), [0], tau=0.5, mu_layer=2.0, mode="reference")
    assert res.rows == [0, 2]
    assert res.rows_per_feature == {0: [0, 2]}
    assert res.scale == 3.0
    # row 0: c = [2,0,0] -> [-6,0,0], eps = 0
    assert torch.equal(res.w_out[0], torch.tensor([-6.0, 0.0, 0.0]))
    # row 2: c = relu(v) = [0,0,1] -> [-6,0,1]; eps = v - dec(c) = [-3,0,0]; v' = [-9,0,1]
    assert torch.equal(res.w_out[2], torch.tensor([-9.0, 0.0, 1.0]))
    # untouched rows stay bit-identical
    assert torch.equal(res.w_out[[1, 3]], W_OUT[[1, 3]])


def test_pisces_neuron_signs_flip_the_coefficient() -> None:
    res = pisces.pisces_rewrite(
        W_OUT, identity_sae(), [0], tau=0.5, mu_layer=2.0, mode="reference", neuron_signs={0: 1, 2: -1}
    )
    # row 2: c'_0 = -1 * -1 * 2 * 3 = +6 -> v' = [6,0,1] + [-3,0,0]
    assert torch.equal(res.w_out[2], torch.tensor([3.0, 0.0, 1.0]))
    assert torch.equal(res.w_out[0], torch.tensor([-6.0, 0.0, 0.0]))


def test_pisces_gain_aware_works_on_gamma_v_and_maps_back() -> None:
    gamma = torch.tensor([2.0, 1.0, 1.0])
    # v~ rows: [4,0,0], [2,1,0], [-6,0,1], [1,0,0]; rho = [4,2,-6,1]; tau .6 -> > 3.6 -> {0,2}; M=6
    res = pisces.pisces_rewrite(W_OUT, identity_sae(), [0], tau=0.6, mu_layer=2.0, gamma_post=gamma)
    assert res.rows == [0, 2] and res.scale == 6.0
    # row 0: v~' = [-12,0,0] -> v' = v~'/gamma = [-6,0,0]
    assert torch.allclose(res.w_out[0], torch.tensor([-6.0, 0.0, 0.0]))
    # row 2: c=[0,0,1] -> [-12,0,1], eps=[-6,0,0]; v~'=[-18,0,1] -> v' = [-9,0,1]
    assert torch.allclose(res.w_out[2], torch.tensor([-9.0, 0.0, 1.0]))
    # the edited effective vector gamma*v' has the promised coefficient on the feature
    assert float((gamma * res.w_out[0]) @ torch.eye(3)[:, 0]) == pytest.approx(-12.0)


def test_pisces_modes_select_rows_in_their_own_space() -> None:
    w_enc = torch.eye(3)
    w_enc[1, 0] = 1.0  # e_0 = [1, 1, 0]
    sae = IdentityReluSae(w_enc, torch.eye(3))
    # raw rho = [2, 2, -3, 0.5] -> tau .9 -> row 2; with gamma [1,5,1]: rho = [2, 6, -3, .5] -> row 1
    ref = pisces.pisces_rewrite(W_OUT, sae, [0], tau=0.9, mu_layer=1.0, mode="reference")
    gain = pisces.pisces_rewrite(W_OUT, sae, [0], tau=0.9, mu_layer=1.0, gamma_post=torch.tensor([1.0, 5.0, 1.0]))
    assert ref.rows == [2] and gain.rows == [1]


def test_pisces_gain_guard_leaves_tiny_gain_coordinates_unedited() -> None:
    mix = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # decoder row 0 touches coord 2
    sae = IdentityReluSae(torch.eye(3), mix)
    gamma = torch.tensor([1.0, 1.0, 1e-5])
    res = pisces.pisces_rewrite(W_OUT, sae, [0], tau=0.5, mu_layer=1.0, gamma_post=gamma)
    assert res.rows
    for i in res.rows:
        assert res.w_out[i, 2] == W_OUT[i, 2]  # would be divided by 1e-5 without the guard
        assert torch.isfinite(res.w_out[i]).all()


def test_pisces_with_a_saelens_sae_equals_the_affine_identity() -> None:
    from sae_lens import StandardSAE, StandardSAEConfig

    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=16))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(8, 16))
        sae.W_dec.copy_(torch.randn(16, 8))
        sae.b_enc.copy_(torch.randn(16) * 0.1)
        sae.b_dec.copy_(torch.randn(8) * 0.1)
    w = torch.randn(10, 8)
    feats = [3, 7]
    res = pisces.pisces_rewrite(w, sae, feats, tau=0.5, mu_layer=3.0, mode="reference")
    rho = w @ sae.W_enc[:, feats].detach()
    big = rho.abs().max()
    for i in res.rows:
        c = sae.encode(w[i : i + 1]).detach()[0]
        expected = w[i].clone()
        for j, f in enumerate(feats):
            if rho[i, j].abs() > 0.5 * rho[:, j].abs().max():
                expected += (-1 * 3.0 * big - c[f]) * sae.W_dec[f].detach()
        assert torch.allclose(res.w_out[i], expected, atol=1e-4)
    assert set(res.rows) == {i for i in range(10) if (rho[i].abs() > 0.5 * rho.abs().max(0).values).any()}


def test_pisces_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one"):
        pisces.pisces_rewrite(W_OUT, identity_sae(), [], tau=0.5, mu_layer=1.0, mode="reference")
    with pytest.raises(ValueError, match="gamma_post"):
        pisces.pisces_rewrite(W_OUT, identity_sae(), [0], tau=0.5, mu_layer=1.0, mode="gain_aware")


# ----------------------------------------------------------------------------- ablate / prune
def test_ablate_zero_and_scale() -> None:
    z = ablate.ablate_rows(W_OUT, [0, 2], "zero")
    assert torch.equal(z[[0, 2]], torch.zeros(2, 3)) and torch.equal(z[[1, 3]], W_OUT[[1, 3]])
    s = ablate.ablate_rows(W_OUT, [2], "scale", scale=0.5)
    assert torch.equal(s[2], torch.tensor([-1.5, 0.0, 0.5]))
    assert torch.equal(W_OUT[0], torch.tensor([2.0, 0.0, 0.0]))  # input not mutated


def test_ablate_noise_has_the_requested_norm_and_is_seeded() -> None:
    a = ablate.ablate_rows(W_OUT, [0, 2], "noise", noise_norm_ratio=3.0, seed=7)
    b = ablate.ablate_rows(W_OUT, [0, 2], "noise", noise_norm_ratio=3.0, seed=7)
    c = ablate.ablate_rows(W_OUT, [0, 2], "noise", noise_norm_ratio=3.0, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    for i in (0, 2):
        assert float((a[i] - W_OUT[i]).norm()) == pytest.approx(3.0 * float(W_OUT[i].norm()), rel=1e-5)
    assert torch.equal(a[[1, 3]], W_OUT[[1, 3]])
    with pytest.raises(ValueError, match="Unknown ablation mode"):
        ablate.ablate_rows(W_OUT, [0], "explode")  # type: ignore[arg-type]


def test_prune_zeroes_value_vector_rows_only() -> None:
    w2 = prune.prune_value_vectors(W_OUT, [1])
    assert torch.equal(w2[1], torch.zeros(3))
    assert torch.equal(w2[[0, 2, 3]], W_OUT[[0, 2, 3]])
    assert not torch.equal(W_OUT[1], torch.zeros(3))  # the input is not written


# ----------------------------------------------------------------------------- project out
def test_project_out_hand_computation() -> None:
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    u = torch.tensor([1.0, 0.0])
    gamma = torch.tensor([2.0, 1.0])
    # w = gamma*u = [2,0], ||w||^2 = 4, W w = [2, 6], coef = [0.5, 1.5]
    out, rows = project.project_out(w, u, alpha=1.0, gamma_post=gamma)
    assert torch.allclose(out, torch.tensor([[0.0, 2.0], [0.0, 4.0]]))
    assert rows == [0, 1]
    assert torch.allclose((gamma * out) @ u, torch.zeros(2))  # nothing reaches u through the gain
    half, _ = project.project_out(w, u, alpha=0.5, gamma_post=gamma)
    assert torch.allclose(half, torch.tensor([[0.5, 2.0], [1.5, 4.0]]))


def test_project_out_tau_restricts_rows() -> None:
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    u = torch.tensor([1.0, 0.0])
    gamma = torch.tensor([2.0, 1.0])
    # |cos(v~, u)|: [2,2] -> 0.707, [6,4] -> 0.832; tau .9 -> >= 0.749 -> row 1 only
    out, rows = project.project_out(w, u, alpha=1.0, gamma_post=gamma, tau=0.9)
    assert rows == [1]
    assert torch.equal(out[0], w[0])
    assert torch.allclose(out[1], torch.tensor([0.0, 4.0]))
    with pytest.raises(ValueError, match="zero"):
        project.project_out(w, torch.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        project.project_out(w, torch.ones(3))


# ----------------------------------------------------------------------------- neuron adjust
def test_normal_pdf() -> None:
    assert float(neuron_adjust.normal_pdf(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0))) == pytest.approx(
        1 / math.sqrt(2 * math.pi)
    )


def test_neuron_adjust_deterministic_hand_computation() -> None:
    fm, fs, rm, rs = (torch.tensor([v]) for v in (5.0, 1.0, 0.0, 2.0))
    x = torch.tensor([[5.0], [6.0], [0.0]])  # [3, n=1]
    out = neuron_adjust.neuron_adjust_remap(x, fm, fs, rm, rs, deterministic=True)
    # 5 -> mirror 0 - (5-5)*2/1 = 0; 6 -> -(1)*2 = -2; 0 is retain-like -> unchanged
    assert torch.equal(out, torch.tensor([[0.0], [-2.0], [0.0]]))
    x2 = torch.tensor([[0.5]])
    assert torch.equal(neuron_adjust.neuron_adjust_remap(x2, fm, fs, rm, rs), x2)


def test_neuron_adjust_stochastic_is_seeded_and_uses_the_density_ratio() -> None:
    fm, fs, rm, rs = (torch.tensor([v]) for v in (1.0, 1.0, 0.0, 1.0))
    x = torch.full((4000, 1), 1.0)
    p = float(neuron_adjust.normal_pdf(x[0], fm, fs) / (neuron_adjust.normal_pdf(x[0], fm, fs) + neuron_adjust.normal_pdf(x[0], rm, rs)))
    a = neuron_adjust.neuron_adjust_remap(x, fm, fs, rm, rs, deterministic=False, generator=torch.Generator().manual_seed(1))
    b = neuron_adjust.neuron_adjust_remap(x, fm, fs, rm, rs, deterministic=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    mirrored = a == -0.0  # mirror of 1 is 0 - (1-1) = 0
    assert set(a.flatten().tolist()) <= {0.0, 1.0}
    assert float(mirrored.float().mean()) == pytest.approx(p, abs=0.03)


def test_gate_hook_edits_only_selected_columns() -> None:
    hook = neuron_adjust.make_gate_hook([1, 3], [5.0, 5.0], [1.0, 1.0], [0.0, 0.0], [2.0, 2.0])
    out = torch.tensor([[[5.0, 5.0, 5.0, 6.0]]])  # [batch, pos, d_mlp]
    new = hook(None, (), out)
    assert torch.equal(new, torch.tensor([[[5.0, 0.0, 5.0, -2.0]]]))
    assert torch.equal(out, torch.tensor([[[5.0, 5.0, 5.0, 6.0]]]))  # input not mutated
