/**
 * A problem with what the user gave us (a file, a flag, a field): reported as one line, exit code 1,
 * no stack trace. Anything else that is thrown is a bug and keeps its stack.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UserError";
  }
}

/** Shortens a value for an error message: `found "abc…"`. */
export function describe(value: unknown): string {
  const s = typeof value === "string" ? JSON.stringify(value) : (JSON.stringify(value) ?? String(value));
  return s.length > 40 ? s.slice(0, 40) + "…" : s;
}
