"""Merges the GPU check's parts in DIR (steps.tsv from gpu-check.sh; kernels.json, e2e.json,
bench.json, vitest.json, trt-check.json) into DIR/gpu-check.json with the device, date and commit ($COMMIT or
$MAMBA_EDGE_COMMIT, else git's: a copied tree's git metadata may be stale) and the MAMBA_EDGE_*
settings it ran under, prints the summary tables, and counts: each kernel case, end-to-end engine,
benchmark run, vitest test and TensorRT plugin case is one check, and so is each step that has no cases of its own, or
that failed while none of its cases did (a crash, results not written). The last line printed is
"N passed, M failed"; exits 1 when M > 0 or nothing passed. Usage: report.py DIR"""
import datetime, json, os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checks

d = sys.argv[1]


def load(name):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        return None
    try:
        with open(p) as f:
            return json.load(f)
    except ValueError as ex:
        return {"unreadable": f"{name}: {ex}"}


def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip() or None
    except OSError:
        return None


# steps.tsv: NAME, exit status, note (why it did not run); absent when report.py is run on its own
steps = []
if os.path.exists(os.path.join(d, "steps.tsv")):
    with open(os.path.join(d, "steps.tsv")) as f:
        for line in f:
            if line.strip():
                name, rc, note = (line.rstrip("\n").split("\t") + [""])[:3]
                steps.append({"step": name, "status": int(rc), "note": note})
ran = {s["step"]: s for s in steps}

kernels, e2e, bench, vitest, trt = (load(n) for n in ("kernels.json", "e2e.json", "bench.json", "vitest.json", "trt-check.json"))
device, torch_version = None, None
try:
    import torch

    torch_version = torch.__version__
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else None
except ImportError:
    pass
if device is None and isinstance(bench, dict):
    device = bench.get("device")
commit = os.environ.get("COMMIT") or os.environ.get("MAMBA_EDGE_COMMIT") or run("git", "rev-parse", "--short", "HEAD")
out = {
    "tool": "scripts/gpu-check.sh",
    "device": device,
    "driver": run("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"),
    "torch": torch_version,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "commit": commit,
    "settings": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MAMBA_EDGE_") and k != "MAMBA_EDGE_COMMIT"},
    "steps": steps,
    "kernels": kernels,
    "endToEnd": e2e,
    "bench": bench,
    "vitest": None,
    "trt": trt,
}
try:
    import transformers

    out["transformers"] = transformers.__version__
except Exception:
    pass

passed, failed, skipped = 0, [], []


def count(ok, what):
    global passed
    if ok:
        passed += 1
    else:
        failed.append(what)


def cases(step, rows, judge):
    """counts a step's cases; the step itself counts only when it failed while none of its cases did"""
    s = ran.get(step)
    if s is None and rows is None:
        return
    why = s and s["status"] != 0 and f"step {step}: {s['note'] or 'exit status ' + str(s['status'])}"
    bad = len(failed)
    if isinstance(rows, dict) and "unreadable" in rows:
        failed.append(rows["unreadable"])
    elif isinstance(rows, dict) and "skipped" in rows and not why:
        skipped.append(f"{step}: {rows['skipped']}")  # the step chose not to run, and said why
    elif rows is None:
        failed.append(why + ("" if s["note"] else ", no results written") if why else f"{step}: no results written")
    elif not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        failed.append(f"{step}: results of an unexpected shape")
    else:
        for r in rows:
            judge(r)
    if why and len(failed) == bad:
        failed.append(why)


sci = lambda v: "inf" if v is None else f"{v:.2e}"
settings = "".join(f", {k}={v}" for k, v in out["settings"].items())
print(f"device {out['device']}, commit {commit}, {out['date']}{settings}")
for s in steps:
    if s["step"] not in ("kernels", "e2e", "bench", "vitest", "trt-check"):
        count(s["status"] == 0, f"step {s['step']}: {s['note'] or 'exit status ' + str(s['status'])}")
    print(f"step {s['step']:8} {'ok' if s['status'] == 0 else 'FAIL (' + (s['note'] or 'exit status ' + str(s['status'])) + ')'}")

k = kernels if isinstance(kernels, list) else []
cases("kernels", kernels, lambda r: count(checks.passed(r), f"kernel {r.get('kernel')} {r.get('case')}: error {sci(r.get('relError'))}, tolerance {r.get('tolerance')}"))
if k:
    errs = [r.get("relError") for r in k]
    worst = None if None in errs else max(errs)
    print(f"kernels within tolerance: {sum(checks.passed(r) for r in k)}/{len(k)}; worst {sci(worst)}")
    for r in k:
        if not checks.passed(r):
            print(f"  FAIL {r.get('kernel')} {r.get('case')}: error {sci(r.get('relError'))}, tolerance {r.get('tolerance')}")


