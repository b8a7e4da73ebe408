"""A denoiser that convolves on the surface: Chebyshev filters of the mesh Laplacian.

The 1-D U-Net sees the vertices through a locality ordering, the residual MLP sees them as one
flat vector; neither knows which vertices are neighbours. :class:`GraphDenoiser` filters with
polynomials of the surface Laplacian (ChebNet, Defferrard et al. 2016):

    y = sum_{k < K} T_k(L~) x W_k + b,    L~ = 2 / lambda_max  M^{-1/2} L M^{-1/2} - I,

where ``L`` is the geometry's (cotangent) stiffness matrix, ``M`` its lumped mass, ``T_k`` the
Chebyshev polynomials and ``lambda_max`` the largest eigenvalue (so the spectrum of ``L~`` lies in
``[-1, 1]``). A filter of order ``K`` reaches ``K - 1`` rings of neighbours and, being a function
of the Laplacian, commutes with any relabelling of the vertices.

torch_geometric's ``ChebConv`` computes the same filter on one ``(N, F)`` graph, so a batch
becomes a ``B``-fold disjoint union with ``B`` copies of the edges; here the operator is shared by
the batch and applied as one sparse ``(N, N) x (N, B F)`` product, with the mass-normalised
cotangent Laplacian of the geometry instead of a normalised adjacency.

The operator lives in buffers (``edge_index``, ``edge_weight``) so ``.to(device)`` moves it and it
is saved with the weights. :func:`chebyshev_operator` builds it for a geometry, relabelled to the
sequence positions of a :class:`~manifold_ps.geometry.VertexLayout`: the network then acts on the
padded sequences :class:`~manifold_ps.priors.DiffusionPrior` feeds it, as the surface graph on the
natural vertices (padding positions are isolated nodes).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .unet import timestep_embedding

if TYPE_CHECKING:
    from ..geometry import Geometry, VertexLayout

__all__ = ["ChebConv", "GraphDenoiser", "chebyshev_operator", "sparse_operator"]


def chebyshev_operator(geometry: Geometry, layout: VertexLayout | None = None) -> tuple[Tensor, Tensor]:
    """The rescaled Laplacian ``L~ = 2 M^{-1/2} L M^{-1/2} / lambda_max - I`` of a geometry, in COO form.

    Args:
        geometry: The geometry (its stiffness matrix ``L`` and lumped mass ``M``).
        layout: Relabel the vertices to its sequence positions (vertex ``layout.perm[i]`` becomes
            node ``i``; the padding positions ``V..L-1`` are isolated nodes). ``None``: natural order.

    Returns:
        ``(edge_index, edge_weight)``: the non-zero entries of ``L~`` (diagonal included), a
        symmetric matrix with eigenvalues in ``[-1, 1]``, the largest exactly 1.

    Shapes:
        edge_index: ``(2, E)`` long, node indices in ``[0, L)`` (``[0, V)`` without a layout);
        edge_weight: ``(E,)`` float64.

    Example:
        >>> from manifold_ps.geometry import Icosphere
        >>> index, weight = chebyshev_operator(Icosphere(1))
        >>> a = sparse_operator(index, weight, 42).to_dense()
        >>> bool(torch.allclose(a, a.T)), round(float(torch.linalg.eigvalsh(a).max()), 6)
        (True, 1.0)
    """
    lap = sp.csr_matrix(geometry.laplacian(), dtype=np.float64)
    scale = sp.diags(1.0 / np.sqrt(geometry.mass()))
    sym = (scale @ lap @ scale).tocsr()
    sym = 0.5 * (sym + sym.T)
    n = sym.shape[0]
    if n <= 2048:
        lam_max = float(np.linalg.eigvalsh(sym.toarray())[-1])
    else:
        v0 = np.random.default_rng(0).standard_normal(n)
        lam_max = float(scipy.sparse.linalg.eigsh(sym, k=1, which="LA", v0=v0, tol=1e-8)[0][0])
    if not lam_max > 0:
        raise ValueError(f"{type(geometry).__name__}: the Laplacian has no positive eigenvalue")
    op = (2.0 / lam_max * sym - sp.identity(n, format="csr")).tocoo()
    keep = op.data != 0
    rows, cols, data = op.row[keep], op.col[keep], op.data[keep]
    if layout is not None:
        if layout.num_vertices != n:
            raise ValueError(f"layout is for {layout.num_vertices} vertices, the geometry has {n}")
        position = layout.inverse_perm.cpu().numpy()  # natural vertex -> sequence position
        rows, cols = position[rows], position[cols]
    index = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
    return index, torch.from_numpy(data.astype(np.float64))


def sparse_operator(edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> Tensor:
    """The sparse COO matrix with entries ``edge_weight`` at ``edge_index`` (coalesced).

    Args:
        edge_index: Row and column of each entry (duplicates are summed).
        edge_weight: The entries.
        num_nodes: Size ``N`` of the matrix.

    Returns:
        A sparse ``(N, N)`` tensor in the dtype and on the device of ``edge_weight``.

    Shapes:
        edge_index: ``(2, E)``; edge_weight: ``(E,)``.

    Example:
        >>> a = sparse_operator(torch.tensor([[0, 1], [1, 0]]), torch.tensor([2.0, 2.0]), 2)
        >>> a.to_dense().tolist()
        [[0.0, 2.0], [2.0, 0.0]]
    """
    return torch.sparse_coo_tensor(edge_index, edge_weight, (num_nodes, num_nodes), check_invariants=False).coalesce()


class ChebConv(nn.Module):
    """Chebyshev graph convolution ``y = sum_{k < K} T_k(A) x W_k + b`` with a shared operator.

    Args:
        in_channels: Input features per node.
        out_channels: Output features per node.
        order: Number ``K`` of Chebyshev terms (``1``: a per-node linear map).
        zero_init: Start with zero weights and bias (a residual branch or output layer that is
            the identity / zero at initialisation).

    Shapes:
        x: ``(N, B, in_channels)`` (node-major); operator: sparse ``(N, N)``;
        returns ``(N, B, out_channels)``.

    Example:
        >>> conv = ChebConv(2, 3, order=3)
        >>> a = sparse_operator(torch.tensor([[0, 1], [1, 0]]), torch.tensor([0.5, 0.5]), 2)
        >>> conv(torch.randn(2, 4, 2), a).shape
        torch.Size([2, 4, 3])
    """

    def __init__(self, in_channels: int, out_channels: int, order: int, *, zero_init: bool = False) -> None:
        super().__init__()
        if min(in_channels, out_channels, order) < 1:
            raise ValueError(f"in_channels, out_channels and order must be positive, got "
                             f"{in_channels}, {out_channels}, {order}")
        self.order = int(order)
        self.linear = nn.Linear(order * in_channels, out_channels)
        if zero_init:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor, operator: Tensor) -> Tensor:
        n, b, c = x.shape
        flat = x.reshape(n, b * c)
        terms = [flat]
        if self.order > 1:
            terms.append(torch.sparse.mm(operator, flat))
        for _ in range(2, self.order):
            terms.append(torch.sparse.addmm(terms[-2], operator, terms[-1], beta=-1.0, alpha=2.0))
        # sum_k T_k x W_k, term by term: the same as the linear layer on the K terms stacked along
        # the channels, without copying them into one (N, B, K C) tensor
        weight = self.linear.weight
        out = F.linear(terms[0].reshape(n * b, c), weight[:, :c], self.linear.bias)
        for k in range(1, self.order):
            out.addmm_(terms[k].reshape(n * b, c), weight[:, k * c:(k + 1) * c].T)  # autograd keeps no `out`
        return out.reshape(n, b, -1)


class _GroupNorm(nn.GroupNorm):
    """GroupNorm over nodes and channel groups for node-major ``(N, B, C)`` features."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__(int(np.gcd(groups, channels)), channels)

    def forward(self, h: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            # the fused kernel on a (B, C, N) view: its backward is faster than that of the
            # composition below
            return super().forward(h.permute(1, 2, 0)).permute(2, 0, 1)
        # without autograd, statistics reduced in place of the layout: the fused kernel's two
        # transposing copies of the features cost more than the normalisation itself
        n, b, c = h.shape
        g = self.num_groups
        v = h.reshape(n, b, g, c // g)
        count = n * (c // g)
        mean = v.sum(0).sum(-1) / count  # (B, G); the node sum first, over contiguous rows
        centered = v - mean[..., None]
        var = centered.square().sum(0).sum(-1) / count
        scale = torch.rsqrt(var + self.eps)[..., None] * self.weight.view(g, c // g)  # (B, G, C/G)
        return torch.addcmul(self.bias.view(g, c // g), centered, scale).reshape(n, b, c)


class _Block(nn.Module):
    def __init__(self, width: int, emb_dim: int, order: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _GroupNorm(width, groups)
        self.conv1 = ChebConv(width, width, order)
        self.film = nn.Linear(emb_dim, 2 * width)
        self.context = nn.Linear(width, width)
        self.norm2 = _GroupNorm(width, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = ChebConv(width, width, order, zero_init=True)

    def forward(self, h: Tensor, emb: Tensor, operator: Tensor) -> Tensor:
        z = self.conv1(F.silu(self.norm1(h)), operator)
        scale, shift = self.film(emb).chunk(2, dim=-1)
        z = self.norm2(z) * (1 + scale) + shift + self.context(z.mean(0))  # a global summary reaches every node
        return h + self.conv2(self.dropout(F.silu(z)), operator)


class GraphDenoiser(nn.Module):
    """Residual Chebyshev graph network ``F(x, t)`` over signals on a fixed graph of ``length`` nodes.

    Each block is GroupNorm, SiLU, a Chebyshev convolution, a time FiLM plus a global (mean over
    nodes) context, SiLU and a zero-initialised Chebyshev convolution, added to its input; the
    output layer is zero-initialised too, so a new network outputs exactly zero. Every layer
    commutes with a relabelling of the nodes (permuting the graph and the input permutes the
    output).

    Args:
        in_channels: Input channels (signal plus geometry features).
        out_channels: Output channels.
        length: Number of nodes ``N`` (the layout's sequence length).
        edge_index: ``(2, E)`` entries of the operator (from :func:`chebyshev_operator`);
            omitted only when rebuilding a saved network (then ``num_edges`` sizes the buffers
            that ``load_state_dict`` fills).
        edge_weight: ``(E,)`` their values.
        num_edges: ``E``, when ``edge_index`` is omitted.
        hidden: Features per node.
        depth: Number of residual blocks.
        order: Chebyshev terms per convolution (reach: ``order - 1`` rings).
        time_embedding_dim: Width of the time embedding.
        groups: GroupNorm groups (reduced to a divisor of ``hidden``).
        dropout: Dropout inside the blocks.

    Shapes:
        x: ``(B, in_channels, N)``; t: ``(B,)``; returns ``(B, out_channels, N)``.

    Example:
        >>> index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
        >>> net = GraphDenoiser(1, 1, 3, edge_index=index, edge_weight=torch.full((4,), 0.5), hidden=8, depth=1)
        >>> net(torch.randn(2, 1, 3), torch.rand(2)).shape
        torch.Size([2, 1, 3])
    """

    edge_index: Tensor
    edge_weight: Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        length: int,
        *,
        edge_index: Tensor | None = None,
        edge_weight: Tensor | None = None,
        num_edges: int | None = None,
        hidden: int = 64,
        depth: int = 4,
        order: int = 3,
        time_embedding_dim: int = 128,
        groups: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, length, hidden, depth, order, time_embedding_dim, groups) < 1:
            raise ValueError("in_channels, out_channels, length, hidden, depth, order, time_embedding_dim and "
                             "groups must be positive")
        if time_embedding_dim % 2:
            raise ValueError(f"time_embedding_dim must be even, got {time_embedding_dim}")
        if edge_index is None:
            if edge_weight is not None or num_edges is None or num_edges < 0:
                raise ValueError("give edge_index and edge_weight, or num_edges alone "
                                 "(buffers to be filled by load_state_dict)")
            edge_index = torch.zeros(2, num_edges, dtype=torch.long)
            edge_weight = torch.zeros(num_edges)
        else:
            if edge_weight is None:
                raise ValueError("edge_index needs edge_weight")
            edge_index = torch.as_tensor(edge_index, dtype=torch.long)
            edge_weight = torch.as_tensor(edge_weight)
            if edge_index.ndim != 2 or edge_index.shape[0] != 2 or edge_weight.shape != (edge_index.shape[1],):
                raise ValueError(f"need edge_index (2, E) and edge_weight (E,), got {tuple(edge_index.shape)} "
                                 f"and {tuple(edge_weight.shape)}")
            if edge_index.numel() and not (0 <= int(edge_index.min()) and int(edge_index.max()) < length):
                raise ValueError(f"edge_index must hold node indices in [0, {length})")
            if not bool(torch.isfinite(edge_weight).all()):
                raise ValueError("edge_weight must be finite")
        self._config: dict[str, Any] = dict(
            in_channels=int(in_channels), out_channels=int(out_channels), length=int(length),
            num_edges=int(edge_index.shape[1]), hidden=int(hidden), depth=int(depth), order=int(order),
            time_embedding_dim=int(time_embedding_dim), groups=int(groups), dropout=float(dropout),
        )
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.cond_channels = 0
        self.length = int(length)
        self.multiple = 1
        self.register_buffer("edge_index", edge_index.clone())
        self.register_buffer("edge_weight", edge_weight.to(torch.get_default_dtype()).clone())
        self._sin_dim = int(time_embedding_dim)
        self.time_mlp = nn.Sequential(nn.Linear(self._sin_dim, time_embedding_dim), nn.SiLU(),
                                      nn.Linear(time_embedding_dim, time_embedding_dim))
        self.inp = ChebConv(in_channels, hidden, order)
        self.blocks = nn.ModuleList(_Block(hidden, time_embedding_dim, order, groups, dropout) for _ in range(depth))
        self.out_norm = _GroupNorm(hidden, groups)
        self.out = ChebConv(hidden, out_channels, order, zero_init=True)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments without the graph (``GraphDenoiser(**net.config())`` then
        ``load_state_dict`` rebuilds it)."""
        return dict(self._config)

    def operator(self, dtype: torch.dtype | None = None) -> Tensor:
        """The sparse ``(N, N)`` operator ``L~`` of the buffers, in ``dtype`` (default: theirs).

        In compressed-row (CSR) form: its products, and their backward, are about 3x faster on a
        CPU than those of the COO matrix :func:`sparse_operator` returns.
        """
        coo = sparse_operator(self.edge_index, self.edge_weight.to(dtype or self.edge_weight.dtype), self.length)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": products and autograd are what we use
            warnings.simplefilter("ignore", UserWarning)
            return coo.to_sparse_csr()

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is not None:
            raise ValueError("GraphDenoiser takes no cond")
        if x.ndim != 3 or x.shape[1] != self.in_channels or x.shape[2] != self.length:
            raise ValueError(f"x must have shape (B, {self.in_channels}, {self.length}), got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        operator = self.operator(x.dtype)
        emb = self.time_mlp(timestep_embedding(t.to(x.dtype), self._sin_dim))
        h = self.inp(x.permute(2, 0, 1), operator)  # node-major (N, B, C): the sparse product needs no copies
        for block in self.blocks:
            h = block(h, emb, operator)
        return self.out(F.silu(self.out_norm(h)), operator).permute(1, 2, 0)
