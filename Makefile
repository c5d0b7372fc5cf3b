# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
OUT    ?= runs/demo

REAL   ?= ../shared/data/zheng2018-dataset1

.PHONY: demo publish-demo reference libraries publish-real readme real test bench chromium lint example-plugin clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]'
	touch $@

# The main job: train the zoo on first use (cached in $$WBC_ROBUST_HOME), attack every model with
# FGSM and PGD at 2/255 (the adversarially trained models' budget) and 8/255 on the in-distribution
# test split (where the leaderboard reads robust accuracy), score the OOD split clean, and print the
# leaderboard.
demo: $(VENV)/.installed
	$(BIN)/wbc-robust run --models all --splits synth:test --attacks fgsm,pgd --eps 2/255,8/255 --out $(OUT)
	$(BIN)/wbc-robust run --models all --splits synth:ood-lab-b --attacks none --out $(OUT)
	$(BIN)/wbc-robust leaderboard --out $(OUT) --write $(OUT)/LEADERBOARD.md

# What the README's demo section quotes: the demo's table, published from a clean checkout (`make demo` first).
publish-demo: $(VENV)/.installed
	$(BIN)/wbc-robust publish --out $(OUT) --to results/demo --command "make demo"
	$(BIN)/python -m robustbench_wbc.report.readme

# The reference run, regenerated from one commit (a clean checkout): the profile's matrix (every zoo model at
# training seeds 0-2, see robustbench_wbc/bench/profiles.py) into a fresh store, published into results/reference
# with the tables, figures and report rendered from it, then every README section that quotes it. Hours on 2 cores.
REFERENCE_OUT ?= runs/reference
reference: $(VENV)/.installed
	$(BIN)/wbc-robust run --profile reference --out $(REFERENCE_OUT)
	$(BIN)/wbc-robust publish --out $(REFERENCE_OUT) --to results/reference --command "make reference"
	$(BIN)/wbc-robust leaderboard --out results/reference --write results/reference/LEADERBOARD.md > /dev/null
	$(BIN)/wbc-robust leaderboard --out results/reference --shift --write results/reference/SHIFT.md > /dev/null
	$(BIN)/wbc-robust leaderboard --out results/reference --cross-task --write results/reference/CROSS_TASK.md > /dev/null
	$(BIN)/wbc-robust show figures --out results/reference --to results/reference/figures
	$(BIN)/wbc-robust show segmentation --out results/reference/figures/segmentation.png
	$(BIN)/wbc-robust report --results results/reference
	$(BIN)/python -m robustbench_wbc.report.readme

# The libraries against each other (the README's table): the suite's PGD, torchattacks' and ART's on the
# same models and images, with FGSM and AutoAttack-fast, on the class head; and on the masks, SegPGD against
# PGD on the pixel cross-entropy (the suite's and torchattacks'). Published into results/libraries.
LIBRARIES_OUT ?= runs/libraries
libraries: $(VENV)/.installed
	$(BIN)/wbc-robust run --models resnet10t_cls,resnet10t_cls_at,resnet10t_multitask_at,resnet10t_cls_small_at \
		--splits synth:test --attacks fgsm,pgd,pgd@torchattacks,pgd@art,autoattack-fast --target cls --eps 2/255,8/255 \
		--out $(LIBRARIES_OUT)
	$(BIN)/wbc-robust run --models resnet10t_unet,resnet10t_gn_unet,resnet10t_multitask,resnet10t_gn_multitask \
		--splits synth:test --attacks pgd,pgd-pixelce,pgd@torchattacks --target seg --eps 2/255,8/255 --out $(LIBRARIES_OUT)
	$(BIN)/wbc-robust publish --out $(LIBRARIES_OUT) --to results/libraries --command "make libraries"
	$(BIN)/python -m robustbench_wbc.report.readme

# What the README's real-cells section quotes: `make real` (OUT=runs/real), published with its fine-tuning table.
publish-real: $(VENV)/.installed
	$(BIN)/wbc-robust publish --out $(OUT) --to results/real --command "make real OUT=$(OUT)"
	cp $(OUT)/finetune/finetune.parquet results/real/finetune.parquet
	$(BIN)/python -m robustbench_wbc.report.readme

# Every README section between `wbc:render` markers, rendered anew from the committed tables (`--check` in the tests).
readme: $(VENV)/.installed
	$(BIN)/python -m robustbench_wbc.report.readme

# The sim-to-real gap: the zoo (trained on SynthWBC only) on real cells with expert masks, then
# fine-tuned on a few of them (5-fold cross-validation). REAL is a Zheng2018-layout folder.
real: $(VENV)/.installed
	$(BIN)/wbc-robust run --models all --data zheng2018=$(REAL) --splits zheng2018:all --attacks none --n-images 300 --out $(OUT)
	$(BIN)/wbc-robust leaderboard --out $(OUT) --write $(OUT)/LEADERBOARD.md
	$(BIN)/wbc-robust finetune --data zheng2018=$(REAL) --out $(OUT)/finetune

test: $(VENV)/.installed-test chromium
	$(BIN)/python -m pytest -q

# Headless Chromium renders the HTML report in its test (skipped without it). Installed from Debian
# when missing and apt can (root, network); never fails the tests' set-up.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "chromium not installed: the HTML screenshot test will be skipped"

# The entry-point path, as a plugin author uses it: install attacks/examples/ as a package, see its
# attacks listed, and run one on a tiny model (CI runs this after the tests).
example-plugin: $(VENV)/.installed
	$(PIP) -e attacks/examples
	$(BIN)/wbc-robust attacks list 'fgsm-ll' | grep -q fgsm-ll
	$(BIN)/wbc-robust run --models tiny_cls --splits synth:test --attacks noise-linf,fgsm-ll --eps 8/255 --n-images 32 --out runs/example-plugin
	$(BIN)/python -m pip uninstall -q -y wbc-example-plugin

# Speed, measured side by side as ratios (ours vs torchattacks, ART, pyautoattack; data generation,
# training, per-cell overhead, Dask vs local): every script in benchmarks/, its tables written into
# benchmarks/README.md. About half an hour on 2 cores; `make bench QUICK=1` checks the scripts run.
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run_all.py $(if $(QUICK),--quick)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check robustbench_wbc tests attacks

clean:
	rm -rf $(VENV) runs .pytest_cache
