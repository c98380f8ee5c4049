"""The hardware-aware architecture loss: task loss combined with the expected cost E[LAT].

An objective is a callable ``objective(task_loss, cost_or_None) -> Tensor``, the shape
`Estimator.loss` expects. `cost` is differentiable in α for the gradient estimators
(E[LAT] over the full softmax) and the sampled arch's cost for REINFORCE.

Kinds (T = target, in the cost's unit):

- ``mul_log``     ``alpha · CE · (log E / log T)^beta`` (ProxylessNAS; alpha=0.2, beta=0.3
  as in the official CLI). Needs T > 1: for T ≤ 1 the log ratio flips sign and rewards
  slow archs, so pick a unit (ms, MFLOPs) in which T > 1.
- ``add_linear``  ``CE + lam · (E − T) / T`` (lam=0.1).
- ``add_abs``     ``CE + lam · |E − T| / T`` (TuNAS' absolute reward, Bender et al. 2020):
  the kink makes T itself the attractor, so E ends at T whenever lam outweighs the task
  loss' pull; the quickstart uses it with lam=1.
- ``none``        ``CE``: accuracy only (the cost is ignored).
- ``latency_only`` the task loss switched off: ``((E − T) / T)^2`` with a target (E is driven
  onto T), ``E`` without one (E is driven to the space's minimum). For checks and ablations.

``mul_log`` and ``add_linear`` are soft: they trade CE against cost and have no minimum at
exactly T, so E ends near T only when the two happen to balance there (on a tiny CPU space
mul_log barely binds and add_linear with lam=1 runs to the cheapest arch).

>>> f = build_objective("add_linear", target=10.0, lam=0.1)
>>> float(f(torch.tensor(2.0), torch.tensor(12.0)))
2.02
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Objective = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
OBJECTIVES = ("mul_log", "add_linear", "add_abs", "none", "latency_only")
log = logging.getLogger(__name__)


@dataclass
class ObjectiveConfig:
    """`kind` and its weights: mul_log (alpha, beta), add_linear / add_abs (lam)."""

    kind: str = "mul_log"
    alpha: float = 0.2
    beta: float = 0.3
    lam: float = 0.1


class ObjectiveError(ValueError):
    """An objective that cannot be built as configured (the message says how to fix it)."""


def _need_cost(kind: str, cost: torch.Tensor | None) -> torch.Tensor:
    if cost is None:
        raise ObjectiveError(
            f"objective {kind!r} needs a hardware cost, but the supernet has none: "
            "set costs (hardware=lut|profile|flops|params) or use objective=none"
        )
    return cost


def _num(x: float | None) -> str:
    """A cost or target as a person reads it: 1562.368117184816 -> 1562.37."""
    return "none" if x is None else f"{x:.6g}"


def check_target(
    kind: str,
    target: float | None,
    cost_range: tuple[float, float] | None = None,
    unit: str = "",
) -> None:
    """The one check of a target: what `kind` needs of it and, given the space's cost range,
    that it can be met (refused below the cheapest arch, a warning at or above the dearest)."""
    if kind in ("mul_log", "add_linear", "add_abs") and (target is None or target <= 0):
        raise ObjectiveError(
            f"objective {kind!r} needs a positive hardware.target, got {_num(target)}"
        )
    if target is None:
        return
    if target <= 0:
        raise ObjectiveError(f"hardware.target must be positive, got {_num(target)}")
    if kind == "mul_log" and target <= 1.0:
        raise ObjectiveError(
            "objective 'mul_log' needs hardware.target > 1 in the cost's unit "
            f"(got {_num(target)}): "
            "log(E)/log(T) changes sign at 1; express the cost in a smaller unit or use "
            "objective=add_linear"
        )
    if cost_range is None:
        return
    lowest, highest = cost_range
    if target < lowest:
        raise ObjectiveError(
            f"hardware.target={target:g} {unit} is below the minimum cost of this space, "
            f"{lowest:.4g} {unit} (every layer at its cheapest op); raise the target to at "
            "least that"
        )
    if target >= highest:
        log.warning(
            "target %.4g ≥ the most expensive arch (%.4g %s): it does not bind",
            target,
            highest,
            unit,
        )


def build_objective(
    kind: str,
    target: float | None = None,
    alpha: float = 0.2,
    beta: float = 0.3,
    lam: float = 0.1,
    cost_range: tuple[float, float] | None = None,
    unit: str = "",
) -> Objective:
    """The loss combining task loss and cost; see the module docstring for the formulas.
    The target is checked here (`check_target`), against `cost_range` when given."""
    if kind not in OBJECTIVES:
        raise ObjectiveError(f"unknown objective {kind!r}; choose one of {', '.join(OBJECTIVES)}")
    check_target(kind, target, cost_range, unit)

    if kind == "none":
        return lambda task_loss, cost: task_loss
    if kind == "mul_log":
        log_t = math.log(target)  # type: ignore[arg-type]

        def mul_log(task_loss: torch.Tensor, cost: torch.Tensor | None) -> torch.Tensor:
            cost = _need_cost(kind, cost)
            return alpha * task_loss * (torch.log(cost) / log_t) ** beta

        return mul_log
    if kind == "add_linear":
        t = float(target)  # type: ignore[arg-type]

        def add_linear(task_loss: torch.Tensor, cost: torch.Tensor | None) -> torch.Tensor:
            return task_loss + lam * (_need_cost(kind, cost) - t) / t

        return add_linear
    if kind == "add_abs":
        t = float(target)  # type: ignore[arg-type]

        def add_abs(task_loss: torch.Tensor, cost: torch.Tensor | None) -> torch.Tensor:
            return task_loss + lam * (_need_cost(kind, cost) - t).abs() / t

        return add_abs

    def latency_only(task_loss: torch.Tensor, cost: torch.Tensor | None) -> torch.Tensor:
        cost = _need_cost(kind, cost)
        # The task loss is left out of the graph: backward never re-runs the candidates.
        if target is None:
            return cost
        return ((cost - target) / target) ** 2

    return latency_only
