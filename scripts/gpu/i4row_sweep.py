"""Sweeps the batch-1 4-bit row GEMV's grid (warps per 16-row tile P, tiles per block) at the GEMV
shapes of Mamba-1 models, timing each with the weights streamed from DRAM (me_k_gemv_time), beside
the rule's own choice (its grid and resident blocks per multiprocessor: me_k_i4row_plan) and the
int8 GEMV of the same shape. Prints a table per shape; writes JSON. --plan-only: the rule's grids
only, no timing (with MAMBA_EDGE_SMS=8: the grids the Orin Nano's 8 multiprocessors would get).
Usage: i4row_sweep.py LIB OUT.json [D ...] [--plan-only]   (D: model widths, default 768 2560)"""
import ctypes, datetime, json, os, sys
import torch
from mamba1_gemvs import layer_gemvs, ptr as p, random_weights

lib = ctypes.CDLL(sys.argv[1])
plan_only = "--plan-only" in sys.argv
widths = [int(a) for a in sys.argv[3:] if a != "--plan-only"] or [768, 2560]
F = ctypes.c_float


def time_gemv(wtype, n, k, norm, copies, iters=200):
    w, s = random_weights(wtype, n, k)
    ms = F()
    rc = lib.me_k_gemv_time(wtype, n, k, p(w), p(s), norm, 160 if norm else 0, copies, iters, ctypes.byref(ms))
    if rc:
        raise RuntimeError(f"me_k_gemv_time {n}x{k}: CUDA error {rc}")
    return ms.value * 1000


rows = []
for D in widths:
    for name, n, k in layer_gemvs(D):
        norm = int(name == "in_proj")  # (its RMSNorm taken from partial sums, as in the runner)
        copies = max(2, int(256e6 // (n * k // 2)) + 1)  # > 128 MB of 4-bit weights: beyond any L2
        nG = k // 64
        lib.me_k_i4row_grid(0, 0)
        plan = (ctypes.c_int * 4)()
        if lib.me_k_i4row_plan(n, k, norm, plan):
            raise RuntimeError(f"me_k_i4row_plan {n}x{k} failed")
        rule = {"P": plan[0], "tpb": plan[1], "blocks": plan[2], "residentPerSM": plan[3]}
        if plan_only:
            print(f"D={D} {name} {n}x{k}: P={rule['P']} tpb={rule['tpb']}, {rule['blocks']} blocks, {rule['residentPerSM']} resident per SM", flush=True)
            rows.append({"D": D, "matrix": name, "N": n, "K": k, "norm": bool(norm), "rule": rule})
            continue
        base = time_gemv(2, n, k, norm, copies)
        i8 = time_gemv(1, n, k, 0, max(2, copies // 2))
        res = []
        for P in [1, 2, 3, 4, 5, 6, 8, 10, 12, 16]:
            if P > nG:
                continue
            for tpb in [1, 2, 3, 4, 5, 6, 8, 16]:
                if P * tpb > 16:
                    continue
                lib.me_k_i4row_grid(P, tpb)
                res.append({"P": P, "tpb": tpb, "us": time_gemv(2, n, k, norm, copies)})
        lib.me_k_i4row_grid(0, 0)
        res.sort(key=lambda r: r["us"])
        mb = n * k / 2 / 1e6
        print(f"D={D} {name} {n}x{k} ({mb:.1f} MB 4-bit): rule (P={rule['P']} tpb={rule['tpb']}, {rule['blocks']} blocks, "
              f"{rule['residentPerSM']} resident per SM) {base:.2f} us, int8 {i8:.2f} us; best: " +
              ", ".join(f"P={r['P']} tpb={r['tpb']} {r['us']:.2f}" for r in res[:6]), flush=True)
        rows.append({"D": D, "matrix": name, "N": n, "K": k, "norm": bool(norm), "rule": rule, "ruleUs": base, "int8Us": i8, "sweep": res})
json.dump({"tool": "scripts/gpu/i4row_sweep.py", "date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(),
           "settings": {k: v for k, v in os.environ.items() if k.startswith("MAMBA_EDGE_")}, "planOnly": plan_only, "rows": rows}, open(sys.argv[2], "w"), indent=1)
