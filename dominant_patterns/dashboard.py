"""``python -m dominant_patterns.dashboard``: runs :mod:`dominant_patterns.apps.dashboard` as the main module."""

import runpy

if __name__ == "__main__":
    runpy.run_module("dominant_patterns.apps.dashboard", run_name="__main__", alter_sys=True)
