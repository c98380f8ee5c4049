"""Typed configuration of a search: plain dataclasses, so the library needs no Hydra.

The CLI turns its resolved YAML into a `SearchConfig` with `SearchConfig.from_dict`, which
refuses unknown keys by name (a typo must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from latency.config_dict import ConfigError, from_dict

from .data import DataConfig
from .hardware import HardwareConfig
from .mixed_op import WEIGHT_SHARING
from .objective import ObjectiveConfig
from .run import HOST_MEMORY, MEMORY_FORMATS, PRECISIONS, SGDConfig

__all__ = ["ConfigError", "SearchConfig", "SearchOptimConfig", "result_fingerprint"]


@dataclass
class SpaceConfig:
    """A preset from `proxyless.space` plus field overrides. num_classes, input size and
    input channels always come from the dataset."""

    name: str = "tiny"
    width_mult: float = 1.0
    dropout: float = 0.0
    alpha_init_std: float = 1e-3
    # separate: each candidate its own weights (the paper) | kernels: per expansion, smaller
    # kernels are the centre of the largest | nested: a layer's candidates are slices of its
    # largest one (proxyless.nested)
    weight_sharing: str = "separate"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class EstimatorConfig:
    """A registered estimator (`proxyless.estimators.ESTIMATORS`) and its keyword arguments."""

    name: str = "all_paths"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchOptimConfig(SGDConfig):
    """Weights: SGD Nesterov + cosine per step over warmup + search (`SGDConfig`). Arch: Adam
    with beta1 = 0 (no momentum, so α only moves when its layer's gradient says so)."""

    lr: float = 0.025
    label_smoothing: float = 0.1
    arch_lr: float = 1e-3
    arch_betas: tuple[float, float] = (0.0, 0.999)
    arch_eps: float = 1e-8
    arch_weight_decay: float = 0.0


SAMPLERS = ("uniform", "sandwich")
SEARCH_PATHS = ("alpha", "uniform")
ANCHORS = ("largest", "smallest", "near_largest")  # schedule.anchors: supernet.SuperNet.anchor_path
JUDGES = ("inherited", "train")  # derive.judge: who picks among derive.candidates


@dataclass
class ScheduleConfig:
    """Warmup epochs (weights only, α frozen; paths: `warmup.sampler`), then search epochs
    (weights every batch, α every `arch_every` batches). `steps_per_epoch` caps an epoch."""

    warmup_epochs: int = 40
    epochs: int = 120
    arch_every: int = 5
    steps_per_epoch: int | None = None
    # Which path a weight step trains. uniform: one path per step (uniform in warmup, from
    # softmax(α) or uniform in search: `search_paths`). sandwich: the largest path on every
    # other step, that path on the rest, so shared weights learn the task even when single
    # random paths barely do (benchmarks/supernet_learning.py).
    sampler: str = "uniform"
    # sandwich only: the other steps' path learns from the largest path's predictions on the
    # same batch (in-place distillation, as BigNAS/OFA), not from the labels; one extra
    # no-grad forward of the largest path per such step.
    distill: bool = False
    # The path of a search-epoch weight step (sandwich: the steps that are not the largest
    # path's). alpha: drawn from softmax(α), as the paper (weights follow the archs α
    # favours). uniform: drawn uniformly, as in warmup, so archs α has left behind keep
    # their share of training and the supernet still ranks them at the end.
    search_paths: str = "alpha"
    # sandwich: the largest path only in the first N epochs (warmup included), a drawn path
    # on every step after that; null: in every epoch. The largest path bootstraps the shared
    # weights; later, without it, the other candidates get the steps it took.
    sandwich_epochs: int | None = None
    # sandwich: the anchor paths its every-other steps train, in turn: largest (k7_e6
    # everywhere), smallest (k3_e3 everywhere, full depth) and/or near_largest (the largest
    # with one drawn layer on a drawn candidate). With the largest alone, separately weighted
    # small ops stay so undertrained that the supernet rates Zero above them; the smallest
    # anchor trains the cheap ops too (but α then picks the two anchors' ops alone: worse on
    # the benchmark); near_largest trains every op next to the largest path (ranks better
    # after warmup, archs as good: a tie). All opt-in.
    anchors: list[str] = field(default_factory=lambda: ["largest"])


WARMUP_SAMPLERS = ("uniform", "shift")


@dataclass
class WarmupConfig:
    """Which path a warmup weight step trains (sandwich's largest-path steps stay as they
    are). uniform: a uniformly drawn path (the paper). shift: ShiftNAS-style complexity-aware
    sampling (`proxyless.shift_sampler`): `bins` quantile bins of the path cost (the search's
    cost model: latency table, FLOPs or params, whatever the objective), bin k drawn with
    p_k = (1 − epsilon)·softmax(Δ_k / temperature) + epsilon / bins, where Δ_k is the bin's
    relative loss improvement per update (its loss EMA, factor `ema`, before minus after,
    over after), updated every `update_every` steps; then a path of that bin."""

    sampler: str = "uniform"
    bins: int = 4
    ema: float = 0.9
    temperature: float = 0.01
    epsilon: float = 0.1
    update_every: int = 20

    def __post_init__(self) -> None:
        if self.sampler not in WARMUP_SAMPLERS:
            raise ConfigError(
                f"warmup.sampler={self.sampler!r} is not one of: {', '.join(WARMUP_SAMPLERS)}"
            )
        if self.bins < 2:
            raise ConfigError(f"warmup.bins={self.bins} must be >= 2 (cost bins of the paths)")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"warmup.ema={self.ema} must be in [0, 1)")
        if not self.temperature > 0.0:
            raise ConfigError(f"warmup.temperature={self.temperature} must be > 0")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"warmup.epsilon={self.epsilon} must be in [0, 1]")
        if self.update_every < 1:
            raise ConfigError(f"warmup.update_every={self.update_every} must be >= 1")


