// A structural check of the TensorRT graphs (trt/*.onnx), in place of onnx.checker, which has no
// build for Node: the model and graph rules of ONNX IR 10 (opset imports, unique names, nodes in
// topological order, initializers whose bytes fit their dims), every standard node against the
// opset-21 schema of its operator (input and output counts, attribute names and types, type
// constraints), type and shape inference through the whole graph with symbolic batch and sequence
// dims (checked against the declared graph outputs), every custom node against its contract
// (CUSTOM_OPS), and the rules TensorRT 10.3 sets for explicit quantization (NvInfer.h,
// IQuantizeLayer / IDequantizeLayer). Only the operators these graphs use have schemas here: any
// other operator is an error, not a pass.
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import { CUSTOM_OPS, TRT_DOMAIN, withDefaults, type CustomOp, type Dim, type Value } from "./ops.js";

export type { Dim, Value };

const { onnx } = onnxProto;

/** ONNX element types (TensorProto.DataType) */
export const ET = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  BFLOAT16: 16,
  UINT4: 21,
  INT4: 22,
} as const;
const ET_NAME: Record<number, string> = Object.fromEntries(Object.entries(ET).map(([k, v]) => [v, k]));
const BYTES: Record<number, number> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2 };

/**
 * A dim: a number, or a product of symbols with a factor ("batch", "batch*seq", "2*seq"), so that a
 * Reshape to -1 of (batch, seq, 64) is known to give batch*seq*64.
 */
type Mono = { c: number; s: string[] };
const mono = (d: Dim): Mono => {
  if (typeof d === "number") return { c: d, s: [] };
  const parts = d.split("*");
  let c = 1;
  const s: string[] = [];
  for (const p of parts)
    if (/^\d+$/.test(p)) c *= Number(p);
    else s.push(p);
  return { c, s: s.sort() };
};
const unmono = (m: Mono): Dim => (m.s.length === 0 ? m.c : [...(m.c === 1 ? [] : [String(m.c)]), ...m.s].join("*"));
const dimMul = (a: Dim, b: Dim): Dim => {
  const x = mono(a),
    y = mono(b);
  return unmono({ c: x.c * y.c, s: [...x.s, ...y.s].sort() });
};
const dimDiv = (a: Dim, b: Dim): Dim | null => {
  const x = mono(a),
    y = mono(b);
  if (y.c === 0 || x.c % y.c !== 0) return null;
  const s = [...x.s];
  for (const v of y.s) {
    const i = s.indexOf(v);
    if (i < 0) return null;
    s.splice(i, 1);
  }
  return unmono({ c: x.c / y.c, s });
};
const dimEq = (a: Dim, b: Dim) => String(unmono(mono(a))) === String(unmono(mono(b)));

const show = (v: Value) => `${ET_NAME[v.type] ?? v.type}[${v.shape ? v.shape.join(", ") : "?"}]`;

type Attrs = Record<string, { type: number; value: unknown }>;
const A = onnx.AttributeProto.AttributeType;

interface Schema {
  inputs: [number, number]; // min, max (Infinity: variadic)
  outputs: [number, number];
  attrs: Record<string, number>; // name -> AttributeProto type
  required?: string[];
  /** input index -> type variable; variables listed in `types` with their allowed element types */
  tv?: string[];
  types?: Record<string, number[]>;
  /** output types and shapes from the inputs (null entries: absent optional inputs) */
  infer(ins: (Value | null)[], at: Attrs, consts: (Dim[] | null)[], nOut: number): Value[];
}

const F: number[] = [ET.FLOAT, ET.FLOAT16, ET.BFLOAT16, ET.DOUBLE];
const NUM = [...F, ET.INT8, ET.UINT8, ET.INT16, ET.UINT16, ET.INT32, ET.INT64];
const ANY = [...NUM, ET.BOOL];
const IDX = [ET.INT32, ET.INT64];

class CheckError extends Error {}
const fail = (m: string): never => {
  throw new CheckError(m);
};

function broadcast(...vs: Value[]): Dim[] | null {
  if (vs.some((v) => !v.shape)) return null;
  const r = Math.max(...vs.map((v) => v.shape!.length));
  const out: Dim[] = [];
  for (let i = 0; i < r; i++) {
    let d: Dim = 1;
    for (const v of vs) {
      const s = v.shape!;
      const x = s[s.length - r + i] ?? 1;
      if (x === 1) continue;
      if (d === 1) d = x;
      else if (!dimEq(d, x)) fail(`shapes ${vs.map(show).join(" and ")} do not broadcast`);
    }
    out.push(d);
  }
  return out;
}

