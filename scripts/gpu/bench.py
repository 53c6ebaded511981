"""Benchmark of the native runner on randomly initialised Mamba shapes (the configs of
state-spaces/mamba-130m/1.4b/2.8b and mamba2-130m/1.3b/2.7b), beside the bandwidth floor and
transformers' MambaForCausalLM / Mamba2ForCausalLM,
all in one run on one GPU. The benchmark engines are written here on the GPU (random weights,
round-to-nearest quantization, the tensor layout and manifest fields of `mamba-edge build`):
building 1.4b / 2.8b engines with the JavaScript builder would take hours on a small CPU and the
packages are too large to carry. Exits 1 when any run failed (the others still run and are written).
Usage: bench.py LIB OUT.json [shape...]"""
import ctypes, json, math, os, shutil, sys, time
import torch
from safetensors.torch import save_file

# the library: bench.py LIB ..., or ME_LIB when imported (step_profile.py); importing has no other effect
_lib_path = sys.argv[1] if __name__ == "__main__" else os.environ.get("ME_LIB")
lib = ctypes.CDLL(_lib_path) if _lib_path else None
if lib:
    lib.me_create.restype = ctypes.c_void_p
    lib.me_create.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    lib.me_last_error.restype = ctypes.c_char_p
    lib.me_weight_bytes.restype = ctypes.c_int64
    lib.me_weight_bytes.argtypes = [ctypes.c_void_p]
    lib.me_destroy.argtypes = [ctypes.c_void_p]
    lib.me_describe.restype = ctypes.c_char_p
    lib.me_describe.argtypes = [ctypes.c_void_p]
    for f in ("me_bench_step", "me_bench_prefill"):
        getattr(lib, f).argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]

dev = "cuda"
SHAPES = {  # hidden, layers, vocab (the checkpoints' configs; Mamba-2: 128 states, heads of 64, one group)
    "mamba-130m": (768, 24, 50280),
    "mamba-1.4b": (2048, 48, 50280),
    "mamba-2.8b": (2560, 64, 50280),
    "mamba2-130m": (768, 24, 50280),
    "mamba2-1.3b": (2048, 48, 50280),
    "mamba2-2.7b": (2560, 64, 50280),
}
is_mamba2 = lambda name: name.startswith("mamba2-")
RECIPES = os.environ.get("ME_RECIPES", "fp16,w8a8,w4a16").split(",")
tmp = "/dev/shm/me-bench" if os.path.isdir("/dev/shm") else "/tmp/me-bench"
# ME_KEEP_ENGINES=1 keeps the written engines and reuses them: A/B runs of several builds, in turn, on the same files
KEEP = bool(os.environ.get("ME_KEEP_ENGINES"))