@dataclass
class DeriveConfig:
    """How the final arch is read off α. With a cost target and a tolerance: the most probable
    arch whose cost is within ±tolerance·target (`proxyless.derive`); tolerance None (or no
    target): argmax per layer, as in the paper, which can land far from the target.
    `candidates` > 1: that many of the most probable archs in the window are scored on the
    held-out split and the best is returned (`Search.final_arch`), judged by `judge`:
    inherited (the supernet's weights, BN re-estimated: seconds) or train (each trained
    from scratch for `train_epochs` at peak lr `train_lr`, the search's other weight-optimizer
    settings: `proxyless.brief_training`, minutes)."""

    tolerance: float | None = 0.05
    candidates: int = 1
    judge: str = "inherited"
    train_epochs: int = 4
    train_lr: float = 0.1


@dataclass
class CheckpointConfig:
    every_steps: int = 0  # besides every epoch; 0: epochs only
    keep_warmup: bool = False  # also keep checkpoints/warmup.pt, the supernet after warmup


@dataclass
class LogConfig:
    progress: bool | None = None  # None: only when stderr is a terminal
    progress_every_s: float | None = 30.0  # without bars: a progress line this often; None: off
    tensorboard: bool = True
    every_steps: int = 10
    heatmap: bool = True
    heatmap_every_s: float = 10.0  # at most one heatmap this often, and the last epoch's; 0: each


@dataclass
class DebugConfig:
    """Fault injection for tests: NaN input at one step; a sleep per step (slows a run so a
    test can kill it mid-way; it changes no result)."""

    inject_nan_at_step: int | None = None
    step_delay_s: float = 0.0
    # Distributed checks: every rank writes rank<R>.json (a hash of its α, its BN buffers'
    # hash and the α themselves) into this directory at the end of the search.
    rank_dump_dir: str | None = None


STRATEGIES = ("differentiable", "zeroshot")
PROXY_INPUTS = ("real", "random")


@dataclass
class ZeroShotConfig:
    """`strategy=zeroshot`: an evolutionary search with a zero-cost proxy as fitness and the
    cost target as a hard budget (cost <= target; over-budget candidates are rejected before
    they are scored). `population` random candidates first, then `iterations` children,
    each a parent from the population with every layer re-drawn with probability
    `mutation_rate` (at least one layer changes); the lowest-scoring member is dropped.
    Each candidate is scored once, with fresh weights, on the same `batches` batches of
    `data.batch_size` (`inputs`: real training images, or random ones with random labels)."""

    proxy: str = "zico"
    population: int = 64
    iterations: int = 512
    mutation_rate: float = 0.1
    batches: int = 2
    inputs: str = "real"


@dataclass
class InitConfig:
    """How α starts. normal: N(0, space.alpha_init_std²), the paper. A proxy name (zico,
    params, ...): standardised per-layer proxy scores of subnets that force each candidate,
    over `paths` random paths of the other layers, divided by `temperature`
    (`proxyless.warm_start`); batches as `zeroshot.batches` / `zeroshot.inputs`."""

    alpha: str = "normal"
    temperature: float = 1.0
    paths: int = 2


@dataclass
class PruneConfig:
    """`keep`: only the k best candidates per layer by their init.alpha proxy scores take
    part in the differentiable search (fewer re-runs per arch step); None: all."""

    keep: int | None = None


