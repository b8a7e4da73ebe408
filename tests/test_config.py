"""The one run configuration: profiles, TOML and --set resolution, errors, the rerun check."""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from manifold_ps.config import (LEGACY_NAMES, PROFILES, SECTIONS, Config, EvalConfig, FlowConfig, PriorConfig,
                                add_config_arguments, add_shortcuts, apply_overrides, build_config, check_same_run,
                                config_from_args, config_from_dict, flatten, from_legacy_profile, get_profile)
from manifold_ps.flows.distill import T_MIN


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_are_instances_of_the_one_config(name: str) -> None:
    config = get_profile(name)
    assert isinstance(config, Config) and config.profile == name
    assert isinstance(config.prior, PriorConfig) and isinstance(config.flow, FlowConfig)
    assert isinstance(config.eval, EvalConfig)
    resolved = config.resolved()
    assert None not in (resolved.prior.warmup_steps, resolved.prior.ema_decay, resolved.flow.warmup_steps,
                        resolved.flow.ema_decay, resolved.flow.log_every, resolved.flow.checkpoint_every)
    assert config_from_dict(resolved.to_dict()) == resolved  # what is saved reads back


def test_profile_values_are_the_benchmark_ones() -> None:
    cpu = get_profile("cpu")
    assert (cpu.flow.train_steps, cpu.flow.t_min, cpu.flow.patch, cpu.flow.minutes) == (450, 0.02, 16, 10.0)
    assert (cpu.prior.lr, cpu.prior.train_steps, cpu.prior.minutes, cpu.eval.n_eval, cpu.eval.dps_nfe) == (5e-4, 2400, 11.0, 64, 300)
    assert (cpu.prior.network, cpu.prior.parameterization, cpu.prior.batch_size) == ("graph", "wiener", 16)
    assert get_profile("smoke").flow.t_min == get_profile("paper").flow.t_min == T_MIN == 0.03
    paper = get_profile("paper")
    assert (paper.prior.network, paper.prior.train_steps, paper.flow.layers, paper.flow.train_steps) == (
        "unet", 360_000, 24, 315_000)


@pytest.mark.parametrize("steps, prior, flow", [(30, (3, 0.9, 30), (3, 0.9, 30, 30)),
                                                 (900, (90, 0.9, 500), (90, 0.9, 250, 50)),
                                                 (2000, (200, 0.999, 500), (100, 0.999, 250, 50))])
def test_derived_settings_resolve_as_the_pipeline_derived_them(steps, prior, flow) -> None:
    p = PriorConfig(train_steps=steps).resolved()
    f = FlowConfig(train_steps=steps).resolved()
    assert (p.warmup_steps, p.ema_decay, p.checkpoint_every) == prior
    assert (f.warmup_steps, f.ema_decay, f.checkpoint_every, f.log_every) == flow
    assert PriorConfig(train_steps=steps, warmup_steps=7).resolved().warmup_steps == 7  # explicit values stay


def test_every_legacy_profile_field_has_one_new_name() -> None:
    names = {f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)} | {"profile", "seed"}
    assert set(LEGACY_NAMES.values()) <= names
    assert len(set(LEGACY_NAMES.values())) == len(LEGACY_NAMES)
    assert from_legacy_profile({"flow_steps": 8, "dps_steps": 1000, "name": "cpu"}) == {
        "flow": {"layers": 8}, "eval": {"dps_nfe": 1000}, "profile": "cpu"}


def test_toml_file_then_set_overrides_merge_over_the_profile(tmp_path: Path) -> None:
    file = tmp_path / "run.toml"
    file.write_text('seed = 3\n[flow]\nt_min = 0.01\nlayers = 4\nminutes = "none"\n[eval]\ndps_nfe = 100\n')
    config = build_config("cpu", file=file, overrides={"flow.layers": "6", "prior.amp": "true"},
                          defaults={"eval.baseline_eval": 16, "eval.dps_nfe": 5})
    assert config.seed == 3 and config.profile == "cpu"
    assert (config.flow.t_min, config.flow.layers, config.flow.minutes) == (0.01, 6, None)  # --set wins over the file
    assert config.eval.dps_nfe == 100 and config.eval.baseline_eval == 16  # the file wins over script defaults
    assert config.prior.amp is True and config.flow.train_steps == 450  # the rest is the profile's


