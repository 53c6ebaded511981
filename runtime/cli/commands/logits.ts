import type { Argv } from "yargs";
import { UserError } from "../../../engines/errors.js";
import { openTarget, targetOptions } from "../open.js";

export function logitsCommand(y: Argv) {
  return y.command(
    "logits",
    "print the logits of every input position as JSON",
    (a) =>
      a
        .options(targetOptions)
        .option("tokens", { type: "string", demandOption: true, describe: "comma-separated token ids, e.g. 3,17,5" })
        .option("mode", {
          choices: ["prefill", "step"] as const,
          default: "prefill" as const,
          describe: "prefill: the whole sequence at once; step: one token at a time through the state",
        }),
    async (args) => {
      const o = await openTarget(args);
      const tokens = parseTokens(args.tokens, o.config.vocabSize);
      const V = o.config.vocabSize;
      const rows: number[][] = [];
      if (args.mode === "prefill") {
        const all = await o.backend.prefill(tokens, o.backend.newState(), true);
        for (let t = 0; t < tokens.length; t++) rows.push(Array.from(all.subarray(t * V, (t + 1) * V)));
      } else {
        const state = o.backend.newState();
        for (const t of tokens) rows.push(Array.from(await o.backend.step(Int32Array.of(t), [state])));
      }
      process.stdout.write(JSON.stringify({ logits: rows }) + "\n");
      await o.backend.close();
    },
  );
}

export function parseTokens(text: string, vocab: number): Int32Array {
  const parts = text.split(",").map((s) => s.trim());
  const ids = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : NaN));
  const bad = ids.findIndex((id) => !Number.isInteger(id) || id >= vocab);
  if (parts.length === 0 || bad >= 0) {
    throw new UserError(`--tokens: expected comma-separated integers in [0, ${vocab}), found ${JSON.stringify(parts[bad] ?? text)}`);
  }
  return Int32Array.from(ids);
}
