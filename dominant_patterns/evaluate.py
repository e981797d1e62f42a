"""``python -m dominant_patterns.evaluate``: runs :mod:`dominant_patterns.apps.evaluate` as the main module."""

import runpy

if __name__ == "__main__":
    runpy.run_module("dominant_patterns.apps.evaluate", run_name="__main__", alter_sys=True)
