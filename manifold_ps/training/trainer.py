"""A small, generic training loop: AdamW, EMA, AMP, clipping, spike guard, checkpoints, DDP.

:class:`Trainer` knows nothing about diffusion: it draws batches from an in-memory data set,
calls ``loss_fn(model, batch, generator)`` and takes optimizer steps. Everything needed for an
exact continuation is saved in ``out_dir/checkpoint.pt`` (written atomically) and restored by
:meth:`Trainer.fit`, so rerunning an interrupted job continues bit-identically on CPU.

Data-parallel training: launched by ``torchrun --nproc_per_node=K`` (``WORLD_SIZE > 1``), the
trainer starts the process group, wraps the model in
:class:`~torch.nn.parallel.DistributedDataParallel` and gives rank ``r`` the ``r``-th slice of
each global batch, so the global sample order (and, for a deterministic loss, the trajectory)
is that of one process with the whole batch. ``loss_fn`` must *call* the model it receives
(``model(...)``) for DDP to synchronise the gradients. Only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from .distributed import DistInfo, init_distributed
from .ema import ema_copy, ema_update

__all__ = ["Batch", "LossFn", "Trainer"]

Batch = Union[Tensor, dict[str, Tensor]]
"""A batch: the rows of the data tensor, or a dict of the rows of each data tensor."""

LossFn = Callable[[nn.Module, Batch, torch.Generator], tuple[Tensor, dict[str, float]]]
"""``loss_fn(model, batch, generator) -> (scalar loss, {name: float})``."""

_SPIKE_WINDOW = 64
_SPIKE_MIN_HISTORY = 8


class Trainer:
    """Train ``model`` by minimising ``loss_fn`` over random batches of ``data``.

    Args:
        model: The module to train (moved to ``device``).
        loss_fn: ``(model, batch, generator) -> (loss, logs)``; ``loss`` is a scalar tensor
            (the mean over the batch), ``logs`` a dict of floats averaged into the history.
            ``generator`` lives on ``device`` and is the only source of randomness to use.
        data: A tensor ``(N, ...)`` or a dict of tensors with the same first dimension
            (indexed together). It stays where it is; batches are moved to ``device``.
        out_dir: Folder of ``checkpoint.pt`` and TensorBoard logs; ``None`` keeps nothing.
        batch_size: Global batch size (divided among DDP ranks).
        max_steps: Total number of optimizer steps (including those of a resumed run); the
            learning-rate schedule spans them.
        stop_step: Stop after this many steps although the schedule spans ``max_steps``
            (``None``: at ``max_steps``): repeats exactly a run that a wall-clock budget stopped
            there. A checkpoint past it is refused.
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: Linear learning-rate warm-up length.
        lr_schedule: ``"constant"`` after warm-up, or ``"cosine"`` decay to zero at ``max_steps``.
        grad_clip: Clip the global gradient norm to this value (``None``: no clipping).
        ema_decay: Decay of the exponential moving average of the weights (warmed up as
            ``min(decay, (1 + step) / (10 + step))``); ``None`` disables it.
        amp: Mixed precision (bf16 where supported, else fp16 with a gradient scaler). Only
            active on CUDA; ignored on CPU.
        checkpoint_every: Write ``checkpoint.pt`` every this many steps (and at the end).
        log_every: Average and record the logs every this many steps.
        tensorboard: Also write the logged scalars to ``out_dir/tensorboard``.
        spike_guard: Skip the optimizer step when the loss is not finite or exceeds this
            factor times the median of the recent losses (skips are counted in
            :attr:`skipped_steps`). ``None``: a non-finite loss raises ``FloatingPointError``.
        seed: Seeds the data order and the loss generator.
        config: Plain-data description of the job, saved in every checkpoint.
        fingerprint: Geometry fingerprint saved in checkpoints; resuming from a checkpoint
            with another fingerprint raises ``ValueError``.
        progress: Show a tqdm progress bar with the loss and the throughput.
        device: Training device; default ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.

    Attributes:
        model: The trained module (unwrapped).
        ema_model: A copy holding the EMA weights (``model`` itself when ``ema_decay`` is None).
        step: Number of optimizer steps taken so far (skipped ones included).
        skipped_steps: Number of steps skipped by the spike guard.
        history: Logged values, each a list aligned with ``history["step"]``.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> x = torch.randn(64, 3); y = x @ torch.tensor([1.0, -2.0, 0.5])
        >>> def loss_fn(model, batch, generator):
        ...     loss = (model(batch["x"]).squeeze(-1) - batch["y"]).square().mean()
        ...     return loss, {}
        >>> trainer = Trainer(nn.Linear(3, 1), loss_fn, {"x": x, "y": y}, out_dir=None,
        ...                   batch_size=16, max_steps=200, lr=0.05, progress=False)
        >>> history = trainer.fit()
        >>> history["loss"][-1] < 1e-3
        True
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Tensor | Mapping[str, Tensor],
        *,
        out_dir: str | Path | None,
        batch_size: int,
        max_steps: int,
        lr: float,
        stop_step: int | None = None,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        lr_schedule: Literal["constant", "cosine"] = "constant",
        grad_clip: float | None = 1.0,
        ema_decay: float | None = 0.999,
        amp: bool = False,
        checkpoint_every: int = 500,
        log_every: int = 50,
        tensorboard: bool = False,
        spike_guard: float | None = None,
        seed: int = 0,
        config: dict[str, Any] | None = None,
        fingerprint: str = "",
        progress: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        self._num_items = _check_data(data)
        for name, value in (("batch_size", batch_size), ("max_steps", max_steps),
                            ("checkpoint_every", checkpoint_every), ("log_every", log_every)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if batch_size > self._num_items:
            raise ValueError(f"batch_size={batch_size} exceeds the {self._num_items} items of data")
        if stop_step is not None and int(stop_step) < 1:
            raise ValueError(f"stop_step must be >= 1 or None, got {stop_step}")
        if lr <= 0 or not math.isfinite(lr):
            raise ValueError(f"lr must be positive, got {lr}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {grad_clip}")
        if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1) or be None, got {ema_decay}")
        if spike_guard is not None and spike_guard <= 1.0:
            raise ValueError(f"spike_guard must be > 1 or None, got {spike_guard}")
        if tensorboard and out_dir is None:
            raise ValueError("tensorboard=True needs an out_dir")

        self.device = _pick_device(device)
        self.dist: DistInfo = init_distributed(self.device)
        if batch_size % self.dist.world_size:
            raise ValueError(f"batch_size={batch_size} is not divisible by the world size {self.dist.world_size}")

        self.model = model.to(self.device)
        self.loss_fn = loss_fn
        self.data = data
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.batch_size = int(batch_size)
        self.max_steps = int(max_steps)
        self.stop_step = None if stop_step is None else int(stop_step)
        self.grad_clip = grad_clip
        self.ema_decay = ema_decay
        self.checkpoint_every = int(checkpoint_every)
        self.log_every = int(log_every)
        self.tensorboard = tensorboard
        self.spike_guard = spike_guard
        self.seed = int(seed)
        self.config = dict(config or {})
        self.fingerprint = str(fingerprint)
        self.progress = progress

        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self._wrapped: nn.Module = DistributedDataParallel(self.model, device_ids=device_ids)
        else:
            self._wrapped = self.model
        self.ema_model = ema_copy(self.model) if ema_decay is not None else self.model

        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _LRFactor(int(warmup_steps), self.max_steps, lr_schedule)
        )
        self._amp_dtype: torch.dtype | None = None
        self.scaler: torch.amp.GradScaler | None = None
        if amp and self.device.type == "cuda":
            self._amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            if self._amp_dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")

        self._data_gen = torch.Generator().manual_seed(self.seed)
        self._loss_gen = torch.Generator(device=self.device).manual_seed(
            self.seed + 1 + 1_000_003 * self.dist.rank)
        self._perm: Tensor | None = None
        self._cursor = 0
        self.epoch = 0
        self.step = 0
        self.skipped_steps = 0
        self._recent: deque[float] = deque(maxlen=_SPIKE_WINDOW)
        self.history: dict[str, list[float]] = {}

    # -- public ---------------------------------------------------------------------------------
    @property
    def end_step(self) -> int:
        """The step training stops at: ``stop_step`` when it is set (and earlier), else ``max_steps``."""
        return self.max_steps if self.stop_step is None else min(self.max_steps, self.stop_step)

    @property
    def checkpoint_path(self) -> Path | None:
        """``out_dir/checkpoint.pt`` (``None`` without an ``out_dir``)."""
        return self.out_dir / "checkpoint.pt" if self.out_dir is not None else None

    def fit(self, callback: Callable[[Trainer, int, dict[str, float]], bool | None] | None = None) -> dict[str, list[float]]:
        """Train up to ``max_steps`` (or ``stop_step``), resuming from ``out_dir/checkpoint.pt``
        when it exists.

        Args:
            callback: Called after every step as ``callback(trainer, step, logs)``; returning
                ``True`` stops training early (a checkpoint is written first). A
                ``KeyboardInterrupt`` also writes a checkpoint before propagating.

        Returns:
            The history: ``{"step": [...], "loss": [...], "lr": [...], "grad_norm": [...],
            "samples_per_s": [...], "skipped": [...], <logged keys>: [...]}``.
        """
        path = self.checkpoint_path
        if path is not None and path.is_file():
            self.load_state(load_checkpoint(path, fingerprint=None, map_location=self.device))
            if self.stop_step is not None and self.step > self.stop_step:
                raise ValueError(f"checkpoint {path} is at step {self.step}, past stop_step={self.stop_step}: "
                                 "it cannot be trained back; use another out_dir, or delete it to start again")
            if self.dist.is_main:
                stop = f", stopping at {self.end_step}" if self.end_step < self.max_steps else ""
                print(f"resuming from step {self.step} of {self.max_steps}{stop} ({path})", file=sys.stderr, flush=True)
        end = self.end_step
        writer = self._open_writer()
        bar = tqdm(total=end, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (self.progress and self.dist.is_main), leave=False)
        sums: dict[str, float] = {}
        count = 0
        tic = time.perf_counter()
        try:
            while self.step < end:
                logs = self._train_step()
                for key, value in logs.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                bar.update(1)
                if self.step % self.log_every == 0 or self.step == end:
                    toc = time.perf_counter()
                    record = {key: value / count for key, value in sums.items()}
                    record["samples_per_s"] = count * self.batch_size / max(toc - tic, 1e-9)
                    record["skipped"] = float(self.skipped_steps)
                    self._record(record, writer)
                    bar.set_postfix(loss=f"{record['loss']:.4g}", samples_s=f"{record['samples_per_s']:.0f}")
                    sums, count, tic = {}, 0, time.perf_counter()
                stop = bool(callback(self, self.step, logs)) if callback is not None else False
                if self.step % self.checkpoint_every == 0 or self.step == end or stop:
                    self.save_checkpoint()
                if stop:
                    break
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if self.dist.distributed:
            dist.barrier()
        return self.history

    def close(self) -> None:
        """Destroy the process group if this trainer started it."""
        if self.dist.initialized_here and dist.is_initialized():
            dist.destroy_process_group()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (gathered from every rank under DDP)."""
        loss_rng = self._loss_gen.get_state()
        torch_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        if self.dist.distributed:
            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, (loss_rng, torch_rng, cuda_rng))
            per_rank = gathered
        else:
            per_rank = [(loss_rng, torch_rng, cuda_rng)]
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "skipped_steps": self.skipped_steps,
            "model": self.model.state_dict(),
            "ema": self.ema_model.state_dict() if self.ema_model is not self.model else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "data_rng": self._data_gen.get_state(),
            "perm": self._perm,
            "cursor": self._cursor,
            "loss_rng": [s[0].cpu() for s in per_rank],
            "torch_rng": [s[1].cpu() for s in per_rank],
            "cuda_rng": [s[2].cpu() if s[2] is not None else None for s in per_rank],
            "recent_losses": list(self._recent),
            "history": self.history,
            "world_size": self.dist.world_size,
            "batch_size": self.batch_size,
            "config": self.config,
            "fingerprint": self.fingerprint,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (a checkpoint of the same job)."""
        if state.get("fingerprint", "") != self.fingerprint:
            raise ValueError(
                f"checkpoint {self.checkpoint_path} was made for the geometry with fingerprint "
                f"{state.get('fingerprint') or '(none)'!r}, but this run trains for {self.fingerprint or '(none)'!r}; "
                "use another out_dir or the matching geometry"
            )
        if int(state["batch_size"]) != self.batch_size:
            raise ValueError(f"checkpoint {self.checkpoint_path} was trained with batch_size="
                             f"{state['batch_size']}, this run uses {self.batch_size}")
        try:
            self.model.load_state_dict(state["model"])
            if self.ema_model is not self.model:
                self.ema_model.load_state_dict(state["ema"] if state["ema"] is not None else state["model"])
        except RuntimeError as err:  # another architecture: missing keys or other sizes
            first = str(err).strip().splitlines()[1:2] or [str(err)[:200]]
            raise ValueError(f"checkpoint {self.checkpoint_path} holds the weights of another network "
                             f"({first[0].strip()}); rerun with the settings it was made with, or delete it "
                             "to train from the start") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.skipped_steps = int(state["skipped_steps"])
        self._data_gen.set_state(state["data_rng"].cpu())
        self._perm = state["perm"].cpu() if state["perm"] is not None else None
        self._cursor = int(state["cursor"])
        if int(state["world_size"]) == self.dist.world_size:
            rank = self.dist.rank
            self._loss_gen.set_state(state["loss_rng"][rank].cpu())
            torch.set_rng_state(state["torch_rng"][rank].cpu())
            if self.device.type == "cuda" and state["cuda_rng"][rank] is not None:
                torch.cuda.set_rng_state(state["cuda_rng"][rank].cpu(), self.device)
        else:  # another world size: continue with fresh, deterministic per-rank streams
            self._loss_gen.manual_seed(self.seed + 1 + 1_000_003 * self.dist.rank + self.step)
        self._recent = deque(state["recent_losses"], maxlen=_SPIKE_WINDOW)
        self.history = {key: list(value) for key, value in state["history"].items()}

    def save_checkpoint(self) -> Path | None:
        """Write ``out_dir/checkpoint.pt`` atomically (rank 0 only); returns its path."""
        path = self.checkpoint_path
        if path is None:
            return None
        state = self.state_dict()  # collective under DDP: every rank takes part
        if self.dist.is_main:
            save_checkpoint(state, path)
        return path

    # -- internals --------------------------------------------------------------------------------
    def _next_batch(self) -> Batch:
        if self._perm is None or self._cursor + self.batch_size > self._num_items:
            self._perm = torch.randperm(self._num_items, generator=self._data_gen)
            self._cursor = 0
            self.epoch += 1
        index = self._perm[self._cursor: self._cursor + self.batch_size]
        self._cursor += self.batch_size
        local = self.batch_size // self.dist.world_size
        index = index[self.dist.rank * local: (self.dist.rank + 1) * local]
        return _index(self.data, index, self.device)

    def _train_step(self) -> dict[str, float]:
        self._wrapped.train()
        batch = self._next_batch()
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (torch.autocast(self.device.type, dtype=self._amp_dtype)
                    if self._amp_dtype is not None else contextlib.nullcontext())
        with autocast:
            loss, logs = self.loss_fn(self._wrapped, batch, self._loss_gen)
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}")
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        value = loss.detach().float()
        if self.dist.distributed:
            dist.all_reduce(value)
            value = value / self.dist.world_size
        value_f = float(value)

        skip = False
        if not math.isfinite(value_f):
            if self.spike_guard is None:
                raise FloatingPointError(f"non-finite loss {value_f} at step {self.step}; "
                                         "pass spike_guard to skip such steps")
            skip = True
        elif self.spike_guard is not None and len(self._recent) >= _SPIKE_MIN_HISTORY:
            skip = value_f > self.spike_guard * statistics.median(self._recent)

        grad_norm = float("nan")
        if skip:
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self._recent.append(value_f)
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if self.grad_clip is not None:
                grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip))
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.ema_model is not self.model:
                decay = min(float(self.ema_decay), (1.0 + self.step) / (10.0 + self.step))
                ema_update(self.ema_model, self.model, decay)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        out = {"loss": value_f, "lr": lr, "grad_norm": grad_norm}
        out.update({key: float(v.detach()) if isinstance(v, Tensor) else float(v) for key, v in logs.items()})
        return out

    def _record(self, record: dict[str, float], writer: Any) -> None:
        if not self.dist.is_main:
            return
        self.history.setdefault("step", []).append(float(self.step))
        for key, value in record.items():
            self.history.setdefault(key, []).append(float(value))
        if writer is not None:
            for key, value in record.items():
                writer.add_scalar(f"train/{key}", value, self.step)

    def _open_writer(self) -> Any:
        if not (self.tensorboard and self.dist.is_main and self.out_dir is not None):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # optional dependency
            raise ImportError("tensorboard=True needs the tensorboard package "
                              "(pip install 'manifold_ps[tensorboard]')") from err
        return SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))


