"""``python -m dominant_patterns.report.browser_check``: runs :mod:`dominant_patterns.apps.report_check`."""

import runpy

if __name__ == "__main__":
    runpy.run_module("dominant_patterns.apps.report_check", run_name="__main__", alter_sys=True)
