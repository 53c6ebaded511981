// Two ways of running the same engine, compared: the same prompts prefilled, a few steps of the
// whole batch, then a step of one sequence alone (the batch changes); logits and final states.
import { expect } from "vitest";
import type { Backend } from "../../runtime/backends/backend.js";
import { relErr } from "./fixtures.js";

const prompts = [[1, 2, 3], [4], [5, 6, 7, 8]];

/** Runs the trace on `be` and closes it. */
export async function stepTrace(be: Backend, batchSteps: number): Promise<{ logits: Float32Array[]; data: number[][] }> {
  const states = prompts.map(() => be.newState());
  for (const [i, p] of prompts.entries()) await be.prefill(Int32Array.from(p), states[i]);
  const logits: Float32Array[] = [];
  // (copies: a step's logits are valid until the next step)
  for (let t = 0; t < batchSteps; t++)
    logits.push(
      (
        await be.step(
          Int32Array.from(prompts, (_, b) => 9 + b + t),
          states,
        )
      ).slice(),
    );
  logits.push((await be.step(Int32Array.of(11), [states[1]])).slice()); // the batch changes
  const data = states.map((s) => Array.from(s.data));
  await be.close();
  return { logits, data };
}

/** Every step's logits and every final state of `a` within `tol` (relative) of `b`'s. */
export function expectSameTrace(a: Awaited<ReturnType<typeof stepTrace>>, b: Awaited<ReturnType<typeof stepTrace>>, tol: number): void {
  expect(a.logits.length).toBe(b.logits.length);
  a.logits.forEach((l, i) => expect(relErr(l, b.logits[i])).toBeLessThanOrEqual(tol));
  a.data.forEach((d, i) => expect(relErr(d, b.data[i])).toBeLessThanOrEqual(tol));
}
