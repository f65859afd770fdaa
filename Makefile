# Merge barriers for QEMU: fetch the pinned QEMU base, apply patches/, build,
# test, demonstrate; the same for the libvirt series (libvirt-patches/ on
# libvirt 11.3.0).  `make` for the demonstration, `make check` for the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := all

SRC   := out/qemu-src
BUILD := $(SRC)/build
QEMU  := out/qemu-system-x86_64
QTESTS := merge-barriers-test i440fx-test q35-test qom-test test-hmp \
          device-introspect-test
UNITS := test-string-input-visitor
# qemu-storage-daemon: the vhost-user-blk backend of tests/e2e/vhost-user-churn.sh
QSD_TARGET := storage-daemon/qemu-storage-daemon
TEST_TARGETS := $(addprefix tests/qtest/,$(QTESTS)) $(addprefix tests/unit/,$(UNITS)) \
                $(QSD_TARGET)

LVSRC := out/libvirt-src

.PHONY: all deps fetch apply build build-tests demo check check-qemu check-build-qemu \
        export check-series \
        unpatched alternative bench cover-letter bisect-check check-sanitize fuzz \
        fetch-libvirt apply-libvirt build-libvirt bisect-check-libvirt \
        clean distclean help

all: build build-libvirt demo

help:
	@echo "make               install deps, fetch QEMU 10.2.2 and libvirt 11.3.0, apply both series, build, demo"
	@echo "make check         all of the above and unpatched 10.2.2, then every test; ends with 'N passed, M failed'"
	@echo "make check-qemu    QEMU's own x86_64 qtests and unit tests on the series (failures re-run on stock 10.2.2)"
	@echo "make export        patches/ <- out/qemu-src, libvirt-patches/ <- out/libvirt-src (after editing there)"
	@echo "make check-series  fail if a patch queue and its work tree disagree"
	@echo "make build-libvirt fetch libvirt 11.3.0, apply libvirt-patches/, build (QEMU driver only)"
	@echo "make bisect-check-libvirt  build and test every prefix of the libvirt series"
	@echo "make alternative   build the unmergeable comparison variant (alternative-patches/)"
	@echo "make bench         side by side with unpatched 10.2.2: DMA and vhost churn on 4 KiB and hugepage RAM, slot-limited consumers and vhost policies, KVM large pages, update cost"
	@echo "make cover-letter  both cover letters (patches/, libvirt-patches/); the QEMU one with the latest bench"
	@echo "make bisect-check  build every prefix of the series, then run its tests"
	@echo "make check-sanitize  ASan+UBSan build; the series' qtests and the fuzzer under it"
	@echo "make fuzz          long fuzz run of the merge-barriers property (SEED=n to vary)"
	@echo "make clean         remove build trees (keeps downloads and out/qemu-src)"

deps:
	@scripts/deps.sh build vfio-user e2e libvirt-build

fetch: deps
	@scripts/fetch.sh

apply: fetch
	@scripts/series.sh apply

build: apply
	@BUILD_TARGETS="$(QSD_TARGET)" scripts/build.sh
	@cmp -s $(BUILD)/qemu-system-x86_64 $(QEMU) || install -m 755 $(BUILD)/qemu-system-x86_64 $(QEMU)
	@echo "binary: $(QEMU) ($$($(QEMU) --version | head -n 1))"

build-tests: build
	@BUILD_TARGETS="$(TEST_TARGETS)" scripts/build.sh

demo: build
	@scripts/demo.sh

fetch-libvirt: deps
	@scripts/fetch.sh libvirt

apply-libvirt: fetch-libvirt
	@scripts/series.sh --queue libvirt apply

build-libvirt: apply-libvirt
	@scripts/build-libvirt.sh

bisect-check-libvirt: apply-libvirt
	@scripts/bisect-check-libvirt.sh

# unpatched: the stock 10.2.2 build that tests/e2e compares with and
# migrates to and from
check: build-tests build-libvirt unpatched check-build-qemu
	@QTESTS="$(QTESTS)" UNITS="$(UNITS)" scripts/run-tests.sh

# QEMU's own test programs (qtests, unit tests), as `make check-build` in
# the build tree builds them
check-build-qemu: build-tests
	@echo "build: QEMU's test programs (make check-build in $(BUILD))"
	@CCACHE_BASEDIR=$(CURDIR) CCACHE_NOHASHDIR=true \
	    $(MAKE) -C $(BUILD) check-build > out/check-build.log 2>&1 || \
	    { tail -n 20 out/check-build.log; echo "check-build failed (log: out/check-build.log)"; exit 1; }

