"""A validated in-memory dataset of vertex signals ``(N, C, V)``."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset

from manifold_ps._checks import check_finite

__all__ = ["SignalDataset"]


class SignalDataset(Dataset[Tensor]):
    """Vertex signals held in memory, checked once at construction.

    Indexing returns one signal ``(C, V)``; the labels (if any) are in :attr:`labels`.

    Args:
        signals: Signals in the geometry's natural vertex order.
        labels: Optional per-sample labels (class ids, split names are not tensors and stay outside).
        name: A short description of the data (used in ``repr``).

    Shapes:
        signals: ``(N, C, V)`` floating point, finite; labels: ``(N,)``.

    Example:
        >>> import torch
        >>> ds = SignalDataset(torch.zeros(5, 1, 7), torch.arange(5))
        >>> len(ds), tuple(ds[0].shape), ds.num_vertices, ds.channels
        (5, (1, 7), 7, 1)
        >>> SignalDataset(torch.full((1, 1, 2), float("nan")))
        Traceback (most recent call last):
        ...
        ValueError: signals contains 2 NaN or infinite value(s)
    """

    def __init__(self, signals: Tensor, labels: Tensor | None = None, *, name: str = "signals") -> None:
        if not isinstance(signals, Tensor):
            raise TypeError(f"signals must be a torch.Tensor, got {type(signals).__name__}")
        if signals.ndim != 3:
            raise ValueError(f"signals must have shape (N, C, V), got {tuple(signals.shape)}")
        if not signals.is_floating_point():
            raise ValueError(f"signals must be floating point, got {signals.dtype}")
        check_finite(signals, "signals")
        if labels is not None and (labels.ndim != 1 or labels.shape[0] != signals.shape[0]):
            raise ValueError(
                f"labels must have shape ({signals.shape[0]},) to match signals, got {tuple(labels.shape)}"
            )
        self.signals = signals
        self.labels = labels
        self.name = name

    def __len__(self) -> int:
        return self.signals.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.signals[index]

    @property
    def channels(self) -> int:
        """Number of channels ``C``."""
        return self.signals.shape[1]

    @property
    def num_vertices(self) -> int:
        """Number of vertices ``V``."""
        return self.signals.shape[2]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, signals={tuple(self.signals.shape)})"
