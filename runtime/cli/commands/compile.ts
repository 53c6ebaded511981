// `mamba-edge compile NAME.mamba`: on the device, TensorRT builds the package's trt/step.onnx and
// trt/prefill.onnx into plans for this GPU and TensorRT version (through the shim's builder and
// TensorRT's ONNX parser, with the plugin library registered), and the manifest records them.
import { existsSync, renameSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Argv } from "yargs";
import { UserError } from "../../../engines/errors.js";
import type { ModelConfig } from "../../../engines/model/config.js";
import { loadManifest, sha256File } from "../../../engines/package/manifest.js";
import { planStem, recordPlan, type TrtPlan } from "../../../engines/package/plans.js";

const GRAPHS = { step: "trt/step.onnx", prefill: "trt/prefill.onnx" } as const;
/** where the printed trtexec commands write their plans, for --adopt to record */
const TRTEXEC_PLANS = { step: "trt/step.trtexec.plan", prefill: "trt/prefill.trtexec.plan" } as const;

/** "1,2,4" → increasing positive integers. */
function sizes(flag: string, text: string): number[] {
  const v = text.split(",").map((s) => Number(s.trim()));
  if (v.length === 0 || v.some((x, i) => !Number.isInteger(x) || x < 1 || (i > 0 && x <= v[i - 1])))
    throw new UserError(`--${flag}: expected increasing positive integers separated by commas, found "${text}"`);
  return v;
}

/** Batch buckets 1, 2, 4, … up to and including maxBatch. */
export function batchBuckets(maxBatch: number): number[] {
  const out: number[] = [];
  for (let b = 1; b < maxBatch; b *= 2) out.push(b);
  return [...out, maxBatch];
}

/** trtexec's shape spec of every input of a trt graph: tokens, then each layer's conv and SSM state. */
export function shapeSpec(c: ModelConfig, batch: number, tokens: number | null): string {
  const convC = c.arch === "mamba1" ? c.dInner : c.dInner + 2 * c.nGroups * c.dState;
  const ssm = c.arch === "mamba1" ? [c.dInner, c.dState] : [c.nHeads, c.headDim, c.dState];
  const spec = [`tokens:${tokens === null ? batch : `${batch}x${tokens}`}`];
  for (let l = 0; l < c.nLayer; l++)
    spec.push(`conv_${l}:${[batch, convC, c.dConv - 1].join("x")}`, `ssm_${l}:${[batch, ...ssm].join("x")}`);
  return spec.join(",");
}

/**
 * The trtexec (TensorRT 10.3) commands that build what compile builds, with one profile over the
 * range of batches (and of chunk lengths) instead of one per bucket: the plugins through
 * --dynamicPlugins (the library exports getCreators and registers nothing on load, so
 * --staticPlugins would not find them).
 */
export function trtexecCommands(
  dir: string,
  c: ModelConfig,
  plugins: string,
  maxBatch: number,
  chunk: number,
  workspace: number,
): string[] {
  const common = ["--stronglyTyped", `--dynamicPlugins=${plugins}`, `--memPoolSize=workspace:${workspace}M`, "--skipInference"];
  return [
    [
      "trtexec",
      `--onnx=${join(dir, GRAPHS.step)}`,
      `--saveEngine=${join(dir, TRTEXEC_PLANS.step)}`,
      `--minShapes=${shapeSpec(c, 1, null)}`,
      `--optShapes=${shapeSpec(c, maxBatch, null)}`,
      `--maxShapes=${shapeSpec(c, maxBatch, null)}`,
      `--timingCacheFile=${join(dir, "trt", "trtexec.timing-cache")}`,
      ...common,
    ].join(" "),
    [
      "trtexec",
      `--onnx=${join(dir, GRAPHS.prefill)}`,
      `--saveEngine=${join(dir, TRTEXEC_PLANS.prefill)}`,
      `--minShapes=${shapeSpec(c, 1, 1)}`,
      `--optShapes=${shapeSpec(c, 1, chunk)}`,
      `--maxShapes=${shapeSpec(c, 1, chunk)}`,
      `--timingCacheFile=${join(dir, "trt", "trtexec.timing-cache")}`,
      ...common,
    ].join(" "),
  ];
}

