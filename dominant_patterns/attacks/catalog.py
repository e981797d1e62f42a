"""Every attack the configs name (``conf/attack/<name>.yaml`` -> its class by ``_target_``) and what its card
says; for the places that need attacks without records (a table's empty rows, the claims' baselines).

A table built from records needs none of this: each record carries its attack's card (``attack_info.card``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import OmegaConf

from dominant_patterns.attacks.card import TABLE_SETTINGS, display_name, row_rank
from dominant_patterns.conf import CONFIG_DIR


@lru_cache(maxsize=4)
def attack_catalog(config_dir: Path = CONFIG_DIR) -> dict[str, dict[str, Any]]:
    """``name -> {"name", "display_name", "data_setting", "card"}`` for each ``attack/*.yaml`` of ``config_dir``,
    in table order (:func:`card.row_rank`)."""
    found = {}
    for path in sorted((config_dir / "attack").glob("*.yaml")):
        cfg = OmegaConf.load(path)
        cls = get_class(str(cfg["_target_"]))
        card = cls.card.describe()
        found[str(cfg.get("name", path.stem))] = {"name": str(cfg.get("name", path.stem)), "card": card,
                                                  "display_name": card["display_name"],
                                                  "data_setting": card["data_setting"]}
    return dict(sorted(found.items(), key=lambda item: row_rank(item[1])))


def attack_label(name: str) -> str:
    """The display name of the attack a config calls ``name`` (``name`` itself when no config has it)."""
    info = attack_catalog().get(name)
    return display_name(info) if info else name


def table_attacks(table: str) -> list[str]:
    """The attacks a paper table compares (by their data setting, :data:`card.TABLE_SETTINGS`), in row order."""
    settings = TABLE_SETTINGS[table]
    return [name for name, info in attack_catalog().items() if info["data_setting"] in settings]
