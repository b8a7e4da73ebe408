"""Vertex layout: the reordering and padding that turn a vertex signal into a network sequence.

Networks (score models, flows) see a signal on ``V`` vertices as a 1-D sequence: the vertices
are put in a locality-preserving order (so that 1-D convolutions are local on the surface) and
zero-padded to a length the network needs (e.g. a multiple of ``2**depth``). Everything outside
the networks uses the natural ``(B, C, V)`` signal; :class:`VertexLayout` converts both ways and
keeps its index tensors as buffers, so ``.to(device)`` moves them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_signal

__all__ = ["VertexLayout", "padded_length"]


def padded_length(num_vertices: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is ``>= num_vertices``.

    Example:
        >>> padded_length(1889, 32)
        1920
    """
    if num_vertices < 1 or multiple < 1:
        raise ValueError(f"num_vertices and multiple must be positive, got {num_vertices}, {multiple}")
    return -(-num_vertices // multiple) * multiple


class VertexLayout(nn.Module):
    """Permutation of vertices plus zero padding at the end of the sequence.

    Args:
        num_vertices: Number of vertices ``V`` of the geometry.
        perm: Optional permutation of ``range(V)``; ``perm[i]`` is the vertex placed at position
            ``i`` of the sequence. ``None`` keeps the natural order.
        multiple: Pad the sequence to a multiple of this length.

    Shapes:
        natural signal ``(B, C, V)``; sequence ``(B, C, L)`` with ``L = padded_length(V, multiple)``.

    Example:
        >>> layout = VertexLayout(5, perm=torch.tensor([4, 2, 0, 1, 3]), multiple=4)
        >>> x = torch.arange(5.0).view(1, 1, 5)
        >>> layout.to_sequence(x)
        tensor([[[4., 2., 0., 1., 3., 0., 0., 0.]]])
        >>> torch.equal(layout.from_sequence(layout.to_sequence(x)), x)
        True
    """

    perm: Tensor
    inverse_perm: Tensor
    valid: Tensor

    def __init__(self, num_vertices: int, perm: Tensor | None = None, multiple: int = 1) -> None:
        super().__init__()
        if perm is None:
            perm = torch.arange(num_vertices)
        perm = torch.as_tensor(perm, dtype=torch.long).flatten()
        if perm.numel() != num_vertices or not torch.equal(perm.sort().values, torch.arange(num_vertices)):
            raise ValueError(f"perm must be a permutation of range({num_vertices}), got {perm.numel()} entries")
        self.num_vertices = int(num_vertices)
        self.length = padded_length(self.num_vertices, multiple)
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))
        valid = torch.zeros(self.length, dtype=torch.bool)
        valid[: self.num_vertices] = True
        self.register_buffer("valid", valid)

    @property
    def num_padding(self) -> int:
        """Number of padded (always zero) positions at the end of the sequence."""
        return self.length - self.num_vertices

    def to_sequence(self, x: Tensor) -> Tensor:
        """Reorder and zero-pad a natural signal: ``(B, C, V) -> (B, C, L)``."""
        check_signal(x, self.num_vertices, "x")
        x = x.index_select(-1, self.perm)
        if self.num_padding:
            x = torch.cat([x, x.new_zeros(*x.shape[:-1], self.num_padding)], dim=-1)
        return x

    def from_sequence(self, s: Tensor) -> Tensor:
        """Drop the padding and undo the order: ``(B, C, L) -> (B, C, V)``."""
        if s.shape[-1] != self.length:
            raise ValueError(f"sequence has length {s.shape[-1]}, layout expects {self.length}")
        return s[..., : self.num_vertices].index_select(-1, self.inverse_perm)

    def zero_padding(self, s: Tensor) -> Tensor:
        """Return ``s`` with the padded positions set to exactly zero: ``(B, C, L) -> (B, C, L)``."""
        return s * self.valid.to(s.dtype)

    def extra_repr(self) -> str:
        return f"num_vertices={self.num_vertices}, length={self.length}"
