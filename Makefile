# One obvious way in: `make run` and `make test` install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := bubblewrap slirp4netns git chromium e2fsprogs postgresql

.PHONY: install run test test-fast lint-imports bench clean system-packages fixtures vendor

install: $(STAMP) system-packages vendor

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' > $(VENV)/pip.log 2>&1 \
	  || { cat $(VENV)/pip.log; exit 1; }
	$(BIN)/python -c "import bot, gidgethub, sqlalchemy, pytest_aiohttp"
	touch $(STAMP)

# Debian packages the sandbox (and later the dashboard tests) need; installed only when missing.
system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (install them with apt-get as root)"; fi; \
	fi

# axe-core for the UI check's accessibility pass, pinned and integrity-checked, into pipeline/ui_check/vendor/
# (gitignored); never fetched at run time. Without npm the UI check says accessibility was not checked.
vendor: $(STAMP)
	@$(BIN)/python tools/fetch_axe_core.py

run: install
	$(BIN)/codegenapp serve

# A clone without ../shared fetches the same published GitHub fixtures from npm (or the tests that
# need them are skipped with the reason).
fixtures:
	@test -d ../shared/fixtures/github || test -d .cache/github-fixtures || $(BIN)/python tools/fetch_github_fixtures.py

# The import contracts (pyproject.toml [tool.importlinter]) first: a broken layer fails fast.
lint-imports: install
	$(BIN)/lint-imports --no-cache

test: install fixtures lint-imports
	$(BIN)/python -m pytest

test-fast: install fixtures lint-imports
	$(BIN)/python -m pytest -m "not slow"

bench: install fixtures
	$(BIN)/python bench/ingest.py -n 2000 -c 1 --installations 100
	$(BIN)/python bench/ingest.py -n 3000 -c 32 --installations 100
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/snapshot.py

clean:
	rm -rf $(VENV) .pytest_cache
