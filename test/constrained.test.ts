// Constrained output on the real demo model through the real scheduler: 50 seeds × 5 schemas, every
// output parsed and validated by Ajv; constrained and unconstrained sequences in one batch; the
// refusals; and the parts of our own under XGrammar (the number rule, the UTF-8 guard).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv } from "ajv";
import { beforeAll, describe, expect, it } from "vitest";
import { RefBackend } from "../runtime/backends/ref.js";
import { MambaModel } from "../engines/model/model.js";
import { Tokenizer } from "../engines/model/tokenizer.js";
import { integerRule, numberRule } from "../runtime/constrained/number-range.js";
import { Utf8Guard } from "../runtime/constrained/utf8.js";
import { loadXGrammar } from "../runtime/constrained/xgrammar.js";
import type { ErrorReply, FinalReply, Request } from "../runtime/scheduler/protocol.js";
import { Scheduler, defaultLimits } from "../runtime/scheduler/scheduler.js";
import { demoModel, serve, tempDir } from "./helpers/daemon.js";
import { cli } from "./helpers/cli.js";

type Outcome = (FinalReply | ErrorReply) & { deltas: string[] };

let backend: RefBackend;
let tokenizer: Tokenizer;

beforeAll(() => {
  backend = new RefBackend(MambaModel.load(demoModel));
  tokenizer = Tokenizer.load(demoModel);
});

const scheduler = () =>
  new Scheduler(backend, tokenizer, null, { ...defaultLimits, maxActive: 16, maxQueue: 512 }, {}, backend.model.config.eosTokenId);

function run(s: Scheduler, req: Request): Promise<Outcome> {
  const deltas: string[] = [];
  return new Promise((resolve) => {
    void s.submit(req, {
      chunk: (c) => deltas.push(c.delta),
      final: (r) => resolve({ ...r, deltas }),
      error: (r) => resolve({ ...r, deltas }),
    });
  });
}

const robotCommand = {
  type: "object",
  properties: {
    action: { enum: ["move", "turn", "stop", "grip", "release"] },
    speed: { type: "number", minimum: 0, maximum: 2 },
    heading: { type: "integer", minimum: -180, maximum: 180 },
    target: { type: "string", minLength: 1, maxLength: 16 },
  },
  required: ["action", "speed", "heading"],
  additionalProperties: false,
};

const schemas: Record<string, Record<string, unknown>> = {
  nested: {
    type: "object",
    properties: {
      pose: {
        type: "object",
        properties: { x: { type: "integer", minimum: -50, maximum: 50 }, y: { type: "integer", minimum: -50, maximum: 50 } },
        required: ["x", "y"],
        additionalProperties: false,
      },
      label: { type: "string", maxLength: 10 },
    },
    required: ["pose", "label"],
    additionalProperties: false,
  },
  enums: {
    type: "object",
    properties: { mode: { enum: ["idle", "patrol", "dock"] }, level: { enum: [1, 2, 3] }, armed: { type: "boolean" } },
    required: ["mode", "level", "armed"],
    additionalProperties: false,
  },
  arrays: {
    type: "object",
    properties: {
      path: { type: "array", items: { type: "integer", minimum: 0, maximum: 20 }, minItems: 2, maxItems: 4 },
      tags: { type: "array", items: { type: "string", maxLength: 6 }, maxItems: 2 },
    },
    required: ["path", "tags"],
    additionalProperties: false,
  },
  ranges: {
    type: "object",
    properties: {
      speed: { type: "number", minimum: 0, maximum: 2 },
      temp: { type: "number", minimum: -40, maximum: -10 },
      count: { type: "integer", exclusiveMinimum: 0, exclusiveMaximum: 10 },
    },
    required: ["speed", "temp", "count"],
    additionalProperties: false,
  },
  command: robotCommand,
};

