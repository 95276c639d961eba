// docs/CONFORMANCE.md's results table says what conformance/baseline/web.json says: its web
// column has each scenario's mark (pass, or FAIL for a known failure), and a row for every
// scenario of the baseline. (The Rust suite checks the rust column the same way.)

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

const root = new URL("../../../", import.meta.url);

function cells(line: string): string[] {
  return line.split("|").slice(1, -1).map((c) => c.trim());
}

test("the web column of the results table is the web baseline", () => {
  const doc = readFileSync(new URL("docs/CONFORMANCE.md", root), "utf8");
  const results = doc.slice(doc.indexOf("## Results"));
  const lines = results.split("\n");
  const header = cells(lines.find((l) => l.startsWith("| scenario or check")) ?? "");
  const web = header.indexOf("web");
  assert.ok(web > 0, "the table has a web column");

  const baseline = JSON.parse(readFileSync(new URL("conformance/baseline/web.json", root), "utf8")) as Record<string, string>;
  const expected = new Map(
    Object.entries(baseline).map(([key, result]) => [key.slice(key.indexOf("/") + 1), result === "pass" ? "pass" : "FAIL"]),
  );
  const table = new Map<string, string>();
  for (const line of lines.filter((l) => l.startsWith("| `"))) {
    const row = cells(line);
    const name = row[0]!.replace(/`/g, "");
    if (row[1] === "server check") {
      assert.equal(row[web], "—", `${name}: server checks have no web result`);
    } else {
      table.set(name, row[web] ?? "");
    }
  }
  assert.deepEqual(table, expected);
});
