"""How the output layer aggregates the heads (docs/method.md §4); the logistic regression
behind it is logistic.py.

Each head's EOS contribution c_h is standardised over the evaluation positions,
z_h = c_h / σ_h, so that the trained model reads

    s = offset + Σ_h σ_h z_h          (offset = direct path + b_U[EOS])

i.e. it weights the standardised heads by α_h = σ_h. Four aggregations are compared, each on
top of the fixed offset:

    trained          the model itself (α_h = σ_h, no extra bias)
    fitted           logistic regression of y on z: weights α_h with an L2 penalty
                     (l2 / 2)|α|², and a bias that is never penalised
    uniform          the best equal vote: offset + a Σ_h z_h + b with the scale a >= 0 and
                     bias b of highest l-acc (exact in b, a searched on a grid)
    uniform_logloss  logistic regression of y on Σ_h z_h (one shared weight and a free bias)

Non-uniform aggregation shows as uniform < fitted ≈ trained.

What "uniform" means decides that answer, so there are three references (docs/method.md §4):

    σ-standardised   the uniform votes above: every head at unit variance, so a weak head
                     counts as much as a perfect one
    calibrated       each head first made a calibrated member by its solo fit: the logistic
                     regression of y on c_h alone, slope β_h and bias, with no offset (the head
                     as a stand-alone classifier); then offset + a Σ_h β_h c_h + b with one
                     shared a and b ("calibrated": a, b by log-loss, like uniform_logloss;
                     "calibrated_best": the most accurate a >= 0 and b, like uniform)
    raw logit units  the trained model itself: s = offset + Σ_h c_h reads every head with raw
                     weight 1, so it is uniform there by construction (n_eff = H)

The solo fit is made on z_h = c_h / σ_h with the same L2 strength l2 as the fitted weights
(the bias free), and β_h = β^z_h / σ_h. A head that separates the labels on its own has its
optimum at infinity without a penalty: the penalty makes its slope finite and sets its size
(the smaller l2, the steeper), so the solo slopes of perfect heads are the penalty's, not
the data's. The trained model in calibrated units is s = offset + Σ_h (1 / β_h)(β_h c_h):
its weights there are 1 / β_h.

Accuracy has a ceiling: once fitted and trained reach l-acc 1, every positive weighting of
perfect counters is perfect too, and accuracy no longer tells the weightings apart. The
mean log-loss (binary cross-entropy in nats, no penalty term) and a scale-free margin
(the MARGIN_QUANTILE quantile over the real positions of (2y - 1) s / std(s)) keep measuring.
Two cautions. The log-loss of a fitted score depends on its overall scale, and on data that
some weighting separates that scale is set by the penalty (and by how many weights carry
it: the fit spreads l2 over H weights, the log-loss uniform vote over one, the calibrated
vote over H solo slopes and a), so there the log-loss ratios compare penalties as much as
weightings; the margin is scale-free (not bias-free). And the fitted weights minimise the
penalised loss, so another weighting may reach a slightly lower unpenalised log-loss:
logloss_removed(_calibrated) can be a little below 0 when the reference is as good.

The scale search keeps a >= 0: a negative shared scale would reverse every head against the
direction the model adds it in, which is no longer a weighting of the model's heads. The
log-loss uniform weight is reported with whatever sign the fit gives it.

Keys of the dict returned per model (``aggregation_from_contributions``, ``aggregation_batched``):

    l2                 the L2 strength on the fitted weights (never on a bias)
    sigma              [H] σ_h, the std of c_h over the real positions (1 where c_h is constant)
    alpha_trained      [H] shares σ_h / Σσ of the trained weights (σ_h > 0, so sign +1)
    sign_trained       [H] all +1: the model adds every c_h as it is. Whether c_h itself points
                       towards the label is the head's AUC sign (semantics: "auc_sign")
    alpha_fitted       [H] magnitude shares |α_h| / Σ|α| (sum 1; None if every α_h = 0)
    sign_fitted        [H] sign of α_h: -1 where the fit reads the head against the model
    alpha_fitted_raw   [H] α_h, the fitted weights on z_h
    bias_fitted        the fitted bias
    uniform_alpha      1 / H, the share of every head under a uniform vote
    uniform_best       {"scale": a, "bias": b} of the most accurate uniform vote
    uniform_weight     the shared weight of the log-loss uniform fit
    bias_uniform       its bias
    trained, fitted, uniform, uniform_logloss
                       metrics dicts (l_acc, s_acc, roc_auc) of the four aggregations
    n_eff_trained      participation ratio (Σ|α|)² / Σα² of σ (1: one head, H: all equal)
    n_eff_fitted       the same of the fitted α
    converged          the fitted and the log-loss uniform fits both converged
    l2_check           one entry per strength in L2_CHECK (and l2): {"l2", "fitted" (metrics),
                       "alpha_fitted" (shares), "n_eff_fitted", "converged"}, to show whether
                       the conclusions depend on the penalty
    solo_slope         [H] β_h, the slope of head h's solo fit (y on c_h alone, no offset,
                       penalty l2 on the z-scale slope), in raw c units
    solo_bias          [H] the bias of that fit
    calibrated_weight  a, the shared weight of the log-loss fit on Σ_h β_h c_h (with the offset)
    bias_calibrated    b, its bias
    calibrated_best_vote       {"scale": a, "bias": b} of the most accurate shared a >= 0
                       and b on Σ_h β_h c_h (scales: calibrated_scale_grid)
    calibrated, calibrated_best
                       metrics dicts of offset + a Σ_h β_h c_h + b with the log-loss (a, b)
                       and with the most accurate one
    logloss            {"trained", "fitted", "uniform", "uniform_logloss", "calibrated",
                       "calibrated_best"}: mean BCE (nats, no penalty) of each score vs y over
                       the real positions
    margin             {"trained", "fitted", "uniform_logloss", "calibrated"}: the
                       MARGIN_QUANTILE quantile over the real positions of (2y - 1) s / std(s)
                       (nan where s is constant)
    error_removed      (err_uniform - err_fitted) / err_uniform, err = 1 - l_acc, of the best
                       σ-uniform vote ("uniform"); None when err_uniform = 0
    error_removed_calibrated   the same against calibrated_best
    logloss_removed    (LL_uniform_logloss - LL_fitted) / LL_uniform_logloss
    logloss_removed_calibrated the same against LL_calibrated
    n_eff_fitted_raw   participation ratio of the fitted weights in raw logit units, α_h / σ_h
                       (the trained model's are all 1 there: n_eff = H by construction)
    n_eff_fitted_calibrated    of α_h / (σ_h β_h): the fitted weights on the calibrated
                       members β_h c_h (nan if some β_h = 0)
    n_eff_trained_calibrated   of 1 / β_h: the trained model's weights on the calibrated
                       members (nan if some β_h = 0)
    converged_calibrated       the solo fits and the calibrated log-loss fit all converged
"""

