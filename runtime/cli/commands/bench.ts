import type { Argv } from "yargs";
import { UserError } from "../../../engines/errors.js";
import { argmax } from "../../sampling.js";
import { SHAPES } from "../../../engines/model/random.js";
import { openTarget, targetOptions } from "../open.js";
import { provenance, writeResult } from "../../bench/results.js";

export function benchCommand(y: Argv) {
  return y.command(
    "bench",
    "measure prefill and decode speed, time to first token and memory",
    (a) =>
      a
        .options(targetOptions)
        .option("random", { choices: Object.keys(SHAPES), describe: "a randomly initialised model of this published shape instead" })
        .option("prompt-len", { type: "number", default: 512, describe: "prompt tokens to prefill" })
        .option("gen-tokens", { type: "number", default: 64, describe: "decode steps per timed round" })
        .option("rounds", { type: "number", default: 5, describe: "timed rounds per batch size (the median is reported)" })
        .option("batch", { type: "array", default: [1, 8], describe: "decode batch sizes" })
        .option("json", { type: "boolean", default: false, describe: "print the result as JSON" })
        .option("out", { type: "boolean", default: false, describe: "also write the JSON to bench/results/" })
        .conflicts("model", "random")
        .conflicts("engine", "random")
        .conflicts("model", "engine"),
    async (args) => {
      const promptLen = args["prompt-len"];
      const gen = args["gen-tokens"];
      const batches = (args.batch as unknown[]).map(Number);
      if (!Number.isInteger(promptLen) || promptLen < 1)
        throw new UserError(`--prompt-len: expected a positive integer, found ${promptLen}`);
      if (!Number.isInteger(gen) || gen < 1) throw new UserError(`--gen-tokens: expected a positive integer, found ${gen}`);
      const rounds = args.rounds;
      if (!Number.isInteger(rounds) || rounds < 1) throw new UserError(`--rounds: expected a positive integer, found ${rounds}`);
      if (batches.some((b) => !Number.isInteger(b) || b < 1))
        throw new UserError(`--batch: expected positive integers, found ${args.batch}`);

      const t0 = performance.now();
      const o = await openTarget(args);
      const loadMs = performance.now() - t0;
      const V = o.config.vocabSize;
      // a fixed pseudo-random prompt: the same tokens on every run and backend
      const prompt = Int32Array.from({ length: promptLen }, (_, i) => (i * 7919 + 13) % V);

      const state = o.backend.newState();
      const tp = performance.now();
      const last = await o.backend.prefill(prompt, state);
      const first = argmax(last);
      const ttftMs = performance.now() - tp;

      // decode: `rounds` rounds of `gen` greedy steps per batch size; the median round is reported
      // (one short round is at the mercy of whatever else the machine does), min and max beside it.
      // The batch sizes take turns round by round, so a machine that drifts (a neighbour waking up,
      // the clock changing) weighs on all of them alike and their ratio holds.
      const runs = batches.map((B) => ({
        B,
        states: Array.from({ length: B }, () => state.clone()),
        tokens: Int32Array.from({ length: B }, () => first),
        perStep: [] as number[],
      }));
      const steps = async (r: (typeof runs)[number], n: number) => {
        for (let i = 0; i < n; i++) {
          const logits = await o.backend.step(r.tokens, r.states);
          r.tokens = Int32Array.from({ length: r.B }, (_, b) => argmax(logits.subarray(b * V, (b + 1) * V)));
        }
      };
      // warm-up: first runs allocate, start threads and fill caches, and on a small machine the
      // first fraction of a second of steps ran up to 1.5 × slower: a quarter of a second per batch
      // size (at least 4 steps, at most 256)
      for (const r of runs) {
        const t = performance.now();
        for (let n = 0; n < 256 && (n < 4 || performance.now() - t < 250); n++) await steps(r, 1);
      }
      for (let round = 0; round < rounds; round++)
        for (const r of runs) {
          await steps(r, 1); // untimed: brings this batch's states back into the backend's buffers
          const ts = performance.now();
          await steps(r, gen);
          r.perStep.push((performance.now() - ts) / gen);
        }
      const decode: Record<string, { tokensPerSecond: number; msPerStep: number; msPerStepMin: number; msPerStepMax: number }> = {};
      for (const { B, perStep } of runs) {
        perStep.sort((x, y) => x - y);
        const ms = perStep[perStep.length >> 1];
        decode[`batch${B}`] = {
          tokensPerSecond: (B * 1000) / ms,
          msPerStep: ms,
          msPerStepMin: perStep[0],
          msPerStepMax: perStep[perStep.length - 1],
        };
      }
      const result = {
        tool: "mamba-edge bench",
        model: o.label,
        arch: o.config.arch,
        backend: o.backend.info.name,
        device: o.backend.info.device,
        recipe: o.recipe,
        ...provenance(),
        promptTokens: promptLen,
        loadSeconds: +(loadMs / 1000).toFixed(2),
        prefillTokensPerSecond: +((promptLen * 1000) / ttftMs).toFixed(1),
        ttftMs: +ttftMs.toFixed(1),
        decodeRounds: rounds,
        decodeOrder: "batch sizes take turns round by round",
        decode: Object.fromEntries(
          Object.entries(decode).map(([k, v]) => [
            k,
            {
              tokensPerSecond: +v.tokensPerSecond.toFixed(2),
              msPerStep: +v.msPerStep.toPrecision(4),
              msPerStepMin: +v.msPerStepMin.toPrecision(4),
              msPerStepMax: +v.msPerStepMax.toPrecision(4),
            },
          ]),
        ),
        weightMB: +(o.weightBytes / 1e6).toFixed(1),
        peakRssMB: +(process.resourceUsage().maxRSS / 1024).toFixed(0),
      };
      if (args.json) process.stdout.write(JSON.stringify(result, null, 2) + "\n");
      else {
        process.stdout.write(
          `${result.model} [${result.backend}]: prefill ${result.prefillTokensPerSecond} tokens/s (${promptLen} tokens, TTFT ${result.ttftMs} ms); ` +
            Object.entries(result.decode)
              .map(([k, v]) => `decode ${k} ${v.tokensPerSecond} tokens/s`)
              .join("; ") +
            `; weights ${result.weightMB} MB in memory; peak RSS ${result.peakRssMB} MB\n`,
        );
      }
      if (args.out) process.stderr.write(`wrote ${writeResult("bench", result.backend, args.random ?? o.label, result)}\n`);
    },
  );
}
