// `mamba-edge doctor`: what this machine has for serving (Node, JetPack, GPU, CUDA, the native library,
// TensorRT, memory, power mode, broker, state directory, the systemd unit), each with a fix. On a
// machine that is not a Jetson the Jetson-only checks say n/a. Exit 1 only when a check that applies fails.
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { createConnection } from "node:net";
import { arch, platform } from "node:os";
import { dirname, join } from "node:path";
import type { Argv } from "yargs";
import { UserError } from "../../../engines/errors.js";
import { cudaLibraryPath } from "../../backends/cuda.js";
import { loadConfig, mqttMode, type DaemonConfig } from "../../daemon/config.js";
import { defaultEngineDir } from "../../paths.js";

type Result = "ok" | "warn" | "fail" | "n/a";
export interface Check {
  name: string;
  result: Result;
  detail: string;
  fix?: string;
}

const read = (f: string): string | null => {
  try {
    return readFileSync(f, "utf8");
  } catch {
    return null;
  }
};
const sh = (cmd: string, args: string[]): { ok: boolean; out: string } => {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 10_000 });
  return { ok: r.status === 0, out: (r.stdout ?? "").trim() };
};
const which = (cmd: string): boolean => spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;

interface Gpu {
  name: string;
  sm: number;
  cc: string;
  driver: string;
}

/** The first CUDA device through the driver API (libcuda.so.1, present wherever a driver is), or why not. */
async function cudaDevice(): Promise<Gpu | string> {
  let koffi: typeof import("koffi");
  try {
    koffi = (await import("koffi")).default as unknown as typeof import("koffi");
  } catch {
    return "koffi is not installed";
  }
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load("libcuda.so.1");
  } catch {
    return "no CUDA driver (libcuda.so.1 not found)";
  }
  const cuInit = lib.func("int cuInit(unsigned int)");
  const count = lib.func("int cuDeviceGetCount(_Out_ int *n)");
  const attr = lib.func("int cuDeviceGetAttribute(_Out_ int *v, int attrib, int dev)");
  const name = lib.func("int cuDeviceGetName(_Out_ uint8_t *name, int len, int dev)");
  const version = lib.func("int cuDriverGetVersion(_Out_ int *v)");
  const rc = cuInit(0) as number;
  if (rc !== 0) return `the CUDA driver found no usable GPU (cuInit error ${rc})`;
  const n = [0];
  if ((count(n) as number) !== 0 || n[0] === 0) return "the CUDA driver sees no GPU";
  const get = (a: number) => {
    const v = [0];
    attr(v, a, 0);
    return v[0]!;
  };
  const buf = Buffer.alloc(256);
  name(buf, 256, 0);
  const v = [0];
  version(v);
  return {
    name: buf.toString("utf8").replace(/\0.*$/s, ""),
    sm: get(16), // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
    cc: `${get(75)}.${get(76)}`, // compute capability major, minor
    driver: `${Math.floor(v[0]! / 1000)}.${(v[0]! % 1000) / 10}`,
  };
}

function dirBytes(d: string): number {
  let n = 0;
  for (const e of readdirSync(d, { withFileTypes: true }))
    n += e.isDirectory() ? dirBytes(join(d, e.name)) : statSync(join(d, e.name)).size;
  return n;
}

function probe(host: string, port: number, ms = 2000): Promise<string | null> {
  return new Promise((resolve) => {
    const c = createConnection({ host, port });
    const t = setTimeout(() => (c.destroy(), resolve("timed out")), ms);
    c.once("connect", () => (clearTimeout(t), c.end(), resolve(null)));
    c.once("error", (e: NodeJS.ErrnoException) => (clearTimeout(t), resolve(e.code ?? e.message)));
  });
}

/** The nearest existing directory at or above `d`, for a writability check that creates nothing. */
function existingAncestor(d: string): string {
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  return d;
}

