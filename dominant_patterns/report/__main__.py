"""``python -m dominant_patterns.report``: runs :mod:`dominant_patterns.apps.report` as the main module."""

import runpy

if __name__ == "__main__":
    runpy.run_module("dominant_patterns.apps.report", run_name="__main__", alter_sys=True)
