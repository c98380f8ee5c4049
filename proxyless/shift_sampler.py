"""Complexity-aware warmup paths (ShiftNAS, ICCV 2023), adapted to ProxylessNAS warmup.

Why: a path's cost is a sum of per-layer costs, so uniformly drawn paths pile up at middle
cost and warmup trains the cheap and the expensive ends of the space least, though the search
later compares archs at its target, which may lie there. ShiftNAS samples cost bins instead
and shifts their probabilities towards the bins whose loss is still improving.

No code was released; the choices here are ours (`warmup.sampler=shift`):
- Bins: K quantile bins of the cost of uniformly drawn paths under the search's cost model
  (latency table, FLOPs or params: a search always has one, whatever its objective), from
  `QUANTILE_PATHS` paths of a generator seeded by the run's seed: each bin holds ~1/K of
  the uniform mass, and the edges are the same on every rank (and saved for a resume).
- Probabilities: per bin an EMA (factor β) of its steps' mean training loss, updated every
  `update_every` steps from that window's steps; Δ_k = (EMA_before − EMA_after) / EMA_after,
  the bin's relative loss improvement per update (scale-free, so T does not depend on the
  loss's size; in a steady decline it is the loss's relative drop per window). A bin's first
  window sets its EMA (Δ stays 0); a bin without steps in a window keeps its EMA and Δ.
  p_k = (1 − ε)·softmax(Δ/T)_k + ε/K.
- A path of bin k: rejection sampling. `MAX_TRIES` uniform paths (over each layer's members,
  so pruned candidates are never drawn) come from the step's generator at once and the first
  one inside the bin is taken; with none, the one closest to the bin (a miss). Each bin
  holds ~1/K of the uniform mass, so a miss has probability ≈ (1 − 1/K)^MAX_TRIES.
- No host sync per step: a step adds its loss to a device tensor (its bin is drawn on the
  host); `update()` reads the window once, averaged over ranks first, so every rank draws
  with the same p.

>>> s = ShiftSampler([[0.0, 1.0], [0.0, 2.0]], 0.0, [[0, 1], [0, 1]], bins=2)
>>> s.edges()  # path costs 0, 1 | 2, 3
[0.0, 2.0, 3.0]
>>> shift_probs([0.0, 0.0], temperature=0.01, epsilon=0.1)
[0.5, 0.5]
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch

from .distributed import DistContext, reduce_mean

QUANTILE_PATHS = 4096  # uniform paths the bin edges are estimated from
MAX_TRIES = 256  # uniform paths drawn per step to find one of the requested bin


class ShiftError(ValueError):
    """The cost model cannot be split into the requested bins; the message says what to do."""


def shift_probs(delta: Sequence[float], temperature: float, epsilon: float) -> list[float]:
    """p = (1 − ε)·softmax(Δ / T) + ε / K."""
    z = torch.tensor(delta, dtype=torch.float64) / temperature
    p = (1.0 - epsilon) * torch.softmax(z, 0) + epsilon / len(delta)
    return p.tolist()


def _generator(seed: int, what: str) -> torch.Generator:
    digest = hashlib.blake2b(f"{seed}:{what}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


class ShiftSampler:
    """Cost bins, their probabilities and the per-bin loss window of one warmup."""

    def __init__(
        self,
        per_layer: Sequence[Sequence[float]],
        fixed: float,
        members: Sequence[Sequence[int]],
        bins: int = 4,
        ema: float = 0.9,
        temperature: float = 0.01,
        epsilon: float = 0.1,
        seed: int = 0,
        device: torch.device | str = "cpu",
        unit: str = "",
    ) -> None:
        if len(per_layer) != len(members):
            raise ValueError(f"{len(per_layer)} layers of costs, {len(members)} of members")
        self.costs = [torch.tensor(c, dtype=torch.float64) for c in per_layer]
        self.members = [torch.tensor(list(m), dtype=torch.long) for m in members]
        self.fixed, self.k, self.unit = float(fixed), bins, unit
        self.beta, self.temperature, self.epsilon = ema, temperature, epsilon
        sample = self.path_costs(self.uniform_paths(QUANTILE_PATHS, _generator(seed, "bins")))
        q = torch.arange(1, bins, dtype=torch.float64) / bins
        self.inner_edges: list[float] = torch.quantile(sample, q).tolist()
        self.mass = self._mass(sample)
        if min(self.mass) == 0.0:
            raise ShiftError(
                f"warmup.bins={bins}: the path costs ({unit or 'cost'}) of this space do not "
                f"split into {bins} bins of equal mass (bin masses {self._fmt(self.mass)}); "
                "lower warmup.bins or use warmup.sampler=uniform"
            )
        self.p = [1.0 / bins] * bins
        self.ema: list[float | None] = [None] * bins
        self.delta = [0.0] * bins
        self.window_loss = torch.zeros(bins, dtype=torch.float64, device=device)
        self.window_n = [0] * bins
        self.steps = [0] * bins
        self.hits = self.misses = self.updates = 0

    # --- paths and their costs ----------------------------------------------------------------
    def uniform_paths(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` uniform paths (n × layers), each layer over its members."""
        cols = [m[torch.randint(len(m), (n,), generator=generator)] for m in self.members]
        return torch.stack(cols, 1)

    def path_costs(self, paths: torch.Tensor) -> torch.Tensor:
        total = torch.full((paths.shape[0],), self.fixed, dtype=torch.float64)
        for layer, c in enumerate(self.costs):
            total += c[paths[:, layer]]
        return total

    def bin_of(self, costs: torch.Tensor) -> torch.Tensor:
        """Bin k holds costs in [edge_k, edge_k+1) (the outer edges: ±∞). Compared, not
        `torch.bucketize`, which wakes every intra-op thread even for a few hundred values."""
        inner = torch.tensor(self.inner_edges, dtype=torch.float64)
        return (costs.unsqueeze(1) >= inner).sum(1)

    def bounds(self, k: int) -> tuple[float, float]:
        lo = self.inner_edges[k - 1] if k > 0 else -math.inf
        return lo, self.inner_edges[k] if k < self.k - 1 else math.inf

    def _mass(self, costs: torch.Tensor) -> list[float]:
        counts = torch.bincount(self.bin_of(costs), minlength=self.k)
        return (counts.double() / len(costs)).tolist()

    def edges(self) -> list[float]:
        """All K + 1 edges: the cheapest and the most expensive path around the inner ones."""
        per_layer = [c[m] for c, m in zip(self.costs, self.members, strict=True)]
        lo = self.fixed + sum(float(c.min()) for c in per_layer)
        hi = self.fixed + sum(float(c.max()) for c in per_layer)
        return [lo, *self.inner_edges, hi]

    def draw(self, generator: torch.Generator) -> tuple[int, list[int]]:
        """(bin, path): a bin from p, then a path of it, all from `generator`."""
        p = torch.tensor(self.p, dtype=torch.float64)
        k = int(torch.multinomial(p, 1, generator=generator))
        paths = self.uniform_paths(MAX_TRIES, generator)
        costs = self.path_costs(paths)
        lo, hi = self.bounds(k)
        inside = ((costs >= lo) & (costs < hi)).nonzero().flatten()
        if len(inside):
            i = int(inside[0])
            self.hits += 1
        else:  # the closest: distance to the bin's interval
            i = int(((lo - costs).clamp_min(0) + (costs - hi).clamp_min(0)).argmin())
            self.misses += 1
        self.steps[k] += 1
        return k, paths[i].tolist()

    # --- probabilities ------------------------------------------------------------------------
    def record(self, k: int, loss: torch.Tensor) -> None:
        """A step of bin `k` had training loss `loss` (a device tensor: nothing is read)."""
        self.window_loss[k] += loss.detach().to(self.window_loss.dtype)
        self.window_n[k] += 1

    def update(self, ctx: DistContext | None = None) -> list[float]:
        """The window's mean losses into the EMAs, Δ and p (one host sync); returns p."""
        sums = reduce_mean(self.window_loss, ctx or DistContext()).tolist()
        for k, n in enumerate(self.window_n):
            if n == 0:
                continue
            mean, before = sums[k] / n, self.ema[k]
            if before is None:
                self.ema[k] = mean
                continue
            after = self.beta * before + (1.0 - self.beta) * mean
            self.delta[k] = (before - after) / max(after, 1e-12)
            self.ema[k] = after
        self.p = shift_probs(self.delta, self.temperature, self.epsilon)
        self.window_loss.zero_()
        self.window_n = [0] * self.k
        self.updates += 1
        return self.p

    def sync_window(self, ctx: DistContext) -> None:
        """Before a checkpoint (rank 0 saves its own copy): the window averaged over ranks,
        so a resumed run's next update sees the same mean."""
        if ctx.is_distributed:
            self.window_loss.copy_(reduce_mean(self.window_loss, ctx))

    @property
    def hit_rate(self) -> float | None:
        draws = self.hits + self.misses
        return self.hits / draws if draws else None

    # --- checkpoint and report ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "inner_edges": list(self.inner_edges),
            "mass": list(self.mass),
            "p": list(self.p),
            "ema": list(self.ema),
            "delta": list(self.delta),
            "window_loss": self.window_loss.detach().cpu().clone(),
            "window_n": list(self.window_n),
            "steps": list(self.steps),
            "hits": self.hits,
            "misses": self.misses,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The run's own bins (as saved), probabilities, EMAs, window and counts."""
        if len(state["p"]) != self.k:
            raise ShiftError(f"saved shift state has {len(state['p'])} bins, not {self.k}")
        self.inner_edges, self.mass = list(state["inner_edges"]), list(state["mass"])
        self.p, self.ema, self.delta = list(state["p"]), list(state["ema"]), list(state["delta"])
        self.window_loss.copy_(state["window_loss"])
        self.window_n, self.steps = list(state["window_n"]), list(state["steps"])
        self.hits, self.misses, self.updates = state["hits"], state["misses"], state["updates"]

    def summary(self) -> dict[str, Any]:
        return {
            "bins": self.k,
            "edges": self.edges(),
            "unit": self.unit,
            "mass": self.mass,  # each bin's share of the uniform paths the edges came from
            "p": self.p,
            "delta": self.delta,
            "ema_loss": self.ema,
            "steps_per_bin": self.steps,
            "hit_rate": self.hit_rate,
            "misses": self.misses,
            "updates": self.updates,
        }

    def describe(self) -> str:
        hr = self.hit_rate
        return (
            f"shift sampler: {self.k} bins, edges {self._fmt(self.edges())} {self.unit}, "
            f"p {self._fmt(self.p)}, steps per bin {self.steps}, bin-hit rate "
            + ("n/a" if hr is None else f"{hr:.1%} ({self.misses} misses)")
        )

    @staticmethod
    def _fmt(values: Sequence[float]) -> str:
        return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"
