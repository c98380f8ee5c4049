"""What a search checkpoint holds, and how a run is put back exactly where it stopped.

A checkpoint describes itself (kind, version, config, step, epoch) and holds every piece of
state that the next step depends on: weights and α, both optimizers, the LR schedule, the
estimator's state (e.g. the REINFORCE baseline), the global RNGs (data augmentation) and
the positions of the train and held-out loaders, and the shift sampler's bins, probabilities
and loss window (`warmup.sampler=shift`). Path sampling needs no other saved state: its
generator is re-seeded from (seed, global step) every step. Only tensors and plain Python
values are stored, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .run import SEARCH_KIND, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .search_config import result_fingerprint


class SearchError(RuntimeError):
    """The search cannot go on (NaN loss, nothing to resume...); the message says why."""


CKPT_VERSION = 1


@dataclass
class Progress:
    """Where the run is: steps done in total and in the current epoch, and that epoch."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0


def estimator_state(estimator: Any) -> dict[str, Any]:
    """Plain scalar attributes of an estimator (e.g. the REINFORCE moving baseline)."""
    return {
        k: v for k, v in vars(estimator).items() if v is None or isinstance(v, int | float | bool)
    }


def make_checkpoint(
    *,
    config: dict[str, Any],
    progress: Progress,
    net: torch.nn.Module,
    weight_opt: torch.optim.Optimizer,
    arch_opt: torch.optim.Optimizer,
    estimator: Any,
    heldout: Any,
    history: dict[str, Any],
    costs: dict[str, Any],
    total_steps: int,
    shift: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train order is a function of (data seed, epoch): the position is `step_in_epoch`. The
    learning rate is a function of the step (`run.lr_at`): the schedule needs no state."""
    return {
        "kind": SEARCH_KIND,
        "version": CKPT_VERSION,
        "config": config,
        "global_step": progress.global_step,
        "epoch": progress.epoch,
        "step_in_epoch": progress.step_in_epoch,
        "net": net.state_dict(),
        "weight_optimizer": weight_opt.state_dict(),
        "arch_optimizer": arch_opt.state_dict(),
        "scheduler": {"name": "cosine", "step": progress.global_step, "total": total_steps},
        "estimator": estimator_state(estimator),
        "rng": rng_state(),
        "heldout": heldout.state_dict() if heldout is not None else None,
        "history": history,
        "costs": costs,
        "shift": shift,  # `ShiftSampler.state_dict()`; None: warmup.sampler=uniform
    }


def save(path: Path, state: dict[str, Any]) -> None:
    save_checkpoint(path, state)


def load(path: Path) -> dict[str, Any]:
    return load_checkpoint(path, kind=SEARCH_KIND)


def restore(
    state: dict[str, Any],
    *,
    net: torch.nn.Module,
    weight_opt: torch.optim.Optimizer,
    arch_opt: torch.optim.Optimizer,
    estimator: Any,
    heldout: Any,
) -> Progress:
    """Load everything back; returns the progress. RNGs are restored last, after any
    construction that consumed random numbers."""
    net.load_state_dict(state["net"])
    weight_opt.load_state_dict(state["weight_optimizer"])
    arch_opt.load_state_dict(state["arch_optimizer"])
    for k, v in state["estimator"].items():
        setattr(estimator, k, v)
    if heldout is not None and state["heldout"] is not None:
        heldout.load_state_dict(state["heldout"])
    set_rng_state(state["rng"])
    return Progress(state["global_step"], state["epoch"], state["step_in_epoch"])


def config_diffs(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The result-relevant settings in which two run configs differ ("key (old → new)")."""
    return _diff(result_fingerprint(saved), result_fingerprint(current))


def check_same_run(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    diffs = config_diffs(saved, current)
    if diffs:
        raise SearchError(
            f"resume: the config differs from the one {path} was written with, in "
            f"{', '.join(diffs[:8])}; resume with the run's own config (see config.yaml "
            "in the run directory) or start a new run directory"
        )


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    seqs = isinstance(a, list | tuple) and isinstance(b, list | tuple)
    if a != b and not (seqs and list(a) == list(b)):
        return [f"{prefix[:-1]} ({a!r} → {b!r})"]
    return []
