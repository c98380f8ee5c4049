"""The supernet: fixed stem/first block/head around the searchable mixed layers.

`forward(x)` runs the sampled path (weight steps); `forward(x, estimator)` runs an arch step
with that estimator. Weights and α live in separate parameter groups.

>>> from proxyless.space import get_space
>>> net = SuperNet(get_space("tiny"))
>>> net.sample_paths(uniform=True) and None
>>> net(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from latency.costs import expected_cost

from .arch import Arch, StandaloneNet
from .derive import most_probable_archs_within
from .estimators import Estimator
from .mixed_op import MixedLayer
from .plan import build_fixed
from .space import SearchSpace


class SuperNet(nn.Module):
    def __init__(
        self, space: SearchSpace, alpha_init_std: float = 1e-3, weight_sharing: str = "separate"
    ) -> None:
        super().__init__()
        self.space = space
        self.stem, self.first, self.head = build_fixed(space)
        self.layers = nn.ModuleList(
            MixedLayer(s, alpha_init_std, weight_sharing) for s in space.layers()
        )
        self._costs: list[torch.Tensor] | None = None
        self._fixed_cost = 0.0

    def forward(self, x: torch.Tensor, estimator: Estimator | None = None) -> torch.Tensor:
        x = self.first(self.stem(x))
        for layer in self.layers:
            x = layer(x) if estimator is None else estimator.forward(layer, x)
        return self.head(x)

    @staticmethod
    def weight_sharing_of(state_dict: dict[str, torch.Tensor]) -> str:
        """How the supernet that saved `state_dict` held its weights (shared weights are
        saved as `layers.<i>.shared.<group>.*`: group `all` when nested, `e<expansion>` when
        only kernels are), so a checkpoint rebuilds without its config."""
        groups = {
            k.split(".")[3] for k in state_dict if k.startswith("layers.") and ".shared." in k
        }
        if not groups:
            return "separate"
        return "nested" if "all" in groups else "kernels"

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[no-untyped-def, override]
        """Also a pruned supernet's state (prune.keep, a GM sub-supernet): its layers'
        `allowed` masks are registered before loading, so the saved masks load into them;
        a strict load of a state without a layer's mask lifts that layer's restriction."""
        for i, layer in enumerate(self.layers):
            saved = f"layers.{i}.allowed" in state_dict
            if saved and "allowed" not in layer._buffers:
                layer.restrict(range(layer.num_candidates))
            elif strict and not saved and "allowed" in layer._buffers:
                del layer._buffers["allowed"]
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # --- parameter groups -------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [layer.alpha for layer in self.layers]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    @contextmanager
    def frozen_weights(self) -> Iterator[None]:
        """Arch steps: no weight gradients are computed at all (not computed-then-dropped)."""
        params = [p for p in self.weight_parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)

    # --- paths ----------------------------------------------------------------------------
    def sample_paths(
        self, generator: torch.Generator | None = None, uniform: bool = False
    ) -> list[int]:
        probs: list[torch.Tensor | None] = [None] * len(self.layers)
        if not uniform:
            with torch.no_grad():
                flat = torch.cat([layer.probs() for layer in self.layers]).cpu()
            probs = list(flat.split([layer.num_candidates for layer in self.layers]))
        return [
            layer.sample(generator, uniform, p) for layer, p in zip(self.layers, probs, strict=True)
        ]

    def set_paths(self, indices: Sequence[int]) -> None:
        if len(indices) != len(self.layers):
            raise ValueError(f"need {len(self.layers)} path indices, got {len(indices)}")
        for layer, i in zip(self.layers, indices, strict=True):
            if not 0 <= i < layer.num_candidates:
                raise ValueError(f"layer {layer.spec.index}: index {i} out of range")
            layer.active = int(i)

    def largest_path(self) -> list[int]:
        """Per layer the candidate with the most weights (kernel² × expansion; never Zero):
        the path the sandwich sampler trains on every other step (default anchors)."""
        return [layer.largest() for layer in self.layers]

    def smallest_path(self) -> list[int]:
        """Per layer the candidate with the fewest weights (never Zero): full depth, the
        cheapest ops; a second sandwich anchor (`schedule.anchors`)."""
        return [layer.smallest() for layer in self.layers]

    def near_largest_path(self, generator: torch.Generator | None = None) -> list[int]:
        """The largest path with one layer, drawn uniformly, on a uniformly drawn candidate
        of that layer (Zero included; a pruned candidate never).

        Why: α compares a layer's candidates in the context of the paths it favours (next
        to the largest one once it is sure of the other layers), but with the largest anchor
        a small op is trained only on random paths, and so rates below Zero there. This
        anchor trains every candidate next to the largest path, OFA's sub-nets around the
        full net."""
        path = self.largest_path()
        i = int(torch.randint(len(self.layers), (1,), generator=generator))
        path[i] = self.layers[i].sample(generator, uniform=True)
        return path

    def anchor_path(self, name: str, generator: torch.Generator | None = None) -> list[int]:
        """The path a sandwich anchor step trains: `largest`, `smallest` or `near_largest`
        (drawn with `generator`)."""
        if name == "near_largest":
            return self.near_largest_path(generator)
        return self.largest_path() if name == "largest" else self.smallest_path()

    def active_paths(self) -> list[int]:
        return [layer.active for layer in self.layers]

    def probabilities(self) -> list[torch.Tensor]:
        return [layer.probs() for layer in self.layers]

    # --- costs -----------------------------------------------------------------------------
    def set_costs(self, per_layer: Sequence[Sequence[float]], fixed: float = 0.0) -> None:
        """Per-layer candidate costs (e.g. LUT latency in ms; Zero = 0) and the fixed part."""
        if len(per_layer) != len(self.layers):
            raise ValueError(f"need costs for {len(self.layers)} layers, got {len(per_layer)}")
        tensors = []
        for layer, costs in zip(self.layers, per_layer, strict=True):
            if len(costs) != layer.num_candidates:
                raise ValueError(
                    f"layer {layer.spec.index}: {layer.num_candidates} candidates, "
                    f"{len(costs)} costs"
                )
            tensors.append(torch.as_tensor(costs, dtype=torch.float32))
        self._costs, self._fixed_cost = tensors, float(fixed)

    @property
    def has_costs(self) -> bool:
        return self._costs is not None

    def _cost_tensors(self) -> list[torch.Tensor]:
        if self._costs is None:
            raise RuntimeError("no costs set: call set_costs() with a latency/FLOPs table first")
        device = self.layers[0].alpha.device
        return [c.to(device) for c in self._costs]

    def expected_cost(self) -> torch.Tensor:
        """fixed + Σ_layers Σ_j p_j · cost_j, differentiable in α (uses the full softmax)."""
        return expected_cost(self.probabilities(), self._cost_tensors(), self._fixed_cost)

    def sampled_cost(self) -> torch.Tensor:
        costs = self._cost_tensors()
        total = sum(c[layer.active] for layer, c in zip(self.layers, costs, strict=True))
        return total + self._fixed_cost  # type: ignore[return-value]

    def derived_cost(self, target: float | None = None, tolerance: float | None = None) -> float:
        """The cost of the arch `derive(target, tolerance)` returns."""
        return self.cost_of(self.derive(target, tolerance))

    def cost_of(self, arch: Arch) -> float:
        costs = self._cost_tensors()
        idx = self.arch_indices(arch)
        return self._fixed_cost + sum(float(c[i]) for c, i in zip(costs, idx, strict=True))

    # --- derive ----------------------------------------------------------------------------
    def derive(self, target: float | None = None, tolerance: float | None = None) -> Arch:
        """The final arch: argmax per layer (the paper) or, given a cost `target` and a
        `tolerance` (fraction), the most probable arch within ±tolerance of the target
        (`proxyless.derive`). Zero layers disappear when the standalone model is built."""
        return self.most_probable(target, tolerance, 1)[0]

    def most_probable(
        self, target: float | None, tolerance: float | None, count: int
    ) -> list[Arch]:
        """The `count` most probable archs within ±tolerance of `target`, most probable
        first (fewer if fewer fit); without a target or tolerance, argmax per layer alone."""
        with torch.no_grad():
            probs = [p.tolist() for p in self.probabilities()]
        if target is None or tolerance is None:
            paths = [[max(range(len(p)), key=p.__getitem__) for p in probs]]
        else:
            costs = [c.tolist() for c in self._cost_tensors()]
            log_probs = [
                [math.log(max(q, 1e-30)) if j in members else -math.inf for j, q in enumerate(p)]
                for p, members in zip(probs, (set(ly.members()) for ly in self.layers), strict=True)
            ]
            low, high = (1 - tolerance) * target, (1 + tolerance) * target
            paths = most_probable_archs_within(log_probs, costs, self._fixed_cost, low, high, count)
        return [self.path_arch(idx, probs) for idx in paths]

    def arch_indices(self, arch: Arch) -> list[int]:
        """Path indices that select `arch`'s ops in this supernet."""
        arch.check_space(self.space)
        return arch.indices()

    def path_arch(self, indices: Sequence[int], probs: list[list[float]] | None = None) -> Arch:
        """The arch that path `indices` selects (the inverse of `arch_indices`)."""
        ops = [ly.spec.candidates[i] for ly, i in zip(self.layers, indices, strict=True)]
        return Arch(self.space, ops, probs)

    def extract(self, arch: Arch) -> StandaloneNet:
        """`arch` as a standalone model holding this supernet's weights for its chosen ops."""
        idx = self.arch_indices(arch)
        net = arch.build()
        for name in ("stem", "first", "head"):
            getattr(net, name).load_state_dict(getattr(self, name).state_dict())
        for block, li in zip(net.blocks, net.layer_index, strict=True):
            block.op.load_state_dict(self.layers[li].candidate_state(idx[li]))
        return net
