"""Plain versions of what minicount makes fast outside the model, for the tests to check against.

(The attention and the training step have their textbook forms in the package itself:
layers/attention.py and model.loss_and_grads_all.)
"""

import numpy as np


def next_set_targets(tokens):
    """Per position, in plain Python: targets [B, T, V] and mask [B, T] (docs/method.md §1)."""
    B, T = tokens.shape
    targets = np.zeros((B, T, 6), dtype=np.float32)
    mask = np.zeros((B, T), dtype=bool)
    for b in range(B):
        ones = zeros = 0
        for t in range(T):
            tok = int(tokens[b, t])
            if tok == 5:  # PAD
                continue
            ones += tok == 1
            zeros += tok == 0
            mask[b, t] = True
            targets[b, t, :3] = 1
            targets[b, t, 4] = ones > zeros  # EOS allowed once the 1s lead
    return targets, mask
