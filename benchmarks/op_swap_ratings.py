"""How a finished search's supernet rates each candidate of each layer, in the derived arch.

For every layer, the derived arch with that layer's op swapped for each candidate is scored
with the supernet's weights (BatchNorm re-estimated per path, held-out + test images, as
`benchmarks/search_quality.py` ranks archs). Why: α follows these ratings, and they show
where the supernet rather than the task made the choice — e.g. with the sandwich rule's
largest path as the only anchor, Zero is rated above every op but k7_e6, because the other
ops' separate weights are barely trained, so α cuts latency with Zero layers that the
ground truth says cost accuracy (`benchmarks/ground_truth_fit.py`).

    PYTHONPATH=. python benchmarks/op_swap_ratings.py <search run dir> [<run dir> …]

One JSON line per run: the derived arch and, per layer, each candidate's inherited accuracy,
its final probability under α and its cost (the run's `costs.json`, in its unit) — what α
weighed; a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from search_quality import eval_batches, pooled_accuracy  # the script's own folder is on sys.path

from proxyless.arch import Arch
from proxyless.distributed import DistContext
from proxyless.ranking import inherited_accuracies
from proxyless.run import CheckpointError, load_checkpoint
from proxyless.search_config import SearchConfig
from proxyless.search_setup import build_parts


def op_swap_ratings(run_dir: Path, calib: int = 8) -> dict[str, Any]:
    """Per layer of the run's derived arch, {candidate: inherited accuracy} with every other
    layer as derived; `calib` training batches re-estimate BatchNorm (the benchmark's 8)."""
    try:
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt", kind="proxyless-search")
    except CheckpointError as e:
        raise SystemExit(f"{e}; pass the directory of a finished proxyless-search run") from e
    arch_path = run_dir / "arch.json"
    if not arch_path.is_file() or not (run_dir / "costs.json").is_file():
        raise SystemExit(
            f"{run_dir}: no arch.json or costs.json; pass the directory of a finished search"
        )
    plain = state["config"]
    net = build_parts(SearchConfig.from_dict(plain), DistContext()).net
    net.load_state_dict(state["net"])
    derived = net.arch_indices(Arch.load(arch_path))
    costs = json.loads((run_dir / "costs.json").read_text())["per_layer"]
    sets, calib_x = eval_batches(plain, calib)
    layers = []
    for li, layer in enumerate(net.layers):
        paths = [[*derived[:li], c, *derived[li + 1 :]] for c in layer.members()]
        archs = [net.path_arch(p) for p in paths]
        accs = pooled_accuracy(inherited_accuracies(net, archs, sets, calib_x), sets)
        names = [str(layer.spec.candidates[c]) for c in layer.members()]
        probs = layer.probs().tolist()
        layers.append(
            {
                "layer": li + 1,
                "derived": str(layer.spec.candidates[derived[li]]),
                "ratings": dict(zip(names, accs, strict=True)),
                "probs": {n: probs[c] for n, c in zip(names, layer.members(), strict=True)},
                "costs": {n: costs[li][c] for n, c in zip(names, layer.members(), strict=True)},
            }
        )
    return {"run": str(run_dir), "arch": [entry["derived"] for entry in layers], "layers": layers}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished search run directories")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    for run in a.runs:
        out = op_swap_ratings(run)
        print(json.dumps(out), flush=True)
        print(f"{run}: {' '.join(out['arch'])}", file=sys.stderr)
        print("  per candidate: rating / α probability / cost", file=sys.stderr)
        for entry in out["layers"]:
            cells = "  ".join(
                f"{op}{'*' if op == entry['derived'] else ''} {acc:.3f} / "
                f"{entry['probs'][op]:.2f} / {entry['costs'][op]:.2f}"
                for op, acc in entry["ratings"].items()
            )
            print(f"  layer {entry['layer']}: {cells}", file=sys.stderr)


if __name__ == "__main__":
    main()
