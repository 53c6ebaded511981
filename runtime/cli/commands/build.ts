import type { Argv } from "yargs";
import type { Recipe } from "../../../engines/package/manifest.js";
import { UserError } from "../../../engines/errors.js";
import { progress, type Progress } from "../progress.js";
import { SHAPES } from "../../../engines/model/random.js";
import { provenance, writeResult } from "../../bench/results.js";

export function buildCommand(y: Argv) {
  return y.command(
    "build [model]",
    "compile a checkpoint into an engine package NAME.mamba (onnxruntime and/or TensorRT graphs + weights)",
    (a) =>
      a
        .positional("model", { type: "string", describe: "checkpoint directory (Hugging Face or state-spaces layout)" })
        .option("random", {
          choices: Object.keys(SHAPES),
          describe: "instead of a checkpoint: random weights of this published shape (for benchmarks)",
        })
        .option("record", { type: "boolean", default: false, describe: "also write a build record (time, size) to bench/results/" })
        .option("quant", {
          choices: ["fp16", "w8a8", "w4a8", "w4a16", "w8a8-naive"] as const,
          default: "fp16" as const,
          describe: "recipe: fp16 (baseline), w8a8 (Quamba), w4a8 / w4a16 (Quamba2), w8a8-naive (min-max, no Hadamard: an ablation)",
        })
        .option("calib", { type: "string", describe: "calibration text file (every recipe but fp16)" })
        .option("calib-tokens", {
          type: "string",
          describe: "instead of --calib: a file of token ids (for checkpoints without tokenizer.json)",
        })
        .option("calib-samples", { type: "number", default: 128, describe: "calibration windows" })
        .option("calib-len", { type: "number", default: 512, describe: "tokens per calibration window" })
        .option("percentile", {
          type: "number",
          default: 0.9995,
          describe: "percentile of |x| that sets the SSM input's scale (w8a8, w4a8)",
        })
        .option("rtn", { type: "boolean", default: false, describe: "4-bit weights by round-to-nearest instead of GPTQ (an ablation)" })
        .option("act-order", {
          type: "boolean",
          default: false,
          describe: "GPTQ: quantize columns in order of decreasing Hessian diagonal (groups keep their place)",
        })
        .option("gptq-inputs", {
          choices: ["float", "quantized"] as const,
          default: "float" as const,
          describe: "GPTQ's Hessians from the float model's activations, or from each block's inputs with the blocks before it quantized",
        })
        .option("group-scales", {
          choices: ["search", "absmax"] as const,
          default: "search" as const,
          describe: "4-bit groups: each scale searched for the least rounding error, or set by the largest |weight| (an ablation)",
        })
        .option("backend", {
          choices: ["auto", "ort", "cuda"] as const,
          default: "auto" as const,
          describe: "where calibration runs: auto (the GPU where one is, else the CPU), ort (onnxruntime on the CPU), cuda (the GPU)",
        })
        .option("ssm-scales", {
          choices: ["quamba2", "per-tensor"] as const,
          describe:
            "Mamba-2 under w8a8 / w4a8: Quamba2's SSM-input scales (x clustered, B and C per state group; w4a8's default), or one per tensor (w8a8's default)",
        })
        .option("embedding", {
          choices: ["fp16", "q4"] as const,
          default: "fp16" as const,
          describe: "the embedding and lm_head: float16, or 4-bit groups (a smaller engine, at a cost in perplexity)",
        })
        .option("target", {
          type: "string",
          default: "cpu",
          describe: "graphs to write, comma-separated: cpu (onnxruntime), trt (TensorRT's ONNX parser, plugins of domain mamba_edge)",
        })
        .option("out", { type: "string", demandOption: true, describe: "output directory, NAME.mamba" })
        .option("force", { type: "boolean", default: false, describe: "replace an existing package" }),
    async (args) => {
      const int = (name: string, v: number) => {
        if (!Number.isInteger(v) || v < 1) throw new UserError(`--${name}: expected a positive integer, found ${v}`);
        return v;
      };
      if (!(args.percentile > 0.5 && args.percentile <= 1))
        throw new UserError(`--percentile: expected a number in (0.5, 1], found ${args.percentile}`);
      if ((args.model === undefined) === (args.random === undefined))
        throw new UserError("build: give a checkpoint directory or --random SHAPE");
      // the builder is only loaded by this command
      const { build, parseTargets } = await import("../../../engines/builder/build.js");
      let bar: Progress | null = null;
      const started = provenance(); // the commit the build ran from, not one made while it ran
      const r = await build({
        modelDir: (args.model ?? args.random)!,
        random: args.random !== undefined,
        recipe: args.quant as Recipe,
        out: args.out,
        force: args.force,
        calibText: args.calib,
        calibTokens: args["calib-tokens"],
        calibSamples: int("calib-samples", args["calib-samples"]),
        calibLength: int("calib-len", args["calib-len"]),
        percentile: args.percentile,
        gptq: !args.rtn,
        embedding: args.embedding,
        ssmScales: args["ssm-scales"],
        actOrder: args["act-order"],
        gptqInputs: args["gptq-inputs"],
        groupScales: args["group-scales"],
        calibBackend: args.backend,
        targets: parseTargets(args.target),
        log: (line) => process.stderr.write(`${line}\n`),
        progress: (label, done, total) => {
          bar ??= progress(label, total);
          bar.update(done);
          if (done === total) bar.stop();
        },
      });
      process.stdout.write(`${args.out}: ${args.quant}, ${(r.bytes / 1e6).toFixed(2)} MB, built in ${r.seconds.toFixed(1)} s\n`);
      if (args.record) {
        const rec = {
          tool: "mamba-edge build",
          model: r.manifest.source.name,
          recipe: args.quant,
          engine: args.out.split(/[\\/]/).pop(),
          seconds: +r.seconds.toFixed(2),
          engineMB: +(r.bytes / 1e6).toFixed(2),
          // the process's peak resident memory (Linux reports kilobytes)
          peakRssMB: +(process.resourceUsage().maxRSS / 1024).toFixed(0),
          gptq: r.gptq,
          phases: Object.fromEntries(Object.entries(r.phases).map(([k, v]) => [k, +v.toFixed(1)])),
          calibration: r.manifest.calibration && { ...r.manifest.calibration, backend: r.calibration },
          ...started,
        };
        process.stderr.write(`wrote ${writeResult("build", args.quant, `${rec.model}-${args.quant}`, rec)}\n`);
      }
    },
  );
}
