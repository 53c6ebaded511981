// Model configuration: one normalized shape for Mamba-1 and Mamba-2, read from either the Hugging
// Face config.json (model_type "mamba" / "mamba2") or the original state-spaces one (d_model,
// n_layer, ssm_cfg). Defaults follow each library's own, so a config that omits a field means
// what it means there.
import { UserError, describe } from "../errors.js";

export interface ModelConfig {
  arch: "mamba1" | "mamba2";
  layout: "hf" | "state-spaces";
  vocabSize: number; // rows of the embedding and the lm_head (padded for the state-spaces layout)
  dModel: number; // width of the residual stream
  nLayer: number; // number of Mamba blocks
  dInner: number; // expand * dModel: width of the SSM branch
  dState: number; // N: state size per channel (Mamba-1) or per head (Mamba-2)
  dConv: number; // width of the causal depthwise convolution
  convBias: boolean; // conv1d has a bias
  projBias: boolean; // in_proj and out_proj have biases
  normEps: number; // epsilon of every RMSNorm
  tiedEmbeddings: boolean; // lm_head shares the embedding matrix
  eosTokenId: number | null;
  // Mamba-1 only
  dtRank: number; // rank of the dt projection (x_proj -> dt_proj)
  // Mamba-2 only
  nHeads: number; // SSM heads; dInner = nHeads * headDim
  headDim: number; // P: channels per head
  nGroups: number; // groups sharing B and C (nHeads / nGroups heads each)
  chunkSize: number; // chunk length of the SSD prefill
  dtLimit: [number, number]; // dt is clamped to this range after softplus
  gatedNormGroup: number; // the gated RMSNorm normalizes groups of this many channels
  normBeforeGate: boolean; // norm(y) * silu(z) instead of norm(y * silu(z))
}

type Raw = Record<string, unknown>;

/** Reads typed fields from a JSON object, with one-line errors naming the file and field. */
class Fields {
  constructor(
    private readonly raw: Raw,
    private readonly where: string,
  ) {}
  has(name: string): boolean {
    return this.raw[name] !== undefined && this.raw[name] !== null;
  }
  int(name: string, dflt?: number, min = 1): number {
    const v = this.has(name) ? this.raw[name] : dflt;
    if (v === undefined) throw new UserError(`${this.where}: field ${name} is missing (expected an integer ≥ ${min})`);
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
      throw new UserError(`${this.where}: field ${name}: expected an integer ≥ ${min}, found ${describe(v)}`);
    }
    return v;
  }
  num(name: string, dflt?: number): number {
    const v = this.has(name) ? decodeFloat(this.raw[name]) : dflt;
    if (typeof v !== "number" || Number.isNaN(v))
      throw new UserError(`${this.where}: field ${name}: expected a number, found ${describe(this.raw[name])}`);
    return v;
  }
  bool(name: string, dflt: boolean): boolean {
    const v = this.has(name) ? this.raw[name] : dflt;
    if (typeof v !== "boolean") throw new UserError(`${this.where}: field ${name}: expected true or false, found ${describe(v)}`);
    return v;
  }
  optInt(name: string): number | null {
    const v = this.raw[name];
    if (Array.isArray(v)) return typeof v[0] === "number" ? v[0] : null; // eos_token_id may be a list
    return typeof v === "number" && Number.isInteger(v) ? v : null;
  }
  rank(name: string, dModel: number): number {
    // "auto" means ceil(d_model / 16) in both libraries.
    const v = this.raw[name];
    if (v === undefined || v === null || v === "auto") return Math.ceil(dModel / 16);
    return this.int(name);
  }
  pair(name: string, dflt: [number, number]): [number, number] {
    const v = this.raw[name];
    if (v === undefined || v === null) return dflt;
    if (!Array.isArray(v) || v.length !== 2) throw new UserError(`${this.where}: field ${name}: expected [min, max], found ${describe(v)}`);
    const lo = decodeFloat(v[0]);
    const hi = decodeFloat(v[1]);
    if (typeof lo !== "number" || typeof hi !== "number" || !(lo <= hi)) {
      throw new UserError(`${this.where}: field ${name}: expected [min, max] with min ≤ max, found ${describe(v)}`);
    }
    return [lo, hi];
  }
  sub(name: string): Fields {
    const v = this.raw[name] ?? {};
    if (typeof v !== "object" || Array.isArray(v))
      throw new UserError(`${this.where}: field ${name}: expected an object, found ${describe(v)}`);
    return new Fields(v as Raw, `${this.where} (${name})`);
  }
  str(name: string, dflt: string): string {
    const v = this.has(name) ? this.raw[name] : dflt;
    if (typeof v !== "string") throw new UserError(`${this.where}: field ${name}: expected a string, found ${describe(v)}`);
    return v;
  }
}

