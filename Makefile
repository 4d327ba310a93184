# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= data/generated/demo
ARTIFACTS ?= artifacts
DEMO_USERS ?= u000000 u000001 u000002
LIVE_USER ?= u000000
# mypy needs the installed import names (recsys_data, ...) as folders: a view of symlinks.
TYPECHECK := build/typecheck

.PHONY: install proto lint typecheck test demo clean

# The gRPC code: setup.py's build hook writes it into serving/_generated/ (git-ignored) at
# install; after an edit of the .proto, `make proto` (or any target below) regenerates it.
PROTO := protos/recsys/v1/recommender.proto
GENERATED := serving/_generated/STAMP

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(GENERATED): $(PROTO) serving/protogen.py | $(STAMP)
	$(PY) -m recsys_serving.protogen
	touch $@

proto: $(GENERATED)

install: $(STAMP) $(GENERATED)

$(TYPECHECK):
	mkdir -p $(TYPECHECK)
	ln -sfn ../../recsys $(TYPECHECK)/recsys
	ln -sfn ../../data $(TYPECHECK)/recsys_data
	ln -sfn ../../training $(TYPECHECK)/recsys_training
	ln -sfn ../../serving $(TYPECHECK)/recsys_serving

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install $(TYPECHECK)
	$(BIN)/mypy -p recsys -p recsys_data -p recsys_training -p recsys_serving

test: lint typecheck
	$(PY) -m pytest -q

demo: install
	$(BIN)/recsys data synth --preset demo --seed 0 --out $(DEMO_DIR) --overwrite
	$(BIN)/recsys data validate $(DEMO_DIR)
	$(BIN)/recsys data oracle --data $(DEMO_DIR) --split time
	$(BIN)/recsys train --data $(DEMO_DIR) --artifacts $(ARTIFACTS) --name demo \
		--config training/configs/demo.toml
	$(BIN)/recsys evaluate --artifact $(ARTIFACTS)/demo --data $(DEMO_DIR) \
		--out $(ARTIFACTS)/demo/evaluation
	@rm -rf $(ARTIFACTS)/demo/live  # the demo's users start without live events
	@port_file=$$(mktemp); \
	$(BIN)/recsys serve --artifacts $(ARTIFACTS) --name demo --port 0 \
		--port-file $$port_file & server=$$!; \
	trap 'kill -TERM $$server 2>/dev/null; wait $$server; rm -f $$port_file' EXIT; \
	while [ ! -s $$port_file ]; do kill -0 $$server 2>/dev/null || exit 1; sleep 0.5; done; \
	target=127.0.0.1:$$(cat $$port_file); \
	for user in $(DEMO_USERS); do \
		$(BIN)/recsys recommend --target $$target --user-id $$user --k 5 --wait 120 || exit 1; \
	done; \
	$(BIN)/recsys recommend --target $$target --search "guitar lesson" --country US --k 5; \
	echo "live profile: $(LIVE_USER) watches three of those videos and searches; next call:"; \
	$(BIN)/recsys events record --target $$target --user-id $(LIVE_USER) \
		--search "guitar lesson" --watch $$($(BIN)/recsys recommend --target $$target \
		--search "guitar lesson" --country US --k 3 --ids-only) || exit 1; \
	$(BIN)/recsys recommend --target $$target --user-id $(LIVE_USER) --k 5

clean:
	rm -rf build $(VENV) .pytest_cache .mypy_cache .ruff_cache
