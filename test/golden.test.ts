// The reference forward pass against Hugging Face transformers' float64 logits, on tiny random
// models that transformers itself wrote (scripts/make_fixtures.py).
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MambaModel } from "../engines/model/model.js";
import { cli } from "./helpers/cli.js";
import { fixtureRoot, fixtures, reference, relErr } from "./helpers/fixtures.js";

describe("reference forward pass vs transformers", () => {
  it("has fixtures of both architectures and both layouts", () => {
    expect(fixtures.some((f) => f.startsWith("mamba1"))).toBe(true);
    expect(fixtures.some((f) => f.startsWith("mamba2"))).toBe(true);
    expect(fixtures.some((f) => f.startsWith("state-spaces"))).toBe(true);
  });

  for (const name of fixtures) {
    describe(name, () => {
      const model = MambaModel.load(join(fixtureRoot, name));
      const ref = reference(name);
      const V = model.config.vocabSize;
      const prefill = model.prefill(ref.ids, model.newState(), true);

      it("prefill matches within 1e-4 relative", () => {
        expect(relErr(prefill, ref.logits)).toBeLessThanOrEqual(1e-4);
      });

      it("token-by-token steps match within 1e-4, and prefill within 1e-5", () => {
        const state = model.newState();
        const steps = new Float32Array(ref.ids.length * V);
        ref.ids.forEach((id, t) => steps.set(model.step([id], [state]), t * V));
        expect(relErr(steps, ref.logits)).toBeLessThanOrEqual(1e-4);
        expect(relErr(steps, prefill)).toBeLessThanOrEqual(1e-5);
      });

      it("a prefill split in two through the state matches one prefill", () => {
        const state = model.newState();
        const cut = Math.floor(ref.ids.length / 3);
        const a = model.prefill(ref.ids.slice(0, cut), state, true);
        const b = model.prefill(ref.ids.slice(cut), state, true);
        const joined = new Float32Array(a.length + b.length);
        joined.set(a);
        joined.set(b, a.length);
        expect(relErr(joined, ref.logits)).toBeLessThanOrEqual(1e-4);
      });
    });
  }

  it("`mamba-edge logits` prints the same logits in both modes", () => {
    const name = "mamba2-groups";
    const ref = reference(name);
    const V = 101;
    for (const mode of ["prefill", "step"]) {
      const r = cli(["logits", "--model", join(fixtureRoot, name), "--tokens", ref.ids.join(","), "--mode", mode]);
      expect(r.code).toBe(0);
      const rows: number[][] = JSON.parse(r.stdout).logits;
      expect(rows).toHaveLength(ref.ids.length);
      expect(rows.every((row) => row.length === V)).toBe(true);
      expect(relErr(rows.flat(), ref.logits)).toBeLessThanOrEqual(1e-4);
    }
  });
});
