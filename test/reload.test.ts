// SIGHUP (systemctl reload): the config file is read again and the engine swapped between requests,
// under load from several MQTT clients on a real mosquitto: no request lost or answered twice; a new
// engine that cannot load leaves the old one serving.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connectAsync, type MqttClient } from "mqtt";
import { afterAll, describe, expect, it } from "vitest";
import { root } from "./helpers/cli.js";
import { demoModel, Mosquitto, mosquittoBinary, serve, tempDir } from "./helpers/daemon.js";
import { skipWhen } from "./helpers/skip.js";

const mamba1 = join(root, "models", "mamba1-brown");
const prompt = { prompt: "The jury said", max_tokens: 12, temperature: 0 };

describe.skipIf(skipWhen(mosquittoBinary() === null, "mosquitto is not installed"))("reload", () => {
  const stops: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const s of stops.reverse()) await s();
  });

  it("swaps the engine under load with no request lost or answered twice; a broken engine keeps the old", async () => {
    const m = await Mosquitto.start();
    stops.push(() => m.stop());
    const dir = tempDir();
    const config = join(dir, "config.json");
    writeFileSync(config, JSON.stringify({ model: demoModel }));
    const d = await serve(["--config", config, "--mqtt", m.url, "--node", "rl", "--state-dir", join(dir, "s"), "--max-queue", "256"]);
    stops.push(() => d.stop());

    const answers = new Map<string, Record<string, unknown>[]>();
    const clients: MqttClient[] = [];
    for (let c = 0; c < 3; c++) {
      const client = await connectAsync(m.url, { protocolVersion: 5, clientId: `robot${c}` });
      await client.subscribeAsync(`robots/robot${c}/reply`, { qos: 1 });
      client.on("message", (_t, payload) => {
        const r = JSON.parse(payload.toString()) as Record<string, unknown>;
        const id = String(r.id);
        answers.set(id, [...(answers.get(id) ?? []), r]);
      });
      clients.push(client);
      stops.push(() => client.endAsync());
    }
    const send = (c: number, id: string) =>
      clients[c]!.publishAsync("mamba-edge/rl/generate", JSON.stringify({ id, ...prompt }), {
        qos: 1,
        properties: { responseTopic: `robots/robot${c}/reply` },
      });
    const waitFor = async (ids: string[], ms = 90_000) => {
      const until = Date.now() + ms;
      while (ids.some((id) => !answers.has(id))) {
        if (Date.now() > until) throw new Error(`unanswered: ${ids.filter((id) => !answers.has(id)).join(" ")}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const logged = async (msg: (s: string) => boolean, ms = 60_000) => {
      const until = Date.now() + ms;
      while (!d.logs.some((l) => msg(String(l.msg)))) {
        if (Date.now() > until) throw new Error("no such log line");
        await new Promise((r) => setTimeout(r, 20));
      }
    };

    // the old engine's answer, for comparing
    await send(0, "first");
    await waitFor(["first"]);
    const oldText = answers.get("first")![0]!.text;

    // load from three robots; the config now names another model; SIGHUP in the middle
    const ids: string[] = [];
    const wave = async (tag: string) => {
      for (let i = 0; i < 8; i++)
        for (let c = 0; c < 3; c++) {
          ids.push(`${tag}-${c}-${i}`);
          await send(c, `${tag}-${c}-${i}`);
        }
    };
    await wave("a");
    writeFileSync(config, JSON.stringify({ model: mamba1 }));
    d.proc.kill("SIGHUP");
    await wave("b");
    await logged((s) => s === "engine swapped");
    const afterSwap: string[] = [];
    for (let c = 0; c < 3; c++) {
      afterSwap.push(`c-${c}`);
      await send(c, `c-${c}`);
    }
    await waitFor([...ids, ...afterSwap]);
    await logged((s) => s === "previous engine closed");

    // a broken engine: refused in one line, the new one keeps serving
    writeFileSync(config, JSON.stringify({ engine: join(dir, "missing.mamba") }));
    d.proc.kill("SIGHUP");
    await logged((s) => s.startsWith("reload failed"));
    await send(1, "after-broken");
    await waitFor(["after-broken"]);
    await new Promise((r) => setTimeout(r, 500)); // room for a duplicate to show up

    const all = [...ids, ...afterSwap, "after-broken"];
    for (const id of all) {
      expect(answers.get(id), id).toHaveLength(1);
      expect(answers.get(id)![0], id).toMatchObject({ finish_reason: "length", usage: { completion_tokens: 12 } });
    }
    const newText = answers.get("c-0")![0]!.text;
    expect(newText).not.toBe(oldText);
    // every reply came from one engine or the other; after the swap, only the new one
    for (const id of all) expect([oldText, newText], id).toContain(answers.get(id)![0]!.text);
    for (const id of [...afterSwap, "after-broken"]) expect(answers.get(id)![0]!.text, id).toBe(newText);
    expect(ids.filter((id) => answers.get(id)![0]!.text === oldText).length).toBeGreaterThan(0);
    const failed = d.logs.filter((l) => String(l.msg).startsWith("reload failed"));
    expect(failed).toHaveLength(1);
    expect(String(failed[0]!.msg)).not.toContain("\n");
    expect(String(failed[0]!.msg)).toContain("missing.mamba");
    expect(await d.stop()).toBe(0);
  }, 180_000);
});
