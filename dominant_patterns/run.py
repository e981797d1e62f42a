"""``python -m dominant_patterns``: runs :mod:`dominant_patterns.apps.fit` as the main module."""

import runpy

if __name__ == "__main__":
    runpy.run_module("dominant_patterns.apps.fit", run_name="__main__", alter_sys=True)