# QEMU's x86_64 qtests and unit tests alone (scripts/qemu_suite.py)
check-qemu: check-build-qemu unpatched
	@scripts/run-tests.sh qemu

UNPATCHED := out/qemu-unpatched/build/qemu-system-x86_64

unpatched: apply
	@scripts/build-unpatched.sh

ALTERNATIVE := out/qemu-alternative/build/qemu-system-x86_64

# the comparison variant (alternative-patches/), not part of the series
alternative: apply
	@scripts/build-alternative.sh

VARIANTS := --variant "always (v3)=out/variants/always/qemu-system-x86_64" \
            --variant "configurable slots only=out/variants/configurable-slots/qemu-system-x86_64"

bench: build unpatched alternative
	@scripts/build-vfio-user.sh
	@scripts/build-vhost-variants.sh
	@echo "bench: consumers with a fixed number of mappings (DPDK vhost-user, vfio-user), unpatched vs patched vs vhost policies"
	@/usr/bin/python3 scripts/vhost_slots.py --unpatched $(UNPATCHED) \
	    --alternative $(ALTERNATIVE) $(VARIANTS) \
	    --markdown out/bench-vhost-slots.md --csv out/bench-vhost-slots.csv
	@echo "bench: DMA churn while SeaBIOS and OVMF boot, unpatched vs patched"
	@/usr/bin/python3 scripts/dma_churn.py --unpatched $(UNPATCHED) \
	    --alternative $(ALTERNATIVE) --csv out/bench-dma-churn.csv --svg out/bench-dma-churn.svg \
	    --markdown out/bench-dma-churn.md
	@echo "bench: vhost-user backend (qemu-storage-daemon) memory table churn, unpatched vs patched"
	@/usr/bin/python3 scripts/vhost_churn.py --unpatched $(UNPATCHED) \
	    --alternative $(ALTERNATIVE) $(VARIANTS) \
	    --csv out/bench-vhost-churn.csv --svg out/bench-vhost-churn.svg \
	    --markdown out/bench-vhost-churn.md
	@echo "bench: the multi-process proxy with a remote LSI controller (KVM), 4 KiB and 2 MiB RAM"
	@/usr/bin/python3 scripts/proxy_churn.py --unpatched $(UNPATCHED) \
	    --markdown out/bench-proxy-churn.md
	@echo "bench: KVM large pages with hugepage-backed RAM and a barrier inside a 1 GiB page"
	@/usr/bin/python3 scripts/kvm_largepages.py --csv out/bench-kvm-largepages.csv \
	    --markdown out/bench-kvm-largepages.md
	@echo "bench: memory topology update cost, unpatched vs patched with 0/1/16/64 barriers"
	@/usr/bin/python3 scripts/bench_cost.py --unpatched $(UNPATCHED) \
	    --alternative $(ALTERNATIVE) \
	    --csv out/bench-cost.csv --svg out/bench-cost.svg \
	    --markdown out/bench-cost.md
	@echo "bench: unpatched, the unmergeable alternative and the series in one table"
	@/usr/bin/python3 scripts/compare_alternative.py --markdown out/bench-compare.md \
	    --csv out/bench-compare.csv --mtree $(UNPATCHED) $(ALTERNATIVE) $(QEMU)
	@echo "bench: tables into docs/measurements/ and the README's summaries"
	@/usr/bin/python3 scripts/readme_tables.py

bisect-check: apply
	@scripts/bisect-check.sh

check-sanitize: apply
	@scripts/check-sanitize.sh

SEED ?= 20261122
fuzz: build
	@/usr/bin/python3 scripts/fuzz_property.py --qemu $(QEMU) --seed $(SEED) \
	    --cli 3000 --qmp 100000

export:
	@scripts/series.sh export
	@if [ -d $(LVSRC)/.git ]; then scripts/series.sh --queue libvirt export; \
	 else echo "series: no $(LVSRC) yet: libvirt-patches/ left as is"; fi

cover-letter: apply apply-libvirt
	@/usr/bin/python3 scripts/cover_letter.py
	@/usr/bin/python3 scripts/cover_letter.py --queue libvirt

check-series:
	@scripts/series.sh check
	@scripts/series.sh --queue libvirt check

clean:
	-git -C $(SRC) worktree remove --force ../qemu-bisect 2>/dev/null
	-git -C $(LVSRC) worktree remove --force ../libvirt-bisect 2>/dev/null
	rm -rf $(BUILD) $(SRC)/build-* out/qemu-unpatched out/qemu-bisect out/libvfio-user-build \
	    out/test-logs $(QEMU) $(LVSRC)/build out/libvirt-bisect

distclean:
	rm -rf out
