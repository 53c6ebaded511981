// The HTTP API of `serve --http` as a child process, with real clients: the `openai` npm package
// (streaming and not, chat and completions, a JSON schema as response_format) and curl (the bearer
// token, the error statuses).
import { spawnSync } from "node:child_process";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, serve, tempDir, type Served } from "./helpers/daemon.js";
import { skipWhen } from "./helpers/skip.js";

const token = "test-token-123";
let d: Served;
let base = "";

beforeAll(async () => {
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  d = await serve(["--http", String(port), "--backend", "ref", "--state-dir", tempDir(), "--max-active", "2", "--max-queue", "1"], {
    MAMBA_EDGE_HTTP_TOKEN: token,
  });
}, 60_000);
afterAll(async () => {
  d?.proc.kill("SIGTERM");
  await d?.exited;
});

const client = () => new OpenAI({ baseURL: `${base}/v1`, apiKey: token, maxRetries: 0 });

const command = {
  type: "object",
  properties: { action: { enum: ["move", "stop"] }, speed: { type: "number", minimum: 0, maximum: 2 } },
  required: ["action", "speed"],
  additionalProperties: false,
};

describe("HTTP API through the openai client", () => {
  it("lists the model", async () => {
    const models = await client().models.list();
    expect(models.data.map((m) => m.id)).toEqual(["models/mamba2-brown"]); // the reference on the demo model
  });

  it("chat completion with a JSON schema: valid JSON that follows it, usage counted", async () => {
    const r = await client().chat.completions.create({
      model: "mamba2-brown",
      messages: [{ role: "user", content: "Send the robot a command." }],
      max_tokens: 60,
      seed: 4,
      response_format: { type: "json_schema", json_schema: { name: "command", schema: command } },
    });
    const text = r.choices[0]!.message.content!;
    const v = JSON.parse(text) as { action: string; speed: number };
    expect(["move", "stop"]).toContain(v.action);
    expect(v.speed).toBeGreaterThanOrEqual(0);
    expect(v.speed).toBeLessThanOrEqual(2);
    expect(r.choices[0]!.finish_reason).toBe("stop");
    expect(r.usage!.completion_tokens).toBeGreaterThan(0);
    expect(r.usage!.total_tokens).toBe(r.usage!.prompt_tokens + r.usage!.completion_tokens);
    expect((r as unknown as { valid: boolean }).valid).toBe(true);
  }, 60_000);

  it("streams a chat completion: deltas add up to the same text as without streaming (same seed)", async () => {
    const req = { model: "m", messages: [{ role: "user" as const, content: "Hello" }], max_tokens: 12, seed: 9, temperature: 0.7 };
    const whole = await client().chat.completions.create(req);
    const stream = await client().chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let finish: string | null = null;
    let usage: { completion_tokens: number } | undefined;
    for await (const c of stream) {
      text += c.choices[0]?.delta.content ?? "";
      finish = c.choices[0]?.finish_reason ?? finish;
      usage = c.usage ?? usage;
    }
    expect(text).toBe(whole.choices[0]!.message.content);
    expect(finish).toBe("length");
    expect(usage?.completion_tokens).toBe(12);
  }, 60_000);

  it("text completion, and a stop string", async () => {
    const r = await client().completions.create({ model: "m", prompt: "The jury said", max_tokens: 30, seed: 2, stop: [" the"] });
    expect(r.choices[0]!.text).not.toContain(" the");
    expect(["stop", "length"]).toContain(r.choices[0]!.finish_reason);
  }, 60_000);

  it("a bad field is a 400 that names it", async () => {
    await expect(client().completions.create({ model: "m", prompt: "x", temperature: -1 })).rejects.toMatchObject({
      status: 400,
      message: expect.stringContaining("temperature"),
    });
  });
});

describe.skipIf(skipWhen(spawnSync("sh", ["-c", "command -v curl"]).status !== 0, "curl is not installed"))("HTTP API through curl", () => {
  const curl = (args: string[]) => {
    const r = spawnSync("curl", ["-s", "-o", "-", "-w", "\n%{http_code}", ...args], { encoding: "utf8", timeout: 60_000 });
    const lines = r.stdout.trimEnd().split("\n");
    return { status: Number(lines.pop()), body: lines.join("\n") };
  };
  const auth = ["-H", `Authorization: Bearer ${token}`];

  it("refuses a missing or wrong token with 401; /health needs none", () => {
    expect(curl([`${base}/v1/models`]).status).toBe(401);
    expect(curl(["-H", "Authorization: Bearer nope", `${base}/v1/models`]).status).toBe(401);
    expect(curl([`${base}/health`])).toEqual({ status: 200, body: '{"status":"ok"}' });
  });

  it("maps the daemon's error codes onto statuses: 413, 400, 404, 405", () => {
    const big = JSON.stringify({ model: "m", prompt: "x".repeat(70_000) });
    const tooLarge = curl([...auth, "-d", big, `${base}/v1/completions`]);
    expect(tooLarge.status).toBe(413);
    expect(JSON.parse(tooLarge.body).error.code).toBe("too_large");
    const maxTokens = curl([...auth, "-d", '{"prompt":"x","max_tokens":100000}', `${base}/v1/completions`]);
    expect(maxTokens).toMatchObject({ status: 413 });
    expect(JSON.parse(maxTokens.body).error.message).toBe("max_tokens: 100000 is over the limit of 1024");
    const schema = curl([...auth, "-d", '{"prompt":"x","json_schema":{"type":"number","maximum":1.5}}', `${base}/v1/completions`]);
    expect(schema.status).toBe(400);
    expect(JSON.parse(schema.body).error.message).toBe("json_schema.maximum: expected a whole number for constrained output, found 1.5");
    expect(curl([...auth, "-d", "{not json", `${base}/v1/completions`]).status).toBe(400);
    expect(curl([...auth, `${base}/v1/nothing`]).status).toBe(404);
    expect(curl([...auth, "-X", "PUT", `${base}/v1/completions`]).status).toBe(405);
  });

  it("429 when the queue is full (max-active 2, max-queue 1), and the others are answered", async () => {
    const long = JSON.stringify({ prompt: "The", max_tokens: 400 });
    const many = await Promise.all(
      Array.from(
        { length: 5 },
        () =>
          new Promise<number>((resolve) => {
            fetch(`${base}/v1/completions`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: long })
              .then(async (r) => {
                await r.text();
                resolve(r.status);
              })
              .catch(() => resolve(-1));
          }),
      ),
    );
    expect(many.filter((s) => s === 429).length).toBeGreaterThanOrEqual(1);
    expect(many.filter((s) => s === 200).length).toBeGreaterThanOrEqual(2);
    expect(many.every((s) => s === 200 || s === 429)).toBe(true);
  }, 120_000);
});
