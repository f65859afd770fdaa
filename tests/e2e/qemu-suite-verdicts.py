#!/usr/bin/env python3
"""scripts/qemu_suite.py's verdicts on known meson results.

The verdict on a test of QEMU's own suite that fails in the full run must
not depend on luck, and the real suite cannot be made to fail on demand.
So meson and the stock runs are replaced by scripted results here, and the
script's TAP and table are read back:

- a test that times out in the full run and passes alone on the series is
  flaky: its subtests count from the passing re-run, it is named, stock is
  not asked (CI of 2026-12-05: test-nested-aio-poll, which hangs under
  load on stock and the series alike: 2 and 4 hangs in 18000 runs each,
  docs/measurements/qemu-suite.md);
- a test that fails on every re-run and passes on stock is a regression;
- a test that fails on every re-run and on stock every time is skipped;
- one pass on stock among failures is enough to call it a regression;
- a re-run that runs nothing fails, named; and, against the real meson of
  both trees, the name given to meson selects exactly the test.

Speaks TAP.
"""

import contextlib
import io
import os
import sys
import tempfile

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(TOP, "scripts"))
import qemu_suite as qs  # noqa: E402


def entry(test, result, subs):
    """A testlog.json entry of the unit test TEST, named as meson names it."""
    out = "\n".join(f"{st} {i + 1} /{test}/{d}" for i, (st, d)
                    in enumerate(subs))
    return {"name": f"qemu:unit / {test}", "result": result,
            "command": [os.path.join(qs.BUILD, "tests/unit", test)],
            "stdout": out + f"\n1..{len(subs)}\n"}


def run(full, series_reruns, stock):
    """Run qemu_suite.main() on scripted results.

    full: the entries of the full run; series_reruns: name -> list of
    results of the re-runs alone, in order; stock: name -> list of
    booleans, True where a stock run fails.  Returns (exit status, TAP
    output, table, calls).
    """
    calls = {"series": [], "stock": []}
    reruns = {k: list(v) for k, v in series_reruns.items()}
    stocks = {k: list(v) for k, v in stock.items()}

    def fake_meson(jobs, names=None, env=None, build=qs.BUILD):
        if not names:
            return full
        # as meson test does: "qemu:NAME" selects, the full name does not
        if not names[0].startswith("qemu:") or " / " in names[0]:
            return []
        test = names[0][len("qemu:"):]
        calls["series"].append(test)
        res = reruns[test].pop(0)
        if res is None:
            return []
        subs = [("ok" if res == "OK" else "not ok", "a")]
        return [entry(test, res, subs)]

    def fake_stock(e, jobs):
        test = e["name"].split(" / ")[1]
        calls["stock"].append(test)
        # not scripted: stock passes (a test asked when it should not be)
        return stocks.get(test, [False]).pop(0)

    saved = (qs.run_meson, qs.stock_fails_once, qs.BUILD, sys.argv)
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "build"))
        open(os.path.join(d, "build", "build.ninja"), "w").close()
        md = os.path.join(d, "table.md")
        qs.run_meson, qs.stock_fails_once = fake_meson, fake_stock
        qs.BUILD = os.path.join(d, "build")
        sys.argv = ["qemu_suite.py", "--jobs", "2", "--markdown", md]
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                rc = qs.main()
        finally:
            qs.run_meson, qs.stock_fails_once, qs.BUILD, sys.argv = saved
        table = open(md).read()
    return rc, buf.getvalue(), table, calls


def tap_lines(out):
    return [ln for ln in out.splitlines() if ln.startswith(("ok", "not ok"))]


checks = []


def check(desc, ok, detail=""):
    checks.append((desc, ok, detail))


# the CI failure: a timeout in the full run, a pass alone
good = entry("test-good", "OK", [("ok", "x"), ("ok", "y")])
hang = entry("test-nested-aio-poll", "TIMEOUT", [])
rc, out, table, calls = run([good, hang],
                            {"test-nested-aio-poll": ["OK"]}, {})
lines = tap_lines(out)
check("flaky: a timeout that passes alone on re-run 1 does not fail",
      rc == 0 and not any(ln.startswith("not ok") for ln in lines), out)
check("flaky: the passing re-run's subtests count (3 results)",
      len(lines) == 3, "\n".join(lines))
check("flaky: named in the output and the table, stock not run",
      "# flaky: qemu:unit / test-nested-aio-poll: TIMEOUT in the full run, "
      "passed alone "
      "on re-run 1" in out and "flaky: TIMEOUT in the full run" in table
      and calls["stock"] == [], f"{calls}\n{table}")

