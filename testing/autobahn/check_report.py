"""Checks an Autobahn|Testsuite report (reports/index.json): every case passes, strictly
(OK) or in a way RFC 6455 allows (NON-STRICT: for example failing an invalid UTF-8 text
message at its end instead of at the first bad fragment; INFORMATIONAL: no rule to break),
and every close is a clean close handshake. Prints the tally; exits 1 on any other outcome."""

import collections
import json
import os
import sys

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
CLEAN_CLOSE = {"OK", "INFORMATIONAL"}


def main(path):
    report = json.load(open(path))
    if len(report) != 1:
        sys.exit(f"{path}: expected one agent, found {sorted(report)}")
    (agent, cases), = report.items()
    if not cases:
        sys.exit(f"{path}: no case ran")
    tally = collections.Counter()
    failures = []
    for case_id, result in sorted(cases.items(), key=lambda item: [int(p) for p in item[0].split(".")]):
        behavior, close = result["behavior"], result["behaviorClose"]
        tally[behavior] += 1
        if behavior not in PASSING or close not in CLEAN_CLOSE:
            failures.append(f"  {case_id}: {behavior}, close {close} (see {os.path.join(os.path.dirname(path), result['reportfile'])})")
    summary = ", ".join(f"{count} {name}" for name, count in sorted(tally.items()))
    print(f"autobahn: {agent}: {len(cases)} cases: {summary}")
    if failures:
        print(f"autobahn: {len(failures)} cases failed:", file=sys.stderr)
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1])
