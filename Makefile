# dominant-patterns: `make demo` runs the embedded default, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# glibc's malloc returns freed buffers to the OS every step, which made the CPU loop ~5x slower.
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 100000000000
ARGS ?=

.PHONY: help venv demo test test-all lint clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

venv: $(VENV)/.installed  ## create .venv and install the package with its pinned deps

demo: venv  ## the main job on the embedded default (EfficientNet-Lite0 + scikit-image photos, CPU)
	$(PY) -m dominant_patterns $(ARGS)

test: venv  ## fast tests (no slow, no GPU)
	$(PY) -m pytest -q -m "not slow and not gpu" $(ARGS)

test-all: venv  ## every test, slow ones included
	$(PY) -m pytest -q $(ARGS)

lint: venv  ## ruff
	$(VENV)/bin/ruff check dominant_patterns tests experiments scripts

.PHONY: compare-embedded
compare-embedded: venv  ## dominant pattern vs every baseline on the embedded default -> experiments/compare_embedded/README.md
	nice -n 5 $(PY) experiments/compare_embedded/run.py $(ARGS)

.PHONY: bench
bench: venv  ## fit/eval images/s: naive loop vs ours (fp32, bf16), roofline, demo fit BN unfolded vs folded -> experiments/bench/<device>.md
	$(PY) experiments/bench_throughput.py $(ARGS)

.PHONY: gpu-check
gpu-check: venv  ## one GPU check, <= 6 min on an H100/H200 -> experiments/bench/<gpu>.md (ARGS=--quick: CPU smoke run)
	$(PY) experiments/gpu_check.py $(ARGS)

.PHONY: cluster-check
cluster-check: venv  ## hydra/launcher=slurm on a one-node SLURM cluster here (root; ~8 min) -> experiments/cluster/README.md
	nice -n $${NICE:-10} $(PY) experiments/cluster_check.py $(ARGS)

clean:  ## remove outputs and caches (keeps .venv)
	rm -rf outputs .pytest_cache .ruff_cache

# ---------------------------------------------------------------------------------------------
# Paper experiments (docs/experiments.md). Full scale: the paper's models and data (set
# paths.data_dir / dataset.root; a GPU), sequential by default; ARGS="hydra/launcher=parallel" runs the
# grid with joblib, ARGS="hydra/launcher=slurm" on a cluster. ARGS="debug=fast" makes any of them a smoke run.
# An experiment runs through the entry point its config names (`app:` in conf/experiment/NAME.yaml).
app_of = $(or $(shell sed -n 's/^app: *\([a-z_]*\).*/\1/p' conf/experiment/$(1).yaml),run)
experiment = $(PY) -m dominant_patterns$(if $(filter-out run,$(call app_of,$(1))),.$(call app_of,$(1))) experiment=$(1)
EMBEDDED_ARGS ?= logger=none
SCALE ?= embedded
.PHONY: table1 table2 table3 table4 table5 table6 tableA1 fig3 fig4 fig5 transfer-matrix targeted \
	paper-full fashion-mnist paper-embedded report

table1: venv  ## Table 1: CoS vs ED vs KLD (VGG19, ImageNet)
	$(call experiment,table1_loss) $(ARGS)
table2: venv  ## Table 2 / A.2, Figures 2 / A.1: patterns of 4 backbones x ImageNet/COCO/BigGAN
	$(call experiment,table2_patterns) $(ARGS)
table3: venv  ## Table 3: fooling rates, attacks fitted on ImageNet, 7 backbones
	$(call experiment,table3_label_dependent) $(ARGS)
table4: venv  ## Table 4: fooling rates with proxy data (COCO, BigGAN)
	$(call experiment,table4_proxy) $(ARGS)
table5: venv  ## Table 5: top-k ratios on VGG19
	$(call experiment,table5_topk) $(ARGS)
table6: venv  ## Table 6: VGG19 pattern vs a new CIFAR-10 head on the frozen backbone (after table2)
	$(call experiment,table6_transfer) $(ARGS)
tableA1: venv  ## Table A.1: 7 backbones x 3 fit sets x 3 seeds
	$(call experiment,tableA1_seeds) $(ARGS)
fig3: venv  ## Figure 3: per-layer SSIM, one image (after table2)
	$(call experiment,fig3_layers) $(ARGS)
fig4: venv  ## Figure 4: per-layer SSIM, mean +- std over the eval set (after table2)
	$(call experiment,fig4_layers) $(ARGS)
fig5: venv  ## Figure 5: adversarial example grids, 7 backbones
	$(call experiment,fig5_examples) $(ARGS)
transfer-matrix: venv  ## each backbone's pattern on every backbone (after tableA1)
	$(call experiment,transfer_matrix) $(ARGS)
targeted: venv  ## a chosen dominant class, five classes (VGG19)
	$(call experiment,targeted) $(ARGS)

paper-full: table1 table2 table3 table4 table5 tableA1 fig5 targeted table6 fig3 fig4 transfer-matrix  ## all full-scale experiments
	$(MAKE) report SCALE=full

fashion-mnist:  ## Debian's dataset-fashion-mnist when missing (else torchvision downloads it at first use)
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \
	|| { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } \
	|| echo "Fashion-MNIST: apt-get unavailable; torchvision will download it"

