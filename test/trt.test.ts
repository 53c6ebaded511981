// Backend trt where TensorRT is absent: the shim (engines/native/trt/shim) builds and loads here
// through koffi and says in one line that libnvinfer.so.10 is missing; `compile` and `--backend
// trt` fail with that line and exit 1; `--backend auto` runs ort and says why; the manifest's plan
// records survive the package loader, and a plan for another GPU or TensorRT version is refused.
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import onnxProto from "onnx-proto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserError } from "../engines/errors.js";
import { loadManifest, sha256File } from "../engines/package/manifest.js";
import { matchingPlan, planStem, recordPlan, type TrtPlan } from "../engines/package/plans.js";
import { cudaLibraryPath, loadNativeLibrary } from "../runtime/backends/cuda.js";
import { loadTrtShim, trtLibraryPath } from "../runtime/backends/trt.js";
import { batchBuckets } from "../runtime/cli/commands/compile.js";
import { bin, cli, root } from "./helpers/cli.js";
import { fixtureRoot } from "./helpers/fixtures.js";

/** `skip` for it.skipIf, printing its reason once; a failure instead where this run requires it. */
const told = new Set<string>();
function skipWhen(skip: boolean, reason: string, required: string | false = false): boolean {
  if (!skip) return false;
  if (required) throw new Error(`${reason}; not skipped: ${required}`);
  if (!told.has(reason)) console.warn(`skipped: ${reason}`);
  told.add(reason);
  return true;
}

const built = existsSync(trtLibraryPath());
const notBuilt =
  "the TensorRT shim is not built (cmake -S engines/native -B engines/native/build -DMAMBA_EDGE_TRT=ON -DTENSORRT_INCLUDE_DIR=…)";
// .ci/run builds the shim: there its absence is a failure, not a skip
const shimRequired = process.env.CI === "true" ? "CI=true requires the TensorRT shim (.ci/run builds it)" : false;
const trtHere = built && (await loadTrtShim()).me_trt_version() > 0;
const noShim = skipWhen(!built, notBuilt, shimRequired);
const skipNoTrt = noShim || skipWhen(trtHere, "TensorRT is installed on this machine: the checks of its absence do not apply");
// with a GPU and the cuda library, auto picks cuda: the checks that it falls back to ort do not apply
const cudaHere = existsSync(cudaLibraryPath()) && (await loadNativeLibrary()).me_device_count() > 0;
const skipAutoOrt = skipNoTrt || skipWhen(cudaHere, "backend cuda is usable here: auto picks it, not ort");
const MISSING = /TensorRT is not installed: cannot load libnvinfer\.so\.10 \(.*libnvinfer\.so\.10.*\)$/;

const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-trt-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
const engine = join(scratch, "tied.mamba");
beforeAll(() => {
  const r = cli(["build", join(fixtureRoot, "mamba1-tied"), "--quant", "fp16", "--out", engine]);
  expect(r.code, r.stderr).toBe(0);
});

/** stderr of a failed CLI run: exactly one line */
function oneLine(r: { code: number | null; stderr: string }): string {
  expect(r.code).toBe(1);
  const lines = r.stderr.trimEnd().split("\n");
  expect(lines, r.stderr).toHaveLength(1);
  return lines[0];
}

describe("trt shim without TensorRT", () => {
  it("a missing shim is a one-line error with the build command", async () => {
    const err = await loadTrtShim(join(scratch, "nowhere", "libmamba_edge_trt.so")).catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toMatch(/TensorRT shim is not built .*-DMAMBA_EDGE_TRT=ON/);
  });

  it.skipIf(skipNoTrt)("loads through koffi and reports the missing libnvinfer.so.10 in one line", async () => {
    const lib = await loadTrtShim();
    expect(lib.me_trt_version()).toBe(0);
    const e = lib.me_trt_last_error();
    expect(e).toMatch(MISSING);
    expect(e).not.toContain("\n");
  });

  it.skipIf(skipNoTrt)("its runtime and builder entry points fail with that line instead of aborting", async () => {
    const lib = await loadTrtShim();
    expect(lib.me_trt_open(join(scratch, "x.plan"), null, null, "conv_0 conv_0_out", 4)).toBeNull();
    expect(lib.me_trt_last_error()).toMatch(MISSING);
    const sizes = Int32Array.of(1, 2);
    expect(lib.me_trt_build(join(scratch, "x.onnx"), null, join(scratch, "x.plan"), null, 0, sizes, 2, 256)).toBe(-1);
    expect(lib.me_trt_last_error()).toMatch(MISSING);
    expect(existsSync(join(scratch, "x.plan"))).toBe(false);
  });
});