const same = (ins: (Value | null)[]): Value[] => [{ type: ins[0]!.type, shape: ins[0]!.shape }];
const elementwise = (ins: (Value | null)[]): Value[] => [{ type: ins[0]!.type, shape: broadcast(...ins.filter((v): v is Value => !!v)) }];
const axisOf = (a: number, r: number) => (a < 0 ? a + r : a);
const needConst = (c: Dim[] | null, what: string): number[] => {
  if (!c) return fail(`${what} must be known before run time`);
  if (c.some((d) => typeof d !== "number")) fail(`${what} [${c.join(", ")}] must be numbers`);
  return c as number[];
};

const unary = (types = F): Schema => ({ inputs: [1, 1], outputs: [1, 1], attrs: {}, tv: ["T"], types: { T: types }, infer: same });
const binary = (types = NUM): Schema => ({
  inputs: [2, 2],
  outputs: [1, 1],
  attrs: {},
  tv: ["T", "T"],
  types: { T: types },
  infer: elementwise,
});

function reduce(ins: (Value | null)[], at: Attrs, consts: (Dim[] | null)[]): Value[] {
  const x = ins[0]!;
  const keep = (at.keepdims?.value ?? 1) === 1;
  if (!x.shape) return [{ type: x.type, shape: null }];
  const r = x.shape.length;
  const axes = ins[1] ? needConst(consts[1], "axes").map((a) => axisOf(a, r)) : x.shape.map((_, i) => i);
  const shape: Dim[] = [];
  x.shape.forEach((d, i) => {
    if (!axes.includes(i)) shape.push(d);
    else if (keep) shape.push(1);
  });
  return [{ type: x.type, shape }];
}

