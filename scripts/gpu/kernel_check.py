"""Checks each kernel of the native library against PyTorch in float64 on the GPU: fresh random
inputs every run, outputs poisoned (NaN, or two different int8 fills) before each call, error
||out - ref|| / ||ref||. Prints a table; writes JSON to argv[2]; exits 1 unless every case is within
its tolerance (checks.py). Usage: kernel_check.py LIB OUT.json"""
import ctypes, math, os, sys
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checks

rows = []
checks.on_crash(rows, sys.argv[2], "kernel check")
lib = ctypes.CDLL(sys.argv[1])
dev = "cuda"
torch.manual_seed(int.from_bytes(os.urandom(4), "little"))


def ptr(t):
    return ctypes.c_void_p(t.data_ptr() if t is not None else 0)


def call(fn, *args):
    conv = []
    for a in args:
        if isinstance(a, torch.Tensor) or a is None:
            conv.append(ptr(a))
        elif isinstance(a, float):
            conv.append(ctypes.c_float(a))
        elif isinstance(a, tuple) and a[0] == "ll":
            conv.append(ctypes.c_longlong(a[1]))
        else:
            conv.append(ctypes.c_int(a))
    rc = getattr(lib, fn)(*conv)
    if rc != 0:
        raise RuntimeError(f"{fn}: CUDA error {rc}")


def nan(*shape):
    return torch.full(shape, float("nan"), device=dev)


def rel(out, ref):
    out = out.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def record(kernel, case, err, tol):
    rows.append(checks.case(kernel, case, err, tol))


def qdq(v, s):
    return (torch.round(v / s).clamp(-128, 127) * s) if s > 0 else v


def q8(v, s):
    return torch.round(v / s).clamp(-128, 127)


def silu(v):
    return v * torch.sigmoid(v)


def softplus(v):
    return torch.where(v > 20, v, torch.log1p(torch.exp(v)))


def int8_twice(run):
    """runs `run(out)` with two int8 poisons; both must agree (every element written)"""
    a, b = run(127), run(-128)
    return a if torch.equal(a, b) else None