describe("the CLI without TensorRT", () => {
  it.skipIf(skipNoTrt)("compile names the missing libnvinfer.so.10 in one line, exit 1", () => {
    const line = oneLine(cli(["compile", engine]));
    expect(line).toMatch(/^mamba-edge: compile: /);
    expect(line).toMatch(MISSING);
  });

  it.skipIf(skipNoTrt)("--backend trt names the missing libnvinfer.so.10 in one line, exit 1", () => {
    const line = oneLine(cli(["logits", "--engine", engine, "--backend", "trt", "--tokens", "1,2"]));
    expect(line).toMatch(/^mamba-edge: backend trt: /);
    expect(line).toMatch(MISSING);
  });

  it.skipIf(skipNoTrt)("a TensorRT older than 10.3 is named with its version, in one line", () => {
    const line = oneLine(withFakeTensorrt(80602, ["compile", engine]));
    expect(line).toBe("mamba-edge: compile: TensorRT 8.6.2 found; this build needs TensorRT 10.3 or a later 10.x");
  });

  it.skipIf(skipNoTrt || skipWhen(cudaHere || existsSync("/dev/nvidia0"), "a GPU is present: the no-GPU line does not apply"))(
    "with TensorRT 10.3 found but no GPU, compile says so in one line",
    () => {
      expect(oneLine(withFakeTensorrt(100300, ["compile", engine]))).toBe("mamba-edge: compile: no CUDA GPU is visible on this machine");
    },
  );

  it("compile refuses bad profile flags before anything else, in one line", () => {
    expect(oneLine(cli(["compile", engine, "--chunks", "64,16"]))).toMatch(/--chunks: expected increasing positive integers/);
    expect(oneLine(cli(["compile", engine, "--max-batch", "0"]))).toMatch(/--max-batch: expected an integer in \[1, 256\]/);
  });

  it("--threads is refused with backend trt", () => {
    expect(oneLine(cli(["logits", "--engine", engine, "--backend", "trt", "--threads", "2", "--tokens", "1"]))).toMatch(
      /--threads applies to the CPU backends .* not to backend trt/,
    );
  });

  it.skipIf(skipAutoOrt)("--backend auto runs ort here and says why not trt and not cuda", () => {
    const auto = cli(["logits", "--engine", engine, "--backend", "auto", "--tokens", "1,2,3"]);
    expect(auto.code, auto.stderr).toBe(0);
    expect(auto.stderr).toMatch(/^backend auto: ort \(not trt \(the engine has no TensorRT plan.*\); not cuda \(.+\)\)$/m);
    const ort = cli(["logits", "--engine", engine, "--backend", "ort", "--tokens", "1,2,3"]);
    expect(ort.code, ort.stderr).toBe(0);
    expect(JSON.parse(auto.stdout)).toEqual(JSON.parse(ort.stdout));
  });

  it.skipIf(skipNoTrt)("serve picks its backend with auto by default and logs the pick and why", () => {
    const demo = join(scratch, "brown.mamba");
    expect(cli(["build", join(root, "models", "mamba1-brown"), "--quant", "fp16", "--out", demo]).code).toBe(0);
    const args = ["serve", "--stdio", "--engine", demo, "--state-dir", join(scratch, "sessions")];
    const r = spawnSync(process.execPath, [bin, ...args], { cwd: root, input: "", encoding: "utf8", timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    const logs = `${r.stdout}\n${r.stderr}`
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const pick = logs.find((l) => typeof l.msg === "string" && l.msg.startsWith("backend auto picked "));
    expect(pick, r.stderr).toBeDefined();
    // a machine with a GPU and the cuda library picks cuda; elsewhere ort, saying why not cuda
    if (pick?.backend === "cuda") expect(pick.why).toMatch(/^not trt \(.*\); the cuda library loads and sees a GPU$/);
    else expect(pick?.why).toMatch(/^not trt \(the engine has no TensorRT plan.*\); not cuda \(.+\)$/);
  });

  it.skipIf(skipAutoOrt)("--backend auto with a plan but no TensorRT says what is missing", () => {
    const dir = withPlan("planned-auto.mamba");
    const r = cli(["logits", "--engine", dir, "--backend", "auto", "--tokens", "1"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^backend auto: ort \(not trt \(TensorRT is not installed: cannot load libnvinfer\.so\.10/m);
  });
});

/** A copy of the engine with a (dummy) plan for Orin, TensorRT 10.3.0, recorded as compile does. */
function withPlan(name: string): string {
  const dir = join(scratch, name);
  cpSync(engine, dir, { recursive: true });
  mkdirSync(join(dir, "trt"), { recursive: true });
  const f = "trt/orin-trt10.3.0.plan";
  writeFileSync(join(dir, f), "plan");
  recordPlan(dir, loadManifest(dir), plan("Orin", "10.3.0", dir), { [f]: { sha256: sha256File(join(dir, f)), bytes: 4 } });
  return dir;
}

/** A graph's inputs (initializers aside): name → dims, a number where static, null where symbolic. */
function graphInputs(path: string): Map<string, (number | null)[]> {
  const m = onnxProto.onnx.ModelProto.decode(readFileSync(path));
  const inits = new Set((m.graph?.initializer ?? []).map((t) => t.name));
  const out = new Map<string, (number | null)[]>();
  for (const i of m.graph?.input ?? []) {
    if (inits.has(i.name ?? "")) continue;
    const dims = i.type?.tensorType?.shape?.dim ?? [];
    out.set(
      i.name ?? "",
      dims.map((d) => (d.dimParam ? null : Number(d.dimValue))),
    );
  }
  return out;
}

/** trtexec's --minShapes=a:1x2,b:3 of a command → name → dims */
function shapesOf(cmd: string, flag: string): Map<string, number[]> {
  const arg = cmd.split(" ").find((a) => a.startsWith(`--${flag}=`));
  expect(arg, `${flag} in ${cmd}`).toBeDefined();
  return new Map(
    arg!
      .slice(flag.length + 3)
      .split(",")
      .map((kv) => {
        const [k, v] = kv.split(":");
        return [k, v.split("x").map(Number)] as [string, number[]];
      }),
  );
}

describe("compile --trtexec", () => {
  const trtEngine = join(scratch, "tied-trt.mamba");
  let noGraphs = "";
  beforeAll(() => {
    const r = cli(["build", join(fixtureRoot, "mamba1-tied"), "--quant", "fp16", "--target", "cpu,trt", "--out", trtEngine]);
    if (r.code !== 0) noGraphs = `build --target trt failed here (${r.stderr.trim().split("\n").pop()})`;
  });

  it("prints trtexec lines whose shapes cover every input of both graphs, dynamic dims from 1 to the maximum", (ctx) => {
    if (noGraphs) {
      skipWhen(true, noGraphs);
      ctx.skip();
    }
    const r = cli(["compile", trtEngine, "--trtexec", "--max-batch", "8", "--chunks", "16,64"]);
    expect(r.code, r.stderr).toBe(0);
    const [step, prefill, adopt] = r.stdout.trimEnd().split("\n");
    expect(adopt).toBe(`mamba-edge compile ${trtEngine} --adopt --max-batch 8 --chunks 64`);
    for (const [cmd, graph, hi] of [
      [step, "step", 8],
      [prefill, "prefill", 64],
    ] as const) {
      expect(cmd).toMatch(/^trtexec --onnx=\S+ --saveEngine=\S+\.trtexec\.plan /);
      expect(cmd).toContain("--stronglyTyped");
      expect(cmd).toMatch(/--dynamicPlugins=\S+libmamba_edge_trt_plugins\.so/);
      const inputs = graphInputs(join(trtEngine, "trt", `${graph}.onnx`));
      const [mn, mx] = [shapesOf(cmd, "minShapes"), shapesOf(cmd, "maxShapes")];
      expect([...mn.keys()].sort()).toEqual([...inputs.keys()].sort());
      for (const [name, dims] of inputs) {
        expect(mn.get(name)?.length, name).toBe(dims.length);
        dims.forEach((d, i) => {
          if (d !== null) expect([mn.get(name)![i], mx.get(name)![i]], `${name}[${i}]`).toEqual([d, d]);
          else expect(mn.get(name)![i], `${name}[${i}]`).toBe(1);
        });
      }
      // the batch (step) or the token count (prefill) reaches the maximum
      expect(mx.get("tokens")!.at(-1)).toBe(hi);
    }
  });
});

/**
 * The CLI with a stand-in libnvinfer.so.10 first on the library path: a C library that exports
 * TensorRT's entry points, reporting `version`, and creates nothing. It proves that the shim finds
 * them by name at run time and checks the version before touching an interface.
 */
function withFakeTensorrt(version: number, args: string[]) {
  const dir = join(scratch, `fake-${version}`);
  mkdirSync(dir, { recursive: true });
  const src = join(dir, "fake.c");
  writeFileSync(
    src,
    `int getInferLibVersion(void) { return ${version}; }\n` +
      "void* createInferRuntime_INTERNAL(void* l, int v) { (void)l; (void)v; return 0; }\n" +
      "void* createInferBuilder_INTERNAL(void* l, int v) { (void)l; (void)v; return 0; }\n",
  );
  const cc = spawnSync("cc", ["-shared", "-fPIC", "-o", join(dir, "libnvinfer.so.10"), src], { encoding: "utf8" });
  expect(cc.status, cc.stderr).toBe(0);
  const env = { ...process.env, LD_LIBRARY_PATH: [dir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(":") };
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: root, env, encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function plan(gpu: string, tensorrt: string, dir: string): TrtPlan {
  const stem = planStem(gpu, tensorrt);
  return {
    gpu,
    sm: 87,
    tensorrt,
    step: `${stem}.plan`,
    prefill: null,
    sha256: { step: sha256File(join(dir, `${stem}.plan`)), prefill: null },
    batches: batchBuckets(16),
    chunks: [16, 64, 256],
    created: new Date().toISOString(),
  };
}

describe("TensorRT plans in the manifest", () => {
  it("names plans by GPU and TensorRT version, and buckets batches by powers of two", () => {
    expect(planStem("Orin", "10.3.0")).toBe("trt/orin-trt10.3.0");
    expect(planStem("NVIDIA H100 80GB HBM3", "10.3.0")).toBe("trt/nvidia-h100-80gb-hbm3-trt10.3.0");
    expect(batchBuckets(16)).toEqual([1, 2, 4, 8, 16]);
    expect(batchBuckets(12)).toEqual([1, 2, 4, 8, 12]);
    expect(batchBuckets(1)).toEqual([1]);
  });

  it("a recorded plan passes the package loader, which verifies its sha256 like any file", () => {
    const dir = withPlan("planned.mamba");
    const name = "trt/orin-trt10.3.0.plan";
    const m = loadManifest(dir);
    expect(matchingPlan(m, dir, "Orin", "10.3.0")?.step).toBe(name);
    writeFileSync(join(dir, name), "PLAN");
    expect(() => loadManifest(dir)).toThrow(/orin-trt10\.3\.0\.plan: sha256 .* does not match manifest\.json/);
  });

  it("refuses, in one line, a package whose plans are for another GPU or TensorRT version", () => {
    const dir = withPlan("other.mamba");
    const m = loadManifest(dir);
    for (const [gpu, v] of [
      ["NVIDIA H100 80GB HBM3", "10.3.0"],
      ["Orin", "10.7.0"],
    ]) {
      let err: unknown = null;
      try {
        matchingPlan(m, dir, gpu, v);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(UserError);
      const msg = (err as Error).message;
      expect(msg).not.toContain("\n");
      expect(msg).toContain("compiled for Orin with TensorRT 10.3.0");
      expect(msg).toContain(`this machine has ${gpu} with TensorRT ${v}`);
    }
    expect(matchingPlan(loadManifest(engine), engine, "Orin", "10.3.0")).toBeNull();
  });
});