export function compileCommand(y: Argv) {
  return y.command(
    "compile <engine>",
    "on the device: compile the engine's TensorRT graphs into plans for this GPU and TensorRT version (backend trt)",
    (a) =>
      a
        .positional("engine", { type: "string", demandOption: true, describe: "engine package NAME.mamba built with --target trt" })
        .option("max-batch", { type: "number", default: 16, describe: "largest decode batch: a profile for each of 1, 2, 4, … up to it" })
        .option("chunks", {
          type: "string",
          default: "16,64,256",
          describe: "prefill chunk sizes: a profile for each range of prompt lengths; longer prompts run in chunks of the largest",
        })
        .option("workspace", { type: "number", default: 1024, describe: "TensorRT's scratch memory limit while building, MiB" })
        .option("trtexec", {
          type: "boolean",
          default: false,
          describe: `print the trtexec commands that build the plans instead (one profile over 1..max-batch, and over 1..the largest chunk), writing ${TRTEXEC_PLANS.step} and ${TRTEXEC_PLANS.prefill}`,
        })
        .option("adopt", {
          type: "boolean",
          default: false,
          describe: "record the plans those trtexec commands wrote as this machine's, instead of building",
        }),
    async (args) => {
      const dir = args.engine;
      const maxBatch = args["max-batch"];
      if (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 256)
        throw new UserError(`--max-batch: expected an integer in [1, 256], found ${maxBatch}`);
      if (!Number.isInteger(args.workspace) || args.workspace < 64)
        throw new UserError(`--workspace: expected at least 64 (MiB), found ${args.workspace}`);
      const chunks = sizes("chunks", args.chunks);
      if (args.trtexec && args.adopt) throw new UserError("give one of --trtexec, --adopt");
      const m = loadManifest(dir);
      const graphsThere = () => {
        for (const g of Object.values(GRAPHS))
          if (!(g in m.files)) throw new UserError(`${dir}: has no ${g} (rebuild the engine with \`mamba-edge build … --target trt\`)`);
      };
      if (args.trtexec) {
        graphsThere();
        const { trtPluginsPath } = await import("../../backends/trt.js");
        const cmds = trtexecCommands(dir, m.config, trtPluginsPath(), maxBatch, chunks[chunks.length - 1], args.workspace);
        process.stdout.write(
          cmds.join("\n") + `\nmamba-edge compile ${dir} --adopt --max-batch ${maxBatch} --chunks ${chunks[chunks.length - 1]}\n`,
        );
        return;
      }

      // what this machine lacks comes first: without TensorRT nothing else matters
      const { loadTrtShim, probeMachine, trtPluginsPath, TRT_BUILD_HINT } = await import("../../backends/trt.js");
      const lib = await loadTrtShim();
      const machine = probeMachine(lib, "compile");
      const plugins = trtPluginsPath();
      if (!existsSync(plugins))
        throw new UserError(
          `compile: the TensorRT plugin library is not built (${plugins} is missing; build it with \`${TRT_BUILD_HINT}\`)`,
        );
      graphsThere();

      const stem = planStem(machine.gpu, machine.tensorrt);
      const batches = batchBuckets(maxBatch);
      const plan: Omit<TrtPlan, "sha256"> = {
        gpu: machine.gpu,
        sm: machine.sm,
        tensorrt: machine.tensorrt,
        step: `${stem}.plan`,
        prefill: `${stem}.prefill.plan`,
        batches,
        chunks,
        created: new Date().toISOString(),
      };
      // one timing cache per GPU and TensorRT version, kept beside the plans so a recompile is quicker
      const cache = join(dir, `${stem}.timing-cache`);
      const jobs = [
        { graph: GRAPHS.step, out: plan.step, prefill: 0, sizes: batches, what: `batch ${batches.join(", ")}` },
        { graph: GRAPHS.prefill, out: plan.prefill!, prefill: 1, sizes: chunks, what: `prompt chunks up to ${chunks.join(", ")}` },
      ];
      const files: Record<string, { sha256: string; bytes: number }> = {};
      if (args.adopt) {
        // trtexec built one profile over each range: the shim runs any batch (chunk) inside it
        plan.batches = [maxBatch];
        plan.chunks = [chunks[chunks.length - 1]];
        for (const [from, to] of [
          [TRTEXEC_PLANS.step, plan.step],
          [TRTEXEC_PLANS.prefill, plan.prefill!],
        ]) {
          if (!existsSync(join(dir, from)))
            throw new UserError(
              `compile --adopt: ${join(dir, from)} is missing (run the commands of \`mamba-edge compile ${dir} --trtexec\` first)`,
            );
          renameSync(join(dir, from), join(dir, to));
          files[to] = { sha256: sha256File(join(dir, to)), bytes: statSync(join(dir, to)).size };
        }
      }
      for (const j of args.adopt ? [] : jobs) {
        process.stderr.write(`compile: ${j.graph} → ${j.out} (${machine.gpu}, TensorRT ${machine.tensorrt}, ${j.what})\n`);
        const t0 = Date.now();
        const rc = lib.me_trt_build(
          join(dir, j.graph),
          plugins,
          join(dir, j.out),
          cache,
          j.prefill,
          Int32Array.from(j.sizes),
          j.sizes.length,
          args.workspace,
        );
        if (rc !== 0) throw new UserError(`compile: ${lib.me_trt_last_error()}`);
        const f = join(dir, j.out);
        files[j.out] = { sha256: sha256File(f), bytes: statSync(f).size };
        process.stderr.write(
          `compile: ${j.out}: ${(files[j.out].bytes / 1e6).toFixed(1)} MB in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`,
        );
      }
      recordPlan(dir, m, { ...plan, sha256: { step: files[plan.step].sha256, prefill: files[plan.prefill!].sha256 } }, files);
      process.stdout.write(
        `${dir}: ${plan.step} and ${plan.prefill} for ${machine.gpu} (sm_${machine.sm}), TensorRT ${machine.tensorrt}\n`,
      );
    },
  );
}
