# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CODE := $(wildcard src tests bench examples)
export AUDITLEDGER_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: install demo viewer test lint typecheck bench bench-read bench-scale-out bench-gdpr clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) examples/demo.py

# The audit-trail viewer over the demo's data (run `make demo` first); prints the URL to open.
viewer: install
	$(VENV)/bin/auditledger serve --database-url sqlite:///demo-data/audit.db \
		$(if $(wildcard demo-data/keys/signing.pub),--public-key demo-data/keys/signing.pub)

lint: install
	$(PY) -m ruff check $(CODE)
	$(PY) -m ruff format --check $(CODE)

typecheck: install
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest -q --cov --cov-report=term

# make bench BENCH_ARGS=--quick for the ~30 s version; AUDITLEDGER_BENCH_POSTGRES_URL picks the server.
# bench/verify.py: verify's events/s (spread and one dominant workspace) and CLI start-up.
bench: install
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/verify.py $(BENCH_ARGS)

# Searches and exports on a 1,000,000-event log (issue "Speed"); BENCH_ARGS=--quick for 200,000.
bench-read: install
	$(PY) bench/read.py $(BENCH_ARGS)

# Starts its own nats-server (JetStream); BENCH_ARGS=--quick for the short version.
bench-scale-out: install
	$(PY) bench/scale_out.py $(BENCH_ARGS)

# Subject export, erasure and retention on a log of 1M rows (a few minutes; --rows N for less).
bench-gdpr: install
	$(PY) bench/gdpr.py $(BENCH_GDPR_ARGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache demo-data test-artifacts