class _LRFactor:
    """Learning-rate multiplier: linear warm-up, then constant or cosine decay."""

    def __init__(self, warmup: int, total: int, schedule: str) -> None:
        self.warmup, self.total, self.schedule = warmup, total, schedule

    def __call__(self, step: int) -> float:
        factor = min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        if self.schedule == "cosine":
            progress = min(1.0, max(0.0, (step - self.warmup) / max(1, self.total - self.warmup)))
            factor *= 0.5 * (1.0 + math.cos(math.pi * progress))
        return factor


def _check_data(data: Tensor | Mapping[str, Tensor]) -> int:
    if isinstance(data, Tensor):
        if data.ndim < 1 or data.shape[0] < 1:
            raise ValueError(f"data must have a non-empty first dimension, got shape {tuple(data.shape)}")
        return int(data.shape[0])
    if isinstance(data, Mapping) and data:
        sizes = {key: int(value.shape[0]) for key, value in data.items() if isinstance(value, Tensor)}
        if len(sizes) != len(data):
            raise ValueError("every value of the data dict must be a tensor")
        if len(set(sizes.values())) != 1:
            raise ValueError(f"data tensors must share their first dimension, got {sizes}")
        return next(iter(sizes.values()))
    raise ValueError(f"data must be a tensor or a non-empty dict of tensors, got {type(data).__name__}")


def _index(data: Tensor | Mapping[str, Tensor], index: Tensor, device: torch.device) -> Batch:
    def take(x: Tensor) -> Tensor:
        return x.index_select(0, index.to(x.device)).to(device, non_blocking=True)

    if isinstance(data, Tensor):
        return take(data)
    return {key: take(value) for key, value in data.items()}


def _pick_device(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")
