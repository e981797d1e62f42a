"""What an attack says about itself: the card on its class, read by the run summary, the report tables, the
claims, the embedded comparison and the dashboard (they hold no lists of attack names).

Every attack class sets ``card = AttackCard(...)``; ``describe()`` puts the card in the run's record
(``attack_info``), so a table built from records places an attack it has never heard of.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: The paper's attack types (Tables 3 and 4): what a method needs to fit.
DATA_SETTINGS = ("label-dependent", "label-free", "data-free")
#: Which data settings each paper table compares: Table 3 fits on the in-distribution set, Table 4 on proxy
#: data or none.
TABLE_SETTINGS: dict[str, tuple[str, ...]] = {
    "table3_label_dependent": ("label-dependent", "label-free"),
    "table4_proxy": ("data-free", "label-free"),
}
BUDGET_UNITS = ("epochs", "iterations", "passes")


@dataclass(frozen=True)
class AttackCard:
    """An attack's own description.

    Attributes:
        display_name: the name tables print ("SGA", "Ours (dominant pattern)").
        reference: paper, venue and year, and the code it was read from.
        year: publication year (orders table rows).
        data_setting: one of :data:`DATA_SETTINGS` (data-free methods may use fit images for validation only).
        hooks_activations: its objective reads activations inside the network, so BatchNorm is not folded.
        multi_pattern: it fits K patterns in one pass (``attack.num_patterns``).
        budget_unit: what its published budget counts (:data:`BUDGET_UNITS`).
        published_budget: the published budget in words.
        published_passes: the published budget in classifier image passes with an input gradient (None: unknown).
        published_fooling: published white-box fooling rates (%) by model, shown as labelled reference rows.
        published_source: where those numbers come from (and whether they are confirmed).
        from_description: no public code; implemented from the paper's text (tables mark it with ``*``).
        ours: the method this project is about (listed last in every table).
    """

    display_name: str
    reference: str
    year: int
    data_setting: str
    hooks_activations: bool = False
    multi_pattern: bool = False
    budget_unit: str = "iterations"
    published_budget: str = ""
    published_passes: int | None = None
    published_fooling: Mapping[str, float] = field(default_factory=dict)
    published_source: str = ""
    from_description: bool = False
    ours: bool = False

    def __post_init__(self) -> None:
        if self.data_setting not in DATA_SETTINGS:
            raise ValueError(f"data_setting={self.data_setting!r}; valid: {', '.join(DATA_SETTINGS)}")
        if self.budget_unit not in BUDGET_UNITS:
            raise ValueError(f"budget_unit={self.budget_unit!r}; valid: {', '.join(BUDGET_UNITS)}")

    def describe(self) -> dict[str, Any]:
        """The card as plain values, for ``metrics.json``."""
        out = asdict(self)
        out["published_fooling"] = dict(self.published_fooling)
        return out


def data_setting(info: Mapping[str, Any]) -> str | None:
    """A record's attack's data setting (``attack_info``): the instance's, else its card's."""
    return info.get("data_setting") or (info.get("card") or {}).get("data_setting")


def in_table(info: Mapping[str, Any], table: str) -> bool:
    """Whether a record's attack (its ``attack_info``) belongs in ``table`` (:data:`TABLE_SETTINGS`)."""
    return data_setting(info) in TABLE_SETTINGS.get(table, DATA_SETTINGS)


#: Row groups of a table, in the paper's order (Table 3: label-dependent then label-free; Table 4: data-free then
#: label-free).
GROUP_ORDER = {"data-free": 0, "label-dependent": 1, "label-free": 2}


def row_rank(info: Mapping[str, Any]) -> tuple[int, int, int, str]:
    """Sort key of a table row: by data setting (:data:`GROUP_ORDER`), then year, ours last."""
    card = info.get("card") or {}
    return (int(bool(card.get("ours"))), GROUP_ORDER.get(data_setting(info) or "", 3),
            int(card.get("year") or 9999), display_name(info))


def display_name(info: Mapping[str, Any]) -> str:
    """A record's method name for tables (``attack_info``): the instance's own, else its card's, else the key."""
    card = info.get("card") or {}
    name = str(info.get("display_name") or card.get("display_name") or info.get("name"))
    return name + (" *" if card.get("from_description") else "")
