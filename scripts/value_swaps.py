"""The milder value edit: value vectors swapped between two heads that both count, against
averaging them over all heads, from a finished run's analysis.json files (the last step):

    python scripts/value_swaps.py runs/reproduce [more run folders]

Per cell: over the models with at least two counting heads, the mean change of l-acc (in
points) when two counting heads trade value vectors (each keeping its pattern and W_O;
averaged over the pairs of counting heads of a model), the same over pairs that read the
count the same way (same AUC sign), and the change when every head's values are replaced by
their mean over heads; 95% t intervals over models. Pair swaps are analysed for
up to 4 heads (analysis/interventions.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from minicount.analysis.semantics import two_sided
from minicount.stats import mean_ci

AUC = 0.9


def cell_rows(record: dict) -> tuple[list, list, list]:
    """Per model with two or more counting heads: the mean Δ l-acc of swapping the values of
    two counting heads, of two that also read the count the same way (same AUC sign), and of
    averaging the values over all heads."""
    swaps, same, means = [], [], []
    for m in record["members"]:
        sides = {h: two_sided(s["auc_alone"]) for h, s in enumerate(m["semantics"])}
        counting = {h for h, (a, _) in sides.items() if (a or 0) >= AUC}
        runs = m.get("interventions") or []
        pair = [r for r in runs if r["name"] == "swap_values" and set(r["heads"]) <= counting]
        if len(counting) < 2 or not pair:
            continue
        swaps.append(sum(r["delta"]["l_acc"] for r in pair) / len(pair))
        alike = [r["delta"]["l_acc"] for r in pair
                 if sides[r["heads"][0]][1] == sides[r["heads"][1]][1]]  # fmt: skip
        if alike:
            same.append(sum(alike) / len(alike))
        means += [r["delta"]["l_acc"] for r in runs if r["name"] == "mean_values"]
    return swaps, same, means


def main(argv: list[str]) -> int:
    print(
        "| run | cell | models | swap two counting heads | of the same sign (models) | "
        "average over all heads |"
    )
    print("|---|---|---|---|---|---|")
    for arg in argv:
        for path in sorted(Path(arg).glob("cells/*/analysis.json")):
            record = json.loads(path.read_text())
            swaps, same, means = cell_rows(record)
            if not swaps:
                continue
            s, o, a = (mean_ci([100 * x for x in v]) for v in (swaps, same, means))
            print(
                f"| {Path(arg).name} | {record['name']} | {s.n} | {s.fmt(1)} | {o.fmt(1)} "
                f"({o.n}) | {a.fmt(1)} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
