#!/usr/bin/env bash
# Build every prefix of the series (one git worktree, checked out commit by
# commit: ninja rebuilds what each patch changes; ccache), so that every
# patch builds on its own; then run the series' tests on the last one.
set -uo pipefail
cd "$(dirname "$0")/.."
SRC=out/qemu-src
W=out/qemu-bisect
scripts/series.sh worktree "$W" || exit 1
commits=$(git -C "$SRC" rev-list --reverse debian-base..HEAD)
total=$(echo "$commits" | wc -w)
i=0
for c in $commits; do
    i=$((i + 1))
    subject=$(git -C "$SRC" log -1 --format=%s "$c")
    echo "bisect-check: [$i/$total] $subject"
    git -C "$W" checkout -q --detach "$c" || exit 1
    # The binary, and the tests that exist at this point of the series.
    targets="tests/unit/test-string-input-visitor tests/qtest/i440fx-test tests/qtest/q35-test"
    [ -e "$W/tests/qtest/merge-barriers-test.c" ] && targets+=" tests/qtest/merge-barriers-test"
    if ! BUILD_TARGETS="$targets" scripts/build.sh "$W" build; then
        echo "bisect-check: FAILED to build patch $i/$total: $subject" >&2
        exit 1
    fi
done
echo "bisect-check: all $total prefixes build; running the series' tests on the last"
BUILD=$W/build QTESTS="merge-barriers-test i440fx-test q35-test" \
    UNITS=test-string-input-visitor LOGS_SUFFIX=-bisect exec scripts/run-tests.sh qtest unit
