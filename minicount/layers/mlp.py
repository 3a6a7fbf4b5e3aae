"""The ReLU MLP block: out = relu(x @ W_in + b_in) @ W_out + b_out.

Pure: new arrays out; inputs never written.
"""

from .shapes import rows, sum_rows, unrows


def mlp_forward(x, W_in, b_in, W_out, b_out):
    """x [..., B, T, d_model]; W_in [..., d_model, d_mlp], W_out [..., d_mlp, d_model]."""
    B, T = x.shape[-3:-1]
    x_rows = rows(x)  # [..., B*T, d]
    pre = x_rows @ W_in + b_in[..., None, :]  # [..., B*T, d] @ [..., d, d_mlp] -> [..., B*T, d_mlp]
    post = pre * (pre > 0)  # relu, [..., B*T, d_mlp]
    out = post @ W_out + b_out[..., None, :]  # [..., B*T, d_mlp] @ [..., d_mlp, d] -> [..., B*T, d]
    return unrows(out, B, T), (x_rows, pre, post, W_in, W_out, B, T)


def mlp_backward(dout, cache):
    """(dx, dW_in, db_in, dW_out, db_out) from dout [..., B, T, d_model]."""
    x_rows, pre, post, W_in, W_out, B, T = cache
    dout_rows = rows(dout)  # [..., B*T, d]
    # 3. in the forward pass this was: out = post @ W_out + b_out
    db_out = sum_rows(dout_rows)  # [..., d]
    dW_out = post.swapaxes(-1, -2) @ dout_rows  # [..., d_mlp, B*T] @ [..., B*T, d]
    dpost = dout_rows @ W_out.swapaxes(-1, -2)  # [..., B*T, d_mlp]
    # 2. post = relu(pre): the gradient passes where pre > 0
    dpre = dpost * (pre > 0)
    # 1. pre = x @ W_in + b_in
    db_in = sum_rows(dpre)  # [..., d_mlp]
    dW_in = x_rows.swapaxes(-1, -2) @ dpre  # [..., d, B*T] @ [..., B*T, d_mlp]
    dx = dpre @ W_in.swapaxes(-1, -2)  # [..., B*T, d]
    return unrows(dx, B, T), dW_in, db_in, dW_out, db_out
