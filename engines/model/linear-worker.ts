// The helper thread of parallel.ts: computes its share of a linear layer, then raises the flag.
import { parentPort, workerData } from "node:worker_threads";
import { linearRange, type LinearJob } from "./linear-range.js";

parentPort!.on("message", (m: { job: LinearJob; o0: number; o1: number; flag: Int32Array }) => {
  linearRange(m.job, m.o0, m.o1);
  Atomics.store(m.flag, 0, 1);
  Atomics.notify(m.flag, 0);
});

// Tell the main thread that jobs can be sent.
Atomics.store(workerData.flag as Int32Array, 1, 1);
