// Model weights in float32, one struct per architecture; shapes in the comments follow PyTorch's
// [out, in] layout for linear layers (row o holds the weights of output o).
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { UserError } from "../errors.js";
import type { ModelConfig } from "./config.js";
import { SafetensorsFile } from "./safetensors.js";

export interface Mamba1Layer {
  norm: Float32Array; // (dModel) RMSNorm weight before the mixer
  inProj: Float32Array; // (2*dInner, dModel) -> [x | z]
  inProjBias: Float32Array | null; // (2*dInner)
  convW: Float32Array; // (dInner, dConv) depthwise causal conv
  convB: Float32Array | null; // (dInner)
  xProj: Float32Array; // (dtRank + 2*dState, dInner) -> [dt | B | C]
  dtProj: Float32Array; // (dInner, dtRank)
  dtProjBias: Float32Array; // (dInner)
  A: Float32Array; // (dInner, dState) = -exp(A_log), precomputed
  D: Float32Array; // (dInner) skip connection
  outProj: Float32Array; // (dModel, dInner)
  outProjBias: Float32Array | null; // (dModel)
}

export interface Mamba2Layer {
  norm: Float32Array; // (dModel) RMSNorm weight before the mixer
  inProj: Float32Array; // (2*dInner + 2*nGroups*dState + nHeads, dModel) -> [z | x | B | C | dt]
  inProjBias: Float32Array | null;
  convW: Float32Array; // (convDim, dConv), convDim = dInner + 2*nGroups*dState
  convB: Float32Array | null; // (convDim)
  dtBias: Float32Array; // (nHeads)
  A: Float32Array; // (nHeads) = -exp(A_log), precomputed
  D: Float32Array; // (nHeads)
  gatedNorm: Float32Array; // (dInner) weight of the gated RMSNorm
  outProj: Float32Array; // (dModel, dInner)
  outProjBias: Float32Array | null;
}

export interface Weights<L> {
  embedding: Float32Array; // (vocabSize, dModel)
  layers: L[];
  normF: Float32Array; // (dModel) final RMSNorm
  lmHead: Float32Array; // (vocabSize, dModel); the embedding itself when tied
}

/** Opens every safetensors file of a checkpoint: model.safetensors or the shards of its index. */
export function openCheckpoint(dir: string): Map<string, SafetensorsFile> {
  const single = join(dir, "model.safetensors");
  const index = join(dir, "model.safetensors.index.json");
  const byTensor = new Map<string, SafetensorsFile>();
  let files: string[];
  if (existsSync(index)) {
    let parsed: { weight_map?: Record<string, string> };
    try {
      parsed = JSON.parse(readFileSync(index, "utf8"));
    } catch {
      throw new UserError(`${index}: not valid JSON`);
    }
    if (!parsed.weight_map || typeof parsed.weight_map !== "object") throw new UserError(`${index}: field weight_map is missing`);
    files = [...new Set(Object.values(parsed.weight_map))];
  } else if (existsSync(single)) {
    files = ["model.safetensors"];
  } else {
    const present = existsSync(dir) ? readdirSync(dir).filter((f) => /\.(bin|pt|pth|ckpt|gguf)$/.test(f)) : [];
    throw new UserError(
      `${dir}: no model.safetensors or model.safetensors.index.json` +
        (present.length ? ` (found ${present.join(", ")}: only safetensors weights are read)` : ""),
    );
  }
  for (const name of files) {
    const file = new SafetensorsFile(join(dir, name));
    for (const t of file.tensors.keys()) byTensor.set(t, file);
  }
  return byTensor;
}

/** Fetches tensors by name with their expected shape, naming file, tensor and shapes on mismatch. */
export class TensorSource {
  constructor(
    private readonly files: Map<string, SafetensorsFile>,
    private readonly dir: string,
  ) {}

  has(name: string): boolean {
    return this.files.has(name);
  }

  get(name: string, shape: number[], alt?: string): Float32Array {
    let key = name;
    if (!this.files.has(key) && alt && this.files.has(alt)) key = alt;
    const file = this.files.get(key);
    if (!file) throw new UserError(`${this.dir}: tensor ${name} is missing (expected shape [${shape}])`);
    const info = file.tensors.get(key)!;
    // conv1d weights are stored (C, 1, K); accept any shape with the same dims once size-1 axes go.
    const squeeze = (s: number[]) => s.filter((d) => d !== 1);
    if (JSON.stringify(squeeze(info.shape)) !== JSON.stringify(squeeze(shape))) {
      throw new UserError(`${file.path}: tensor ${key} has shape [${info.shape}], expected [${shape}]`);
    }
    return file.float32(key);
  }

  close(): void {
    for (const f of new Set(this.files.values())) f.close();
  }
}

