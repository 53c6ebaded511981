// The GPU check's Python scripts (and the tools beside them in scripts/gpu) call the native library
// through ctypes, which checks nothing: a call with one argument too few or a function the library
// no longer exports would only show on the GPU machine. Here, without a GPU: every call in those
// scripts matches the C signature's parameter count, and the built library exports every function
// they name. And scripts/gpu-check.sh's exit status and count: its GPU steps replaced by stubs (its
// GPU_CHECK_STEP_RUNNER), the script's own control flow and the real report.py decide.
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { cudaLibraryPath } from "../runtime/backends/cuda.js";
import { gpuRequired, skipWhen } from "./helpers/skip.js";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const read = (f: string) => readFileSync(join(root, f), "utf8");

/** the text between the bracket at `open` and its match, split at top-level commas */
function topLevelArgs(text: string, open: number): string[] {
  const close: Record<string, string> = { "(": ")", "[": "]", "{": "}" };
  const stack: string[] = [];
  const args: string[] = [];
  let start = open + 1;
  for (let i = open; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"' || ch === "'") {
      i = text.indexOf(ch, i + 1); // the scripts' strings hold no escaped quotes
      continue;
    }
    if (ch in close) stack.push(close[ch]);
    else if (ch === stack[stack.length - 1]) {
      stack.pop();
      if (stack.length === 0) {
        args.push(text.slice(start, i));
        return args.map((a) => a.trim()).filter((a) => a !== "");
      }
    } else if (ch === "," && stack.length === 1) {
      args.push(text.slice(start, i));
      start = i + 1;
    }
  }
  throw new Error(`unbalanced brackets after offset ${open}`);
}

