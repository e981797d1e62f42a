"""One specification per paper table: which tasks feed it, its rows, columns, values and figure.

Adding a table touches this file only (plus its experiment config). A table's ``kind`` (the app whose
records it reads) is the ``app`` its experiment config names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dominant_patterns.attacks.catalog import table_attacks
from dominant_patterns.runs.app_index import experiment_app


@dataclass
class TableSpec:
    """How one paper table is rebuilt from the records.

    Args:
        name: folder under ``experiments/`` (the experiment config's name).
        tasks: task names whose runs feed the table (embedded scale appends ``_embedded``).
        filters: per scale, column -> allowed values.
    """

    name: str
    title: str
    tasks: list[str]
    rows: list[str]
    cols: list[str]
    values: list[str]
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    row_order: dict[str, list[Any]] = field(default_factory=dict)
    col_order: dict[str, list[Any]] = field(default_factory=dict)
    corner: str = ""
    figure: str | None = None
    #: The paper table whose methods (by their cards' data settings) order the ``attack`` rows or columns.
    attacks_of: str | None = None

    def orders(self, scale: str) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """Row and column orders at ``scale``, with the backbones (``model``, ``source_model``) in that scale's
        order (:data:`SCALE_MODELS`); at the embedded scale an order only sorts (missing models are not filled)."""
        rows, cols = dict(self.row_order), dict(self.col_order)
        for order, keys in ((rows, self.rows), (cols, self.cols)):
            for key in MODEL_KEYS:
                if key in order or (scale != "full" and key in keys):
                    order[key] = list(SCALE_MODELS[scale])
            if self.attacks_of and "attack" in keys:
                order["attack"] = table_attacks(self.attacks_of)
        return rows, cols

    @property
    def kind(self) -> str:
        """The app whose records feed the table: the ``app`` of ``conf/experiment/<name>.yaml``."""
        return experiment_app(self.name) or "run"


SCALES = ("embedded", "full")
PAPER_MODELS = ["alexnet", "googlenet", "vgg16", "vgg19", "resnet50", "resnet152", "densenet121"]
#: The embedded ImageNet backbones (PyPI wheels, offline), smallest first.
EMBEDDED_MODELS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
#: The backbone order of each scale: columns of Tables 2-4 and A.1, rows of Table 1, both transfer-matrix axes.
SCALE_MODELS = {"full": PAPER_MODELS, "embedded": EMBEDDED_MODELS}
MODEL_KEYS = ("model", "source_model")
UNTARGETED = {"attack": "dominant", "loss": "cos", "loss_layer": "logits", "target_class": None}

TABLES: list[TableSpec] = [
    TableSpec("table1_loss", "Table 1: dominance ratio (%) by similarity loss", ["table1"],
              rows=["model", "dataset"], cols=["loss"],
              values=["dominance_ratio", "dominant_confidence", "top1_ratio", "fooling_rate"],
              filters={"full": {"attack": "dominant", "target_class": None},
                       "embedded": {"attack": "dominant", "target_class": None}},
              col_order={"loss": ["cos", "ed", "kld"]}, corner="model · fit set"),
    TableSpec("table2_patterns", "Table 2 / A.2: dominant class, confidence and dominance ratio",
              ["table2", "table1", "tableA1"], rows=["dataset"], cols=["model"],
              values=["dominant_class_name", "dominant_confidence", "dominance_ratio"],
              filters={"full": {**UNTARGETED, "seed": 0}, "embedded": {**UNTARGETED, "seed": 0}},
              row_order={"dataset": ["imagenet", "coco", "biggan", "photos", "fashion_mnist", "synthetic"]},
              col_order={"model": PAPER_MODELS}, corner="fit set", figure="patterns"),
    TableSpec("table3_label_dependent", "Table 3: fooling rate (%), attacks fitted on the in-distribution set",
              ["table3", "table1", "table2"], rows=["attack"], cols=["model"], values=["fooling_rate"],
              filters={"full": {"dataset": "imagenet", "loss": "cos", "target_class": None},
                       "embedded": {"dataset": "photos", "loss": "cos", "target_class": None}},
              col_order={"model": PAPER_MODELS}, corner="method", attacks_of="table3_label_dependent"),
    TableSpec("table4_proxy", "Table 4: fooling rate (%) with proxy data (data-free / label-free)",
              ["table4", "table2", "tableA1"], rows=["attack", "dataset"], cols=["model"], values=["fooling_rate"],
              filters={"full": {"dataset": ["coco", "biggan"], "loss": "cos", "target_class": None},
                       "embedded": {"dataset": ["fashion_mnist", "synthetic"], "loss": "cos", "target_class": None}},
              col_order={"model": PAPER_MODELS}, corner="method · proxy set", attacks_of="table4_proxy"),
    TableSpec("table5_topk", "Table 5: top-k ratios (%) of each attack", ["table5", "table3", "table1"],
              rows=["model"], cols=["attack"], values=["top1_ratio", "top3_ratio", "top5_ratio"],
              filters={"full": {"model": "vgg19", "dataset": "imagenet", "loss": "cos", "target_class": None},
                       "embedded": {"dataset": "photos", "loss": "cos", "target_class": None}},
              corner="model · top-k", attacks_of="table3_label_dependent"),
    TableSpec("table6_transfer", "Table 6: the ImageNet pattern against a new head on the frozen backbone",
              ["table6"], rows=["model", "dataset"], cols=[],
              values=["head_accuracy", "dominant_class_name", "dominant_confidence", "fooling_rate",
                      "dominance_ratio", "cos_loss_features", "adv_accuracy"],
              corner="backbone · downstream task"),
    TableSpec("tableA1_seeds", "Table A.1: fooling rate (%), mean ± std over seeds",
              ["tableA1", "table2", "table1", "table3", "fig5"], rows=["dataset"], cols=["model"],
              values=["fooling_rate"], filters={"full": dict(UNTARGETED), "embedded": dict(UNTARGETED)},
              row_order={"dataset": ["imagenet", "coco", "biggan", "photos", "fashion_mnist", "synthetic"]},
              col_order={"model": PAPER_MODELS}, corner="fit set"),
    TableSpec("fig3_layers", "Figure 3: per-layer SSIM for one image", ["fig3"],
              rows=["model", "dataset"], cols=[], values=["ssim_pattern_last", "ssim_image_last", "takeover_layer",
                                                          "num_layers"], figure="fig3"),
    TableSpec("fig4_layers", "Figure 4: per-layer SSIM, mean ± std over the evaluation set", ["fig4"],
              rows=["model", "dataset"], cols=[],
              values=["ssim_pattern_last", "ssim_image_last", "takeover_layer", "num_layers", "num_images"],
              figure="fig4"),
    TableSpec("fig5_examples", "Figure 5: adversarial examples (dominance ratio %, dominant class)",
              ["fig5", "table2", "table1"], rows=["model"], cols=[], values=["dominant_class_name", "dominance_ratio"],
              filters={"full": {**UNTARGETED, "dataset": "imagenet", "seed": 0},
                       "embedded": {**UNTARGETED, "dataset": "photos", "seed": 0}},
              figure="examples"),
    TableSpec("transfer_matrix", "Transfer matrix: fooling rate (%) of each source pattern on each target",
              ["transfer_matrix"], rows=["source_model", "source_dataset"],
              cols=["model", "dataset"], values=["fooling_rate", "dominance_ratio"],
              corner="pattern (source model · fit set)", figure="matrix"),
    TableSpec("sweep", "Backbones x fit sets sweep: the dominant pattern per loss",
              ["sweep"], rows=["model", "dataset"], cols=["loss"],
              values=["dominant_class_name", "dominance_ratio", "fooling_rate"],
              filters={"full": {"attack": "dominant", "target_class": None},
                       "embedded": {"attack": "dominant", "target_class": None}},
              row_order={"dataset": ["imagenet", "coco", "biggan", "photos", "fashion_mnist", "synthetic"]},
              col_order={"loss": ["cos", "ed"]}, corner="model · fit set"),
    TableSpec("targeted", "Targeted: dominance ratio (%) per chosen class vs the untargeted pattern",
              ["targeted", "table1"], rows=["target_class"], cols=["model"],
              values=["dominant_class_name", "dominant_confidence", "dominance_ratio"],
              filters={"full": {"attack": "dominant", "loss": "cos", "dataset": "imagenet"},
                       "embedded": {"attack": "dominant", "loss": "cos", "dataset": "photos"}},
              corner="target class", figure="targeted"),
]


def task_names(spec: TableSpec, scale: str) -> list[str]:
    return [f"{t}_embedded" if scale == "embedded" else t for t in spec.tasks]
