"""Rebuilding the paper's tables and figures from the runs' ``metrics.json`` records (the report app,
``python -m dominant_patterns.report``, is :mod:`dominant_patterns.apps.report`).

    python -m dominant_patterns.report                 # embedded scale (tasks named <task>_embedded)
    python -m dominant_patterns.report --scale full    # the full-scale tasks (table1, table2, ...)

Every ``metrics.json`` under ``--outputs`` becomes one DataFrame row. Reruns of the same cell
(same kind, model, data, loss, attack, target class, xi and seed) keep only the newest record;
seeds are then averaged (mean +- std). Each table is written in the paper's layout as Markdown
and LaTeX under ``experiments/<table>/<scale>.md|.tex``, with the published numbers of
``experiments/<table>/paper.csv`` as labeled reference rows, its figures as PNG, and one static
HTML page (``experiments/<scale>.html``) shows everything.
"""

from dominant_patterns.reporting.build import build_report, build_table
from dominant_patterns.reporting.render import BuiltTable
from dominant_patterns.reporting.table_specs import TABLES, TableSpec
from dominant_patterns.reporting.tables import MISSING, pivot

__all__ = ["MISSING", "TABLES", "BuiltTable", "TableSpec", "build_report", "build_table", "pivot"]