def copy_bandwidth():
    n = 1 << 28  # 1 GiB of float32
    a, b = torch.randn(n, device=dev), torch.empty(n, device=dev)
    for _ in range(3):
        b.copy_(a)
    ts = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); b.copy_(a); e.record(); e.synchronize()
        ts.append(s.elapsed_time(e))
    ms = sorted(ts)[len(ts) // 2]
    return 2 * n * 4 / (ms / 1e3)  # bytes read + written per second


def write_engine(name, recipe, path):
    D, L, V = SHAPES[name]
    E, N, K, R = 2 * D, 16, 4, math.ceil(D / 16)
    g = torch.Generator(device=dev).manual_seed(0)
    rn = lambda *s, std=0.02: (torch.randn(*s, device=dev, generator=g) * std)
    t, scales = {}, {}
    t["embedding"] = rn(V, D).half()
    t["norm_f"] = torch.ones(D, device=dev)

    def matrix(l, what, W):
        N_, K_ = W.shape
        if recipe == "fp16":
            t[f"layers.{l}.{what}.weight"] = W.half()
        elif recipe == "w8a8":
            s = W.abs().amax(1).clamp_min(1e-8) / 127
            t[f"l{l}.{what}.weight"] = torch.round(W / s[:, None]).clamp(-127, 127).to(torch.int8)
            t[f"l{l}.{what}.weight_scale"] = s
        else:
            Wg = W.view(N_, K_ // 128, 128)
            s = Wg.abs().amax(2).clamp_min(1e-8) / 7
            q = (torch.round(Wg / s[:, :, None]).clamp(-8, 7) + 8).to(torch.uint8).view(N_, K_)
            t[f"l{l}.{what}.weight"] = (q[:, 0::2] | (q[:, 1::2] << 4)).view(N_, K_ // 128, 64).contiguous()
            t[f"l{l}.{what}.weight_scale"] = s.reshape(-1).contiguous()

    m2 = is_mamba2(name)
    if m2:
        N, P, G = 128, 64, 1
        H, C = E // P, E + 2 * G * N
    for l in range(L):
        p = f"layers.{l}."
        t[p + "norm"] = torch.ones(D, device=dev)
        matrix(l, "out_proj", rn(D, E))
        t[p + "conv.weight"] = rn(C if m2 else E, K, std=0.2)
        t[p + "conv.bias"] = torch.zeros(C if m2 else E, device=dev)
        if m2:  # in_proj rows: z (E), x B C (the conv's channels), dt (one per head)
            matrix(l, "in_proj", rn(2 * E + 2 * G * N + H, D))
            t[p + "A"] = -torch.empty(H, device=dev).uniform_(1, 16, generator=g)
            dt = torch.exp(torch.empty(H, device=dev).uniform_(math.log(1e-3), math.log(0.1), generator=g))
            t[p + "dt_bias"] = dt + torch.log(-torch.expm1(-dt))  # softplus(dt_bias) = dt
            t[p + "D"] = torch.ones(H, device=dev)
            t[p + "gated_norm"] = torch.ones(E, device=dev)
        else:
            matrix(l, "in_proj", rn(2 * E, D))
            matrix(l, "x_proj", rn(R + 2 * N, E))
            t[p + "dt_proj.weight"] = rn(E, R, std=0.1).half()
            t[p + "dt_proj.bias"] = torch.full((E,), -4.0, device=dev)
            t[p + "A"] = -torch.arange(1, N + 1, device=dev, dtype=torch.float32).repeat(E, 1)
            t[p + "D"] = torch.ones(E, device=dev)
        if recipe == "w8a8":
            scales.update({f"l{l}.in_proj": 4 / 127, f"l{l}.x": 0.05, f"l{l}.B": 0.05, f"l{l}.C": 0.05, f"l{l}.out_proj": 0.05})
            if not m2:
                scales[f"l{l}.x_proj"] = 0.05
    os.makedirs(path, exist_ok=True)
    save_file({k: v.contiguous().cpu() for k, v in t.items()}, os.path.join(path, "weights.safetensors"), metadata={"format": "mamba-edge-engine", "recipe": recipe})
    config = {"arch": "mamba1", "layout": "hf", "vocabSize": V, "dModel": D, "nLayer": L, "dInner": E, "dState": N, "dConv": K, "convBias": True,
              "projBias": False, "normEps": 1e-5, "tiedEmbeddings": True, "eosTokenId": 0, "dtRank": R, "nHeads": 0, "headDim": 0, "nGroups": 0,
              "chunkSize": 0, "dtLimit": [0, None], "gatedNormGroup": 0, "normBeforeGate": False}
    if m2:  # as state-spaces/mamba2-*: one group, the gated norm over the whole group
        config.update({"arch": "mamba2", "layout": "state-spaces", "dtRank": 0, "nHeads": H, "headDim": P, "nGroups": G, "chunkSize": 256, "gatedNormGroup": E // G})
    json.dump({"format": "mamba-edge-engine", "version": 1, "config": config, "quant": {"recipe": recipe, "params": {"weightRounding": "rtn"}, "scales": scales}},
              open(os.path.join(path, "manifest.json"), "w"))


def bench_engine(path):
    h = lib.me_create(path.encode(), 32, 33)
    if not h:
        raise RuntimeError(lib.me_last_error().decode())
    ms = ctypes.c_float()
    out = {"weightBytes": lib.me_weight_bytes(h), "engine": lib.me_describe(h).decode()}
    try:
        for b in [int(x) for x in os.environ.get("ME_PROFILE", "").split(",") if x]:  # kernel time breakdown of decode steps
            from torch.profiler import ProfilerActivity, profile
            iters = 20
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                lib.me_bench_step(h, b, iters, ctypes.byref(ms))
            steps = iters + 3  # me_bench_step runs 3 warm-up steps first
            rows = sorted(((e.key, e.device_time_total, e.count) for e in prof.key_averages() if e.device_time_total > 0), key=lambda r: -r[1])
            kernels = [{"kernel": k.split("(")[0], "usPerStep": us / steps, "launchesPerStep": n / steps} for k, us, n in rows]
            out.setdefault("profile", {})[f"batch{b}"] = kernels
            print(f"  batch {b}: kernel, us per step, launches per step", flush=True)
            for r in kernels[:12]:
                print(f"    {r['kernel'][:48]:48} {r['usPerStep']:9.1f} {r['launchesPerStep']:6.1f}", flush=True)
        for b, iters in [(1, 100), (8, 30), (32, 15)]:
            if lib.me_bench_step(h, b, iters, ctypes.byref(ms)):
                raise RuntimeError(lib.me_last_error().decode())
            out[f"decodeMsB{b}"] = ms.value
            out[f"tokensPerSecondB{b}"] = b * 1000 / ms.value
        if lib.me_bench_prefill(h, 512, 3, ctypes.byref(ms)):
            raise RuntimeError(lib.me_last_error().decode())
        out["prefill512Ms"] = ms.value
        out["prefillTokensPerSecond"] = 512 * 1000 / ms.value
    finally:
        lib.me_destroy(h)
    return out


def bench_transformers(name):
    D, L, V = SHAPES[name]
    if is_mamba2(name):
        from transformers import Mamba2Config, Mamba2ForCausalLM
        cfg = Mamba2Config(hidden_size=D, num_hidden_layers=L, vocab_size=V, state_size=128, head_dim=64, num_heads=2 * D // 64, n_groups=1, expand=2,
                           tie_word_embeddings=True)
        cls = Mamba2ForCausalLM
    else:
        from transformers import MambaConfig, MambaForCausalLM
        cfg = MambaConfig(hidden_size=D, num_hidden_layers=L, vocab_size=V, state_size=16, tie_word_embeddings=True)
        cls = MambaForCausalLM
    with torch.device(dev):
        model = cls(cfg).half().eval()
    ids = torch.randint(0, V, (1, 8), device=dev)

    def gen(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    gen(2)
    n = 24
    per_token = (gen(n + 1) - gen(1)) / n * 1e3
    prompt = torch.randint(0, V, (1, 512), device=dev)
    with torch.no_grad():
        model(prompt)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(prompt)
        torch.cuda.synchronize()
    prefill = (time.perf_counter() - t0) * 1e3
    del model
    torch.cuda.empty_cache()
    return {"decodeMsB1": per_token, "prefill512Ms": prefill, "fastKernels": False}


def main():
    shapes = sys.argv[3:] or list(SHAPES)
    bw = copy_bandwidth()
    print(f"device-to-device copy: {bw / 1e12:.2f} TB/s (read + write)", flush=True)
    results = {"device": torch.cuda.get_device_name(), "copyBandwidthTBs": bw / 1e12, "engines": [], "transformers": []}
    for name in shapes:
        for recipe in RECIPES:
            path = os.path.join(tmp, f"{name}-{recipe}.mamba")
            t0 = time.time()
            try:
                if not (KEEP and os.path.exists(os.path.join(path, "manifest.json"))):
                    write_engine(name, recipe, path)
                r = bench_engine(path)
                r.update({"shape": name, "recipe": recipe})
                r["floorMs"] = r["weightBytes"] / bw * 1e3
                r["ratioToFloor"] = r["decodeMsB1"] / r["floorMs"]
                results["engines"].append(r)
                print(f"{name:11} {recipe:6} decode b1 {r['decodeMsB1']:.3f} ms (floor {r['floorMs']:.3f}, x{r['ratioToFloor']:.2f})  "
                      f"tok/s b1 {r['tokensPerSecondB1']:.0f} b8 {r['tokensPerSecondB8']:.0f} b32 {r['tokensPerSecondB32']:.0f}  "
                      f"prefill512 {r['prefill512Ms']:.1f} ms  [{time.time() - t0:.0f} s]" + "".join(f"  ({x})" for x in r["engine"].split(", ")[2:]), flush=True)
            except Exception as ex:  # one failure must not hide the other results
                print(f"{name} {recipe}: FAILED {ex}", flush=True)
                results["engines"].append({"shape": name, "recipe": recipe, "error": str(ex)})
            if not KEEP:
                shutil.rmtree(path, ignore_errors=True)
        if os.environ.get("ME_NO_TRANSFORMERS"):
            continue
        try:
            tr = bench_transformers(name)
            tr["shape"] = name
            results["transformers"].append(tr)
            print(f"{name:11} transformers fp16 decode b1 {tr['decodeMsB1']:.2f} ms  prefill512 {tr['prefill512Ms']:.1f} ms", flush=True)
        except ImportError as ex:  # the comparison is optional; the skip says why
            print(f"{name} transformers: skipped ({ex})", flush=True)
            results["transformers"].append({"shape": name, "skipped": str(ex)})
        except Exception as ex:
            print(f"{name} transformers: FAILED {ex}", flush=True)
            results["transformers"].append({"shape": name, "error": str(ex)})
    json.dump(results, open(sys.argv[2], "w"), indent=1)
    failed = [r for r in results["engines"] + results["transformers"] if "error" in r]
    print(f"benchmark: {len(failed)} of {len(results['engines']) + len(results['transformers'])} runs failed", flush=True)
    sys.exit(1 if failed or not results["engines"] else 0)


if __name__ == "__main__":
    main()
