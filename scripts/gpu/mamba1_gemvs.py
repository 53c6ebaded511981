"""What the GEMV tools (gemv_shapes.py, i4row_sweep.py) share: the batch-1 GEMV shapes of a Mamba-1
layer, random weights in the form the kernel-check C API takes them, and a ctypes pointer."""
import ctypes
import torch


def ptr(t):
    return ctypes.c_void_p(t.data_ptr() if t is not None else 0)


def layer_gemvs(D, N=16):
    """(name, rows, inputs) of in_proj, out_proj and x_proj at model width D (expand 2, dt_rank
    ceil(D / 16), N states; x_proj's rows padded to a multiple of 16 as the 4-bit tiles need)"""
    E, R = 2 * D, (D + 15) // 16
    return [("in_proj", 2 * E, D), ("out_proj", D, E), ("x_proj", (R + 2 * N + 15) // 16 * 16, E)]


def random_weights(wtype, n, k, dev="cuda"):
    """int8 (wtype 1): (n, k) int8 and a scale per row; 4-bit (wtype 2): (n, k / 2) bytes, two
    weights each, and a scale per row and group of 128 inputs"""
    if wtype == 1:
        return torch.randint(-127, 128, (n, k), device=dev, dtype=torch.int8), torch.rand(n, device=dev) * 0.01 + 1e-3
    return torch.randint(0, 256, (n, k // 2), device=dev, dtype=torch.uint8), torch.rand(n, k // 128, device=dev) * 0.01 + 1e-3
