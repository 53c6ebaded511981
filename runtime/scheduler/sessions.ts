// Per-robot conversation state. A session is the model state after its last turn plus the last
// sampled token (not yet fed to the model). Every save is written through to `dir` atomically
// (temp file, fsync, rename, fsync of the directory) before the turn's reply goes out, so a reply
// that was sent always has its state on disk, whole, even after kill -9. A byte-bounded LRU keeps
// recent sessions in memory.
import { randomBytes } from "node:crypto";
import { accessSync, constants, mkdirSync } from "node:fs";
import { open, readFile, readdir, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { UserError } from "../../engines/errors.js";
import { WireError } from "./protocol.js";

export interface SessionRecord {
  /** backend.saveState() bytes */
  state: Uint8Array;
  /** token sampled last and not yet fed to the model (it opens the next turn), or null */
  pending: number | null;
  turns: number;
}

const MAGIC = Buffer.from("MESESS01");
const ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;

/** Session ids are file names inside the state directory: letters, digits, `.`, `_`, `-`. */
export function validateSessionId(id: string): string {
  if (!ID.test(id)) {
    throw new WireError(
      "bad_request",
      `session: expected 1-128 characters of A-Z a-z 0-9 . _ - (not starting with .), found ${JSON.stringify(id).slice(0, 40)}`,
    );
  }
  return id;
}

export function encodeSession(r: SessionRecord): Buffer {
  const header = Buffer.from(JSON.stringify({ pending: r.pending, turns: r.turns }));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  return Buffer.concat([MAGIC, len, header, r.state]);
}

export function decodeSession(buf: Buffer, file: string): SessionRecord {
  if (buf.length < MAGIC.length + 4 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) throw new Error(`${file}: not a session file`);
  const hlen = buf.readUInt32LE(MAGIC.length);
  const header = JSON.parse(buf.subarray(MAGIC.length + 4, MAGIC.length + 4 + hlen).toString("utf8")) as {
    pending: number | null;
    turns: number;
  };
  return { pending: header.pending, turns: header.turns, state: new Uint8Array(buf.subarray(MAGIC.length + 4 + hlen)) };
}

export class SessionStore {
  private readonly memory = new Map<string, SessionRecord>(); // insertion order = least recent first
  private bytes = 0;

  constructor(
    readonly dir: string,
    readonly maxMemoryBytes: number,
  ) {
    try {
      mkdirSync(dir, { recursive: true });
      accessSync(dir, constants.W_OK | constants.X_OK);
    } catch (e) {
      // ENOTDIR / EEXIST: the path or one above it is a file; EACCES: not ours to write
      throw new UserError(`${dir}: cannot use as the state directory (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }

  async get(id: string): Promise<SessionRecord | null> {
    const hit = this.memory.get(id);
    if (hit) {
      this.memory.delete(id);
      this.memory.set(id, hit);
      return hit;
    }
    const file = this.file(id);
    let buf: Buffer;
    try {
      buf = await readFile(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw e;
    }
    const rec = decodeSession(buf, file);
    this.remember(id, rec);
    return rec;
  }

  async put(id: string, rec: SessionRecord): Promise<void> {
    await writeAtomic(this.dir, this.file(id), encodeSession(rec));
    this.remember(id, rec);
  }

  async delete(id: string): Promise<boolean> {
    const had = this.forget(id);
    try {
      await rm(this.file(id));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return had;
      throw e;
    }
  }

  /** Sessions on disk (leftover temp files of an interrupted write are removed). */
  async list(): Promise<string[]> {
    const names = await readdir(this.dir);
    await Promise.all(names.filter(isTempName).map((n) => rm(join(this.dir, n), { force: true })));
    return names
      .filter((n) => n.endsWith(".session") && ID.test(n.slice(0, -".session".length)))
      .map((n) => n.slice(0, -".session".length));
  }

  get memoryBytes(): number {
    return this.bytes;
  }

  private file(id: string): string {
    return join(this.dir, `${validateSessionId(id)}.session`);
  }

  private remember(id: string, rec: SessionRecord): void {
    this.forget(id);
    this.memory.set(id, rec);
    this.bytes += rec.state.byteLength;
    for (const [old, r] of this.memory) {
      if (this.bytes <= this.maxMemoryBytes || old === id) break;
      this.memory.delete(old); // already on disk: dropping it from memory loses nothing
      this.bytes -= r.state.byteLength;
    }
  }

  private forget(id: string): boolean {
    const r = this.memory.get(id);
    if (!r) return false;
    this.memory.delete(id);
    this.bytes -= r.state.byteLength;
    return true;
  }
}

/** Temp files start with `.`, which no session id can: `.NAME.tmp-<hex>`. */
const isTempName = (n: string) => /^\..+\.tmp-[0-9a-f]{12}$/.test(n);

/** temp file in the same directory + fsync + rename + fsync of the directory: all or nothing. */
export async function writeAtomic(dir: string, file: string, data: Uint8Array): Promise<void> {
  const tmp = join(dirname(file), `.${basename(file)}.tmp-${randomBytes(6).toString("hex")}`);
  try {
    const fh = await open(tmp, "w", 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (e) {
    // a full disk or a failed rename: the partial temp file goes now, not at the next start
    await rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
  const dh = await open(dir, "r");
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
