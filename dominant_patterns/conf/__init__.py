"""The Hydra config tree, shipped inside the package (the repo's top-level ``conf`` is a link to this folder).

Apps find it through Hydra's package search path (:data:`CONFIG_MODULE`); a user adds configs of their own
with ``hydra.searchpath=[file:///path/to/my_conf]`` (README, "Your own configs").
"""

from pathlib import Path

CONFIG_MODULE = "dominant_patterns.conf"
#: ``pkg://`` path of the config tree, for ``hydra.main(config_path=...)``.
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
#: The folder on disk (reading one YAML file directly, e.g. an experiment's ``app:``).
CONFIG_DIR = Path(__file__).resolve().parent
