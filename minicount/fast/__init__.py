"""The fast paths: the same computations as the textbook ones, rearranged for speed.

    attention.py       attention for NumPy and CuPy (one QKV matmul in a column layout,
                       softmax without the row shift when it is safe, dz·z in the backward)
    attention_cuda.py  attention with its core as one fused CUDA kernel (CuPy)
    train_step.py      a training step's loss and gradients in slices of the batch, on threads

Each is tested against its textbook form (layers/attention.py, model.loss_and_grads_all) in
tests/test_fast_paths.py. None of them is switched on behind the reader's back: the model
takes ``attention="textbook" | "fast" | "fused"`` (model.ATTENTION), and a run's
TrainConfig.path names the one it trains with and is saved in its checkpoint.
"""
