"""One line of totals over every stage of `make test`: pytest's junit xml files plus the other
stages' records (checks.txt: one `passed NAME` or `failed NAME` line per lint run or Molecule
scenario), all in the reports directory.

    python3 .ci/totals.py REPORTS [--label "make test"] [--seconds N]
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def totals(reports: Path) -> tuple[int, int, int, list[str]]:
    passed = failed = skipped = 0
    parts: list[str] = []
    for xml in sorted(reports.glob("*.xml")):
        stage = [0, 0, 0]
        for suite in ET.parse(xml).getroot().iter("testsuite"):
            total = int(suite.get("tests", 0))
            bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skip = int(suite.get("skipped", 0))
            stage = [stage[0] + total - bad - skip, stage[1] + bad, stage[2] + skip]
        passed, failed, skipped = passed + stage[0], failed + stage[1], skipped + stage[2]
        parts.append(f"{xml.stem} {stage[0]}/{sum(stage)}")
    checks = reports / "checks.txt"
    for line in checks.read_text().splitlines() if checks.exists() else []:
        outcome, _, name = line.partition(" ")
        if outcome == "passed":
            passed += 1
        else:
            failed += 1
        parts.append(f"{name} {outcome}")
    return passed, failed, skipped, parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("reports", type=Path)
    parser.add_argument("--label", default="ci")
    parser.add_argument("--seconds", type=int)
    args = parser.parse_args(argv)
    passed, failed, skipped, parts = totals(args.reports)
    took = f" in {args.seconds} s" if args.seconds is not None else ""
    detail = f" ({', '.join(parts)})" if args.label != "ci" else ""
    print(f"{args.label}: {passed} passed, {failed} failed, {skipped} skipped{took}{detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
