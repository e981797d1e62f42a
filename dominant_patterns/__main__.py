"""``python -m dominant_patterns``: the fitting app (:mod:`dominant_patterns.apps.fit`)."""

from dominant_patterns.apps.fit import main

main()
