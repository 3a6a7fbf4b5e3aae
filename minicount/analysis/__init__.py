"""Instruments that read a trained model without changing it (docs/method.md §4), one module each:

    attribution       head_logit_contributions, eos_contributions (direct logit attribution)
    patterns          attention_patterns, plot_patterns
    ablation          ablated_logits, ablation_study (zero / mean; only, leave-out, subsets)
    semantics         head_semantics (per-head ROC AUC vs solo and n_heads-scaled accuracy)
    logistic          fit_logistic, fit_logistic_batched (batched damped Newton, bias free)
    aggregation       aggregation_weights (fitted vs uniform vs trained)
    attention_stats   score_table, attention_stats (w_01, w_02, weight on BOS)
    interventions     force_weight_hook, intervention_study (edited attention / values)
    linear            linear_fit (linear read-outs of the head contributions)
    analyze           analyze_model: all of the above as one JSON-ready dict
    ensemble          analyze_ensemble: analyze_model for all members of an ensemble at once;
                      analyze_members: the one or the other for chosen members of a checkpoint

Every function but analyze_ensemble takes a single model's params (member i of an
ensemble: minicount.member(params, i)) and edits activations only through the forward pass's hooks.

Nothing here writes files or global state; the instruments return new values.
"""

from ..record import jsonable  # re-exported: the one JSON cleaner lives in minicount.record
from .ablation import ablated_logits, ablation_study, result_means
from .aggregation import aggregation_weights
from .analyze import analyze_model
from .attention_stats import attention_stats, score_table
from .attribution import eos_contributions, head_logit_contributions
from .ensemble import analyze_ensemble
from .interventions import force_weight_hook, intervention_study
from .linear import linear_fit
from .logistic import fit_logistic
from .patterns import attention_patterns, plot_patterns
from .semantics import head_semantics

__all__ = [
    "ablated_logits", "ablation_study", "aggregation_weights", "analyze_ensemble", "analyze_model",
    "attention_patterns", "attention_stats", "eos_contributions", "fit_logistic",
    "force_weight_hook", "head_logit_contributions", "head_semantics", "intervention_study",
    "jsonable", "linear_fit", "plot_patterns", "result_means", "score_table",
]  # fmt: skip
