"""What a sweep runs: a grid of settings ("cells") of the knobs, the seeds trained together as
one ensemble per cell, and the steps at which each cell is analysed (run.py runs it).

    Cell            one setting of the knobs; its ModelConfig and TrainConfig fields
    SweepSpec       everything that decides a sweep's numbers (written to sweep.json)
    parse_knob      '--set n_heads=2,4,8' -> ('n_heads', [2, 4, 8])
    grid            every combination of the knob values
    cell_names      short labels naming the knobs that differ
    snapshot_steps  the log-spaced steps at which a cell is analysed
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from itertools import product

from ..checks import check_bool, check_choice, check_int, check_number, check_seeds
from ..data import DataConfig, context_length
from ..model import ModelConfig
from ..train import SCHEDULES, TrainConfig

MAX_HEADS = 16  # the most heads a cell may have: the analyses are built for at most this many


@dataclass(frozen=True)
class Cell:
    """One setting of the knobs that may decide compete vs cooperate (docs/method.md §4 "Study")."""

    n_heads: int = ModelConfig.n_heads  # attention heads
    d_model: int = ModelConfig.d_model  # residual width
    d_head: int = ModelConfig.d_head  # query/key/value width per head
    max_len: int = DataConfig.max_len  # training strings have 1..max_len symbols
    weight_decay: float = TrainConfig.weight_decay  # AdamW's decoupled weight decay
    bos: bool = DataConfig.bos  # a BOS token before every string (an attention sink)
    p2: float = DataConfig.probs[2]  # share of 2s; 0s and 1s split the rest evenly
    steps: int = 800  # optimiser steps of this cell (the study's, shorter than TrainConfig's)
    lr: float = TrainConfig.lr  # AdamW learning rate
    schedule: str = "constant"  # 'constant', or 'cosine' over the cell's steps (to 10% of lr)
    shared_data: bool = False  # every seed trains on the same batches (data seed 0)

    def __post_init__(self):
        """ValueError (in the knob's words) for a cell that cannot be trained."""
        for name in ("n_heads", "d_model", "d_head", "max_len", "steps"):
            check_int(name, getattr(self, name), 1)
        check_number("p2 (the share of 2s)", self.p2, low=0.0, high=1.0, high_open=True)
        check_number("lr", self.lr, low=0.0, low_open=True)
        check_number("weight_decay", self.weight_decay, low=0.0)
        check_bool("bos", self.bos)
        check_bool("shared_data", self.shared_data)
        check_choice("schedule", self.schedule, SCHEDULES)
        if self.n_heads > MAX_HEADS:
            raise ValueError(
                f"n_heads={self.n_heads}: the study analyses at most {MAX_HEADS} heads"
            )

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            d_model=self.d_model, n_heads=self.n_heads, d_head=self.d_head,
            n_ctx=context_length(self.max_len),
        )  # fmt: skip

    @property
    def probs(self) -> tuple:
        rest = (1.0 - self.p2) / 2
        return (rest, rest, self.p2)

    def key(self) -> str:
        """A folder name that spells out every knob."""
        return (
            f"H{self.n_heads}_dm{self.d_model}_dh{self.d_head}_L{self.max_len}"
            f"_wd{self.weight_decay:g}_bos{int(self.bos)}_p2{self.p2:.3g}"
            f"_s{self.steps}_lr{self.lr:g}"
            + ("_cos" if self.schedule == "cosine" else "")
            + ("_shd" if self.shared_data else "")
        )  # (the last two only when set, so that older folders keep their names)

    def train_config(
        self, spec: SweepSpec, steps: int, *, device: str = "cpu", path: str = "fast"
    ) -> TrainConfig:
        """The TrainConfig of this cell's ensemble in ``spec``, trained to ``steps`` (a
        snapshot's step; the schedule is shaped for the cell's own steps) on ``device``
        by the training ``path``: the cell's knobs, the sweep's seeds, batch size and
        checkpoint interval; no evaluation during training (the snapshots analyse)."""
        return TrainConfig(
            seeds=tuple(spec.seeds), steps=steps, batch_size=spec.batch_size, device=device,
            max_len=self.max_len, lr=self.lr, weight_decay=self.weight_decay, bos=self.bos,
            probs=self.probs, schedule=self.schedule, schedule_steps=self.steps,
            data_seed=0 if self.shared_data else None, eval_every=0,
            n_eval=min(256, spec.n_eval), ensemble=True,
            checkpoint_every=spec.checkpoint_every, path=path,
        )  # fmt: skip

    @property
    def continues(self) -> bool:
        """Whether a longer twin may continue from this cell's checkpoint: only under a
        constant learning rate (a cosine is shaped by the cell's own length)."""
        return self.schedule == "constant"

    def continues_from(self, other: Cell) -> bool:
        """Whether this cell is ``other`` trained on: every knob equal but more steps, under a
        schedule that lets it continue (``continues``)."""
        return (self.continues and other.steps < self.steps
                and replace(other, steps=self.steps) == self)  # fmt: skip


KNOBS = tuple(f.name for f in fields(Cell))
BASE = Cell()
SEEDS = tuple(range(8))  # the seeds of every cell unless the command line says otherwise


