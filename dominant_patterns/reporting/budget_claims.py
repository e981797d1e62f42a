"""Claims 1-3 at two budgets: the same rules on the same runs, read from their anytime curves at about 2k image
passes (the embedded scorecard's budget) and at the large one, so that only the budget differs.

The runs are those of ``make budget-embedded`` (EfficientNet-Lite0 on the photo pool; the dominant pattern to 64k
passes, every baseline to 16k). A record "at N passes" is its record with the metrics of its first curve point at
or after N (its noise floors are the final ones: they do not depend on the fit). Claims 1 and 2 (the dominant pattern
alone) are judged at 2k and 64k passes, claim 3 (against the baselines) at 2k and 16k, the largest budget every
method ran.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from dominant_patterns.attacks.catalog import attack_catalog, attack_label
from dominant_patterns.reporting.claim_data import MAKE_CLAIMS, UNTESTABLE, Claim
from dominant_patterns.reporting.claims import baselines, claim_baselines, claim_existence, claim_loss
from dominant_patterns.runs.display import LOSS_NAMES
from dominant_patterns.runs.records import Roots, attack_info, read_records, record_to_row

TASK = "budget_embedded"
FIT_SET = "photo_pool"
SMALL = 2000
#: The budget of each run of the experiment (``experiment=budget_embedded_ours`` / ``_baselines``).
RUN_BUDGET = {"ours": 64000, "baselines": 16000}
#: The large budget of each claim (claims 1-2: ours to its budget; claim 3: every method to the baselines' one).
LARGE = {"existence": RUN_BUDGET["ours"], "loss": RUN_BUDGET["ours"], "baselines": RUN_BUDGET["baselines"]}
#: The heading of the claims page's section written by :func:`budget_section`.
BUDGET_HEADING = "## Verdicts by budget"
CURVE_KEYS = ("fooling_rate", "dominance_ratio", "top1_ratio", "top3_ratio", "top5_ratio", "dominant_class",
              "dominant_class_name", "dominant_confidence")


def stopped_itself(record: dict[str, Any]) -> bool:
    """The fit finished before its budget: the method's own stopping rule ended it (under ``trainer.budget`` the
    budget replaces epochs and iteration caps), so more passes would not have changed its result."""
    info = attack_info(record)
    budget = RUN_BUDGET["ours" if info.get("card", {}).get("ours") else "baselines"]
    return record.get("status") == "finished" and 0 < info.get("passes", 0) < budget


def point_at(record: dict[str, Any], passes: int) -> tuple[dict[str, Any] | None, bool]:
    """The curve's first point at or after ``passes``; for a method that stopped itself before ``passes``, its
    returned pattern's metrics at the passes it spent (then True)."""
    point = next((p for p in record.get("curve") or [] if p["passes"] >= passes), None)
    if point is None and stopped_itself(record):
        return {**record["metrics"], "passes": attack_info(record)["passes"]}, True
    return point, False


def at_passes(records: Sequence[tuple[Any, dict[str, Any]]], passes: int) -> pd.DataFrame:
    """One row per record that reached ``passes`` (or stopped itself before), its metrics those of
    :func:`point_at`."""
    rows = []
    for path, record in records:
        point, stopped = point_at(record, passes)
        if point is None:
            continue
        row = record_to_row(record, path)
        row.update({k: point[k] for k in CURVE_KEYS if k in point}, curve_passes=point["passes"], stopped=stopped)
        rows.append(row)
    return pd.DataFrame(rows)


def budget_claims(roots: Roots) -> list[tuple[str, Claim, Claim]]:
    """(claim key, verdict at :data:`SMALL` passes, verdict at its large budget) for claims 1-3."""
    records = read_records(roots, [TASK])
    builders: dict[str, Callable[[pd.DataFrame], Claim]] = {
        "existence": lambda df: claim_existence(df, FIT_SET),
        "loss": lambda df: claim_loss(df, FIT_SET),
        "baselines": lambda df: claim_baselines(df, FIT_SET, FIT_SET),
    }
    out = []
    for key, build in builders.items():
        small, large = at_passes(records, SMALL), at_passes(records, LARGE[key])
        out.append((key, build(small), build(large)))
    return out


