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
# errors stop the process, which the tests see as a failure.  Sanitizer
# output goes to files (the tests check QEMU's stderr line by line, and ASan
# warns once about QEMU's ucontext coroutines), which the last suite scans.
SANLOGS=$PWD/out/sanitizer-logs
rm -rf "$SANLOGS"; mkdir -p "$SANLOGS"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$SANLOGS/asan
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$SANLOGS/ubsan
BUILD=$B QTESTS=merge-barriers-test UNITS=test-string-input-visitor \
    LOGS_SUFFIX=-sanitize SANLOGS=$SANLOGS exec scripts/run-tests.sh qtest unit fuzz sanlogs