from __future__ import annotations

import numpy as np

from ..backend import array_module, device_of, to_device, to_numpy
from ..data import EOS
from .attribution import eos_contributions
from .hooks import check_single
from .logistic import L2, fit_logistic_batched
from .scoring import eos_metrics

L2_CHECK = (1e-8, 1e-4, 1e-3, 1e-2, 1e-1)  # strengths of the robustness refit
SCALE_DECADES = 2.0  # the scale grid spans [min σ, max σ] widened by this many decades each way
N_SCALES, N_REFINE = 49, 17  # log-spaced scales, then a linear refinement around the best
SCAN_ELEMENTS = 1 << 21  # at most this many scores sorted at once in the threshold scan
MARGIN_QUANTILE = 0.05  # the margin of a score: this quantile of (2y - 1) s / std(s)
LIVE_SLOPE = 1e-3  # calibrated_scale_grid: heads with |β^z| below this times the largest are flat


# ----------------------------------------------------------------------------- best uniform vote


def best_threshold(v, y):
    """Most accurate rule "predict 1 where v > θ" for each row of scores v [G, A, N].

    y [G, N] labels (bool or 0/1). Sorts the scores and counts, for every split between two
    distinct values (and below or above all), the positions on their right side. Returns
    (correct [G, A] the number right, θ [G, A]: the midpoint of the split, or one below the
    lowest / above the highest score).
    """
    xp = array_module(v)
    N = v.shape[-1]
    order = xp.argsort(v, axis=-1)  # [G, A, N]
    v_sorted = xp.take_along_axis(v, order, axis=-1)  # [G, A, N]
    # the labels carried along as bytes and counted in integers: exact, and less to move
    y_full = xp.broadcast_to(xp.asarray(y).astype(xp.int8)[:, None, :], v.shape)
    y_sorted = xp.take_along_axis(y_full, order, axis=-1)  # [G, A, N]
    pos_below = xp.zeros(v.shape[:-1] + (N + 1,))  # [G, A, N+1] 1s among the lowest j
    pos_below[..., 1:] = xp.cumsum(y_sorted, axis=-1, dtype=xp.int32)
    j = xp.arange(N + 1)
    correct = (j - pos_below) + (pos_below[..., -1:] - pos_below)  # 0s below + 1s above
    edge = xp.ones(v.shape[:-1] + (1,), dtype=bool)
    split = xp.concatenate([edge, v_sorted[..., 1:] > v_sorted[..., :-1], edge], axis=-1)
    correct = xp.where(split, correct, -1.0)  # a split inside a run of ties is not a rule
    best = xp.argmax(correct, axis=-1)[..., None]  # [G, A, 1]
    padded = xp.concatenate([v_sorted[..., :1] - 1.0, v_sorted, v_sorted[..., -1:] + 1.0], -1)
    below = xp.take_along_axis(padded, best, axis=-1)[..., 0]  # [G, A] highest score left
    above = xp.take_along_axis(padded, best + 1, axis=-1)[..., 0]  # lowest score right
    lo_edge, hi_edge = best[..., 0] == 0, best[..., 0] == N
    theta = xp.where(lo_edge, above - 1.0, xp.where(hi_edge, below + 1.0, 0.5 * (below + above)))
    return xp.take_along_axis(correct, best, axis=-1)[..., 0], theta


