import { describe, expect, it } from "vitest";
import { parseConfig } from "../engines/model/config.js";

describe("config parsing", () => {
  it("reads transformers' Infinity encoding of time_step_limit", () => {
    const c = parseConfig({
      model_type: "mamba2",
      hidden_size: 64,
      num_heads: 8,
      head_dim: 16,
      n_groups: 2,
      time_step_limit: [0.0, { __float__: "Infinity" }],
    });
    expect(c.dtLimit).toEqual([0, Infinity]);
  });

  it("fills transformers' defaults for fields a config omits", () => {
    const c = parseConfig({ model_type: "mamba", hidden_size: 40 });
    expect(c).toMatchObject({ arch: "mamba1", dState: 16, dConv: 4, dInner: 80, dtRank: 3, tiedEmbeddings: true, vocabSize: 50280 });
    const c2 = parseConfig({ model_type: "mamba2", hidden_size: 4096 });
    expect(c2).toMatchObject({ nHeads: 128, headDim: 64, nGroups: 8, dState: 128, chunkSize: 256, tiedEmbeddings: false });
  });

  it("reads the state-spaces layout and pads its vocabulary", () => {
    const c = parseConfig({ d_model: 768, n_layer: 24, vocab_size: 50277, ssm_cfg: {}, pad_vocab_size_multiple: 8 });
    expect(c).toMatchObject({ arch: "mamba1", layout: "state-spaces", vocabSize: 50280, dtRank: 48 });
    const c2 = parseConfig({ d_model: 768, n_layer: 24, vocab_size: 50277, ssm_cfg: { layer: "Mamba2", ngroups: 2 } });
    expect(c2).toMatchObject({ arch: "mamba2", nHeads: 24, headDim: 64, nGroups: 2, dState: 128, gatedNormGroup: 768 });
  });

  it("refuses an inconsistent Mamba-2 shape", () => {
    expect(() => parseConfig({ model_type: "mamba2", hidden_size: 64, num_heads: 7, head_dim: 16, n_groups: 1 }, "x/config.json")).toThrow(
      "x/config.json: hidden_size * expand (128) must equal num_heads * head_dim (112)",
    );
  });
});
