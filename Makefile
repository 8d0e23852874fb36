# The two commands of the README, plus the benchmarks. Each works on a fresh machine:
# it creates .venv, installs the project with its extras, and the Debian packages tests need.
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
# Debian packages the tests and the demo start for real: nginx (the blue/green switch,
# tests/test_bluegreen.py, and the demo's load balancer), prometheus (the bridge and remote write,
# tests/test_feeds_integration.py), chromium (the web page in a real browser, tests/test_web.py).
DEBIAN_PACKAGES := nginx prometheus chromium

.PHONY: demo test bench lint system-deps clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,kubernetes]'
	touch $(STAMP)

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

demo: $(STAMP) system-deps
	$(BIN)/backout demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) system-deps lint
	$(BIN)/pytest -q

bench: $(STAMP) system-deps
	$(BIN)/python bench/detectors.py --json
	$(BIN)/python bench/decisions.py --json
	$(BIN)/python bench/pipeline.py --json
	$(BIN)/python bench/bluegreen.py --json
	$(BIN)/python bench/feeds.py --json
	$(BIN)/python bench/recovery.py --json
	$(BIN)/python bench/executor.py --json
	$(BIN)/python bench/demo.py --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
