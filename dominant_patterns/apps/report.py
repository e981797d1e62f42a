"""``python -m dominant_patterns.report``: rebuild the tables and figures from the records."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from dominant_patterns.reporting import __doc__ as DOC
from dominant_patterns.reporting.build import build_report
from dominant_patterns.reporting.scorecard import build_claims, strongest_baselines, update_budget_section
from dominant_patterns.reporting.table_specs import SCALES

ROOT = Path(__file__).resolve().parents[2]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(DOC or "").split("\n\n")[0])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="root searched for metrics.json")
    parser.add_argument("--records", type=Path, nargs="*", default=[], metavar="DIR",
                        help="more roots of metrics.json, e.g. the committed experiments/<name>/records/ of long runs "
                        "(the tables and claims rebuild from them without rerunning)")
    parser.add_argument("--experiments", type=Path, default=ROOT / "experiments", help="where tables are written")
    parser.add_argument("--scale", choices=SCALES, default="embedded")
    parser.add_argument("--only", nargs="*", help="table names (default: all)")
    parser.add_argument("--claims", type=Path, metavar="PAGE", help="write the claims scorecard (docs/claims.md) "
                        "from the embedded runs instead of the tables")
    parser.add_argument("--strongest", nargs="*", default=[], help="with --claims: the baselines compared with "
                        "the dominant pattern and Cosine-UAP over seeds")
    parser.add_argument("--budget-section", action="store_true", help="with --claims: rewrite only the page's "
                        "'Verdicts by budget' section from the budget_embedded records (e.g. --records "
                        "experiments/budget_embedded/records), keeping the rest of the page")
    parser.add_argument("--print-strongest", type=int, metavar="N", help="print the N strongest baselines of the "
                        "embedded Table 3 (comma-separated) and exit")
    args = parser.parse_args(argv)
    roots = [args.outputs, *args.records]
    if args.print_strongest:
        print(",".join(strongest_baselines(roots, args.print_strongest)))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.claims and args.budget_section:
        try:
            print(update_budget_section(roots, args.claims))
        except FileNotFoundError as exc:
            parser.error(str(exc))
        print(f"claims: {args.claims} (its budget section)")
        return
    if args.claims:
        claims = build_claims(roots, args.claims, args.experiments, args.strongest)
        for c in claims:
            print(f"{c.key}: {c.verdict}")
        print(f"claims: {args.claims}")
        return
    built = build_report(roots, args.experiments, args.scale, args.only)
    for b in built:
        print(f"{b.spec.name}: {b.runs} runs -> {args.experiments / b.spec.name / (args.scale + '.md')}")
    print(f"HTML: {args.experiments / (args.scale + '.html')}")


if __name__ == "__main__":
    main()