def seeds_of(df: pd.DataFrame) -> int:
    return int(df["seed"].nunique()) if not df.empty and "seed" in df.columns else 0


def budget_section(roots: Roots, three_seed: Mapping[str, str]) -> list[str]:
    """The scorecard's section: each claim's verdict at 2k passes, at the large budget and over three seeds
    (``three_seed``: the scorecard's verdict by claim title)."""
    records = read_records(roots, [TASK])
    if not records:
        return [BUDGET_HEADING, "", "No `budget_embedded` records yet (`make budget-embedded`).", ""]
    n = seeds_of(at_passes(records, SMALL))
    lines = [BUDGET_HEADING, "",
             f"The same rules, on the runs of `make budget-embedded` (EfficientNet-Lite0, photo pool, n = {n} seed), "
             "read "
             f"from each run's anytime curve at {SMALL:,} image passes (the embedded scorecard's budget: 640 crops x 3 "
             "epochs) and at the large budget, so that only the budget differs; the third column is the scorecard's "
             "verdict above (photo crops, n = 3 seeds, embedded budget).", "",
             "| claim | ~2k passes | large budget | embedded scorecard (n = 3) | does the verdict depend on the "
             "budget? |",
             "|---|---|---|---|---|"]
    verdicts = budget_claims(roots)
    for key, small, large in verdicts:
        base = three_seed.get(small.title)
        depends = ("not known yet (runs missing at one budget)" if UNTESTABLE in (small.verdict, large.verdict)
                   else "no" if small.verdict == large.verdict else
                   f"yes: {small.verdict} at {SMALL // 1000}k, {large.verdict} at {LARGE[key] // 1000}k")
        lines.append(f"| {small.title} | {small.verdict} (n = {n}) | {large.verdict} at {LARGE[key] // 1000}k "
                     f"(n = {n}) | {base or '-'} (n = 3) | {depends} |")
    lines += ["", *coverage(records), ""]
    for key, small, large in verdicts:
        lines += [f"### {small.title}: at {SMALL:,} passes", "", untested_hint(small.detail), "",
                  f"### {large.title}: at {LARGE[key]:,} passes", "", untested_hint(large.detail), ""]
    return lines


def untested_hint(detail: str) -> str:
    """A claim's detail with this section's command in its "no records" hint."""
    return detail.replace(f"`{MAKE_CLAIMS}`", "`make budget-embedded`")


def run_label(attack: str, loss: Any) -> str:
    return f"{attack_label(attack)} ({LOSS_NAMES.get(loss, loss)})" if attack_catalog()[attack]["card"]["ours"] \
        else attack_label(attack)


def coverage(records: Sequence[tuple[Any, dict[str, Any]]]) -> list[str]:
    """Which runs reached each budget, and the baselines of Tables 3/4 that claim 3 at 16k still lacks: a verdict
    over some of the baselines can change when the others finish."""
    lines = []
    frames = {passes: at_passes(records, passes) for passes in sorted({SMALL, *LARGE.values()})}
    for passes, df in frames.items():
        runs = sorted({run_label(a, loss) + (" (stopped itself earlier: its returned pattern)" if stop else "")
                       for a, loss, stop in zip(df.get("attack", []), df.get("loss", []), df.get("stopped", []),
                                                strict=True)})
        lines.append(f"- Runs that reached {passes:,} passes: {', '.join(runs) or 'none'}.")
    expected = dict.fromkeys([*baselines("table3_label_dependent"), *baselines("table4_proxy")])
    done = set(frames[LARGE["baselines"]].get("attack", []))
    missing = [attack_label(a) for a in expected if a not in done]
    if missing:
        lines.append(f"- Claim 3 at {LARGE['baselines'] // 1000}k compares with {len(expected) - len(missing)} of the "
                     f"{len(expected)} baselines; not run to that budget yet: {', '.join(missing)}. Its verdict can "
                     "change when they are.")
    return lines
