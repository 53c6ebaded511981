// Where the package's files are: the root (engines/paths.ts finds it), the demo model and its engine.
import { join } from "node:path";
import { packageRoot } from "../engines/paths.js";

export { packageRoot };

/** The bundled demo model. */
export const defaultModelDir = join(packageRoot, "models", "mamba2-brown");
/** The engine the CLI runs when given no model: built from the demo model on first use. */
export const defaultEngineDir = join(packageRoot, "models", "engines", "mamba2-brown-w8a8.mamba");
