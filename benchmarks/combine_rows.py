"""One report from a compare's results.json and the rows of ``baselines`` runs.

A compare of searches and a ``baselines`` run of tuned static merges on the same study (same
dev and test samples) write rows of one format; this puts them in one table, with the
compare's ranking, confidence intervals and paired tests, and writes ``report.md`` and
``results.json`` into OUT. Rows the compare already has (same kind and name) are not added
twice.

    python benchmarks/combine_rows.py runs/compare/results.json runs/baselines.json \\
        --out runs/combined --title "multitask-8 (layer, tsv_m form, dev 200)"
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from evolver_opt.cli.compare import baseline_notes
from evolver_opt.reports.report import rows_from_json, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare", type=Path, help="the compare's results.json")
    parser.add_argument("baselines", type=Path, nargs="+", help="baselines JSON files")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--title", required=True)
    parser.add_argument("--storage", default=None, help="the compare's storage (pictures)")
    args = parser.parse_args()
    _, rows = rows_from_json(args.compare)
    seen = {(r.kind, r.name, r.seed) for r in rows}
    for path in args.baselines:
        for row in rows_from_json(path)[1]:
            if (row.kind, row.name, row.seed) not in seen:
                rows.append(row)
                seen.add((row.kind, row.name, row.seed))
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    report = write_report(
        rows, args.out, title=args.title, command=command, notes=baseline_notes(rows),
        storage=args.storage,
    )  # fmt: skip
    print(report.read_text())


if __name__ == "__main__":
    main()
