// Resolves what the CLI runs on: a checkpoint directory (--model), the bundled demo model by
// default, or a random model of a published shape (--random, for benchmarks).
import { existsSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { RefBackend } from "../backends/ref.js";
import type { Backend } from "../backends/backend.js";
import { UserError } from "../errors.js";
import { MambaModel } from "../model/model.js";
import { randomModel } from "../model/random.js";
import { Tokenizer } from "../tokenizer.js";

/** The repository (or installed package) root: dist/runtime/cli -> ../../.. */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const defaultModelDir = join(packageRoot, "models", "mamba2-brown");

export interface Opened {
  backend: Backend;
  model: MambaModel;
  /** what was opened, for reports */
  label: string;
  dir: string | null;
}

export function openModel(opts: { model?: string; random?: string }): Opened {
  if (opts.random) {
    const model = randomModel(opts.random);
    return { backend: new RefBackend(model), model, label: `${opts.random} (random weights)`, dir: null };
  }
  const dir = opts.model ?? defaultModelDir;
  if (!existsSync(dir)) throw new UserError(`${dir}: no such directory`);
  const model = MambaModel.load(dir);
  // Reports name the model as the user would type it from here.
  const rel = relative(process.cwd(), resolve(dir));
  return { backend: new RefBackend(model), model, label: rel && !rel.startsWith("..") ? rel : dir, dir };
}

export function openTokenizer(o: Opened): Tokenizer {
  if (!o.dir) throw new UserError(`${o.label} has no tokenizer: give --model DIR with a tokenizer.json`);
  return Tokenizer.load(o.dir);
}
