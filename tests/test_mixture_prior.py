"""The "mixture" parameterisation: a fitted Gaussian mixture's exact denoiser plus a learned correction.

At initialisation the prior must *be* the mixture (denoiser, score, ELBO and samples given the same
generator), with the output scale the mixture's denoising variance; both its mixture and its
Gaussian must travel in the prior's one file; a damaged file is refused by name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from manifold_ps.geometry import Icosphere, VertexLayout
from manifold_ps.priors import DiffusionPrior, GaussianMixture, GaussianPrior, MLPDenoiser, UNet1d, build_prior

V = 12
C = 2
DT = torch.float64


def _signals(n: int, *, seed: int = 0) -> Tensor:
    """Bumps at one of two places per channel plus noise ``(n, C, V)``: two clusters, float64."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.linspace(-1, 1, V, dtype=DT)
    centre = torch.where(torch.rand(n, 1, 1, generator=g, dtype=DT) < 0.5, -0.5, 0.5).expand(n, C, 1)
    return torch.exp(-((grid - centre) ** 2) / 0.1) + 0.05 * torch.randn(n, C, V, generator=g, dtype=DT)


def _parts(covariance: str) -> tuple[GaussianPrior, GaussianMixture]:
    data = _signals(400)
    gaussian = GaussianPrior.fit(data, rank=6)
    mixture = GaussianMixture.fit(data, 2, generator=torch.Generator().manual_seed(0), rank=6, ridge=1e-4,
                                  covariance=covariance, shrinkage=0.5)  # type: ignore[arg-type]
    return gaussian, mixture


def _network(kind: str, length: int) -> nn.Module:
    if kind == "mlp":
        return MLPDenoiser(2 * C, C, length, hidden=32, depth=2, time_embedding_dim=16)  # x_t and the skip
    return UNet1d(2 * C, C, base_channels=8, channel_mults=(1, 2), num_res_blocks=1)


def _prior(network: str = "mlp", covariance: str = "per-component") -> DiffusionPrior:
    torch.manual_seed(0)
    layout = VertexLayout(V, perm=torch.randperm(V), multiple=4)
    gaussian, mixture = _parts(covariance)
    return DiffusionPrior(_network(network, layout.length), layout, channels=C, parameterization="mixture",
                          gaussian=gaussian, mixture=mixture, fingerprint="toy-geometry", data_mean=0.2,
                          data_std=0.3)


STEP0 = pytest.mark.parametrize(("network", "covariance"),
                                [(n, c) for n in ("mlp", "unet") for c in ("shared", "per-component")])


@STEP0
def test_step0_denoise_score_and_output_scale_are_the_mixtures(network: str, covariance: str) -> None:
    prior = _prior(network, covariance).double()
    mix = prior.mixture
    assert mix is not None
    x = torch.randn(5, C, V, dtype=DT)
    t = torch.tensor([1e-3, 0.01, 0.1, 0.5, 1.0], dtype=DT)
    torch.testing.assert_close(prior.denoise(x, t), mix.denoise(x, t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prior.skip(x, t), mix.denoise(x, t), rtol=0, atol=0)
    torch.testing.assert_close(prior.score(x, t), mix.score(x, t), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(prior.output_scale(x, t), mix.denoising_variance(t).sqrt()[..., None])


@STEP0
def test_step0_elbo_and_samples_are_the_mixtures_given_the_same_generator(network: str, covariance: str) -> None:
    prior = _prior(network, covariance).double().eval()
    mix = prior.mixture
    assert mix is not None
    x0 = _signals(4, seed=1)
    kw = dict(n_time=3, n_noise=2, t_min=1e-3)
    ours = prior.elbo(x0, generator=torch.Generator().manual_seed(7), **kw)  # type: ignore[arg-type]
    ref = mix.elbo(x0, generator=torch.Generator().manual_seed(7), **kw)  # type: ignore[arg-type]
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-8)
    ours = prior.sample(3, generator=torch.Generator().manual_seed(3), method="ddpm", steps=20)
    ref = mix.sample(3, generator=torch.Generator().manual_seed(3), method="ddpm", steps=20)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_step0_loss_is_below_the_wiener_priors_on_clustered_signals() -> None:
    """The mixture's skip already denoises the two-cluster signals better than the Gaussian's."""
    data = _signals(400, seed=2)
    gaussian, mixture = _parts("shared")
    layout = VertexLayout(V, multiple=4)
    losses = {}
    for kind in ("wiener", "mixture"):
        torch.manual_seed(0)
        prior = DiffusionPrior(_network("mlp", layout.length), layout, channels=C, parameterization=kind,
                               gaussian=gaussian, mixture=mixture if kind == "mixture" else None).double()
        t = torch.full((data.shape[0],), 0.3, dtype=DT)
        xt = prior.sde.alpha(t)[:, None, None] * data + prior.sde.std(t)[:, None, None] * torch.randn(
            data.shape, generator=torch.Generator().manual_seed(1), dtype=DT)
        with torch.no_grad():
            losses[kind] = float((prior.denoise(xt, t) - data).square().mean())
    assert losses["mixture"] < 0.9 * losses["wiener"], losses


def test_save_load_round_trips_the_mixture_and_the_gaussian(tmp_path: Path) -> None:
    prior = _prior("mlp").eval()
    with torch.no_grad():
        for p in prior.network.parameters():
            p.normal_(0.0, 0.2)
    x, t = torch.randn(2, C, V), torch.tensor([0.02, 0.6])
    expected = prior.denoise(x, t)
    prior.save(tmp_path / "prior.pt")
    loaded = DiffusionPrior.load(tmp_path / "prior.pt", fingerprint="toy-geometry", num_vertices=V)
    assert loaded.parameterization == "mixture" and loaded.mixture is not None and loaded.gaussian is not None
    assert prior.mixture is not None and prior.gaussian is not None
    assert not loaded.mixture.shared and loaded.mixture.fit_info == prior.mixture.fit_info
    for name, ref in prior.mixture.state_dict().items():
        got = loaded.mixture.state_dict()[name]
        assert got.dtype == ref.dtype
        torch.testing.assert_close(got, ref, rtol=0.0, atol=0.0)
    torch.testing.assert_close(loaded.gaussian.eigvecs, prior.gaussian.eigvecs, rtol=0.0, atol=0.0)
    torch.testing.assert_close(loaded.denoise(x, t), expected, rtol=0.0, atol=0.0)
    state = torch.load(tmp_path / "prior.pt", weights_only=False)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if not k.startswith("mixture.covariances")}
    torch.save(state, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="'mixture' parameterization.*lacks.*covariances"):
        DiffusionPrior.load(tmp_path / "damaged.pt")


