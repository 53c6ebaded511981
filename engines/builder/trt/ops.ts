// The custom nodes of the TensorRT graphs (domain mamba_edge), as engines/native/trt/OPS.md defines
// them: inputs with their element types and ranks, attributes with their types and defaults, the
// shapes of the outputs, and the plugins' limits. The graph export emits these nodes and the graph
// check holds every node to this table.
import onnxProto from "onnx-proto";

/** A dimension: a size, or a product of named sizes ("batch", "batch*seq"). */
export type Dim = number | string;

/** What the check knows of a value: its element type and shape. */
export interface Value {
  type: number;
  shape: Dim[] | null; // null: unknown rank
  /** the contents of a small integer tensor known before run time (shapes, axes, sizes) */
  value?: Dim[];
}

export const TRT_DOMAIN = "mamba_edge";
export const TRT_DOMAIN_VERSION = 1;

const A = onnxProto.onnx.AttributeProto.AttributeType;
const FLOAT = 1,
  INT8 = 3,
  FLOAT16 = 10;
/** activation inputs and outputs: float32 or float16, one of the two for all of a node's */
const ACT = [FLOAT, FLOAT16];

export interface InputSpec {
  name: string;
  types: number[];
  rank: number | number[];
}

export interface CustomOp {
  /** the inputs present for these attribute values */
  inputs(a: Record<string, unknown>): InputSpec[];
  attrs: Record<string, { type: number; default: number }>;
  /** output types and shapes; throws on inputs that do not fit together */
  infer(ins: Value[], a: Record<string, number>, eq: (x: Dim, y: Dim) => boolean): Value[];
  /** what the plugin refuses, as messages (the graph itself is valid ONNX either way) */
  limits?(ins: Value[], a: Record<string, number>): string[];
}

const f = (d: number) => ({ type: A.FLOAT, default: d });
const i = (d: number) => ({ type: A.INT, default: d });
const act = (name: string, rank: number | number[]): InputSpec => ({ name, types: ACT, rank });
const f32 = (name: string, rank: number): InputSpec => ({ name, types: [FLOAT], rank });

/** attribute values with the defaults filled in */
export function withDefaults(op: CustomOp, a: Record<string, unknown>): Record<string, number> {
  return Object.fromEntries(Object.entries(op.attrs).map(([k, s]) => [k, (a[k] as number | undefined) ?? s.default]));
}

function expect(eq: (x: Dim, y: Dim) => boolean, v: Value, name: string, want: Dim[]) {
  const s = v.shape;
  if (s && (s.length !== want.length || s.some((d, k) => !eq(d, want[k]))))
    throw new Error(`${name} has shape [${s.join(", ")}], expected [${want.join(", ")}]`);
}

/** the node's activations: all of one type */
function actType(ins: Value[], specs: InputSpec[]): number {
  const types = new Set(ins.filter((_, k) => specs[k].types === ACT).map((v) => v.type));
  if (types.size > 1) throw new Error("activation inputs of float32 and float16 mixed");
  return [...types][0];
}

function conv(prefill: boolean): CustomOp {
  const inputs = () => [act("x", prefill ? 3 : 2), f32("state", 3), f32("w", 2), f32("bias", 1), f32("qscale", 1)];
  return {
    inputs,
    attrs: { int8_scale: f(0) },
    infer([x, state, w, bias, qscale], a, eq) {
      const t = actType([x, state, w, bias, qscale], inputs());
      const [C, K] = w.shape!;
      const B = x.shape![0];
      expect(eq, x, "x", prefill ? [B, x.shape![1], C] : [B, C]);
      expect(eq, state, "state", [B, C, (K as number) - 1]);
      expect(eq, bias, "bias", [C]);
      expect(eq, qscale, "qscale", [C]);
      const out = [
        { type: t, shape: x.shape },
        { type: FLOAT, shape: state.shape },
      ];
      return a.int8_scale > 0 ? [...out, { type: INT8, shape: x.shape }] : out;
    },
    limits: ([, , w]) => {
      const K = w.shape![1] as number;
      return K >= 2 && K <= 8 ? [] : [`conv width ${K} outside 2..8`];
    },
  };
}

function selective(prefill: boolean): CustomOp {
  const r = prefill ? 3 : 2;
  const inputs = () => [
    f32("state", 3),
    act("xdbl", r),
    act("x", r),
    act("z", r),
    { name: "dt_w", types: [FLOAT16], rank: 2 },
    f32("dt_b", 1),
    f32("A", 2),
    f32("D", 1),
  ];
  return {
    inputs,
    attrs: { b_scale: f(0), c_scale: f(0), out_scale: f(0), out_int8: i(0) },
    infer(ins, a, eq) {
      const [state, xdbl, x, z, dtW, dtB, Am, D] = ins;
      const t = actType(ins, inputs());
      const [E, R] = dtW.shape!;
      const N = Am.shape![1];
      const lead = x.shape!.slice(0, -1);
      expect(eq, state, "state", [lead[0], E, N]);
      expect(eq, xdbl, "xdbl", [...lead, (R as number) + 2 * (N as number)]);
      expect(eq, x, "x", [...lead, E]);
      expect(eq, z, "z", [...lead, E]);
      expect(eq, dtB, "dt_b", [E]);
      expect(eq, Am, "A", [E, N]);
      expect(eq, D, "D", [E]);
      if (a.out_int8 && !(a.out_scale > 0)) throw new Error("out_int8 needs out_scale > 0");
      return [
        { type: a.out_int8 ? INT8 : t, shape: x.shape },
        { type: FLOAT, shape: state.shape },
      ];
    },
    limits: (ins) => ((ins[6].shape![1] as number) <= 64 ? [] : [`d_state ${ins[6].shape![1]} above 64`]),
  };
}

