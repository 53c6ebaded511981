import type { Argv } from "yargs";
import type { Recipe } from "../../engine/manifest.js";

export function buildCommand(y: Argv) {
  return y.command(
    "build <model>",
    "compile a checkpoint into an engine package NAME.mamba (onnxruntime graphs + weights)",
    (a) =>
      a
        .positional("model", { type: "string", demandOption: true, describe: "checkpoint directory (Hugging Face or state-spaces layout)" })
        .option("quant", { choices: ["fp16"] as const, default: "fp16" as const, describe: "quantization recipe" })
        .option("out", { type: "string", demandOption: true, describe: "output directory, NAME.mamba" })
        .option("force", { type: "boolean", default: false, describe: "replace an existing package" }),
    async (args) => {
      // the builder is only loaded by this command
      const { build } = await import("../../../engines/build.js");
      const r = await build({
        modelDir: args.model,
        recipe: args.quant as Recipe,
        out: args.out,
        force: args.force,
        log: (line) => process.stderr.write(`${line}\n`),
      });
      process.stdout.write(`${args.out}: ${args.quant}, ${(r.bytes / 1e6).toFixed(2)} MB, built in ${r.seconds.toFixed(1)} s\n`);
    },
  );
}
