// Engine packages: `mamba-edge build` → NAME.mamba → backend ort (onnxruntime-node), against the
// reference; integrity checks on load.
import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrtBackend } from "../runtime/backends/ort.js";
import { FORMAT_VERSION } from "../engines/package/manifest.js";
import { MambaModel } from "../engines/model/model.js";
import { cli, root } from "./helpers/cli.js";
import { fixtureRoot, reference, relErr } from "./helpers/fixtures.js";
import { expectSameTrace, stepTrace } from "./helpers/trace.js";

const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-engine-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const engines = ["mamba1-untied-dtrank", "mamba2-groups", "state-spaces-mamba2"];

describe("fp16 engines on onnxruntime", () => {
  beforeAll(() => {
    for (const name of engines) {
      const r = cli(["build", join(fixtureRoot, name), "--quant", "fp16", "--out", join(scratch, `${name}.mamba`)]);
      expect(r.code, r.stderr).toBe(0);
    }
  });

  for (const name of engines) {
    it(`${name}: prefill and step logits within 5e-3 of the reference`, async () => {
      const be = await OrtBackend.open(join(scratch, `${name}.mamba`));
      const model = MambaModel.load(join(fixtureRoot, name));
      const { ids } = reference(name);
      const want = model.prefill(ids, model.newState(), true);
      expect(relErr(await be.prefill(Int32Array.from(ids), be.newState(), true), want)).toBeLessThanOrEqual(5e-3);
      const s = be.newState();
      const V = be.info.vocabSize;
      const steps = new Float32Array(ids.length * V);
      for (let t = 0; t < ids.length; t++) steps.set(await be.step(Int32Array.of(ids[t]), [s]), t * V);
      expect(relErr(steps, want)).toBeLessThanOrEqual(5e-3);
      await be.close();
    });
  }

  it("a batched step equals each sequence stepped alone", async () => {
    const be = await OrtBackend.open(join(scratch, "mamba2-groups.mamba"));
    const V = be.info.vocabSize;
    const prompts = [
      [1, 2, 3, 4, 5],
      [9, 8],
      [50, 51, 52, 53, 54, 55, 56, 57, 58],
    ];
    const states = [];
    const alone: Float32Array[] = [];
    for (const p of prompts) {
      const s = be.newState();
      await be.prefill(Int32Array.from(p), s);
      states.push(s.clone());
      alone.push((await be.step(Int32Array.of(7), [s])).slice()); // kept past the next step
    }
    const batched = await be.step(Int32Array.from([7, 7, 7]), states);
    prompts.forEach((_, b) => expect(relErr(batched.subarray(b * V, (b + 1) * V), alone[b])).toBeLessThanOrEqual(1e-5));
    await be.close();
  });

  it("keeps a batch's states between steps exact: the same logits and states as the reference, also when the batch changes", async () => {
    const be = await OrtBackend.open(join(scratch, "mamba1-untied-dtrank.mamba"));
    const model = MambaModel.load(join(fixtureRoot, "mamba1-untied-dtrank"));
    const V = be.info.vocabSize;
    const seqs = [[1, 2, 3], [4], [5, 6]].map((p) => ({ p, s: be.newState(), r: model.newState() }));
    for (const q of seqs) {
      await be.prefill(Int32Array.from(q.p), q.s);
      model.prefill(q.p, q.r);
    }
    const check = async (batch: typeof seqs, token: number) => {
      const got = await be.step(
        Int32Array.from(batch, () => token),
        batch.map((q) => q.s),
      );
      const want = model.step(
        Int32Array.from(batch, () => token),
        batch.map((q) => q.r),
      );
      expect(relErr(got, want)).toBeLessThanOrEqual(5e-3);
      expect(got.length).toBe(batch.length * V);
    };
    for (let t = 0; t < 4; t++) await check(seqs, 10 + t); // resident between these steps
    expect(relErr(seqs[1].s.data, seqs[1].r.data)).toBeLessThanOrEqual(5e-3); // reading brings it home
    await check(seqs, 20);
    await check([seqs[2], seqs[0]], 21); // a new batch: the old one is written back first
    const saved = be.loadState(be.saveState(seqs[0].s));
    expect(Array.from(saved.data)).toEqual(Array.from(seqs[0].s.data));
    expect(relErr(seqs[1].s.data, seqs[1].r.data)).toBeLessThanOrEqual(5e-3);
    // a clone taken while its original is resident is a snapshot, and steps as a state of its own
    await check(seqs, 22);
    const copy = { p: [], s: seqs[1].s.clone(), r: seqs[1].r.clone() };
    await check([copy, seqs[1]], 23);
    await check([copy], 24);
    expect(copy.s.tokens).toBe(seqs[1].s.tokens + 1);
    expect(relErr(copy.s.data, copy.r.data)).toBeLessThanOrEqual(5e-3);
    expect(relErr(seqs[1].s.data, seqs[1].r.data)).toBeLessThanOrEqual(5e-3);
    await be.close();
  });

  it("keeps states exact while batch sizes come and go, the buffers growing from 2 to 16 sequences", async () => {
    // every batch size runs over the same native buffers (their first b rows), which are replaced
    // by larger ones when a batch outgrows them; states must survive both
    const be = await OrtBackend.open(join(scratch, "mamba2-groups.mamba"));
    const model = MambaModel.load(join(fixtureRoot, "mamba2-groups"));
    const seqs = Array.from({ length: 9 }, (_, i) => ({ s: be.newState(), r: model.newState(), p: [1 + i, 2 + i] }));
    for (const q of seqs) {
      await be.prefill(Int32Array.from(q.p), q.s);
      model.prefill(q.p, q.r);
    }
    for (const [t, pick] of [[0, 1], [2, 3, 4, 5, 6], [7], [0, 1, 2, 3, 4, 5, 6, 7, 8], [8, 0], [0, 1, 2, 3, 4, 5, 6, 7, 8]].entries()) {
      const batch = pick.map((i) => seqs[i]);
      const tokens = Int32Array.from(pick, (i) => 20 + i + t);
      expect(
        relErr(
          await be.step(
            tokens,
            batch.map((q) => q.s),
          ),
          model.step(
            tokens,
            batch.map((q) => q.r),
          ),
        ),
      ).toBeLessThanOrEqual(5e-3);
    }
    for (const q of seqs) expect(relErr(q.s.data, q.r.data)).toBeLessThanOrEqual(5e-3);
    await be.close();
  });

  it("steps through onnxruntime's C API with the binding's logits and states", async () => {
    const dir = join(scratch, "mamba2-groups.mamba");
    const capi = await OrtBackend.open(dir, { fused: false }); // the same graph as the binding's (fused: ort-ops.test.ts)
    const binding = await OrtBackend.open(dir, { binding: true });
    expect(capi.info.device).toMatch(/step via the C API/);
    expect(binding.info.device).toMatch(/step via the node binding/);
    // the same kernels on the same inputs: equal up to the order of threaded sums
    expectSameTrace(await stepTrace(capi, 3), await stepTrace(binding, 3), 1e-6);
  });

  it("MAMBA_EDGE_ORT_PROFILE writes onnxruntime's per-node profile of the C-API step when the backend closes", async () => {
    const prefix = join(scratch, "profile");
    process.env.MAMBA_EDGE_ORT_PROFILE = prefix;
    try {
      const be = await OrtBackend.open(join(scratch, "mamba2-groups.mamba"), { fused: false });
      await be.step(Int32Array.of(3), [be.newState()]);
      await be.close();
    } finally {
      delete process.env.MAMBA_EDGE_ORT_PROFILE;
    }
    const files = readdirSync(scratch).filter((f) => f.startsWith("profile_") && f.endsWith(".json"));
    expect(files.length).toBe(1);
    const events = JSON.parse(readFileSync(join(scratch, files[0]), "utf8")) as { cat: string; name: string }[];
    expect(events.some((e) => e.cat === "Session" && e.name === "model_run")).toBe(true);
    expect(events.some((e) => e.cat === "Node" && e.name.endsWith("_kernel_time"))).toBe(true);
  });

  it("prefills a prompt longer than one run in chunks, with the reference's logits and state", async () => {
    const be = await OrtBackend.open(join(scratch, "mamba2-groups.mamba"));
    const model = MambaModel.load(join(fixtureRoot, "mamba2-groups"));
    const ids = Array.from({ length: 1100 }, (_, i) => (i * 7919) % be.info.vocabSize);
    const s = be.newState();
    const got = await be.prefill(Int32Array.from(ids), s, true);
    const r = model.newState();
    const want = model.prefill(ids, r, true);
    expect(got.length).toBe(want.length);
    expect(relErr(got, want)).toBeLessThanOrEqual(5e-3);
    expect(relErr(s.data, r.data)).toBeLessThanOrEqual(5e-3);
    expect(s.tokens).toBe(1100);
    await be.close();
  });

  it("`logits --engine` prints the engine's logits", () => {
    const { ids } = reference("mamba2-groups");
    const model = MambaModel.load(join(fixtureRoot, "mamba2-groups"));
    const want = model.prefill(ids, model.newState(), true);
    const r = cli(["logits", "--engine", join(scratch, "mamba2-groups.mamba"), "--tokens", ids.join(",")]);
    expect(r.code, r.stderr).toBe(0);
    expect(relErr(JSON.parse(r.stdout).logits.flat(), want)).toBeLessThanOrEqual(5e-3);
  });

  it("`--threads` sets the ort backend's CPU threads; a bad count, or one for another backend, is refused in one line", () => {
    const engine = join(scratch, "mamba2-groups.mamba");
    const run = (threads: string) =>
      cli([
        "bench",
        "--engine",
        engine,
        "--threads",
        threads,
        "--prompt-len",
        "4",
        "--gen-tokens",
        "2",
        "--rounds",
        "1",
        "--batch",
        "1",
        "--json",
      ]);
    const one = run("1");
    expect(one.code, one.stderr).toBe(0);
    expect(JSON.parse(one.stdout).device).toMatch(/, 1 thread, /);
    expect(JSON.parse(run("2").stdout).device).toMatch(/, 2 threads, /);
    const bad = run("0");
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split("\n")).toEqual(["mamba-edge: --threads: expected a positive integer, found 0"]);
    // the reference: 1 keeps it on one thread
    const ref = cli([
      "bench",
      "--model",
      "models/mamba1-brown",
      "--threads",
      "1",
      "--prompt-len",
      "4",
      "--gen-tokens",
      "2",
      "--rounds",
      "1",
      "--batch",
      "1",
      "--json",
    ]);
    expect(ref.code, ref.stderr).toBe(0);
    expect(JSON.parse(ref.stdout).device).toMatch(/, 1 thread$/);
    // backend cuda would ignore it: refused instead
    const cuda = cli(["generate", "--prompt", "the", "--max-tokens", "1", "--threads", "2", "--engine", engine, "--backend", "cuda"]);
    expect(cuda.code).toBe(1);
    expect(cuda.stderr.trim().split("\n")).toEqual([
      "mamba-edge: --threads applies to the CPU backends (ort and the reference), not to backend cuda",
    ]);
  });

  it("scripts/ort-step-parts.mjs times a Mamba-1 step and its parts with the engine's shapes; a Mamba-2 engine is refused in one line", () => {
    const run = (name: string) =>
      spawnSync(
        process.execPath,
        [
          join(root, "scripts", "ort-step-parts.mjs"),
          "--engine",
          join(scratch, `${name}.mamba`),
          "--batch",
          "1,2",
          "--rounds",
          "1",
          "--out",
          "false",
        ],
        { encoding: "utf8" },
      );
    const m1 = run("mamba1-untied-dtrank");
    expect(m1.status, m1.stderr).toBe(0);
    for (const b of [1, 2]) {
      const line = m1.stdout.split("\n").find((l) => l.startsWith(`batch ${b}: `)) ?? "";
      const ms = [...line.matchAll(/(\d+(?:\.\d+)?)/g)].map((x) => Number(x[1])).slice(1); // step, products, state, rest, bare
      expect(ms.length, line).toBe(5);
      expect(Math.min(ms[0], ms[1], ms[2], ms[4])).toBeGreaterThan(0);
    }
    const m2 = run("mamba2-groups");
    expect(m2.status).toBe(1);
    expect(m2.stderr.trim().split("\n")).toEqual([
      expect.stringMatching(/^ort-step-parts: .*mamba2-groups\.mamba: architecture mamba2, expected mamba1/),
    ]);
  });

  it("`inspect` summarizes the manifest", () => {
    const r = cli(["inspect", join(scratch, "mamba2-groups.mamba")]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`mamba-edge-engine v${FORMAT_VERSION}`));
    expect(r.stdout).toMatch(/mamba2 from mamba2-groups: 2 layers, d_model 64, vocab 101/);
    expect(r.stdout).toMatch(/recipe: +fp16/);
    expect(r.stdout).toMatch(/cpu\/step\.onnx/);
  });
});

