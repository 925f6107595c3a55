# Two commands do everything on a fresh machine with Python 3.11+:
#   make run   - virtualenv, install, embedded PostgreSQL (or DATABASE_URL), migrations, serve on :8203
#   make test  - virtualenv, install, the test suite against real PostgreSQL
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint proto proto-check go go-check migrate lock clean bench bench-quick bench-feed bench-search bench-usage bench-prune bench-userdata bench-partitions chaos chaos-failover

install: $(STAMP)

# pip prints each package as it goes: the first install takes about a minute, and silence looked like a hang.
$(STAMP): constraints.txt setup.cfg pyproject.toml clients/python/pyproject.toml
	@echo "==> [1/3] virtualenv $(VENV)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> [2/3] session-grpc, its client and dev tools into $(VENV) (about a minute the first time)"
	$(BIN)/python -m pip install --progress-bar off --disable-pip-version-check --constraint constraints.txt --editable '.[dev]' --editable './clients/python[langchain]'
	@echo "==> [3/3] installed"
	touch $(STAMP)

run: $(STAMP)
	@echo "==> session-grpc serve --migrate (Ctrl-C stops the server, then the embedded PostgreSQL)"
	$(BIN)/session-grpc serve --migrate

# The Google ADK adapter's tests (tests/adk) run in a virtualenv of their own: google-adk pins
# opentelemetry below the server's, so it cannot share .venv. tests/test_adk.py runs them there
# against the suite's live server (it builds a throwaway one when ADK_PYTHON is not set).
ADK_VENV ?= .venv-adk
ADK_STAMP := $(ADK_VENV)/.installed

$(ADK_STAMP): clients/python/pyproject.toml tests/adk/requirements.txt
	@echo "==> Google ADK test virtualenv $(ADK_VENV) (about 20 s the first time)"
	test -x $(ADK_VENV)/bin/python || $(PYTHON) -m venv $(ADK_VENV)
	$(ADK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/adk/requirements.txt --editable './clients/python[adk]'
	touch $(ADK_STAMP)

test: $(STAMP) $(ADK_STAMP)
	ADK_PYTHON=$(abspath $(ADK_VENV)/bin/python) $(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/buf lint
	$(BIN)/python scripts/gen_protos.py --check
	BUF=$(BIN)/buf scripts/buf-breaking
	@if command -v protoc-gen-go-grpc >/dev/null; then scripts/gen_go --check; \
	else echo 'Go stub check skipped: protoc-gen-go-grpc is not installed (see README, Go)'; fi

proto: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

# Go stubs into clients/go/ (protoc, protoc-gen-go, protoc-gen-go-grpc; see README, Go).
go:
	scripts/gen_go

go-check:
	scripts/gen_go --check

proto-check: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check

migrate: $(STAMP)
	$(BIN)/session-grpc migrate upgrade

# Re-pin constraints.txt from a throwaway virtualenv with the newest allowed versions.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --editable '.[dev]' --editable './clients/python[langchain]'
	( echo '# Exact versions CI tested; the Makefile installs with these constraints.'; \
	  echo '# Regenerate: make lock'; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^session-grpc' ) > constraints.txt
	rm -rf .lock-venv

# The benchmark (bench/run.py): its own virtualenv, so the peer (google-adk) never enters .venv.
BENCH_VENV ?= .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): constraints.txt setup.cfg pyproject.toml clients/python/pyproject.toml bench/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --constraint constraints.txt --editable . --editable ./clients/python
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $(BENCH_STAMP)

# The servers run from .venv (the real install); the load generator and ADK from .venv-bench.
bench: $(STAMP) $(BENCH_STAMP)
	BENCH_SERVER_PYTHON=$(abspath $(BIN)/python) $(BENCH_VENV)/bin/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.feed

# SearchMessages on 1,000,000 messages, the tsvector's cost to AddMessage, ListSessions filters at
# 10,000 sessions (bench/search.py; only the server's own dependencies: it runs from .venv).
bench-search: $(STAMP)
	$(BIN)/python -m bench.search $(BENCH_ARGS)

# GetUsage on 1,000,000 messages over a year, and what the ledger's index costs AddMessage
# (bench/usage.py; BENCH_BEFORE_ROOT=<a checkout of main> serves the "before" with main's code).
bench-usage: $(STAMP)
	$(BIN)/python -m bench.usage $(BENCH_ARGS)

# The retention prune job: rows/s removed, and AddMessage p50/p99 with and without a pass running.
bench-prune: $(STAMP)
	$(BIN)/python -m bench.prune $(BENCH_ARGS)

bench-userdata: $(STAMP)
	$(BIN)/python -m bench.userdata $(BENCH_ARGS)

# messages partitioned by hash of session_id against one table, the same rows, interleaved
# (bench/partitions.py; --explain prints the hot statements' plans on the partitioned table).
bench-partitions: $(STAMP)
	$(BIN)/python -m bench.partitions $(BENCH_ARGS)

bench-quick: $(STAMP) $(BENCH_STAMP)
	BENCH_SERVER_PYTHON=$(abspath $(BIN)/python) $(BENCH_VENV)/bin/python -m bench --quick $(BENCH_ARGS)
	$(BIN)/python -m bench.feed --quick

# The change feed alone (bench/feed.py): 200 watchers on 20 sessions, writers through another process.
bench-feed: $(STAMP)
	$(BIN)/python -m bench.feed $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(ADK_VENV) .pytest_cache *.egg-info

# Load, fault and fuzz scenarios at a larger size than the tests (a few minutes); writes docs/reliability-latest.md.
chaos: $(STAMP) $(ADK_STAMP)
	ADK_PYTHON=$(abspath $(ADK_VENV)/bin/python) $(BIN)/python -m reliability.chaos --markdown docs/reliability-latest.md

# The PostgreSQL failover scenario alone (pg_auto_failover: monitor, primary, synchronous secondary;
# about a minute); CI runs it. Skips, saying the apt-get line, when pg_auto_failover is missing.
chaos-failover: $(STAMP)
	$(BIN)/python -m reliability.failover