/** The standard operators these graphs use, as opset 21 defines them. */
export const SCHEMAS: Record<string, Schema> = {
  Add: binary(),
  Sub: binary(),
  Mul: binary(),
  Div: binary(),
  Max: { inputs: [1, Infinity], outputs: [1, 1], attrs: {}, tv: ["T"], types: { T: NUM }, infer: elementwise },
  Min: { inputs: [1, Infinity], outputs: [1, 1], attrs: {}, tv: ["T"], types: { T: NUM }, infer: elementwise },
  Exp: unary(),
  Log: unary(),
  Sqrt: unary(),
  Sigmoid: unary(),
  Softplus: unary(),
  Round: unary(),
  Neg: unary(NUM),
  Identity: unary(ANY),
  Clip: {
    inputs: [1, 3],
    outputs: [1, 1],
    attrs: {},
    tv: ["T", "T", "T"],
    types: { T: NUM },
    infer(ins) {
      for (const b of ins.slice(1)) if (b?.shape && b.shape.length !== 0) fail(`Clip bounds must be scalars, found ${show(b)}`);
      return same(ins);
    },
  },
  Cast: {
    inputs: [1, 1],
    outputs: [1, 1],
    attrs: { to: A.INT, saturate: A.INT },
    required: ["to"],
    tv: ["T1"],
    types: { T1: ANY },
    infer: (ins, at) => [{ type: at.to.value as number, shape: ins[0]!.shape }],
  },
  MatMul: {
    inputs: [2, 2],
    outputs: [1, 1],
    attrs: {},
    tv: ["T", "T"],
    types: { T: [...F, ET.INT32, ET.INT64] },
    infer([a, b]) {
      if (!a!.shape || !b!.shape) return [{ type: a!.type, shape: null }];
      const x = a!.shape.length === 1 ? [1, ...a!.shape] : a!.shape;
      const y = b!.shape.length === 1 ? [...b!.shape, 1] : b!.shape;
      if (!dimEq(x[x.length - 1], y[y.length - 2])) fail(`MatMul of ${show(a!)} and ${show(b!)}: inner dims differ`);
      const batch = broadcast({ type: 0, shape: x.slice(0, -2) }, { type: 0, shape: y.slice(0, -2) })!;
      const shape = [...batch, ...(a!.shape.length === 1 ? [] : [x[x.length - 2]]), ...(b!.shape.length === 1 ? [] : [y[y.length - 1]])];
      return [{ type: a!.type, shape }];
    },
  },
  Gemm: {
    inputs: [2, 3],
    outputs: [1, 1],
    attrs: { alpha: A.FLOAT, beta: A.FLOAT, transA: A.INT, transB: A.INT },
    tv: ["T", "T", "T"],
    types: { T: [...F, ET.INT32, ET.INT64] },
    infer([a, b, c], at) {
      if (!a!.shape || !b!.shape) return [{ type: a!.type, shape: null }];
      if (a!.shape.length !== 2 || b!.shape.length !== 2) fail(`Gemm takes matrices, found ${show(a!)} and ${show(b!)}`);
      const [m, ka] = at.transA?.value ? [a!.shape[1], a!.shape[0]] : a!.shape;
      const [kb, n] = at.transB?.value ? [b!.shape[1], b!.shape[0]] : b!.shape;
      if (!dimEq(ka, kb)) fail(`Gemm of ${show(a!)} and ${show(b!)}: inner dims differ`);
      const y = { type: a!.type, shape: [m, n] };
      if (c?.shape) {
        // C broadcasts one way, to (M, N)
        const out = broadcast(y, c);
        if (!out || out.length !== 2 || !dimEq(out[0], m) || !dimEq(out[1], n))
          fail(`Gemm bias ${show(c)} does not broadcast to [${m}, ${n}]`);
      }
      return [y];
    },
  },
  Gather: {
    inputs: [2, 2],
    outputs: [1, 1],
    attrs: { axis: A.INT },
    tv: ["T", "Tind"],
    types: { T: ANY, Tind: IDX },
    infer([d, i], at) {
      if (!d!.shape || !i!.shape) return [{ type: d!.type, shape: null }];
      const ax = axisOf((at.axis?.value as number) ?? 0, d!.shape.length);
      return [{ type: d!.type, shape: [...d!.shape.slice(0, ax), ...i!.shape, ...d!.shape.slice(ax + 1)] }];
    },
  },
  Reshape: {
    inputs: [2, 2],
    outputs: [1, 1],
    attrs: { allowzero: A.INT },
    tv: ["T", "I"],
    types: { T: ANY, I: [ET.INT64] },
    infer([x], at, consts) {
      // a constant, or computed from Shape (symbolic dims)
      const want = consts[1] ?? fail("Reshape's shape must be known before run time");
      if (at.allowzero?.value) fail("Reshape: allowzero is not used by these graphs");
      if (want.includes(0)) fail("Reshape: these graphs give every dim (no 0)");
      const shape: Dim[] = [...want];
      const unknown = shape.indexOf(-1);
      if (unknown >= 0) {
        if (shape.indexOf(-1, unknown + 1) >= 0) fail("Reshape: more than one -1");
        if (!x!.shape) return [{ type: x!.type, shape: null }];
        const total = x!.shape.reduce<Dim>((p, d) => dimMul(p, d), 1);
        const known = shape.filter((d) => d !== -1).reduce<Dim>((p, d) => dimMul(p, d), 1);
        if (shape.some((d) => typeof d === "number" && d < -1)) fail(`Reshape to [${want.join(", ")}]`);
        shape[unknown] = dimDiv(total, known) ?? fail(`Reshape of ${show(x!)} to [${want.join(", ")}]: sizes do not divide`);
      } else if (x!.shape) {
        const a = x!.shape.reduce<Dim>((p, d) => dimMul(p, d), 1);
        const b = shape.reduce<Dim>((p, d) => dimMul(p, d), 1);
        if (!dimEq(a, b)) fail(`Reshape of ${show(x!)} to [${want.join(", ")}]: sizes differ`);
      }
      return [{ type: x!.type, shape }];
    },
  },
  Transpose: {
    inputs: [1, 1],
    outputs: [1, 1],
    attrs: { perm: A.INTS },
    tv: ["T"],
    types: { T: ANY },
    infer([x], at) {
      if (!x!.shape) return [{ type: x!.type, shape: null }];
      const perm = (at.perm?.value as number[]) ?? x!.shape.map((_, i) => x!.shape!.length - 1 - i);
      if (perm.length !== x!.shape.length || [...perm].sort().some((p, i) => p !== i)) fail(`Transpose: perm ${perm} for ${show(x!)}`);
      return [{ type: x!.type, shape: perm.map((p) => x!.shape![p]) }];
    },
  },
  Concat: {
    inputs: [1, Infinity],
    outputs: [1, 1],
    attrs: { axis: A.INT },
    required: ["axis"],
    tv: ["T"],
    types: { T: ANY },
    infer(ins, at) {
      const vs = ins as Value[];
      if (vs.some((v) => !v.shape)) return [{ type: vs[0].type, shape: null }];
      const r = vs[0].shape!.length;
      const ax = axisOf(at.axis.value as number, r);
      const shape = [...vs[0].shape!];
      for (const v of vs.slice(1)) {
        if (v.shape!.length !== r) fail(`Concat of ${vs.map(show).join(", ")}: ranks differ`);
        v.shape!.forEach((d, i) => {
          if (i !== ax) {
            if (!dimEq(d, shape[i])) fail(`Concat of ${vs.map(show).join(", ")}: dim ${i} differs`);
          } else if (typeof shape[i] === "number" && typeof d === "number") shape[i] = (shape[i] as number) + d;
          else fail(`Concat along the symbolic dim of ${vs.map(show).join(", ")}`);
        });
      }
      // shape vectors: the contents are known where every part's are
      const value = r === 1 && vs.every((v) => v.value) ? vs.flatMap((v) => v.value!) : undefined;
      return [{ type: vs[0].type, shape, value }];
    },
  },
  Split: {
    inputs: [1, 2],
    outputs: [1, Infinity],
    attrs: { axis: A.INT, num_outputs: A.INT },
    tv: ["T", "I"],
    types: { T: ANY, I: [ET.INT64] },
    infer([x, sizes], at, consts, nOut) {
      if (!sizes) fail("Split: these graphs give the split sizes");
      const s = needConst(consts[1], "Split's sizes");
      if (s.length !== nOut) fail(`Split: ${s.length} sizes for ${nOut} outputs`);
      if (!x!.shape) return s.map(() => ({ type: x!.type, shape: null }));
      const ax = axisOf((at.axis?.value as number) ?? 0, x!.shape.length);
      if (
        !dimEq(
          x!.shape[ax],
          s.reduce((a, b) => a + b, 0),
        )
      )
        fail(`Split of ${show(x!)} into ${s} along axis ${ax}: sizes do not add up`);
      return s.map((n) => ({ type: x!.type, shape: x!.shape!.map((d, i) => (i === ax ? n : d)) }));
    },
  },
  Slice: {
    inputs: [3, 5],
    outputs: [1, 1],
    attrs: {},
    tv: ["T", "Tind", "Tind", "Tind", "Tind"],
    types: { T: ANY, Tind: IDX },
    infer(ins, _at, consts) {
      const x = ins[0]!;
      if (!x.shape) return [{ type: x.type, shape: null }];
      const starts = needConst(consts[1], "Slice's starts");
      const ends = needConst(consts[2], "Slice's ends");
      const axes = ins[3] ? needConst(consts[3], "Slice's axes") : starts.map((_, i) => i);
      if (ins[4] && needConst(consts[4], "Slice's steps").some((s) => s !== 1)) fail("Slice: only step 1 is used by these graphs");
      const shape = [...x.shape];
      axes.forEach((a0, i) => {
        const a = axisOf(a0, shape.length);
        const d = shape[a];
        // the slices here take the last n rows (start -n, end past the end) or a known range
        if (starts[i] < 0 && ends[i] >= 2 ** 31) shape[a] = -starts[i];
        else if (typeof d === "number") {
          const clamp = (v: number) => Math.max(0, Math.min(d, v < 0 ? v + d : v));
          shape[a] = Math.max(0, clamp(ends[i]) - clamp(starts[i]));
        } else fail(`Slice [${starts[i]}, ${ends[i]}) of the symbolic dim ${d}`);
      });
      return [{ type: x.type, shape }];
    },
  },
  Squeeze: {
    inputs: [1, 2],
    outputs: [1, 1],
    attrs: {},
    tv: ["T", "I"],
    types: { T: ANY, I: [ET.INT64] },
    infer([x, ax], _at, consts) {
      if (!x!.shape) return [{ type: x!.type, shape: null }];
      if (!ax) fail("Squeeze: these graphs name the axes");
      const axes = needConst(consts[1], "Squeeze's axes").map((a) => axisOf(a, x!.shape!.length));
      for (const a of axes) if (x!.shape[a] !== 1) fail(`Squeeze of axis ${a} of ${show(x!)}, which is not 1`);
      return [{ type: x!.type, shape: x!.shape.filter((_, i) => !axes.includes(i)) }];
    },
  },
  Unsqueeze: {
    inputs: [2, 2],
    outputs: [1, 1],
    attrs: {},
    tv: ["T", "I"],
    types: { T: ANY, I: [ET.INT64] },
    infer([x], _at, consts) {
      if (!x!.shape) return [{ type: x!.type, shape: null }];
      const r = x!.shape.length + consts[1]!.length;
      const axes = needConst(consts[1], "Unsqueeze's axes").map((a) => axisOf(a, r));
      const rest = [...x!.shape];
      return [{ type: x!.type, shape: Array.from({ length: r }, (_, i) => (axes.includes(i) ? 1 : rest.shift()!)) }];
    },
  },
  ReduceMean: {
    inputs: [1, 2],
    outputs: [1, 1],
    attrs: { keepdims: A.INT, noop_with_empty_axes: A.INT },
    tv: ["T", "I"],
    types: { T: NUM, I: [ET.INT64] },
    infer: reduce,
  },
  ReduceSum: {
    inputs: [1, 2],
    outputs: [1, 1],
    attrs: { keepdims: A.INT, noop_with_empty_axes: A.INT },
    tv: ["T", "I"],
    types: { T: NUM, I: [ET.INT64] },
    infer: reduce,
  },
  Shape: {
    inputs: [1, 1],
    outputs: [1, 1],
    attrs: {},
    tv: ["T"],
    types: { T: ANY },
    infer: ([x]) => [{ type: ET.INT64, shape: x!.shape ? [x!.shape.length] : null, value: x!.shape ?? undefined }],
  },
  Expand: {
    inputs: [2, 2],
    outputs: [1, 1],
    attrs: {},
    tv: ["T", "I"],
    types: { T: ANY, I: [ET.INT64] },
    infer([x], _at, consts) {
      const s = needConst(consts[1], "Expand's shape");
      return [{ type: x!.type, shape: broadcast(x!, { type: 0, shape: s }) }];
    },
  },
  QuantizeLinear: {
    inputs: [2, 3],
    outputs: [1, 1],
    attrs: { axis: A.INT, block_size: A.INT, output_dtype: A.INT, saturate: A.INT },
    tv: ["T1", "T2", "T3"],
    types: {
      T1: [ET.FLOAT, ET.FLOAT16, ET.BFLOAT16, ET.INT32],
      T2: [ET.FLOAT, ET.FLOAT16, ET.BFLOAT16, ET.INT32],
      T3: [ET.INT8, ET.UINT8, ET.INT16, ET.UINT16, ET.INT4, ET.UINT4],
    },
    infer([x, s, zp], at) {
      quantScaleShape(x!, s!, zp, at);
      const out = zp ? zp.type : (at.output_dtype?.value as number) || ET.UINT8;
      return [{ type: out, shape: x!.shape }];
    },
  },
  DequantizeLinear: {
    inputs: [2, 3],
    outputs: [1, 1],
    attrs: { axis: A.INT, block_size: A.INT },
    tv: ["T1", "T2", "T1"],
    types: { T1: [ET.INT8, ET.UINT8, ET.INT16, ET.UINT16, ET.INT32, ET.INT4, ET.UINT4], T2: [ET.FLOAT, ET.FLOAT16, ET.BFLOAT16] },
    infer([x, s, zp], at) {
      quantScaleShape(x!, s!, zp, at);
      return [{ type: s!.type, shape: x!.shape }];
    },
  },
};

