"""Count01: strings over {0,1,2} with more 1s than 0s, posed as next-set prediction.

A sequence is ``BOS w``. At position t the model has read the prefix w[1..t] and predicts
the set of tokens that may come next in a string of the language:

    target[t] = (1, 1, 1, 0, y_t, 0)      over (0, 1, 2, BOS, EOS, PAD)
    y_t       = [#1(w[1..t]) > #0(w[1..t])]   (may the string end here?)

Symbols can always come next (any prefix can be completed), EOS only once the 1s lead.
Without BOS (``bos=False``) position t holds the (t+1)-th symbol and predicts after it.

Everything here is host-side NumPy: data is drawn on the host so that one seed gives the
same batches on every backend; move batches to the GPU with ``backend.to_device``.

Random draws come only from the numpy Generator a caller passes in (or one seeded here
from the config): no global random state, no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import limits
from .checks import check_bool, check_int, check_probs
from .limits import MAX_STRING_LEN
from .threads import default_threads, pool

# token ids
ZERO, ONE, TWO, BOS, EOS, PAD = 0, 1, 2, 3, 4, 5
VOCAB = ("0", "1", "2", "BOS", "EOS", "PAD")
V = len(VOCAB)
SYMBOLS = "012"
UNIFORM = (1 / 3, 1 / 3, 1 / 3)  # P(0), P(1), P(2): the default symbol probabilities


def check_token_ids(tokens, name: str = "tokens") -> np.ndarray:
    """A host array of token ids, checked to be integers in 0..V-1 (move CuPy arrays first)."""
    try:
        ids = np.asarray(tokens)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an array of token ids in 0..{V - 1}") from None
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name}: token ids must be integers in 0..{V - 1}, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise ValueError(f"{name}: token ids must lie in 0..{V - 1}, got {ids.min()}..{ids.max()}")
    return ids


def check_batch_memory(n_strings: int, n_pos: int) -> None:
    """Refuse (ValueError naming the limit) a batch of n_strings x n_pos too big for memory:
    tokens, targets, mask and the sampler's work arrays, about 80 bytes a position."""
    limits.check_memory(80 * n_strings * n_pos, f"a batch of {n_strings} strings of {n_pos}")


def in_count01(w: str) -> bool:
    """Membership by definition: a non-empty string over {0,1,2} with more 1s than 0s."""
    if not isinstance(w, str):
        raise ValueError(f"expected a string of 0/1/2, got {type(w).__name__}")
    bad = set(w) - set(SYMBOLS)
    if bad:
        raise ValueError(f"Count01 strings use only the symbols 0, 1, 2; got {sorted(bad)!r}")
    return len(w) > 0 and w.count("1") > w.count("0")


