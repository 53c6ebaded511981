import type { Argv } from "yargs";
import { loadManifest } from "../../../engines/package/manifest.js";
import { float16WeightBytes, isWeightFile } from "../../../engines/package/size.js";

export function inspectCommand(y: Argv) {
  return y.command(
    "inspect <engine>",
    "verify an engine package and print a summary of its manifest",
    (a) =>
      a
        .positional("engine", { type: "string", demandOption: true, describe: "engine package NAME.mamba" })
        .option("json", { type: "boolean", default: false, describe: "print the whole manifest as JSON" }),
    async (args) => {
      const m = loadManifest(args.engine);
      if (args.json) {
        process.stdout.write(JSON.stringify(m, null, 2) + "\n");
        return;
      }
      const c = m.config;
      const dims =
        c.arch === "mamba1"
          ? `d_inner ${c.dInner}, d_state ${c.dState}, d_conv ${c.dConv}, dt_rank ${c.dtRank}`
          : `d_inner ${c.dInner}, ${c.nHeads} heads × ${c.headDim}, d_state ${c.dState}, ${c.nGroups} group(s), d_conv ${c.dConv}`;
      const weights = Object.entries(m.files)
        .filter(([n]) => isWeightFile(n))
        .reduce((a, [, f]) => a + f.bytes, 0);
      const fp16 = float16WeightBytes(c);
      const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
      const lines = [
        `${args.engine}: ${m.format} v${m.version}, built ${m.created} by ${m.builder.name} ${m.builder.version}`,
        `model:       ${c.arch} from ${m.source.name}: ${c.nLayer} layers, d_model ${c.dModel}, vocab ${c.vocabSize}; ${dims}`,
        `recipe:      ${m.quant.recipe}${Object.keys(m.quant.params).length ? " " + JSON.stringify(m.quant.params) : ""}`,
        `calibration: ${m.calibration ? `${m.calibration.samples} × ${m.calibration.length} tokens of text sha256 ${m.calibration.textSha256.slice(0, 12)}…` : "none"}`,
        `tokenizer:   ${m.tokenizer ?? "none"}`,
        `targets:     ${m.targets.join(", ")}`,
        `weights:     ${mb(weights)} in ${Object.keys(m.files).filter(isWeightFile).join(" + ")} (the model in float16: ${mb(fp16)}, ${(fp16 / weights).toFixed(2)}× this)`,
        `files (sha256 verified):`,
        ...Object.entries(m.files).map(
          ([n, f]) => `  ${n.padEnd(22)} ${(f.bytes / 1e6).toFixed(2).padStart(8)} MB  ${f.sha256.slice(0, 16)}`,
        ),
      ];
      process.stdout.write(lines.join("\n") + "\n");
    },
  );
}
