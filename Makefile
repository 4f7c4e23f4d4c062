# Trellis: the ways in. `make` alone lists the targets.
#
# Build artefacts go to a persistent directory outside the clone, so that CI and fresh
# clones build incrementally. Override it per call: make test CARGO_TARGET_DIR=/tmp/t
CARGO_TARGET_DIR ?= $(HOME)/.cache/trellis/target
export CARGO_TARGET_DIR

CARGO ?= cargo
ENSURE_DEPS := bash scripts/ensure-deps.sh
# Extra arguments for the demo, e.g. `make demo DEMO_ARGS=--once`.
DEMO_ARGS ?=
# `make fuzz` runs each of FUZZ_TARGETS (fuzz/fuzz_targets/) for FUZZ_SECONDS. The fuzz
# build has its own target directory (sanitizer flags would invalidate the main one).
FUZZ_TARGETS ?= decode_delta decode_doc decode_frame
FUZZ_SECONDS ?= 60
FUZZ_TARGET_DIR ?= $(HOME)/.cache/trellis/fuzz-target
# Release builds (benchmarks) get their own persistent directory, so a long optimised
# RocksDB build never holds the lock that test builds wait on.
RELEASE_TARGET_DIR ?= $(HOME)/.cache/trellis/target-release

.DEFAULT_GOAL := help
.PHONY: help deps build test demo bench bench-quick fmt lint fuzz ci pi

help: ## List the targets
	@echo "Trellis: make <target>   (CARGO_TARGET_DIR=$(CARGO_TARGET_DIR))"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  \1\t/' | expand -t 16

deps: ## Install missing build packages, start Postgres and NATS (JetStream)
	@$(ENSURE_DEPS)

build: ## Build the whole workspace (dev profile)
	@$(ENSURE_DEPS) --build-only
	$(CARGO) build --workspace --all-targets

test: ## Run every test (nextest if present, else cargo test), then doc tests
	@$(ENSURE_DEPS)
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "$(CARGO) nextest run --workspace --no-fail-fast"; \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		echo "cargo-nextest not found; using cargo test"; \
		echo "$(CARGO) test --workspace --no-fail-fast"; \
		$(CARGO) test --workspace --no-fail-fast; \
	fi
	$(CARGO) test --workspace --doc

demo: ## Run the demo with embedded defaults (dev build; DEMO_ARGS=--once to exit)
	@$(ENSURE_DEPS) --build-only
	@# Built with --workspace --all-targets, like `make test`: the same feature set, so
	@# the two share one build of RocksDB instead of compiling it twice.
	$(CARGO) build --workspace --all-targets
	$(CARGO_TARGET_DIR)/debug/trellis-node demo $(DEMO_ARGS)

bench: ## Run every benchmark beside its anchor (release build; slow)
	@$(ENSURE_DEPS) --build-only
	CARGO_TARGET_DIR=$(RELEASE_TARGET_DIR) $(CARGO) run --release -p trellis-bench -- all

bench-quick: ## Run every benchmark in its short form
	@$(ENSURE_DEPS) --build-only
	CARGO_TARGET_DIR=$(RELEASE_TARGET_DIR) $(CARGO) run --release -p trellis-bench -- all --quick

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## Clippy on every target; warnings are errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fuzz: ## Fuzz the decoders, FUZZ_SECONDS each (needs: cargo install cargo-fuzz)
	@$(CARGO) fuzz --version >/dev/null 2>&1 || { \
		echo "cargo-fuzz is missing; install it with: cargo install cargo-fuzz" >&2; exit 1; }
	@set -e; for target in $(FUZZ_TARGETS); do \
		echo "cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS)"; \
		(cd fuzz && CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) RUSTC_BOOTSTRAP=1 \
			$(CARGO) fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS)); \
	done

pi: ## Cross-compile trellis-node for a 64-bit Raspberry Pi into dist/ and check it
	bash deploy/cross-aarch64.sh

ci: ## Run exactly what CI runs (.ci/run)
	bash .ci/run