function ssd(prefill: boolean): CustomOp {
  const r = prefill ? 3 : 2;
  const inputs = (a: Record<string, unknown>) => [
    f32("state", 4),
    act("dt", r),
    act("xbc", r),
    f32("dt_bias", 1),
    f32("A", 1),
    f32("D", 1),
    ...(a.gate ? [act("z", r)] : []),
  ];
  return {
    inputs,
    attrs: { dt_min: f(0), dt_max: f(3.4e38), gate: i(0) },
    infer(ins, a, eq) {
      const [state, dt, xbc, dtBias, Am, D, z] = ins;
      const t = actType(ins, inputs(a));
      const [, H, P, N] = state.shape!;
      const lead = dt.shape!.slice(0, -1);
      expect(eq, state, "state", [lead[0], H, P, N]);
      expect(eq, dt, "dt", [...lead, H]);
      for (const [v, n] of [
        [dtBias, "dt_bias"],
        [Am, "A"],
        [D, "D"],
      ] as const)
        expect(eq, v, n, [H]);
      const HP = (H as number) * (P as number);
      const width = xbc.shape![xbc.shape!.length - 1] as number;
      const GN2 = width - HP;
      const G = GN2 / (2 * (N as number));
      if (!Number.isInteger(G) || G < 1 || (H as number) % G !== 0)
        throw new Error(`xbc's width ${width} is not H·P ${HP} plus 2·G·N for a number of groups G dividing ${H} heads`);
      expect(eq, xbc, "xbc", [...lead, width]);
      if (z) expect(eq, z, "z", [...lead, HP]);
      return [
        { type: t, shape: [...lead, HP] },
        { type: FLOAT, shape: state.shape },
      ];
    },
    limits: (ins) => {
      const N = ins[0].shape![3] as number;
      return N % 32 === 0 && N <= 256 ? [] : [`d_state ${N} is not a multiple of 32 up to 256`];
    },
  };
}

export const CUSTOM_OPS: Record<string, CustomOp> = {
  ConvStep: conv(false),
  ConvPrefill: conv(true),
  SelectiveStep: selective(false),
  SelectiveScan: selective(true),
  SsdStep: ssd(false),
  SsdScan: ssd(true),
  RmsNormQuant: {
    inputs: (a) => [act("x", [2, 3]), f32("w", 1), ...(a.has_residual ? [act("residual", [2, 3])] : [])],
    attrs: { eps: f(1e-5), scale: f(0), out_int8: i(0), has_residual: i(0) },
    infer(ins, a, eq) {
      const [x, w, residual] = ins;
      const t = actType(ins, this.inputs(a));
      const Dm = x.shape![x.shape!.length - 1];
      expect(eq, w, "w", [Dm]);
      if (residual) expect(eq, residual, "residual", x.shape!);
      if (a.out_int8 && !(a.scale > 0)) throw new Error("out_int8 needs scale > 0");
      const y = { type: a.out_int8 ? INT8 : t, shape: x.shape };
      return a.has_residual ? [y, { type: t, shape: x.shape }] : [y];
    },
    limits: ([x]) => ((x.shape![x.shape!.length - 1] as number) % 4 === 0 ? [] : ["d_model not a multiple of 4"]),
  },
  HadamardQuant: {
    inputs: (a) => [act("y", [2, 3]), ...(a.gate ? [act("z", [2, 3])] : []), ...((a.group_size as number) > 0 ? [f32("w", 1)] : [])],
    attrs: {
      gate: i(0),
      norm_before_gate: i(0),
      group_size: i(0),
      eps: f(1e-5),
      hadamard_block: i(0),
      hadamard_factor: i(1),
      scale: f(0),
      out_int8: i(0),
    },
    infer(ins, a, eq) {
      const [y] = ins;
      const t = actType(ins, this.inputs(a));
      const E = y.shape![y.shape!.length - 1] as number;
      if (a.gate) expect(eq, ins[1], "z", y.shape!);
      if (a.group_size > 0) {
        expect(eq, ins[ins.length - 1], "w", [E]);
        if (E % a.group_size) throw new Error(`group_size ${a.group_size} does not divide ${E}`);
      }
      const hb = a.hadamard_block;
      if (hb > 1 && ((hb & (hb - 1)) !== 0 || E % hb)) throw new Error(`hadamard_block ${hb} is not a power of two dividing ${E}`);
      const hm = a.hadamard_factor;
      if (![1, 12, 20].includes(hm) || (hm > 1 && hm * hb !== E))
        throw new Error(`hadamard_factor ${hm}: expected 1, or 12 or 20 with hadamard_block · factor = ${E}`);
      if (a.out_int8 && !(a.scale > 0)) throw new Error("out_int8 needs scale > 0");
      return [{ type: a.out_int8 ? INT8 : t, shape: y.shape }];
    },
    limits: ([y]) => ((y.shape![y.shape!.length - 1] as number) * 4 <= 200 * 1024 ? [] : ["d_inner · 4 bytes above 200 KiB"]),
  },
};
