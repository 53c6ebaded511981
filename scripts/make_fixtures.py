#!/usr/bin/env python3
"""Makes the golden test fixtures: tiny random Mamba-1 / Mamba-2 models written by Hugging Face
transformers, with transformers' own logits in float64.

Usage: python3 scripts/make_fixtures.py OUT_DIR   (needs torch and transformers; CPU is enough)

Each fixture is a directory with what transformers (or the state-spaces code) writes --
config.json and model.safetensors (or shards + model.safetensors.index.json) -- plus
reference.safetensors holding `input_ids` (int64, [T]) and `logits` (float64, [T, vocab]).
The model is run in float64; transformers' Mamba-2 path computes its scan in float32 internally, so
the reference is exact to about 1e-7 relative, far inside the 1e-4 the tests ask for.
"""
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM


def perturb(model, gen):
    # Random-init weights leave norms at 1 and biases at 0; jitter everything so that a wrong
    # index, a missing bias or a swapped split shows up in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
            if name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("A_log") or name.endswith("dt_proj.bias") or name.endswith("dt_bias"):
                p.add_(0.1 * noise)
            else:
                p.add_(0.05 * noise)


def reference_logits(model, ids):
    model = model.to(torch.float64).eval()
    with torch.no_grad():
        hidden = model.backbone(input_ids=ids[None]).last_hidden_state[0]
        # lm_head in float64 by hand: the model's own forward casts logits to float32.
        return hidden @ model.lm_head.weight.to(torch.float64).T


def save_reference(out, ids, logits):
    save_file({"input_ids": ids.to(torch.int64).contiguous(), "logits": logits.contiguous()},
              os.path.join(out, "reference.safetensors"))


def make_hf(out_root, name, cls, cfg, seq_len, dtype=torch.float32, shard=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = cls(cfg).to(torch.float32)
    perturb(model, gen)
    model = model.to(dtype)  # round to the stored precision first: the reference sees what we store
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out, safe_serialization=True, **kwargs)
    ids = torch.randint(0, cfg.vocab_size, (seq_len,), generator=gen)
    save_reference(out, ids, reference_logits(model, ids))
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, T={seq_len}, dtype={dtype}")
    return model


def make_state_spaces(out_root, name, hf_model, ss_config, seq_len, seed):
    """Writes an HF model in the original state-spaces/mamba layout (config with d_model, n_layer,
    ssm_cfg; `backbone.embedding.weight`; vocab padded to pad_vocab_size_multiple)."""
    gen = torch.Generator().manual_seed(seed)
    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    sd = {}
    for k, v in hf_model.state_dict().items():
        sd[k.replace("backbone.embeddings.", "backbone.embedding.")] = v.contiguous().clone()
    if ss_config.get("tie_embeddings", True):
        sd.pop("lm_head.weight", None)
    save_file(sd, os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(ss_config, f, indent=2)
    ids = torch.randint(0, ss_config["vocab_size"], (seq_len,), generator=gen)
    save_reference(out, ids, reference_logits(hf_model, ids))
    print(f"{name}: state-spaces layout, T={seq_len}")


def main():
    out_root = sys.argv[1] if len(sys.argv) > 1 else "test/fixtures"
    os.makedirs(out_root, exist_ok=True)

    # Mamba-1: odd vocab, default dt_rank ("auto" = ceil(hidden/16)), conv bias on, tied head.
    make_hf(out_root, "mamba1-tied", MambaForCausalLM, MambaConfig(
        vocab_size=97, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4,
        use_conv_bias=True, use_bias=False, tie_word_embeddings=True), seq_len=24, seed=1)

    # Mamba-1: non-default dt_rank, no conv bias, biased projections, kernel 3, untied head.
    make_hf(out_root, "mamba1-untied-dtrank", MambaForCausalLM, MambaConfig(
        vocab_size=131, hidden_size=48, state_size=16, num_hidden_layers=3, expand=2, conv_kernel=3,
        time_step_rank=5, use_conv_bias=False, use_bias=True, tie_word_embeddings=False,
        layer_norm_epsilon=1e-6), seq_len=30, seed=2)

    # Mamba-1 stored in float16 and sharded (model.safetensors.index.json).
    make_hf(out_root, "mamba1-fp16-sharded", MambaForCausalLM, MambaConfig(
        vocab_size=211, hidden_size=64, state_size=16, num_hidden_layers=3, expand=2,
        tie_word_embeddings=False), seq_len=20, dtype=torch.float16, shard="60KB", seed=3)

    # Mamba-2: two groups for B and C, a prompt that spans five chunks, tied head.
    make_hf(out_root, "mamba2-groups", Mamba2ForCausalLM, Mamba2Config(
        vocab_size=101, hidden_size=64, state_size=16, num_hidden_layers=2, expand=2, head_dim=16,
        num_heads=8, n_groups=2, conv_kernel=4, chunk_size=8, use_conv_bias=True, use_bias=False,
        tie_word_embeddings=True), seq_len=40, seed=4)

    # Mamba-2: one group, biased projections, no conv bias, dt clamped by time_step_limit,
    # prompt not a multiple of the chunk, untied head, stored in bfloat16.
    make_hf(out_root, "mamba2-untied-bf16", Mamba2ForCausalLM, Mamba2Config(
        vocab_size=77, hidden_size=48, state_size=8, num_hidden_layers=2, expand=2, head_dim=12,
        num_heads=8, n_groups=1, conv_kernel=4, chunk_size=16, use_conv_bias=False, use_bias=True,
        time_step_limit=(0.0, 0.05), tie_word_embeddings=False), seq_len=37,
        dtype=torch.bfloat16, seed=5)

    # Original state-spaces layout, Mamba-1 with a padded vocabulary (97 -> 104).
    m = make_hf(out_root, "_tmp_ss1", MambaForCausalLM, MambaConfig(
        vocab_size=104, hidden_size=32, state_size=16, num_hidden_layers=2, expand=2, conv_kernel=4,
        tie_word_embeddings=True), seq_len=8, seed=6)
    make_state_spaces(out_root, "state-spaces-mamba1", m, {
        "d_model": 32, "n_layer": 2, "vocab_size": 97, "ssm_cfg": {}, "rms_norm": True,
        "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8,
        "tie_embeddings": True}, seq_len=21, seed=6)

    # Original state-spaces layout, Mamba-2 (one group: the gated norm is then the same in both codes).
    m = make_hf(out_root, "_tmp_ss2", Mamba2ForCausalLM, Mamba2Config(
        vocab_size=64, hidden_size=32, state_size=16, num_hidden_layers=2, expand=2, head_dim=16,
        num_heads=4, n_groups=1, chunk_size=256, tie_word_embeddings=True), seq_len=8, seed=7)
    make_state_spaces(out_root, "state-spaces-mamba2", m, {
        "d_model": 32, "d_intermediate": 0, "n_layer": 2, "vocab_size": 64,
        "ssm_cfg": {"layer": "Mamba2", "d_state": 16, "headdim": 16, "ngroups": 1, "chunk_size": 256},
        "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
        "pad_vocab_size_multiple": 8, "tie_embeddings": True}, seq_len=19, seed=7)

    import shutil
    for tmp in ("_tmp_ss1", "_tmp_ss2"):
        shutil.rmtree(os.path.join(out_root, tmp))


if __name__ == "__main__":
    main()
