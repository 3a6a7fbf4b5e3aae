"""The study's named presets: ``python -m minicount reproduce [--preset NAME]`` runs one of them
through the sweep (minicount/study/run.py), which trains, analyses and writes the report.

    quick     a smoke run for CI (seconds)
    default   laptop-sized: 8 seeds per cell, the head-count sweep, the setting closest to the
              paper and one trained 3x longer (a few minutes on 2 CPU cores)
    full      for a GPU: 64 seeds per cell over n_heads x weight decay x max_len x steps
              (1,000, 3,000 and 10,000)
"""

from __future__ import annotations

from dataclasses import replace

from .spec import BASE, SEEDS, Cell, SweepSpec, cell_names, grid


def _default() -> SweepSpec:
    steps = 600
    base = replace(BASE, steps=steps)
    cells = [
        ("H=2", replace(base, n_heads=2)),
        ("H=4", replace(base, n_heads=4)),
        ("H=8", replace(base, n_heads=8)),
        ("H=4 paper-like (max_len 64, wd 0.1)", replace(base, max_len=64, weight_decay=0.1)),
        ("H=4 3x steps", replace(base, steps=3 * steps)),
    ]
    return SweepSpec(
        cells=tuple(c for _, c in cells),
        names=tuple(n for n, _ in cells),
        seeds=SEEDS,
        batch_size=64,
        n_eval=512,
        preset="default",
    )


def _quick() -> SweepSpec:
    base = replace(BASE, max_len=6, steps=40)
    cells = [
        ("H=1", replace(base, n_heads=1)),
        ("H=2", replace(base, n_heads=2)),
        ("H=2 no BOS", replace(base, n_heads=2, bos=False)),
    ]
    return SweepSpec(
        cells=tuple(c for _, c in cells),
        names=tuple(n for n, _ in cells),
        seeds=(0, 1, 2),
        batch_size=32,
        n_eval=48,
        first_snapshot=10,
        preset="quick",
    )


def _full() -> SweepSpec:
    """Every combination, trained to 10,000 steps: at max_len 64 with weight decay the share
    of semantic heads was still rising at 3,000 steps and decided only at 10,000
    (docs/measurements/long64_run/). Each longer cell continues from its shorter twin, so
    every combination trains 10,000 steps once."""
    L = BASE.max_len
    cells = grid({"n_heads": [2, 4, 8], "weight_decay": [0.0, 0.1], "max_len": [L, 2 * L],
                  "steps": [1000, 3000, 10000]})  # fmt: skip
    return SweepSpec(
        cells=tuple(cells), names=tuple(cell_names(cells)), seeds=tuple(range(64)), preset="full"
    )


PRESETS = {"quick": _quick, "default": _default, "full": _full}


def preset(name: str, *, seeds=None, shortest_steps=None, heads=None) -> SweepSpec:
    """The named preset, with overrides where given (None = keep): ``seeds`` replaces its
    seeds; ``shortest_steps`` scales every cell's steps by one factor so that the shortest
    cell trains that many; ``heads`` keeps only the cells with those n_heads."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose from {', '.join(PRESETS)}")
    spec = PRESETS[name]()
    if seeds is not None:
        spec = replace(spec, seeds=tuple(seeds))
    if shortest_steps is not None:
        factor = shortest_steps / min(c.steps for c in spec.cells)
        cells = tuple(replace(c, steps=max(1, round(c.steps * factor))) for c in spec.cells)
        spec = replace(spec, cells=cells)
    if heads is not None:
        keep = [(n, c) for n, c in zip(spec.names, spec.cells, strict=True)
                if c.n_heads in heads]  # fmt: skip
        if not keep:
            raise ValueError(f"no cell of preset {name!r} has n_heads in {heads}")
        spec = replace(spec, names=tuple(n for n, _ in keep), cells=tuple(c for _, c in keep))
    return spec


__all__ = ["PRESETS", "Cell", "SweepSpec", "preset"]
