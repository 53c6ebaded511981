// device/: the systemd unit (systemd-analyze verify with the installed paths), the installer
// (shellcheck; a staged install into a prefix whose daemon answers mosquitto_rr on the mosquitto it
// configured; --dry-run changes nothing; --uninstall keeps sessions) and `mamba-edge doctor --json`.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli, root } from "./helpers/cli.js";
import { freePort, mosquittoBinary, tempDir } from "./helpers/daemon.js";
import { skipWhen } from "./helpers/skip.js";

const has = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;
const installer = join(root, "device", "install.sh");
const install = (args: string[]) => spawnSync("bash", [installer, ...args], { encoding: "utf8", timeout: 120_000 });

/** Every path under dir with its size, mode and mtime: any change shows. */
function treeHash(dir: string): string {
  const h = createHash("sha256");
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(d, e.name);
      const s = statSync(p, { throwIfNoEntry: false });
      h.update(`${p} ${s?.size} ${s?.mode} ${s?.mtimeMs}\n`);
      if (e.isDirectory()) walk(p);
    }
  };
  if (existsSync(dir)) walk(dir);
  return h.digest("hex");
}

describe("device/", () => {
  it.skipIf(skipWhen(!has("shellcheck"), "shellcheck is not installed"))("device/*.sh are shellcheck-clean", () => {
    const scripts = readdirSync(join(root, "device"))
      .filter((f) => f.endsWith(".sh"))
      .map((f) => join(root, "device", f));
    expect(scripts.length).toBeGreaterThan(0);
    const r = spawnSync("shellcheck", scripts, { encoding: "utf8" });
    expect(r.stdout + r.stderr).toBe("");
    expect(r.status).toBe(0);
  });

  describe.skipIf(skipWhen(mosquittoBinary() === null || !has("mosquitto_rr"), "mosquitto / mosquitto_rr are not installed"))(
    "install.sh --prefix",
    () => {
      const dir = tempDir("install-");
      const staged = join(dir, "root");
      let port = 0;
      const procs: ChildProcess[] = [];
      beforeAll(async () => {
        port = await freePort();
        const r = install(["--prefix", staged, "--broker", "local", "--broker-port", String(port), "--no-native"]);
        expect(r.stderr).not.toMatch(/missing|warning/);
        expect(r.status).toBe(0);
        // no engine named: the default one is built into the install (the package's own is not copied)
        expect(r.stdout).toContain(`building the default engine ${staged}/opt/mamba-edge/models/engines/mamba2-brown-w8a8.mamba`);
      }, 180_000);
      afterAll(() => {
        for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL");
      });

      it.skipIf(skipWhen(!has("systemd-analyze"), "systemd-analyze is not installed (Debian package systemd)"))(
        "the installed unit passes systemd-analyze verify",
        () => {
          const unit = join(staged, "etc", "systemd", "system", "mamba-edge.service");
          const text = readFileSync(unit, "utf8");
          expect(text).not.toMatch(/@[A-Z_]+@/); // every placeholder filled
          expect(text).toContain(
            `ExecStart=${process.execPath} ${staged}/opt/mamba-edge/bin/mamba-edge.js serve --config ${staged}/etc/mamba-edge/config.json`,
          );
          const r = spawnSync("systemd-analyze", ["verify", unit], { encoding: "utf8" });
          // verify exits 0 on a setting it cannot parse, but says so: nothing may be said
          expect(r.stderr.split("\n").filter((l) => l.includes("mamba-edge.service"))).toEqual([]);
          expect(r.status).toBe(0);
        },
      );

      it("the staged daemon answers mosquitto_rr on the mosquitto it configured; --uninstall keeps the sessions", async () => {
        const confd = join(staged, "etc", "mosquitto", "conf.d");
        // the way Debian's /etc/mosquitto/mosquitto.conf includes conf.d, as this user
        const top = join(dir, "mosquitto.conf");
        writeFileSync(top, `user ${userInfo().username}\nlog_dest none\ninclude_dir ${confd}\n`);
        const broker = spawn(mosquittoBinary()!, ["-c", top], { stdio: "ignore" });
        procs.push(broker);
        const config = join(staged, "etc", "mamba-edge", "config.json");
        const cfg = JSON.parse(readFileSync(config, "utf8")) as { node: string; mqtt: string };
        expect(cfg.mqtt).toBe(`mqtt://127.0.0.1:${port}`);
        const sessions = join(staged, "var", "lib", "mamba-edge", "sessions");
        const d = spawn(
          process.execPath,
          [join(staged, "opt", "mamba-edge", "bin", "mamba-edge.js"), "serve", "--config", config, "--state-dir", sessions],
          {
            cwd: dir,
            stdio: ["ignore", "ignore", "pipe"],
          },
        );
        procs.push(d);
        let log = "";
        await new Promise<void>((resolve, reject) => {
          createInterface({ input: d.stderr! }).on("line", (l) => {
            log += l + "\n";
            if (l.includes('"msg":"ready"')) resolve();
          });
          d.once("exit", (c) => reject(new Error(`daemon exited ${c}: ${log}`)));
        });
        // the installed engine (the log names it relative to the working directory)
        expect(log).toContain('"engine":"root/opt/mamba-edge/models/engines/mamba2-brown-w8a8.mamba"');
        const rr = await new Promise<{ code: number | null; out: string }>((resolve) => {
          const p = spawn("mosquitto_rr", [
            ...["-h", "127.0.0.1", "-p", String(port), "-V", "5", "-W", "60"],
            ...["-t", `mamba-edge/${cfg.node}/generate`, "-e", "robots/r1/reply"],
            ...["-m", JSON.stringify({ id: "q1", prompt: "The jury said", max_tokens: 5, session: "r1" })],
          ]);
          let out = "";
          p.stdout.on("data", (b) => (out += b));
          p.on("close", (code) => resolve({ code, out }));
        });
        expect(rr.code).toBe(0);
        expect(JSON.parse(rr.out)).toMatchObject({ id: "q1", finish_reason: "length", usage: { completion_tokens: 5 } });
        d.kill("SIGTERM");
        await new Promise((r) => d.once("exit", r));
        broker.kill();
        expect(existsSync(join(sessions, "r1.session"))).toBe(true);

        // again: idempotent, config.json kept as it was
        const before = readFileSync(config, "utf8");
        const again = install(["--prefix", staged, "--broker", "local", "--broker-port", String(port), "--no-native"]);
        expect(again.status).toBe(0);
        expect(again.stdout).toContain("kept");
        expect(again.stdout).not.toContain("building the default engine"); // the built one passes inspect
        expect(readFileSync(config, "utf8")).toBe(before);

        const un = install(["--prefix", staged, "--uninstall"]);
        expect(un.status).toBe(0);
        expect(existsSync(join(staged, "opt", "mamba-edge"))).toBe(false);
        expect(existsSync(join(staged, "etc", "systemd", "system", "mamba-edge.service"))).toBe(false);
        expect(existsSync(join(confd, "mamba-edge.conf"))).toBe(false);
        expect(existsSync(join(sessions, "r1.session"))).toBe(true);
        expect(install(["--prefix", staged, "--uninstall", "--purge"]).status).toBe(0);
        expect(existsSync(join(staged, "var", "lib", "mamba-edge"))).toBe(false);
      }, 120_000);
    },
  );

  it.skipIf(
    skipWhen(mosquittoBinary() === null || !has("mosquitto_rr") || !has("mosquitto_passwd"), "mosquitto clients are not installed"),
  )(
    "--broker lan: passwords and an ACL on a real mosquitto; each robot reads only its own replies",
    async () => {
      const dir = tempDir("lan-");
      const staged = join(dir, "root");
      const port = await freePort();
      // an fp16 engine of the demo model (no calibration): the default engine's build is the test above's
      const engine = join(dir, "m.mamba");
      expect(cli(["build", "models/mamba2-brown", "--quant", "fp16", "--out", engine]).code).toBe(0);
      const r = install([
        ...["--prefix", staged, "--broker", "lan", "--broker-port", String(port), "--node", "jet1"],
        ...["--no-native", "--engine", engine],
      ]);
      expect(r.status).toBe(0);
      const mosq = join(staged, "etc", "mosquitto", "mamba-edge");
      expect(readFileSync(join(mosq, "acl"), "utf8")).toContain("topic read mamba-edge/jet1/generate");
      for (const [u, p] of [
        ["robot1", "pw1"],
        ["robot2", "pw2"],
      ])
        expect(spawnSync("mosquitto_passwd", ["-b", join(mosq, "passwd"), u!, p!]).status).toBe(0);
      const top = join(dir, "mosquitto.conf");
      writeFileSync(top, `user ${userInfo().username}\nlog_dest none\ninclude_dir ${join(staged, "etc", "mosquitto", "conf.d")}\n`);
      const broker = spawn(mosquittoBinary()!, ["-c", top], { stdio: "ignore" });
      const env = Object.fromEntries(
        readFileSync(join(staged, "etc", "mamba-edge", "env"), "utf8")
          .split("\n")
          .filter((l) => /^MAMBA_EDGE_\w+=/.test(l))
          .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
      );
      expect(env.MAMBA_EDGE_PASSWORD).toBeTruthy();
      const config = join(staged, "etc", "mamba-edge", "config.json");
      const d = spawn(
        process.execPath,
        [join(staged, "opt", "mamba-edge", "bin", "mamba-edge.js"), "serve", "--config", config, "--state-dir", join(dir, "s")],
        {
          cwd: dir,
          env: { ...process.env, ...env },
          stdio: ["ignore", "ignore", "pipe"],
        },
      );
      try {
        await new Promise<void>((resolve, reject) => {
          let log = "";
          createInterface({ input: d.stderr! }).on("line", (l) => {
            log += l + "\n";
            if (l.includes('"msg":"ready"')) resolve();
          });
          d.once("exit", (c) => reject(new Error(`daemon exited ${c}: ${log}`)));
        });
        const client = (args: string[]) =>
          new Promise<{ code: number | null; out: string }>((resolve) => {
            const p = spawn(args[0]!, ["-h", "127.0.0.1", "-p", String(port), "-V", "5", ...args.slice(1)]);
            let out = "";
            p.stdout.on("data", (b) => (out += b));
            p.on("close", (code) => resolve({ code, out }));
          });
        // robot2 listens on robot1's replies: the broker does not let it read them
        const spy = client(["mosquitto_sub", "-u", "robot2", "-P", "pw2", "-t", "robots/robot1/reply/#", "-W", "8"]);
        await new Promise((res) => setTimeout(res, 300));
        const req = JSON.stringify({ id: "L1", prompt: "The", max_tokens: 3 });
        const ok = await client([
          "mosquitto_rr",
          "-u",
          "robot1",
          "-P",
          "pw1",
          "-t",
          "mamba-edge/jet1/generate",
          "-e",
          "robots/robot1/reply",
          "-m",
          req,
          "-W",
          "30",
        ]);
        expect(ok.code).toBe(0);
        expect(JSON.parse(ok.out)).toMatchObject({ id: "L1", finish_reason: "length" });
        expect((await spy).out).toBe("");
        // no anonymous access, and a robot cannot publish as the daemon
        expect(
          (await client(["mosquitto_rr", "-t", "mamba-edge/jet1/generate", "-e", "robots/x/reply", "-m", req, "-W", "3"])).code,
        ).not.toBe(0);
      } finally {
        d.kill("SIGKILL");
        broker.kill();
      }
    },
    60_000,
  );

  it("--dry-run prints every action and changes nothing", () => {
    const staged = join(tempDir("dry-"), "root");
    const h = treeHash(staged);
    const r = install(["--prefix", staged, "--broker", "lan", "--dry-run", "--no-native"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^\+ cp -a .*\/dist /m);
    expect(r.stdout).toContain(`+ write ${staged}/etc/mamba-edge/config.json`);
    expect(r.stdout).toContain(`+ write ${staged}/etc/mosquitto/mamba-edge/acl`);
    expect(r.stdout).toContain(`+ write ${staged}/etc/systemd/system/mamba-edge.service`);
    expect(treeHash(staged)).toBe(h);
    expect(existsSync(staged)).toBe(false);
    // and on an existing install
    const real = join(tempDir("dry2-"), "root");
    expect(install(["--prefix", real, "--broker", "none", "--no-native", "--no-build-engine"]).status).toBe(0);
    const h2 = treeHash(real);
    expect(install(["--prefix", real, "--uninstall", "--purge", "--dry-run"]).status).toBe(0);
    expect(install(["--prefix", real, "--broker", "lan", "--dry-run", "--no-native"]).status).toBe(0);
    expect(treeHash(real)).toBe(h2);
  }, 120_000);

  it("refuses a bad option in one line", () => {
    const r = install(["--broker", "cloud"]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe("install.sh: --broker: expected local, lan or none, found cloud\n");
  });

  it("doctor --json on this machine: no Jetson, no GPU claimed where none is, exit 0", () => {
    const r = cli(["doctor", "--json"]);
    expect(r.stderr).toBe("");
    const rep = JSON.parse(r.stdout) as { jetson: boolean; checks: { name: string; result: string; detail: string; fix?: string }[] };
    const byName = Object.fromEntries(rep.checks.map((c) => [c.name, c]));
    expect(rep.jetson).toBe(existsSync("/etc/nv_tegra_release"));
    expect(byName.node!.result).toBe("ok");
    expect(byName.arch!.detail).toContain(process.arch);
    for (const c of rep.checks) expect(["ok", "warn", "fail", "n/a"]).toContain(c.result);
    for (const c of rep.checks) if (c.result !== "ok" && c.result !== "n/a") expect(c.fix, c.name).toBeTruthy();
    if (!rep.jetson) {
      expect(byName.l4t!.result).toBe("n/a");
      expect(byName["power mode"]!.result).toBe("n/a");
    }
    const gpu = has("nvidia-smi") && spawnSync("nvidia-smi", ["-L"]).status === 0;
    if (!gpu && !rep.jetson) expect(byName.gpu!.result).not.toBe("ok");
    expect(r.code).toBe(rep.checks.some((c) => c.result === "fail") ? 1 : 0);
  }, 60_000);
});