# ---- linear layers ----------------------------------------------------------------------------------
def linear_case(wtype, M, N, K, gemm_only):
    group = 128
    bias = torch.randn(N, device=dev) * 0.1
    if wtype == 0:
        w = (torch.randn(N, K, device=dev) * 0.05).half()
        x = torch.randn(M, K, device=dev)
        ref = x.double() @ w.double().T + bias.double()
        scale, xs = None, 0.0
    elif wtype == 1:
        w = torch.randint(-127, 128, (N, K), device=dev, dtype=torch.int8)
        scale = torch.rand(N, device=dev) * 0.01 + 1e-3
        x = torch.randint(-128, 128, (M, K), device=dev, dtype=torch.int8)
        xs = 0.02
        ref = (x.double() @ w.double().T) * scale.double() * xs + bias.double()
    else:
        q = torch.randint(0, 16, (N, K), device=dev, dtype=torch.uint8)
        w = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
        scale = torch.rand(N, K // group, device=dev) * 0.01 + 1e-3
        x = torch.randn(M, K, device=dev)
        wd = (q.double() - 8) * scale.double().repeat_interleave(group, 1)
        ref = x.double() @ wd.T + bias.double()
        xs = 0.0
    y = nan(M, N)
    call("me_k_linear", gemm_only, wtype, N, K, w, scale, group, bias, x, K, xs, M, y, N)
    return rel(y, ref)


for wtype, name in [(0, "fp16"), (1, "int8"), (2, "int4")]:
    for M, gemm_only in [(1, 0), (2, 0), (5, 0), (8, 0), (37, 1), (256, 1)]:
        for N, K in [(1000, 768), (3072, 1536), (192, 5120)]:  # the last: x_proj-like, 4-bit K split across blocks
            err = linear_case(wtype, M, N, K, gemm_only)
            tol = 2e-3 if wtype != 1 else 1e-5
            record("gemv" if not gemm_only else "gemm (tensor cores)", f"{name} M={M} N={N} K={K}", err, tol)


# the decode GEMV with the block's RMSNorm fused into its input, adding into the residual stream
def norm_case(wtype, M, N, K):
    group = 128
    hid, nw = torch.randn(M, K, device=dev) * 3, torch.rand(K, device=dev) + 0.5
    xn = hid.double() / torch.sqrt((hid.double() ** 2).mean(1, keepdim=True) + 1e-5) * nw.double()
    bias = torch.randn(N, device=dev) * 0.1
    y0 = torch.randn(M, N, device=dev)
    if wtype == 0:
        w, scale, s = (torch.randn(N, K, device=dev) * 0.05).half(), None, 0.0
        ref = y0.double() + xn @ w.double().T + bias.double()
    elif wtype == 1:
        w = torch.randint(-127, 128, (N, K), device=dev, dtype=torch.int8)
        scale, s = torch.rand(N, device=dev) * 0.01 + 1e-3, 0.04
        ref = y0.double() + (q8(xn, s) @ w.double().T) * scale.double() * s + bias.double()
    else:
        q = torch.randint(0, 16, (N, K), device=dev, dtype=torch.uint8)
        w = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
        scale, s = torch.rand(N, K // group, device=dev) * 0.01 + 1e-3, 0.04
        wd = (q.double() - 8) * scale.double().repeat_interleave(group, 1)
        ref = y0.double() + qdq(xn, s) @ wd.T + bias.double()
    y = y0.clone()
    call("me_k_gemv_norm", wtype, N, K, w, scale, group, bias, hid, nw, 1e-5, s, M, y, N)
    return rel(y, ref)


for wtype, name in [(0, "fp16"), (1, "int8"), (2, "int4")]:
    for M, N, K in [(1, 2048, 768), (5, 2048, 768), (1, 256, 2560), (8, 256, 2560)]:
        record("gemv + fused RMSNorm input", f"{name}{' (+int8 input)' if wtype == 1 else ' (+fake-quant input)' if wtype == 2 else ''} M={M} N={N} K={K}", norm_case(wtype, M, N, K), 2e-3)


# batch 1: a GEMV adding into the residual row that also leaves its sum of squares as partial sums,
# and the next GEMV taking its input's RMSNorm from them (the runner's out_proj -> in_proj)
def weights(wtype, N, K, group=128):
    """(weights as stored, per-channel or per-group scale, the dequantized float64 matrix)"""
    if wtype == 0:
        w = (torch.randn(N, K, device=dev) * 0.05).half()
        return w, None, w.double()
    if wtype == 1:
        w = torch.randint(-127, 128, (N, K), device=dev, dtype=torch.int8)
        scale = torch.rand(N, device=dev) * 0.01 + 1e-3
        return w, scale, w.double() * scale.double()[:, None]
    q = torch.randint(0, 16, (N, K), device=dev, dtype=torch.uint8)
    scale = torch.rand(N, K // group, device=dev) * 0.01 + 1e-3
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous(), scale, (q.double() - 8) * scale.double().repeat_interleave(group, 1)


for wtype, name in [(0, "fp16"), (1, "int8"), (2, "int4")]:
    for N, K, N2 in [(768, 1536, 3072), (2560, 5120, 10240), (256, 512, 1024)]:
        w, scale, wd = weights(wtype, N, K)
        w2, scale2, wd2 = weights(wtype, N2, N)
        y0, nw, y20 = torch.randn(1, N, device=dev) * 3, torch.rand(N, device=dev) + 0.5, torch.randn(1, N2, device=dev)
        if wtype == 1:
            x, xs, s = torch.randint(-128, 128, (1, K), device=dev, dtype=torch.int8), 0.02, 0.04
            h = y0.double() + (x.double() * xs) @ wd.T
        else:
            x, xs, s = torch.randn(1, K, device=dev), 0.0, 0.0
            h = y0.double() + x.double() @ wd.T
        xn = h / torch.sqrt((h ** 2).mean(1, keepdim=True) + 1e-5) * nw.double()
        ref2 = y20.double() + (q8(xn, s) * s if wtype == 1 else xn) @ wd2.T
        y, y2 = y0.clone(), y20.clone()
        ss, parts = nan(4096), torch.zeros(1, dtype=torch.int32, device=dev)
        call("me_k_gemv_ss_pair", wtype, N, K, w, scale, x, xs, y, ss, parts, N2, w2, scale2, nw, 1e-5, s, y2)
        n = int(parts.item())
        tol = 2e-3 if wtype != 1 else 1e-5
        record("gemv + sum of squares out (M=1)", f"{name} N={N} K={K}: row", rel(y, h), tol)
        record("gemv + sum of squares out (M=1)", f"{name} N={N} K={K}: sum of squares ({n} parts)", rel(ss[:n].sum().reshape(1), (y.double() ** 2).sum().reshape(1)), 1e-5)  # of the row as written
        record("gemv + RMSNorm from partial sums (M=1)", f"{name} N={N2} K={N}", rel(y2, ref2), 2e-3)

# the batch-1 4-bit row GEMV at grids its rule takes on other GPUs (warps per tile P x tiles per block;
# P = 1, 8 tiles per block: the Orin Nano's 8 multiprocessors for 2.8b's in_proj), forced one by one
for P, tpb in [(1, 8), (1, 16), (2, 3), (3, 5), (4, 2), (5, 1), (6, 2), (12, 1), (16, 1)]:
    call("me_k_i4row_grid", P, tpb)
    try:
        for N, K in [(3072, 768), (2560, 5120), (192, 5120)]:
            record("gemv int4 M=1, grid forced", f"P={P} tiles/block={tpb} N={N} K={K}", linear_case(2, 1, N, K, 0), 2e-3)
        record("gemv int4 M=1, grid forced", f"P={P} tiles/block={tpb} N=10240 K=2560 (+RMSNorm, fake-quant input)", norm_case(2, 1, 10240, 2560), 2e-3)
    finally:
        call("me_k_i4row_grid", 0, 0)

# ---- causal conv1d ------------------------------------------------------------------------------------
def conv_ref(xin, state, w, b, qs):
    # xin (T, C), state (C, K-1) -> out (T, C), new state
    C, K = w.shape
    win = torch.cat([state.double(), xin.double().T], 1)  # (C, K-1+T)
    T = xin.shape[0]
    out = torch.stack([(win[:, t:t + K] * w.double()).sum(1) + b.double() for t in range(T)])
    out = silu(out)
    if qs is not None:
        out = torch.round(out / qs.double()).clamp(-128, 127) * qs.double()
    return out, win[:, -(K - 1):]


for T in [1, 37, 300]:
    C, K, ld, c0 = 640, 4, 700, 30
    xin = torch.randn(T, ld, device=dev)
    w, b = torch.randn(C, K, device=dev) * 0.3, torch.randn(C, device=dev) * 0.1
    state = torch.randn(C, K - 1, device=dev)
    qs = torch.full((C,), 0.02, device=dev)
    ref, refst = conv_ref(xin[:, c0:c0 + C], state, w, b, qs)
    st = state.clone()
    out = nan(T, C)
    call("me_k_conv1d_prefill", xin, ld, c0, T, C, K, w, b, st, qs, out, None, 0.0)
    record("conv1d prefill", f"T={T} C={C} K={K} (+fake-quant)", max(rel(out, ref), rel(st, refst)), 2e-3)

M, C, K, nslots = 6, 1536, 4, 10
xin = torch.randn(M, C + 64, device=dev)
w, b = torch.randn(C, K, device=dev) * 0.3, torch.randn(C, device=dev) * 0.1
states = torch.randn(nslots, C, K - 1, device=dev)
slots = torch.tensor([7, 2, 9, 0, 4, 5], device=dev, dtype=torch.int32)
refs, refst = [], states.clone().double()
for m in range(M):
    o, ns = conv_ref(xin[m:m + 1, 64:], states[slots[m]], w, b, None)
    refs.append(o)
    refst[slots[m]] = ns
st = states.clone()
out = nan(M, C)
call("me_k_conv1d_step", xin, C + 64, 64, M, C, K, w, b, st, ("ll", C * (K - 1)), slots, None, out, None, 0.0)
record("conv1d step", f"B={M} C={C} K={K} (slots)", max(rel(out, torch.cat(refs)), rel(st, refst)), 2e-3)


# ---- Mamba-1 selective scan ---------------------------------------------------------------------------
def scan1_ref(dbl, dtraw, dtW, dtB, A, D, x, z, sB, sC, h, R, N):
    T = x.shape[0]
    h = h.double().clone()
    ys = []
    for t in range(T):
        dt = softplus((dtraw[t].double() if dtraw is not None else dbl[t, :R].double() @ dtW.double().T) + dtB.double())
        Bt = qdq(dbl[t, R:R + N].double(), sB)
        Ct = qdq(dbl[t, R + N:].double(), sC)
        h = torch.exp(dt[:, None] * A.double()) * h + dt[:, None] * Bt[None, :] * x[t].double()[:, None]
        ys.append(((h * Ct[None, :]).sum(1) + D.double() * x[t].double()) * silu(z[t].double()))
    return torch.stack(ys), h


E, R = 1536, 48
# prefill takes its inputs eight rows ahead (two with more than 16 states): lengths off those multiples
for T, prefill, N in [(1, 0, 16), (4, 0, 16), (200, 1, 16), (37, 1, 16), (45, 1, 48)]:
    dbl = torch.randn(T, R + 2 * N, device=dev)
    dtW = (torch.randn(E, R, device=dev) * 0.1).half()
    dtB = torch.randn(E, device=dev) * 0.5 - 2
    A = -torch.rand(E, N, device=dev) * 4
    D = torch.randn(E, device=dev)
    x = torch.randn(T, E, device=dev)
    z = torch.randn(T, 2 * E, device=dev)
    dtraw = torch.randn(T, E, device=dev) * 0.5 if prefill else None
    sB, sC = 0.03, 0.025
    y = nan(T, E)
    if prefill:
        h = torch.randn(E, N, device=dev)
        ref, refh = scan1_ref(dbl, dtraw, dtW, dtB, A, D, x, z[:, :E], sB, sC, h, R, N)
        h2 = h.clone()
        call("me_k_scan1", 1, E, N, R, dbl, R + 2 * N, dtraw, dtW, dtB, A, D, x, z, 2 * E, sB, sC, y, None, 0.0, T, h2, ("ll", 0), None)
        record("selective scan (Mamba-1) prefill", f"T={T} E={E} N={N}", max(rel(y, ref), rel(h2, refh)), 2e-3)
    else:
        states = torch.randn(T + 3, E, N, device=dev)
        slots = torch.randperm(T + 3, device=dev)[:T].int()
        refs, refst = [], states.clone().double()
        for m in range(T):
            o, hh = scan1_ref(dbl[m:m + 1], None, dtW, dtB, A, D, x[m:m + 1], z[m:m + 1, :E], sB, sC, states[slots[m]], R, N)
            refs.append(o)
            refst[slots[m]] = hh
        st = states.clone()
        call("me_k_scan1", 0, E, N, R, dbl, R + 2 * N, None, dtW, dtB, A, D, x, z, 2 * E, sB, sC, y, None, 0.0, T, st, ("ll", E * N), slots)
        record("selective scan (Mamba-1) step", f"B={T} E={E} N={N} (dt_proj fused)", max(rel(y, torch.cat(refs)), rel(st, refst)), 2e-3)


# ---- Mamba-2 SSD ---------------------------------------------------------------------------------------
def ssd_ref(xbc, dtraw, dtBias, A, D, z, H, P, N, G, S, gate):
    T = xbc.shape[0]
    S = S.double().clone()
    ys = []
    for t in range(T):
        dt = softplus(dtraw[t].double() + dtBias.double())
        xt = xbc[t, :H * P].double().view(H, P)
        Bt = xbc[t, H * P:H * P + G * N].double().view(G, N).repeat_interleave(H // G, 0)
        Ct = xbc[t, H * P + G * N:].double().view(G, N).repeat_interleave(H // G, 0)
        S = S * torch.exp(dt * A.double())[:, None, None] + (dt[:, None] * xt)[:, :, None] * Bt[:, None, :]
        y = (S * Ct[:, None, :]).sum(2) + D.double()[:, None] * xt
        if gate:
            y = y * silu(z[t].double().view(H, P))
        ys.append(y.reshape(-1))
    return torch.stack(ys), S


H, P, N, G = 8, 64, 64, 2
for T, prefill in [(3, 0), (130, 1), (131, 1)]:
    W = H * P + 2 * G * N
    xbc = torch.randn(T, W, device=dev)
    dtraw = torch.randn(T, H, device=dev)
    dtBias = torch.randn(H, device=dev) * 0.5
    A = -torch.rand(H, device=dev) * 2
    D = torch.randn(H, device=dev)
    z = torch.randn(T, H * P, device=dev)
    y = nan(T, H * P)
    if prefill:
        S = torch.randn(H, P, N, device=dev)
        ref, refS = ssd_ref(xbc, dtraw, dtBias, A, D, z, H, P, N, G, S, True)
        S2 = S.clone()
        call("me_k_ssd", 1, H, P, N, G, xbc, W, dtraw, H, dtBias, A, D, 0.0, float("inf"), z, H * P, 1, y, T, S2, ("ll", 0), None, None)
        record("SSD (Mamba-2) prefill", f"T={T} H={H} P={P} N={N} G={G}", max(rel(y, ref), rel(S2, refS)), 2e-3)
    else:
        states = torch.randn(T + 2, H, P, N, device=dev)
        slots = torch.tensor([4, 0, 2], device=dev, dtype=torch.int32)
        refs, refst = [], states.clone().double()
        for m in range(T):
            o, ss = ssd_ref(xbc[m:m + 1], dtraw[m:m + 1], dtBias, A, D, z[m:m + 1], H, P, N, G, states[slots[m]], True)
            refs.append(o)
            refst[slots[m]] = ss
        st = states.clone()
        call("me_k_ssd", 0, H, P, N, G, xbc, W, dtraw, H, dtBias, A, D, 0.0, float("inf"), z, H * P, 1, y, T, st, ("ll", H * P * N), slots, None)
        record("SSD (Mamba-2) step", f"B={T} H={H} P={P} N={N} G={G}", max(rel(y, torch.cat(refs)), rel(st, refst)), 2e-3)

# batch 1 with the partial sums of squares of y that out_proj takes the gated norm from (one per block
# of 16 channels of a head), at a head dim with a partial block and at the checkpoints' 128 states
for H, P, N, G in [(6, 40, 64, 2), (8, 64, 128, 1)]:
    W = H * P + 2 * G * N
    xbc, dtraw, z = torch.randn(1, W, device=dev), torch.randn(1, H, device=dev), torch.randn(1, H * P, device=dev)
    dtBias, A, D = torch.randn(H, device=dev) * 0.5, -torch.rand(H, device=dev) * 2, torch.randn(H, device=dev)
    states = torch.randn(3, H, P, N, device=dev)
    slots = torch.tensor([1], device=dev, dtype=torch.int32)
    ref, refS = ssd_ref(xbc, dtraw, dtBias, A, D, z, H, P, N, G, states[1], True)
    refst = states.clone().double()
    refst[1] = refS
    parts = H * ((P + 15) // 16)
    y, st, ss = nan(1, H * P), states.clone(), nan(parts + 1)
    call("me_k_ssd", 0, H, P, N, G, xbc, W, dtraw, H, dtBias, A, D, 0.0, float("inf"), z, H * P, 1, y, 1, st, ("ll", H * P * N), slots, ss)
    ssRef = (ref.double() ** 2).sum()
    # every part written, none beyond its blocks
    ok = torch.isfinite(ss[:parts]).all().item() and ss[parts:].isnan().all().item()
    ssErr = abs(ss[:parts].double().sum().item() - ssRef.item()) / ssRef.item() if ok else float("inf")
    record("SSD (Mamba-2) step, batch 1 + sums of squares", f"H={H} P={P} N={N} G={G} parts={parts}", max(rel(y, ref), rel(st, refst), ssErr), 2e-3)


# ---- residual add + RMSNorm (+ quantize) ---------------------------------------------------------------
for Dm in [768, 2560]:
    M = 7
    hid, add, w = torch.randn(M, Dm, device=dev), torch.randn(M, Dm, device=dev), torch.rand(Dm, device=dev) + 0.5
    h64 = hid.double() + add.double()
    ref = h64 / torch.sqrt((h64 ** 2).mean(1, keepdim=True) + 1e-5) * w.double()
    h2, out = hid.clone(), nan(M, Dm)
    call("me_k_add_rmsnorm", h2, add, M, Dm, w, 1e-5, out, None, 0.0)
    record("residual add + RMSNorm", f"M={M} D={Dm}", max(rel(out, ref), rel(h2, h64)), 2e-3)
    s = 0.03

    def run(fill):
        q = torch.full((M, Dm), fill, device=dev, dtype=torch.int8)
        call("me_k_add_rmsnorm", hid.clone(), add, M, Dm, w, 1e-5, None, q, s)
        return q
    q = int8_twice(run)
    err = float("inf") if q is None else rel(q.double() * s, qdq(ref, s))
    record("residual add + RMSNorm + int8", f"M={M} D={Dm}", err, 2e-3)


# ---- Hadamard rotation + quantization; gated RMSNorm -------------------------------------------------------
def hadamard(b):
    Hm = torch.ones(1, 1, dtype=torch.float64, device=dev)
    while Hm.shape[0] < b:
        Hm = torch.cat([torch.cat([Hm, Hm], 1), torch.cat([Hm, -Hm], 1)], 0)
    return Hm / math.sqrt(b)


def hb_of(n):
    b = 1
    while n % (b * 2) == 0:
        b *= 2
    return b


for E in [1536, 4096, 5120]:
    M, s = 3, 0.05
    y = torch.randn(M, E, device=dev)
    hb = hb_of(E)
    Hm = hadamard(hb)
    ref = (y.double().view(M, E // hb, hb) @ Hm).view(M, E)

    def run(fill):
        q = torch.full((M, E), fill, device=dev, dtype=torch.int8)
        call("me_k_row_post", E, None, 0, 0, 0, 0, None, 1e-5, hb, s, y, M, None, q, None, 0, 1)
        return q
    q = int8_twice(run)
    err = float("inf") if q is None else rel(q.double() * s, qdq(ref, s))
    record("Hadamard + int8 quantize", f"M={M} E={E} block={hb}", err, 2e-3)
    out = nan(M, E)
    call("me_k_row_post", E, None, 0, 0, 0, 0, None, 1e-5, hb, 0.0, y, M, out, None, None, 0, 1)
    record("Hadamard (float)", f"M={M} E={E} block={hb}", rel(out, ref), 1e-5)

# the rotation over the whole width, E = m · 2^k (m 12 or 20): H_m ⊗ H_b, H_m by Paley's construction
def paley(order):
    H = torch.tensor(checks.paley(order), dtype=torch.float64, device=dev)
    assert torch.equal(H @ H.T, order * torch.eye(order, dtype=torch.float64, device=dev))
    return H / math.sqrt(order)


for E, hm in [(1536, 12), (3072, 12), (5120, 20)]:
    M, s, hb = 3, 0.05, E // hm
    y = torch.randn(M, E, device=dev)
    ref = (y.double().view(M, hm, hb) @ hadamard(hb)).transpose(1, 2) @ paley(hm)  # (M, hb, hm)
    ref = ref.transpose(1, 2).reshape(M, E)

    def run(fill):
        q = torch.full((M, E), fill, device=dev, dtype=torch.int8)
        call("me_k_row_post", E, None, 0, 0, 0, 0, None, 1e-5, hb, s, y, M, None, q, None, 0, hm)
        return q
    q = int8_twice(run)
    err = float("inf") if q is None else rel(q.double() * s, qdq(ref, s))
    record("whole-width Hadamard + int8 quantize", f"M={M} E={E} = {hm}x{hb}", err, 2e-3)
    out = nan(M, E)
    call("me_k_row_post", E, None, 0, 0, 0, 0, None, 1e-5, hb, 0.0, y, M, out, None, None, 0, hm)
    record("whole-width Hadamard (float)", f"M={M} E={E} = {hm}x{hb}", rel(out, ref), 1e-5)
    # Mamba-2's gated RMSNorm before it (norm_before_gate 0, groups of E)
    z, w = torch.randn(M, 2 * E, device=dev), torch.rand(E, device=dev) + 0.5
    v = y.double() * silu(z[:, :E].double())
    v = v / torch.sqrt((v ** 2).mean(1, keepdim=True) + 1e-5) * w.double()
    refg = ((v.view(M, hm, hb) @ hadamard(hb)).transpose(1, 2) @ paley(hm)).transpose(1, 2).reshape(M, E)
    out = nan(M, E)
    call("me_k_row_post", E, z, 2 * E, 1, 0, E, w, 1e-5, hb, 0.0, y, M, out, None, None, 0, hm)
    record("gated RMSNorm + whole-width Hadamard", f"M={M} E={E} = {hm}x{hb}", rel(out, refg), 2e-3)

for nbg in [0, 1]:
    M, E, gs = 4, 1024, 512
    y, z, w = torch.randn(M, E, device=dev), torch.randn(M, 2 * E, device=dev), torch.rand(E, device=dev) + 0.5
    v = y.double() if nbg else y.double() * silu(z[:, :E].double())
    g = v.view(M, E // gs, gs)
    v = (g / torch.sqrt((g ** 2).mean(2, keepdim=True) + 1e-5)).view(M, E) * w.double()
    if nbg:
        v = v * silu(z[:, :E].double())
    out = nan(M, E)
    call("me_k_row_post", E, z, 2 * E, 1, nbg, gs, w, 1e-5, 0, 0.0, y, M, out, None, None, 0, 1)
    record("gated RMSNorm (Mamba-2)", f"M={M} E={E} group={gs} normBeforeGate={nbg}", rel(out, v), 2e-3)

# batch 1, y already gated: the RMSNorm over the row from partial sums of squares (as the SSD step
# writes them), then the rotation and quantization, one block per Hadamard block
for E in [1536, 5120]:
    s, hb = 0.05, hb_of(E)
    y, w = torch.randn(1, E, device=dev), torch.rand(E, device=dev) + 0.5
    part = (y.double() ** 2).view(-1, 64).sum(1).float()  # one partial per 64 channels
    v = y.double() / torch.sqrt((y.double() ** 2).mean() + 1e-5) * w.double()
    ref = (v.view(1, E // hb, hb) @ hadamard(hb)).view(1, E)

    def run(fill):
        q = torch.full((1, E), fill, device=dev, dtype=torch.int8)
        call("me_k_row_post", E, None, 0, 0, 0, 0, w, 1e-5, hb, s, y, 1, None, q, part, part.numel(), 1)
        return q
    q = int8_twice(run)
    err = float("inf") if q is None else rel(q.double() * s, qdq(ref, s))
    record("RMSNorm from partial sums + Hadamard + int8", f"E={E} block={hb} parts={part.numel()}", err, 2e-3)


# ---- embedding, top-k ------------------------------------------------------------------------------------
V, Dm, M = 50280, 768, 9
table = torch.randn(V, Dm, device=dev).half()
tok = torch.randint(0, V, (M,), device=dev, dtype=torch.int32)
out = nan(M, Dm)
call("me_k_embed", table, Dm, tok, M, out)
record("embedding gather", f"M={M} D={Dm} V={V}", rel(out, table[tok.long()].double()), 0.0)
# a 4-bit table (--embedding q4): groups of 128 along D, low nibble first, zero point 8
grp = 128
q4 = torch.randint(-8, 8, (V, Dm), device=dev, dtype=torch.int32)
packed = ((q4[:, 0::2] + 8) | ((q4[:, 1::2] + 8) << 4)).to(torch.uint8).contiguous()
sc4 = (torch.rand(V, Dm // grp, device=dev) + 0.1).contiguous()
out = nan(M, Dm)
call("me_k_embed_i4", packed, sc4, grp, Dm, tok, M, out)
want = (q4.double() * sc4.double().repeat_interleave(grp, 1))[tok.long()]
record("4-bit embedding gather", f"M={M} D={Dm} V={V} group={grp}", rel(out, want), 1e-7)
logits = torch.randn(4, V, device=dev)
for k in [1, 8, 40]:
    vals, idx = nan(4, k), torch.full((4, k), -1, device=dev, dtype=torch.int32)
    call("me_k_topk", logits, 4, V, k, vals, idx)
    rv, ri = torch.topk(logits.double(), k, dim=1)
    ok = torch.equal(idx.long(), ri)
    record("top-k", f"rows=4 V={V} k={k}", rel(vals, rv) if ok else float("inf"), 0.0)
for M in [1, 32]:
    logits = torch.randn(M, V, device=dev)
    idx, scratch = torch.full((M,), -1, device=dev, dtype=torch.int32), nan(M * 128)
    call("me_k_argmax", logits, M, V, idx, scratch)
    record("argmax (two-pass)", f"rows={M} V={V}", 0.0 if torch.equal(idx.long(), logits.argmax(1)) else float("inf"), 0.0)

w = max(len(r["kernel"]) for r in rows)
wc = max(len(r["case"]) for r in rows)
print(f"{'kernel':<{w}}  {'case':<{wc}}  rel error    tolerance  ok")
for r in rows:
    err = "inf" if r["relError"] is None else f"{r['relError']:.3e}"
    print(f"{r['kernel']:<{w}}  {r['case']:<{wc}}  {err:<13}  {r['tolerance']:<9.0e}  {'yes' if checks.passed(r) else 'NO'}")
checks.finish(rows, sys.argv[2], "kernels")
