"""Merges the GPU check's parts (kernels.json, e2e.json, bench.json in DIR) into DIR/gpu-check.json
with the device, date and commit ($COMMIT or $MAMBA_EDGE_COMMIT, else git's: a copied tree's git
metadata may be stale) and the MAMBA_EDGE_* settings it ran under, and
prints the summary tables."""
import datetime, json, os, subprocess, sys

d = sys.argv[1]
load = lambda n: json.load(open(os.path.join(d, n))) if os.path.exists(os.path.join(d, n)) else None
commit = os.environ.get("COMMIT") or os.environ.get("MAMBA_EDGE_COMMIT") or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or None
import torch
out = {
    "tool": "scripts/gpu-check.sh",
    "device": torch.cuda.get_device_name(),
    "driver": subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip(),
    "torch": torch.__version__,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "commit": commit,
    "settings": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MAMBA_EDGE_") and k != "MAMBA_EDGE_COMMIT"},
    "kernels": load("kernels.json"),
    "endToEnd": load("e2e.json"),
    "bench": load("bench.json"),
}
try:
    import transformers
    out["transformers"] = transformers.__version__
except Exception:
    pass
json.dump(out, open(os.path.join(d, "gpu-check.json"), "w"), indent=1)
k, e, b = out["kernels"] or [], out["endToEnd"] or [], out["bench"]
sci = lambda v: "inf" if v is None else f"{v:.2e}"  # JSON has no Infinity: a non-finite error is written as null
print(f"device {out['device']}, commit {commit}, {out['date']}" + "".join(f", {k}={v}" for k, v in out["settings"].items()))
print(f"kernels within tolerance: {sum(r['ok'] for r in k)}/{len(k)}; worst {max((r['relError'] for r in k), default=0):.2e}")
for r in e:
    print(f"e2e {r['model']:13} {r['recipe']:10} cuda-ref {sci(r['cudaVsRef'])} ort-ref {sci(r['ortVsRef'])} tol {sci(r['tolerance'])} {'ok' if r['ok'] else 'FAIL'}")
if b:
    tr = {t["shape"]: t for t in b["transformers"] if "error" not in t}
    print(f"copy bandwidth {b['copyBandwidthTBs']:.2f} TB/s")
    print("shape       recipe  ms/tok b1  floor ms  x floor  tok/s b1  tok/s b8  tok/s b32  prefill512 ms  transformers ms/tok  speedup")
    for r in b["engines"]:
        if "error" in r:
            print(f"{r['shape']:11} {r['recipe']:6} FAILED {r['error'][:80]}")
            continue
        t = tr.get(r["shape"])
        print(f"{r['shape']:11} {r['recipe']:6} {r['decodeMsB1']:9.3f}  {r['floorMs']:8.3f}  {r['ratioToFloor']:7.2f}  {r['tokensPerSecondB1']:8.0f}  {r['tokensPerSecondB8']:8.0f}  {r['tokensPerSecondB32']:9.0f}  {r['prefill512Ms']:13.1f}  "
              f"{(t['decodeMsB1'] if t else float('nan')):19.2f}  {(t['decodeMsB1'] / r['decodeMsB1'] if t else float('nan')):7.1f}")
