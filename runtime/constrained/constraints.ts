// Constrained decoding: a request's `"format": "json"` or JSON schema becomes a token mask at every
// step (XGrammar: a grammar compiled against the engine's vocabulary, then matched token by token),
// so the text always parses, and validates against the schema when it ends by the grammar's end.
// A schema is checked first: only keywords the grammar enforces (a schema with `not`, `oneOf` or
// `format` could be ignored in part, so it is refused, named), then Ajv (strict) on the schema
// itself, then XGrammar compiles it; compiled grammars are cached by their schema text. The
// finished text is validated by Ajv too, so `valid` in a reply is a fact, not a promise.
import { readFileSync } from "node:fs";
import { Ajv, type ValidateFunction } from "ajv";
import type { CompiledGrammar, GrammarCompiler, GrammarMatcher } from "@mlc-ai/web-xgrammar";
import { WireError } from "../scheduler/protocol.js";
import { integerRule, numberRule, unbounded } from "./number-range.js";
import { Utf8Guard } from "./utf8.js";
import { loadXGrammar, type XGrammar } from "./xgrammar.js";

/** What a request asks its output to be. */
export type OutputFormat = { kind: "json" } | { kind: "schema"; schema: Record<string, unknown> };

const cacheSize = 32;
const maxDepth = 64;