/** QuantizeLinear / DequantizeLinear (opset 21): a scalar scale (per tensor), 1-D (per axis) or of x's rank (blocked). */
function quantScaleShape(x: Value, s: Value, zp: Value | null, at: Attrs) {
  if (
    zp &&
    (s.shape === null || zp.shape === null || s.shape.length !== zp.shape.length || s.shape.some((d, i) => !dimEq(d, zp.shape![i])))
  )
    fail(`zero point ${show(zp)} and scale ${show(s)} differ in shape`);
  if (!x.shape || !s.shape) return;
  const r = x.shape.length;
  const ax = axisOf((at.axis?.value as number) ?? 1, r);
  const block = (at.block_size?.value as number) ?? 0;
  if (s.shape.length === 0 || (s.shape.length === 1 && s.shape[0] === 1 && block === 0)) {
    if (block) fail("a per-tensor scale with block_size");
    return;
  }
  if (block === 0) {
    if (s.shape.length !== 1 || !dimEq(s.shape[0], x.shape[ax])) fail(`per-axis scale ${show(s)} for axis ${ax} of ${show(x)}`);
    return;
  }
  if (s.shape.length !== r) fail(`blocked scale ${show(s)} for ${show(x)}: ranks differ`);
  x.shape.forEach((d, i) => {
    const want = i === ax ? (typeof d === "number" ? Math.ceil(d / block) : fail("a blocked axis of symbolic size")) : d;
    if (!dimEq(s.shape![i], want)) fail(`blocked scale ${show(s)} for ${show(x)} with block ${block} along axis ${ax}`);
  });
}