function negExp(a: Float32Array): Float32Array {
  return a.map((v) => -Math.exp(v));
}

/** A model's weights, read one layer at a time (the builder never holds a whole float model). */
export interface ModelSource {
  readonly config: ModelConfig;
  /** the embedding, the final norm and lm_head (the embedding itself when tied) */
  head(): Omit<Weights<unknown>, "layers">;
  /** layer l's weights, read (or made) afresh on each call */
  layer(l: number): Mamba1Layer | Mamba2Layer;
  close(): void;
}

/** Every layer of a source in memory. */
export function materialize(src: ModelSource): Weights<Mamba1Layer> | Weights<Mamba2Layer> {
  try {
    const layers = Array.from({ length: src.config.nLayer }, (_, l) => src.layer(l));
    return { ...src.head(), layers } as Weights<Mamba1Layer> | Weights<Mamba2Layer>;
  } finally {
    src.close();
  }
}

export function loadWeights(dir: string, c: ModelConfig): Weights<Mamba1Layer> | Weights<Mamba2Layer> {
  return materialize(checkpointSource(dir, c));
}

/** A checkpoint's tensors, read from its safetensors files as they are asked for. */
export function checkpointSource(dir: string, c: ModelConfig): ModelSource {
  const src = new TensorSource(openCheckpoint(dir), dir);
  const opt = (name: string, shape: number[], on: boolean) => (on ? src.get(name, shape) : null);
  return {
    config: c,
    close: () => src.close(),
    head() {
      const embName = c.layout === "hf" ? "backbone.embeddings.weight" : "backbone.embedding.weight";
      const altEmb = c.layout === "hf" ? "backbone.embedding.weight" : "backbone.embeddings.weight";
      const embedding = src.get(embName, [c.vocabSize, c.dModel], altEmb);
      const normF = src.get("backbone.norm_f.weight", [c.dModel]);
      let lmHead = embedding;
      if (!c.tiedEmbeddings) {
        if (!src.has("lm_head.weight")) {
          throw new UserError(`${dir}: tensor lm_head.weight is missing (the config says the head is not tied to the embedding)`);
        }
        lmHead = src.get("lm_head.weight", [c.vocabSize, c.dModel]);
      }
      return { embedding, normF, lmHead };
    },
    layer(i) {
      const p = `backbone.layers.${i}.`;
      const m = `${p}mixer.`;
      if (c.arch === "mamba1") {
        return {
          norm: src.get(`${p}norm.weight`, [c.dModel]),
          inProj: src.get(`${m}in_proj.weight`, [2 * c.dInner, c.dModel]),
          inProjBias: opt(`${m}in_proj.bias`, [2 * c.dInner], c.projBias),
          convW: src.get(`${m}conv1d.weight`, [c.dInner, 1, c.dConv]),
          convB: opt(`${m}conv1d.bias`, [c.dInner], c.convBias),
          xProj: src.get(`${m}x_proj.weight`, [c.dtRank + 2 * c.dState, c.dInner]),
          dtProj: src.get(`${m}dt_proj.weight`, [c.dInner, c.dtRank]),
          dtProjBias: src.get(`${m}dt_proj.bias`, [c.dInner]),
          A: negExp(src.get(`${m}A_log`, [c.dInner, c.dState])),
          D: src.get(`${m}D`, [c.dInner]),
          outProj: src.get(`${m}out_proj.weight`, [c.dModel, c.dInner]),
          outProjBias: opt(`${m}out_proj.bias`, [c.dModel], c.projBias),
        } satisfies Mamba1Layer;
      }
      const convDim = c.dInner + 2 * c.nGroups * c.dState;
      const projDim = c.dInner + convDim + c.nHeads;
      return {
        norm: src.get(`${p}norm.weight`, [c.dModel]),
        inProj: src.get(`${m}in_proj.weight`, [projDim, c.dModel]),
        inProjBias: opt(`${m}in_proj.bias`, [projDim], c.projBias),
        convW: src.get(`${m}conv1d.weight`, [convDim, 1, c.dConv]),
        convB: opt(`${m}conv1d.bias`, [convDim], c.convBias),
        dtBias: src.get(`${m}dt_bias`, [c.nHeads]),
        A: negExp(src.get(`${m}A_log`, [c.nHeads])),
        D: src.get(`${m}D`, [c.nHeads]),
        gatedNorm: c.gatedNormGroup > 0 ? src.get(`${m}norm.weight`, [c.dInner]) : new Float32Array(c.dInner).fill(1),
        outProj: src.get(`${m}out_proj.weight`, [c.dModel, c.dInner]),
        outProjBias: opt(`${m}out_proj.bias`, [c.dModel], c.projBias),
      } satisfies Mamba2Layer;
    },
  };
}