/** The keywords a grammar can enforce or that carry no constraint; anything else is refused. */
const keywords = new Set([
  ...["type", "enum", "const", "properties", "required", "additionalProperties", "items", "prefixItems"],
  ...["minItems", "maxItems", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength"],
  ...["pattern", "anyOf", "$ref", "$defs", "definitions"],
  ...["title", "description", "default", "examples", "$schema", "$id", "$comment"],
]);
/** keyword -> how its value holds subschemas */
const nested: Record<string, "schema" | "map" | "list"> = {
  properties: "map",
  $defs: "map",
  definitions: "map",
  items: "schema",
  additionalProperties: "schema",
  prefixItems: "list",
  anyOf: "list",
};

const bounds = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"] as const;

/**
 * Refuses what constrained output cannot promise to follow, naming where; returns the schema for
 * the grammar, each bounded "number" replaced by a placeholder for its own rule (number-range.ts).
 */
function prepare(schema: unknown, where: string, ranges: string[], depth = 0): unknown {
  if (typeof schema === "boolean") return schema;
  if (schema === null || typeof schema !== "object" || Array.isArray(schema))
    throw new WireError(
      "bad_request",
      `${where}: expected a schema (an object), found ${Array.isArray(schema) ? "an array" : JSON.stringify(schema)}`,
    );
  if (depth > maxDepth) throw new WireError("bad_request", `${where}: nested deeper than ${maxDepth} levels`);
  const s = schema as Record<string, unknown>;
  if ((s.type === "number" || s.type === "integer") && bounds.some((b) => b in s)) {
    for (const k of Object.keys(s))
      if (!keywords.has(k)) throw new WireError("bad_request", `${where}: keyword "${k}" is not supported for constrained output`);
    for (const b of bounds)
      if (b in s && !(typeof s[b] === "number" && Math.abs(s[b] as number) <= unbounded))
        throw new WireError("bad_request", `${where}.${b}: expected a number within ±${unbounded}, found ${JSON.stringify(s[b])}`);
    const n = (b: (typeof bounds)[number]) => s[b] as number | undefined;
    let lo: number;
    let hi: number;
    if (s.type === "integer") {
      lo = Math.max(
        n("minimum") === undefined ? -unbounded : Math.ceil(n("minimum")!),
        n("exclusiveMinimum") === undefined ? -unbounded : Math.floor(n("exclusiveMinimum")!) + 1,
      );
      hi = Math.min(
        n("maximum") === undefined ? unbounded : Math.floor(n("maximum")!),
        n("exclusiveMaximum") === undefined ? unbounded : Math.ceil(n("exclusiveMaximum")!) - 1,
      );
    } else {
      for (const b of ["exclusiveMinimum", "exclusiveMaximum"])
        if (b in s)
          throw new WireError("bad_request", `${where}: ${b} on a number is not supported for constrained output (use minimum / maximum)`);
      for (const b of ["minimum", "maximum"] as const)
        if (b in s && !Number.isInteger(s[b]))
          throw new WireError(
            "bad_request",
            `${where}.${b}: expected a whole number for constrained output, found ${JSON.stringify(s[b])}`,
          );
      lo = n("minimum") ?? -unbounded;
      hi = n("maximum") ?? unbounded;
    }
    if (lo > hi) throw new WireError("bad_request", `${where}: no ${s.type} lies within its bounds`);
    ranges.push(s.type === "integer" ? integerRule(lo, hi) : numberRule(lo, hi));
    return { const: placeholder(ranges.length - 1) };
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) {
    if (!keywords.has(k)) throw new WireError("bad_request", `${where}: keyword "${k}" is not supported for constrained output`);
    const how = nested[k];
    if (how === "schema") out[k] = prepare(v, `${where}.${k}`, ranges, depth + 1);
    else if (how === "list" && Array.isArray(v)) out[k] = v.map((x, i) => prepare(x, `${where}.${k}[${i}]`, ranges, depth + 1));
    else if (how === "map" && v !== null && typeof v === "object" && !Array.isArray(v))
      out[k] = Object.fromEntries(Object.entries(v).map(([name, x]) => [name, prepare(x, `${where}.${k}.${name}`, ranges, depth + 1)]));
    else out[k] = v;
  }
  return out;
}

const placeholder = (i: number) => `@@mamba-edge-number-${i}@@`;

/** The tokens of a tokenizer.json in id order, as the tokenizer's model writes them (byte-level BPE). */
export function encodedVocab(tokenizerJson: string, size: number): string[] {
  let tok: { model?: { vocab?: Record<string, number> }; added_tokens?: { id: number; content: string; special?: boolean }[] };
  try {
    tok = JSON.parse(readFileSync(tokenizerJson, "utf8"));
  } catch (e) {
    throw new Error(`${tokenizerJson}: ${(e as Error).message}`, { cause: e });
  }
  const vocab = tok.model?.vocab;
  if (vocab === undefined || typeof vocab !== "object")
    throw new Error(`${tokenizerJson}: no model.vocab (a BPE tokenizer is needed for constrained output)`);
  const out = new Array<string>(size).fill("");
  for (const [text, id] of Object.entries(vocab)) if (id >= 0 && id < size) out[id] = text;
  // special tokens never appear in constrained text: empty strings, which XGrammar never allows
  for (const a of tok.added_tokens ?? []) if (a.id >= 0 && a.id < size) out[a.id] = a.special === false ? a.content : "";
  return out;
}

export class Constraints {
  private xg: XGrammar | null = null;
  private compiler: Promise<GrammarCompiler> | null = null;
  private readonly cache = new Map<string, Promise<{ grammar: CompiledGrammar; validate: ValidateFunction }>>();
  private readonly ajv = new Ajv({ strict: true, allErrors: false, validateFormats: false });
  private printed: string[] = [];
  private guard: Utf8Guard | null = null;

  /**
   * `vocab`: each token id's text as the tokenizer stores it (length = the model's logits);
   * `stop`: the end-of-text token, allowed only where the grammar is complete.
   */
  constructor(
    private readonly vocab: string[],
    private readonly stop: number | null,
  ) {}

  static forTokenizer(tokenizerJson: string, logits: number, eos: number | null): Constraints {
    return new Constraints(encodedVocab(tokenizerJson, logits), eos);
  }

  get vocabSize(): number {
    return this.vocab.length;
  }

  /** A matcher for one sequence; a schema that cannot be used is a bad_request naming why. */
  async start(format: OutputFormat, field: string): Promise<Constraint> {
    const schema = format.kind === "json" ? { type: "object" } : format.schema;
    const key = JSON.stringify(schema);
    let entry = this.cache.get(key);
    if (entry === undefined) {
      const ranges: string[] = [];
      const forGrammar = format.kind === "schema" ? prepare(schema, field, ranges) : schema;
      const validate = this.check(schema, field);
      entry = this.compile(JSON.stringify(forGrammar), ranges, field).then((grammar) => ({ grammar, validate }));
      this.cache.set(key, entry);
      entry.catch(() => this.cache.delete(key));
      if (this.cache.size > cacheSize) this.cache.delete(this.cache.keys().next().value!);
    } else {
      // most recently used last
      this.cache.delete(key);
      this.cache.set(key, entry);
    }
    const { grammar, validate } = await entry;
    const matcher = await this.xg!.GrammarMatcher.createGrammarMatcher(grammar, undefined, true);
    this.guard ??= new Utf8Guard(this.vocab);
    return new Constraint(matcher, this.vocab.length, validate, this.guard);
  }

  /** Ajv's verdict on the schema itself, in one line; its validator checks finished texts. */
  private check(schema: Record<string, unknown>, field: string): ValidateFunction {
    try {
      return this.ajv.compile(schema);
    } catch (e) {
      throw new WireError("bad_request", `${field}: not a usable JSON schema (${(e as Error).message.split("\n")[0]})`);
    }
  }

  private async compile(schema: string, ranges: string[], field: string): Promise<CompiledGrammar> {
    const compiler = await this.engine();
    this.printed = [];
    try {
      // one line, no free whitespace: fewer tokens, and nothing for a sampler to wander in
      let ebnf = await this.xg!.Testings._jsonSchemaToEBNF(schema, false, -1);
      // a string with a length bound: XGrammar 0.1.27 lets it take control characters, which JSON forbids
      ebnf = ebnf.replaceAll(String.raw`[^"\\\r\n]`, String.raw`[^\0-\x1f"\\]`);
      ranges.forEach((rule, i) => {
        ebnf = ebnf.replaceAll(`"\\"${placeholder(i)}\\""`, `mamba_edge_number_${i}`) + `\nmamba_edge_number_${i} ::= ${rule}`;
      });
      return await compiler.compileGrammar(ebnf, "root");
    } catch (e) {
      // the WebAssembly instance aborted: the next compile starts a fresh one
      this.xg = null;
      this.compiler = null;
      this.cache.clear();
      const said = this.printed.map((l) => l.replace(/^\[\w+\]\s*\S+:\d+:\s*/, "")).find((l) => l && !/^Aborted/.test(l));
      throw new WireError("bad_request", `${field}: the grammar engine cannot compile this schema (${said ?? (e as Error).message})`);
    }
  }

  private engine(): Promise<GrammarCompiler> {
    if (this.compiler === null) {
      const xg = loadXGrammar((line) => this.printed.push(line));
      this.xg = xg;
      this.compiler = (async () => {
        const info = await xg.TokenizerInfo.createTokenizerInfo(
          this.vocab,
          "byte_level",
          false,
          this.vocab.length,
          this.stop === null ? [] : [this.stop],
        );
        return xg.GrammarCompiler.createGrammarCompiler(info, true);
      })();
    }
    return this.compiler;
  }
}

/** One sequence's place in its grammar. */
export class Constraint {
  constructor(
    private readonly matcher: GrammarMatcher,
    private readonly vocabSize: number,
    private readonly validate: ValidateFunction,
    private readonly utf8: Utf8Guard,
  ) {}

  private utf8State = 0;

  /** The tokens allowed next, one bit per token id (32 per word). */
  async mask(): Promise<Int32Array> {
    const m = await this.matcher.getNextTokenBitmask();
    const valid = this.utf8.masks[this.utf8State];
    let any = 0;
    for (let w = 0; w < m.length; w++) any |= m[w] &= valid[w];
    if (any === 0) throw new Error("the grammar allows no next token");
    return m;
  }

  /** Advances past a sampled token (one the mask allowed). */
  accept(token: number): void {
    if (token < 0 || token >= this.vocabSize || !this.matcher.acceptToken(token)) throw new Error(`the grammar refused token ${token}`);
    this.utf8State = this.utf8.after(this.utf8State, token);
  }

  /** The text so far is a whole value of the grammar: nothing may follow. */
  get complete(): boolean {
    return this.matcher.isTerminated();
  }

  /** Whether `text` (the whole output) is complete, parses and validates against the schema. */
  valid(text: string): boolean {
    if (!this.complete) return false;
    try {
      return this.validate(JSON.parse(text)) === true;
    } catch {
      return false;
    }
  }

  dispose(): void {
    this.matcher.dispose();
  }
}
