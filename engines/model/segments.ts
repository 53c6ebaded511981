import type { SequenceState } from "./state.js";

/**
 * Rows of a forward pass that belong to one sequence: rows [start, start + len) continue `state`.
 * Prefill is one segment of T rows; a batched decode step is B segments of one row each.
 */
export interface Segment {
  state: SequenceState;
  start: number;
  len: number;
}