/** The standard operators TensorRT 10.3's ONNX parser takes that these graphs may use. */
const TRT_PARSER_OPS = new Set(Object.keys(SCHEMAS));

export interface CheckReport {
  /** node counts by operator (custom ones as domain.op) */
  ops: Record<string, number>;
  inputs: Record<string, Value>;
  outputs: Record<string, Value>;
  problems: string[];
  /** what a plugin of the contract refuses for this model's sizes (the graph is valid either way) */
  limits: string[];
  /** every value's inferred type and shape */
  values: Map<string, Value>;
}

/**
 * Checks a model; `dir`: where its external data lies (to check the ranges). Every problem is listed
 * (a node's problem stops the inference of what depends on it).
 */
export function checkModel(bytes: Uint8Array, dir?: string): CheckReport {
  const problems: string[] = [];
  const limits: string[] = [];
  const m = onnx.ModelProto.decode(bytes);
  const num = (v: unknown) =>
    typeof v === "object" && v !== null && "toNumber" in v ? (v as { toNumber(): number }).toNumber() : Number(v);
  if (num(m.irVersion) < 10) problems.push(`ir_version ${num(m.irVersion)}: opset 21 needs IR 10`);
  const opsets = new Map<string, number>();
  for (const o of m.opsetImport ?? []) {
    const d = o.domain ?? "";
    if (opsets.has(d)) problems.push(`opset_import names domain "${d}" twice`);
    opsets.set(d, num(o.version));
  }
  if (opsets.get("") !== 21) problems.push(`the default domain's opset is ${opsets.get("")}, expected 21`);
  for (const d of opsets.keys())
    if (d !== "" && d !== TRT_DOMAIN) problems.push(`domain "${d}" is imported: TensorRT's parser knows only ONNX and ${TRT_DOMAIN}`);

  const g = m.graph ?? fail("no graph");
  const values = new Map<string, Value>();
  const initializers = new Set<string>();
  const initData = new Map<string, onnxProto.onnx.ITensorProto>();
  const define = (name: string, v: Value, what: string) => {
    if (!name) problems.push(`${what}: an empty name`);
    else if (values.has(name)) problems.push(`${what}: the name ${name} is defined twice`);
    values.set(name, v);
  };
  const shapeOf = (vi: onnxProto.onnx.IValueInfoProto): Value => {
    const t = vi.type?.tensorType ?? fail(`${vi.name}: not a tensor`);
    const dims = t.shape?.dim?.map((d) => (d.dimParam ? d.dimParam : num(d.dimValue)));
    return { type: t.elemType ?? 0, shape: dims ?? null };
  };
  for (const t of g.initializer ?? []) {
    const dims = (t.dims ?? []).map(num);
    const n = dims.reduce((a, b) => a * b, 1);
    const type = t.dataType ?? 0;
    const want = type === ET.INT4 || type === ET.UINT4 ? Math.ceil(n / 2) : n * (BYTES[type] ?? NaN);
    let value: number[] | undefined; // small integer constants (shapes, axes)
    if (!(type in BYTES) && type !== ET.INT4 && type !== ET.UINT4) problems.push(`initializer ${t.name}: element type ${type}`);
    if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
      const kv = Object.fromEntries((t.externalData ?? []).map((e) => [e.key, e.value]));
      if (!kv.location || kv.location.includes("..") || kv.location.startsWith("/"))
        problems.push(`initializer ${t.name}: external location ${kv.location} is not a file beside the model`);
      if (Number(kv.length) !== want) problems.push(`initializer ${t.name}: ${kv.length} external bytes for ${want}`);
      if (Number(kv.offset) % 64 !== 0) problems.push(`initializer ${t.name}: external offset ${kv.offset} not 64-byte aligned`);
      if (dir && kv.location) {
        const f = join(dir, kv.location);
        if (!existsSync(f)) problems.push(`initializer ${t.name}: ${kv.location} missing`);
        else if (Number(kv.offset) + Number(kv.length) > statSync(f).size)
          problems.push(`initializer ${t.name}: past the end of ${kv.location}`);
      }
    } else {
      const raw = t.rawData ?? new Uint8Array();
      if (raw.length !== want)
        problems.push(`initializer ${t.name}: ${raw.length} bytes for ${dims.join("×") || "a scalar"} of ${ET_NAME[type]}`);
      if ((type === ET.INT64 || type === ET.INT32) && n <= 64 && raw.length === want) {
        const view = Buffer.from(raw);
        value = Array.from({ length: n }, (_, i) => (type === ET.INT64 ? Number(view.readBigInt64LE(i * 8)) : view.readInt32LE(i * 4)));
      }
    }
    define(t.name!, { type, shape: dims, value }, "initializer");
    initializers.add(t.name!);
    initData.set(t.name!, t);
  }
  const inputs: Record<string, Value> = {};
  for (const vi of g.input ?? []) {
    const v = shapeOf(vi);
    inputs[vi.name!] = v;
    if (!initializers.has(vi.name!)) define(vi.name!, v, "graph input");
  }

  const ops: Record<string, number> = {};
  const scalarOf = (name: string): number[] | null => {
    const t = initData.get(name);
    if (!t || t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) return null;
    const b = Buffer.from(t.rawData ?? []);
    if (t.dataType === ET.FLOAT) return Array.from({ length: b.length / 4 }, (_, i) => b.readFloatLE(i * 4));
    if (t.dataType === ET.INT8) return Array.from(b, (x) => (x << 24) >> 24);
    if (t.dataType === ET.UINT8) return Array.from(b);
    return null;
  };
  const nodeNames = new Set<string>();
  for (const [k, node] of (g.node ?? []).entries()) {
    const op = node.opType ?? "";
    // onnxruntime and TensorRT's parser name layers after nodes: unique, non-empty
    if (!node.name) problems.push(`node ${k} (${op}) has no name`);
    else if (nodeNames.has(node.name)) problems.push(`node ${k}: the node name ${node.name} is used twice`);
    else nodeNames.add(node.name);
    const domain = node.domain ?? "";
    const where = `node ${k} (${node.name ?? op}, ${domain ? `${domain}.` : ""}${op})`;
    const key = domain ? `${domain}.${op}` : op;
    ops[key] = (ops[key] ?? 0) + 1;
    const outs = node.output ?? [];
    try {
      if (!opsets.has(domain)) fail(`domain "${domain}" is not imported`);
      const ins = (node.input ?? []).map((i) => {
        if (i === "") return null;
        return values.get(i) ?? fail(`input ${i} is not defined before it (nodes must be in topological order)`);
      });
      const at: Attrs = {};
      for (const a of node.attribute ?? []) {
        if (at[a.name!]) fail(`attribute ${a.name} given twice`);
        const type = a.type ?? 0;
        const value =
          type === A.INT
            ? num(a.i)
            : type === A.FLOAT
              ? a.f
              : type === A.INTS
                ? (a.ints ?? []).map(num)
                : type === A.STRING
                  ? String(Buffer.from(a.s ?? []))
                  : a;
        at[a.name!] = { type, value };
      }
      let results: Value[];
      if (domain === TRT_DOMAIN) {
        const c = CUSTOM_OPS[op] ?? fail(`no operator ${op} in the ${TRT_DOMAIN} contract`);
        results = checkCustom(c, ins, at, outs.length, limits);
        if (limits.length) limits.splice(0, limits.length, ...new Set(limits));
      } else if (domain === "") {
        const s = SCHEMAS[op] ?? fail(`operator ${op} is not one these graphs may use (no schema here, or TensorRT's parser lacks it)`);
        if (!TRT_PARSER_OPS.has(op)) fail(`TensorRT's parser lacks ${op}`);
        if (ins.length < s.inputs[0] || ins.length > s.inputs[1]) fail(`${ins.length} inputs, expected ${s.inputs[0]}..${s.inputs[1]}`);
        if (outs.length < s.outputs[0] || outs.length > s.outputs[1])
          fail(`${outs.length} outputs, expected ${s.outputs[0]}..${s.outputs[1]}`);
        for (const [name, a] of Object.entries(at)) {
          if (!(name in s.attrs)) fail(`unknown attribute ${name}`);
          if (a.type !== s.attrs[name]) fail(`attribute ${name} of type ${a.type}, expected ${s.attrs[name]}`);
        }
        for (const r of s.required ?? []) if (!at[r]) fail(`attribute ${r} is required`);
        // type constraints: each input's type is allowed, and inputs of one variable agree
        const bound = new Map<string, number>();
        ins.forEach((v, i) => {
          if (!v) return;
          const tv = s.tv![Math.min(i, s.tv!.length - 1)];
          if (!s.types![tv].includes(v.type)) fail(`input ${i} ${show(v)}: type ${ET_NAME[v.type]} not allowed for ${tv}`);
          if (bound.has(tv) && bound.get(tv) !== v.type) fail(`input ${i} ${show(v)}: ${tv} is ${ET_NAME[bound.get(tv)!]} elsewhere`);
          bound.set(tv, v.type);
        });
        results = s.infer(
          ins,
          at,
          ins.map((v) => v?.value ?? null),
          outs.length,
        );
        trtRules(op, node.input ?? [], ins, at, initializers, scalarOf);
      } else fail(`domain ${domain}`);
      outs.forEach((o, i) => define(o, results[i], where));
    } catch (e) {
      if (!(e instanceof CheckError)) throw e;
      problems.push(`${where}: ${e.message}`);
      outs.forEach((o) => values.set(o, { type: 0, shape: null }));
    }
  }
  const outputs: Record<string, Value> = {};
  for (const vi of g.output ?? []) {
    const want = shapeOf(vi);
    outputs[vi.name!] = want;
    const got = values.get(vi.name!);
    if (!got) problems.push(`graph output ${vi.name} is never computed`);
    else if (got.type !== 0 && (got.type !== want.type || !sameShape(got.shape, want.shape)))
      problems.push(`graph output ${vi.name}: computed as ${show(got)}, declared ${show(want)}`);
  }
  return { ops, inputs, outputs, problems, limits, values };
}

