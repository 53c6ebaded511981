// Backend cuda: the TypeScript side wherever it runs (library discovery, koffi binding, clean
// one-line errors without a GPU, argument checks); logits against the reference only on a machine
// with an NVIDIA GPU — elsewhere those tests are skipped, and say so.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CudaBackend, cudaLibraryPath, loadNativeLibrary } from "../runtime/backends/cuda.js";
import { UserError } from "../engines/errors.js";
import { MambaModel } from "../engines/model/model.js";
import { cli } from "./helpers/cli.js";
import { fixtureRoot, relErr } from "./helpers/fixtures.js";
import { gpuRequired, skipWhen } from "./helpers/skip.js";

const built = existsSync(cudaLibraryPath());
const gpus = built ? (await loadNativeLibrary()).me_device_count() : 0;
const notBuilt = "the native library is not built (cmake -S engines/native -B engines/native/build)";
const why = !built ? notBuilt : "no CUDA GPU on this machine";

const scratch = mkdtempSync(join(tmpdir(), "mamba-edge-cuda-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
// the demo model: the native kernels need dModel and dInner to be multiples of 32
const modelDir = join(resolve(dirname(fileURLToPath(import.meta.url)), ".."), "models", "mamba1-brown");
const engine = join(scratch, "m1.mamba");
beforeAll(() => {
  const r = cli(["build", modelDir, "--quant", "fp16", "--out", engine]);
  expect(r.code, r.stderr).toBe(0);
});

describe("cuda backend without a GPU", () => {
  it("names the missing native library and how to build it", async () => {
    const err = await loadNativeLibrary(join(scratch, "nowhere", "libmamba_edge.so")).catch((e) => e);
    expect(err).toBeInstanceOf(UserError);
    expect(err.message).toMatch(/native library is not built .*cmake -S engines\/native/);
  });

  it.skipIf(skipWhen(!built, notBuilt, gpuRequired))(
    "loads the built library through koffi and counts devices without failing",
    async () => {
      const lib = await loadNativeLibrary();
      expect(Number.isInteger(lib.me_device_count())).toBe(true);
      expect(lib.me_last_error()).toBe("");
    },
  );

  it.skipIf(skipWhen(!built, notBuilt, gpuRequired))("a missing package is a one-line error from the library", async () => {
    const lib = await loadNativeLibrary();
    if (lib.me_device_count() === 0) {
      expect(lib.me_create(join(scratch, "none.mamba"), 4, 8)).toBeNull();
      expect(lib.me_last_error()).toMatch(/no CUDA device/);
    } else {
      expect(lib.me_create(join(scratch, "none.mamba"), 4, 8)).toBeNull();
      expect(lib.me_last_error()).toMatch(/manifest.json: cannot open/);
    }
  });

  it("rejects bad batch and slot counts before touching the GPU", async () => {
    await expect(CudaBackend.open(engine, { maxBatch: 0 })).rejects.toThrow(/max batch must be an integer in \[1, 256\]/);
    await expect(CudaBackend.open(engine, { maxBatch: 8, slots: 4 })).rejects.toThrow(/state slots must be an integer ≥ max batch/);
  });

  it.skipIf(skipWhen(gpus > 0, "the CLI's no-GPU error: a GPU is visible here"))(
    "the CLI says in one line why cuda cannot run here, exit code 1",
    () => {
      const r = cli(["logits", "--backend", "cuda", "--engine", engine, "--tokens", "1,2,3"]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(built ? /no CUDA GPU is visible/ : /native library is not built/);
    },
  );

  it("--backend cuda needs an engine package", () => {
    const r = cli(["logits", "--backend", "cuda", "--model", join(fixtureRoot, "mamba1-untied-dtrank"), "--tokens", "1,2"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--backend cuda runs an engine package/);
  });
});

describe.skipIf(skipWhen(gpus === 0, `cuda backend on a GPU: ${why}`, gpuRequired))("cuda backend on a GPU", () => {
  it("prefill and batched step logits within 2e-3 of the reference, states movable to the reference", async () => {
    const be = await CudaBackend.open(engine, { maxBatch: 4, slots: 4 });
    const model = MambaModel.load(modelDir);
    const ids = Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % model.config.vocabSize);
    const want = model.prefill(ids, model.newState(), true);
    const got = await be.prefill(Int32Array.from(ids), be.newState(), true);
    expect(relErr(got, want)).toBeLessThan(2e-3);
    const a = [model.newState(), model.newState()];
    const b = [be.newState(), be.newState()];
    model.prefill(ids.slice(0, 5), a[0]);
    await be.prefill(Int32Array.from(ids.slice(0, 5)), b[0]);
    const t = Int32Array.of(3, 4);
    expect(relErr(await be.step(t, b), model.step(t, a))).toBeLessThan(2e-3);
    const moved = model.newState();
    moved.data.set(b[0].data); // brings the device state home
    expect(relErr(model.step(Int32Array.of(5), [moved]), model.step(Int32Array.of(5), [a[0]]))).toBeLessThan(2e-3);
    const restored = be.loadState(be.saveState(b[1]));
    expect(relErr(await be.step(Int32Array.of(6), [restored]), model.step(Int32Array.of(6), [a[1]]))).toBeLessThan(2e-3);
    await be.close();
  });
});
