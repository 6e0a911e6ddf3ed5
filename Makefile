# chatd — the two commands a person needs: `make run-server` and `make test`.
# Everything else is created on demand: the server needs only Python 3.11+, the client
# and the tests get a local virtualenv (.venv) on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
HOST   ?= 0.0.0.0
PORT   ?= 7777
IRC_PORT ?= 6667
IRC_TLS_PORT ?= 6697
WEB_PORT ?= 8080
# Room history for `make run-server` lives in the user's data directory by default.
DB     ?=
SERVER ?= localhost:$(PORT)
PYTEST_ARGS ?=

.PHONY: help install run-server run-server-plain run-client test test-fast e2e lint bench bench-quick bench-cluster stress clean

help:
	@echo "make run-server   start chatd on $(HOST):$(PORT) with TLS (IRC on $(IRC_PORT), IRC+TLS on $(IRC_TLS_PORT), web on $(WEB_PORT))"
	@echo "make run-server-plain  the same on the standard library alone, without TLS"
	@echo "make run-client   join it with the terminal client (SERVER=host:port)"
	@echo "make test         run every test (unit, socket, abuse, end-to-end in tmux)"
	@echo "make test-fast    unit and socket tests only"
	@echo "make lint         ruff (check, format) and mypy (strict; tests and bench too)"
	@echo "make bench        throughput/latency/memory benchmark vs an asyncio baseline"
	@echo "make bench-quick  the same at small scale (~30 s)"
	@echo "make stress       the abuse scenarios at larger scale"
	@echo "make install      create .venv with the client and the dev tools"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)
	@echo "chat and chatd are in $(CURDIR)/$(BIN)/ (run them from there, or: make run-client)."
	@echo "To have them on your PATH: pipx install .   (or: pip install --user .)"

# TLS needs the 'cryptography' library to make the server's certificate on first start
# (docs/tls.md), the web page h11 and wsproto (docs/web.md), LAN announcing zeroconf
# (docs/discovery.md): so this uses the virtualenv; run-server-plain needs Python alone.
run-server: $(STAMP)
	$(BIN)/python -m chatd --host $(HOST) --port $(PORT) --irc-port $(IRC_PORT) \
		--tls on --irc-tls-port $(IRC_TLS_PORT) --web-port $(WEB_PORT) $(if $(DB),--db $(DB))

run-server-plain:
	$(PYTHON) -m chatd --host $(HOST) --port $(PORT) --irc-port $(IRC_PORT) --tls off \
		$(if $(DB),--db $(DB))

run-client: $(STAMP)
	$(BIN)/python -m client $(SERVER)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

e2e: $(STAMP)
	$(BIN)/python -m pytest -m e2e $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff format --check chatd client tests bench
	$(BIN)/python -m ruff check chatd client tests bench
	$(BIN)/python -m mypy

# Full run: every scenario, chatd vs the asyncio baseline, best of 2 (~6 minutes).
BENCH_ARGS ?= --repeat 2
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.web

bench-quick: $(STAMP)
	$(BIN)/python -m bench.run --quick
	$(BIN)/python -m bench.web --n 100 --duration 3 --idle 200

# N=1000 over 3 nodes sharing a real redis-server, against one node (docs/cluster.md).
bench-cluster: $(STAMP)
	$(BIN)/python -m bench.cluster $(BENCH_CLUSTER_ARGS)

# Delivery to the nodes: pub/sub against XREAD BLOCK, at the Redis level (docs/cluster.md).
.PHONY: bench-cluster-delivery
bench-cluster-delivery: $(STAMP)
	$(BIN)/python -m bench.cluster_delivery $(BENCH_CLUSTER_DELIVERY_ARGS)

stress: $(STAMP)
	$(BIN)/python -m bench.stress $(STRESS_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
