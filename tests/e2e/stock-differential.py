#!/usr/bin/env python3
"""End-to-end: the series never removes RAM that stock QEMU 10.2.2 keeps.

The same chipset register writes go to stock QEMU 10.2.2 and to the
series, both paused under TCG (so the CPUs' SMM address spaces exist),
through the qtest protocol.  After every step, "info mtree -f" of both;
for every address space it lists (system memory, cpu-memory, cpu-smm, the
PCI bus master views, intel-iommu and amd-iommu device views), the RAM
ranges above 1 MiB that the step removed: what a VFIO or vfio-user
listener would unmap, KVM would delete.  The check, per step and per
address space: the series removes no RAM that stock keeps (every address
the series removes, stock removes too).  Range counts are reported beside
stock's: where the series holds a section at rest that stock does not
have, the table says so.

Sequences: fixed-seed random ones over PAM (every value), SMRAM (G_SMRAME,
D_OPEN, D_CLS, D_LCK), ESMRAMC (T_EN with every TSEG size, H_SMRAME) and
resets, and the writes SeaBIOS, OVMF and OVMF Secure Boot really make
(tests/e2e/data/firmware-chipset-writes.json, recorded by
scripts/trace_chipset_writes.py).  Machines: pc-q35-10.2 and
pc-i440fx-10.2 against the same types on stock, pc-q35-10.1 and
pc-i440fx-10.1 with merge-layout=latest against stock's 10.1 types; q35
also with extended-tseg-mbytes 16 and 0, intel-iommu and amd-iommu.

    tests/e2e/stock-differential.py [--seed N ...] [--steps N]
                                    [--markdown FILE]

Speaks TAP: one line per (machine, sequence); a failure prints the first
step where the series removes what stock keeps, with both views of that
address space before and after.
"""

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(TOP, "scripts"))
from mblib.qmp import QMP, QTestConn, stop  # noqa: E402
from mblib.report import Tap, write_markdown  # noqa: E402

SERIES = os.environ.get("QEMU", os.path.join(TOP, "out/qemu-system-x86_64"))
STOCK = os.environ.get("UNPATCHED", os.path.join(
    TOP, "out/qemu-unpatched/build/qemu-system-x86_64"))
FIRMWARE = os.path.join(TOP, "tests/e2e/data/firmware-chipset-writes.json")
MiB = 1 << 20
SEEDS = [20261205]
STEPS = 200

# (label, kind, series -machine, stock -machine, extra arguments)
CONFIGS = [
    ("pc-q35-10.2", "q35", "pc-q35-10.2", "pc-q35-10.2", []),
    ("pc-q35-10.2, extended-tseg-mbytes=16, intel-iommu", "q35",
     "pc-q35-10.2", "pc-q35-10.2",
     ["-global", "mch.extended-tseg-mbytes=16",
      "-device", "intel-iommu", "-device", "virtio-rng-pci"]),
    ("pc-q35-10.2, extended-tseg-mbytes=0, amd-iommu", "q35",
     "pc-q35-10.2", "pc-q35-10.2",
     ["-global", "mch.extended-tseg-mbytes=0",
      "-device", "amd-iommu", "-device", "virtio-rng-pci"]),
    ("pc-q35-10.1 + merge-layout=latest", "q35",
     "pc-q35-10.1,merge-layout=latest", "pc-q35-10.1", []),
    ("pc-i440fx-10.2", "pc", "pc-i440fx-10.2", "pc-i440fx-10.2", []),
    ("pc-i440fx-10.1 + merge-layout=latest", "pc",
     "pc-i440fx-10.1,merge-layout=latest", "pc-i440fx-10.1", []),
]

PAM = {"q35": range(0x90, 0x97), "pc": range(0x59, 0x60)}
SMRAM = {"q35": 0x9d, "pc": 0x72}
ESMRAMC = 0x9e
G_SMRAME, D_LCK, D_CLS, D_OPEN, C_BASE_SEG = 0x08, 0x10, 0x20, 0x40, 0x02
T_EN, H_SMRAME = 0x01, 0x80

RANGE_RE = re.compile(r"^\s+([0-9a-f]{16})-([0-9a-f]{16}) \(prio -?\d+, "
                      r"([^)]+)\): (\S+)(?: @([0-9a-f]+))?")