export async function runChecks(configFile?: string): Promise<{ jetson: boolean; checks: Check[] }> {
  const checks: Check[] = [];
  const add = (name: string, result: Result, detail: string, fix?: string) =>
    checks.push({ name, result, detail, ...(fix ? { fix } : {}) });
  const tegra = read("/etc/nv_tegra_release");
  const jetson = tegra !== null;
  const model = read("/proc/device-tree/model")?.replace(/\0/g, "").trim();

  const major = Number(process.versions.node.split(".")[0]);
  add(
    "node",
    major >= 20 ? "ok" : "fail",
    `Node ${process.version}`,
    major >= 20 ? undefined : "install Node 20 or newer (https://deb.nodesource.com)",
  );
  add(
    "arch",
    "ok",
    `${arch()} ${platform()}${model ? `, ${model}` : ""}${jetson ? "" : " (not a Jetson: the Jetson checks do not apply)"}`,
  );

  if (tegra) {
    const m = /R(\d+) \(release\), REVISION: ([\d.]+)/.exec(tegra);
    const l4t = m ? `${m[1]}.${m[2]}` : "unknown";
    const jp6 = m?.[1] === "36";
    add(
      "l4t",
      jp6 ? "ok" : "warn",
      `L4T ${l4t}${jp6 ? " (JetPack 6)" : ""}`,
      jp6 ? undefined : "flash JetPack 6.x (L4T 36.x), the release this is built for",
    );
  } else add("l4t", "n/a", "no /etc/nv_tegra_release");

  const gpu = await cudaDevice();
  const jetsonGpu = ["/sys/devices/gpu.0", "/sys/devices/platform/gpu.0", "/sys/devices/platform/bus@0/17000000.gpu"].find(existsSync);
  if (typeof gpu === "string") {
    if (jetson)
      add(
        "gpu",
        "fail",
        `${gpu}${jetsonGpu ? ` (${jetsonGpu} exists)` : ""}`,
        "add the user to the video and render groups; check `ls -l /dev/nvhost-* /dev/nvmap`; reinstall nvidia-l4t-cuda",
      );
    else add("gpu", "n/a", `${gpu}: backend ort (CPU) applies`);
    add("cuda driver", jetson ? "fail" : "n/a", gpu, jetson ? "sudo apt-get install nvidia-jetpack" : undefined);
  } else {
    add("gpu", "ok", `${gpu.name}, compute capability ${gpu.cc}, ${gpu.sm} SMs`);
    add("cuda driver", "ok", `CUDA driver ${gpu.driver}`);
  }

  const lib = cudaLibraryPath();
  if (!existsSync(lib)) {
    add(
      "native library",
      typeof gpu === "string" ? "n/a" : "warn",
      `${lib} not built`,
      "cmake -S engines/native -B engines/native/build -DCMAKE_CUDA_ARCHITECTURES=87 && cmake --build engines/native/build",
    );
  } else if (typeof gpu === "string") add("native library", "n/a", `${lib} built; no GPU to run it`);
  else {
    const want = `sm_${gpu.cc.replace(".", "")}`;
    const dump = which("cuobjdump") ? sh("cuobjdump", ["--list-elf", lib]) : null;
    if (!dump?.ok) add("native library", "ok", `${lib} built (cuobjdump not found: its GPU code not checked against ${want})`);
    else if (dump.out.includes(want)) add("native library", "ok", `${lib} has ${want} code`);
    else add("native library", "fail", `${lib} has no ${want} code`, `rebuild it with -DCMAKE_CUDA_ARCHITECTURES=${want.slice(3)}`);
  }

  const ld = sh("sh", ["-c", "ldconfig -p 2>/dev/null"]).out;
  const trt = /libnvinfer\.so\.(\d+) .*=> (\S+)/.exec(ld);
  if (trt) {
    const real = sh("readlink", ["-f", trt[2]!]).out;
    const ver = /libnvinfer\.so\.([\d.]+)$/.exec(real)?.[1] ?? trt[1]!;
    add(
      "tensorrt",
      trt[1] === "10" ? "ok" : "warn",
      `libnvinfer ${ver}`,
      trt[1] === "10" ? undefined : "backend trt needs TensorRT 10 (JetPack 6: sudo apt-get install tensorrt)",
    );
  } else
    add(
      "tensorrt",
      jetson ? "warn" : "n/a",
      "libnvinfer.so.10 not found: backend trt unavailable",
      jetson ? "sudo apt-get install tensorrt" : undefined,
    );

  let config: DaemonConfig | null = null;
  let configError: string | null = null;
  const file = configFile ?? (existsSync("/etc/mamba-edge/config.json") ? "/etc/mamba-edge/config.json" : undefined);
  try {
    config = loadConfig({ file });
  } catch (e) {
    configError = (e as Error).message.split("\n")[0]!;
  }
  if (configError) add("config", "fail", configError, "fix the field named, or run without --config");
  else add("config", "ok", file ?? "no config file: the defaults");

  const engine = config?.engine ?? defaultEngineDir;
  const mem = /MemAvailable:\s+(\d+) kB/.exec(read("/proc/meminfo") ?? "");
  if (!existsSync(engine))
    add("memory", "n/a", `engine ${engine} not built yet`, "mamba-edge build (or the first serve builds the default engine)");
  else if (mem) {
    const avail = Number(mem[1]) * 1024;
    const need = dirBytes(engine) + (config?.sessionMemoryBytes ?? 64 << 20) + (256 << 20); // package + sessions + Node
    const mb = (b: number) => `${Math.round(b / 2 ** 20)} MB`;
    add(
      "memory",
      avail > need ? "ok" : "warn",
      `${mb(avail)} available; the engine ${engine} with session memory and Node needs about ${mb(need)}`,
      avail > need ? undefined : "close other programs, lower sessionMemoryBytes, or use a smaller recipe (w4a16)",
    );
  } else add("memory", "n/a", "no /proc/meminfo");

  if (which("nvpmodel")) {
    const q = sh("nvpmodel", ["-q"]);
    add(
      "power mode",
      q.ok ? "ok" : "warn",
      q.ok ? q.out.replace(/\s+/g, " ") : "nvpmodel -q failed",
      q.ok ? undefined : "sudo nvpmodel -q",
    );
  } else add("power mode", "n/a", jetson ? "nvpmodel not found" : "not a Jetson");
  if (which("jetson_clocks")) {
    const c = sh("jetson_clocks", ["--show"]);
    add(
      "clocks",
      c.ok ? "ok" : "warn",
      c.ok ? (c.out.split("\n").find((l) => /GPU/.test(l)) ?? "shown") : "jetson_clocks --show needs root",
      c.ok ? undefined : "sudo jetson_clocks --show",
    );
  } else add("clocks", "n/a", jetson ? "jetson_clocks not found" : "not a Jetson");

  if (config) {
    const mode = mqttMode(config);
    if (mode === "off" || mode === "embedded") add("broker", "n/a", `mqtt: ${mode}`);
    else {
      const u = new URL(mode);
      const port = Number(u.port) || (u.protocol === "mqtts:" ? 8883 : u.protocol === "wss:" ? 443 : u.protocol === "ws:" ? 80 : 1883);
      const err = await probe(u.hostname, port);
      add(
        "broker",
        err ? "fail" : "ok",
        `${mode} ${err ? `not reachable (${err})` : "reachable"}`,
        err ? "systemctl status mosquitto; check the mqtt URL in the config" : undefined,
      );
    }
    const at = existingAncestor(config.stateDir);
    try {
      accessSync(at, constants.W_OK);
      add("state dir", "ok", `${config.stateDir} ${at === config.stateDir ? "writable" : `can be created (under ${at})`}`);
    } catch {
      add(
        "state dir",
        "fail",
        `${config.stateDir}: ${at} is not writable`,
        "set stateDir, or run as the service (StateDirectory=mamba-edge)",
      );
    }
  }

  if (which("systemctl")) {
    const s = sh("systemctl", ["show", "-p", "LoadState", "-p", "ActiveState", "mamba-edge.service"]);
    const load = /LoadState=(\S+)/.exec(s.out)?.[1];
    const active = /ActiveState=(\S+)/.exec(s.out)?.[1];
    if (!s.ok || !load) add("systemd unit", "n/a", "systemd is not running here");
    else if (load === "not-found") add("systemd unit", "n/a", "mamba-edge.service not installed", "sudo device/install.sh");
    else
      add(
        "systemd unit",
        active === "active" ? "ok" : active === "failed" ? "fail" : "warn",
        `mamba-edge.service ${active}`,
        active === "active" ? undefined : "journalctl -u mamba-edge -n 50; sudo systemctl restart mamba-edge",
      );
  } else add("systemd unit", "n/a", "no systemctl");

  return { jetson, checks };
}

export function doctorCommand(y: Argv) {
  return y.command(
    "doctor",
    "check this machine for serving: Node, JetPack, GPU, CUDA, native library, TensorRT, memory, power mode, broker, state directory, systemd unit",
    (a) =>
      a
        .option("json", { type: "boolean", describe: "print the checks as JSON" })
        .option("config", { type: "string", describe: "config file to check (default /etc/mamba-edge/config.json when present)" }),
    async (args) => {
      const report = await runChecks(args.config);
      if (args.json) process.stdout.write(JSON.stringify(report, null, 2) + "\n");
      else
        for (const c of report.checks) {
          process.stdout.write(`${c.result.padEnd(5)} ${c.name.padEnd(15)} ${c.detail}\n`);
          if (c.fix && c.result !== "ok") process.stdout.write(`${"".padEnd(22)}fix: ${c.fix}\n`);
        }
      const failed = report.checks.filter((c) => c.result === "fail").map((c) => c.name);
      if (failed.length) throw new UserError(`doctor: ${failed.length} check${failed.length > 1 ? "s" : ""} failed: ${failed.join(", ")}`);
    },
  );
}