/** parameter counts of the library's extern "C" functions, from their definitions */
function cSignatures(): Map<string, number> {
  const sig = new Map<string, number>();
  for (const f of ["engines/native/kernels/capi.cu", "engines/native/runner/engine.cu"]) {
    const text = read(f);
    for (const m of text.matchAll(/^[A-Za-z_][\w ]*\*?\s*(me_\w+)\(/gm)) {
      const params = topLevelArgs(text, m.index! + m[0].length - 1);
      sig.set(m[1], params.length === 1 && params[0] === "void" ? 0 : params.length);
    }
  }
  return sig;
}

/** every Python script of the GPU check and its tools */
const gpuScripts = () =>
  readdirSync(join(root, "scripts/gpu"))
    .filter((f) => f.endsWith(".py"))
    .map((f) => `scripts/gpu/${f}`);

/** direct calls lib.me_…(args…) in the scripts: file, name, argument count, line */
function directCalls(): { file: string; name: string; args: number; line: number }[] {
  return gpuScripts().flatMap((file) => {
    const text = read(file);
    return [...text.matchAll(/\blib\.(me_\w+)\(/g)].map((m) => ({
      file,
      name: m[1],
      args: topLevelArgs(text, m.index! + m[0].length - 1).length,
      line: text.slice(0, m.index).split("\n").length,
    }));
  });
}

/** calls of the kernel check's call("me_…", args…) helper: name, argument count, line */
function kernelCheckCalls(): { name: string; args: number; line: number }[] {
  const text = read("scripts/gpu/kernel_check.py");
  return [...text.matchAll(/\bcall\("(me_\w+)"/g)].map((m) => {
    const args = topLevelArgs(text, m.index! + "call".length);
    return { name: m[1], args: args.length - 1, line: text.slice(0, m.index).split("\n").length };
  });
}

describe("the GPU check scripts against the native library's C API", () => {
  const sig = cSignatures();

  it("reads the library's signatures", () => {
    // the parser itself: known definitions, with and without parameters
    expect(sig.get("me_device_count")).toBe(0);
    expect(sig.get("me_create")).toBe(3);
    expect(sig.get("me_k_embed")).toBe(5);
  });

  it("every kernel-check call passes as many arguments as the function takes", () => {
    const calls = kernelCheckCalls();
    expect(calls.length).toBeGreaterThan(10);
    const wrong = calls
      .filter((c) => sig.get(c.name) !== c.args)
      .map(
        (c) => `kernel_check.py:${c.line} ${c.name}: ${c.args} arguments, the library's takes ${sig.get(c.name) ?? "(no such function)"}`,
      );
    expect(wrong).toEqual([]);
  });

  it("every direct lib.me_…() call in the scripts passes as many arguments as the function takes", () => {
    const calls = directCalls();
    expect(calls.map((c) => c.name)).toEqual(expect.arrayContaining(["me_k_gemv_time", "me_k_i4row_grid", "me_create"]));
    const wrong = calls
      .filter((c) => sig.get(c.name) !== c.args)
      .map((c) => `${c.file}:${c.line} ${c.name}: ${c.args} arguments, the library's takes ${sig.get(c.name) ?? "(no such function)"}`);
    expect(wrong).toEqual([]);
  });

  it("ctypes argument lists in bench.py match the signatures they declare", () => {
    const text = read("scripts/gpu/bench.py");
    const declared = [...text.matchAll(/lib\.(me_\w+)\.argtypes = \[/g)].map((m) => ({
      name: m[1],
      args: topLevelArgs(text, m.index! + m[0].length - 1).length,
    }));
    for (const m of text.matchAll(/getattr\(lib, f\)\.argtypes = \[/g)) {
      const n = topLevelArgs(text, m.index! + m[0].length - 1).length;
      const names = text.slice(0, m.index).match(/for f in \(([^)]*)\)[^\n]*\n\s*$/);
      for (const name of names?.[1].match(/me_\w+/g) ?? []) declared.push({ name, args: n });
    }
    expect(declared.map((d) => d.name)).toEqual(expect.arrayContaining(["me_create", "me_bench_step", "me_bench_prefill"]));
    const wrong = declared.filter((d) => sig.get(d.name) !== d.args).map((d) => `${d.name}: ${d.args} argtypes, takes ${sig.get(d.name)}`);
    expect(wrong).toEqual([]);
  });

  it.skipIf(
    skipWhen(
      !existsSync(cudaLibraryPath()),
      "the native library is not built (cmake -S engines/native -B engines/native/build)",
      gpuRequired,
    ),
  )("the built library exports every function the scripts name", async () => {
    const names = new Set<string>();
    for (const f of gpuScripts()) for (const m of read(f).matchAll(/\b(me_[a-z0-9_]+)/g)) names.add(m[1]);
    const koffi = (await import("koffi")).default;
    const lib = koffi.load(cudaLibraryPath());
    const missing = [...names].filter((n) => {
      try {
        lib.func(`int ${n}()`); // only looks the symbol up
        return false;
      } catch {
        return true;
      }
    });
    expect(missing).toEqual([]);
  });
});

// ---- gpu-check.sh's exit logic, without a GPU -----------------------------------------------------

const hasPython = spawnSync("python3", ["--version"]).status === 0;
const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-gpu-check-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** stands in for each step: STUB_DIR/STEP.sh runs if present, STEP.json becomes $OUT/STEP.json, STEP.rc is its exit status */
const stub = join(scratch, "step-stub.sh");
writeFileSync(
  stub,
  `#!/usr/bin/env bash
set -euo pipefail
step=$1
echo "stub of step $step for: \${*:2}"
[ ! -f "$STUB_DIR/$step.json" ] || cp "$STUB_DIR/$step.json" "$OUT/$step.json"
[ ! -f "$STUB_DIR/$step.sh" ] || bash "$STUB_DIR/$step.sh"
exit "$(cat "$STUB_DIR/$step.rc" 2>/dev/null || echo 0)"
`,
);
chmodSync(stub, 0o755);

/** the kernel check's cases written and judged by scripts/gpu/checks.py, as kernel_check.py does; the second case's tolerance given */
const kernelCases = (tolerance: number) => `python3 - "$OUT/kernels.json" <<'PY'
import sys
sys.path.insert(0, "scripts/gpu")
import checks
rows = [checks.case("gemv", "M=1 N=1536 K=768", 3.1e-4, 2e-3), checks.case("gemv", "M=8 N=1536 K=768", 2.9e-4, ${tolerance})]
checks.finish(rows, sys.argv[1], "kernels")
PY
`;
const e2eRow = (recipe: string, ok = true) => ({
  model: "mamba1-brown",
  recipe,
  cudaVsRef: 4.1e-4,
  ortVsRef: 3.2e-4,
  cudaVsOrt: 2.5e-4,
  tolerance: 2e-3,
  stateRoundTrip: 0,
  stateClone: 0,
  ok,
});
/** vitest's JSON report of test/cuda.test.ts: its tests' states, the file's state and message */
const vitestReport = (tests: [string, string][], fileStatus = "passed", message = "") => ({
  numPassedTests: tests.filter((t) => t[1] === "passed").length,
  numFailedTests: tests.filter((t) => t[1] === "failed").length,
  numPendingTests: tests.filter((t) => t[1] === "skipped").length,
  numTodoTests: 0,
  numFailedTestSuites: fileStatus === "failed" ? 1 : 0,
  testResults: [
    {
      name: join(root, "test", "cuda.test.ts"),
      status: fileStatus,
      message,
      assertionResults: tests.map(([title, status]) => ({ ancestorTitles: ["cuda backend on a GPU"], title, status, failureMessages: [] })),
    },
  ],
});
const benchResults = {
  device: "stub",
  copyBandwidthTBs: 3.0,
  engines: [
    {
      shape: "mamba-130m",
      recipe: "fp16",
      decodeMsB1: 0.41,
      floorMs: 0.09,
      ratioToFloor: 4.6,
      tokensPerSecondB1: 2439,
      tokensPerSecondB8: 17000,
      tokensPerSecondB32: 52000,
      prefill512Ms: 4.2,
    },
  ],
  transformers: [{ shape: "mamba-130m", decodeMsB1: 9.1, prefill512Ms: 31 }],
};

type Stub = { json?: unknown; rc?: number; sh?: string };
/** the TensorRT harness's record (scripts/gpu/trt_check.py): one case per plugin and format */
const trtRecord = (okSecond = true) => ({
  kind: "trt-harness",
  label: "TensorRT 10.3's calling sequence reproduced, not TensorRT",
  passed: okSecond ? 2 : 1,
  failed: okSecond ? 0 : 1,
  cases: [
    { name: "conv_prefill_f32", sequence_errors: [], ok: true },
    { name: "ssd_step_f16", sequence_errors: okSecond ? [] : ["getOutputShapes: 2 outputs, expected 3"], ok: okSecond },
  ],
});

/** the steps as they pass on a GPU machine: 4 steps without cases + 2 kernel cases + 2 engines + 2 tests + 2 plugin cases + 2 benchmark runs */
const passing = (): Record<string, Stub> => ({
  kernels: { sh: kernelCases(2e-3) },
  e2e: { json: [e2eRow("fp16"), e2eRow("w8a8")] },
  vitest: {
    json: vitestReport([
      ["prefill and batched step logits within 2e-3 of the reference", "passed"],
      ["the CLI says in one line why cuda cannot run here, exit code 1", "skipped"],
      ["save / load round trip", "passed"],
    ]),
  },
  "trt-check": { json: trtRecord() },
  bench: { json: benchResults },
});

/** runs the real scripts/gpu-check.sh with each step replaced by the stub */
function gpuCheck(steps: Record<string, Stub>) {
  const dir = mkdtempSync(join(scratch, "run-"));
  const stubs = join(dir, "stubs");
  mkdirSync(stubs);
  for (const [name, s] of Object.entries(steps)) {
    if (s.json !== undefined) writeFileSync(join(stubs, `${name}.json`), JSON.stringify(s.json));
    if (s.rc !== undefined) writeFileSync(join(stubs, `${name}.rc`), String(s.rc));
    if (s.sh !== undefined) writeFileSync(join(stubs, `${name}.sh`), s.sh);
  }
  const out = join(dir, "out");
  const r = spawnSync("bash", [join(root, "scripts", "gpu-check.sh"), "--shapes", "mamba-130m"], {
    cwd: root,
    env: { ...process.env, OUT: out, GPU_CHECK_STEP_RUNNER: stub, STUB_DIR: stubs, COMMIT: "stub" },
    encoding: "utf8",
    timeout: 60_000,
  });
  const text = r.stdout + r.stderr;
  return {
    code: r.status,
    text,
    last: r.stdout.trimEnd().split("\n").at(-1),
    steps: readFileSync(join(out, "steps.tsv"), "utf8"),
    record: JSON.parse(readFileSync(join(out, "gpu-check.json"), "utf8")),
  };
}

describe.skipIf(skipWhen(!hasPython, "gpu-check.sh's exit logic: python3 is not installed (report.py runs on it)"))(
  "scripts/gpu-check.sh's exit status and count, its GPU steps replaced by stubs",
  () => {
    it("exits 0 when every step and every case passes, the last line counting them", () => {
      const r = gpuCheck(passing());
      expect(r.code, r.text).toBe(0);
      expect(r.last).toBe("14 passed, 0 failed");
      // each step got the command it stands in for
      expect(r.text).toMatch(/stub of step kernels for: python3 scripts\/gpu\/kernel_check\.py \S+libmamba_edge\.so \S+kernels\.json/);
      expect(r.text).toMatch(
        /stub of step e2e for: node scripts\/gpu\/e2e_check\.mjs \S+e2e\.json models\/mamba1-brown=\S+mamba1-brown-fp16\.mamba/,
      );
      expect(r.text).toMatch(/stub of step bench for: python3 scripts\/gpu\/bench\.py \S+ \S+bench\.json mamba-130m$/m);
      expect(r.text).toMatch(/stub of step calibration for: node scripts\/gpu\/calib-check\.mjs models\/mamba1-brown /);
      expect(r.record.summary).toMatchObject({ passed: 14, failed: 0 });
      expect(r.record.summary.skipped).toEqual([expect.stringMatching(/the CLI says in one line .* \(skipped\)/)]);
    });

    it("a kernel case outside a deliberately broken tolerance: exit non-zero, counted, the later steps still run", () => {
      const r = gpuCheck({ ...passing(), kernels: { sh: kernelCases(1e-5) } });
      expect(r.code).not.toBe(0);
      expect(r.last).toBe("13 passed, 1 failed");
      expect(r.text).toMatch(/^kernels: 1\/2 within tolerance$/m); // checks.finish, which exited 1
      expect(r.text).toMatch(/step kernels failed: exit status 1/);
      expect(r.text).toMatch(/FAILED: kernel gemv M=8 N=1536 K=768: error 2\.90e-04, tolerance 1e-05/);
      expect(r.steps).toMatch(/^e2e\t0\t$/m);
      expect(r.steps).toMatch(/^bench\t0\t$/m);
    });

    it("a step that crashes before writing its results counts as one failure", () => {
      const r = gpuCheck({ ...passing(), e2e: { sh: "echo 'TypeError: cannot read the engine' >&2", rc: 3 } });
      expect(r.code).not.toBe(0);
      expect(r.last).toBe("12 passed, 1 failed");
      expect(r.record.summary.failures).toEqual(["step e2e: exit status 3, no results written"]);
    });

    it("results with a failing case fail the check even when their step exits 0", () => {
      const r = gpuCheck({ ...passing(), e2e: { json: [e2eRow("fp16"), { ...e2eRow("w4a16", false), cudaVsRef: null }] } });
      expect(r.code).not.toBe(0);
      expect(r.last).toBe("13 passed, 1 failed");
      expect(r.record.summary.failures).toEqual(["e2e mamba1-brown w4a16: cuda vs reference inf"]);
    });

    it("a TensorRT plugin case that fails its calling sequence fails the check, named", () => {
      const r = gpuCheck({ ...passing(), "trt-check": { json: trtRecord(false), rc: 1 } });
      expect(r.code).not.toBe(0);
      expect(r.last).toBe("13 passed, 1 failed");
      expect(r.text).toMatch(/stub of step trt-check for: bash scripts\/gpu\/trt-check\.sh$/m);
      expect(r.record.summary.failures).toEqual(["trt ssd_step_f16: getOutputShapes: 2 outputs, expected 3"]);
    });

    it("a failed build: the steps that need it do not run and count as failed", () => {
      const r = gpuCheck({ ...passing(), build: { sh: "echo 'nvcc: command not found'", rc: 127 } });
      expect(r.code).not.toBe(0);
      expect(r.last).toBe("4 passed, 6 failed");
      expect(r.text).not.toMatch(/stub of step (kernels|calibration|e2e|vitest|bench)/);
      for (const s of ["kernels", "calibration", "e2e", "vitest", "bench"]) expect(r.steps).toContain(`${s}\t1\tnot run: build failed`);
    });

    it("GPU tests left out on purpose (vitest not packed) are a skip with its reason, not a failure", () => {
      const why = "vitest was not packed (scripts/gpu/pack-node.sh --no-vitest)";
      const r = gpuCheck({ ...passing(), vitest: { json: { skipped: why } } });
      expect(r.code, r.text).toBe(0);
      expect(r.last).toBe("12 passed, 0 failed");
      expect(r.record.summary.skipped).toEqual([`vitest: ${why}`]);
      // the same marker from a step that failed is still a failure
      const bad = gpuCheck({ ...passing(), vitest: { json: { skipped: why }, rc: 1 } });
      expect(bad.code).not.toBe(0);
      expect(bad.last).toBe("12 passed, 1 failed");
    });

    it("the GPU tests failing to start (a GPU required, none seen) are a failure, not skipped tests", () => {
      const message =
        "cuda backend on a GPU: no CUDA GPU on this machine; not skipped: MAMBA_EDGE_REQUIRE_GPU=1 requires the native library and a GPU";
      const r = gpuCheck({ ...passing(), vitest: { json: vitestReport([], "failed", message), rc: 1 } });
      expect(r.code).not.toBe(0);
      expect(r.last).toBe("12 passed, 1 failed");
      expect(r.record.summary.failures).toEqual([`vitest test/cuda.test.ts: ${message}`]);
    });
  },
);

describe("scripts/gpu/e2e_check.mjs's exit status (no GPU needed)", () => {
  it("an engine that cannot be opened is a failing row, and the script exits 1", () => {
    const out = join(scratch, "e2e.json");
    const missing = join(scratch, "mamba1-brown-fp16.mamba");
    const r = spawnSync(process.execPath, [join(root, "scripts/gpu/e2e_check.mjs"), out, `models/mamba1-brown=${missing}`], {
      cwd: root,
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stdout).toMatch(/end-to-end: 0\/1 engines within tolerance/);
    expect(JSON.parse(readFileSync(out, "utf8"))).toEqual([
      expect.objectContaining({ model: "mamba1-brown", recipe: "fp16", ok: false, error: expect.stringContaining(missing) }),
    ]);
  });

  it("no engine given is not a pass", () => {
    const r = spawnSync(process.execPath, [join(root, "scripts/gpu/e2e_check.mjs"), join(scratch, "none.json")], {
      cwd: root,
      encoding: "utf8",
    });
    expect(r.status).toBe(1);
  });
});
