// Where the package lives on disk: the root holds models/, engines/ (the native libraries' build
// directories), data/ and bench/. Found from this file, compiled (dist/engines) or run from source (engines).
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const candidates = [resolve(here, ".."), resolve(here, "..", "..")];

/** The package's root directory. */
export const packageRoot = candidates.find((r) => existsSync(join(r, "package.json"))) ?? candidates[1];

/** The cuda backend's native library (engines/native): $MAMBA_EDGE_CUDA_LIB, else its CMake build directory. */
export function cudaLibraryPath(): string {
  if (process.env.MAMBA_EDGE_CUDA_LIB) return process.env.MAMBA_EDGE_CUDA_LIB;
  return join(packageRoot, "engines", "native", "build", "libmamba_edge.so");
}
