// A small builder for ONNX graphs: named values, initializers (inline or pointing into the engine's
// weights.safetensors as ONNX external data), nodes, and serialization through onnx-proto.
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;
type Dim = number | string;
/** Attribute values: integers, int lists, strings, floats as {f: x}, subgraphs. */
export type Attr = number | number[] | string | { f: number } | onnxProto.onnx.IGraphProto;

export const DT = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, FLOAT16: 10, INT4: 22 } as const;
export type DataType = (typeof DT)[keyof typeof DT];

export interface ExternalRef {
  /** relative to the folder the loader is told holds external data (the package root for cpu graphs) */
  location: string;
  /** read when the graph is serialized: a ref may be filled in after the graph is built */
  offset: number;
  length: number;
}

export class Graph {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly inits: onnxProto.onnx.ITensorProto[] = [];
  private readonly refs = new Map<onnxProto.onnx.ITensorProto, ExternalRef>();
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private counter = 0;
  /** values that became graph outputs, by their new names (see output()) */
  private readonly renamed = new Map<string, string>();

  constructor(readonly name: string) {}

  input(name: string, type: DataType, shape: Dim[]): string {
    this.inputs.push(valueInfo(name, type, shape));
    return name;
  }

  /**
   * Makes `value` a graph output called `name`. The node computing it writes under that name
   * directly: an Identity in between would be a full copy per run (onnxruntime keeps Identities
   * that produce graph outputs), which for a batch of SSM states is a pass over megabytes.
   */
  output(value: string, name: string, type: DataType, shape: Dim[]): void {
    const source = this.renamed.get(value) ?? value;
    const producer = this.nodes.find((n) => n.output?.includes(source));
    if (producer && source === value && !this.outputs.some((o) => o.name === value)) {
      producer.output = producer.output!.map((o) => (o === value ? name : o));
      for (const n of this.nodes) n.input = n.input?.map((i) => (i === value ? name : i));
      this.renamed.set(value, name);
    } else {
      // a graph input, an initializer, or a value already output under another name
      this.nodes.push({ opType: "Identity", input: [source], output: [name], name: `${this.name}/out_${name}` });
    }
    this.outputs.push(valueInfo(name, type, shape));
  }

  /** An inline constant tensor. */
  constant(name: string, data: Float32Array | Int32Array | BigInt64Array | Int8Array | Uint8Array, dims: number[], type: DataType): string {
    const raw = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.inits.push({ name, dims, dataType: type, rawData: raw });
    return name;
  }

  /** A small float constant (dims [] for a scalar). */
  floats(values: number[] | Float32Array, dims = [values.length]): string {
    return this.constant(`${this.name}/c${this.counter++}`, Float32Array.from(values), dims, DT.FLOAT);
  }

  /** A small uint8 constant (zero points). */
  uint8(values: number[], dims = [values.length]): string {
    return this.constant(`${this.name}/c${this.counter++}`, Uint8Array.from(values), dims, DT.UINT8);
  }

  /** A small int64 constant: axes, shapes, split sizes. */
  ints(values: number[], dims = [values.length]): string {
    return this.constant(`${this.name}/c${this.counter++}`, BigInt64Array.from(values.map(BigInt)), dims, DT.INT64);
  }

  /** An initializer whose bytes live in another file (the engine's weights.safetensors). */
  external(name: string, ref: ExternalRef, dims: number[], type: DataType): string {
    const init = { name, dims, dataType: type, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL };
    this.inits.push(init);
    this.refs.set(init, ref);
    return name;
  }

  /** Adds a node; returns its output names (fresh unless given). */
  op(type: string, inputs: string[], attrs: Record<string, Attr> = {}, nOut = 1, domain = ""): string[] {
    // names carry the graph's name: a Scan body's values must not shadow the outer graph's
    const outs = Array.from({ length: nOut }, () => `${this.name}/${type.toLowerCase()}_${this.counter++}`);
    const ins = inputs.map((i) => this.renamed.get(i) ?? i); // a value may since have become an output
    this.nodes.push({
      opType: type,
      domain,
      input: ins,
      output: outs,
      name: `${type}_${this.counter}`,
      attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)),
    });
    return outs;
  }

  /** Adds a node as it is (a graph rewritten node by node). */
  push(node: onnxProto.onnx.INodeProto): void {
    this.nodes.push(node);
  }

  /** Adds a single-output node. */
  o(type: string, inputs: string[], attrs: Record<string, Attr> = {}, domain = ""): string {
    return this.op(type, inputs, attrs, 1, domain)[0];
  }

  proto(): onnxProto.onnx.IGraphProto {
    for (const [init, ref] of this.refs) {
      if (ref.offset < 0) throw new Error(`${this.name}: external tensor ${init.name} was never placed in ${ref.location}`);
      init.externalData = [
        { key: "location", value: ref.location },
        { key: "offset", value: String(ref.offset) },
        { key: "length", value: String(ref.length) },
      ];
    }
    return { name: this.name, node: this.nodes, initializer: this.inits, input: this.inputs, output: this.outputs };
  }

  /** `domains`: further operator domains the graph uses, with their versions. */
  serialize(opset = 21, msOpset = true, domains: Record<string, number> = {}): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: 10,
      producerName: "mamba-edge",
      opsetImport: [
        { domain: "", version: opset },
        ...(msOpset ? [{ domain: "com.microsoft", version: 1 }] : []),
        ...Object.entries(domains).map(([domain, version]) => ({ domain, version })),
      ],
      graph: this.proto(),
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function valueInfo(name: string, type: DataType, shape: Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType: type, shape: { dim: shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) } } },
  };
}

function attr(name: string, v: Attr): onnxProto.onnx.IAttributeProto {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof v === "string") return { name, type: A.STRING, s: Buffer.from(v) };
  if (Array.isArray(v)) return { name, type: A.INTS, ints: v };
  if (typeof v === "number") return { name, type: A.INT, i: v };
  if ("f" in v && typeof v.f === "number") return { name, type: A.FLOAT, f: v.f };
  return { name, type: A.GRAPH, g: v as onnxProto.onnx.IGraphProto };
}
