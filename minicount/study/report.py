"""The sweep's report (Markdown): formatting only. Every number comes from rows.py and
verdicts.py; each section of the report is one small function; the figures it links are
drawn by figures.py.

It returns text and writes nothing.
"""

from __future__ import annotations

from .classes import CLASSES, SHARE_CUT
from .rows import BALANCED_W01, SEMANTIC_AUC, SUPPRESSED_W02
from .verdicts import DOMINANT_N_EFF, GAP, MARGIN_RATIO, MOST_HEADS

# ----------------------------------------------------------------------------- report


def cell_text(text) -> str:
    """A Markdown table cell: '|' escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(cell_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell_text(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _short_answer(results: dict) -> str:
    lines = ["## Short answer", ""]
    lines += [f"- {s}" for s in results["short_answer"]] or ["- (no cell with several heads)"]
    lines += ["", "Each model is classed from its own heads first (*every* head counts, "
              "*some*, *one* head carries the decision, *none*); a cell's label is the class "
              "that holds in most of its models (the Wilson 95% interval of its share above "
              f"{SHARE_CUT}), then whether equal weights of calibrated heads suffice. Means "
              "over seeds carry 95% t intervals, shares of models Wilson intervals. A verdict "
              "is 'undecided' when an interval straddles (or touches) the cut-off of a rule it "
              "needs; the rules are listed under *Verdicts*, and *Sensitivity* shows each "
              "label under the neighbouring cut-offs. Definitions: docs/method.md "
              "in the repository, and the glossary at the end.", ""]  # fmt: skip
    return "\n".join(lines)


def _what_was_run(results: dict) -> str:
    spec, meta = results["spec"], results["meta"]
    rows = []
    for name, cell in zip(spec["names"], spec["cells"], strict=True):
        t = meta["seconds"].get(name, {})
        rows.append([name, cell["n_heads"], cell["d_model"], cell["d_head"], cell["max_len"],
                     cell["weight_decay"], "on" if cell["bos"] else "off", f"{cell['p2']:.3g}",
                     cell["steps"], cell["lr"], cell.get("schedule", "constant"),
                     "shared" if cell.get("shared_data") else "per seed",
                     f"{t.get('train', 0):.1f} s / {t.get('analysis', 0):.1f} s"])  # fmt: skip
    seeds = spec["seeds"]
    return "\n".join([
        "## What was run", "",
        f"Command: `{meta['command'] or '(API call)'}` on {meta['device']}"
        + (f" (preset '{spec['preset']}')" if spec["preset"] else "") + f", finished "
        f"{meta['finished']}. {len(seeds)} seeds per cell ({seeds[0]}–{seeds[-1]}), trained "
        f"together as one ensemble; batch {spec['batch_size']} strings per step per model; "
        f"{spec['n_eval']} held-out strings analysed at steps {spec['first_snapshot']}, "
        f"{2 * spec['first_snapshot']}, ... and the last"
        + (f", and every {spec['snapshot_every']:,}" if spec.get("snapshot_every") else "")
        + (f". {meta['reanalyzed']}" if meta.get("reanalyzed") else "") + ".", "",
        table(["cell", "n_heads", "d_model", "d_head", "max_len", "weight decay", "BOS",
               "share of 2s", "steps", "lr", "schedule", "batches", "train / analysis time"],
              rows), "",
    ])  # fmt: skip


def _mark(holds) -> str:
    return {True: "yes", False: "no", None: "straddles"}[holds]


def _verdicts(results: dict) -> str:
    rows = []
    for name, v in results["verdicts"].items():
        rules = "; ".join(f"{r['rule']}: {r['shown']} → {_mark(r['holds'])}" for r in v["rules"])
        rows.append([name, v["label"], rules or "–"])
    old = []
    for name, v in (results.get("mean_verdicts") or {}).items():
        rules = "; ".join(f"{r['rule']}: {r['shown']} → {_mark(r['holds'])}" for r in v["rules"])
        old.append([name, v["label"], rules or "–"])
    return "\n".join([
        "## Verdicts: compete or cooperate?", "",
        "**From per-model classes** (the primary result). A class describes a cell when the "
        f"Wilson 95% interval of its share of models lies above {SHARE_CUT}; when no class "
        "does but the models outside *every* are the majority, *some heads count*. Then, over "
        "the models where every head counts (when that class describes the cell) or over all "
        "models: **E** equal weights of calibrated heads lose accuracy (fitted − equal l-acc "
        f"> {GAP}); **M** they lose margin (geometric mean of fitted / equal 5% margin > "
        f"{MARGIN_RATIO}), which still measures when every weighting is right. E or M → *weighted "
        "unequally*; neither → *equal weights suffice*.", "",
        table(["cell", "verdict", "rules (value [95% interval] → holds?)"], rows), "",
        "**From means over seeds** (the earlier rule, kept for comparison: it averages over "
        "models of different classes and measures uniformity on σ-standardised heads by "
        "l-acc alone, which has a ceiling). Rules: **A** most heads carry the count (mean "
        f"share of semantic heads > {MOST_HEADS}); **C** equal weights lose accuracy (fitted "
        f"− best uniform l-acc > {GAP}); **D** one head carries the decision (n_eff of the "
        f"fitted weights < {DOMINANT_N_EFF}). D → *compete*; else A and C → *every head "
        "counts, weighted unequally*; A alone → *a pseudo-ensemble with equal weights*; C "
        "alone → *some heads count, weighted unequally*; neither → *some heads count, equal "
        "weights suffice*.", "",
        table(["cell", "verdict", "rules (value [95% interval] → holds?)"], old), "",
    ])  # fmt: skip


def _classes(results: dict, stats: dict) -> str:
    rows = []
    for name, s in stats.items():
        if s["n_heads"] == 1:
            continue
        rows.append([name, s["n_seeds"]] + [s[f"class_{c}"].fmt(pct=True) for c in CLASSES]
                    + [s["semantic_fraction"].fmt(pct=True)])  # fmt: skip
    return "\n".join([
        "## Per-model classes (last step)", "",
        f"Share of models (Wilson 95% interval) whose heads all count (max(AUC, 1 − AUC) ≥ "
        f"{SEMANTIC_AUC}), two or more but not all, exactly one, or none; beside it the mean "
        "share of semantic heads per model, which mixes the classes.", "",
        table(["cell", "models", "every", "some", "one", "none", "semantic heads (mean)"],
              rows), "",
    ])  # fmt: skip


def _references(stats: dict) -> str:
    rows = []
    for name, s in stats.items():
        if s["n_heads"] == 1:
            continue
        rows.append([
            name, s["gap"].fmt(), s["gap_calibrated"].fmt(), s["margin_ratio"].fmt(2),
            s["margin_ratio_calibrated"].fmt(2), s["logloss_ratio"].fmt(),
            s["logloss_ratio_calibrated"].fmt(), s["n_eff_fitted"].fmt(2),
            s["n_eff_fitted_calibrated"].fmt(2), s["n_eff_fitted_raw"].fmt(2),
            s["n_eff_trained"].fmt(2), s["n_eff_trained_calibrated"].fmt(2),
        ])  # fmt: skip
    return "\n".join([
        "## What \"uniform\" means: three references", "",
        "Equal weights on σ-standardised heads (*σ*: a weak head gets the same unit variance "
        "as a perfect one), on calibrated heads (*cal*: each head scaled by its own solo "
        "logistic slope, the natural ensemble of calibrated members; the reference the "
        "verdict uses) and in raw logit units (where the trained model is uniform by "
        "construction, so only n_eff is shown). *gap*: fitted − best equal-weight l-acc; "
        "*margin ratio*: fitted / equal-weight 5% quantile of the signed score over its sd "
        "(geometric mean, t interval on the log scale); "
        "*log-loss ratio*: equal-weight / fitted cross-entropy (median and IQR over seeds; "
        "on separable heads both are set by the fit's L2 penalty, so read the margin there); "
        "*n_eff*: effective number of heads of the fitted weights on z (σ), in calibrated and "
        "in raw units, and of the trained model's own head scales on z and in calibrated "
        "units. Means over seeds with 95% t intervals.", "",
        table(["cell", "gap σ", "gap cal", "margin ratio σ", "margin ratio cal", "log-loss ratio σ",
               "log-loss ratio cal", "n_eff fitted σ", "n_eff fitted cal", "n_eff fitted raw",
               "n_eff trained σ", "n_eff trained cal"], rows), "",
    ])  # fmt: skip


def _sensitivity(results: dict) -> str:
    sens = results.get("sensitivity") or {}
    if not sens:
        return ""
    columns = list(next(iter(sens.values()))["labels"])
    rows = [[name] + [s["labels"][c] if c == "default" or s["labels"][c] !=
                      s["labels"]["default"] else "same" for c in columns]
            + [{"robust": "yes", "firm": "yes, or undecided", "flips": "**flips**"}[
                s["stability"]]] for name, s in sens.items()]  # fmt: skip
    return "\n".join([
        "## Sensitivity: each label under neighbouring cut-offs", "",
        f"One cut-off changed at a time from its default (AUC {SEMANTIC_AUC}, share "
        f"{SHARE_CUT}, gap {100 * GAP:g} points); *same* where the label does not move. *robust*: "
        "*yes* when no neighbour moves it, *yes, or undecided* when a stricter cut-off only "
        "leaves it open, **flips** when a neighbour gives another label: such a label is not "
        "to be quoted without its cut-off.", "",
        table(["cell"] + columns + ["robust"], rows), "",
    ])  # fmt: skip


def _churn(results: dict) -> str:
    churn = results.get("churn") or {}
    rows, limits = [], []
    for name, c in churn.items():
        steps = sorted(c["shares"], key=int)
        if len(steps) < 2:
            continue
        shares = ", ".join(f"{s}: {c['shares'][s]['every'].fmt(pct=True)}" for s in steps[-4:])
        h = c["churn_last_half"]
        rows.append(
            [
                name,
                shares,
                f"{h['left']} left, {h['entered']} entered "
                f"({h['from']}–{h['to']}, {h['snapshots']} snapshots)",
                "–" if h["left_per_10k"] is None else f"{h['left_per_10k']:.0%}",
                ", ".join(
                    f"{k} −{v['left']}/+{v['entered']}"
                    for k, v in (c.get("churn_by_class") or {}).items()
                ),
            ]
        )
        if c.get("limit"):
            lim = c["limit"]
            conds = "; ".join(
                f"{k}: {'yes' if v else 'no'}"
                for k, v in {**lim["limit"], **lim["mixture"]}.items()
            )
            limits.append([name, f"**{lim['outcome']}**", conds])
    if not rows:
        return ""
    out = [
        "## Classes through training: churn",
        "",
        "Share of models in *every* at the last snapshots (Wilson 95%), and the models that "
        "left or entered *every* between consecutive snapshots over the last half of the run "
        "(left per 10,000 steps as a share of the models); and for each class the models that "
        "left (−) and entered (+) it over the same snapshots.",
        "",
        table(
            [
                "cell",
                "share in every",
                "churn (last half)",
                "left per 10k steps",
                "each class (last half)",
            ],
            rows,
        ),
        "",
    ]
    if limits:
        out += [
            "The pre-registered rule of docs/findings.md (*is every head counting the limit?*):",
            "",
            table(["cell", "outcome", "conditions"], limits),
            "",
        ]
    return "\n".join(out)


def _numbers(results: dict, stats: dict) -> str:
    rows = []
    for name, s in stats.items():
        rows.append([name, s["l_acc"].fmt(), s["s_acc"].fmt(), s["fitted_l_acc"].fmt(),
                     s["uniform_l_acc"].fmt(), s["gap"].fmt(), s["n_eff_fitted"].fmt(2),
                     s["semantic_fraction"].fmt(pct=True), s["reversed_fraction"].fmt(pct=True),
                     s["counting_heads"].fmt(2), s["top_w_01"].fmt(), s["top_w_02"].fmt(),
                     s["long_l_acc"].fmt()])  # fmt: skip
    return "\n".join([
        "## The numbers (last step)", "",
        "Means over seeds with 95% t intervals (shares of heads clipped to [0, 1]); w_01 and "
        "w_02 are ratios, so they are given as the median and interquartile range over "
        "seeds (log scale).", "",
        table(["cell", "l-acc", "s-acc", "fitted l-acc", "best uniform l-acc", "gap", "n_eff",
               "semantic heads", "of them reversed", "counting heads / model", "top head w_01",
               "top head w_02", "l-acc on longer strings"], rows), "",
    ])  # fmt: skip


def _l2(results: dict) -> str:
    l2 = results.get("l2") or {}
    verdicts = l2.get("verdicts") or {}
    if not verdicts:
        return ""
    strengths = list(verdicts)
    names = [n for n, v in results["verdicts"].items() if not v["label"].startswith("n/a")
             and any(n in verdicts[k] for k in strengths)]  # fmt: skip

    def cell(entry):
        if entry is None:
            return "–"
        mark = "" if entry["fit_ok"] else " ‡"
        return f"{entry['label']} (fitted l-acc {entry['fitted_l_acc']:.3f}{mark})"

    rows = [[n] + [cell(verdicts[k].get(n)) for k in strengths] for n in names]
    ok = [[verdicts[k][n]["label"] for k in strengths if n in verdicts[k]
           and verdicts[k][n]["fit_ok"]] for n in names]  # fmt: skip
    agree = all(len(set(labels)) <= 1 for labels in ok)
    return "\n".join([
        "## Does the verdict hang on the L2 penalty?", "",
        f"The fitted weights carry an L2 penalty of {l2.get('used')} on the weights (never on "
        "the bias). Below, every cell is refitted at each strength (the best uniform weighting "
        "does not depend on it). ‡ marks a strength at which the penalty costs the fitted "
        f"weighting more than {2 * GAP} l-acc against the trained model: there the gap "
        "measures the penalty, not the heads. Where the fit is not so crippled the verdicts "
        + ("are the same at every strength." if agree else "differ: read those cells with "
           "care."), "",
        table(["cell"] + [f"L2 = {k}" for k in strengths], rows), "",
    ])  # fmt: skip


def _claims(results: dict) -> str:
    rows = [[c["claim"], c["status"], c["rule"], c["evidence"]] for c in results["claims"]]
    return "\n".join([
        "## Against the paper's claims", "",
        "Each claim is tested in every cell with several heads by its rule: *supported* when "
        "every cell's interval clears the cut-off, *not supported* when every cell's interval "
        "lies on the other side, *undecided* when intervals straddle it, and *mixed* with the "
        "count of each when cells differ. A claim that holds in this model by its "
        "construction is labelled so.", "",
        table(["claim", "status", "rule", "evidence per cell (mean [95% interval])"], rows), "",
    ])  # fmt: skip


def _figures(figures: list[tuple]) -> str:
    lines = ["## Figures", ""]
    for file, caption in figures:
        lines += [f"![{cell_text(caption)}](figures/{file})", "", f"*{caption}*", ""]
    return "\n".join(lines)


GLOSSARY = f"""## Glossary

