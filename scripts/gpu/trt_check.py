#!/usr/bin/env python3
"""Compares what trt_harness wrote (every plugin's inputs and outputs, TensorRT 10.3's calling
sequence reproduced, not TensorRT) with a PyTorch float64 reference of each op of
engines/native/trt/OPS.md. Prints one line per case and run, then `N passed, M failed` last;
exits 1 on any failure. Writes a JSON record (machine, date, commit, per-case max errors).

  trt_check.py DIR RECORD.json

Criteria: float outputs, max |out - ref| / max |ref| under 2e-3 (float32 nodes) or 4e-3 (float16
nodes); fake-quantized outputs the same, except that at most 1% of the elements may sit one
quantization step away (a value at a rounding boundary); int8 outputs at most one step away, at
most 1% of them. NaN (the poison the outputs start as) never passes.
"""

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checks  # noqa: E402

f64 = torch.float64
NP = {"f32": np.float32, "f16": np.float16, "i8": np.int8}


def load(dirname, run):
    raw = open(os.path.join(dirname, run["file"]), "rb").read()
    ins, outs = {}, {}
    for t in run["tensors"]:
        n = int(np.prod(t["shape"])) if t["shape"] else 1
        a = np.frombuffer(raw, dtype=NP[t["dtype"]], count=n, offset=t["offset"]).reshape(t["shape"])
        (ins if t["io"] == "in" else outs)[t["name"]] = (torch.from_numpy(a.astype(np.float64)), t["dtype"])
    return {k: v[0] for k, v in ins.items()}, outs


def silu(x):
    return x * torch.sigmoid(x)


def quant(v, s):
    return torch.clamp(torch.round(v / s), -128, 127)  # round half to even, as QuantizeLinear


def fakequant(v, s):
    """per-element scale s (a tensor broadcast to v) or a float; 0: none"""
    s = torch.as_tensor(s, dtype=f64).expand_as(v)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return torch.where(s > 0, quant(v, safe) * safe, v)


def out_of(v, a, key="out_scale", i8key="out_int8"):
    """the op's output y: int8 codes, fake-quantized, or as is; and its quantization step"""
    s = a.get(key, 0.0)
    if a.get(i8key, 0):
        return quant(v, s), ("i8", s)
    if s > 0:
        return fakequant(v, s), ("fq", torch.full_like(v, s))
    return v, ("f", None)


# ---- references -------------------------------------------------------------------------------------
def conv(i, a, prefill):
    x = i["x"] if prefill else i["x"][:, None, :]  # (B, T, C)
    st, w, b = i["state"], i["w"], i["bias"]
    K, T = w.shape[1], x.shape[1]
    win = torch.cat([st, x.transpose(1, 2)], dim=2)  # (B, C, K-1+T), oldest first
    acc = b[None, :, None] + sum(w[None, :, k, None] * win[:, :, k : k + T] for k in range(K))
    y = silu(acc).transpose(1, 2)  # (B, T, C)
    qs = i["qscale"].expand_as(y)
    rows = (lambda t: t) if prefill else (lambda t: t[:, 0])
    res = {
        "y": (rows(fakequant(y, qs)), ("fq", rows(qs)) if (i["qscale"] > 0).any() else ("f", None)),
        "state_out": (win[:, :, T:], ("f", None)),
    }
    if a.get("int8_scale", 0) > 0:
        res["y_q"] = (rows(quant(y, a["int8_scale"])), ("i8", a["int8_scale"]))
    return res


def selective(i, a, prefill):
    sq = (lambda t: t) if prefill else (lambda t: t[:, None])
    xdbl, x, z = sq(i["xdbl"]), sq(i["x"]), sq(i["z"])
    h, dtw, dtb, A, D = i["state"].clone(), i["dt_w"], i["dt_b"], i["A"], i["D"]
    E, N = A.shape
    R = dtw.shape[1]
    dtl, Bm, Cm = xdbl[..., :R], xdbl[..., R : R + N], xdbl[..., R + N :]
    Bm, Cm = fakequant(Bm, a.get("b_scale", 0.0)), fakequant(Cm, a.get("c_scale", 0.0))
    dt = F.softplus(dtl @ dtw.T + dtb, beta=1, threshold=20)  # (B, T, E)
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[:, :, None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + D * x[:, t])
    y = torch.stack(ys, 1) * silu(z)
    y = y if prefill else y[:, 0]
    return {"y": out_of(y, a), "state_out": (h, ("f", None))}


