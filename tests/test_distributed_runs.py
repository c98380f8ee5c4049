"""`torchrun --nproc_per_node 2 proxyless-search|proxyless-train …` end to end on CPU (gloo).

Each test launches `python -m torch.distributed.run` in a subprocess with a timeout and
checks the exit status, that rank 0 alone wrote one run directory, and that ranks agree
(every rank dumps a hash of its α and BN buffers via `debug.rank_dump_dir`).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(module: str, *overrides: str, cwd: Path, timeout: float = 120) -> str:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        module,
        *overrides,
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


@pytest.fixture(scope="module")
def search_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dsearch")
    out = _torchrun(
        "proxyless.cli.search",
        "debug=fast",
        "device=cpu",
        "derive.candidates=3",
        "derive.judge=train",  # brief trainings on sharded data, gradients averaged
        "derive.train_epochs=1",
        f"hydra.run.dir={root / 'run'}",
        f"debug.rank_dump_dir={root / 'ranks'}",
        cwd=root,
    )
    assert out.count("cost range of space") == 1  # the summary table: rank 0 prints, rank 1 not
    return root


def test_two_rank_search_writes_one_run_and_ranks_agree(search_run: Path) -> None:
    root = search_run
    assert sorted(p.name for p in root.iterdir()) == ["ranks", "run"]  # one run directory
    run = root / "run"
    for name in ("arch.json", "summary.json", "costs.json", "config.yaml", "run_info.json"):
        assert (run / name).is_file(), name
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.pt"]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    alphas = [v for k, v in state["net"].items() if k.endswith("alpha")]
    assert alphas and all(bool(torch.isfinite(a).all()) for a in alphas)
    assert state["global_step"] == json.loads((run / "summary.json").read_text())["steps"]

    ranks = [json.loads((root / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["alpha_sha256"] == ranks[1]["alpha_sha256"]  # α identical on both ranks
    assert ranks[0]["buffers_sha256"] == ranks[1]["buffers_sha256"]  # BN synced at the end
    # derive.candidates=3, judge=train: every rank trains each candidate on its shard with
    # averaged gradients and scores it on its shard, the sums are global: one choice
    assert len(ranks[0]["candidate_heldout_acc"]) == 3
    summary = json.loads((run / "summary.json").read_text())
    assert "each trained from scratch for 1 epochs" in summary["derive"]
    assert ranks[0]["candidate_heldout_acc"] == ranks[1]["candidate_heldout_acc"]
    assert (
        ranks[0]["arch"]
        == ranks[1]["arch"]
        == json.loads((run / "summary.json").read_text())["arch"]
    )
    # The checkpoint (rank 0) holds the α the ranks ended with, and α moved from init.
    saved = torch.cat([a.double().flatten() for a in alphas])
    dumped = torch.tensor([x for a in ranks[0]["alpha"] for x in a], dtype=torch.float64)
    assert torch.allclose(saved, dumped)
    assert float(dumped.abs().max()) > 0.01 and all(math.isfinite(x) for x in dumped.tolist())


def _train(arch: Path, out_dir: Path, *extra: str) -> str:
    return _torchrun(
        "proxyless.cli.train",
        f"arch={arch}",
        "data=synthetic",
        "data.batch_size=16",
        "data.synthetic_train_samples=96",
        "data.synthetic_test_samples=32",
        "epochs=2",
        "device=cpu",
        "log_every=1",
        "tensorboard=false",
        f"out_dir={out_dir}",
        *extra,
        cwd=out_dir.parent,
    )


def test_two_rank_train_runs_from_the_searched_arch(search_run: Path) -> None:
    out_dir = search_run / "train"
    stdout = _train(search_run / "run" / "arch.json", out_dir)
    assert stdout.count("checkpoint:") == 1  # rank 0 alone prints
    assert {"last.pt", "best.pt", "metrics.json", "arch.json"} <= {
        p.name for p in out_dir.iterdir()
    }
    metrics = json.loads((out_dir / "metrics.json").read_text())
    # 96 samples / 2 ranks / batch 16 = 3 steps per epoch: the train split is sharded.
    assert metrics["step"] == 6 and metrics["finished"]
    state = torch.load(out_dir / "last.pt", weights_only=True)
    assert all(
        bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point()
    )


@pytest.mark.slow
def test_two_rank_train_resume_matches_an_uninterrupted_run(search_run: Path) -> None:
    arch = search_run / "run" / "arch.json"
    full, cut = search_run / "train_full", search_run / "train_cut"
    _train(arch, full)
    _train(arch, cut, "max_steps=4")  # stops mid-epoch 2 with a checkpoint
    assert torch.load(cut / "last.pt", weights_only=True)["step"] == 4
    _train(arch, cut, "resume=true")  # every rank loads last.pt
    a = torch.load(full / "last.pt", weights_only=True)["model"]
    b = torch.load(cut / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), atol=1e-6), k


def test_two_rank_shift_warmup_gives_every_rank_the_same_bin_probabilities(
    tmp_path: Path,
) -> None:
    """warmup.sampler=shift: the ranks' losses differ (their shards), so only the all-reduce
    before each update keeps p, and with it the sampled paths, equal on every rank."""
    _torchrun(
        "proxyless.cli.search",
        "debug=fast",
        "device=cpu",
        "warmup.sampler=shift",
        "warmup.update_every=1",
        "warmup.temperature=0.001",
        "schedule.sampler=uniform",  # every warmup step from the shift sampler
        "schedule.warmup_epochs=3",
        "schedule.epochs=0",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"debug.rank_dump_dir={tmp_path / 'ranks'}",
        cwd=tmp_path,
    )
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["shift_p"] == ranks[1]["shift_p"]
    assert ranks[0]["shift_p"] != [0.25] * 4  # p moved, from losses of both ranks
    assert ranks[0]["buffers_sha256"] == ranks[1]["buffers_sha256"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    shift = summary["shift"]
    assert shift["p"] == ranks[0]["shift_p"] and sum(shift["steps_per_bin"]) == summary["steps"]


@pytest.mark.slow
def test_two_rank_gm_search_splits_the_same_layer_on_every_rank(tmp_path: Path) -> None:
    """gm.splits under torchrun: the ranks average their D, take the same split, train the
    same children and choose the same leaf (identical α and BN buffers at the end)."""
    _torchrun(
        "proxyless.cli.search",
        "debug=fast",
        "device=cpu",
        "gm.splits=[1]",
        "gm.batches=1",
        "log.heatmap=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"debug.rank_dump_dir={tmp_path / 'ranks'}",
        cwd=tmp_path,
        timeout=300,
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    gm = summary["gm"]
    assert len(gm["tree"]) == 1 and [x["id"] for x in gm["leaves"]] == ["0", "1"]
    # 2 epochs of the same steps: the root's first, then the children's halves
    assert summary["steps"] == 2 * gm["tree"][0]["step"]
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["alpha_sha256"] == ranks[1]["alpha_sha256"]
    assert ranks[0]["buffers_sha256"] == ranks[1]["buffers_sha256"]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "gm_0.pt",
        "gm_1.pt",
        "last.pt",
    ]
