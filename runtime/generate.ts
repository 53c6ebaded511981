// One generation: prefill the prompt into a state, then sample and step until max tokens or EOS.
import type { Backend } from "./backends/backend.js";
import type { SequenceState } from "../engines/model/state.js";
import { Sampler, type SamplingParams } from "./sampling.js";
import { TextStream, type Tokenizer } from "../engines/model/tokenizer.js";
import type { Constraint } from "./constrained/constraints.js";

export interface GenerateResult {
  text: string;
  promptTokens: number;
  completionTokens: number;
  finishReason: "stop" | "length";
  /** with a constraint: the text is a whole value of its grammar and validates */
  valid?: boolean;
  prefillMs: number;
  decodeMs: number;
}

export async function generate(
  backend: Backend,
  tokenizer: Tokenizer,
  prompt: string,
  opts: { maxTokens: number; sampling: SamplingParams; eos: number | null; state?: SequenceState; constraint?: Constraint },
  onDelta: (text: string) => void = () => {},
): Promise<GenerateResult> {
  const ids = await tokenizer.encode(prompt);
  const state = opts.state ?? backend.newState();
  const sampler = new Sampler(opts.sampling);
  const stream = new TextStream(tokenizer);
  const history = new Set(ids); // the tokens seen, for the repetition penalty
  let finishReason: "stop" | "length" = "length";

  const t0 = performance.now();
  let logits = ids.length > 0 ? await backend.prefill(Int32Array.from(ids), state) : null;
  const prefillMs = performance.now() - t0;
  if (!logits) {
    // An empty prompt starts from the end-of-text token, as a document boundary.
    logits = await backend.prefill(Int32Array.of(opts.eos ?? 0), state);
  }

  const t1 = performance.now();
  let produced = 0;
  const constraint = opts.constraint ?? null;
  while (produced < opts.maxTokens) {
    const next = sampler.sample(logits, history, constraint === null ? null : await constraint.mask());
    if (next === opts.eos) {
      finishReason = "stop";
      break;
    }
    produced++;
    history.add(next);
    constraint?.accept(next);
    const delta = await stream.push(next);
    if (delta) onDelta(delta);
    if (constraint?.complete) {
      finishReason = "stop";
      break;
    }
    if (produced === opts.maxTokens) break;
    logits = await backend.step(Int32Array.of(next), [state]);
  }
  return {
    text: stream.text,
    promptTokens: ids.length,
    completionTokens: produced,
    finishReason,
    ...(constraint !== null ? { valid: constraint.valid(stream.text) } : {}),
    prefillMs,
    decodeMs: performance.now() - t1,
  };
}
