# l4lb: see README.md. `make demo` runs the main job, `make test` the tests.
GO        ?= go
BIN       := bin
PKGS      := ./...
# Debian packages the tests and the demo need: the UML guest kernel, a C
# compiler for its ptrace wrapper (integration/bed/uml/xstate.c), busybox,
# the tools the tests drive as an operator would, and unbound (a real
# upstream resolver for the agent's DNS forwarding test).
DEB_PKGS  := user-mode-linux gcc libc6-dev busybox-static ipvsadm iptables iproute2 bind9-dnsutils curl procps kmod systemd util-linux docker.io nftables unbound chromium
DEB_CHECK := /usr/bin/linux.uml /usr/bin/gcc /usr/include/stdio.h /bin/busybox /usr/sbin/ipvsadm /usr/sbin/iptables-legacy /usr/bin/dig /usr/bin/curl /usr/sbin/sysctl /sbin/ip /usr/bin/systemd-analyze /usr/bin/nsenter /usr/sbin/dockerd /usr/sbin/nft /usr/sbin/unbound /usr/bin/chromium

SHELL     := /bin/bash

.PHONY: all build deps vet unit kernel test demo fuzz bench clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# build-linux builds static linux/amd64 binaries into bin/linux-amd64/,
# whatever the host (vagrant/ installs these).
.PHONY: build-linux
build-linux:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -o $(BIN)/linux-amd64/ ./cmd/...

# deps installs what the tests need from Debian's packages, when missing.
deps:
	@missing=0; for f in $(DEB_CHECK); do [ -e $$f ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
		echo "make deps: installing $(DEB_PKGS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PKGS) >/dev/null; \
	else echo "make deps: all present"; fi

vet:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# unit runs every package's tests; packages whose TestMain calls bed.Main boot
# their own UML guest and run their kernel tests inside it.
unit:
	@rm -f $(BIN)/kernel-tests.txt; mkdir -p $(BIN)
	@set -o pipefail; L4LB_BED_SUMMARY=$(CURDIR)/$(BIN)/kernel-tests.txt $(GO) test -count=1 -timeout 20m $(PKGS) 2>&1 | tee $(BIN)/unit.log; rc=$$?; \
	echo "== real-kernel tests (run inside the User-Mode Linux guest):"; \
	cat $(BIN)/kernel-tests.txt 2>/dev/null || echo "none ran"; \
	echo "packages: $$(grep -c '^ok' $(BIN)/unit.log) passed, $$(grep -cP '^FAIL\t' $(BIN)/unit.log) failed"; exit $$rc

test: deps vet build unit

# demo runs the seed scenario for a person: on IPVS in the UML guest, or with
# DATAPLANE=nftables on the host kernel's nf_tables, in namespaces.
DATAPLANE ?= ipvs
demo: deps build
	DATAPLANE=$(DATAPLANE) $(GO) run ./integration/demo

fuzz:
	$(GO) test ./vip -run '^$$' -fuzz FuzzParseSpec -fuzztime 60s

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./vip ./dns

# faults: the whole fault suite in the UML guest (integration/faults), the
# long cases too (60 s of churn under CPU load, ten restarts of every
# agent); the short ones also run in `make test`.
.PHONY: faults
faults: deps build
	$(GO) test -tags faults -count=1 -timeout 60m -v ./integration/faults

# bench-scale: the control plane at scale with real agents on loopback
# (bench/scale/README.md). SCALE_FLAGS=-quick for a run of about a minute;
# L4LB_BIN=path measures that binary instead of one built from this tree.
.PHONY: bench-scale
bench-scale:
	L4LB_BIN=$(L4LB_BIN) bench/scale/run.sh $(SCALE_FLAGS)

clean:
	rm -rf $(BIN)
