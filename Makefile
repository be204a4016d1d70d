# challenge-stream — see README.md. Every test target starts its own throw-away Postgres.
# pipefail: a target that filters go test's output must still fail when the tests do.
SHELL        := /bin/bash
.SHELLFLAGS  := -o pipefail -ec
GO        ?= go
BIN       := bin/challenge-stream
PKGS      := $(shell $(GO) list ./... | grep -v /faults)
# The 1,000,000-row transaction runs at full size in test-large; test keeps it brief.
LARGE_TX_ROWS ?= 100000
FAULT_CYCLES  ?= 9

.PHONY: build test test-large test-faults fuzz bench bench-smoke demo vet clean test-pg-matrix test-pg-subset

build:
	$(GO) build -o $(BIN) ./cmd/challenge-stream

vet:
	$(GO) vet ./...

## test: vet and the whole suite against real Postgres (what CI runs).
test: vet
	LARGE_TX_ROWS=$(LARGE_TX_ROWS) $(GO) test -count=1 -timeout 20m $(PKGS)

## test-large: the 1,000,000-row transaction at full size.
test-large:
	LARGE_TX_ROWS=1000000 $(GO) test -count=1 -timeout 30m -run TestMillionRowTransaction -v ./pipeline/ | grep -E 'peak heap|^(ok|FAIL|---)'

## test-faults: the fault-injection loop; FAULT_CYCLES=100 for a long local run.
test-faults:
	FAULT_CYCLES=$(FAULT_CYCLES) $(GO) test -count=1 -timeout 60m -v ./faults/

## test-pg-matrix: the version subset against every supported major (README: Supported Postgres
## versions). test-pg-subset PG_MAJORS="17 18" runs it on some; scripts/install-postgres.sh
## fetches each major's server binaries (pinned) on first use.
PG_MAJORS          ?= 14 15 16 17 18
PG_SUBSET_PIPELINE := ^(TestStreamAppliesRules|TestTwoTransactionsOneWindow|TestTransactionsWithoutOurChanges|TestLowerIDCommitsLater|TestPruneTruncateAndAddColumn|TestFirstStart|TestRestartResumesFromStoredLSN|TestSlotLostWhileDown|TestTwoReplicas|TestIdleSlotKeepsConfirming|TestConnectionsTerminatedWhilePlaysArrive)$$
PG_SUBSET_E2E      := ^(TestKill9WithUnflushedWindow|TestCrashAfterFlushCommit|TestSIGTERMFlushesOpenWindow|TestPostgresRestartWhileStreaming|TestPostgresRestartDuringFlush|TestFlushConnectionTerminated|TestWalLevelReplica|TestHostileDroppedColumn|TestPrimaryFailover)$$
test-pg-matrix: test-pg-subset
test-pg-subset:
	for major in $(PG_MAJORS); do \
		bin=$$(scripts/install-postgres.sh $$major); start=$$(date +%s); \
		PG_BIN=$$bin $(GO) test -count=1 -timeout 15m ./migrations/ ./checkpoints/; \
		PG_BIN=$$bin $(GO) test -count=1 -timeout 15m -run '$(PG_SUBSET_PIPELINE)' ./pipeline/; \
		PG_BIN=$$bin $(GO) test -count=1 -timeout 15m -run '$(PG_SUBSET_E2E)' ./e2e/; \
		echo "postgres $$major: subset passed in $$(( $$(date +%s) - start ))s"; \
	done

## fuzz: each fuzz target briefly (FUZZTIME=10m for a long local run).
FUZZTIME ?= 10s
fuzz:
	$(GO) test ./replication/ -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	TEST_DATABASE_URL=postgres://unused $(GO) test ./cmd/challenge-stream/ -run '^$$' -fuzz '^FuzzConfig$$' -fuzztime $(FUZZTIME)
	TEST_DATABASE_URL=postgres://unused $(GO) test ./processors/ -run '^$$' -fuzz '^FuzzScanInt$$' -fuzztime $(FUZZTIME)

## bench: the full benchmark table (takes a while).
bench: build
	./$(BIN) bench --plays 100000,1000000

## bench-smoke: every benchmark once at tiny sizes, so they never rot.
bench-smoke: build
	$(GO) test -run '^$$' -bench . -benchtime 1x ./replication/ ./internal/bench/
	./$(BIN) bench --smoke

## demo: the whole pipeline on a throw-away local Postgres with synthetic traffic (~30 s).
demo: build
	./$(BIN) demo

clean:
	rm -rf bin