def test_build_prior_mixture_on_a_mesh() -> None:
    sphere = Icosphere(1)
    g = torch.Generator().manual_seed(0)
    data = torch.rand(200, 1, sphere.num_vertices, generator=g, dtype=DT)
    data[:100] += 1.0
    gaussian = GaussianPrior.fit(data, rank=20)
    mixture = GaussianMixture.fit(data, 2, generator=g, rank=20, ridge=1e-4, covariance="per-component")
    prior = build_prior(sphere, preset="tiny", network="graph", parameterization="mixture", gaussian=gaussian,
                        mixture=mixture).double()
    x, t = data[:3], torch.tensor([0.01, 0.1, 0.9], dtype=DT)
    torch.testing.assert_close(prior.denoise(x, t), mixture.denoise(x, t))
    torch.testing.assert_close(prior.data_mean.double(), gaussian.mean.mean(-1), rtol=1e-5, atol=1e-6)


def test_validation_errors() -> None:
    gaussian, mixture = _parts("shared")
    layout = VertexLayout(V)
    net = MLPDenoiser(2 * C, C, V, hidden=8, depth=1)
    with pytest.raises(ValueError, match="'mixture' needs a fitted mixture"):
        DiffusionPrior(net, layout, channels=C, parameterization="mixture", gaussian=gaussian)
    with pytest.raises(ValueError, match="need a fitted gaussian"):
        DiffusionPrior(net, layout, channels=C, parameterization="mixture", mixture=mixture)
    with pytest.raises(ValueError, match="only it takes one"):
        DiffusionPrior(net, layout, channels=C, parameterization="wiener", gaussian=gaussian, mixture=mixture)
    other = GaussianMixture.fit(_signals(50)[:, :1], 2, generator=torch.Generator().manual_seed(0), ridge=1e-4)
    with pytest.raises(ValueError, match="mixture is over 1 channels"):
        DiffusionPrior(net, layout, channels=C, parameterization="mixture", gaussian=gaussian, mixture=other)


def test_fit_mixture_follows_the_configuration() -> None:
    """The benchmark's fit: the configured components, covariance and rank (mixture_rank over eval.gaussian_rank),
    the shrinkage chosen among the configured candidates, the same mixture for the same seed."""
    from manifold_ps.benchmarking.baselines import fit_mixture
    from manifold_ps.config import apply_overrides, get_profile

    data = _signals(300, seed=3)
    config = apply_overrides(get_profile("smoke"), {"prior.mixture_components": 3, "prior.mixture_rank": 4,
                                                    "prior.mixture_shrinkage": (0.5, 1.0), "eval.gaussian_rank": 8})
    mixture = fit_mixture(data, config)
    assert mixture.components == 3 and not mixture.shared
    assert all(c.rank == 4 for c in mixture.covariances)
    assert mixture.fit_info["shrinkage"] in (0.5, 1.0) and mixture.fit_info["probe"]["shrinkage_candidates"] == [0.5, 1.0]
    again = fit_mixture(data, config)
    torch.testing.assert_close(again.means, mixture.means, rtol=0, atol=0)
    wide = fit_mixture(data, apply_overrides(config, {"prior.mixture_rank": None}))
    assert all(c.rank == 8 for c in wide.covariances)  # eval.gaussian_rank