- **l-acc**: share of positions whose EOS decision (EOS logit > 0) is right; **s-acc**: share
  of strings right at every position; **ROC AUC**: threshold-free separation of the classes.
- **c_h**: head h's contribution to the EOS logit (its output through the unembedding); with
  one attention-only layer the EOS logit is exactly the direct path plus Σ_h c_h.
- **semantic head**: max(AUC, 1 − AUC) of c_h alone ≥ {SEMANTIC_AUC}; *reversed* when AUC < 0.5.
- **counting head**: semantic, with w_01 in {list(BALANCED_W01)} and w_02 < {SUPPRESSED_W02}.
- **w_01, w_02**: mean attention on one key of token 1 (resp. 2) over that on one key of
  token 0; 1 = weighed alike, small = suppressed.
- **fitted weights α_h**: logistic regression of the label on the standardised c_h (free bias,
  stated L2 on the weights); **share** = |α_h| / Σ|α|; **n_eff** = (Σ|α|)² / Σα².
- **best uniform weighting**: one shared scale and bias on Σ_h c_h/σ_h, chosen for the highest
  l-acc; **gap** = fitted − best uniform l-acc.
"""


def render(results: dict, stats: dict, figures: list[tuple]) -> str:
    """The report as Markdown."""
    return "\n".join([
        "# Do attention heads compete or cooperate when counting? — minicount sweep", "",
        _short_answer(results), _verdicts(results), _classes(results, stats),
        _references(stats), _sensitivity(results), _churn(results), _l2(results),
        _numbers(results, stats),
        _claims(results),
        _what_was_run(results), _figures(figures), GLOSSARY,
    ])  # fmt: skip
