"""The Chebyshev graph network: relabelling equivariance, the operator, and the prior contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from manifold_ps.geometry import Icosphere, ImageGrid, VertexLayout
from manifold_ps.priors import (
    ChebConv,
    DiffusionPrior,
    GaussianPrior,
    GraphDenoiser,
    build_prior,
    chebyshev_operator,
    sparse_operator,
)

N = 10


def _random_graph(n: int = N, *, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A symmetric random operator with a diagonal, ``(2, E)`` and ``(E,)`` float64."""
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(n, n, generator=g, dtype=torch.float64) * (torch.rand(n, n, generator=g) < 0.3)
    dense = 0.5 * (dense + dense.T) + torch.diag(torch.randn(n, generator=g, dtype=torch.float64))
    index = dense.nonzero().T
    return index, dense[index[0], index[1]]


def _relabel(index: Tensor, perm: Tensor) -> Tensor:
    """Edges of the graph whose node ``i`` is the old node ``perm[i]``."""
    return torch.argsort(perm)[index]


def _randomize(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.3)


@pytest.mark.parametrize("order", [1, 2, 4])
def test_chebconv_commutes_with_relabelling(order: int) -> None:
    index, weight = _random_graph()
    conv = ChebConv(3, 5, order).double()
    _randomize(conv)
    x = torch.randn(N, 4, 3, dtype=torch.float64)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    out = conv(x, sparse_operator(index, weight, N))
    out_relabelled = conv(x[perm], sparse_operator(_relabel(index, perm), weight, N))
    torch.testing.assert_close(out_relabelled, out[perm])


def test_chebconv_is_the_chebyshev_polynomial_filter() -> None:
    index, weight = _random_graph()
    a = sparse_operator(index, weight, N).to_dense()
    conv = ChebConv(1, 1, 3).double()
    with torch.no_grad():
        conv.linear.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
        conv.linear.bias.fill_(0.25)
    x = torch.randn(N, 2, 1, dtype=torch.float64)
    t2 = 2 * a @ a - torch.eye(N, dtype=torch.float64)
    expected = torch.einsum("ij,jbc->ibc", 0.5 * torch.eye(N, dtype=torch.float64) - a + 2.0 * t2, x) + 0.25
    torch.testing.assert_close(conv(x, sparse_operator(index, weight, N)), expected)


@pytest.mark.parametrize("order", [1, 2, 4])
def test_chebconv_is_the_linear_layer_on_the_stacked_terms(order: int) -> None:
    """The term-by-term sum equals the linear layer applied to the ``K`` Chebyshev terms stacked
    along the channels, and its gradient is the finite-difference one."""
    index, weight = _random_graph()
    a = sparse_operator(index, weight, N)
    dense = a.to_dense()
    conv = ChebConv(3, 5, order).double()
    _randomize(conv)
    x = torch.randn(N, 4, 3, dtype=torch.float64)
    terms = [x, torch.einsum("ij,jbc->ibc", dense, x)][:order]
    while len(terms) < order:
        terms.append(2 * torch.einsum("ij,jbc->ibc", dense, terms[-1]) - terms[-2])
    torch.testing.assert_close(conv(x, a), conv.linear(torch.cat(terms, dim=-1)))

    def call(v: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return torch.func.functional_call(conv, {"linear.weight": w, "linear.bias": b}, (v, a))

    inputs = (x, conv.linear.weight.detach(), conv.linear.bias.detach())
    assert torch.autograd.gradcheck(call, tuple(t.clone().requires_grad_() for t in inputs))


def test_group_norm_without_autograd_is_the_fused_kernel() -> None:
    """The node-major statistics used without autograd equal ``nn.GroupNorm`` on ``(B, C, N)``."""
    from manifold_ps.priors.graph import _GroupNorm

    norm = _GroupNorm(12, 4).double()
    _randomize(norm)
    h = 3.0 * torch.randn(N, 5, 12, dtype=torch.float64) + 2.0
    with torch.no_grad():
        fast = norm(h)
    expected = nn.functional.group_norm(h.permute(1, 2, 0), 4, norm.weight, norm.bias, norm.eps).permute(2, 0, 1)
    torch.testing.assert_close(fast, expected.detach())
    torch.testing.assert_close(norm(h.requires_grad_()), expected)


def test_graph_denoiser_commutes_with_relabelling() -> None:
    index, weight = _random_graph()
    kwargs = dict(hidden=8, depth=2, order=3, time_embedding_dim=16, groups=4)
    net = GraphDenoiser(2, 2, N, edge_index=index, edge_weight=weight, **kwargs).double()  # type: ignore[arg-type]
    _randomize(net)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(2))
    net_relabelled = GraphDenoiser(2, 2, N, edge_index=_relabel(index, perm), edge_weight=weight,
                                   **kwargs).double()  # type: ignore[arg-type]
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("edge_")}
    net_relabelled.load_state_dict(state, strict=False)
    x, t = torch.randn(3, 2, N, dtype=torch.float64), torch.rand(3, dtype=torch.float64)
    torch.testing.assert_close(net_relabelled(x[..., perm], t), net(x, t)[..., perm])


