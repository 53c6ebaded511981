// The GPU check's Python scripts (and the tools beside them in scripts/gpu) call the native library
// through ctypes, which checks nothing: a call with one argument too few or a function the library
// no longer exports would only show on the GPU machine. Here, without a GPU: every call in those
// scripts matches the C signature's parameter count, and the built library exports every function
// they name.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
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
