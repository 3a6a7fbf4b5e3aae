"""The text ``python -m minicount analyze`` prints for one analysis record: per model its
metrics and aggregation, per head its semantics, weights and attention ratios. Its rows and
cut-offs are study.rows's, as in a sweep's tables."""

from __future__ import annotations

from .rows import BALANCED_W01, SEMANTIC_AUC, SUPPRESSED_W02, head_rows, model_row


def analysis_summary(result: dict) -> str:
    """Plain-text tables of ``python -m minicount analyze``: per model, its metrics and the
    aggregation; per head, semantics, syntax, weights and attention ratios."""
    lines = [
        f"{result['checkpoint']}: {len(result['members'])} model(s), "
        f"{result['n_eval']} held-out strings of up to {result['max_len']} symbols"
    ]
    for m in result["members"]:
        H = m["config"]["n_heads"]
        knobs = {"n_heads": H}
        if not m.get("exact"):
            lines += [
                "",
                f"model {m['member']}: l-acc {m['metrics']['l_acc']:.4f}  s-acc "
                f"{m['metrics']['s_acc']:.4f}  ROC AUC {m['metrics']['roc_auc']:.4f}",
                f"  (no per-head decomposition: {m.get('exact_problem')})",
            ]
            continue
        heads = head_rows(knobs, m["member"], 0, m)
        row = model_row(knobs, m["member"], 0, m, heads)
        lines += [
            "",
            f"model {m['member']}: l-acc {row['l_acc']:.4f}  s-acc {row['s_acc']:.4f}"
            f"  ROC AUC {row['roc_auc']:.4f}  |  fitted weights {_f(row['fitted_l_acc'])}"
            f"  best uniform {_f(row['uniform_l_acc'])}  gap {_f(row['gap'])}"
            f"  n_eff {_f(row['n_eff_fitted'], 2)} of {H}",
        ]
        lines.append(
            "  head  AUC (sign)  semantic  counting  alone l-acc  weight share"
            "   w_01     w_02     BOS"
        )
        for r in heads:
            sign = {1: "+", -1: "-"}.get(r["auc_sign"], " ")
            lines.append(
                f"  {r['head']:>4}  {_f(r['auc_two_sided'])} ({sign})   "
                f"{'yes' if r['semantic'] else 'no':<8}  {'yes' if r['counting'] else 'no':<8}  "
                f"{_f(r['solo_l_acc']):>11}  {_f(r['fitted_share']):>12}  {_g(r['w_01']):>7}  "
                f"{_g(r['w_02']):>7}  {_f(r['bos_weight'])}"
            )
    lines += [
        "",
        f"semantic: max(AUC, 1 − AUC) ≥ {SEMANTIC_AUC} for the head's EOS contribution "
        f"alone; counting: also w_01 in {list(BALANCED_W01)} and w_02 < {SUPPRESSED_W02} "
        "(docs/method.md)",
    ]
    return "\n".join(lines)


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _g(x) -> str:
    return "–" if x is None else f"{x:.3g}"
