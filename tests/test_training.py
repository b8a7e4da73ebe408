"""Tests of the generic training loop: convergence, exact resume, guards, checkpoints and DDP."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from manifold_ps.training import Trainer, load_checkpoint, save_checkpoint


@pytest.fixture(autouse=True, scope="module")
def _single_thread():  # noqa: ANN202
    """Tiny tensors gain nothing from intra-op threads, and on busy shared cores the OpenMP
    spin-waiting of 2 threads made these tests ~50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _data(n: int = 64) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -1.0, 0.5, 2.0])
    return {"x": x, "y": y}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Dropout(0.1), nn.Linear(16, 1))


def _noisy_loss(model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
    # uses the loss generator (input noise) and the global RNG (dropout): both must be restored
    x = batch["x"] + 0.05 * torch.randn(batch["x"].shape, generator=generator, device=batch["x"].device)
    loss = (model(x).squeeze(-1) - batch["y"]).square().mean()
    return loss, {"mse": float(loss.detach())}


def _kwargs(**overrides: object) -> dict[str, object]:
    kwargs: dict[str, object] = dict(batch_size=16, max_steps=20, lr=1e-2, warmup_steps=3, lr_schedule="cosine",
                                     ema_decay=0.9, checkpoint_every=1000, log_every=5, progress=False,
                                     device="cpu", fingerprint="geom-a", config={"name": "toy"})
    kwargs.update(overrides)
    return kwargs


def _params(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def test_loss_decreases() -> None:
    trainer = Trainer(_model(), _noisy_loss, _data(), out_dir=None, **_kwargs(max_steps=60, lr_schedule="constant"))
    history = trainer.fit()
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert {"step", "loss", "lr", "grad_norm", "samples_per_s", "skipped", "mse"} <= set(history)
    assert history["step"][-1] == 60


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    straight = Trainer(_model(), _noisy_loss, _data(), out_dir=tmp_path / "a", **_kwargs())
    straight.fit()

    first = Trainer(_model(), _noisy_loss, _data(), out_dir=tmp_path / "b", **_kwargs())
    first.fit(callback=lambda trainer, step, logs: step == 10)  # "interrupted" after 10 steps
    assert first.step == 10
    # a fresh process would start from other weights and RNG states: perturb them
    torch.manual_seed(123)
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    torch.manual_seed(999)
    resumed = Trainer(model, _noisy_loss, _data(), out_dir=tmp_path / "b", **_kwargs())
    resumed.fit()
    assert resumed.step == 20
    for a, b in zip(_params(straight.model), _params(resumed.model), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(_params(straight.ema_model), _params(resumed.ema_model), strict=True):
        assert torch.equal(a, b)
    assert straight.history["loss"] == resumed.history["loss"]


def test_stop_step_repeats_a_run_that_a_callback_stopped(tmp_path: Path) -> None:
    """A run stopped by a callback (a wall-clock cap) at step k is repeated exactly by stop_step=k:
    the schedule still spans max_steps, so this is not a shorter run."""
    capped = Trainer(_model(), _noisy_loss, _data(), out_dir=tmp_path / "a", **_kwargs())
    capped.fit(callback=lambda trainer, step, logs: step == 7)
    again = Trainer(_model(), _noisy_loss, _data(), out_dir=tmp_path / "b", **_kwargs(stop_step=7))
    again.fit()
    shorter = Trainer(_model(), _noisy_loss, _data(), out_dir=None, **_kwargs(max_steps=7))
    shorter.fit()
    assert capped.step == again.step == 7 and again.end_step == 7
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 7
    for a, b, c in zip(_params(capped.ema_model), _params(again.ema_model), _params(shorter.ema_model), strict=True):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, c) for a, c in zip(_params(capped.model), _params(shorter.model), strict=True))
    # a larger stop_step continues the run; a checkpoint past it is refused
    more = Trainer(_model(), _noisy_loss, _data(), out_dir=tmp_path / "b", **_kwargs(stop_step=9))
    more.fit()
    assert more.step == 9
    with pytest.raises(ValueError, match=r"at step 9, past stop_step=8"):
        Trainer(_model(), _noisy_loss, _data(), out_dir=tmp_path / "b", **_kwargs(stop_step=8)).fit()
    with pytest.raises(ValueError, match="stop_step must be >= 1"):
        Trainer(_model(), _noisy_loss, _data(), out_dir=None, **_kwargs(stop_step=0))


def test_resume_other_fingerprint_raises(tmp_path: Path) -> None:
    Trainer(_model(), _noisy_loss, _data(), out_dir=tmp_path, **_kwargs(max_steps=2)).fit()
    other = Trainer(_model(), _noisy_loss, _data(), out_dir=tmp_path, **_kwargs(max_steps=4, fingerprint="geom-b"))
    with pytest.raises(ValueError, match="geom-a"):
        other.fit()


def test_checkpoint_contents_and_validation(tmp_path: Path) -> None:
    trainer = Trainer(_model(), _noisy_loss, _data(), out_dir=tmp_path, **_kwargs(max_steps=3))
    trainer.fit()
    state = load_checkpoint(tmp_path / "checkpoint.pt", fingerprint="geom-a")
    assert state["step"] == 3 and state["config"] == {"name": "toy"}
    assert {"model", "ema", "optimizer", "scheduler", "data_rng", "loss_rng", "torch_rng"} <= set(state)
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file
    with pytest.raises(ValueError, match="fingerprint"):
        load_checkpoint(tmp_path / "checkpoint.pt", fingerprint="geom-b")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.pt")
    save_checkpoint({"step": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="lacks"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_spike_guard_skips_and_nonfinite_raises() -> None:
    calls = {"n": 0}

    def spiky(model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        calls["n"] += 1
        loss, logs = _noisy_loss(model, batch, generator)
        if calls["n"] == 12:
            loss = loss * 1e6
        if calls["n"] == 15:
            loss = loss * float("nan")
        return loss, logs

    trainer = Trainer(_model(), spiky, _data(), out_dir=None, **_kwargs(spike_guard=10.0))
    trainer.fit()
    assert trainer.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())

    calls["n"] = 0
    unguarded = Trainer(_model(), spiky, _data(), out_dir=None, **_kwargs())
    with pytest.raises(FloatingPointError, match="spike_guard"):
        unguarded.fit()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(_model(), _noisy_loss, _data(8), out_dir=None, **_kwargs())
    with pytest.raises(ValueError, match="first dimension"):
        Trainer(_model(), _noisy_loss, {"x": torch.zeros(8, 2), "y": torch.zeros(9)}, out_dir=None,
                **_kwargs(batch_size=4))
    with pytest.raises(ValueError, match="lr_schedule"):
        Trainer(_model(), _noisy_loss, _data(), out_dir=None, **_kwargs(lr_schedule="step"))


def test_tensorboard_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    Trainer(_model(), _noisy_loss, _data(), out_dir=tmp_path, **_kwargs(max_steps=5, tensorboard=True)).fit()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


_DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    from manifold_ps.training import Trainer

    def loss_fn(model, batch, generator):
        loss = (model(batch["x"]).squeeze(-1) - batch["y"]).square().mean()
        return loss, {}

    def run(out):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Linear(16, 1))
        g = torch.Generator().manual_seed(1)
        x = torch.randn(64, 4, generator=g)
        y = torch.sin(x @ torch.tensor([1.0, -1.0, 0.5, 2.0]))
        trainer = Trainer(model, loss_fn, {"x": x, "y": y}, out_dir=None, batch_size=16, max_steps=6,
                          lr=1e-2, ema_decay=0.9, grad_clip=0.5, progress=False, device="cpu")
        trainer.fit()
        if trainer.dist.rank == 0:
            torch.save([p.detach() for p in trainer.ema_model.parameters()], out)
        trainer.close()

    if __name__ == "__main__":
        torch.set_num_threads(1)
        run(sys.argv[1])
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ddp_two_processes_match_one(tmp_path: Path) -> None:
    """Two gloo ranks (launched the way torchrun does: RANK/WORLD_SIZE/MASTER_* variables) each
    take half of every global batch; the result equals one process with the whole batch."""
    script = tmp_path / "ddp_job.py"
    script.write_text(_DDP_SCRIPT)
    single, multi = tmp_path / "single.pt", tmp_path / "multi.pt"
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = dict(clean, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, str(script), str(multi)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    # the single-process reference runs here while the ranks start up
    assert "WORLD_SIZE" not in os.environ or os.environ["WORLD_SIZE"] == "1"
    runpy.run_path(str(script))["run"](str(single))
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out.decode()[-2000:]
    for a, b in zip(torch.load(single), torch.load(multi), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
