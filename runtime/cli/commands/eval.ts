import { readFileSync } from "node:fs";
import type { Argv } from "yargs";
import { UserError } from "../../../engines/errors.js";
import { clozeItems, evaluate } from "../../eval.js";
import { float16WeightBytes } from "../../../engines/package/size.js";
import { openTarget, openTokenizer, targetOptions } from "../open.js";
import { progress } from "../progress.js";
import { provenance, writeResult } from "../../bench/results.js";

export function evalCommand(y: Argv) {
  return y.command(
    "eval",
    "perplexity, bits per byte and last-word accuracy on a text file (the whole text through one recurrent state)",
    (a) =>
      a
        .options(targetOptions)
        .option("text", { type: "string", demandOption: true, describe: "UTF-8 text file to score" })
        .option("max-tokens", { type: "number", describe: "score only the first N tokens" })
        .option("json", { type: "boolean", default: false, describe: "print the result as JSON" })
        .option("out", { type: "boolean", default: false, describe: "also write the JSON to bench/results/" }),
    async (args) => {
      let text: string;
      try {
        text = readFileSync(args.text, "utf8");
      } catch (e) {
        throw new UserError(`${args.text}: cannot read (${(e as NodeJS.ErrnoException).code ?? e})`);
      }
      const o = await openTarget(args);
      const tokenizer = openTokenizer(o);
      const enc = await tokenizer.encodeWithOffsets(text);
      let ids = enc.ids;
      const cloze = clozeItems(text, enc.offsets);
      let bytes = Buffer.byteLength(text, "utf8");
      if (args["max-tokens"] !== undefined) {
        const n = args["max-tokens"];
        if (!Number.isInteger(n) || n < 2) throw new UserError(`--max-tokens: expected an integer ≥ 2, found ${n}`);
        if (n < ids.length) {
          ids = ids.slice(0, n);
          bytes = Buffer.byteLength(await tokenizer.decode(ids), "utf8");
        }
      }
      if (ids.length < 2) throw new UserError(`${args.text}: too short to score (${ids.length} tokens)`);
      const bar = progress("eval", ids.length - 1);
      const r = await evaluate(o.backend, ids, bytes, 256, (done) => bar.update(done), cloze);
      bar.stop();
      const out = {
        tool: "mamba-edge eval",
        model: o.label,
        backend: o.backend.info.name,
        recipe: o.recipe,
        text: args.text,
        weightsMB: o.weightBytes / 1e6,
        float16MB: float16WeightBytes(o.config) / 1e6,
        ...r,
        tokensPerSecond: r.tokens / r.seconds,
        ...provenance(),
      };
      if (args.json) process.stdout.write(JSON.stringify(out, null, 2) + "\n");
      else {
        process.stdout.write(
          `${o.label} on ${args.text}: perplexity ${r.perplexity.toFixed(2)}, ${r.bitsPerByte.toFixed(4)} bits/byte ` +
            `(${r.tokens} tokens, ${r.bytes} bytes, ${r.seconds.toFixed(1)} s, ${out.tokensPerSecond.toFixed(0)} tokens/s)` +
            `; next-token accuracy ${(100 * r.nextTokenAccuracy).toFixed(2)} %` +
            (r.cloze ? `, last-word accuracy ${(100 * r.cloze.accuracy).toFixed(1)} % of ${r.cloze.items} sentence-final words` : "") +
            "\n",
        );
      }
      if (args.out) process.stderr.write(`wrote ${writeResult("eval", out.backend, o.label, out)}\n`);
    },
  );
}
