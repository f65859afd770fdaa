#!/usr/bin/env python3
"""QEMU's own x86_64 qtests and unit tests on the patched tree.

Runs `meson test --suite qtest-x86_64 --suite unit` in out/qemu-src/build
(the test binaries are built first with `make check-build`, see the
Makefile's check-qemu target), as a maintainer runs the suite before
merging.  Every subtest counts: each test program's TAP lines are printed
again, numbered for this run, so that scripts/run-tests.sh counts them in
its closing line.

A test that fails in the full run (two test programs at a time on two
cores) is first run again alone on the series, up to RERUNS times.  If a
re-run passes, the test is flaky under load, not broken by the series: its
subtests count from the passing re-run and it is named as flaky in the
output and in the table.  If every re-run fails too, the test is run against stock QEMU 10.2.2, as
often: a qtest with QTEST_QEMU_BINARY set to the unpatched binary, a unit
test built in the unpatched tree (out/qemu-unpatched/build).  If it fails
there too, it is reported as skipped ("fails on stock 10.2.2 too"); if it
passes there, it is a regression and fails.  Tests that meson skips
(exit status 77: what the machine lacks, such as KVM or swtpm) are
reported as skipped with the test's own reason.

    scripts/qemu_suite.py [--markdown FILE] [--jobs N]

Speaks TAP.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "scripts"))
from mblib.report import write_markdown  # noqa: E402

BUILD = os.path.join(TOP, "out/qemu-src/build")
STOCK_BUILD = os.path.join(TOP, "out/qemu-unpatched/build")
SUITES = ["qtest-x86_64", "unit"]
RERUNS = 3
TAP_RE = re.compile(r"^(not ok|ok)\b\s*\d*\s*-?\s*(.*)$")


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def line(self, status, desc, directive=""):
        self.n += 1
        if status == "not ok" and not directive:
            self.failed += 1
        print(f"{status} {self.n} {desc}{' # ' + directive if directive else ''}",
              flush=True)


def run_meson(jobs, names=None, env=None, build=BUILD):
    """meson test; returns the parsed testlog.json entries."""
    log = os.path.join(build, "meson-logs", "testlog.json")
    if os.path.exists(log):
        os.unlink(log)
    cmd = ["meson", "test", "--no-rebuild", "-C", build,
           "--num-processes", str(jobs), "--timeout-multiplier", "3"]
    if names:
        cmd += names
    else:
        for s in SUITES:
            cmd += ["--suite", s]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env)
    entries = []
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                if line.strip():
                    entries.append(json.loads(line))
    return entries


def subtests(entry):
    """(status, name, directive) for each TAP line of a test's output."""
    out = []
    for line in (entry.get("stdout") or "").splitlines():
        m = TAP_RE.match(line)
        if not m:
            continue
        rest = m.group(2)
        directive = ""
        if "#" in rest:
            rest, directive = [x.strip() for x in rest.split("#", 1)]
        out.append((m.group(1), rest, directive))
    return out


def selector(name):
    """The test's name as meson test takes it on its command line.

    testlog.json names a test "PROJECT:SUITE+SUITE / NAME"; meson test
    selects it by "PROJECT:NAME" (the full name selects nothing).
    """
    if " / " not in name:
        return name
    head, test = name.split(" / ", 1)
    return f"{head.split(':', 1)[0]}:{test}"


def suites_of(name):
    """The suites in a testlog.json name ("qemu:qtest+qtest-x86_64 / ...")."""
    head = name.split(" / ", 1)[0]
    return head.split(":", 1)[-1].split("+")


def run_one(name, jobs, build=BUILD):
    """One test alone through meson; its testlog entry.

    Raises RuntimeError if meson ran anything else than that one test: a
    verdict must never rest on a run that did not happen.
    """
    entries = run_meson(jobs, [selector(name)], build=build)
    if len(entries) != 1 or entries[0].get("name") != name:
        raise RuntimeError(f"meson test {selector(name)} in {build} ran "
                           f"{[e.get('name') for e in entries]}, not {name}")
    return entries[0]


def rerun_series(entry):
    """Run a failing test alone on the series again, up to RERUNS times.

    Returns (attempts, the first passing testlog entry or None).
    """
    for attempt in range(1, RERUNS + 1):
        again = run_one(entry["name"], 1)
        if again.get("result") in ("OK", "EXPECTEDFAIL"):
            return attempt, again
    return RERUNS, None


def stock_fails_once(entry, jobs):
    """Run a test once against stock 10.2.2: True if it fails there."""
    name = entry["name"]
    if any(s.startswith("qtest") for s in suites_of(name)):
        env = dict(os.environ)
        cmd = entry["command"]
        env.update(entry.get("env") or {})
        env["QTEST_QEMU_BINARY"] = os.path.join(STOCK_BUILD,
                                                "qemu-system-x86_64")
        r = subprocess.run(cmd, env=env, capture_output=True, text=True,
                           timeout=1800, cwd=BUILD)
        return r.returncode not in (0, 77)
    # a unit test: build it in the unpatched tree and run it there
    target = os.path.relpath(entry["command"][0], BUILD)
    b = subprocess.run(["ninja", "-C", STOCK_BUILD, target],
                       capture_output=True, text=True)
    if b.returncode:
        raise RuntimeError(f"could not build {target} in {STOCK_BUILD}: "
                           f"{b.stdout[-300:]}")
    return run_one(name, jobs, build=STOCK_BUILD).get("result") not in \
        ("OK", "SKIP")