@dataclass
class GMConfig:
    """Few-shot supernets by gradient matching (`proxyless.gm_search`). After each epoch in
    `splits` (counted from 1) every supernet scores its not yet split layers on `batches`
    training batches each, splits the best-scored one into `ways` sub-supernets, and these
    train one after another on equal shares of the remaining weight steps. Empty: off."""

    splits: list[int] = field(default_factory=list)
    ways: int = 2
    batches: int = 10


@dataclass
class SearchConfig:
    strategy: str = "differentiable"  # differentiable (ProxylessNAS) | zeroshot
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    init: InitConfig = field(default_factory=InitConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    gm: GMConfig = field(default_factory=GMConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    optim: SearchOptimConfig = field(default_factory=SearchOptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    derive: DeriveConfig = field(default_factory=DeriveConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads; None: the free cores (free_cores())
    run_dir: str | None = None  # None: runs/search (the CLI uses Hydra's run dir)
    resume: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms (GPU reproducibility)
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast of weight and arch steps (CUDA only)
    # auto | channels_last | contiguous: layout of weights and batches (`run.resolve_memory_format`)
    memory_format: str = "auto"
    # reuse | release: keep freed host memory for the next step (`run.host_memory`)
    host_memory: str = "reuse"

    def __post_init__(self) -> None:
        if self.run_dir is None:
            self.run_dir = "runs/search"
        s = self.schedule
        if s.warmup_epochs < 0 or s.epochs < 0 or s.warmup_epochs + s.epochs == 0:
            raise ConfigError("schedule.warmup_epochs + schedule.epochs must be >= 1")
        if s.arch_every < 1:
            raise ConfigError(f"schedule.arch_every={s.arch_every} must be >= 1")
        tol = self.derive.tolerance
        if tol is not None and not 0.0 < tol < 1.0:
            raise ConfigError(f"derive.tolerance={tol} must be in (0, 1), or null for argmax")
        if self.derive.candidates < 1:
            raise ConfigError(f"derive.candidates={self.derive.candidates} must be >= 1")
        if self.derive.candidates > 1 and self.data.heldout_per_class == 0:
            raise ConfigError(
                f"derive.candidates={self.derive.candidates} scores archs on the held-out "
                "split: set data.heldout_per_class > 0 (or derive.candidates=1)"
            )
        if self.derive.judge not in JUDGES:
            raise ConfigError(
                f"derive.judge={self.derive.judge!r} is not one of: {', '.join(JUDGES)}"
            )
        if self.derive.train_epochs < 1 or not self.derive.train_lr > 0:
            raise ConfigError(
                f"derive.train_epochs={self.derive.train_epochs} must be >= 1 and "
                f"derive.train_lr={self.derive.train_lr} > 0"
            )
        if s.sampler not in SAMPLERS:
            raise ConfigError(
                f"schedule.sampler={s.sampler!r} is not one of: {', '.join(SAMPLERS)}"
            )
        if s.search_paths not in SEARCH_PATHS:
            raise ConfigError(
                f"schedule.search_paths={s.search_paths!r} is not one of: {', '.join(SEARCH_PATHS)}"
            )
        if s.distill and s.sampler != "sandwich":
            raise ConfigError(
                "schedule.distill=true needs schedule.sampler=sandwich (the largest path is "
                f"the teacher), not {s.sampler!r}"
            )
        if s.sandwich_epochs is not None and (s.sampler != "sandwich" or s.sandwich_epochs < 0):
            raise ConfigError(
                f"schedule.sandwich_epochs={s.sandwich_epochs} needs schedule.sampler=sandwich "
                "and a count >= 0 (null: the largest path in every epoch)"
            )
        if not s.anchors or any(a not in ANCHORS for a in s.anchors):
            raise ConfigError(
                f"schedule.anchors={list(s.anchors)} must be a non-empty list of: "
                f"{', '.join(ANCHORS)} (e.g. schedule.anchors=[largest,smallest])"
            )
        if list(s.anchors) != ["largest"] and s.sampler != "sandwich":
            raise ConfigError(
                f"schedule.anchors={list(s.anchors)} needs schedule.sampler=sandwich (the "
                f"anchors are the sandwich's paths), not {s.sampler!r}"
            )
        if self.space.weight_sharing not in WEIGHT_SHARING:
            raise ConfigError(
                f"space.weight_sharing={self.space.weight_sharing!r} is not one of: "
                f"{', '.join(WEIGHT_SHARING)}"
            )
        if s.steps_per_epoch is not None and s.steps_per_epoch < 1:
            raise ConfigError(f"schedule.steps_per_epoch={s.steps_per_epoch} must be >= 1")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy={self.strategy!r} is not one of: {', '.join(STRATEGIES)}")
        self._check_zeroshot()
        self._check_gm()
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}: use fp32, bf16 or fp16")
        if self.log.heatmap_every_s < 0:
            raise ConfigError(
                f"log.heatmap_every_s={self.log.heatmap_every_s} must be >= 0 (0: every epoch)"
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads} must be >= 1 (or null: the free cores)")
        if self.memory_format not in MEMORY_FORMATS:
            raise ConfigError(
                f"memory_format={self.memory_format!r}: use {', '.join(MEMORY_FORMATS)}"
            )
        if self.host_memory not in HOST_MEMORY:
            raise ConfigError(f"host_memory={self.host_memory!r}: use {', '.join(HOST_MEMORY)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device={self.device!r}: use auto, cpu, cuda or cuda:N")

    def _check_zeroshot(self) -> None:
        from .zeroshot import PROXIES

        z = self.zeroshot
        if z.proxy not in PROXIES:
            raise ConfigError(f"zeroshot.proxy={z.proxy!r} is not one of: {', '.join(PROXIES)}")
        if z.inputs not in PROXY_INPUTS:
            raise ConfigError(f"zeroshot.inputs={z.inputs!r}: use real or random")
        if z.population < 2 or z.iterations < 0:
            raise ConfigError("zeroshot.population must be >= 2 and zeroshot.iterations >= 0")
        if not 0.0 < z.mutation_rate <= 1.0:
            raise ConfigError(f"zeroshot.mutation_rate={z.mutation_rate} must be in (0, 1]")
        i = self.init
        if i.alpha != "normal" and i.alpha not in PROXIES:
            raise ConfigError(
                f"init.alpha={i.alpha!r}: use normal or a proxy ({', '.join(PROXIES)})"
            )
        k = self.prune.keep
        if k is not None and (k < 2 or i.alpha == "normal"):
            raise ConfigError(
                f"prune.keep={k} needs k >= 2 and proxy scores to rank by: set init.alpha "
                "to a proxy (e.g. init.alpha=zico)"
            )
        if i.temperature <= 0 or i.paths < 1:
            raise ConfigError("init.temperature must be > 0 and init.paths >= 1")
        if z.batches < 1:
            raise ConfigError(f"zeroshot.batches={z.batches} must be >= 1 (ZiCo needs 2)")

    def _check_gm(self) -> None:
        g, total = self.gm, self.schedule.warmup_epochs + self.schedule.epochs
        splits = list(g.splits)
        if not splits:
            return
        if self.strategy != "differentiable":
            raise ConfigError(f"gm.splits={splits} needs strategy=differentiable (a supernet)")
        if any(not 1 <= e < total for e in splits) or splits != sorted(set(splits)):
            raise ConfigError(
                f"gm.splits={splits}: epochs (counted from 1) after which to split, increasing, "
                f"each below the run's {total} epochs (warmup + search), so children train"
            )
        if g.ways < 2:
            raise ConfigError(f"gm.ways={g.ways} must be >= 2 (groups per split)")
        if g.batches < 1:
            raise ConfigError(f"gm.batches={g.batches} must be >= 1 (batches per layer score)")
        warmup = self.schedule.warmup_epochs
        if self.warmup.sampler == "shift" and splits[0] < warmup:
            raise ConfigError(
                f"gm.splits={splits} with warmup.sampler=shift: the shift sampler's bins cover "
                f"the whole space, so split at or after the warmup's end (epoch {warmup}), or "
                "use warmup.sampler=uniform"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchConfig:
        return from_dict(cls, d)


# Keys that may change between a run and its resume (they change no result beyond float
# rounding, as device, threads and memory_format do).
RESUMABLE_CHANGES = (
    "resume",
    "run_dir",
    "device",
    "threads",
    "memory_format",
    "host_memory",
    "log",
    "debug",
    "checkpoint",
)
_DATA_RESUMABLE = ("num_workers", "pin_memory", "root", "download", "check_md5", "check_images")


def result_fingerprint(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a config dict a resumed run must share with the run it continues."""
    out = {k: v for k, v in cfg.items() if k not in RESUMABLE_CHANGES}
    out["data"] = {k: v for k, v in cfg["data"].items() if k not in _DATA_RESUMABLE}
    # Runs from before `warmup` existed sampled warmup paths uniformly: its defaults.
    out.setdefault("warmup", dataclasses.asdict(WarmupConfig()))
    # runs from before these existed
    defaults = {
        "distill": False,
        "search_paths": "alpha",
        "sandwich_epochs": None,
        "anchors": ["largest"],
    }
    out["schedule"] = {**defaults, **out["schedule"]}
    out["space"] = {"weight_sharing": "separate", **out["space"]}
    out["derive"] = {**dataclasses.asdict(DeriveConfig()), **out["derive"]}
    return out
