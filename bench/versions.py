"""Training speed of minicount at several git revisions, side by side on this machine.

    python bench/versions.py dd50cdc^ dd50cdc HEAD            # 6 rounds, 2 threads
    python bench/versions.py v0.1 HEAD --rounds 10 --threads 1

Asks "did this change make training slower?". Each revision is checked out into a
temporary git worktree; every round runs one fresh process per revision, in turn, so that a
passing load hits all of them alike. Each process trains the default model (and an ensemble
and an 8-head model) for 10 warm-up steps, then 110 and 10 steps; the per-step time is the
difference over 100 steps, so start-up and the final evaluation cancel. It prints, per row,
the median over rounds of the wall-clock and CPU milliseconds per step and the ratio to the
first revision (below 1: faster than it). Only `minicount.train` and `ModelConfig` are used,
so any revision with those can be compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROWS = (  # label, n_heads, ensemble members (0: one model), batch size
    ("4 heads, 1 model, B 256", 4, 0, 256),
    ("4 heads, 8 models, B 128", 4, 8, 128),
    ("8 heads, 1 model, B 256", 8, 0, 256),
)

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import minicount as mc
from threadpoolctl import threadpool_limits  # (not minicount.threads: old revisions lack it)

rows, out = json.loads(sys.argv[3]), {}
with threadpool_limits(int(sys.argv[2])):
    for label, heads, members, batch in rows:
        config = mc.ModelConfig(n_heads=heads)
        kw = dict(seed=list(range(members)) if members else 0, batch_size=batch, eval_every=0)
        mc.train(config, steps=10, **kw)  # warm-up
        spent = []
        for steps in (110, 10):
            wall, cpu = time.perf_counter(), time.process_time()
            mc.train(config, steps=steps, **kw)
            spent.append((time.perf_counter() - wall, time.process_time() - cpu))
        out[label] = [10 * (spent[0][i] - spent[1][i]) for i in (0, 1)]  # ms per step
print(json.dumps(out))
"""


def worktree(rev: str, root: str, repo: str) -> str:
    """A detached checkout of rev under root (git worktree), returned as its path."""
    path = os.path.join(root, f"{len(os.listdir(root))}_" + re.sub(r"[^\w.-]", "_", rev))
    subprocess.run(["git", "-C", repo, "worktree", "add", "-q", "--detach", path, rev],
                   check=True)  # fmt: skip
    return path


def one_round(paths: dict, threads: int) -> dict:
    """{rev: {row: [wall ms, cpu ms]}}, one fresh process per revision, in turn."""
    rows = json.dumps(ROWS)
    result = {}
    for rev, path in paths.items():
        command = [sys.executable, "-c", CHILD, path, str(threads), rows]
        done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=path)
        result[rev] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def quartiles(values: list) -> str:
    """'IQR a–b' of the wall times over rounds: how much one round's number can be trusted."""
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"IQR {q[0]:.2f}–{q[2]:.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/versions.py", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("revisions", nargs="+", help="git revisions; the first is the reference")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (6)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (2)")
    args = parser.parse_args(argv)
    repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    from bench import cpu_name  # minicount.threads.cpu_name, via bench/bench.py beside this

    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs; python {platform.python_version()}")
    print(f"{args.threads} thread(s), {args.rounds} interleaved rounds")
    print("load before:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    with tempfile.TemporaryDirectory() as root:
        paths = {rev: worktree(rev, root, repo) for rev in args.revisions}
        try:
            for rev, path in paths.items():
                head = subprocess.run(["git", "-C", path, "log", "-1", "--format=%h %s"],
                                      capture_output=True, text=True).stdout.strip()  # fmt: skip
                print(f"  {rev}: {head[:90]}")
            rounds = []
            for r in range(args.rounds):
                t0 = time.perf_counter()
                rounds.append(one_round(paths, args.threads))
                print(f"round {r + 1}/{args.rounds} ({time.perf_counter() - t0:.0f} s)", flush=True)
        finally:
            for path in paths.values():
                subprocess.run(["git", "-C", repo, "worktree", "remove", "--force", path])
    print("load after:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
    first = args.revisions[0]
    print("\nms per training step, median over rounds: wall / CPU summed over threads (IQR of")
    print(f"wall over rounds); ratio = wall / {first}'s wall")
    ratio_heads = ["ratio " + r for r in args.revisions[1:]]
    print(f"| row | {' | '.join(args.revisions + ratio_heads)} |")
    print("|---" * (1 + 2 * len(args.revisions) - 1) + "|")
    for label, *_ in ROWS:
        med = {rev: [statistics.median(rd[rev][label][i] for rd in rounds) for i in (0, 1)]
               for rev in args.revisions}  # fmt: skip
        spread = {rev: quartiles([rd[rev][label][0] for rd in rounds]) for rev in args.revisions}
        cells = [f"{med[rev][0]:.2f} / {med[rev][1]:.2f} ({spread[rev]})" for rev in args.revisions]
        ratios = [f"{med[rev][0] / med[first][0]:.2f}" for rev in args.revisions[1:]]
        print(f"| {' | '.join([label] + cells + ratios)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