const sameShape = (a: Dim[] | null, b: Dim[] | null) => !!a && !!b && a.length === b.length && a.every((d, i) => dimEq(d, b[i]));

/** TensorRT 10.3's explicit quantization: symmetric int8 (zero points 0), positive build-time scales. */
function trtRules(
  op: string,
  names: string[],
  ins: (Value | null)[],
  at: Attrs,
  initializers: Set<string>,
  scalarOf: (name: string) => number[] | null,
) {
  if (op !== "QuantizeLinear" && op !== "DequantizeLinear") return;
  const [x, s, zp] = ins;
  if (!initializers.has(names[1])) fail("the scale must be an initializer (a build-time constant)");
  const sv = scalarOf(names[1]);
  if (sv && sv.some((v) => !(v > 0))) fail("scales must be positive");
  if (names[2]) {
    if (!initializers.has(names[2])) fail("the zero point must be an initializer");
    const z = scalarOf(names[2]);
    if (z && z.some((v) => v !== 0)) fail("TensorRT takes only symmetric quantization: zero points must be 0");
  }
  const block = (at.block_size?.value as number) ?? 0;
  if (op === "QuantizeLinear") {
    if (!zp || zp.type !== ET.INT8) fail("TensorRT quantizes activations to int8: give an int8 zero point");
    if (s!.shape && s!.shape.length !== 0) fail("activations are quantized per tensor (a scalar scale) in TensorRT");
    return;
  }
  if (x!.type === ET.INT4) {
    if (!initializers.has(names[0])) fail("INT4 dequantization is of weights only (an initializer)");
    if (x!.shape?.length !== 2 || !block || s!.shape?.length !== 2) fail("INT4 weights: 2-D, block-quantized with a 2-D scale");
    if (zp) fail("INT4 weights without a zero point");
  } else if (x!.type === ET.INT8) {
    if (s!.shape && s!.shape.length === 1 && !initializers.has(names[0])) fail("per-channel dequantization is of weights only");
    if (block) fail("block quantization is INT4-only in TensorRT");
  } else fail(`TensorRT dequantizes INT8 or INT4, found ${ET_NAME[x!.type]}`);
}

