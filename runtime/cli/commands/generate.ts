import { createInterface } from "node:readline";
import type { Argv } from "yargs";
import { generate, type GenerateResult } from "../../generate.js";
import { UserError } from "../../../engines/errors.js";
import type { Constraint, Constraints } from "../../constrained/constraints.js";
import { WireError, outputFormat } from "../../scheduler/protocol.js";
import { defaultSampling, type SamplingParams } from "../../sampling.js";
import { openTarget, openTokenizer, targetOptions } from "../open.js";
import { outputFormatFrom, outputFormatOptions } from "../flags.js";

export function generateCommand(y: Argv) {
  return y.command(
    "generate",
    "continue a prompt (or, without --prompt, each line typed on stdin)",
    (a) =>
      a
        .options(targetOptions)
        .option("prompt", { type: "string", describe: "text to continue; without it, prompts are read line by line from stdin" })
        .option("max-tokens", { type: "number", default: 64, describe: "tokens to generate at most" })
        .option("temperature", { type: "number", default: defaultSampling.temperature, describe: "0 = greedy" })
        .option("top-k", { type: "number", default: defaultSampling.topK, describe: "sample from the k most likely tokens (0 = all)" })
        .option("top-p", {
          type: "number",
          default: defaultSampling.topP,
          describe: "nucleus: smallest set of tokens with this much probability",
        })
        .option("min-p", {
          type: "number",
          default: defaultSampling.minP,
          describe: "drop tokens less likely than min-p × the most likely one",
        })
        .option("repeat-penalty", {
          type: "number",
          default: defaultSampling.repeatPenalty,
          describe: "penalize tokens already in the text (1 = off)",
        })
        .option("seed", { type: "number", describe: "random seed (same seed, model and prompt give the same text); default: random" })
        .options(outputFormatOptions),
    async (args) => {
      const sampling = samplingFrom(args);
      const maxTokens = args["max-tokens"];
      if (!Number.isInteger(maxTokens) || maxTokens < 1)
        throw new UserError(`--max-tokens: expected a positive integer, found ${maxTokens}`);
      const wanted = outputFormat(outputFormatFrom(args));
      const o = await openTarget(args);
      const tokenizer = openTokenizer(o);
      const eos = o.config.eosTokenId;
      const grammar =
        wanted === null
          ? null
          : await import("../../constrained/constraints.js").then(({ Constraints }) =>
              Constraints.forTokenizer(tokenizer.path, o.backend.info.vocabSize, eos),
            );
      let invalid = 0;
      const run = async (prompt: string) => {
        const constraint = grammar === null ? undefined : await startConstraint(grammar, wanted!);
        const r = await generate(o.backend, tokenizer, prompt, { maxTokens, sampling, eos, constraint }, (d) => process.stdout.write(d));
        constraint?.dispose();
        if (r.valid === false) invalid++;
        process.stdout.write("\n");
        process.stderr.write(stats(r, sampling.seed) + "\n");
      };
      if (args.prompt !== undefined) {
        process.stdout.write(wanted === null ? args.prompt : "");
        await run(args.prompt);
        if (invalid > 0) process.exitCode = 1;
        return;
      }
      // Interactive: one prompt per line; on a terminal with a "> " prompt and line editing.
      const rl = createInterface({
        input: process.stdin,
        output: process.stdin.isTTY ? process.stdout : undefined,
        terminal: process.stdin.isTTY,
      });
      if (process.stdin.isTTY) process.stderr.write(`${o.label}: type a prompt and press Enter; Ctrl-D to quit\n`);
      rl.setPrompt("> ");
      if (process.stdin.isTTY) rl.prompt();
      for await (const line of rl) {
        if (line.trim()) {
          process.stdout.write(process.stdin.isTTY || wanted !== null ? "" : line);
          await run(line);
          sampling.seed = (sampling.seed + 1) >>> 0;
        }
        if (process.stdin.isTTY) rl.prompt();
      }
      if (invalid > 0) process.exitCode = 1;
    },
  );
}

/** A schema the grammar engine refuses is the user's to fix: one line naming it. */
async function startConstraint(grammar: Constraints, wanted: NonNullable<ReturnType<typeof outputFormat>>): Promise<Constraint> {
  try {
    return await grammar.start(wanted.format, wanted.field === "format" ? "--json" : "--json-schema");
  } catch (e) {
    if (e instanceof WireError) throw new UserError(e.message);
    throw e;
  }
}

export function samplingFrom(args: Record<string, unknown>): SamplingParams {
  const num = (name: string, lo: number, hi: number) => {
    const v = args[name] as number;
    if (typeof v !== "number" || Number.isNaN(v) || v < lo || v > hi)
      throw new UserError(`--${name}: expected a number in [${lo}, ${hi}], found ${v}`);
    return v;
  };
  const seed = args.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : num("seed", 0, 2 ** 32 - 1);
  return {
    temperature: num("temperature", 0, 100),
    topK: Math.floor(num("top-k", 0, 1e9)),
    topP: num("top-p", 0, 1),
    minP: num("min-p", 0, 1),
    repeatPenalty: num("repeat-penalty", 0.01, 100),
    seed,
  };
}

function stats(r: GenerateResult, seed: number): string {
  const prefill = r.promptTokens > 0 ? (r.promptTokens / r.prefillMs) * 1000 : 0;
  const decode = r.completionTokens > 0 ? (r.completionTokens / r.decodeMs) * 1000 : 0;
  const valid = r.valid === undefined ? "" : r.valid ? "; valid" : "; NOT valid (cut before the value ended)";
  return `[${r.promptTokens} prompt tokens at ${prefill.toFixed(1)} tokens/s; ${r.completionTokens} generated at ${decode.toFixed(1)} tokens/s; finish: ${r.finishReason}${valid}; seed ${seed}]`;
}