def random_steps(kind, seed, n):
    """A fixed-seed random sequence of register writes and resets."""
    rng = random.Random(f"{seed}-{kind}")
    steps = []
    for _ in range(n):
        r = rng.random()
        if r < 0.06:
            steps.append(["reset"])
        elif r < 0.45:
            steps.append(["w", rng.choice(PAM[kind]), rng.randrange(256)])
        elif r < 0.70 or kind == "pc":
            val = C_BASE_SEG
            for bit, p in ((G_SMRAME, 0.6), (D_OPEN, 0.3), (D_CLS, 0.2),
                           (D_LCK, 0.05)):
                if rng.random() < p:
                    val |= bit
            steps.append(["w", SMRAM[kind], val])
        else:
            val = rng.randrange(4) << 1
            if rng.random() < 0.6:
                val |= T_EN
            if rng.random() < 0.3:
                val |= H_SMRAME
            steps.append(["w", ESMRAMC, val])
    return steps


def step_text(step):
    if step[0] == "reset":
        return "system_reset"
    return f"write 0x{step[2]:02x} to register 0x{step[1]:02x}"


class Machine:
    """A paused QEMU with a qtest socket for the writes and QMP."""

    def __init__(self, binary, mopts, extra, tmp, name):
        self.tmp = tmp
        qt_path = os.path.join(tmp, f"{name}.qtest")
        qmp_path = os.path.join(tmp, f"{name}.qmp")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(qt_path)
        srv.listen(1)
        srv.settimeout(60)
        self.err = os.path.join(tmp, f"{name}.err")
        self.proc = subprocess.Popen(
            [binary, "-machine", mopts, "-accel", "tcg", "-m", "1G",
             "-display", "none", "-nodefaults", "-no-user-config", "-S",
             "-qtest", f"unix:{qt_path}", "-qtest-log", "/dev/null",
             "-qmp", f"unix:{qmp_path},server=on,wait=off"] + extra,
            stdout=subprocess.DEVNULL, stderr=open(self.err, "w"))
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            stop(self.proc)
            raise RuntimeError(f"{binary} -machine {mopts} did not start: " +
                               open(self.err).read().strip())
        finally:
            srv.close()
        self.qt = QTestConn(conn)
        self.qmp = QMP(qmp_path)

    def step(self, step):
        if step[0] == "reset":
            self.qmp.cmd("system_reset")
        else:
            self.qt.pci_config_writeb(step[1], step[2])

    def mtree(self):
        return self.qmp.cmd("human-monitor-command",
                            **{"command-line": "info mtree -f"})

    def close(self):
        self.qt.close()
        self.qmp.close()
        stop(self.proc)


def parse_views(text):
    """info mtree -f: {AS name: (RAM ranges above 1 MiB, view text)}.
    A range: (start, end, type, region, offset), clipped to >= 1 MiB."""
    views, names, lines = {}, [], []

    def flush():
        ranges = []
        for line in lines:
            m = RANGE_RE.match(line)
            if not m:
                continue
            start, last = int(m.group(1), 16), int(m.group(2), 16)
            kind = m.group(3)
            if "ram" not in kind and "rom" not in kind:
                continue
            if last < MiB:
                continue
            off = int(m.group(5), 16) if m.group(5) else 0
            ranges.append((start, last + 1, kind, m.group(4), off))
        for n in names:
            views[n] = (ranges, "\n".join(lines))

    for line in text.splitlines():
        if line.startswith("FlatView #"):
            flush()
            names, lines = [], []
            continue
        m = re.match(r' AS "(.*)", root: ', line)
        if m:
            names.append(m.group(1))
            continue
        lines.append(line)
    flush()
    return views


def removed(before, after):
    """Ranges of `before` that `after` does not keep exactly."""
    keep = set(after)
    return [r for r in before if r not in keep]


def union(ranges):
    out = []
    for s, e in sorted((max(r[0], MiB), r[1]) for r in ranges):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def minus(a, b):
    """Intervals of `a` not covered by `b` (both unions)."""
    out = []
    for s, e in a:
        cur = s
        for bs, be in b:
            if be <= cur or bs >= e:
                continue
            if bs > cur:
                out.append((cur, bs))
            cur = max(cur, be)
        if cur < e:
            out.append((cur, e))
    return out


def fmt(intervals):
    return ", ".join(f"[0x{s:x}, 0x{e:x})" for s, e in intervals)