def stock_verdict(entry, jobs):
    """A test that failed on the series every time: does stock fail too?

    Run as often as the series was (1 + RERUNS); True only if stock
    fails every time, as the series did.
    """
    for _ in range(1 + RERUNS):
        if not stock_fails_once(entry, jobs):
            return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--markdown")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(BUILD, "build.ninja")):
        print(f"1..0 # SKIP no {BUILD} (make build-tests)")
        return 0
    start = time.time()
    entries = run_meson(args.jobs)
    if not entries:
        print("Bail out! meson test ran no test (see "
              f"{BUILD}/meson-logs/testlog.txt)")
        return 1
    tap = Tap()
    rows = []
    flaky = []
    for e in sorted(entries, key=lambda x: x["name"]):
        name = e["name"]
        result = e.get("result")
        subs = subtests(e)
        stock = ""
        if result == "SKIP":
            # the test's own reason: its skipped subtests, or what it said
            skips = [d for _, _, d in subs if d.upper().startswith("SKIP")]
            said = [ln.strip() for ln in ((e.get("stderr") or "") + "\n" +
                                          (e.get("stdout") or ""))
                    .splitlines() if ln.strip() and not TAP_RE.match(ln)
                    and not ln.startswith(("# random seed", "1..0"))]
            reason = (skips[0][4:].strip() if skips else
                      said[-1] if said else
                      "it registered no case (1..0): what its cases need "
                      "is missing from this build or machine")
            tap.line("ok", name, f"SKIP {reason[:150]}")
            rows.append((name, 0, f"skipped: {reason[:80]}", "-"))
            continue
        if result in ("OK", "EXPECTEDFAIL"):
            for status, desc, directive in subs or [("ok", "", "")]:
                tap.line(status, f"{name}: {desc}".rstrip(": "), directive)
            rows.append((name, len(subs), "pass", "-"))
            continue
        # failed in the full run: alone on the series again, then stock
        print(f"# {name}: {result} in the full run; re-running it alone "
              f"on the series (up to {RERUNS} times)", flush=True)
        try:
            attempts, passed = rerun_series(e)
            stock_fails = None if passed else stock_verdict(e, args.jobs)
        except (subprocess.TimeoutExpired, OSError, RuntimeError) as ex:
            # no verdict without the runs it rests on: a failure, named
            tap.line("not ok", f"{name}: {result} in the full run; its "
                     f"re-run could not be made: {ex}")
            rows.append((name, len(subs), f"{result}, re-run not made",
                         "not run"))
            continue
        if passed:
            subs = subtests(passed)
            for status, desc, directive in subs or [("ok", "", "")]:
                tap.line(status, f"{name}: {desc}".rstrip(": "), directive)
            flaky.append(f"{name}: {result} in the full run, passed alone "
                         f"on re-run {attempts}")
            rows.append((name, len(subs),
                         f"flaky: {result} in the full run, passed alone on "
                         f"re-run {attempts}", "not run"))
            print(f"# {flaky[-1]}", flush=True)
            continue
        stock = "fails" if stock_fails else "passes"
        bad = [s for s in subs if s[0] == "not ok" and not s[2]]
        for status, desc, directive in subs:
            if status == "not ok" and not directive and stock_fails:
                tap.line("ok", f"{name}: {desc}",
                         "SKIP fails on stock 10.2.2 too")
            else:
                tap.line(status, f"{name}: {desc}", directive)
        if not bad:
            # failed without a failing subtest (crash, timeout)
            if stock_fails:
                tap.line("ok", name, f"SKIP {result} on stock 10.2.2 too")
            else:
                tap.line("not ok", f"{name}: {result} {1 + RERUNS} times "
                         "(regression: passes on stock 10.2.2)")
        rows.append((name, len(subs),
                     "fails on stock too" if stock_fails else
                     f"REGRESSION ({result})", stock))
        print(f"# {name}: {result} on the series {1 + RERUNS} times, "
              f"{stock} on stock 10.2.2")
    secs = time.time() - start
    print(f"# {len(entries)} test programs, {tap.n} results, {secs:.0f} s")
    for f in flaky:
        print(f"# flaky: {f}")
    if args.markdown:
        write_markdown(args.markdown, [
            "test", "subtests", "series",
            "stock 10.2.2 (run only where the series fails)"],
            [[str(c) for c in r] for r in rows],
            [f"{len(entries)} test programs, {tap.n} results, {secs:.0f} s "
             f"on {args.jobs} jobs; flaky (failed in the full run, passed "
             f"alone): {len(flaky)}."])
    print(f"1..{tap.n}")
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