# passes only on the third re-run: still flaky, three re-runs made
rc, out, table, calls = run([hang], {"test-nested-aio-poll":
                                     ["TIMEOUT", "FAIL", "OK"]}, {})
check("flaky: passing on re-run 3 of 3 is flaky, after 3 re-runs",
      rc == 0 and calls["series"] == ["test-nested-aio-poll"] * 3
      and "passed alone on re-run 3" in out, f"{calls}\n{out}")

# fails every time on the series, passes on stock: regression
bad = entry("test-broken", "FAIL", [("ok", "x"), ("not ok", "y")])
rc, out, table, calls = run([good, bad], {"test-broken": ["FAIL"] * 3},
                            {"test-broken": [False]})
check("regression: fails on 3 re-runs, passes on stock: exit 1, not ok",
      rc == 1 and "not ok 2 qemu:unit / test-broken: /test-broken/y" in out
      and "REGRESSION (FAIL)" in table and calls["stock"] == ["test-broken"],
      f"{calls}\n{out}")

# a crash without subtests, regression: one not ok line of its own
crash = entry("test-crash", "ERROR", [])
rc, out, table, calls = run([crash], {"test-crash": ["ERROR"] * 3},
                            {"test-crash": [True, False]})
check("regression: one pass on stock among failures is enough",
      rc == 1 and "qemu:unit / test-crash: ERROR 4 times (regression: "
      "passes on stock "
      "10.2.2)" in out and len(calls["stock"]) == 2, f"{calls}\n{out}")

# fails everywhere, every time: skipped with the reason
rc, out, table, calls = run([bad], {"test-broken": ["FAIL"] * 3},
                            {"test-broken": [True] * 4})
check("fails on stock too (4 of 4): skipped, exit 0",
      rc == 0 and "ok 2 qemu:unit / test-broken: /test-broken/y # SKIP fails "
      "on stock "
      "10.2.2 too" in out and "fails on stock too" in table
      and len(calls["stock"]) == 4, f"{calls}\n{out}")

# a re-run that runs nothing is no verdict: a failure, named
rc, out, table, calls = run([hang], {"test-nested-aio-poll": [None]}, {})
check("a re-run that ran no test fails, stock not asked",
      rc == 1 and "re-run could not be made" in out
      and calls["stock"] == [], f"{calls}\n{out}")

# the selectors against the real meson of the patched and stock trees:
# each must run exactly the test it names (CI of 2026-12-05 asked stock for
# the full name, meson ran nothing, and that was read as "passes on stock")
STOCK_QEMU = os.path.join(qs.STOCK_BUILD, "qemu-system-x86_64")
if not os.path.exists(os.path.join(qs.BUILD, "build.ninja")) or \
        not os.path.exists(STOCK_QEMU):
    checks.append(("real meson: the selectors # SKIP no out/qemu-src/build "
                   "or stock binary (make check-build-qemu unpatched)",
                   True, ""))
else:
    for name in ["qemu:unit / test-nested-aio-poll",
                 "qemu:qtest+qtest-x86_64 / qtest-x86_64/machine-none-test"]:
        try:
            got = qs.run_one(name, 1)
            check(f"real meson runs {name} alone on the series "
                  f"({got['result']})", got["result"] == "OK", str(got))
        except RuntimeError as ex:
            check(f"real meson runs {name} alone on the series", False,
                  str(ex))
    qt = {"name": "qemu:qtest+qtest-x86_64 / qtest-x86_64/machine-none-test",
          "command": [os.path.join(qs.BUILD,
                                   "tests/qtest/machine-none-test")],
          "env": {}}
    check("real stock run of a qtest (machine-none-test) passes on stock",
          qs.stock_fails_once(qt, 1) is False)
    ut = {"name": "qemu:unit / test-nested-aio-poll",
          "command": [os.path.join(qs.BUILD,
                                   "tests/unit/test-nested-aio-poll")]}
    try:
        check("real stock run of a unit test (test-nested-aio-poll, built in "
              "the stock tree) passes on stock",
              qs.stock_fails_once(ut, 1) is False)
    except RuntimeError as ex:
        check("real stock run of a unit test (test-nested-aio-poll)", False,
              str(ex))

for i, (desc, ok, detail) in enumerate(checks, 1):
    print(f"{'ok' if ok else 'not ok'} {i} {desc}")
    if not ok:
        for ln in detail.splitlines()[:30]:
            print(f"#   {ln}")
print(f"1..{len(checks)}")
sys.exit(0 if all(ok for _, ok, _ in checks) else 1)
