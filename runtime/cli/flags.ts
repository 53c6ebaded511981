// What the CLI checks of its flags before a command runs, so that each problem is one line that
// echoes what was typed: numbers that are not numbers, yargs' own failures, a checkpoint named by
// its config.json.
import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, dirname } from "node:path";
import { UserError, describe } from "../../engines/errors.js";

/** The text given to --name in `raw` (the command line), or null when it has none. */
export function rawValue(raw: string[], name: string): string | null {
  for (let i = 0; i < raw.length; i++) {
    const tok = raw[i];
    if (tok === "--") break;
    if (tok.startsWith(`--${name}=`)) return tok.slice(name.length + 3);
    if (tok === `--${name}`) {
      const next = raw[i + 1];
      return next === undefined || /^--?[A-Za-z]/.test(next) ? null : next;
    }
  }
  return null;
}

/**
 * yargs middleware: a number flag whose text is not a number is refused with that text (yargs
 * itself hands the command NaN, which the command would report as "found NaN").
 */
export function numbersAsTyped(raw: string[]): (args: Record<string, unknown>) => void {
  return (args) => {
    for (const [k, v] of Object.entries(args)) {
      if (/[A-Z]/.test(k)) continue; // yargs' camelCase twin of a kebab-case flag
      const nan = (x: unknown) => typeof x === "number" && Number.isNaN(x);
      if (!(nan(v) || (Array.isArray(v) && v.some(nan)))) continue;
      const given = rawValue(raw, k);
      const flag = k.length === 1 ? `-${k}` : `--${k}`;
      throw new UserError(`${flag}: expected a number, found ${given === null ? "no value" : describe(given)}`);
    }
  };
}

/** yargs' failure message on one line: its choice errors become `--flag: expected one of …, found "x"`. */
export function oneLine(msg: string): string {
  const choices = [...msg.matchAll(/Argument: (\S+), Given: (.+?), Choices: (.+)$/gm)];
  if (choices.length > 0)
    return choices
      .map(([, key, given, allowed]) => {
        const options = allowed.split(/,\s*/).map((c) => c.replace(/^"(.*)"$/, "$1"));
        return `--${key}: expected one of ${options.join(", ")}, found ${given}`;
      })
      .join("; ");
  return msg.replace(/\s*\n\s*/g, " ").trim();
}

/** A checkpoint named by its config.json is its directory; any other file is refused. */
export function checkpointDir(path: string, flag = "--model"): string {
  if (!existsSync(path) || statSync(path).isDirectory()) return path;
  if (basename(path) === "config.json") return dirname(path);
  throw new UserError(`${flag}: expected a checkpoint directory (holding config.json), found the file ${path}`);
}

/** The reference runs its linear layers on one thread or two (engines/model/parallel.ts): more is refused, not ignored. */
export function checkReferenceThreads(t: { model?: string; engine?: string; random?: string; backend?: string; threads?: number }): void {
  const reference = t.backend === "ref" || (t.engine === undefined && (t.model !== undefined || t.random !== undefined));
  if (reference && ["ref", "auto", undefined].includes(t.backend) && t.threads !== undefined && t.threads > 2)
    throw new UserError(`--threads: the reference (--model, --random) runs on 1 or 2 threads, found ${t.threads}`);
}

/** The flags of constrained output (generate, chat). */
export const outputFormatOptions = {
  json: { type: "boolean", describe: "output one JSON object, always valid JSON (constrained decoding)" },
  "json-schema": { type: "string", describe: "output JSON that follows the schema in this file (constrained decoding)" },
} as const;

/** The request fields --json / --json-schema ask for: {} when neither is given. */
export function outputFormatFrom(args: { json?: boolean; "json-schema"?: string }): {
  format?: "json";
  json_schema?: Record<string, unknown>;
} {
  const file = args["json-schema"];
  if (file === undefined) return args.json ? { format: "json" } : {};
  if (args.json) throw new UserError("give --json or --json-schema, not both");
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new UserError(
      `--json-schema: ${file}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message}`,
    );
  }
  let schema: unknown;
  try {
    schema = JSON.parse(text);
  } catch (e) {
    throw new UserError(`--json-schema: ${file}: not valid JSON (${oneLine((e as Error).message)})`);
  }
  if (schema === null || typeof schema !== "object" || Array.isArray(schema))
    throw new UserError(`--json-schema: ${file}: expected a JSON schema (an object)`);
  return { json_schema: schema as Record<string, unknown> };
}
