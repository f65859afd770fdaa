#!/usr/bin/env bash
# Run every test of the project and count them.
#   scripts/run-tests.sh [SUITE...]     suites: qtest unit libvirt series fuzz e2e qemu (default: all),
#                                       sanlogs (scan $SANLOGS; used by check-sanitize)
# Each test program speaks TAP; every "ok"/"not ok" line counts as one test.
# A program that fails without reporting a failed test counts one failure.
# The last line is "N passed, M failed" (", K skipped" when some are).
set -uo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
BUILD=${BUILD:-out/qemu-src/build}
LOGS=out/test-logs${LOGS_SUFFIX:-}
QTESTS=${QTESTS:-merge-barriers-test i440fx-test q35-test qom-test test-hmp device-introspect-test}
UNITS=${UNITS:-test-string-input-visitor}
SUITES=("${@:-qtest unit libvirt series fuzz e2e qemu}")
SUITES=(${SUITES[*]})

mkdir -p "$LOGS"
passed=0 failed=0 skipped=0
failures=()

# run NAME TIMEOUT CMD...: run one TAP-speaking program and count its tests.
run() {
    local name=$1 limit=$2 log="$LOGS/${1//\//_}.log" rc p f s start
    shift 2
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 </dev/null
    rc=$?
    p=$(grep -cE '^ok [0-9]+' "$log")
    s=$(grep -cE '^ok [0-9]+.*# *(SKIP|skip)' "$log")
    f=$(grep -cE '^not ok [0-9]+' "$log")
    p=$((p - s))
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        [ $rc -eq 124 ] && echo "# timed out after $limit s" >>"$log"
    fi
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
    if [ "$f" -gt 0 ]; then
        failures+=("$name")
        printf 'FAIL  %-44s %3d passed, %d failed (%ds) log: %s\n' "$name" "$p" "$f" \
            $(( $(date +%s) - start )) "$log"
        grep -E '^not ok|^Bail out|ERROR|# timed out' "$log" | head -n 5 | sed 's/^/      /'
    else
        printf 'ok    %-44s %3d passed%s (%ds)\n' "$name" "$p" \
            "$([ "$s" -gt 0 ] && echo ", $s skipped")" $(( $(date +%s) - start ))
    fi
}

for suite in "${SUITES[@]}"; do
    case "$suite" in
    qtest)
        echo "== QEMU qtests (x86_64): $QTESTS"
        for t in $QTESTS; do
            QTEST_QEMU_BINARY=$TOP/$BUILD/qemu-system-x86_64 \
                run "qtest/$t" 900 "$BUILD/tests/qtest/$t"
        done ;;
    unit)
        echo "== QEMU unit tests: $UNITS"
        for t in $UNITS; do
            run "unit/$t" 300 "$BUILD/tests/unit/$t"
        done ;;
    libvirt)
        echo "== libvirt's test suite on the patched libvirt (out/libvirt-src/build)"
        run "libvirt/meson-test" 900 tests/libvirt-unit.sh ;;
    series)
        echo "== patch series: checkpatch.pl, cover letters, patches/ = out/qemu-src, libvirt-patches/ = out/libvirt-src"
        run "series/checkpatch" 300 scripts/checkpatch-series.sh
        for q in qemu libvirt; do
            run "series/$q-cover-letter" 60 bash -c \
                'if /usr/bin/python3 scripts/cover_letter.py --queue $0 --check; then echo "ok 1 $0 cover letter lists the series"; else echo "not ok 1 $0 cover letter is out of date (make cover-letter)"; exit 1; fi' "$q"
            run "series/$q-sync" 120 bash -c \
                'if scripts/series.sh --queue $0 check; then echo "ok 1 $0 patch queue matches its work tree"; else echo "not ok 1 $0 patch queue and work tree disagree"; exit 1; fi' "$q"
        done ;;
    fuzz)
        echo "== merge-barriers property fuzzer (fixed seed, short run)"
        run "fuzz/merge-barriers" 1200 /usr/bin/python3 scripts/fuzz_property.py \
            --qemu "$TOP/$BUILD/qemu-system-x86_64" ;;
    qemu)
        echo "== QEMU's own test suite: meson test --suite qtest-x86_64 --suite unit (failures re-run on stock 10.2.2)"
        run "qemu/meson-test" 3600 /usr/bin/python3 scripts/qemu_suite.py \
            --markdown out/qemu-suite.md ;;
    sanlogs)
        echo "== sanitizer reports in ${SANLOGS:?}"
        run "sanitize/reports" 60 bash -c '
            bad=$(grep -lE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$0"/* 2>/dev/null)
            if [ -n "$bad" ]; then
                echo "not ok 1 sanitizer reports:"; head -n 30 $bad | sed "s/^/# /"; exit 1
            fi
            echo "ok 1 no sanitizer report ($(ls "$0" | wc -l) log files: warnings only)"' "$SANLOGS" ;;
    e2e)
        echo "== end-to-end tests"
        for t in tests/e2e/*.sh tests/e2e/*.py; do
            [ -e "$t" ] || continue
            case "$t" in
            *.sh) run "e2e/$(basename "$t" .sh)" 1800 bash "$t" ;;
            *.py) run "e2e/$(basename "$t" .py)" 1800 /usr/bin/python3 "$t" ;;
            esac
        done ;;
    *) echo "unknown suite '$suite'" >&2; exit 2 ;;
    esac
done

echo
[ ${#failures[@]} -eq 0 ] || echo "failed: ${failures[*]}"
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
