# The two commands of the README. Both install what is missing on a fresh Debian machine.
# The build cache lives outside the clone so that it survives fresh clones on the same machine.
export CARGO_TARGET_DIR ?= /var/tmp/clearing-target
CARGO_FLAGS := --release --locked
# The Python SDK's virtual environment (scripts/install-deps.sh makes it).
export CLEARING_SDK_VENV ?= /var/tmp/clearing-sdk-venv

.PHONY: run test deps build fuzz contract-long

deps:
	@bash scripts/install-deps.sh

build: deps
	cargo build $(CARGO_FLAGS) --workspace --all-targets

## Runs the server (engine on RocksDB under ./data, HTTP API, operator token) until Ctrl-C.
run: deps
	cargo run $(CARGO_FLAGS) --bin clearing -- serve

## Runs every test: formatting and lints, unit, end-to-end, crash, and the benchmarks once each
## with tiny inputs.
test: deps
	cargo fmt --all --check
	$(CLEARING_SDK_VENV)/bin/ruff check sdk/python
	$(CLEARING_SDK_VENV)/bin/ruff format --check sdk/python
	cargo clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings
	cargo build $(CARGO_FLAGS) --workspace --all-targets
	cargo bench --locked --bench apply -- --test
	cargo nextest run $(CARGO_FLAGS) --workspace --no-fail-fast

## Runs every fuzz target (tests named fuzz_*) with many more cases than `make test` gives them:
## before a release. FUZZ_CASES=N sets the cases per target; FUZZ_SEED=N replays an HTTP run.
fuzz: deps
	FUZZ_CASES=$${FUZZ_CASES:-200000} cargo nextest run $(CARGO_FLAGS) --workspace --no-fail-fast -E 'test(/^fuzz_/)'

## The contract's long run, before a release: Schemathesis against the built server with many
## more examples per operation than `make test` gives it (CONTRACT_MAX_EXAMPLES, default 200;
## CONTRACT_MAX_SECONDS bounds it, default 1800).
contract-long: deps
	CONTRACT_MAX_EXAMPLES=$${CONTRACT_MAX_EXAMPLES:-200} CONTRACT_MAX_SECONDS=$${CONTRACT_MAX_SECONDS:-1800} cargo nextest run $(CARGO_FLAGS) --test contract --no-fail-fast -E 'test(schemathesis_finds_nothing)'
