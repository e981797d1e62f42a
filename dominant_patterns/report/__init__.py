"""``python -m dominant_patterns.report``: the report app (:mod:`dominant_patterns.apps.report`); the tables, figures
and claims it builds are in :mod:`dominant_patterns.reporting`."""
