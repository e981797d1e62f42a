"""``python -m dominant_patterns.layers``: runs :mod:`dominant_patterns.apps.figure_layers` as the main module."""

import runpy

if __name__ == "__main__":
    runpy.run_module("dominant_patterns.apps.figure_layers", run_name="__main__", alter_sys=True)
