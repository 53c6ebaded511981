// Skips that say why on screen: vitest shows a skipped test only as a count, so every condition
// given to `skipIf` goes through `skipWhen`, which prints its reason once (console.warn). Where the
// run needs what is missing, it is a failure instead of a skip.

/** Why this run needs the CPU libraries (engines/ort-ops, engines/quant-native), or false: under CI (CI=true)
 *  or with MAMBA_EDGE_REQUIRE_OPS=1 (.ci/run, which builds it) a missing library is a failure. */
export const opsRequired: string | false =
  process.env.MAMBA_EDGE_REQUIRE_OPS === "1"
    ? "MAMBA_EDGE_REQUIRE_OPS=1 requires the CPU libraries (engines/ort-ops, engines/quant-native)"
    : process.env.CI === "true"
      ? "CI=true requires the CPU libraries (engines/ort-ops, engines/quant-native)"
      : false;

/** Why this run needs the native library and a GPU, or false: the GPU check (scripts/gpu-check.sh)
 *  sets MAMBA_EDGE_REQUIRE_GPU=1, so that its GPU tests cannot pass by skipping. */
export const gpuRequired: string | false =
  process.env.MAMBA_EDGE_REQUIRE_GPU === "1" ? "MAMBA_EDGE_REQUIRE_GPU=1 requires the native library and a GPU" : false;

const told = new Set<string>();

/**
 * `skip` as given, for `it.skipIf` / `describe.skipIf`; when true, prints `reason` (once per test
 * file). When `required` (opsRequired, gpuRequired) says why this run needs what is missing, a true
 * `skip` throws instead, and the test file fails with both reasons.
 */
export function skipWhen(skip: boolean, reason: string, required: string | false = false): boolean {
  if (!skip) return false;
  if (required) throw new Error(`${reason}; not skipped: ${required}`);
  if (!told.has(reason)) {
    told.add(reason);
    console.warn(`skipped: ${reason}`);
  }
  return true;
}
