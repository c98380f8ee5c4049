"""Few-shot search by gradient matching (`gm.splits`): the split tree around the search loop.

After each split epoch the supernet that is training scores its not yet split layers
(`proxyless.gm`), splits the best-scored one into `gm.ways` children — complete search
states (weights, SGD momentum, Adam state, α, estimator, loader positions, RNGs) with that
layer restricted to one group of candidates — and the children train one after another,
depth first. Only the training one is on the device: the others wait as checkpoint files
(`checkpoints/gm_<id>.pt`). Each child takes 1/n of every later epoch's steps (n = the
supernets at its depth) and its k-th step the plain schedule's learning rate at step
origin + k·n, so all leaves together take the plain search's weight steps on its schedule.
Finished leaves derive their arch and are evaluated on the held-out split (inherited
weights, BatchNorm re-estimated); the best within ±5 % of the cost target wins.

`checkpoints/last.pt` always holds the supernet in training plus the tree so far (`gm`);
it is rewritten only after the files it points to, so a run killed anywhere resumes
bit-exactly. All ranks compute the same scores (averaged over ranks) and the same choices.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import search_state as ckpt
from .distributed import barrier, broadcast_object, reduce_mean, step_generator
from .gm import best_partition, dissimilarity
from .run import forked_rng, save_checkpoint, write_json
from .search_state import SearchError

if TYPE_CHECKING:
    from .search import _Search

log = logging.getLogger("proxyless.search")
CHOICE_TOLERANCE = 0.05  # leaves compete at equal cost: derived cost within ±5 % of the target


@dataclass
class Node:
    """One supernet of the split tree and how its steps map onto the plain schedule."""

    id: str = "root"
    parent: str | None = None
    first_epoch: int = 0  # the epoch it starts at (its parent's split epoch; root 0)
    start: int = 0  # global step when it began training (steps count over all supernets)
    lr_origin: int = 0  # the plain schedule's step whose learning rate its first step takes
    stride: int = 1  # supernets at its depth: it takes 1/stride of each epoch's steps
    slot: int = 0  # its place among them (the first `per_epoch % stride` take one more)
    split_layers: list[int] = field(default_factory=list)  # split on its lineage
    groups: dict[str, list[str]] = field(default_factory=dict)  # layer -> its candidates

    def share(self, per_epoch: int) -> int:
        return max(1, per_epoch // self.stride + int(self.slot < per_epoch % self.stride))

    def lr_step(self, global_step: int) -> int:
        return self.lr_origin + (global_step - self.start) * self.stride


class GMSearch:
    """The split tree of one run: the node in training, those waiting, what was decided."""

    def __init__(self, search: _Search, saved: dict[str, Any] | None) -> None:
        self.s = search
        self.gcfg = search.cfg.gm
        if search.parts.loaders.heldout is None:
            raise SearchError("gm.splits: choosing among sub-supernets needs a held-out split")
        saved = saved or {}
        self.node = Node(**saved.get("node", {}))
        self.pending: list[str] = list(saved.get("pending", []))
        self.tree: list[dict[str, Any]] = list(saved.get("tree", []))
        self.leaves: list[dict[str, Any]] = list(saved.get("leaves", []))
        self.scores: list[dict[str, Any]] = list(saved.get("scores", []))
        self.chosen: str | None = saved.get("chosen")

    def state(self, node: Node | None = None) -> dict[str, Any]:
        return {
            "node": dataclasses.asdict(node or self.node),
            "pending": self.pending,
            "tree": self.tree,
            "leaves": self.leaves,
            "scores": self.scores,
            "chosen": self.chosen,
        }

    def file(self, node_id: str) -> Path:
        return self.s.rundir.checkpoint.with_name(f"gm_{node_id}.pt")

    def stop_epoch(self, total: int) -> int:
        """The epoch the node in training trains up to: its next split, else the end."""
        later = [e for e in self.gcfg.splits if e > self.node.first_epoch]
        return later[0] if later else total

    # --- what happens when the node stops ---------------------------------------------------
    def advance(self) -> bool:
        """Split, or finish a leaf and go on with the next waiting supernet. False: the tree
        is done and the winning leaf is loaded (the result)."""
        s = self.s
        if s.progress.epoch < s.parts.total_epochs:
            self.split()
            return True
        if self.node.id not in {leaf["id"] for leaf in self.leaves}:
            self.leaves.append(self.evaluate_leaf())
            if s.main:
                save_checkpoint(self.file(self.node.id), s.state())
        if self.pending:
            self.activate(self.pending.pop(0))
            return True
        self.choose()
        return False

    def split(self) -> None:
        s, g, node, ways = self.s, self.s.progress, self.node, self.gcfg.ways
        net = s.net
        scored = self.score()
        if not scored:  # every layer split already, or fewer members than ways
            log.warning("gm: supernet %s has no layer left to split at epoch %d", node.id, g.epoch)
            node.first_epoch = g.epoch
            return
        best = min(scored, key=lambda r: r["score"])  # ties: the first layer
        k = best["layer"]
        layer = net.layers[k]
        names = [str(c) for c in layer.spec.candidates]
        ids = [str(c) if node.id == "root" else f"{node.id}.{c}" for c in range(ways)]
        self.tree.append(
            {
                "node": node.id,
                "epoch": g.epoch,
                "step": g.global_step,
                "layer": k,
                "groups": [[names[i] for i in grp] for grp in best["groups_idx"]],
                "score": best["score"],
                "children": ids,
            }
        )
        self.scores.append({"node": node.id, "epoch": g.epoch, "layer": k, "layers": scored})
        (log.info if s.main else log.debug)(
            "gm: supernet %s splits layer %d (score %.4f) into %s",
            node.id, k, best["score"], " | ".join(" ".join(x) for x in self.tree[-1]["groups"]),
        )  # fmt: skip
        self.pending = ids + self.pending
        parent = s.state()
        for c, grp in enumerate(best["groups_idx"]):
            mask = torch.zeros(layer.num_candidates, dtype=torch.bool)
            mask[grp] = True
            child = Node(
                id=ids[c],
                parent=node.id,
                first_epoch=g.epoch,
                lr_origin=node.lr_step(g.global_step),
                stride=node.stride * ways,
                slot=node.slot * ways + c,
                split_layers=[*node.split_layers, k],
                groups={**node.groups, str(k): [names[i] for i in grp]},
            )
            state = {**parent, "net": {**parent["net"], f"layers.{k}.allowed": mask}}
            state["gm"] = self.state(child)
            if s.main:
                save_checkpoint(self.file(child.id), state)
        if s.main:
            self.write_report()
            self.figures(self.scores[-1])
        self.activate(self.pending.pop(0))

    def score(self) -> list[dict[str, Any]]:
        """Every unsplit layer's D (averaged over batches and ranks), best partition, score."""
        s, g, node = self.s, self.s.progress, self.node
        dev, fmt = s.ctx.device, s.fmt
        sampler = s.parts.loaders.train.sampler
        with forked_rng(dev):
            sampler.set_epoch(g.epoch)  # type: ignore[attr-defined]
            sampler.start = 0  # type: ignore[attr-defined]
            batches = [
                (x.to(dev, memory_format=fmt), y.to(dev))
                for x, y in itertools.islice(s.parts.loaders.train, self.gcfg.batches)
            ]
            gen = step_generator(s.cfg.seed, -(g.global_step + 1))  # never a training step's
            out = []
            for k, layer in enumerate(s.net.layers):
                members = layer.members()
                if k in node.split_layers or len(members) < self.gcfg.ways:
                    continue
                d = reduce_mean(dissimilarity(s.net, k, batches, gen).to(dev), s.ctx).cpu()
                groups, score = best_partition(d, self.gcfg.ways)
                out.append(
                    {
                        "layer": k,
                        "candidates": [str(layer.spec.candidates[i]) for i in members],
                        "D": d.tolist(),
                        "score": score,
                        "groups_idx": [[members[i] for i in grp] for grp in groups],
                    }
                )
        return broadcast_object(out, s.ctx)  # rank 0's decision on every rank, to the bit

    def activate(self, node_id: str, trains: bool = True) -> None:
        """Load a waiting supernet into the net and optimisers; it continues the global step
        count. Rewrites last.pt: from here on a resumed run continues this supernet."""
        s = self.s
        barrier(s.ctx)  # rank 0 has written the file
        step = s.progress.global_step
        state = ckpt.load(self.file(node_id))
        s.load(state)
        self.node = Node(**state["gm"]["node"])
        self.node.start = s.progress.global_step = step
        if trains:
            (log.info if s.main else log.debug)(
                "gm: supernet %s trains from epoch %d (%d steps per epoch)",
                node_id, self.node.first_epoch + 1, s.per_epoch,
            )  # fmt: skip
        s.checkpoint()

    def evaluate_leaf(self) -> dict[str, Any]:
        """The leaf's derived arch, its cost and its held-out accuracy (inherited weights,
        BatchNorm re-estimated on training batches for that path; restored afterwards)."""
        s = self.s
        net = s.net
        arch = s.derive()
        paths = net.arch_indices(arch)
        acc = s.heldout_accuracy(arch)
        with torch.no_grad():
            expected = float(net.expected_cost())
        leaf = {
            "id": self.node.id,
            "groups": self.node.groups,
            "arch": arch.block_strings(),
            "cost": s.hw.costs.cost_of(paths),
            "expected_cost": expected,
            "heldout_acc": acc,
        }
        (log.info if s.main else log.debug)(
            "gm: leaf %s: cost %.4g %s, held-out acc %.4f",
            leaf["id"], leaf["cost"], s.hw.costs.unit, acc,
        )  # fmt: skip
        return leaf

    def choose(self) -> None:
        """The best held-out accuracy among leaves within ±5 % of the target (none: the one
        closest to it; no target: all compete); its state becomes the run's net."""
        s, target = self.s, self.s.hw.target
        leaves = self.leaves
        if target is None:
            within = leaves
        else:
            within = [x for x in leaves if abs(x["cost"] - target) <= CHOICE_TOLERANCE * target]
        if within:
            best = max(within, key=lambda x: x["heldout_acc"])
        else:
            best = min(leaves, key=lambda x: abs(x["cost"] - target))
        self.chosen = best["id"]
        if self.node.id != self.chosen:
            self.activate(self.chosen, trains=False)
        else:
            s.checkpoint()
        if s.main:
            self.write_report()

    # --- what the run shows ------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {
            "splits": list(self.gcfg.splits),
            "ways": self.gcfg.ways,
            "tree": self.tree,
            "leaves": self.leaves,
            "chosen": self.chosen,
        }

    def write_report(self) -> None:
        """gm.json: the tree, the leaves and every scored layer's D matrix."""
        record = {"tree": self.tree, "leaves": self.leaves, "chosen": self.chosen}
        record["scores"] = self.scores
        write_json(self.s.rundir.path / "gm.json", record)

    def figures(self, split: dict[str, Any]) -> None:
        """Each scored layer's D as a heatmap: gm_layer<k>.png (gm_<node>_layer<k>.png below
        the root) and TensorBoard image gm/<node>/layer<k>."""
        node = split["node"]
        for r in split["layers"]:
            k = r["layer"]
            title = f"gradient dissimilarity, supernet {node}, layer {k} (score {r['score']:.3f})"
            fig = dissimilarity_figure(r["D"], r["candidates"], title)
            png = f"gm_layer{k}.png" if node == "root" else f"gm_{node}_layer{k}.png"
            step = self.s.progress.global_step
            self.s.reporter.figure(f"gm/{node}/layer{k}", step, fig, self.s.rundir.path / png)


def dissimilarity_figure(d: list[list[float]], names: list[str], title: str) -> Any:
    """Candidates × candidates, colour = 1 − cos of their shared-weight gradients."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.6 + 0.6 * len(names), 1.2 + 0.6 * len(names)))
    ax = fig.subplots()
    im = ax.imshow(d, cmap="magma", vmin=0.0, aspect="equal")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_title(title, fontsize=7)
    fig.colorbar(im, ax=ax)
    fig.subplots_adjust(left=0.22, bottom=0.22, right=0.95, top=0.92)
    return fig
