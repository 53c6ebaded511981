// Where the package lives on disk: the root holds models/, engines/ (the native libraries' build
// directories), data/ and bench/. Found from this file, compiled (dist/runtime) or run from source (runtime).
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const candidates = [resolve(here, ".."), resolve(here, "..", "..")];

/** The package's root directory. */
export const packageRoot = candidates.find((r) => existsSync(join(r, "package.json"))) ?? candidates[1];

/** The bundled demo model. */
export const defaultModelDir = join(packageRoot, "models", "mamba2-brown");
/** The engine the CLI runs when given no model: built from the demo model on first use. */
export const defaultEngineDir = join(packageRoot, "models", "engines", "mamba2-brown-w8a8.mamba");