# Embedded scale on CPU: EfficientNet-Lite0/1/2, photo crops, a synthetic proxy set, Fashion-MNIST.
# Patterns are shared where the paper shares them: Table 1's CoS fits on photos are the source patterns
# of Figures 3-4 and Table 6, and with Table 2's of the transfer matrix.
paper-embedded: venv fashion-mnist  ## every table and figure at the embedded scale (CPU, 2 shared cores)
	@mkdir -p outputs; start=$$(date +%s); failed=""; \
	run() { echo "[paper-embedded] $$*"; nice -n $${NICE:-0} "$$@" $(EMBEDDED_ARGS) $(ARGS) || failed="$$failed|$$*"; }; \
	run $(call experiment,table1_loss_embedded); \
	run $(call experiment,table2_patterns_embedded); \
	run $(call experiment,fig4_layers_embedded); \
	run $(call experiment,fig3_layers_embedded); \
	run $(call experiment,table6_transfer_embedded); \
	run $(call experiment,table3_label_dependent_embedded); \
	run $(call experiment,table4_proxy_embedded); \
	run $(call experiment,transfer_matrix_embedded); \
	run $(call experiment,tableA1_seeds_embedded); \
	run $(call experiment,targeted_embedded); \
	echo "paper-embedded: $$(( $$(date +%s) - start )) s wall" | tee outputs/paper_embedded_wall_time.txt; \
	if [ -n "$$failed" ]; then echo "paper-embedded: failed steps (the others finished):$$failed" | tr '|' '\n' >&2; exit 1; fi

report: venv  ## tables (Markdown + LaTeX), figures and experiments/$(SCALE).html from outputs/**/metrics.json
	$(PY) -m dominant_patterns.report --scale $(SCALE) $(REPORT_ARGS)

# The claims scorecard (docs/claims.md): the embedded runs each claim needs, most needed first, so a
# run stopped early still answers the first claims; the stable sweep dirs make a rerun skip finished
# jobs and resume the interrupted one. Lite1/Lite2 seeds 1, 2, KLLoss on them and their xi = 16/255 come last.
LITE0 := model=efficientnet_lite0
claims: venv fashion-mnist  ## the runs behind docs/claims.md (embedded, CPU), then the scorecard
	@mkdir -p outputs; start=$$(date +%s); failed=""; \
	run() { echo "[claims] $$*"; nice -n $${NICE:-0} "$$@" $(EMBEDDED_ARGS) $(ARGS) || failed="$$failed|$$*"; }; \
	run $(call experiment,table1_loss_embedded) $(LITE0); \
	run $(call experiment,table3_label_dependent_embedded); \
	run $(call experiment,table4_proxy_embedded); \
	run $(call experiment,tableA1_seeds_embedded) $(LITE0); \
	run $(call experiment,fig4_layers_embedded) $(LITE0); \
	run $(call experiment,table6_transfer_embedded) $(LITE0); \
	run $(call experiment,claims_xi_embedded) $(LITE0) seed=0 loss=cos,ed; \
	run $(call experiment,claims_baselines_embedded) "+method=cosine_uap,$$($(PY) -m dominant_patterns.report --print-strongest 2 | tr ' ' ',')"; \
	run $(call experiment,table1_loss_embedded) model=efficientnet_lite1,efficientnet_lite2 seed=0 loss=cos,ed; \
	run $(call experiment,claims_xi_embedded) model=efficientnet_lite1,efficientnet_lite2 seed=0 loss=cos,ed xi=0.08627450980392157; \
	run $(call experiment,table1_loss_embedded); \
	run $(call experiment,tableA1_seeds_embedded); \
	run $(call experiment,fig4_layers_embedded); \
	run $(call experiment,table6_transfer_embedded); \
	run $(call experiment,claims_xi_embedded) $(LITE0) seed=0,1,2; \
	run $(call experiment,claims_xi_embedded) model=efficientnet_lite1,efficientnet_lite2 seed=0; \
	echo "claims: $$(( $$(date +%s) - start )) s wall" | tee outputs/claims_wall_time.txt; \
	$(MAKE) --no-print-directory claims-report; \
	if [ -n "$$failed" ]; then echo "claims: failed steps (the others finished):$$failed" | tr '|' '\n' >&2; exit 1; fi

claims-report: venv  ## docs/claims.md + experiments/claims/* from the records under outputs/ (after make claims)
	$(PY) -m dominant_patterns.report --claims docs/claims.md --strongest $$($(PY) -m dominant_patterns.report --print-strongest 2 | tr "," " ")

.PHONY: budget-embedded
budget-embedded: venv  ## EfficientNet-Lite0 on the photo pool: ours (CoS/ED/KLD) to 64k passes, every baseline to 16k, with anytime curves (hours, CPU) -> experiments/budget_embedded/
	$(PY) experiments/budget_embedded/run.py --restore
	nice -n $${NICE:-10} $(call experiment,budget_embedded_ours) $(EMBEDDED_ARGS) $(ARGS)
	nice -n $${NICE:-10} $(call experiment,budget_embedded_baselines) $(EMBEDDED_ARGS) $(ARGS)
	$(PY) experiments/budget_embedded/run.py
	$(PY) -m dominant_patterns.report --claims docs/claims.md --budget-section --records experiments/budget_embedded/records

.PHONY: claims claims-report sweep-embedded dashboard report-check
sweep-embedded: venv  ## EfficientNet-Lite0/1/2 x photos/synthetic x ED/CoS: the offline miniature of the 7 x 3 sweep (12 jobs, CPU)
	nice -n $${NICE:-0} $(call experiment,sweep_embedded) $(EMBEDDED_ARGS) $(ARGS)

dashboard: venv  ## W&B workspace with one section per paper table (logger.entity/project; DASHBOARD_ARGS="--dry-run" writes the spec only)
	$(PY) -m dominant_patterns.dashboard $(DASHBOARD_ARGS)

report-check: venv  ## render experiments/$(SCALE).html in headless Chromium: every table and image loads; screenshot
	$(PY) -m dominant_patterns.report.browser_check experiments/$(SCALE).html --screenshot experiments/report_screenshot.png
