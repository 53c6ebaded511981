// Splits large linear layers between this thread and one helper thread, so the reference uses two
// cores. Weights live in SharedArrayBuffers (see shared()), so the helper reads them in place; a
// job's inputs and outputs are copied into shared scratch buffers. The main thread computes its
// half, then blocks on an Atomics flag until the helper has finished the other half.
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { linearRange, type LinearJob } from "./linear-range.js";

/** A float32 array in shared memory (readable by the helper thread without a copy). */
export function shared(n: number): Float32Array {
  helper(); // start the helper while weights load, so it is ready for the first layer
  return new Float32Array(new SharedArrayBuffer(n * 4));
}

let worker: Worker | null | undefined;
let oneThread = process.env.MAMBA_EDGE_THREADS === "1";

/** `--threads` for the reference: 1 keeps it on this thread (else it uses two where there are two
 *  cores). Takes effect for models loaded afterwards. */
export function setReferenceThreads(n: number): void {
  oneThread = n < 2;
  if (oneThread && worker) void worker.terminate();
  if (oneThread) worker = null;
  else if (worker === null) worker = undefined; // may start on the next load
}
// flag[0]: the helper finished the current job; flag[1]: the helper is up and listening.
const flag = new Int32Array(new SharedArrayBuffer(8));
let xBuf: Float32Array = new Float32Array(new SharedArrayBuffer(0));
let yBuf: Float32Array = new Float32Array(new SharedArrayBuffer(0));

function helper(): Worker | null {
  if (worker !== undefined) return worker;
  worker = null;
  const script = new URL("./linear-worker.js", import.meta.url);
  // (run from TypeScript sources, as under vitest, there is no compiled helper: one thread then)
  if (availableParallelism() < 2 || oneThread || !existsSync(fileURLToPath(script))) return null;
  try {
    worker = new Worker(script, { workerData: { flag } });
    worker.unref(); // never keeps the process alive
    worker.on("error", () => (worker = null));
  } catch {
    worker = null;
  }
  return worker;
}

/** How many threads the reference's linear layers use: 2 with the helper, else 1. */
export function referenceThreads(): number {
  return helper() ? 2 : 1;
}

function isShared(a: Float32Array | null): boolean {
  return a === null || a.buffer instanceof SharedArrayBuffer;
}

/** Runs `job` on two threads; false when it cannot (no helper, or weights not in shared memory). */
export function runSplit(job: LinearJob): boolean {
  const w = helper();
  // Until the helper has started (it raises flag[1]), work stays on this thread: blocking on a
  // helper that never starts would hang.
  if (!w || Atomics.load(flag, 1) !== 1 || !isShared(job.W) || !isShared(job.bias)) return false;
  const xLen = (job.rows - 1) * job.xStride + job.xOffset + job.inDim;
  if (xBuf.length < xLen) xBuf = shared(Math.max(xLen, 2 * xBuf.length));
  if (yBuf.length < job.y.length) yBuf = shared(Math.max(job.y.length, 2 * yBuf.length));
  xBuf.set(job.x.subarray(0, xLen));
  const sharedJob: LinearJob = { ...job, x: xBuf, y: yBuf };
  // The helper takes the upper part of the outputs (a multiple of 4, so both keep 4-wide tiles).
  const split = Math.floor(job.outDim / 2 / 4) * 4;
  Atomics.store(flag, 0, 0);
  w.postMessage({ job: sharedJob, o0: split, o1: job.outDim, flag });
  linearRange(sharedJob, 0, split);
  if (Atomics.wait(flag, 0, 0, 60_000) === "timed-out" && Atomics.load(flag, 0) === 0) {
    throw new Error("linear layer: the helper thread did not answer within 60 s");
  }
  job.y.set(yBuf.subarray(0, job.y.length));
  return true;
}
