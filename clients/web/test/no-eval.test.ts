// The package must run under a Content-Security-Policy without 'unsafe-eval': neither the built
// code (generated code included) nor the protobuf runtime may compile code from strings.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const EVAL = /\beval\s*\(|\bnew\s+Function\b|(?<![\w.$])Function\s*\(/;

function jsFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".js"))
    .map((f) => join(dir, f));
}

function offenders(dir: string): string[] {
  const files = jsFiles(dir);
  assert.ok(files.length > 0, `no .js files in ${dir}`);
  return files.filter((f) => EVAL.test(readFileSync(f, "utf8")));
}

test("the built package uses no eval or new Function", () => {
  const dist = fileURLToPath(new URL("../dist/", import.meta.url));
  assert.deepEqual(offenders(dist), []);
});

test("the protobuf runtime uses no eval or new Function", () => {
  // The ESM build, the one a bundler takes (.../dist/esm/index.js).
  const runtime = dirname(fileURLToPath(import.meta.resolve("@bufbuild/protobuf")));
  assert.deepEqual(offenders(runtime), []);
});