describe("constrained output", () => {
  it("50 seeds × 5 schemas: every output parses and validates (Ajv), with unconstrained requests in the same batches", async () => {
    const ajv = new Ajv();
    const s = scheduler();
    const jobs: Promise<[string, number, Outcome]>[] = [];
    for (const [name, schema] of Object.entries(schemas))
      for (let seed = 0; seed < 50; seed++) {
        const prompt = `Robot ${name} ${seed}:`;
        jobs.push(run(s, { prompt, json_schema: schema, seed, max_tokens: 200 }).then((o) => [name, seed, o]));
        if (seed % 10 === 0) jobs.push(run(s, { prompt, seed, max_tokens: 24 }).then((o) => ["plain", seed, o]));
      }
    const bad: string[] = [];
    let constrained = 0;
    for (const [name, seed, o] of await Promise.all(jobs)) {
      if ("error" in o) {
        bad.push(`${name} ${seed}: ${o.error.message}`);
        continue;
      }
      if (name === "plain") {
        expect(o.valid).toBeUndefined();
        continue;
      }
      constrained++;
      let ok: boolean;
      try {
        ok = ajv.validate(schemas[name], JSON.parse(o.text)) === true;
      } catch {
        ok = false;
      }
      if (!ok || o.valid !== true || o.finish_reason !== "stop")
        bad.push(`${name} ${seed}: ${o.finish_reason} valid=${o.valid} ${JSON.stringify(o.text)}`);
    }
    expect(constrained).toBe(250);
    expect(bad).toEqual([]);
  }, 240_000);

  it("a constrained sequence in the batch leaves an unconstrained one's greedy text as it is alone", async () => {
    const plain = { prompt: "The jury said", temperature: 0, max_tokens: 20 };
    const alone = await run(scheduler(), plain);
    const s = scheduler();
    const [mixed, json] = await Promise.all([
      run(s, plain),
      run(s, { prompt: "The jury said", format: "json", temperature: 0, max_tokens: 40 }),
    ]);
    expect("text" in mixed && mixed.text).toBe("text" in alone && alone.text);
    expect(json).toMatchObject({ valid: expect.any(Boolean) });
    if ("text" in json && json.valid) expect(typeof JSON.parse(json.text)).toBe("object");
  }, 60_000);

  it("cut by max_tokens: finish_reason length and valid false; streamed deltas add up to the text", async () => {
    const o = await run(scheduler(), { prompt: "Go:", json_schema: robotCommand, max_tokens: 4, stream: true, seed: 1 });
    expect(o).toMatchObject({ finish_reason: "length", valid: false });
    if ("text" in o) expect(o.deltas.join("")).toBe(o.text);
  });

  it("refuses what it cannot promise, in one line naming the field", async () => {
    const s = scheduler();
    const refused = async (extra: Partial<Request>) => {
      const o = await run(s, { prompt: "x", ...extra });
      expect("error" in o && o.error.code).toBe("bad_request");
      return "error" in o ? o.error.message : "";
    };
    expect(await refused({ json_schema: { type: "strin" } })).toMatch(
      /^json_schema: not a usable JSON schema \(schema is invalid: data\/type/,
    );
    expect(await refused({ json_schema: { type: "string", format: "email" } })).toBe(
      'json_schema: keyword "format" is not supported for constrained output',
    );
    expect(await refused({ format: { type: "object", properties: { a: { not: {} } } } })).toBe(
      'format.properties.a: keyword "not" is not supported for constrained output',
    );
    expect(await refused({ json_schema: { type: "number", maximum: 1.5 } })).toBe(
      "json_schema.maximum: expected a whole number for constrained output, found 1.5",
    );
  });
});

describe("the number and integer rules (XGrammar 0.1.27's own let 2.9 under maximum 2, 189 in -180..180)", () => {
  it("accepts exactly the decimals within whole-number bounds", async () => {
    const xg = loadXGrammar(() => {});
    const cases: [number, number][] = [
      [0, 2],
      [-180, 180],
      [-40, -10],
      [7, 7],
      [95, 1203],
      [-1, 0],
    ];
    const texts = ["0", "2", "2.0", "2.000", "2.5", "1.999", "-0.5", "-1", "-180", "-180.1", "180.0", "-10", "-40.5", "-9.9", "7"];
    texts.push(
      "-0",
      "189",
      "-181",
      "7.01",
      "95",
      "94.9",
      "1203",
      "1203.001",
      "1202.99",
      "100",
      "999",
      "3",
      "-",
      "1.",
      "01",
      "1e3",
      "1.1234567",
    );
    for (const [lo, hi] of cases) {
      const g = await xg.Grammar.fromEBNF(`root ::= ${numberRule(lo, hi)}`);
      for (const t of texts) {
        const v = Number(t);
        // a sign only where negatives are allowed ("-0" is not written for 0..hi)
        const expected = /^-?(0|[1-9][0-9]*)(\.[0-9]{1,6})?$/.test(t) && v >= lo && v <= hi && (lo < 0 || !t.startsWith("-"));
        expect([lo, hi, t, await xg.Testings.isGrammarAcceptString(g, t)]).toEqual([lo, hi, t, expected]);
        const gi = await xg.Grammar.fromEBNF(`root ::= ${integerRule(lo, hi)}`);
        const integer = /^(0|-?[1-9][0-9]*)$/.test(t) && v >= lo && v <= hi;
        expect(["integer", lo, hi, t, await xg.Testings.isGrammarAcceptString(gi, t)]).toEqual(["integer", lo, hi, t, integer]);
      }
    }
  });
});

describe("the UTF-8 guard", () => {
  it("allows a token only where its bytes continue the text as UTF-8", () => {
    // byte-level spellings: Ã = 0xC3, © = 0xA9 (together "é"), a, Ċ = "\n", ð = 0xF0
    const vocab = ["Ã", "©", "a", "Ċ", "Ã©", "ð"];
    const g = new Utf8Guard(vocab);
    const allowed = (s: number) => vocab.filter((_, t) => (g.masks[s][t >> 5] >>> (t & 31)) & 1);
    expect(allowed(g.start)).toEqual(["Ã", "a", "Ċ", "Ã©", "ð"]); // not a lone continuation byte
    const open = g.after(g.start, 0);
    expect(allowed(open)).toEqual(["©"]); // é must be finished first
    expect(g.after(open, 1)).toBe(g.start);
    expect(allowed(g.after(g.start, 5))).toEqual(["©"]); // after F0 only 90-BF: A9 is one, C3 and ASCII are not
  });
});

describe("constrained output from the CLI and over stdio", () => {
  const dir = tempDir("schema-");
  const file = join(dir, "command.json");
  writeFileSync(file, JSON.stringify(robotCommand));

  it("generate --json-schema prints JSON that validates, and says so", () => {
    const r = cli(["generate", "--model", demoModel, "--prompt", "Go:", "--json-schema", file, "--seed", "5", "--max-tokens", "80"]);
    expect(r.code, r.stderr).toBe(0);
    expect(new Ajv().validate(robotCommand, JSON.parse(r.stdout))).toBe(true);
    expect(r.stderr).toMatch(/finish: stop; valid; seed 5\]/);
  }, 60_000);

  it("generate refuses a missing schema file and --json with --json-schema, in one line", () => {
    expect(cli(["generate", "--model", demoModel, "--prompt", "x", "--json-schema", join(dir, "none.json")]).stderr).toBe(
      `mamba-edge: --json-schema: ${join(dir, "none.json")}: no such file\n`,
    );
    expect(cli(["generate", "--model", demoModel, "--prompt", "x", "--json", "--json-schema", file]).stderr).toBe(
      "mamba-edge: give --json or --json-schema, not both\n",
    );
  });

  it("serve --stdio: a request with format json gets valid JSON and valid: true", async () => {
    const d = await serve(["--stdio", "--backend", "ref", "--state-dir", tempDir()]);
    d.proc.stdin!.write(JSON.stringify({ id: "j1", prompt: "Data:", format: "json", seed: 3, max_tokens: 120 }) + "\n");
    const r = (await d.next((x) => x.id === "j1")) as unknown as FinalReply;
    d.proc.stdin!.end();
    await d.exited;
    expect(r.valid).toBe(r.finish_reason === "stop");
    if (r.valid) expect(typeof JSON.parse(r.text)).toBe("object");
  }, 60_000);
});
