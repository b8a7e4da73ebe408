"""The paper's workloads as data: geometry, clean signals per split, and inverse problems.

A :class:`Workload` says *what* is benchmarked; :mod:`manifold_ps.benchmarking.pipeline` says
*how* (train the prior, distil the flow, run every sampler, write results). Builders here read
the real data through :mod:`manifold_ps.datasets`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from ..geometry import Geometry, ImageGrid, Mesh, SphereGrid
from ..operators import Operator, RandomInpainting
from ..config import Config

__all__ = ["EvalSet", "Task", "Workload", "bunny_mnist", "sphere_temperature", "image_restoration", "WORKLOADS",
           "PROFILE_DEFAULTS", "get_workload", "profile_defaults"]

OperatorFactory = Callable[[int, torch.Generator], Operator]


@dataclass
class EvalSet:
    """Clean signals on which measurements are simulated for evaluation.

    Attributes:
        name: Short key (``"heldout"``, ``"era5-real"``, ...).
        dataset: Human-readable name of the data set the numbers come from.
        x: Clean signals ``(N, C, V)``, one per measurement (a field measured with several masks
            appears once per mask).
        note: Caveat printed with the table (e.g. "stand-in, not comparable with the paper").
        groups: Index of the underlying field of each measurement ``(N,)`` when several masks
            share one field (the bootstrap then resamples fields), ``None`` when all differ.
    """

    name: str
    dataset: str
    x: Tensor
    note: str = ""
    groups: Tensor | None = None

    @classmethod
    def repeated(cls, name: str, dataset: str, fields: Tensor, masks_per_field: int, note: str = "") -> EvalSet:
        """``masks_per_field`` measurements of each field (consecutive), with their groups."""
        if masks_per_field < 1:
            raise ValueError(f"masks_per_field must be >= 1, got {masks_per_field}")
        groups = torch.arange(fields.shape[0]).repeat_interleave(masks_per_field) if masks_per_field > 1 else None
        return cls(name, dataset, fields.repeat_interleave(masks_per_field, dim=0), note, groups)


@dataclass
class Task:
    """One inverse problem (one operator family) and so one amortized flow.

    Attributes:
        name: Short key (``"inpainting"``, ``"denoising"``...).
        make_operator: ``(N, generator) -> operator`` with per-measurement parameters.
        description: For the results' ``protocol`` field.
        reconstruct: Cheap reconstruction the flow starts from: ``"harmonic"`` (masking),
            ``"adjoint"`` or ``None``.
        condition: What the flow sees: ``"operator"`` (y and the operator's features) or
            ``"measurement"`` (y only: blind mode).
        baselines: Which baselines apply (``dps``, ``mcg``, ``harmonic``, ``reddiff``, ``tweedie``).
        flow_share: Relative share of the configuration's flow-training minutes (the workload's tasks
            split ``FlowConfig.minutes`` in these proportions).
        flow_overrides: :class:`~manifold_ps.config.FlowConfig` fields this task's flow sets over
            the configuration (e.g. a blind task cannot use the Gaussian base, which needs the
            operator); they are part of the flow's recorded configuration.
    """

    name: str
    make_operator: OperatorFactory
    description: dict[str, Any]
    reconstruct: Literal["harmonic", "adjoint"] | None = "harmonic"
    condition: Literal["operator", "measurement"] = "operator"
    baselines: tuple[str, ...] = ("gaussian", "dps", "mcg", "harmonic", "reddiff")
    flow_share: float = 1.0
    flow_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Workload:
    """Everything a benchmark needs about one workload.

    Attributes:
        name: Workload key written to ``results.json``.
        geometry: The discretisation.
        kind: ``"mesh"``, ``"sphere"`` or ``"image"`` (figures, SSIM).
        prior_train: Clean signals the prior trains on ``(N, C, V)``.
        flow_train: Clean signals whose *measurements* the flow trains on (the paper's protocol
            evaluates on the first of them; the flow never sees the clean signals).
        flow_dataset: Name of the data set of ``flow_train``.
        eval_sets: Held-out and cross-dataset evaluation sets.
        tasks: The inverse problems.
        image_shape: ``(H, W)`` when vertices form a row-major grid (SSIM is reported).
        normalisation: How values were normalised (stored with the sampler).
        notes: Lines printed under the results table.
        data_range: ``(low, high)`` that every clean signal is guaranteed to lie in (digits and
            images: ``(0, 1)``); every estimate is projected onto it before scoring, and the
            sampler tuning may clip to it. ``None`` when the range is only nominal (temperature
            min-max normalised on other data can leave it): nothing is projected.
    """

    name: str
    geometry: Geometry
    kind: Literal["mesh", "sphere", "image"]
    prior_train: Tensor
    flow_train: Tensor
    flow_dataset: str
    eval_sets: list[EvalSet]
    tasks: list[Task]
    image_shape: tuple[int, int] | None = None
    normalisation: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    data_range: tuple[float, float] | None = None

    @property
    def channels(self) -> int:
        return int(self.prior_train.shape[1])

    def task(self, name: str | None = None) -> Task:
        """The task called ``name`` (the first for ``None``).

        Raises:
            ValueError: for a task the workload does not have, listing its tasks.
        """
        names = [t.name for t in self.tasks]
        if name is not None and name not in names:
            raise ValueError(f"{self.name} has no task {name!r}; its tasks are {names}")
        return self.tasks[names.index(name) if name is not None else 0]


def _masking(num_vertices: int, missing: float | tuple[float, float], sigma: float) -> OperatorFactory:
    rng = (missing, missing) if isinstance(missing, float) else tuple(missing)

    def make(n: int, generator: torch.Generator) -> Operator:
        return RandomInpainting(num_vertices, rng, sigma).draw(n, generator=generator)

    return make


def _take(x: Tensor, n: int | None) -> Tensor:
    return x if n is None else x[: min(n, x.shape[0])]


def bunny_mnist(config: Config, *, root: Any = None, missing: float = 0.3, sigma: float = 0.1,
                masks_per_digit: int = 2) -> Workload:
    """MNIST digits painted on the 1889-vertex Stanford bunny; 30% of the vertices masked.

    The prior trains on the 60k training digits; the flow on the measurements of the 10k test
    digits (the paper's protocol); the held-out protocol evaluates on the last
    ``n_eval / masks_per_digit`` test digits, each with ``masks_per_digit`` masks, which the flow
    never saw (they are excluded from its training set). Digits lie in ``[0, 1]``.
    """
    from ..datasets import BunnyMNIST, bunny_path

    geometry = Mesh.from_file(bunny_path("res3", root=root))
    n_digits = max(1, config.eval.n_eval // masks_per_digit)
    train = BunnyMNIST(geometry.positions, "train", root=root, num_samples=config.prior.train_size).signals
    n_flow = 10_000 - n_digits if config.flow.train_size is None else config.flow.train_size
    test = BunnyMNIST(geometry.positions, "test", root=root, num_samples=n_flow + n_digits).signals
    flow_train = test[:n_flow]
    heldout = EvalSet.repeated("heldout", "MNIST test digits on the bunny (not seen by the flow)",
                               test[n_flow: n_flow + n_digits].float(), masks_per_digit)
    task = Task(
        name="inpainting",
        make_operator=_masking(geometry.num_vertices, missing, sigma),
        description={"operator": "random vertex mask", "missing_fraction": missing, "sigma_y": sigma},
    )
    return Workload(
        name="bunny-mnist", geometry=geometry, kind="mesh", prior_train=train.float(), flow_train=flow_train.float(),
        flow_dataset="MNIST test digits on the bunny",
        eval_sets=[heldout], tasks=[task], normalisation={"kind": "minmax", "low": 0.0, "high": 1.0, "unit": "intensity"},
        data_range=(0.0, 1.0),
    )


def sphere_temperature(
    config: Config,
    *,
    root: Any = None,
    missing: float = 0.6,
    sigma: float = 0.05,
    blind_range: tuple[float, float] = (0.3, 0.6),
    dataset: Literal["auto", "gasp", "ipsl"] = "auto",
    masks_per_snapshot: int = 3,
) -> Workload:
    """2 m temperature on the 46 x 90 sphere grid, 60% of the vertices masked.

    Uses the paper's GASP ERA5 set when it is in the data folder; otherwise (offline) the CMIP6
    IPSL-CM6A-LR monthly stand-in, with the 24 real ERA5 snapshots (``masks_per_snapshot``
    masks each) as a cross-dataset check. The min-max range is nominal (other data can leave
    it), so nothing is projected.
    """
    from ..datasets import load_gasp, load_gridded_temperature

    geometry = SphereGrid.gasp()
    notes: list[str] = []
    gasp = None
    if dataset in ("auto", "gasp"):
        try:
            gasp = {s: load_gasp(s, root=root) for s in ("train", "val", "test")}
        except FileNotFoundError:
            if dataset == "gasp":
                raise
    if gasp is not None:
        prior_x, flow_x, held_x = gasp["train"].values, gasp["test"].values, gasp["val"].values
        label = "ERA5 (GASP era5_temp2m_16x)"
        extra: list[EvalSet] = []
    else:
        data = load_gridded_temperature("ipsl", root=root)
        split = list(data.split)
        pick = lambda name: data.values[[i for i, s in enumerate(split) if s == name]]  # noqa: E731
        prior_x, flow_x, held_x = pick("train"), pick("test"), pick("val")
        label = "CMIP6 IPSL-CM6A-LR monthly (ERA5 stand-in)"
        notes.append("Offline stand-in data: CMIP6 model output on the GASP grid, NOT the paper's ERA5 set; "
                     "numbers are not comparable with the paper's ERA5 column.")
        era5 = load_gridded_temperature("era5_sample24", root=root).values
        extra = [EvalSet.repeated("era5-real", f"real ERA5 snapshots (24 from 2026-03, {masks_per_snapshot} masks each)",
                                  era5.float(), masks_per_snapshot, note="cross-dataset: the flow was trained on CMIP6")]
    n_eval = config.eval.n_eval
    prior_x = _take(prior_x, config.prior.train_size)
    flow_x = _take(flow_x, config.flow.train_size)
    held_x = held_x[:n_eval]
    tasks = [
        Task(name="imputation", make_operator=_masking(geometry.num_vertices, missing, sigma),
             description={"operator": "random vertex mask", "missing_fraction": missing, "sigma_y": sigma}),
        Task(name="blind", make_operator=_masking(geometry.num_vertices, blind_range, sigma),
             description={"operator": "random vertex mask, fraction drawn per sample (blind)",
                          "missing_range": list(blind_range), "sigma_y": sigma},
             condition="measurement", baselines=("gaussian", "harmonic"), flow_share=0.5,
             # the flow sees y only, and the Gaussian base needs the mask: the paper's sampler, with
             # its prior term (the score at t_min needs a decoder)
             flow_overrides={"base": "fill", "decode": False, "prior_term": "elbo", "decoder_noise": False,
                             "likelihood": "denoised"}),
    ]
    return Workload(
        name="era5-imputation", geometry=geometry, kind="sphere", prior_train=prior_x.float(),
        flow_train=flow_x.float(), flow_dataset=label,
        eval_sets=[EvalSet("heldout", f"{label}, validation split (not seen by the flow)", held_x.float()), *extra],
        tasks=tasks, image_shape=(46, 90),
        normalisation={"kind": "minmax", "low": 202.66, "high": 320.93, "unit": "K"}, notes=notes,
    )


def image_restoration(config: Config, *, root: Any = None) -> Workload:
    """32 x 32 images as a regular grid: denoising (0.1), 2x super-resolution and deblurring (0.01).

    The prior trains on MNIST padded to 32 x 32; the flows on measurements of MNIST test digits;
    the Olivetti faces are a cross-dataset check.
    """
    from ..datasets import load_olivetti, mnist_padded_32
    from ..operators import Denoising, Downsample2x, ImageBlur

    geometry = ImageGrid(32, 32)
    v = geometry.num_vertices
    train_img, _ = mnist_padded_32("train", root=root)
    test_img, _ = mnist_padded_32("test", root=root)
    faces, _ = load_olivetti(size=32, root=root)
    n_eval = config.eval.n_eval
    n_flow = 10_000 - n_eval if config.flow.train_size is None else config.flow.train_size
    as_signal = lambda img: img.reshape(img.shape[0], 1, v).float()  # noqa: E731
    prior_x = as_signal(_take(train_img, config.prior.train_size))
    test = as_signal(test_img[: n_flow + n_eval])

    def shared(op: Callable[[], Operator]) -> OperatorFactory:
        return lambda n, generator: op()

    tasks = [
        Task("denoising", shared(lambda: Denoising(v, 0.1)), {"operator": "identity", "sigma_y": 0.1},
             reconstruct="adjoint", baselines=("gaussian", "dps", "reddiff", "tweedie")),
        Task("super-resolution", shared(lambda: Downsample2x(32, 32, 0.01)),
             {"operator": "2x2 average pooling", "sigma_y": 0.01}, reconstruct="adjoint", baselines=("gaussian", "dps", "reddiff")),
        Task("deblurring", shared(lambda: ImageBlur(32, 32, kernel_sigma=1.0, kernel_size=5, sigma=0.01)),
             {"operator": "Gaussian blur (sigma 1 px, 5x5)", "sigma_y": 0.01}, reconstruct="adjoint",
             baselines=("gaussian", "dps", "reddiff")),
    ]
    return Workload(
        name="image-restoration", geometry=geometry, kind="image", prior_train=prior_x, flow_train=test[:n_flow],
        flow_dataset="MNIST test digits, 32 x 32",
        eval_sets=[EvalSet("heldout", "MNIST test digits (not seen by the flow)", test[n_flow: n_flow + n_eval]),
                   EvalSet("faces", "Olivetti faces 32 x 32 (cross-dataset)", as_signal(faces[:n_eval]),
                           note="cross-dataset: prior and flow trained on MNIST")],
        tasks=tasks, image_shape=(32, 32),
        normalisation={"kind": "minmax", "low": 0.0, "high": 1.0, "unit": "intensity"}, data_range=(0.0, 1.0),
    )


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "bunny-mnist": bunny_mnist,
    "era5-imputation": sphere_temperature,
    "image-restoration": image_restoration,
}
"""The workloads by their one name (the ``--workload`` of the command line and the sweep scripts;
the benchmark script of each is ``benchmarks/<name with _>.py`` and runs in ``runs/<that name>``).
Their first task is the one the sweep scripts use."""


PROFILE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "era5-imputation": {"cpu": {
        # DPS and MCG at 100 NFE: the DPS sweep on held-out CMIP6 fields shows no loss against 1000
        # (benchmarks/results/dps_sweep-era5_imputation-cpu.md); t_min 0.005 was the best row of the
        # paper sampler's sphere flow ablation (commit 0e1de95; the committed table now holds the
        # decoded sampler's rows, benchmarks/results/flow_ablation-era5_imputation-cpu.md).
        # The decoded sampler takes ~0.4 steps/s on these 4140 vertices on 2 cores: a 120-step cosine
        # schedule ends within the imputation task's 6.7 minutes instead of being cut at full learning
        # rate (450 steps were cut at 147). Its peak learning rate stays 5e-4: the profile's 2e-3
        # changes nothing here, the flow ends where it starts at either rate
        # (benchmarks/results/flow_ablation-era5_imputation-cpu-lr*.md).
        # The decoder's error is integrated out of the likelihood and drawn given `y`
        # (`flow.likelihood = marginal`, `flow.decoder_noise`): without it the draws cover 0.81 of the
        # missing points at 90%, with it 0.88, the mean unchanged within 0.05 dB
        # (benchmarks/results/flow_ablation-era5_imputation-cpu-decoder-noise.md).
        # The prior starts from a 12-component Gaussian mixture with per-component covariances
        # (`prior.parameterization = mixture`): on held-out CMIP6 fields it denoises at 0.90 of the
        # single Gaussian's Wiener error over t <= 0.3 and lifts DPS above DPS with that Gaussian,
        # where the wiener prior stays at 0.99 (benchmarks/results/prior_quality-era5_imputation-cpu*.md).
        "prior.parameterization": "mixture",
        "eval.dps_nfe": 100, "flow.t_min": 0.005, "flow.train_steps": 120, "flow.lr": 5e-4,
        "flow.likelihood": "marginal", "flow.decoder_noise": True}},
    "bunny-mnist": {"cpu": {
        # A lone draw is timed with its measurement's factorisation: each held-out measurement has its
        # own mask, so the base factorises three 256 x 256 matrices per draw. In float32 that takes
        # 4.8 ms per measurement on one thread against 12.2 in float64, and its conditioning holds
        # for these Grams: on the fitted bunny Gaussian the posterior mean and the draws of u agree
        # with float64's within 2e-4 (signals in [0, 1]).
        "flow.base_precision": "float32"}},
    "image-restoration": {"cpu": {
        # three tasks and two evaluation sets: 32 measurements per set keep the iterative baselines
        # (on every measurement) within the 30-minute CPU budget
        "eval.n_eval": 32,
        # The flows' peak learning rate and schedule, chosen on each task's 16 validation measurements
        # (benchmarks/flow_ablation.py --scored-on validation): at the profile's 450 steps, lr 8e-3 lifts
        # one draw over lr 2e-3 by 0.5 / 1.2 / 0.8 dB (denoising / super-resolution / deblurring), the
        # largest of 2e-3, 4e-3 and 8e-3 on every task; a 700-step schedule in the same 3.3-minute cap
        # adds 0.5 dB on super-resolution and leaves the other two within 0.06 dB
        # (benchmarks/results/flow_ablation-image_restoration-*-cpu-validation*.md). A step takes about
        # 0.28 s on 2 otherwise idle cores, so the 700 steps end within the cap.
        "flow.lr": 8e-3, "flow.train_steps": 700}},
}
"""Per workload and profile, the ``{"section.field": value}`` applied over the profile (before a
configuration file and the command line's ``--set``): the settings that make the workload's run of
that profile. Its benchmark script, the sweep and ablation scripts and ``manifold-ps train-prior``
/ ``train-flow --workload`` all read them through :func:`profile_defaults`, so each configures the
same run."""


def profile_defaults(name: str, profile: str) -> dict[str, Any]:
    """The workload ``name``'s own settings at ``profile`` (a copy; ``{}`` where it has none).

    Raises:
        ValueError: for an unknown workload name, listing the valid ones.

    Example:
        >>> profile_defaults("era5-imputation", "cpu")["flow.t_min"]
        0.005
        >>> profile_defaults("bunny-mnist", "paper")
        {}
    """
    get_workload(name)
    return dict(PROFILE_DEFAULTS.get(name, {}).get(profile, {}))


def get_workload(name: str) -> Callable[..., Workload]:
    """The builder ``(config, **options) -> Workload`` of the workload ``name``.

    Raises:
        ValueError: for any other name, listing the valid ones.
    """
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose one of {sorted(WORKLOADS)}")
    return WORKLOADS[name]
