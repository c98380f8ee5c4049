"""A searchable layer: N candidate ops, their architecture logits α, and the sampled path.

The layer itself only knows how to run one path (weight steps, or a derived network).
How α gets a gradient is the estimator's business (`proxyless.estimators`), passed per call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .nested import NestedMBConvWeights, materialized_state
from .ops import Zero
from .plan import build_op, candidate_part
from .space import LayerSpec

WEIGHT_SHARING = ("separate", "kernels", "nested")


class MixedLayer(nn.Module):
    """Candidates + α for one layer; `forward` runs only the active candidate (+ residual).

    `weight_sharing`: separate (the paper: each candidate its own weights), kernels (the
    candidates of one expansion slice the largest kernel of that expansion) or nested (every
    candidate slices the layer's largest op); `proxyless.nested`."""

    def __init__(
        self, spec: LayerSpec, alpha_init_std: float = 1e-3, weight_sharing: str = "separate"
    ) -> None:
        super().__init__()
        if weight_sharing not in WEIGHT_SHARING:
            raise ValueError(
                f"weight_sharing must be one of {WEIGHT_SHARING}, got {weight_sharing!r}"
            )
        self.spec = spec
        self.residual = spec.residual
        parts = [candidate_part(spec, op) for op in spec.candidates]
        keys = [p.key for p in parts if p is not None]
        group = {"separate": None, "kernels": lambda k: f"e{k.expand}", "nested": lambda k: "all"}
        group_of = group[weight_sharing]
        # the weights each group of candidates slices (empty: separate weights)
        self.shared = nn.ModuleDict()
        if group_of is not None:
            for g in dict.fromkeys(group_of(k) for k in keys):
                members = [k for k in keys if group_of(k) == g]
                self.shared[g] = NestedMBConvWeights(
                    spec.in_channels,
                    spec.out_channels,
                    [k.kernel for k in members],
                    [k.expand for k in members],
                )
        self.candidates = nn.ModuleList(
            Zero()
            if p is None
            else build_op(p.key)
            if group_of is None
            else self.shared[group_of(p.key)].candidate(p.key.kernel, p.key.expand, p.key.stride)
            for p in parts
        )
        self.alpha = nn.Parameter(torch.randn(len(spec.candidates)) * alpha_init_std)
        self.active = 0

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    def is_zero(self, index: int) -> bool:
        return isinstance(self.candidates[index], Zero)

    # --- pruning (prune.keep): a buffer `allowed`, present only once the layer is pruned ------
    def restrict(self, keep: Sequence[int]) -> None:
        """Only the candidates `keep` can be sampled, derived or get α gradients from now on."""
        mask = torch.zeros(self.num_candidates, dtype=torch.bool, device=self.alpha.device)
        mask[list(keep)] = True
        if "allowed" in self._buffers:
            self._buffers["allowed"].copy_(mask)  # type: ignore[union-attr]
        else:
            self.register_buffer("allowed", mask)
        if not mask[self.active]:
            self.active = self.members()[0]

    def members(self) -> list[int]:
        """The candidates still in the search (all, unless the layer was pruned)."""
        mask = self._buffers.get("allowed")
        if mask is None:
            return list(range(self.num_candidates))
        return [int(i) for i in mask.nonzero().flatten()]

    def logits(self) -> torch.Tensor:
        """α, with pruned candidates at −inf."""
        mask = self._buffers.get("allowed")
        return self.alpha if mask is None else self.alpha.masked_fill(~mask, float("-inf"))

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits(), dim=0)

    def sample(
        self,
        generator: torch.Generator | None = None,
        uniform: bool = False,
        probs: torch.Tensor | None = None,
    ) -> int:
        """Draw the active path from softmax(α), or uniformly (warmup), among the members,
        on the host.

        `probs`: softmax(α) already on the CPU (`SuperNet.sample_paths` copies all layers'
        at once: one host sync per step on a GPU, not one per layer; none in warmup)."""
        with torch.no_grad():
            mask = self._buffers.get("allowed")
            if uniform:
                p = torch.ones(self.num_candidates, dtype=self.alpha.dtype)
                if mask is not None:
                    p = p * mask.cpu()
            else:  # probs() gives pruned candidates probability 0
                p = self.probs().cpu() if probs is None else probs
            self.active = int(torch.multinomial(p, 1, generator=generator))
        return self.active

    def largest(self) -> int:
        """Index of the candidate with the most weights (kernel² × expansion), never Zero."""
        sizes = self._sizes()
        return max(sizes, key=sizes.__getitem__)

    def smallest(self) -> int:
        """Index of the candidate with the fewest weights (kernel² × expansion), never Zero."""
        sizes = self._sizes()
        return min(sizes, key=sizes.__getitem__)

    def _sizes(self) -> dict[int, int]:
        """kernel² × expansion of each searched candidate that is not Zero (a layer pruned
        to Zero alone: that Zero)."""
        members = self.members()
        sizes = {
            i: self.spec.candidates[i].kernel ** 2 * self.spec.candidates[i].expand
            for i in members
            if not self.is_zero(i)
        }
        return sizes or {i: 0 for i in members}

    def op_parameters(self) -> list[nn.Parameter]:
        """The weights of this layer's candidates (with shared ones), α excluded."""
        return [*self.candidates.parameters(), *self.shared.parameters()]

    def candidate_state(self, index: int) -> dict[str, torch.Tensor]:
        """Candidate `index`'s weights as a plain op of its shape holds them (nested: the
        slices copied out)."""
        return materialized_state(self.candidates[index])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_zero(self.active):
            return x
        y = self.candidates[self.active](x)
        return x + y if self.residual else y

    def extra_repr(self) -> str:
        ops = ", ".join(str(c) for c in self.spec.candidates)
        return f"layer={self.spec.index}, residual={self.residual}, candidates=[{ops}]"