def test_chebyshev_operator_spectrum_and_layout() -> None:
    sphere = Icosphere(1)
    v = sphere.num_vertices
    index, weight = chebyshev_operator(sphere)
    a = sparse_operator(index, weight, v).to_dense()
    torch.testing.assert_close(a, a.T)
    evals = torch.linalg.eigvalsh(a)
    assert float(evals.min()) >= -1 - 1e-10 and abs(float(evals.max()) - 1.0) < 1e-10
    root_mass = torch.from_numpy(sphere.mass()).sqrt()
    torch.testing.assert_close(a @ root_mass, -root_mass)  # M^{1/2} 1 spans the kernel of M^{-1/2} L M^{-1/2}
    layout = VertexLayout(v, perm=sphere.ordering("hilbert"), multiple=8)
    index_seq, weight_seq = chebyshev_operator(sphere, layout)
    a_seq = sparse_operator(index_seq, weight_seq, layout.length).to_dense()
    torch.testing.assert_close(a_seq[:v, :v], a[layout.perm][:, layout.perm])
    assert bool((a_seq[v:] == 0).all()) and bool((a_seq[:, v:] == 0).all())  # padding: isolated nodes
    with pytest.raises(ValueError, match="layout is for"):
        chebyshev_operator(sphere, VertexLayout(v + 1))


def test_graph_prior_does_not_depend_on_the_vertex_ordering() -> None:
    # the network acts on the surface graph, so the sequence order fed by DiffusionPrior is immaterial
    sphere = Icosphere(1)
    torch.manual_seed(0)
    a = build_prior(sphere, preset="tiny", network="graph", ordering="hilbert").double()
    b = build_prior(sphere, preset="tiny", network="graph", ordering="identity").double()
    assert not torch.equal(a.layout.perm, b.layout.perm)
    _randomize(a.network)
    b.network.load_state_dict({k: v for k, v in a.network.state_dict().items() if not k.startswith("edge_")},
                              strict=False)
    x, t = torch.randn(3, 1, sphere.num_vertices, dtype=torch.float64), torch.tensor([0.05, 0.3, 0.9]).double()
    torch.testing.assert_close(a.denoise(x, t), b.denoise(x, t))


@pytest.mark.parametrize("parameterization", ["edm", "wiener"])
def test_graph_prior_contract(parameterization: str, tmp_path: Path) -> None:
    sphere = Icosphere(1)
    v = sphere.num_vertices
    data = torch.rand(64, 2, v, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gaussian = GaussianPrior.fit(data, rank=10) if parameterization == "wiener" else None
    torch.manual_seed(0)
    prior = build_prior(sphere, channels=2, preset="tiny", network="graph", geometry_channels=2,
                        parameterization=parameterization, gaussian=gaussian)  # type: ignore[arg-type]
    assert isinstance(prior.network, GraphDenoiser)
    x, t = data[:4].float(), torch.tensor([0.01, 0.1, 0.5, 1.0])
    x_in = torch.cat([x, x], 1) if parameterization == "wiener" else x  # "wiener" also feeds W(x_t)
    assert torch.equal(prior.network_output(x_in, t), torch.zeros(4, 2, prior.layout.length))  # zero at init
    # every parameter learns once the zero-initialised layers have moved
    opt = torch.optim.SGD(prior.parameters(), lr=0.05)
    for step in range(3):
        opt.zero_grad()
        prior.dsm_loss(data[:16].float(), torch.Generator().manual_seed(step)).mean().backward()
        opt.step()
    for name, p in prior.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and bool((p.grad != 0).any()), name
    prior.eval()
    out = prior.denoise(x, t)
    assert out.shape == x.shape and torch.isfinite(out).all()
    prior.save(tmp_path / "graph.pt")
    loaded = DiffusionPrior.load(tmp_path / "graph.pt", geometry=sphere)
    torch.testing.assert_close(loaded.denoise(x, t), out, rtol=0.0, atol=0.0)
    as64 = loaded.double()
    assert as64.network.edge_weight.dtype == torch.float64
    assert as64.denoise(x.double(), t.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="vertices"):
        DiffusionPrior.load(tmp_path / "graph.pt", geometry=ImageGrid(6, 7))


def test_graph_denoiser_validation() -> None:
    index, weight = _random_graph()
    with pytest.raises(ValueError, match="num_edges alone"):
        GraphDenoiser(1, 1, N)
    with pytest.raises(ValueError, match="needs edge_weight"):
        GraphDenoiser(1, 1, N, edge_index=index)
    with pytest.raises(ValueError, match=r"node indices in \[0, 5\)"):
        GraphDenoiser(1, 1, 5, edge_index=index, edge_weight=weight)
    with pytest.raises(ValueError, match="edge_weight"):
        GraphDenoiser(1, 1, N, edge_index=index, edge_weight=weight[:-1])
    with pytest.raises(ValueError, match="order must be positive"):
        ChebConv(1, 1, 0)
    net = GraphDenoiser(1, 1, N, edge_index=index, edge_weight=weight, hidden=8, depth=1)
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(2, 1, N + 1), torch.rand(2))
    with pytest.raises(ValueError, match="network must be"):
        build_prior(Icosphere(1), network="transformer")  # type: ignore[arg-type]


def test_wiener_graph_prior_moves_to_a_device(device: torch.device) -> None:
    sphere = Icosphere(1)
    data = torch.rand(64, 1, sphere.num_vertices, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = GaussianPrior.fit(data, rank=10)
    prior = build_prior(sphere, preset="tiny", network="graph", parameterization="wiener", gaussian=g)
    prior = prior.to(device=device, dtype=torch.float64)
    assert prior.network.edge_index.device.type == device.type and prior.gaussian is not None
    assert prior.gaussian.eigvecs.device.type == device.type
    x = data[:3].to(device)
    t = torch.tensor([0.01, 0.2, 0.9], dtype=torch.float64, device=device)
    torch.testing.assert_close(prior.denoise(x, t), prior.gaussian.denoise(x, t))
    prior.dsm_loss(x, torch.Generator(device).manual_seed(0)).mean().backward()
    draws = prior.sample(2, steps=5, generator=torch.Generator(device).manual_seed(0))
    assert draws.device.type == device.type and torch.isfinite(draws).all()