def test_command_line_resolution(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[prior]\nlr = 1e-4\nbatch_size = 8\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    flags = add_shortcuts(parser, {"--train-steps|--steps": "prior.train_steps", "--lr": "prior.lr",
                                   "--amp": "prior.amp", "--parameterization": "prior.parameterization"})
    args = parser.parse_args(["--profile", "smoke", "--config", str(file), "--steps", "7", "--amp",
                              "--set", "prior.batch_size=4", "--set", "seed=2"])
    config = config_from_args(args, flags)
    assert (config.prior.train_steps, config.prior.lr, config.prior.batch_size, config.prior.amp) == (7, 1e-4, 4, True)
    assert config.seed == 2 and config.prior.preset == "tiny"
    with pytest.raises(SystemExit):  # a Literal field's flag only takes its choices
        parser.parse_args(["--parameterization", "v"])


@pytest.mark.parametrize("key, value, message", [
    ("flow.tmin", "0.1", r"unknown field 'flow.tmin'; the fields of \[flow\] are \[.*'t_min'"),
    ("flw.t_min", "0.1", r"unknown section 'flw'"),
    ("steps", "3", r"unknown setting 'steps'"),
    ("flow.layers", "two", r"flow.layers: 'two' is not a valid int"),
    ("flow.layers", "2.5", r"flow.layers: '2.5' is not a valid int"),
    ("prior.network", "cnn", r"prior.network: 'cnn' is not one of \['mlp', 'unet', 'graph'\]"),
    ("prior.amp", "maybe", r"prior.amp: 'maybe' is not a valid bool"),
    ("flow.t_min", "none", r"flow.t_min cannot be none"),
])
def test_bad_overrides_name_the_setting(key: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_overrides(get_profile("smoke"), {key: value})


def test_bad_file_is_named(tmp_path: Path) -> None:
    file = tmp_path / "bad.toml"
    file.write_text("[flow]\nlayer = 3\n")
    with pytest.raises(ValueError, match=r"bad.toml: unknown field 'flow.layer'"):
        build_config("smoke", file=file)
    file.write_text("[flow\n")
    with pytest.raises(ValueError, match="bad.toml is not valid TOML"):
        build_config("smoke", file=file)
    with pytest.raises(ValueError, match=r"unknown profile 'gpu'; choose one of \['cpu', 'paper', 'smoke'\]"):
        build_config("gpu")


def _record(config: Config) -> dict:
    return {"seed": config.seed, "flow": asdict(config.flow.resolved())}


def test_rerun_with_a_result_changing_field_is_refused_naming_each() -> None:
    cpu = get_profile("cpu")
    other = apply_overrides(cpu, {"flow.t_min": 0.01, "flow.n_z": 4, "seed": 1})
    with pytest.raises(ValueError, match=r"runs/x was made with other settings \(flow.n_z 2 -> 4, "
                                         r"flow.t_min 0.02 -> 0.01, seed 0 -> 1\); delete runs/x"):
        check_same_run(_record(cpu), _record(other), "runs/x", unresolved={"flow": asdict(other.flow)})


def test_a_field_added_later_matches_older_records_at_its_old_behaviour() -> None:
    elbo = apply_overrides(get_profile("cpu"), {"flow.prior_term": "elbo"})
    older = _record(elbo)
    del older["flow"]["prior_term"]  # written before the field existed: the ELBO was the only prior term
    check_same_run(older, _record(elbo), "runs/x")  # no error
    score = get_profile("cpu")  # the cpu profile's prior term is the score
    assert score.flow.prior_term == "score"
    with pytest.raises(ValueError, match=r"flow.prior_term 'elbo' -> 'score'"):
        check_same_run(older, _record(score), "runs/x")


def test_prior_training_choices_reach_the_trainer_and_older_records_resume_at_their_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--profile", "cpu", "--set", "prior.time_sampling=edm"])
    edm = config_from_args(args)
    assert edm.prior.trainer_kwargs()["time_sampling"] == "edm"
    assert edm.prior.trainer_kwargs()["weighting"] == "edm"  # loss_weighting is train_prior's weighting
    elbo = apply_overrides(get_profile("cpu"), {"prior.loss_weighting": "elbo"})
    kwargs = elbo.prior.trainer_kwargs()
    assert (kwargs["time_sampling"], kwargs["weighting"]) == ("log_snr", "elbo")
    with pytest.raises(ValueError, match=r"prior.time_sampling: 'normal' is not one of \['log_snr', 'uniform', 'edm'"):
        apply_overrides(get_profile("cpu"), {"prior.time_sampling": "normal"})
    with pytest.raises(ValueError, match="loss_weighting='elbo' .* needs prior.time_sampling='log_snr', got 'edm'"):
        apply_overrides(edm, {"prior.loss_weighting": "elbo"})
    with pytest.raises(ValueError, match="prior.loss_weighting must be 'edm' or 'elbo', got 'snr'"):
        PriorConfig(loss_weighting="snr")  # type: ignore[arg-type]

    cpu = get_profile("cpu")
    record = lambda c: {"seed": c.seed, "prior": asdict(c.prior.resolved())}  # noqa: E731
    older = record(cpu)
    del older["prior"]["time_sampling"], older["prior"]["loss_weighting"]  # written before the fields existed
    check_same_run(older, record(cpu), "runs/x")  # no error: log-SNR times and EDM weights were the only ones
    with pytest.raises(ValueError, match=r"\(prior.time_sampling 'log_snr' -> 'edm'\)"):
        check_same_run(older, record(edm), "runs/x")
    with pytest.raises(ValueError, match=r"\(prior.loss_weighting 'edm' -> 'elbo'\)"):
        check_same_run(older, record(elbo), "runs/x")


def test_stored_run_matches_as_its_json_reads_back_and_mixture_settings_are_checked() -> None:
    import json

    cpu = get_profile("cpu")
    record = lambda c: {"seed": c.seed, "prior": asdict(c.prior.resolved())}  # noqa: E731
    stored = json.loads(json.dumps(record(cpu)))  # config.json: the tuple of shrinkage weights is a list there
    assert isinstance(stored["prior"]["mixture_shrinkage"], list)
    check_same_run(stored, record(cpu), "runs/x")  # no error
    older = json.loads(json.dumps(record(cpu)))
    for key in ("mixture_components", "mixture_covariance", "mixture_shrinkage", "mixture_rank"):
        del older["prior"][key]  # written before the fields existed
    check_same_run(older, record(cpu), "runs/x")  # no error
    other = apply_overrides(cpu, {"prior.mixture_shrinkage": (0.5, 1.0)})
    with pytest.raises(ValueError, match=r"prior.mixture_shrinkage \[0.25, 0.5, 0.75, 1.0\] -> \[0.5, 1.0\]"):
        check_same_run(stored, record(other), "runs/x")
    with pytest.raises(ValueError, match="prior.mixture_components must be >= 1"):
        apply_overrides(cpu, {"prior.mixture_components": 0})
    with pytest.raises(ValueError, match="prior.mixture_rank must be >= 1 or none"):
        apply_overrides(cpu, {"prior.mixture_rank": 0})
    with pytest.raises(ValueError, match=r"prior.mixture_shrinkage must be weights in \(0, 1\]"):
        apply_overrides(cpu, {"prior.mixture_shrinkage": (0.0, 1.0)})


def test_rerun_may_extend_or_observe() -> None:
    cpu = get_profile("cpu")
    more = apply_overrides(cpu, {"flow.minutes": 30, "flow.log_every": 5, "flow.train_steps": 2000})
    check_same_run(_record(cpu), _record(more), "runs/x", unresolved={"flow": asdict(more.flow)})  # no error
    fewer = apply_overrides(cpu, {"flow.train_steps": 100})
    with pytest.raises(ValueError, match="flow.train_steps 450 -> 100"):
        check_same_run(_record(cpu), _record(fewer), "runs/x", unresolved={"flow": asdict(fewer.flow)})
    # a warm-up written out explicitly is a request of its own, even on a longer run
    pinned = apply_overrides(cpu, {"flow.train_steps": 2000, "flow.warmup_steps": 7})
    with pytest.raises(ValueError, match="flow.warmup_steps 45 -> 7"):
        check_same_run(_record(cpu), _record(pinned), "runs/x", unresolved={"flow": asdict(pinned.flow)})


def test_stop_step_only_limits_a_run_and_has_one_value_per_flow() -> None:
    cpu = get_profile("cpu")
    stopped = apply_overrides(cpu, {"prior.stop_step": "1234", "flow.stop_step": "812", "flow.minutes": "none"})
    assert stopped.prior.stop_step == 1234 and stopped.flow.stop_step == (812,)
    assert stopped.prior.trainer_kwargs()["stop_step"] == 1234 and stopped.flow.trainer_kwargs(64)["stop_step"] == 812
    record = lambda c: {"prior": asdict(c.prior.resolved()), "flow": asdict(c.flow.resolved())}  # noqa: E731
    check_same_run(record(cpu), record(stopped), "runs/x")  # where a run stops is a budget: a rerun may change it
    per_task = apply_overrides(cpu, {"flow.stop_step": "812,790,805"}).flow
    assert [per_task.stop_step_of(i, 3) for i in range(3)] == [812, 790, 805]
    assert apply_overrides(cpu, {"flow.stop_step": 7}).flow.stop_step_of(2, 3) == 7  # one value for every flow
    with pytest.raises(ValueError, match=r"flow.stop_step has 3 values \[812, 790, 805\], but this run trains 2 flows"):
        per_task.stop_step_of(0, 2)
    with pytest.raises(ValueError, match="flow.stop_step must be steps >= 1"):
        apply_overrides(cpu, {"flow.stop_step": "0"})
    with pytest.raises(ValueError, match="prior.stop_step must be >= 1"):
        apply_overrides(cpu, {"prior.stop_step": "0"})


def test_command_from_args_repeats_the_configuration(tmp_path: Path) -> None:
    from manifold_ps.config import command_from_args

    file = tmp_path / "c.toml"
    file.write_text("[flow]\nlayers = 4\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    flags = add_shortcuts(parser, {"--flow-minutes": "flow.minutes"})
    args = parser.parse_args(["--profile", "smoke", "--config", str(file), "--flow-minutes", "3",
                              "--set", "flow.t_min=0.01"])
    command = command_from_args(["run.py"], args, flags)
    assert command == ["run.py", "--profile", "smoke", "--config", str(file), "--set", "flow.minutes=3",
                       "--set", "flow.t_min=0.01"]
    assert config_from_args(parser.parse_args(command[1:]), flags) == config_from_args(args, flags)


def test_flatten_nests_one_level() -> None:
    assert flatten({"seed": 1, "flow": {"t_min": 0.1}}) == {"seed": 1, "flow.t_min": 0.1}


def test_help_epilog_lists_every_setting() -> None:
    from manifold_ps.config import describe_settings

    text = " ".join(describe_settings(get_profile("smoke")).split())
    for key, value in flatten(get_profile("smoke").to_dict()).items():
        if key != "profile":
            assert f"{key}={value!r}" in text, key
