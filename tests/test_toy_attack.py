"""Adding an attack is one module and one config: a toy attack written here into a temporary module, registered
only through a config folder on Hydra's search path, runs through the app and shows up in the embedded comparison
table and in a report table, without any other file of the project knowing its name."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from conftest import CONF, app_env

from dominant_patterns.reporting.build import build_table
from dominant_patterns.reporting.table_specs import TABLES
from dominant_patterns.runs.records import load_records

TOY_MODULE = '''
"""A toy universal attack: push the perturbed logits away from the clean ones."""
from typing import ClassVar

from dominant_patterns.attacks.base import GradientAttack
from dominant_patterns.attacks.card import AttackCard


class ToyAttack(GradientAttack):
    name: ClassVar[str] = "toy"
    card: ClassVar[AttackCard] = AttackCard("Toy UAP", "a test's own attack", 2026, "label-free",
                                            budget_unit="epochs", published_budget="3 epochs",
                                            published_passes=300)

    def loss(self, x, delta):
        return -(self.model(self.apply(x, delta)) - self.model(x).detach()).norm(dim=1).mean()
'''
TOY_CONFIG = "_target_: toy_attack.ToyAttack\nname: toy\nlr: 0.01\n"


def test_a_toy_attack_registered_by_config_only_reaches_the_tables(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "toy_attack.py").write_text(TOY_MODULE)
    (tmp_path / "my_conf" / "attack").mkdir(parents=True)
    (tmp_path / "my_conf" / "attack" / "toy.yaml").write_text(TOY_CONFIG)
    env = {**app_env(tmp_path), "PYTHONPATH": str(tmp_path / "code")}
    proc = subprocess.run(
        [sys.executable, "-m", "dominant_patterns", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "attack=toy",
         "model=tiny", "dataset=photos", "dataset.num_fit=32", "dataset.num_eval=16", "trainer.epochs=1",
         "trainer.batch_size=8", "logger=none", "trainer.progress=false", "task_name=table3_embedded",
         f"hydra.run.dir={tmp_path / 'outputs' / 'table3_embedded' / 'toy'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| toy " in proc.stdout  # the run summary names the attack by its config

    spec = importlib.util.spec_from_file_location("compare", CONF.parent / "experiments/compare_embedded/run.py")
    assert spec is not None and spec.loader is not None
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    row = next(line for line in compare.table(compare.load_records(tmp_path / "outputs")).splitlines()
               if line.startswith("| Toy UAP |"))
    assert "| fit crops |" in row and "| 32 (11% of 300) |" in row and "| 1 epochs |" in row  # 4 steps x 8 rows

    table3 = next(s for s in TABLES if s.name == "table3_label_dependent")
    built = build_table(load_records(tmp_path / "outputs"), table3, "embedded", tmp_path / "experiments")
    assert built.runs == 1 and "ours: Toy UAP" in built.table.index
    assert "Toy UAP" in (tmp_path / "experiments" / "table3_label_dependent" / "embedded.md").read_text()
