# `make run` and `make test` set up .venv on first use (Python 3.11) and reuse it after.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Every dependency at the version of constraints.txt (README: Setup), torch first.
CONSTRAINTS := constraints.txt
# torch: the CPU build by default (PyPI's Linux wheel is the CUDA build): PyTorch's CPU index
# is an extra index, where 2.13.0+cpu wins over PyPI's 2.13.0. TORCH_INDEX=.../whl/cu128 (a CUDA
# version the driver supports) takes that CUDA build; TORCH_INDEX= (empty) only the usual indexes
# (CI: its machines hold a CPU wheel locally and reach package registries only). A CUDA build
# already in .venv is kept.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.installed-stamp

export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_AUTH_MODE ?= disabled
export RAY_DATA_DISABLE_PROGRESS_BARS ?= 1
export MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK ?= true
export PYTHONUNBUFFERED ?= 1

.PHONY: venv run test sweep sipn favorita benchmark perf screenshots ui clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch alone from its index (--no-deps: only torch is looked up there); its dependencies come with the project's
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet --no-deps -c $(CONSTRAINTS) \
		$(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## run: train on the embedded defaults (local Ray, MLflow in ./mlflow.db); ARGS="key=value ..."
run: $(STAMP)
	$(PY) -m jobs.train $(ARGS)

## test: the test suite
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

## sweep: the smoke sweep: Ray Tune (ASHA) over penalty weights and lr, 4 tiny trials; ARGS="key=value ..."
sweep: $(STAMP)
	$(PY) -m jobs.sweep experiment=sweep_smoke $(ARGS)

## sipn: plain, penalized and structured policies over 5 seeds on all four problems -> docs/sipn.md
sipn: $(STAMP)
	@start=$$(date +%s); \
	$(PY) -m jobs.sipn experiment=sipn_lost_sales_L5 && \
	$(PY) -m jobs.sipn experiment=sipn_perishable && \
	$(PY) -m jobs.sipn experiment=sipn_dual_sourcing && \
	$(PY) -m jobs.sipn problem=removal experiment=sipn_removal && \
	$(PY) -m benchmarks.penalty_step && \
	echo "make sipn: $$(( $$(date +%s) - start )) s in all"

## favorita: DirectBackprop vs predict-then-optimize on the weekly Favorita data -> results/favorita, docs/favorita.md
favorita: $(STAMP)
	$(PY) -m jobs.favorita favorita.folds=2 favorita.seeds=[0,1,2] favorita.docs=docs/favorita.md $(ARGS)

## benchmark: every benchmark suite, exact and heuristic rows and the learned ones (one network per suite) -> benchmarks/results/<suite>.csv and docs/benchmarks.md
benchmark: $(STAMP)
	$(PY) -m jobs.benchmark suite=all

## perf: throughput, solve times and peak memory, the default step and its profile, the job end to end, time to
## quality, the targets table -> benchmarks/results/ and docs/performance.md (about 35 min); ARGS go to benchmarks.perf
perf: $(STAMP)
	$(PY) -m benchmarks.perf $(ARGS)
	$(PY) -m benchmarks.step_speed threads=2 kind=cnn,mlp batch=1024,8192 repeats=10 profile=true rows=25 docs=true
	$(PY) -m benchmarks.scale products=100000,1000000
	$(PY) -m benchmarks.time_to_quality
	$(PY) -m benchmarks.targets

## screenshots: the README's reference experiment, a 4-trial sweep of it, two promotions and the orders, into
## runs/reference (its own MLflow store), then the MLflow UI screenshots in docs/figures/mlflow (about 8 min;
## needs Debian's chromium and the docs extra: .venv/bin/pip install -c constraints.txt -e ".[docs]")
REFERENCE := experiment=zipkin_p19_L4 output_dir=runs/reference/runs mlflow.tracking_uri=sqlite:///runs/reference/mlflow.db
screenshots: $(STAMP)
	rm -rf runs/reference
	$(PY) -m jobs.train $(REFERENCE)
	$(PY) -m jobs.evaluate $(REFERENCE)
	$(PY) -m jobs.promote $(REFERENCE)
	$(PY) -m jobs.sweep $(REFERENCE) name=zipkin-sweep sweep.num_samples=4
	$(PY) -m jobs.promote $(REFERENCE)
	$(PY) -m jobs.recommend $(REFERENCE) recommend.state=simulate
	$(PY) -m jobs.screenshots mlflow.tracking_uri=sqlite:///runs/reference/mlflow.db

## ui: the MLflow UI on the project's runs at http://127.0.0.1:5000
ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

## clean: remove generated data, checkpoints and results (keeps .venv and mlflow.db)
clean:
	rm -rf runs results