/** JSON has no Infinity: transformers writes {"__float__": "Infinity"}, others write "inf" or null. */
function decodeFloat(v: unknown): number | undefined {
  if (typeof v === "number") return v;
  if (v && typeof v === "object" && "__float__" in (v as Raw)) v = (v as Raw).__float__;
  if (typeof v === "string") {
    const s = v.trim().toLowerCase();
    if (s === "infinity" || s === "inf" || s === "+inf") return Infinity;
    if (s === "-infinity" || s === "-inf") return -Infinity;
    if (s === "nan") return NaN;
    const n = Number(s);
    return Number.isNaN(n) ? undefined : n;
  }
  return undefined;
}

export function parseConfig(raw: unknown, where = "config.json"): ModelConfig {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new UserError(`${where}: expected a JSON object`);
  const f = new Fields(raw as Raw, where);
  const r = raw as Raw;
  if (r.model_type === undefined && r.d_model !== undefined) return parseStateSpaces(f, r, where);
  if ((r.model_type === "mamba" || r.model_type === "mamba2") && !["silu", "swish", undefined].includes(r.hidden_act as string)) {
    throw new UserError(`${where}: field hidden_act: only "silu" is supported, found ${describe(r.hidden_act)}`);
  }
  if (r.model_type === "mamba") return parseHfMamba1(f);
  if (r.model_type === "mamba2") return parseHfMamba2(f, where);
  if (r.model_type === undefined) throw new UserError(`${where}: no model_type and no d_model: not a Mamba config`);
  throw new UserError(`${where}: unknown model_type ${describe(r.model_type)} (expected "mamba" or "mamba2")`);
}

function parseHfMamba1(f: Fields): ModelConfig {
  const dModel = f.int("hidden_size", 768);
  const expand = f.num("expand", 2);
  return {
    ...unused(),
    arch: "mamba1",
    layout: "hf",
    vocabSize: f.int("vocab_size", 50280),
    dModel,
    nLayer: f.int("num_hidden_layers", 32),
    dInner: f.int("intermediate_size", Math.round(expand * dModel)),
    dState: f.int("state_size", 16),
    dConv: f.int("conv_kernel", 4),
    convBias: f.bool("use_conv_bias", true),
    projBias: f.bool("use_bias", false),
    normEps: f.num("layer_norm_epsilon", 1e-5),
    tiedEmbeddings: f.bool("tie_word_embeddings", true),
    eosTokenId: f.has("eos_token_id") ? f.optInt("eos_token_id") : 0,
    dtRank: f.rank("time_step_rank", dModel),
  };
}

function parseHfMamba2(f: Fields, where: string): ModelConfig {
  const dModel = f.int("hidden_size", 4096);
  const expand = f.num("expand", 2);
  const dInner = Math.round(expand * dModel);
  const nHeads = f.int("num_heads", 128);
  const headDim = f.int("head_dim", 64);
  const nGroups = f.int("n_groups", 8);
  checkMamba2Shape(where, dInner, nHeads, headDim, nGroups, "hidden_size * expand", "num_heads * head_dim", "n_groups");
  return {
    ...unused(),
    arch: "mamba2",
    layout: "hf",
    vocabSize: f.int("vocab_size", 32768),
    dModel,
    nLayer: f.int("num_hidden_layers", 64),
    dInner,
    dState: f.int("state_size", 128),
    dConv: f.int("conv_kernel", 4),
    convBias: f.bool("use_conv_bias", true),
    projBias: f.bool("use_bias", false),
    normEps: f.num("layer_norm_epsilon", 1e-5),
    tiedEmbeddings: f.bool("tie_word_embeddings", false),
    eosTokenId: f.has("eos_token_id") ? f.optInt("eos_token_id") : 2,
    nHeads,
    headDim,
    nGroups,
    chunkSize: f.int("chunk_size", 256),
    dtLimit: f.pair("time_step_limit", [0, Infinity]),
    // transformers' gated norm spans all of d_inner whatever n_groups is.
    gatedNormGroup: dInner,
  };
}