def encode(w: str, *, bos: bool = True) -> np.ndarray:
    """'0121' -> array([3, 0, 1, 2, 1]) (BOS first unless bos=False). int64 [len(w) + bos]."""
    if not isinstance(w, str):
        raise ValueError(f"encode expects a string of 0/1/2, got {type(w).__name__}")
    bad = sorted(set(w) - set(SYMBOLS))
    if bad:
        raise ValueError(f"encode: Count01 strings use only the symbols 0, 1, 2; got {bad!r}")
    ids = np.frombuffer(w.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("0")
    return np.concatenate([[BOS], ids]).astype(np.int64) if bos else ids


def decode(tokens) -> str:
    """Token ids -> the string of symbols; BOS and PAD are dropped, EOS ends the string.

    Accepts a 1-D array or list of ids (a NumPy array; move CuPy arrays to the host first).
    """
    ids = check_token_ids(tokens, "decode")
    if ids.ndim != 1:
        raise ValueError(f"decode expects a 1-D sequence of token ids, got shape {ids.shape}")
    out = []
    for i in ids.tolist():
        if i == EOS:
            break
        if i < 3:
            out.append(SYMBOLS[i])
    return "".join(out)


def next_set_targets(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Targets and mask for a batch of token ids.

    tokens [B, T] (right-padded with PAD) -> targets [B, T, V] float32, mask [B, T] bool.
    """
    tokens = check_token_ids(tokens)
    if tokens.ndim < 1:
        raise ValueError("tokens must have a position axis, got a scalar")
    mask = tokens != PAD  # [B, T]
    step = (tokens == ONE).astype(np.int32) - (tokens == ZERO)  # [B, T]: +1 for a 1, -1 for a 0
    lead = np.cumsum(step, axis=-1)  # [B, T] #1s - #0s so far
    # each position's target is one of three rows: padding, "a symbol next", "a symbol or EOS"
    kind = mask * (1 + (lead > 0))  # [B, T] in 0..2
    targets = np.take(_TARGET_ROWS, kind, axis=0)  # [B, T, V]
    return targets, mask


_TARGET_ROWS = np.array(
    [[0, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 1, 0]], dtype=np.float32
)  # [3, V]


def sample_strings(
    n: int,
    max_len: int,
    rng: np.random.Generator,
    *,
    probs=UNIFORM,
    min_len: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw n strings of Count01, vectorised, by rejection.

    Lengths are uniform on min_len..max_len, symbols i.i.d. with probabilities probs; a draw
    is kept only if it has more 1s than 0s. Returns symbols [n, max_len] int64 (junk past
    each length) and lengths [n].
    """
    n, max_len = check_int("n", n, 0), check_int("max_len", max_len, 1)
    min_len = check_int("min_len", min_len, 1)
    if min_len > max_len:
        raise ValueError(f"min_len must be <= max_len={max_len}, got {min_len}")
    check_batch_memory(max(64, 3 * n), max_len)  # the first round of rejection sampling
    cdf = np.cumsum(check_probs(probs))
    kept_sym, kept_len, have = [], [], 0
    while have < n:  # rounds of rejection sampling, each one vectorised over many strings
        m = max(64, 3 * (n - have))
        lengths = rng.integers(min_len, max_len + 1, size=m)
        u = rng.random((m, max_len))  # [m, max_len] uniform on [0, 1)
        # inverse CDF: the symbol is the number of cdf steps at or below u (cdf[2] = 1 > u)
        symbols = (u >= cdf[0]).astype(np.int64) + (u >= cdf[1])  # [m, max_len] in 0..2
        real = np.arange(max_len) < lengths[:, None]  # [m, max_len]
        step = (symbols == ONE).astype(np.int8) - (symbols == ZERO)  # +1 for a 1, -1 for a 0
        lead = np.einsum("ij,ij->i", step, real.astype(np.int8), dtype=np.int64)  # [m]
        keep = lead > 0
        kept_sym.append(symbols[keep])
        kept_len.append(lengths[keep])
        have += int(keep.sum())
    return np.concatenate(kept_sym)[:n], np.concatenate(kept_len)[:n]


def make_batch(
    symbols: np.ndarray, lengths: np.ndarray, *, bos: bool = True, n_pos: int | None = None
):
    """Lay strings out as a right-padded batch: (tokens [B, T], targets [B, T, V], mask [B, T]).

    symbols [B, max_len] ids in 0..2 (junk past each length is ignored), lengths [B] in
    0..max_len; n_pos (default max_len + bos) pads or cuts the batch to that many positions.
    """
    symbols, lengths = np.asarray(symbols), np.asarray(lengths)
    if symbols.ndim != 2 or not np.issubdtype(symbols.dtype, np.integer):
        raise ValueError(
            f"symbols must be a [B, max_len] integer array, got {symbols.dtype} {symbols.shape}"
        )
    n, max_len = symbols.shape
    if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(
            f"lengths must be [B] = [{n}] integers, got {lengths.dtype} {lengths.shape}"
        )
    if n and (lengths.min() < 0 or lengths.max() > max_len):
        raise ValueError(f"lengths must lie in 0..max_len={max_len}")
    real = np.arange(max_len) < lengths[:, None]  # [n, max_len]
    if real.any() and (symbols[real].min() < 0 or symbols[real].max() > TWO):
        raise ValueError("symbols must be 0, 1 or 2 within each string's length")
    T = check_int("n_pos", n_pos, 1) if n_pos is not None else max_len + int(bos)
    tokens = np.full((n, T), PAD, dtype=np.int64)  # [n, T]
    tokens[:, : int(bos)] = BOS
    width = max(0, min(T - int(bos), max_len))
    tokens[:, int(bos) : int(bos) + width] = np.where(real, symbols, PAD)[:, :width]
    targets, mask = next_set_targets(tokens)
    return tokens, targets, mask


def sample_batch(
    batch_size: int,
    max_len: int,
    rng: np.random.Generator,
    *,
    bos: bool = True,
    probs=UNIFORM,
    min_len: int = 1,
):
    """A training batch of Count01: (tokens [B, T], targets [B, T, V], mask [B, T]).

    T = max_len + bos.

    rng is a numpy.random.Generator; the same generator state gives the same batch.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(0))")
    check_int("batch_size", batch_size, 1)
    symbols, lengths = sample_strings(batch_size, max_len, rng, probs=probs, min_len=min_len)
    return make_batch(symbols, lengths, bos=bos)


def sample_batches(
    batch_size: int,
    max_len: int,
    rngs,
    *,
    bos: bool = True,
    probs=UNIFORM,
    min_len: int = 1,
    n_threads: int | None = None,
):
    """One batch per generator, stacked: (tokens [M, B, T], targets [M, B, T, V], mask [M, B, T]).

    Member i is exactly ``sample_batch(batch_size, max_len, rngs[i], ...)``: each generator
    draws its own numbers. The M batches are drawn on a thread pool (numpy.random and the
    array work release the GIL), which matters for ensembles of hundreds of models.
    n_threads: default the machine's known thread count (``threads.default_threads()``,
    which never measures here: drawing data does not benchmark a training step).
    """
    rngs = list(rngs)
    M, T = len(rngs), max_len + int(bos)
    check_batch_memory(M * check_int("batch_size", batch_size, 1), T)
    tokens = np.empty((M, batch_size, T), dtype=np.int64)
    targets = np.empty((M, batch_size, T, V), dtype=np.float32)
    mask = np.empty((M, batch_size, T), dtype=bool)

    def draw(i):
        tokens[i], targets[i], mask[i] = sample_batch(
            batch_size, max_len, rngs[i], bos=bos, probs=probs, min_len=min_len
        )

    n_threads = min(M, n_threads or default_threads())
    if n_threads <= 1:
        for i in range(M):
            draw(i)
    else:
        list(pool(n_threads).map(draw, range(M)))
    return tokens, targets, mask


def context_length(max_len: int) -> int:
    """The longest sequence a model trained on strings of up to max_len symbols meets: the
    long held-out strings (twice max_len) after BOS. The one rule for a model's n_ctx."""
    return 2 * max_len + 1


@dataclass(frozen=True)
class DataConfig:
    """The data side of an experiment."""

    max_len: int = 32  # strings have 1..max_len symbols
    bos: bool = True  # prepend BOS (an attention sink); False = the paper's summaries' reading
    probs: tuple = UNIFORM  # P(0), P(1), P(2) per symbol
    n_eval: int = 2048  # strings in the fixed held-out set
    eval_seed: int = 12345  # the held-out sets are the same for every training seed

    def __post_init__(self):
        check_int("max_len", self.max_len, 1)
        check_int("n_eval", self.n_eval, 1)
        check_int("eval_seed", self.eval_seed, 0)
        check_bool("bos", self.bos)
        if self.max_len > MAX_STRING_LEN:
            raise ValueError(f"max_len={self.max_len} is over the limit of {MAX_STRING_LEN}")
        check_batch_memory(self.n_eval, context_length(self.max_len))  # the long held-out set
        check_probs(self.probs)


def eval_set(data: DataConfig, *, long: bool = False):
    """The fixed held-out batch.

    long=True gives lengths max_len+1 .. 2*max_len (length generalisation).
    """
    rng = np.random.default_rng([data.eval_seed, int(long)])
    if long:
        symbols, lengths = sample_strings(
            data.n_eval, 2 * data.max_len, rng, probs=data.probs, min_len=data.max_len + 1
        )
    else:
        symbols, lengths = sample_strings(data.n_eval, data.max_len, rng, probs=data.probs)
    return make_batch(symbols, lengths, bos=data.bos)
