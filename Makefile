# vt: the README's commands call these targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast test-slow bench clean

# each prints, as its last line, one JSON object with its figures (benchmarks/RESULTS.md); the
# GPU study (benchmarks/study_timing.py, benchmarks/gpu_session.sh) is run by hand on a GPU, the
# paper's CPU rows (paper_table.py, ~10 min) and the PolyPythia-sized series (polypythia_run.py:
# 72 GB of disk, ~45 min) by hand
BENCHMARKS = benchmarks/metrics_throughput.py benchmarks/capture_overhead.py benchmarks/hmm_selection.py \
	benchmarks/dashboard_scale.py benchmarks/seed_groups.py benchmarks/group_checkpoints.py benchmarks/hmm_estep.py \
	benchmarks/analysis_scale.py benchmarks/verification_cost.py benchmarks/recorder_overhead.py benchmarks/import_rate.py \
	benchmarks/readonly_commands.py benchmarks/pythia_scale.py benchmarks/live_overhead.py

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/vt run examples/sparse_parity.toml

test: venv
	$(BIN)/python -m pytest -m "not slow" -q

# the development loop: unit tests only (no Prefect flow, server, cluster, browser, kill trial or
# minutes-long sweep); cost is said by markers alone, folders mirror the packages
test-fast: venv
	$(BIN)/python -m pytest -m "not slow and not integration and not browser and not flow and not minutes" -q

test-slow: venv
	$(BIN)/python -m pytest -m slow -q

bench: venv
	@for b in $(BENCHMARKS); do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) studies .pytest_cache