def parse_knob(assignment: str) -> tuple[str, list]:
    """'n_heads=2,4,8' -> ('n_heads', [2, 4, 8]); ValueError in plain words otherwise."""
    name, sep, values = assignment.partition("=")
    name = name.strip().replace("-", "_")
    if not sep:
        raise ValueError(f"--set takes KNOB=V1,V2,...; got {assignment!r}")
    if name not in KNOBS:
        raise ValueError(f"unknown knob {name!r}: choose from {', '.join(KNOBS)}")
    texts = [v.strip() for v in values.split(",") if v.strip()]
    if not texts:
        raise ValueError(f"--set {name}= has no values")
    kind = type(getattr(BASE, name))
    out = []
    for t in texts:
        try:
            if kind is bool:
                if t.lower() not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
                    raise ValueError
                out.append(t.lower() in ("1", "true", "on", "yes"))
            else:
                out.append(kind(t))
        except ValueError:
            raise ValueError(f"--set {name}: {t!r} is not a {kind.__name__}") from None
    if len(set(out)) != len(out):
        raise ValueError(f"--set {name}: a value is repeated")
    return name, out


def grid(assignments: dict[str, list], base: Cell = BASE) -> list[Cell]:
    """Every combination of the knob values (the first knob varies slowest)."""
    names = list(assignments)
    return [
        replace(base, **dict(zip(names, values, strict=True)))  # Cell checks its knobs
        for values in product(*(assignments[n] for n in names))
    ]


@dataclass(frozen=True)
class SweepSpec:
    """Everything that decides a sweep's numbers (device and threads do not, up to rounding)."""

    cells: tuple  # of Cell
    names: tuple  # one label per cell, for tables and figures
    seeds: tuple  # trained together as one ensemble per cell
    batch_size: int = 128  # strings per step per model
    n_eval: int = 1024  # held-out strings analysed
    first_snapshot: int = 25  # snapshots at first, 2x first, 4x first, ... and the last step
    subsets: bool = True  # every subset of heads in the ablation
    interventions: bool = True
    preset: str = ""  # the named preset this came from, if any
    checkpoint_every: int = 200  # also checkpoint within a snapshot's training segment
    snapshot_every: int = 0  # also analyse every this many steps (0: only the doubling ones)
    keep_checkpoints: bool = True  # keep the parameters of every snapshot (snapshots/)

    def __post_init__(self):
        if not self.cells:
            raise ValueError("a sweep needs at least one cell")
        if len(self.names) != len(self.cells) or len(set(self.names)) != len(self.names):
            raise ValueError("every cell needs its own name")
        if not self.seeds:
            raise ValueError("a sweep needs at least one seed")
        check_seeds(self.seeds)  # also refuses a repeated seed
        for name, minimum in (("batch_size", 1), ("n_eval", 1), ("first_snapshot", 1),
                              ("checkpoint_every", 0), ("snapshot_every", 0)):  # fmt: skip
            check_int(name, getattr(self, name), minimum)
        check_bool("keep_checkpoints", self.keep_checkpoints)
        check_bool("subsets", self.subsets)
        check_bool("interventions", self.interventions)
        if len({c.key() for c in self.cells}) != len(self.cells):
            raise ValueError("two cells have the same knobs")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cells"] = [asdict(c) for c in self.cells]
        d["names"], d["seeds"] = list(self.names), [int(s) for s in self.seeds]
        return d

    def snapshots(self, cell: Cell) -> list[int]:
        """The steps at which ``cell`` is analysed."""
        return snapshot_steps(cell.steps, self.first_snapshot, self.snapshot_every)

    @classmethod
    def from_dict(cls, d: dict) -> SweepSpec:
        d = dict(d)
        d["cells"] = tuple(Cell(**c) for c in d["cells"])
        d["names"], d["seeds"] = tuple(d["names"]), tuple(d["seeds"])
        return cls(**d)


def sweep_spec(sets, *, default_steps: int, seeds, **options) -> SweepSpec:
    """The SweepSpec of ``sweep --set name=v1,v2 ...`` (sets: those texts, each knob once):
    the grid of every knob's values over BASE (every cell trains ``default_steps``, sweep's
    --steps, where no --set steps=... is given) and the sweep's options (seeds, batch_size,
    n_eval, first_snapshot, ...)."""
    assignments = {}
    for text in sets or []:
        name, values = parse_knob(text)
        if name in assignments:
            raise ValueError(f"--set {name} is given twice")
        assignments[name] = values
    if "steps" not in assignments:
        assignments["steps"] = [default_steps]
    cells = grid(assignments, base=replace(BASE))
    names = tuple(cell_names(cells))
    return SweepSpec(cells=tuple(cells), names=names, seeds=tuple(seeds), **options)


def cell_names(cells: list[Cell], base: Cell = BASE) -> list[str]:
    """Short labels naming the knobs that differ between cells (or from the base)."""
    varied = [k for k in KNOBS if len({getattr(c, k) for c in cells}) > 1]
    if not varied:
        varied = [k for k in KNOBS if getattr(cells[0], k) != getattr(base, k)][:3] or ["n_heads"]
    return [" ".join(f"{k}={_value(getattr(c, k))}" for k in varied) for c in cells]


def _value(v) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def snapshot_steps(steps: int, first: int = 25, every: int = 0) -> list[int]:
    """first, 2 first, 4 first, ... below steps, then steps: [25, 50, ..., 800]; with
    ``every``, also every multiple of it below steps (for churn over a long run)."""
    out, s = set(), max(1, first)
    while s < steps:
        out.add(s)
        s *= 2
    if every:
        out |= set(range(every, steps, every))
    return sorted(out) + [steps]
