// The recurrent state: batched steps, save and restore, refusal of foreign states.
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { UserError } from "../engines/errors.js";
import { MambaModel } from "../engines/model/model.js";
import { fixtureRoot, relErr } from "./helpers/fixtures.js";

for (const name of ["mamba1-untied-dtrank", "mamba2-groups"]) {
  describe(`sequence state (${name})`, () => {
    const model = MambaModel.load(join(fixtureRoot, name));
    const V = model.config.vocabSize;
    const prompts = [
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
      [40, 41],
      [7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7],
    ];

    it("a batched step equals each sequence stepped alone", () => {
      const alone = prompts.map((p) => {
        const s = model.newState();
        model.prefill(p, s);
        return model.step([5], [s]);
      });
      const states = prompts.map((p) => {
        const s = model.newState();
        model.prefill(p, s);
        return s;
      });
      const batched = model.step([5, 5, 5], states);
      prompts.forEach((_, b) => expect(relErr(batched.subarray(b * V, (b + 1) * V), alone[b])).toBe(0));
    });

    it("a saved and restored state continues exactly where it left off", () => {
      const s = model.newState();
      model.prefill(prompts[0], s);
      const bytes = model.saveState(s);
      const restored = model.loadState(bytes);
      expect(restored.tokens).toBe(prompts[0].length);
      const a = model.step([9], [s]);
      const b = model.step([9], [restored]);
      expect(relErr(b, a)).toBe(0);
    });

    it("the state has the same size after 2 tokens and after 200", () => {
      const s1 = model.newState();
      model.prefill([1, 2], s1);
      const s2 = model.newState();
      model.prefill(
        Array.from({ length: 200 }, (_, i) => i % V),
        s2,
      );
      expect(model.saveState(s1).length).toBe(model.saveState(s2).length);
    });

    it("refuses a truncated state or one made by another model", () => {
      const s = model.newState();
      model.prefill([1, 2, 3], s);
      const bytes = model.saveState(s);
      expect(() => model.loadState(bytes.subarray(0, bytes.length - 4))).toThrow(UserError);
      const other = MambaModel.load(join(fixtureRoot, name === "mamba2-groups" ? "mamba1-tied" : "mamba2-groups"));
      expect(() => other.loadState(bytes)).toThrow(/made by model/);
    });
  });
}
