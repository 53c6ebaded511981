"""Runs the batch-1 decode GEMVs of one Mamba-1 layer at a given shape, once per weight type, through
the kernel-check C API: out_proj (adding into the residual row, partial sums of squares out), the
next in_proj (its RMSNorm from those sums) and x_proj. Nothing is checked or timed here: it is the
program to put under Nsight Compute, e.g.
  ncu --clock-control none --kernel-name regex:gemv --section SpeedOfLight --section WarpStateStats \\
      python3 scripts/gpu/gemv_shapes.py LIB [D]
so each kernel's time, DRAM throughput and stall reasons can be read with caches flushed (ncu's
default) at the shape that matters. D: the model width (default 2560, mamba-2.8b)."""
import ctypes, sys
import torch
from mamba1_gemvs import layer_gemvs, ptr as p, random_weights as weights

lib = ctypes.CDLL(sys.argv[1])
D = int(sys.argv[2]) if len(sys.argv) > 2 else 2560
E = 2 * D
dev = "cuda"
xp_rows = {name: n for name, n, _ in layer_gemvs(D)}["x_proj"]

F = ctypes.c_float
for wtype, name in [(2, "int4"), (1, "int8")]:
    wo, so = weights(wtype, D, E)
    wi, si = weights(wtype, 2 * E, D)
    wx, sx = weights(wtype, xp_rows, E)
    x = torch.randint(-128, 128, (1, E), device=dev, dtype=torch.int8) if wtype == 1 else torch.randn(1, E, device=dev)
    xs = 0.02 if wtype == 1 else 0.0
    y, y2 = torch.randn(1, D, device=dev), torch.zeros(1, 2 * E, device=dev)
    ss, parts, nw = torch.zeros(4096, device=dev), torch.zeros(1, dtype=torch.int32, device=dev), torch.rand(D, device=dev) + 0.5
    yx = torch.zeros(1, xp_rows, device=dev)
    xi = torch.randint(-128, 128, (1, D), device=dev, dtype=torch.int8)
    for _ in range(2):
        if wtype == 2:  # as the runner pairs them
            rc = lib.me_k_gemv_ss_pair(wtype, D, E, p(wo), p(so), p(x), F(xs), p(y), p(ss), p(parts), 2 * E, p(wi), p(si), p(nw), F(1e-5), F(0.0), p(y2))
        else:  # int8: the runner's in_proj takes an int8 row from the norm kernel
            rc = lib.me_k_linear(0, wtype, D, E, p(wo), p(so), 128, None, p(x), E, F(xs), 1, p(y), D) or \
                lib.me_k_linear(0, wtype, 2 * E, D, p(wi), p(si), 128, None, p(xi), D, F(xs), 1, p(y2), 2 * E)
        rc = rc or lib.me_k_linear(0, wtype, xp_rows, E, p(wx), p(sx), 128, None, p(x), E, F(xs), 1, p(yx), xp_rows)
        if rc:
            raise SystemExit(f"{name}: CUDA error {rc}")
    torch.cuda.synchronize()
    print(f"{name}: out_proj {D}x{E}, in_proj {2 * E}x{D}, x_proj {xp_rows}x{E} done", flush=True)
