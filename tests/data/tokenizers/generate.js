// node generate.js TOKENIZER_DIR CORPUS_DIR > golden.json  (run by generate.sh)
"use strict";
const fs = require("fs");
const path = require("path");
const { TokenizerLoader } = require("@lenml/tokenizers");
const { cases, random_cases } = require("./inputs.js");

const [dir, corpus] = process.argv.slice(2);
const tokenizerJSON = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
const tokenizerConfig = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });

let texts = cases.concat(random_cases(200, 12345));
// Corpus lines: every 97th non-empty line of Moby Dick and of the SOTU text, at most 60 of each.
for (const f of ["moby-dick.txt", "sotu.txt"]) {
  const p = path.join(corpus || "", f);
  if (!corpus || !fs.existsSync(p)) continue;
  const lines = fs.readFileSync(p, "utf8").split("\n").filter((l) => l.trim().length > 0);
  const picked = [];
  for (let i = 0; i < lines.length && picked.length < 60; i += 97) picked.push(lines[i].slice(0, 400));
  texts = texts.concat(picked);
}

const out = [];
for (const text of texts) {
  const ids = tok.encode(text);
  const ids_plain = tok.encode(text, { add_special_tokens: false });
  const entry = { text, ids, ids_no_special: ids_plain };
  if (ids.length > 0) {
    entry.decoded = tok.decode(ids);
    entry.decoded_skip_special = tok.decode(ids, { skip_special_tokens: true });
  }
  out.push(entry);
}
process.stdout.write(JSON.stringify({
  generator: "@lenml/tokenizers@3.7.2 via tests/data/tokenizers/generate.sh",
  tokenizer: path.basename(dir),
  cases: out,
}) + "\n");
