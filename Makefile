# challenge-stream — see README.md. Every test target starts its own throw-away Postgres.
# pipefail: a target that filters go test's output must still fail when the tests do.
SHELL        := /bin/bash
.SHELLFLAGS  := -o pipefail -ec
GO        ?= go
BIN       := bin/challenge-stream
# The tooling (bench, demo): its own command, never in the production binary or the image.
DEV_BIN   := bin/challenge-stream-dev
MODULE    := github.com/challenge-stream/challenge-stream
# The toolchain stamps the VCS revision by itself; these make it explicit, and work from a
# source tarball too (VERSION=v1.2.3 REVISION=... make build).
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -X $(MODULE)/internal/buildinfo.version=$(VERSION) -X $(MODULE)/internal/buildinfo.revision=$(REVISION)
PKGS      := $(shell $(GO) list ./... | grep -v /faults)
# The 1,000,000-row transaction runs at full size in test-large; test keeps it brief.
LARGE_TX_ROWS ?= 100000
FAULT_CYCLES  ?= 20

.PHONY: build build-dev test test-large test-faults fuzz bench bench-smoke demo vet clean test-pg-matrix test-pg-subset image-context image test-deploy

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/challenge-stream

build-dev:
	$(GO) build -o $(DEV_BIN) ./cmd/challenge-stream-dev

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

## test-pg-matrix: the version subset against every supported major (docs/operations.md: Supported Postgres
## versions). test-pg-subset PG_MAJORS="17 18" runs it on some; scripts/install-postgres.sh
## fetches each major's server binaries (pinned) on first use.
PG_MAJORS          ?= 14 15 16 17 18
PG_SUBSET_PIPELINE := ^(TestStreamAppliesRules|TestTwoTransactionsOneWindow|TestTransactionsWithoutOurChanges|TestLowerIDCommitsLater|TestPruneTruncateAndAddColumn|TestFirstStart|TestRestartResumesFromStoredLSN|TestSlotLostWhileDown|TestTwoReplicas|TestIdleSlotKeepsConfirming|TestConnectionsTerminatedWhilePlaysArrive|TestPublicationRecreatedWhileDown|TestPublicationDroppedWhileStreaming|TestManagedPublicationWidenedUnderABacklog)$$
PG_SUBSET_E2E      := ^(TestKill9WithUnflushedWindow|TestCrashAfterFlushCommit|TestSIGTERMFlushesOpenWindow|TestPostgresRestartWhileStreaming|TestPostgresRestartDuringFlush|TestFlushConnectionTerminated|TestWalLevelReplica|TestHostileDroppedColumn|TestPrimaryFailover)$$
PG_SUBSET_FAULTS   := ^(TestPlannedShutdowns|TestCommitStreamedBeforeVisible)$$
test-pg-matrix: test-pg-subset
test-pg-subset:
	for major in $(PG_MAJORS); do \
		bin=$$(scripts/install-postgres.sh $$major); start=$$(date +%s); \
		PG_BIN=$$bin $(GO) test -count=1 -timeout 15m ./migrations/ ./checkpoints/ ./replication/ || exit 1; \
		PG_BIN=$$bin $(GO) test -count=1 -timeout 15m -run '$(PG_SUBSET_PIPELINE)' ./pipeline/ || exit 1; \
		PG_BIN=$$bin $(GO) test -count=1 -timeout 15m -run '$(PG_SUBSET_E2E)' ./e2e/ || exit 1; \
		PG_BIN=$$bin $(GO) test -count=1 -timeout 15m -run '$(PG_SUBSET_FAULTS)' ./faults/ || exit 1; \
		echo "postgres $$major: subset passed in $$(( $$(date +%s) - start ))s"; \
	done

## fuzz: each fuzz target briefly (FUZZTIME=10000000x for a long local run).
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can report
# its own -fuzztime deadline as a failure (golang/go#75804, fixed in Go 1.27).
FUZZTIME ?= 100000x
fuzz:
	$(GO) test ./replication/ -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME)
	TEST_DATABASE_URL=postgres://unused $(GO) test ./cmd/challenge-stream/ -run '^$$' -fuzz '^FuzzConfig$$' -fuzztime $(FUZZTIME)
	TEST_DATABASE_URL=postgres://unused $(GO) test ./processors/ -run '^$$' -fuzz '^FuzzScanInt$$' -fuzztime $(FUZZTIME)

## bench: the full benchmark table (takes a while); the memory section runs $(BIN).
bench: build build-dev
	./$(DEV_BIN) bench --plays 100000,1000000

## bench-smoke: every benchmark once at tiny sizes, so they never rot.
bench-smoke: build build-dev
	$(GO) test -run '^$$' -bench . -benchtime 1x ./replication/ ./pipeline/
	./$(DEV_BIN) bench --smoke

## demo: the whole pipeline on a throw-away local Postgres with synthetic traffic (~30 s).
demo: build-dev
	./$(DEV_BIN) demo

## image: the container image (Dockerfile, FROM scratch) with buildah, no daemon and no pull;
## also written as an OCI layout to bin/image.oci for the checks in test-deploy.
IMAGE       ?= localhost/challenge-stream:$(VERSION)
IMAGE_OCI   := bin/image.oci
# vfs storage under bin/: works as root in a container, without overlay mounts or a daemon.
BUILDAH     := buildah --root $(CURDIR)/bin/containers/storage --runroot $(CURDIR)/bin/containers/run --storage-driver vfs
CA_BUNDLE   ?= /etc/ssl/certs/ca-certificates.crt

image-context:
	mkdir -p bin/image
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o bin/image/challenge-stream ./cmd/challenge-stream
	cp $(CA_BUNDLE) bin/image/ca-certificates.crt

image: image-context
	$(BUILDAH) bud --quiet --isolation chroot --layers=false -f Dockerfile -t $(IMAGE) bin/image
	rm -rf $(IMAGE_OCI)
	$(BUILDAH) push --quiet $(IMAGE) oci:$(IMAGE_OCI):latest
	$(BUILDAH) rmi --prune >/dev/null || true # earlier builds of the tag

## test-deploy: build the image, check it, the manifests (strict Kubernetes types, real flags
## and routes), the dashboard and the alert rules (promtool check + unit tests).
test-deploy: image
	promtool check rules deploy/prometheus/alerts.yaml
	promtool test rules deploy/prometheus/alerts_test.yaml
	cd deploy && $(GO) vet ./... && CHALLENGE_STREAM_IMAGE_OCI=$(CURDIR)/$(IMAGE_OCI) CHALLENGE_STREAM_VERSION=$(VERSION) \
		$(GO) test -count=1 ./...

clean:
	rm -rf bin