function checkCustom(c: CustomOp, ins: (Value | null)[], at: Attrs, nOut: number, limits: string[]): Value[] {
  for (const [name, a] of Object.entries(at)) {
    const want = c.attrs[name] ?? fail(`attribute ${name} is not in the contract`);
    if (a.type !== want.type) fail(`attribute ${name} of type ${a.type}, expected ${want.type}`);
  }
  const value = withDefaults(c, Object.fromEntries(Object.entries(at).map(([k, a]) => [k, a.value])));
  const specs = c.inputs(value);
  if (ins.length !== specs.length) fail(`${ins.length} inputs, the contract has ${specs.length} for these attributes`);
  ins.forEach((v, i) => {
    const spec = specs[i];
    if (!v) return fail(`input ${i} (${spec.name}) is required`);
    if (!spec.types.includes(v.type))
      fail(`input ${i} (${spec.name}) ${show(v)}: expected ${spec.types.map((t) => ET_NAME[t]).join(" or ")}`);
    const ranks = Array.isArray(spec.rank) ? spec.rank : [spec.rank];
    if (!v.shape) fail(`input ${i} (${spec.name}) of unknown shape`);
    if (!ranks.includes(v.shape!.length)) fail(`input ${i} (${spec.name}) ${show(v)}: expected rank ${ranks.join(" or ")}`);
  });
  let out: Value[];
  try {
    out = c.infer(ins as Value[], value, dimEq);
  } catch (e) {
    return fail((e as Error).message);
  }
  if (nOut !== out.length) fail(`${nOut} outputs, the contract has ${out.length} for these attributes`);
  limits.push(...(c.limits?.(ins as Value[], value) ?? []));
  return out;
}
