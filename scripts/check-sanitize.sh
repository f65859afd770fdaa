#!/usr/bin/env bash
# A second build with AddressSanitizer and UndefinedBehaviorSanitizer
# (out/qemu-src/build-sanitize), then the series' qtests, the string input
# visitor unit test and the property fuzzer against it.  Any sanitizer
# report fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."
B=out/qemu-src/build-sanitize
BUILD_TARGETS="tests/qtest/merge-barriers-test tests/unit/test-string-input-visitor" \
    scripts/build.sh out/qemu-src build-sanitize --enable-asan --enable-ubsan \
    --disable-werror || exit 1
# QEMU has known leaks at exit that are not this series'; UBSan and ASan
# errors stop the process, which the tests see as a failure.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1
BUILD=$B QTESTS=merge-barriers-test UNITS=test-string-input-visitor \
    LOGS_SUFFIX=-sanitize exec scripts/run-tests.sh qtest unit fuzz