function parseStateSpaces(f: Fields, r: Raw, where: string): ModelConfig {
  const dModel = f.int("d_model");
  const ssm = f.sub("ssm_cfg");
  const layer = ssm.str("layer", "Mamba1");
  if (!f.bool("rms_norm", true)) throw new UserError(`${where}: field rms_norm: only RMSNorm models are supported, found false`);
  if (f.has("d_intermediate") && f.int("d_intermediate", 0, 0) !== 0) {
    throw new UserError(`${where}: field d_intermediate: MLP blocks are not supported, expected 0`);
  }
  if (Array.isArray(r.attn_layer_idx) && r.attn_layer_idx.length > 0) {
    throw new UserError(`${where}: field attn_layer_idx: attention layers are not supported, expected []`);
  }
  const multiple = f.int("pad_vocab_size_multiple", 8);
  const vocab = f.int("vocab_size");
  const base = {
    ...unused(),
    layout: "state-spaces" as const,
    vocabSize: Math.ceil(vocab / multiple) * multiple,
    dModel,
    nLayer: f.int("n_layer"),
    dConv: ssm.int("d_conv", 4),
    convBias: ssm.bool("conv_bias", true),
    projBias: ssm.bool("bias", false),
    normEps: f.num("norm_epsilon", 1e-5),
    tiedEmbeddings: f.bool("tie_embeddings", true),
    eosTokenId: null,
  };
  const expand = ssm.num("expand", 2);
  const dInner = Math.round(expand * dModel);
  if (layer === "Mamba1") {
    return { ...base, arch: "mamba1", dInner, dState: ssm.int("d_state", 16), dtRank: ssm.rank("dt_rank", dModel) };
  }
  if (layer !== "Mamba2") throw new UserError(`${where}: field ssm_cfg.layer: expected "Mamba1" or "Mamba2", found ${describe(layer)}`);
  const headDim = ssm.int("headdim", 64);
  const nGroups = ssm.int("ngroups", 1);
  if (ssm.has("d_ssm") && ssm.int("d_ssm") !== dInner)
    throw new UserError(`${where}: field ssm_cfg.d_ssm: only d_ssm = expand * d_model is supported`);
  if (ssm.bool("D_has_hdim", false)) throw new UserError(`${where}: field ssm_cfg.D_has_hdim: only false is supported`);
  checkMamba2Shape(where, dInner, dInner / headDim, headDim, nGroups, "d_model * expand", "a multiple of headdim", "ngroups");
  return {
    ...base,
    arch: "mamba2",
    dInner,
    dState: ssm.int("d_state", 128),
    nHeads: dInner / headDim,
    headDim,
    nGroups,
    chunkSize: ssm.int("chunk_size", 256),
    dtLimit: ssm.pair("dt_limit", [0, Infinity]),
    // mamba_ssm normalizes each group of d_inner / ngroups channels on its own.
    gatedNormGroup: ssm.bool("rmsnorm", true) ? dInner / nGroups : 0,
    normBeforeGate: ssm.bool("norm_before_gate", false),
  };
}

/** Fields that only one architecture uses, zeroed; each parser overrides its own. */
function unused() {
  return {
    dtRank: 0,
    nHeads: 0,
    headDim: 0,
    nGroups: 0,
    chunkSize: 0,
    dtLimit: [0, Infinity] as [number, number],
    gatedNormGroup: 0,
    normBeforeGate: false,
  };
}

function checkMamba2Shape(
  where: string,
  dInner: number,
  nHeads: number,
  headDim: number,
  nGroups: number,
  a: string,
  b: string,
  g: string,
) {
  if (!Number.isInteger(nHeads) || nHeads * headDim !== dInner) {
    throw new UserError(`${where}: ${a} (${dInner}) must equal ${b} (${nHeads * headDim})`);
  }
  if (nHeads % nGroups !== 0) throw new UserError(`${where}: ${g} (${nGroups}) must divide the number of heads (${nHeads})`);
}