describe("engine integrity", () => {
  const base = join(scratch, "base.mamba");
  beforeAll(() => {
    expect(cli(["build", join(fixtureRoot, "mamba1-tied"), "--out", base]).code).toBe(0);
  });

  function damaged(edit: (dir: string) => void): string {
    const dir = mkdtempSync(join(scratch, "d-")) + "/e.mamba";
    cpSync(base, dir, { recursive: true });
    edit(dir);
    return dir;
  }

  function expectRefused(dir: string, pattern: RegExp) {
    const r = cli(["logits", "--engine", dir, "--tokens", "1,2"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(pattern);
  }

  for (const file of ["weights.safetensors", "cpu/step.onnx", "cpu/prefill.onnx", "cpu/weights.bin"]) {
    it(`refuses a flipped byte in ${file}`, () => {
      const dir = damaged((d) => {
        const p = join(d, file);
        const b = readFileSync(p);
        b[Math.floor(b.length / 2)] ^= 0x01;
        writeFileSync(p, b);
      });
      expectRefused(dir, new RegExp(`${file.replace(/[./]/g, "\\$&")}: sha256 .* does not match manifest\\.json`));
    });
  }

  it("refuses a truncated file", () => {
    const dir = damaged((d) => truncateSync(join(d, "cpu/weights.bin"), statSync(join(d, "cpu/weights.bin")).size - 1));
    expectRefused(dir, /cpu\/weights\.bin: \d+ bytes, manifest\.json says \d+/);
  });

  it("refuses an unknown format version", () => {
    const dir = damaged((d) => {
      const m = JSON.parse(readFileSync(join(d, "manifest.json"), "utf8"));
      m.version = 99;
      writeFileSync(join(d, "manifest.json"), JSON.stringify(m));
    });
    expectRefused(dir, new RegExp(`field version: this build reads engine format version ${FORMAT_VERSION}, found 99`));
  });

  it("refuses a directory that is not an engine", () => {
    expectRefused(join(fixtureRoot, "mamba1-tied"), /manifest\.json: missing \(not an engine package\)/);
  });

  it("will not overwrite an engine without --force", () => {
    const r = cli(["build", join(fixtureRoot, "mamba1-tied"), "--out", base]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/already exists \(use --force to replace it\)/);
  });
});
