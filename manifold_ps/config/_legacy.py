"""The names of settings before the one configuration (the flat benchmark ``Profile``), to read
results and trained flows saved under them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["LEGACY_NAMES", "from_legacy_profile", "legacy_flow_settings"]

LEGACY_NAMES: dict[str, str] = {
    "name": "profile",
    "prior_network": "prior.network", "prior_preset": "prior.preset",
    "prior_parameterization": "prior.parameterization", "prior_steps": "prior.train_steps",
    "prior_batch": "prior.batch_size", "prior_lr": "prior.lr", "prior_train_size": "prior.train_size",
    "prior_minutes": "prior.minutes",
    "flow_steps": "flow.layers", "flow_hidden": "flow.hidden", "flow_blocks": "flow.blocks",
    "flow_patch": "flow.patch", "flow_context": "flow.context_channels",
    "flow_encoder_hidden": "flow.encoder_hidden", "flow_train_steps": "flow.train_steps",
    "flow_batch": "flow.batch_size", "flow_n_z": "flow.n_z", "flow_lr": "flow.lr", "flow_t_min": "flow.t_min",
    "flow_n_time": "flow.n_time", "flow_init_scale": "flow.init_scale", "flow_train_size": "flow.train_size",
    "flow_minutes": "flow.minutes",
    "n_eval": "eval.n_eval", "n_posterior": "eval.n_posterior", "dps_steps": "eval.dps_nfe",
    "dps_zeta": "eval.dps_zeta", "reddiff_steps": "eval.reddiff_steps", "eval_batch": "eval.batch_size",
    "baseline_eval": "eval.baseline_eval",
}
"""Old ``Profile`` field -> new ``section.field`` (``name`` -> the top-level ``profile``)."""


def from_legacy_profile(profile: Mapping[str, Any]) -> dict[str, Any]:
    """An old flat profile dict (e.g. ``results.json``'s ``config.profile``) as nested new names."""
    out: dict[str, Any] = {}
    for old, value in profile.items():
        section, _, name = LEGACY_NAMES[old].rpartition(".")
        (out.setdefault(section, {}) if section else out)[name] = value
    return out


def legacy_flow_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``flow_settings`` metadata of a flow saved before ``config.json`` existed, as ``{"flow": {...}}``."""
    return {"flow": from_legacy_profile(settings).get("flow", {})}
