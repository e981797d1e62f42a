"""``python -m dominant_patterns.transfer``: runs :mod:`dominant_patterns.apps.head_transfer` as the main module."""

import runpy

if __name__ == "__main__":
    runpy.run_module("dominant_patterns.apps.head_transfer", run_name="__main__", alter_sys=True)
