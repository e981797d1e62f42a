"""Which entry point runs which experiment: each ``conf/experiment/<name>.yaml`` names its ``app``; :data:`APPS` maps
an app to its command. The apps refuse an experiment of another app before Hydra composes anything."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from omegaconf import OmegaConf

from dominant_patterns.conf import CONFIG_DIR
from dominant_patterns.core.errors import ConfigError

#: ``app`` of a config (its entry point) -> the command that runs it.
APPS = {"run": "python -m dominant_patterns", "evaluate": "python -m dominant_patterns.evaluate",
        "layers": "python -m dominant_patterns.layers", "transfer": "python -m dominant_patterns.transfer"}


def experiment_app(name: str) -> str | None:
    """The ``app`` named by ``conf/experiment/<name>.yaml`` (None when there is no such file)."""
    path = CONFIG_DIR / "experiment" / f"{name}.yaml"
    if not path.is_file():
        return None
    return str(OmegaConf.load(path).get("app", "run"))


def check_app(app: str, experiments: Sequence[str]) -> None:
    """Refuse an experiment meant for another entry point, naming the right command."""
    for name in experiments:
        wanted = experiment_app(name)
        if wanted is not None and wanted != app:
            raise ConfigError(f"experiment={name} is meant for `{APPS.get(wanted, wanted)}` (its app: {wanted}), not "
                              f"`{APPS[app]}`. Run: {APPS.get(wanted, wanted)} experiment={name}")


def refuse_foreign_experiments(app: str, argv: Sequence[str]) -> None:
    """:func:`check_app` on the ``experiment=`` overrides of a command line, before Hydra composes anything
    (an experiment of another app may not even compose with this app's primary config). Exits with 2."""
    names = [name for arg in argv if arg.lstrip("+").startswith("experiment=")
             for name in arg.split("=", 1)[1].split(",") if name]
    try:
        check_app(app, names)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
