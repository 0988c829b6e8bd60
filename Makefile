# retrspect: the two commands a newcomer needs (see README.md).
#   make run   set up everything missing, ingest the bundled spectra, serve
#   make test  the same set-up, then the test suite against the running stack
VENV ?= /opt/retrspect/venv
export RETRSPECT_PORT ?= 8080

.PHONY: run test setup deploy stop

setup:
	bash scripts/setup_system.sh
	bash scripts/setup_python.sh

deploy: setup
	$(VENV)/bin/retrspect deploy --resdir resdir

run: deploy
	$(VENV)/bin/retrspect check
	@echo "retrspect is serving on http://localhost:$(RETRSPECT_PORT)/"

test: deploy
	cd $(CURDIR) && $(VENV)/bin/python -m pytest tests $(PYTEST_ARGS)

stop:
	$(VENV)/bin/retrspect serve stop

.PHONY: bench-ingest bench-knn bench-load bench-serve bench-async bench-replica bench-explorer bench-active-learning
bench-ingest: deploy
	$(VENV)/bin/python tests/benchmarks/bench_ingest.py

bench-knn: deploy
	$(VENV)/bin/python tests/benchmarks/bench_knn.py

bench-load: deploy
	$(VENV)/bin/python tests/benchmarks/bench_load.py

bench-serve: deploy
	$(VENV)/bin/python tests/benchmarks/bench_serve.py

bench-async: deploy
	$(VENV)/bin/python tests/benchmarks/bench_async_tap.py

bench-replica: deploy
	$(VENV)/bin/python tests/benchmarks/bench_replica_lag.py

bench-explorer: deploy
	$(VENV)/bin/python tests/benchmarks/bench_explorer.py

bench-active-learning: deploy
	$(VENV)/bin/python tests/benchmarks/bench_active_learning.py