def run_sequence(tap, cfg, seq_name, steps, tmp, rows):
    label, kind, mseries, mstock, extra = cfg
    series = Machine(SERIES, mseries, extra, tmp, "series")
    try:
        stock = Machine(STOCK, mstock, extra, tmp, "stock")
    except Exception:
        series.close()
        raise
    try:
        prev_p, prev_s = parse_views(series.mtree()), parse_views(stock.mtree())
        if set(prev_p) != set(prev_s):
            tap.check(False, f"{label}, {seq_name}: the address spaces "
                      f"differ: series {sorted(prev_p)}, stock "
                      f"{sorted(prev_s)}")
            return
        stats = {a: {"rem_p": 0, "rem_s": 0, "more": 0, "extra": 0}
                 for a in prev_p}
        first_bad = None
        for i, step in enumerate(steps, 1):
            series.step(step)
            stock.step(step)
            cur_p, cur_s = parse_views(series.mtree()), \
                parse_views(stock.mtree())
            for a in prev_p:
                rp = removed(prev_p[a][0], cur_p[a][0])
                rs = removed(prev_s[a][0], cur_s[a][0])
                st = stats[a]
                st["rem_p"] += len(rp)
                st["rem_s"] += len(rs)
                more = len(cur_p[a][0]) - len(cur_s[a][0])
                st["extra"] = max(st["extra"], more)
                st["more"] += more > 0
                bad = minus(union(rp), union(rs))
                if bad and not first_bad:
                    first_bad = (i, step, a, bad, prev_p[a][1], cur_p[a][1],
                                 prev_s[a][1], cur_s[a][1])
            prev_p, prev_s = cur_p, cur_s
        worse = sorted(a for a in stats if stats[a]["more"])
        summary = "; ".join(
            f"{a}: removals {stats[a]['rem_s']} stock, {stats[a]['rem_p']} "
            f"series" for a in sorted(stats)
            if stats[a]["rem_s"] or stats[a]["rem_p"])
        desc = (f"{label}, {seq_name} ({len(steps)} steps, {len(stats)} "
                f"address spaces): the series removes no RAM above 1 MiB "
                f"that stock keeps")
        tap.check(first_bad is None, desc)
        print(f"# {summary or 'no removals on either side'}")
        if worse:
            print("# more RAM ranges than stock at some step: " + ", ".join(
                f"{a} (+{stats[a]['extra']} at {stats[a]['more']} steps)"
                for a in worse))
        if first_bad:
            i, step, a, bad, pb, pa, sb, sa = first_bad
            print(f"# first difference: step {i} ({step_text(step)}), "
                  f"address space {a}: the series removes {fmt(bad)}, "
                  f"which stock keeps")
            for title, text in (("series before", pb), ("series after", pa),
                                ("stock before", sb), ("stock after", sa)):
                print(f"# --- {title}:")
                for line in text.splitlines():
                    print(f"#   {line}")
        for a in sorted(stats):
            st = stats[a]
            rows.append((label, seq_name, a, st["rem_s"], st["rem_p"],
                         st["extra"], st["more"], len(steps)))
    finally:
        series.close()
        stock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, action="append",
                    help=f"random sequence seeds (default: {SEEDS})")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args()
    tap = Tap()
    for binary in (SERIES, STOCK):
        if not os.access(binary, os.X_OK):
            print(f"Bail out! no {binary} (make check builds both)")
            return 1
    firmware = json.load(open(FIRMWARE))["sequences"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in CONFIGS:
            kind = cfg[1]
            seqs = [(f"random, seed {s}", random_steps(kind, s, args.steps))
                    for s in (args.seed or SEEDS)]
            seqs += [(f"{f['firmware']} writes (two boots, reset)",
                      f["steps"]) for f in firmware if f["machine"] == kind]
            for name, steps in seqs:
                for f in os.listdir(tmp):
                    os.unlink(os.path.join(tmp, f))
                try:
                    run_sequence(tap, cfg, name, steps, tmp, rows)
                except (RuntimeError, OSError, EOFError) as e:
                    tap.check(False, f"{cfg[0]}, {name}: {e}")
    if args.markdown:
        write_markdown(args.markdown, [
            "machine", "sequence", "address space", "removals, stock",
            "removals, series", "most RAM ranges more than stock",
            "steps with more", "steps"], [[str(c) for c in r] for r in rows])
    print(f"1..{tap.n}")
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
