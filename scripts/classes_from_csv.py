"""Per-model classes of finished runs, from their heads.csv alone (no retraining):

    python scripts/classes_from_csv.py docs/measurements/knobs64_run [more run folders]

For each cell at its last step: the share of models in each class (Wilson 95%), and which
class describes the cell at the default cut-offs and at the neighbouring ones (AUC 0.8–0.99,
share 0.5–0.9). The aggregation half of the verdict needs the calibrated reference, which
runs analysed before it was added do not hold; `sweep --reanalyze` adds it where the
snapshot parameters were kept.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

from minicount.study.classes import (
    AUC_CUT,
    CLASSES,
    SHARE_CUT,
    aucs_by_model,
    class_shares,
    class_verdict,
)
from minicount.study.verdicts import SENSITIVITY, stability

SAME = {"some": "in part", "in_part": "in part"}  # both read "some heads count in most models"


def cells(folder: Path) -> dict:
    """{(name, steps, n_heads): [aucs per model]} at each cell's last step, from heads.csv."""
    rows: dict = defaultdict(list)
    for r in csv.DictReader(open(folder / "heads.csv")):
        if r["step"] != r["steps"]:
            continue
        auc = float(r["auc_two_sided"]) if r["auc_two_sided"] not in ("", "None") else None
        rows[(r["name"], int(r["steps"]), int(r["n_heads"]))].append(
            {"seed": int(r["seed"]), "step": int(r["step"]), "head": int(r["head"]),
             "auc_two_sided": auc}
        )  # fmt: skip
    return {k: list(aucs_by_model(v).values()) for k, v in rows.items()}


def main(argv: list[str]) -> int:
    cuts = [("default", AUC_CUT, SHARE_CUT)]
    cuts += [(f"AUC {a}", a, SHARE_CUT) for a in SENSITIVITY["auc"]]
    cuts += [(f"share {s}", AUC_CUT, s) for s in SENSITIVITY["share"]]
    print(
        "| run | cell | models | "
        + " | ".join(CLASSES)
        + " | "
        + " | ".join(c[0] for c in cuts)
        + " | robust |"
    )
    print("|---" * (4 + len(CLASSES) + len(cuts)) + "|")
    for arg in argv:
        for (name, _steps, H), aucs in sorted(cells(Path(arg)).items()):
            if H == 1:
                continue
            shares = class_shares(aucs)
            labels = [class_verdict(class_shares(aucs, a), s)["key"] for _, a, s in cuts]
            labels = [SAME.get(x, x) for x in labels]
            shown = [labels[0]] + ["same" if x == labels[0] else x for x in labels[1:]]
            print(
                f"| {Path(arg).name} | {name} | {len(aucs)} | "
                + " | ".join(shares[c].fmt(pct=True) for c in CLASSES)
                + " | "
                + " | ".join(shown)
                + f" | {stability(labels)['stability']} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
