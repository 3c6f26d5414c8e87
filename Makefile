# The README's two commands: `make run` and `make test`. Everything else is a helper of those.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck pytest data models venv dev-deps clean bench native

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime
dev-deps: $(VENV)/.dev

# The compiled tree walk the models' fast path uses (fitting_room/treewalk.py); Debian's gcc when no compiler is
# found. Without the library the numpy strategies answer, slower under load, with the same numbers.
NATIVE := fitting_room/_treewalk.so
native: $(NATIVE)
$(NATIVE): fitting_room/treewalk.c
	@command -v $(CC) >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev; }
	$(CC) -O2 -fPIC -shared -Wall -Wextra -Werror -o $@ $<

data/item_database.json data/historical_sessions.csv &: | $(VENV)/.runtime
	$(PY) simulate_data.py --out-dir data

models/duration_model.pkl models/anomaly_model.pkl &: data/item_database.json data/historical_sessions.csv | $(VENV)/.runtime $(NATIVE)
	$(PY) train.py --data-dir data --model-dir models

data: data/item_database.json
models: models/duration_model.pkl

run: $(VENV)/.runtime $(NATIVE) data models
	$(VENV)/bin/uvicorn api:app --host $(HOST) --port $(PORT)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy .

pytest: $(VENV)/.dev $(NATIVE) browser-deps postgres-deps
	$(VENV)/bin/pytest

test: lint typecheck pytest

# Issue #6: 20 SIGKILL restarts under concurrent clients (a few minutes; each restart loads the models). CI runs it
# after `make test`; plain `pytest` skips it.
.PHONY: crash-test
crash-test: $(VENV)/.dev $(NATIVE)
	RUN_CRASH_TEST=1 $(VENV)/bin/pytest tests/test_crash_loop.py -s

# Debian's Chromium (and fonts for its screenshots) for the dashboard's Playwright tests; Playwright never
# downloads a browser. Recommends are skipped: they pull in printing, audio and desktop services.
.PHONY: browser-deps
browser-deps:
	@test -x /usr/bin/chromium || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-liberation fonts-dejavu-core; }

# Debian's PostgreSQL server binaries: the tests start throwaway servers from them (tests/pg_cluster.py), never
# the packaged cluster. Recommends are skipped: only sysstat, which the tests never use.
.PHONY: postgres-deps
postgres-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql; }

# Benchmarks: figures the README quotes. bench-replay: store-day replay (issue #4), a few minutes on 2 cores.
.PHONY: bench-replay
bench: bench-replay bench-inference bench-http bench-engine bench-replicas

bench-replay: $(VENV)/.runtime $(NATIVE)
	$(PY) -m benchmarks.bench_replay --out benchmarks/results

# Issue #7: model inference per row (fast path vs scikit-learn), HTTP against GET / with wrk (Debian's package,
# installed by the script when missing), and per-operation cost at 10 / 1,000 / 10,000 rooms.
.PHONY: bench-inference bench-http bench-engine
bench-inference: $(VENV)/.runtime $(NATIVE) data models
	$(PY) -m benchmarks.bench_inference --out benchmarks/results

bench-http: $(VENV)/.runtime $(NATIVE) data models
	$(PY) -m benchmarks.bench_http --out benchmarks/results

bench-engine: $(VENV)/.runtime $(NATIVE)
	$(PY) -m benchmarks.bench_engine --out benchmarks/results

# Issue #8: assign-and-release cycles per second on SQLite and on PostgreSQL with 1 and 2 uvicorn replicas.
.PHONY: bench-replicas
bench-replicas: $(VENV)/.runtime $(NATIVE) data models postgres-deps
	$(PY) -m benchmarks.bench_replicas --out benchmarks/results

# Issue #8: bring FITTING_ROOM_DATABASE (SQLite path or postgresql://...) to the newest schema. The service also
# does this at start when the database is empty.
.PHONY: migrate
migrate: $(VENV)/.runtime
	$(PY) -m fitting_room.migrations

clean:
	rm -rf $(VENV) $(NATIVE) .mypy_cache .ruff_cache .pytest_cache .hypothesis
