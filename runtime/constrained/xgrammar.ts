// Loads XGrammar's WebAssembly build (@mlc-ai/web-xgrammar). The package ships one UMD bundle under
// "type": "module", which Node can import only as an ES module, where its Emscripten loader finds
// neither `require` nor `__filename`; so the bundle runs here as the CommonJS module it is written
// as, with those given, and with a console of its own: what the C++ side prints (a schema it cannot
// compile) goes to `print`, not the daemon's stderr. Each call gets a fresh WebAssembly instance.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import type * as XG from "@mlc-ai/web-xgrammar";

export type XGrammar = typeof XG;

const require = createRequire(import.meta.url);
let source: { file: string; text: string } | null = null;

export function loadXGrammar(print: (line: string) => void): XGrammar {
  if (source === null) {
    const file = require.resolve("@mlc-ai/web-xgrammar");
    // its one dynamic import (of node:module) as a require: code made by new Function has no module
    // loader of its own to import with under a VM (vitest)
    source = { file, text: readFileSync(file, "utf8").replace("await import('module')", "require('module')") };
  }
  const module = { exports: {} as XGrammar };
  // the package's own file, run as the CommonJS module it is
  const say = (...a: unknown[]) => print(a.map(String).join(" "));
  const console = { log: say, info: say, warn: say, error: say, debug: say, trace: say };
  new Function("exports", "module", "require", "__filename", "__dirname", "console", source.text)(
    module.exports,
    module,
    require,
    source.file,
    dirname(source.file),
    console,
  );
  return module.exports;
}