def e2e_row(r):
    ok = r.get("ok") is True and checks.within(r.get("cudaVsRef"), r.get("tolerance"))
    count(ok, f"e2e {r.get('model')} {r.get('recipe')}: {r.get('error') or 'cuda vs reference ' + sci(r.get('cudaVsRef'))}")
    if "error" in r:
        print(f"e2e {r.get('model', '?'):13} {r.get('recipe', '?'):10} FAIL {r['error']}")
    else:
        print(f"e2e {r['model']:13} {r['recipe']:10} cuda-ref {sci(r['cudaVsRef'])} ort-ref {sci(r['ortVsRef'])} tol {sci(r['tolerance'])} {'ok' if ok else 'FAIL'}")


cases("e2e", e2e, e2e_row)

b = bench if isinstance(bench, dict) and "engines" in bench else None
tr = {}
if b:
    print(f"copy bandwidth {b['copyBandwidthTBs']:.2f} TB/s")
    print("shape       recipe  ms/tok b1  floor ms  x floor  tok/s b1  tok/s b8  tok/s b32  prefill512 ms  transformers ms/tok  speedup")
    tr = {t["shape"]: t for t in b.get("transformers", []) if "decodeMsB1" in t}


def bench_row(r):
    count("error" not in r, f"bench {r.get('shape')} {r.get('recipe')}: {r.get('error')}")
    if "error" in r:
        print(f"{r['shape']:11} {r['recipe']:6} FAILED {r['error'][:80]}")
        return
    t = tr.get(r["shape"])
    print(f"{r['shape']:11} {r['recipe']:6} {r['decodeMsB1']:9.3f}  {r['floorMs']:8.3f}  {r['ratioToFloor']:7.2f}  {r['tokensPerSecondB1']:8.0f}  {r['tokensPerSecondB8']:8.0f}  {r['tokensPerSecondB32']:9.0f}  {r['prefill512Ms']:13.1f}  "
          f"{(t['decodeMsB1'] if t else float('nan')):19.2f}  {(t['decodeMsB1'] / r['decodeMsB1'] if t else float('nan')):7.1f}")


def transformers_row(t):
    if "skipped" in t:
        skipped.append(f"transformers {t['shape']}: {t['skipped']}")
    else:
        count("error" not in t, f"transformers {t.get('shape')}: {t.get('error')}")


cases("bench", b["engines"] + b.get("transformers", []) if b else bench, lambda r: bench_row(r) if "recipe" in r else transformers_row(r))


def vitest_file(f):
    name = os.path.relpath(f.get("name", "?"), os.getcwd())
    tests = f.get("assertionResults", [])
    for t in tests:
        title = " > ".join(t.get("ancestorTitles", []) + [t.get("title", "")])
        if t.get("status") in ("passed", "failed"):
            count(t["status"] == "passed", f"vitest {name}: {title}")
        else:
            skipped.append(f"vitest {name}: {title} ({t.get('status')})")
    if f.get("status") == "failed" and not any(t.get("status") == "failed" for t in tests):
        count(False, f"vitest {name}: {(f.get('message') or 'failed').splitlines()[0]}")  # e.g. an error while collecting


v = vitest if isinstance(vitest, dict) and "testResults" in vitest else None
cases("vitest", v["testResults"] if v else vitest, vitest_file)
if v:
    out["vitest"] = {"passed": v.get("numPassedTests"), "failed": v.get("numFailedTests"), "skipped": v.get("numPendingTests", 0) + v.get("numTodoTests", 0),
                     "failedFiles": v.get("numFailedTestSuites")}
    print(f"vitest: {out['vitest']['passed']} passed, {out['vitest']['failed']} failed, {out['vitest']['skipped']} skipped")

def trt_case(c):
    count(c.get("ok") is True, f"trt {c.get('name')}: {'; '.join(c.get('sequence_errors') or []) or 'outside tolerance'}")


t = trt if isinstance(trt, dict) and "cases" in trt else None
cases("trt-check", t["cases"] if t else trt, trt_case)
if t:
    print(f"trt plugins ({t.get('label')}): {t.get('passed')} passed, {t.get('failed')} failed")

for s in skipped:
    print(f"skipped: {s}")
for f in failed:
    print(f"FAILED: {f}")
out["summary"] = {"passed": passed, "failed": len(failed), "failures": failed, "skipped": skipped}
with open(os.path.join(d, "gpu-check.json"), "w") as f:
    json.dump(out, f, indent=1)
print(f"{passed} passed, {len(failed)} failed")
sys.exit(0 if passed > 0 and not failed else 1)