def _scan_scales(total, offset, y, scales):
    """(correct [G, A], bias [G, A]) of the best bias for each scale of offset + a total.

    total, offset [G, N], y [G, N], scales [G, A]. Runs in chunks of scales to bound memory.
    """
    xp = array_module(total)
    G, N = total.shape
    chunk = max(1, SCAN_ELEMENTS // (G * N))
    correct, bias = [], []
    for i in range(0, scales.shape[1], chunk):
        a = scales[:, i : i + chunk]  # [G, a]
        v = offset[:, None, :] + a[:, :, None] * total[:, None, :]  # [G, a, N]
        right, theta = best_threshold(v, y)
        correct.append(right)
        bias.append(-theta)
    return xp.concatenate(correct, axis=1), xp.concatenate(bias, axis=1)


def best_uniform(total, offset, y, scales) -> dict:
    """The most accurate uniform vote offset + a total + b over the scales given and every b.

    total [G, N] = Σ_h z_h per position, offset [G, N], y [G, N], scales [G, A] (each row a
    grid of candidate a). The best b for a scale is exact (best_threshold); then the grid is
    refined linearly between the best scale's neighbours (N_REFINE points). Ties go to the
    smaller scale. Returns {"scale": [G], "bias": [G], "correct": [G] positions right}.
    """
    xp = array_module(total)
    scales = xp.sort(xp.asarray(scales, dtype=xp.float64), axis=1)  # [G, A]
    G, A = scales.shape
    rows = xp.arange(G)
    correct, bias = _scan_scales(total, offset, y, scales)  # [G, A]
    best = xp.argmax(correct, axis=1)  # [G]
    lo = scales[rows, xp.maximum(best - 1, 0)]
    hi = scales[rows, xp.minimum(best + 1, A - 1)]
    fine = lo[:, None] + (hi - lo)[:, None] * xp.linspace(0.0, 1.0, N_REFINE)  # [G, R]
    scales = xp.concatenate([scales, fine], axis=1)
    order = xp.argsort(scales, axis=1)  # equal scales give equal counts: any order will do
    scales = xp.take_along_axis(scales, order, axis=1)  # [G, A+R]
    fine_correct, fine_bias = _scan_scales(total, offset, y, fine)
    correct = xp.take_along_axis(xp.concatenate([correct, fine_correct], 1), order, axis=1)
    bias = xp.take_along_axis(xp.concatenate([bias, fine_bias], 1), order, axis=1)
    best = xp.argmax(correct, axis=1)  # [G]
    return {"scale": scales[rows, best], "bias": bias[rows, best], "correct": correct[rows, best]}


def scale_grid(sigma, extra=None):
    """[M, 1 + N_SCALES (+ E)] candidate shared scales per model: 0, the mean σ, a log grid.

    sigma [M, H]; the log grid spans [min σ, max σ] widened by SCALE_DECADES each way;
    extra [M, E] more candidates (negative ones are clipped to 0).
    """
    xp = array_module(sigma)
    lo = xp.log10(sigma.min(axis=1)) - SCALE_DECADES  # [M]
    hi = xp.log10(sigma.max(axis=1)) + SCALE_DECADES
    log_grid = 10.0 ** (lo[:, None] + (hi - lo)[:, None] * xp.linspace(0.0, 1.0, N_SCALES))
    parts = [xp.zeros((sigma.shape[0], 1)), sigma.mean(axis=1, keepdims=True), log_grid]
    if extra is not None:
        parts.append(xp.maximum(xp.asarray(extra, dtype=xp.float64), 0.0))
    return xp.concatenate(parts, axis=1)


def calibrated_scale_grid(slope_z, slope, extra=None):
    """[M, 2 + N_SCALES (+ E)] candidate shared scales a of the calibrated vote
    offset + a Σ_h β_h c_h + b: 0, a log grid and its middle, like scale_grid.

    slope_z [M, H] the solo slopes β^z_h on z_h, slope [M, H] β_h = β^z_h / σ_h. The trained
    model reads the calibrated member β_h c_h with weight 1 / β_h, so the grid spans
    [min, max] of 1 / |β_h| (as scale_grid spans σ, the trained weights on z) widened by
    SCALE_DECADES each way. Heads whose |β^z_h| is below LIVE_SLOPE times the largest are
    left out of the span: they add almost nothing to Σ β_h c_h, and their 1 / |β_h| would
    only stretch the grid (a model whose heads are all flat gets the span [1, 1]).
    extra [M, E] more candidates (negative ones are clipped to 0).
    """
    xp = array_module(slope)
    size = xp.abs(slope_z)  # [M, H]
    live = (size > 0) & (size >= LIVE_SLOPE * size.max(axis=1, keepdims=True))
    inverse = 1.0 / xp.where(live, xp.abs(slope), 1.0)  # [M, H]
    any_live = live.any(axis=1)
    lo = xp.where(any_live, xp.where(live, inverse, xp.inf).min(axis=1), 1.0)  # [M]
    hi = xp.where(any_live, xp.where(live, inverse, 0.0).max(axis=1), 1.0)
    return scale_grid(xp.stack([lo, hi], axis=1), extra)


# ----------------------------------------------------------------------------- log-loss, margin


def log_loss(scores, y):
    """[...] mean binary cross-entropy (nats) of logits scores [..., N] against labels y
    [..., N] (broadcast): softplus((1 - 2y) s), exact for any size of s."""
    xp = array_module(scores)
    return xp.logaddexp(0.0, (1.0 - 2.0 * y) * scores).mean(axis=-1)


def scale_free_margin(scores, y, q: float = MARGIN_QUANTILE):
    """[...] the q quantile (linear interpolation) over N of (2y - 1) s / std(s), scores and
    y [..., N]; nan where s is constant. Unchanged by any positive scale of s."""
    xp = array_module(scores)
    sd = scores.std(axis=-1, keepdims=True)  # [..., 1]
    signed = (2.0 * y - 1.0) * scores / xp.where(sd > 0, sd, 1.0)
    return xp.where(sd[..., 0] > 0, xp.quantile(signed, q, axis=-1), xp.nan)


def _removed(reference, fitted):
    """(reference - fitted) / reference, or None where reference is 0."""
    return (reference - fitted) / reference if reference != 0 else None


# ----------------------------------------------------------------------------- aggregation


def effective_heads(alpha) -> float:
    """Participation ratio (Σ|α|)² / Σα²: 1 when one head carries all weight, n for uniform."""
    a = np.abs(np.asarray(to_numpy(alpha), dtype=np.float64))
    return float(a.sum() ** 2 / (a**2).sum()) if (a**2).sum() > 0 else float("nan")


def shares(alpha):
    """(|α| / Σ|α| as a list, or None when every α is 0; the signs of α as a list of ±1)."""
    a = np.asarray(to_numpy(alpha), dtype=np.float64)
    total = np.abs(a).sum()
    return ((np.abs(a) / total).tolist() if total > 0 else None), np.where(a < 0, -1, 1).tolist()


def standardise(c, mask):
    """(z [..., H, B, T], σ [..., H]): c [..., H, B, T] over each head's std on the real positions.

    mask [B, T]. A head whose contribution never varies (σ = 0) keeps σ = 1 and so z = c.
    """
    xp = array_module(c)
    m = to_device(mask, device_of(c)).astype(bool)  # [B, T]
    sigma = c[..., m].std(axis=-1)  # [..., H]
    sigma = xp.where(sigma > 0, sigma, 1.0)
    return c / sigma[..., None, None], sigma


def _metrics(scores, targets, mask) -> list:
    """eos_metrics of each [B, T] slice of scores [..., B, T], nested like the leading axes."""
    scores = np.asarray(to_numpy(scores))
    if scores.ndim == 2:
        return eos_metrics(scores, targets, mask)
    return [_metrics(s, targets, mask) for s in scores]


def _fitted_weights(Z, y, off, strengths: list) -> tuple:
    """Per-head weights [M, S, H], biases [M, S] and converged flags [M, S] (host) of the
    log-loss fits of every model at every L2 strength, as one batch of M * S problems.
    Z [M, N, H] standardised contributions, y [M, N] labels, off [M, N] the direct path."""
    xp = array_module(Z)
    M, N, H = Z.shape
    S = len(strengths)
    fit = fit_logistic_batched(
        xp.broadcast_to(Z[:, None], (M, S, N, H)).reshape(M * S, N, H),
        xp.broadcast_to(y[:, None], (M, S, N)).reshape(M * S, N),
        offset=xp.broadcast_to(off[:, None], (M, S, N)).reshape(M * S, N),
        l2=xp.tile(xp.asarray(strengths), M),
    )
    fit_ok = to_numpy(fit["converged"]).reshape(M, S)
    return fit["w"].reshape(M, S, H), fit["b"].reshape(M, S), fit_ok


def _solo_fits(Z, y, l2) -> dict:
    """Every head of every model fitted alone, as one batch of M * H one-feature problems:
    y on z_h with a free bias, no offset, L2 l2 on the slope. Z [M, N, H], y [M, N].
    Returns {"w": [M, H] slopes on z, "b": [M, H], "converged": [M, H] bool (host)}."""
    xp = array_module(Z)
    M, N, H = Z.shape
    fit = fit_logistic_batched(
        xp.ascontiguousarray(Z.transpose(0, 2, 1)).reshape(M * H, N, 1),
        xp.broadcast_to(y[:, None], (M, H, N)).reshape(M * H, N),
        l2=l2,
    )
    return {
        "w": fit["w"].reshape(M, H),
        "b": fit["b"].reshape(M, H),
        "converged": to_numpy(fit["converged"]).reshape(M, H),
    }


def aggregation_batched(
    c, offset, targets, mask, *, l2: float = L2, l2_check=L2_CHECK
) -> list[dict]:
    """The comparison of docs/method.md §4 for M models at once; one dict per model (keys:
    see the module doc).

    c [M, H, B, T] head contributions, offset [M, B, T], targets [B, T, V], mask [B, T].
    The fitted weights for every model and every L2 strength come from one batched fit, the
    log-loss uniform fits from another, the solo fits of every head (M * H one-feature
    problems) from a third and the calibrated log-loss fits from a fourth; the best uniform
    and calibrated votes are searched for all models together. Entry i equals
    aggregation_from_contributions(c[i], offset[i], ...) to rounding.
    (Longer than most functions here: half of it is the result record, one key per line.)
    """
    xp = array_module(c)
    device = device_of(c)
    c = xp.asarray(c, dtype=xp.float64)
    offset = xp.asarray(offset, dtype=xp.float64)
    M, H = c.shape[:2]
    m = to_device(mask, device).astype(bool)  # [B, T]
    labels = to_device(np.asarray(to_numpy(targets))[..., EOS] > 0.5, device)  # [B, T]
    z, sigma = standardise(c, m)  # [M, H, B, T], [M, H]
    Z = z[..., m].transpose(0, 2, 1)  # [M, N, H] one row per real position
    off = offset[:, m]  # [M, N]
    y = xp.broadcast_to(labels[m].astype(xp.float64), off.shape)  # [M, N]
    strengths = sorted({float(s) for s in l2_check} | {float(l2)})
    main = strengths.index(float(l2))
    alpha, bias, fit_ok = _fitted_weights(Z, y, off, strengths)  # [M, S, H], [M, S], [M, S]
    score_fitted = (
        offset[:, None] + bias[..., None, None] + xp.einsum("msh,mhbt->msbt", alpha, z)
    )  # [M, S, B, T]

    # uniform votes: the log-loss fit of one shared weight, and the most accurate one
    total = Z.sum(axis=2)  # [M, N]
    uni = fit_logistic_batched(total[..., None], y, offset=off, l2=l2)
    w_uni, b_uni = uni["w"][:, 0], uni["b"]  # [M], [M]
    best = best_uniform(total, off, y, scale_grid(sigma, w_uni[:, None]))
    z_total = z.sum(axis=1)  # [M, B, T]
    score_logloss = offset + b_uni[:, None, None] + w_uni[:, None, None] * z_total  # [M, B, T]
    score_best = (offset + best["scale"][:, None, None] * z_total) + best["bias"][:, None, None]
    score_trained = offset + c.sum(axis=1)  # [M, B, T]

    # calibrated members: every head's solo fit (one batch), then one shared weight on Σ β c
    solo = _solo_fits(Z, y, l2)
    slope = solo["w"] / sigma  # [M, H] β_h in raw c units
    cal_total = (Z * solo["w"][:, None, :]).sum(axis=2)  # [M, N] Σ_h β_h c_h = Σ_h β^z_h z_h
    cal = fit_logistic_batched(cal_total[..., None], y, offset=off, l2=l2)
    w_cal, b_cal = cal["w"][:, 0], cal["b"]  # [M], [M]
    cal_grid = calibrated_scale_grid(solo["w"], slope, w_cal[:, None])
    cal_best = best_uniform(cal_total, off, y, cal_grid)
    z_cal = xp.einsum("mh,mhbt->mbt", solo["w"], z)  # [M, B, T]
    score_cal = offset + b_cal[:, None, None] + w_cal[:, None, None] * z_cal
    a_best, b_best = cal_best["scale"][:, None, None], cal_best["bias"][:, None, None]
    score_cal_best = (offset + a_best * z_cal) + b_best

    # log-loss and margin of every score over the real positions, all models at once
    scored = {"trained": score_trained, "fitted": score_fitted[:, main], "uniform": score_best,
              "uniform_logloss": score_logloss, "calibrated": score_cal,
              "calibrated_best": score_cal_best}  # fmt: skip
    real = xp.stack([v[:, m] for v in scored.values()], axis=1)  # [M, K, N]
    losses = to_numpy(log_loss(real, y[:, None]))  # [M, K]
    margined = ("trained", "fitted", "uniform_logloss", "calibrated")
    at = [list(scored).index(k) for k in margined]
    margins = to_numpy(scale_free_margin(real[:, at], y[:, None]))  # [M, 4]
    slope_h, slope_z = to_numpy(slope), to_numpy(solo["w"])  # [M, H]
    solo_bias = to_numpy(solo["b"])

    fitted_metrics = _metrics(score_fitted, targets, mask)  # [M][S]
    out = []
    for i in range(M):
        sigma_i = np.asarray(to_numpy(sigma[i]))
        alpha_i = np.asarray(to_numpy(alpha[i]))  # [S, H]
        share, sign = shares(alpha_i[main])
        out.append({
            "l2": float(l2),
            "sigma": sigma_i.tolist(),
            "alpha_trained": shares(sigma_i)[0],
            "sign_trained": [1] * H,
            "alpha_fitted": share,
            "sign_fitted": sign,
            "alpha_fitted_raw": alpha_i[main].tolist(),
            "bias_fitted": float(bias[i, main]),
            "uniform_alpha": 1.0 / H,
            "uniform_best": {"scale": float(best["scale"][i]), "bias": float(best["bias"][i])},
            "uniform_weight": float(w_uni[i]),
            "bias_uniform": float(b_uni[i]),
            "trained": eos_metrics(score_trained[i], targets, mask),
            "fitted": fitted_metrics[i][main],
            "uniform": eos_metrics(score_best[i], targets, mask),
            "uniform_logloss": eos_metrics(score_logloss[i], targets, mask),
            "n_eff_trained": effective_heads(sigma_i),
            "n_eff_fitted": effective_heads(alpha_i[main]),
            "converged": bool(fit_ok[i, main] and bool(uni["converged"][i])),
            "l2_check": [
                {
                    "l2": s,
                    "fitted": fitted_metrics[i][j],
                    "alpha_fitted": shares(alpha_i[j])[0],
                    "n_eff_fitted": effective_heads(alpha_i[j]),
                    "converged": bool(fit_ok[i, j]),
                }
                for j, s in enumerate(strengths)
            ],
        })  # fmt: skip
        out[i].update(_calibrated_record(
            out[i],
            alpha_i[main] / sigma_i,
            slope_z[i],
            slope_h[i],
            dict(zip(scored, losses[i].tolist(), strict=True)),
            dict(zip(margined, margins[i].tolist(), strict=True)),
            eos_metrics(score_cal[i], targets, mask),
            eos_metrics(score_cal_best[i], targets, mask),
        ))  # fmt: skip
        out[i].update({
            "solo_bias": solo_bias[i].tolist(),
            "calibrated_weight": float(w_cal[i]),
            "bias_calibrated": float(b_cal[i]),
            "calibrated_best_vote": {"scale": float(cal_best["scale"][i]),
                                     "bias": float(cal_best["bias"][i])},
            "converged_calibrated": bool(solo["converged"][i].all() and bool(cal["converged"][i])),
        })  # fmt: skip
    return out


def _calibrated_record(row, raw, slope_z, slope, losses, margins, calibrated, best) -> dict:
    """The ceiling-free measures and the calibrated reference of one model's record: row
    holds the existing metrics; raw [H] the fitted weights in raw units α_h / σ_h; slope_z
    and slope [H] the solo slopes on z_h and on c_h; losses and margins by aggregation."""
    with np.errstate(divide="ignore", invalid="ignore"):  # a flat head (β = 0): n_eff nan
        n_eff_cal = effective_heads(raw / slope) if np.all(slope != 0) else float("nan")
        n_eff_trained_cal = effective_heads(1.0 / slope) if np.all(slope != 0) else float("nan")
    err = {k: 1.0 - m["l_acc"] for k, m in
           (("uniform", row["uniform"]), ("fitted", row["fitted"]), ("best", best))}  # fmt: skip
    return {
        "solo_slope": slope.tolist(),
        "calibrated": calibrated,
        "calibrated_best": best,
        "logloss": losses,
        "margin": margins,
        "error_removed": _removed(err["uniform"], err["fitted"]),
        "error_removed_calibrated": _removed(err["best"], err["fitted"]),
        "logloss_removed": _removed(losses["uniform_logloss"], losses["fitted"]),
        "logloss_removed_calibrated": _removed(losses["calibrated"], losses["fitted"]),
        "n_eff_fitted_raw": effective_heads(raw),
        "n_eff_fitted_calibrated": n_eff_cal,
        "n_eff_trained_calibrated": n_eff_trained_cal,
    }


def aggregation_from_contributions(
    c, offset, targets, mask, *, l2: float = L2, l2_check=L2_CHECK
) -> dict:
    """The comparison of docs/method.md §4 (module doc keys) from c [H, B, T] and offset [B, T]."""
    return aggregation_batched(c[None], offset[None], targets, mask, l2=l2, l2_check=l2_check)[0]


def aggregation_weights(params: dict, tokens, targets, mask, config, *, l2: float = L2) -> dict:
    """Standardised contributions, fitted vs uniform vs trained aggregation (see module doc).

    tokens [B, T] on the parameters' device, targets [B, T, V], mask [B, T]. One-layer
    attention-only models only (raises ValueError otherwise).
    """
    check_single(params)
    c, offset = eos_contributions(params, tokens, config)  # [H, B, T], [B, T]
    return aggregation_from_contributions(c, offset, targets, mask, l2=l2)
