#!/usr/bin/env python3
"""Fuzz the merge-barriers machine property.

Generated values (well-formed lists with known meaning, values near every
limit, list separators, size suffixes, whitespace, huge lists, random text
and random JSON) go through three paths:

  cli      -machine pc,merge-barriers=VALUE (one QEMU per value): QEMU either
           starts (and qom-get answers) or exits with status 1 and one line
           on stderr; never a signal, an assertion, a sanitizer report or a
           hang
  qom-set  QMP qom-set on one QEMU before machine init (-preconfig): a
           value or a QMP error; after an error the previous barriers stay
  hmp      HMP qom-set on a running QEMU: the barriers are fixed once the
           machine is created, so every value is refused with one message
           and nothing changes

Every accepted value must read back canonical (sorted, no duplicates, each
above 0 and 64 KiB aligned, at most 64); values whose meaning is known by
construction must read back exactly that (or be refused when invalid), and
the command line and qom-set must agree on the same text.  Fixed seed; TAP output.

  fuzz_property.py [--seed N] [--cli N] [--qmp N] [--qemu BIN]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

from mblib.qmp import QMP, stop

PAGE = 0x10000       # ADDRESS_SPACE_MERGE_BARRIER_ALIGN: 64 KiB
MAX = 64
U64 = (1 << 64) - 1
SUFFIXES = [("K", 10), ("M", 20), ("G", 30), ("T", 40), ("P", 50), ("E", 60)]
ERROR = "error"
BAD_OUTPUT = ("Assertion", "runtime error:", "AddressSanitizer",
              "Segmentation", "core dumped", "Aborted", "LeakSanitizer")


def render(rng, n):
    """Spell the size n in one of the forms qemu_strtosz() accepts."""
    forms = [str(n), f"0x{n:x}", f"0X{n:X}", f"{n}B", f"{n}b"]
    for letter, shift in SUFFIXES:
        if n and n % (1 << shift) == 0:
            v = n >> shift
            forms.append(f"{v}{rng.choice([letter, letter.lower()])}")
    return rng.choice(forms)


def aligned(rng):
    kind = rng.random()
    if kind < 0.3:
        return rng.randrange(1, 1 << 20) * PAGE          # low, dense
    if kind < 0.5:
        return rng.choice([PAGE, 1 << 20, 3 << 30, 1 << 32, 1 << 63,
                           U64 + 1 - PAGE, 1 << 40, 0xffff0000])
    return rng.randrange(1, (U64 + 1) // PAGE) * PAGE


def well_formed(rng):
    """(text, expected): a list whose meaning is known."""
    k = rng.choice([0, 1, 1, 2, 3, 5, 16, 63, 64, 65, 70, 200])
    pool = [aligned(rng) for _ in range(max(1, k))]
    vals = [rng.choice(pool) for _ in range(k)]     # duplicates on purpose
    if rng.random() < 0.3:                          # distinct values
        vals = list(dict.fromkeys(aligned(rng) for _ in range(k)))
    text = ",".join(render(rng, v) for v in vals)
    uniq = sorted(set(vals))
    return text, (ERROR if len(uniq) > MAX else uniq)


def near_limits(rng):
    """(text, expected): one bad or borderline element in a good list."""
    good = [aligned(rng) for _ in range(rng.randrange(0, 4))]
    bad, exp = rng.choice([
        ("0", ERROR), ("0x0", ERROR), ("0K", ERROR),
        (str(PAGE + 1), ERROR), ("4096", ERROR), ("0x101000", ERROR), (str(U64), ERROR), (hex(U64), ERROR),
        (str(U64 + 1), ERROR), (hex(U64 + 1), ERROR), ("16E", ERROR),
        ("-1", ERROR), ("-65536", ERROR), ("-0x10000", ERROR),
        ("1.5", ERROR), ("", ERROR), ("0x1000K", ERROR), ("1Q", ERROR),
        ("4097", ERROR), ("99999999999999999999999", ERROR),
        (str(U64 + 1 - PAGE), None), ("1.5M", None), ("0.5K", None),
        (" 1M", None), ("1M ", None), ("\t65536", None), ("+65536", None),
        ("1e3", None), ("64k", None),
    ])
    items = [render(rng, v) for v in good]
    items.insert(rng.randrange(len(items) + 1), bad)
    text = ",".join(items)
    if exp is None:
        return text, None
    if text == "":
        return text, []
    return text, exp


ALPHABET = "0123456789abcdefxXkKmMgGtTpPeEbB.,-+ \t_=;:[]{}\"'\\/@#"


def garbage(rng):
    n = rng.choice([1, 2, 5, 10, 40, 300])
    if rng.random() < 0.8:
        return "".join(rng.choice(ALPHABET) for _ in range(n)), None
    return "".join(chr(rng.randrange(1, 0x2ff)) for _ in range(n)), None


def case(rng):
    r = rng.random()
    if r < 0.45:
        return well_formed(rng)
    if r < 0.75:
        return near_limits(rng)
    return garbage(rng)


def json_case(rng):
    """A JSON value for qom-set (not a string): lists and wrong types."""
    r = rng.random()
    if r < 0.5:
        vals = [aligned(rng) for _ in range(rng.choice([0, 1, 2, 64, 65]))]
        uniq = sorted(set(vals))
        return vals, (ERROR if len(uniq) > MAX else uniq)
    choices = [
        # QMP's uint64/size visitor takes a negative JSON integer modulo
        # 2^64 (a documented backward-compatibility rule of QAPI):
        ([-PAGE], [U64 + 1 - PAGE]), ([-1], ERROR), ([-4096], ERROR),
        ([0], ERROR), ([U64 + 1], ERROR),
        ([PAGE + 1], ERROR), ([1.5], ERROR), (["1M"], ERROR),
        ([None], ERROR), ([[4096]], ERROR), ({"a": 1}, ERROR),
        (None, ERROR), (True, ERROR), (4096, ERROR), (1e30, ERROR),
        ([PAGE, PAGE, 2 * PAGE], [PAGE, 2 * PAGE]), ([4096, 8192], ERROR),
        ([U64 + 1 - PAGE], [U64 + 1 - PAGE]),
    ]
    return rng.choice(choices)


def canonical(v):
    return (isinstance(v, list) and len(v) <= MAX and
            all(isinstance(x, int) and x > 0 and x % PAGE == 0 and x <= U64
                for x in v) and v == sorted(set(v)))


class Runner:
    """One QEMU: before machine init (-preconfig), or created and stopped
    (-S)."""

    def __init__(self, qemu, tmp, phase="-preconfig"):
        self.qemu, self.tmp, self.phase = qemu, tmp, phase
        self.name = phase.strip("-")
        self.proc = None

    def start(self):
        path = os.path.join(self.tmp, f"qmp-{self.name}.sock")
        if os.path.exists(path):
            os.unlink(path)
        self.err = open(self.errfile(), "wb")
        self.proc = subprocess.Popen(
            [self.qemu, "-machine", "pc", "-accel", "qtest", "-display",
             "none", "-nodefaults", self.phase, "-qmp",
             f"unix:{path},server=on,wait=off"],
            stdout=subprocess.DEVNULL, stderr=self.err)
        self.qmp = QMP(path)

    def errfile(self):
        return os.path.join(self.tmp, f"qemu-{self.name}.err")

    def stop(self):
        stop(self.proc)
        self.proc = None

    def get(self):
        return self.qmp.cmd("qom-get", path="/machine",
                            property="merge-barriers")


# What qom-set says once the machine is created
REFUSED = "merge-barriers: can only be set when the machine is created"


def run_cli(qemu, text):
    """Returns ('ok', list) or ('error', line) or ('bad', why)."""
    val = text.replace(",", ",,")
    inp = (b'{"execute":"qmp_capabilities"}\n'
           b'{"execute":"qom-get","arguments":{"path":"/machine",'
           b'"property":"merge-barriers"}}\n{"execute":"quit"}\n')
    try:
        p = subprocess.run([qemu, "-machine", f"pc,merge-barriers={val}",
                            "-accel", "qtest", "-display", "none",
                            "-nodefaults", "-S", "-qmp", "stdio"],
                           input=inp, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "bad", "hang (30 s)"
    err = p.stderr.decode(errors="replace")
    if any(b in err for b in BAD_OUTPUT) or p.returncode < 0:
        return "bad", f"status {p.returncode}: {err.strip()[:300]}"
    if p.returncode == 1:
        lines = err.rstrip("\n").split("\n")
        # QEMU quotes the value as given: a value with a line break makes
        # its one message span lines.  Still exactly one message.
        one = (len(lines) == 1 and lines[0]) if "\n" not in text else \
            err.count(os.path.basename(qemu) + ": ") == 1
        if not one:
            return "bad", f"exit 1 without one error line: {err!r}"
        return "error", lines[0]
    if p.returncode != 0:
        return "bad", f"exit status {p.returncode}: {err.strip()[:300]}"
    for line in p.stdout.decode(errors="replace").splitlines():
        msg = json.loads(line)
        if isinstance(msg.get("return"), list):
            return "ok", msg["return"]
    return "bad", "started, but qom-get gave no list"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", default="out/qemu-system-x86_64")
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--cli", type=int, default=150)
    ap.add_argument("--qmp", type=int, default=3000)
    opts = ap.parse_args()
    rng = random.Random(opts.seed)
    failures = {"cli": [], "qom-set": [], "hmp": []}
    counts = {"cli": 0, "qom-set": 0, "hmp": 0}
    seen = {}                     # text -> outcome ('ok', list) / ('error',)

    def fail(path, what):
        failures[path].append(what)
        print(f"# {path}: {what}", flush=True)

    def judge(path, text, expected, outcome, value):
        shown = repr(text)[:120]
        if outcome == "ok" and not canonical(value):
            fail(path, f"{shown}: accepted, but reads back {value!r}")
        if expected == ERROR and outcome == "ok":
            fail(path, f"{shown}: accepted ({value!r}), should be refused")
        if isinstance(expected, list) and (outcome != "ok" or
                                           value != expected):
            fail(path, f"{shown}: {outcome} {value!r}, expected {expected!r}")
        if True:
            prev = seen.setdefault(text, (outcome, value if outcome == "ok"
                                          else None))
            if prev != (outcome, value if outcome == "ok" else None):
                fail(path, f"{shown}: {outcome} {value!r}, but another path "
                           f"gave {prev!r}")

    with tempfile.TemporaryDirectory(prefix="mb-fuzz-") as tmp:
        # The command line: one QEMU per value.
        for i in range(opts.cli):
            text, expected = case(rng)
            if "\0" in text:
                continue
            outcome, value = run_cli(opts.qemu, text)
            counts["cli"] += 1
            if outcome == "bad":
                fail("cli", f"{text!r}: {value}")
                continue
            judge("cli", text, expected, outcome, value)
            if (i + 1) % 50 == 0:
                print(f"# cli: {i + 1}/{opts.cli}", file=sys.stderr,
                      flush=True)

        # qom-set (QMP) before machine init, HMP qom-set at run time.
        runner = Runner(opts.qemu, tmp)
        runner.start()
        current = runner.get()
        running = Runner(opts.qemu, tmp, "-S")
        running.start()
        fixed = running.get()
        for i in range(opts.qmp):
            use_json = rng.random() < 0.2
            if use_json:
                value, expected = json_case(rng)
                text = None
            else:
                text, expected = case(rng)
                value = text
            hmp = (text is not None and rng.random() < 0.25 and
                   text.strip() and not any(c in text for c in " \t\"\\'")
                   and text.isprintable())
            path = "hmp" if hmp else "qom-set"
            counts[path] += 1
            who = running if hmp else runner
            try:
                if hmp:
                    rsp = running.qmp.execute(
                        "human-monitor-command",
                        **{"command-line": "qom-set /machine "
                           f"merge-barriers {text}"})
                    after = running.get()
                else:
                    rsp = runner.qmp.execute("qom-set", path="/machine",
                                             property="merge-barriers",
                                             value=value)
                    ok = "return" in rsp
                    after = runner.get()
            except (EOFError, OSError, json.JSONDecodeError) as e:
                who.proc.wait(timeout=20)
                err = open(who.errfile(), errors="replace").read()
                fail(path, f"{(text if text is not None else value)!r}: "
                           f"QEMU died ({e}; status {who.proc.returncode}"
                           f"): {err.strip()[:300]}")
                who.stop()
                who.start()
                current = runner.get()
                continue
            if hmp:
                msg = rsp.get("return", "")
                if REFUSED not in msg or after != fixed:
                    fail(path, f"{text!r}: at run time {msg.strip()!r}, "
                               f"barriers {fixed!r} -> {after!r}; expected "
                               "the one refusal and no change")
                continue
            if not ok:
                if after != current:
                    fail(path, f"{value!r}: refused, but barriers changed "
                               f"{current!r} -> {after!r}")
                judge(path, text if text is not None
                      else ("json", json.dumps(value)), expected, "error", None)
            else:
                judge(path, text if text is not None
                      else ("json", json.dumps(value)), expected, "ok", after)
            current = after
            if (i + 1) % 1000 == 0:
                print(f"# qom-set/hmp: {i + 1}/{opts.qmp}", file=sys.stderr,
                      flush=True)
        for r, path in ((runner, "qom-set"), (running, "hmp")):
            alive = r.proc.poll() is None
            r.stop()
            err = open(r.errfile(), errors="replace").read()
            if any(b in err for b in BAD_OUTPUT):
                fail(path, f"sanitizer or assertion output: {err[:300]}")
            if not alive:
                fail(path, "QEMU was not running at the end")

    print("1..3")
    for n, path in enumerate(("cli", "qom-set", "hmp"), 1):
        status = "not ok" if failures[path] else "ok"
        print(f"{status} {n} {path}: {counts[path]} values (seed "
              f"{opts.seed}), {len(failures[path])} failures")
    if any(failures.values()):
        with open("out/fuzz-failures.txt", "w") as f:
            for path, items in failures.items():
                for x in items:
                    f.write(f"{path}: {x}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