def ssd(i, a, prefill):
    sq = (lambda t: t) if prefill else (lambda t: t[:, None])
    dt, xbc = sq(i["dt"]), sq(i["xbc"])
    S = i["state"].clone()
    Bsz, H, P, N = S.shape
    G = (xbc.shape[-1] - H * P) // (2 * N)
    x = xbc[..., : H * P].reshape(*xbc.shape[:2], H, P)
    Bm = xbc[..., H * P : H * P + G * N].reshape(*xbc.shape[:2], G, N).repeat_interleave(H // G, dim=2)
    Cm = xbc[..., H * P + G * N :].reshape(*xbc.shape[:2], G, N).repeat_interleave(H // G, dim=2)
    d = F.softplus(dt + i["dt_bias"], beta=1, threshold=20).clamp(a.get("dt_min", 0.0), a.get("dt_max", 3.4e38))
    ys = []
    for t in range(x.shape[1]):
        dA = torch.exp(d[:, t] * i["A"])  # (B, H)
        S = S * dA[:, :, None, None] + (d[:, t, :, None] * x[:, t])[..., None] * Bm[:, t, :, None, :]
        ys.append((S * Cm[:, t, :, None, :]).sum(-1) + i["D"][:, None] * x[:, t])
    y = torch.stack(ys, 1).reshape(*x.shape[:2], H * P)
    if a.get("gate", 0):
        y = y * silu(sq(i["z"]))
    return {"y": (y if prefill else y[:, 0], ("f", None)), "state_out": (S, ("f", None))}


def rmsnorm(i, a):
    h = i["x"] + i["residual"] if a.get("has_residual", 0) else i["x"]
    y = h / torch.sqrt((h * h).mean(-1, keepdim=True) + a.get("eps", 1e-5)) * i["w"]
    res = {"y": out_of(y, a, "scale")}
    if a.get("has_residual", 0):
        res["sum"] = (h, ("f", None))
    return res


def hadamard_matrix(n):
    idx = torch.arange(n)
    bits = torch.bitwise_and(idx[:, None], idx[None, :])
    pop = torch.zeros_like(bits)
    for k in range(int(n).bit_length()):
        pop += (bits >> k) & 1
    return (1 - 2 * (pop % 2)).to(f64)


def hadamard(i, a):
    v = i["y"]
    gate, nbg, gs, hb = a.get("gate", 0), a.get("norm_before_gate", 0), int(a.get("group_size", 0)), int(a.get("hadamard_block", 0))
    if gate and not nbg:
        v = v * silu(i["z"])
    if gs > 0:
        g = v.reshape(*v.shape[:-1], -1, gs)
        g = g / torch.sqrt((g * g).mean(-1, keepdim=True) + a.get("eps", 1e-5))
        v = g.reshape(v.shape) * i["w"]
    if gate and nbg:
        v = v * silu(i["z"])
    if hb > 1:
        blocks = v.reshape(*v.shape[:-1], -1, hb)
        v = (blocks @ hadamard_matrix(hb) / hb**0.5).reshape(v.shape)
        hm = int(a.get("hadamard_factor", 1))
        if hm > 1:  # then H_hm (Paley) across the hm blocks: out[a', c] = sum_a H[a, a'] v[a, c]
            blocks = v.reshape(*v.shape[:-1], hm, hb)
            v = (paley(hm).T @ blocks / hm**0.5).reshape(v.shape)
    return {"out": out_of(v, a, "scale")}


def paley(order):
    return torch.tensor(checks.paley(order), dtype=f64)


PREFILL = ("ConvPrefill", "SelectiveScan", "SsdScan")
REF = {
    "ConvPrefill": lambda i, a: conv(i, a, True),
    "ConvStep": lambda i, a: conv(i, a, False),
    "SelectiveScan": lambda i, a: selective(i, a, True),
    "SelectiveStep": lambda i, a: selective(i, a, False),
    "SsdScan": lambda i, a: ssd(i, a, True),
    "SsdStep": lambda i, a: ssd(i, a, False),
    "RmsNormQuant": rmsnorm,
    "HadamardQuant": hadamard,
}


def compare(out, ref, mode, act):
    """(ok, metrics): see the module's docstring"""
    kind, step = mode
    if torch.isnan(out).any():
        return False, {"nan": int(torch.isnan(out).sum())}
    if out.shape != ref.shape:
        return False, {"shape": [list(out.shape), list(ref.shape)]}
    if kind == "i8":
        d = (out - ref).abs()
        frac = float((d > 0).double().mean())
        return bool(d.max() <= 1 and frac <= 0.01), {"max_steps": float(d.max()), "off_by_one": frac}
    tol = 4e-3 if act == "f16" else 2e-3
    scale = max(float(ref.abs().max()), 1e-6)
    d = (out - ref).abs()
    rel = float(d.max()) / scale
    if kind == "fq":
        far = d > tol * scale
        frac = float(far.double().mean())
        within = bool((d <= step * 1.001 + tol * scale).all())
        rest = float(torch.where(far, torch.zeros_like(d), d).max()) / scale
        return within and frac <= 0.01 and rest <= tol, {"max_rel": rel, "steps_off": frac}
    return rel <= tol, {"max_rel": rel}


def main():
    dirname, record = sys.argv[1], sys.argv[2]
    m = json.load(open(os.path.join(dirname, "cases.json")))
    print(m["label"])
    passed = failed = 0
    results = []
    for c in m["cases"]:
        entry = {"name": c["name"], "op": c["op"], "act": c["act"], "attrs": c["attrs"], "sequence_errors": c["sequence_errors"], "runs": []}
        if c["sequence_errors"] or not c["runs"]:
            failed += 1
            print(f"FAIL {c['name']}: calling sequence: {'; '.join(c['sequence_errors']) or 'no runs'}")
            entry["ok"] = False
            results.append(entry)
            continue
        case_ok = True
        for run in c["runs"]:
            ins, outs = load(dirname, run)
            ref = REF[c["op"]](ins, c["attrs"])
            per = {}
            run_ok = True
            for name, (out, _dt) in outs.items():
                r, mode = ref[name]
                ok, metrics = compare(out, r, mode, c["act"])
                per[name] = dict(metrics, ok=ok)
                run_ok &= ok
            case_ok &= run_ok
            shape = f"B={run['B']}" + (f" T={run['T']}" if c["op"] in PREFILL else "")
            desc = ", ".join(f"{k} " + " ".join(f"{mk}={mv:.2e}" if isinstance(mv, float) else f"{mk}={mv}" for mk, mv in v.items() if mk != "ok") for k, v in per.items())
            print(f"{'ok  ' if run_ok else 'FAIL'} {c['name']} {shape}{' aliased' if run['aliased_states'] else ''}: {desc}")
            entry["runs"].append({"B": run["B"], "T": run["T"], "aliased_states": run["aliased_states"], "outputs": per, "ok": run_ok})
        entry["ok"] = case_ok
        passed += case_ok
        failed += not case_ok
        results.append(entry)
    # $COMMIT (as gpu-check.sh passes it) first: a copied tree's git metadata may be stale
    commit = os.environ.get("COMMIT") or os.environ.get("TRT_CHECK_COMMIT")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    rec = {
        "kind": "trt-harness",
        "label": m["label"],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": {"gpu": m["gpu"], "sm": m["sm"], "host": platform.node(), "torch": torch.__version__},
        "seed": m["seed"],
        "passed": passed,
        "failed": failed,
        "cases": results,
    }
    with open(record, "w") as f:
        json.dump(rec, f, indent=1)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
