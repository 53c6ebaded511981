import { readdirSync } from "node:fs";
import { join } from "node:path";
import { SafetensorsFile } from "../../engines/model/safetensors.js";
import { root } from "./cli.js";

export const fixtureRoot = join(root, "test", "fixtures");
export const fixtures = readdirSync(fixtureRoot).sort();

/** transformers' float64 logits for a fixture: input ids and (T, vocab) logits. */
export function reference(name: string): { ids: number[]; logits: Float64Array } {
  const f = new SafetensorsFile(join(fixtureRoot, name, "reference.safetensors"));
  try {
    return { ids: Array.from(f.float64("input_ids")), logits: f.float64("logits") };
  } finally {
    f.close();
  }
}

/** max|a − b| / max|b| */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let err = 0;
  let ref = 0;
  for (let i = 0; i < b.length; i++) {
    if (Number.isNaN(a[i])) return Infinity;
    err = Math.max(err, Math.abs(a[i] - b[i]));
    ref = Math.max(ref, Math.abs(b[i]));
  }
  return err / ref;
}
