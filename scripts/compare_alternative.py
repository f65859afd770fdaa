#!/usr/bin/env python3
"""One table: unpatched 10.2.2, the `unmergeable` alternative, the series.

Reads what `make bench` measured (out/bench-dma-churn.csv,
out/bench-vhost-churn.csv, out/bench-vhost-slots.csv, out/bench-cost.csv;
each run with --unpatched and --alternative) and writes, for every setup
the three builds ran, one row per measured quantity with three columns:
unpatched 10.2.2, the alternative (alternative-patches/: "ram-below-4g" cut
at 1 MiB and, on q35 with SMM, at the TSEG base, the pieces above 1 MiB
unmergeable, vhost keeping them apart at page boundaries; the 10.2 machine
type) and the series (the 10.2 machine type's default barriers).

With --mtree UNPATCHED ALTERNATIVE SERIES it also boots SeaBIOS on
pc-q35-10.2 (-m 2G, TCG, SMM on) with each binary and writes what a user
sees in "info mtree" (the aliases of system memory) and "info mtree -f"
(the flat view of AS "memory"), and the differences, to --mtree-out.

Usage: compare_alternative.py [--markdown F] [--csv F]
                              [--mtree U A S --mtree-out F]
"""

import argparse
import csv
import difflib
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

from mblib.guestram import ram_short
from mblib.machine import ALTERNATIVE
from mblib.report import text_table, write_csv, write_markdown

RANGE_RE = re.compile(r"\s+[0-9a-f]{16}-[0-9a-f]{16} ")
COLUMNS = {"unpatched 10.2.2": "unpatched", ALTERNATIVE: "alternative",
           "patched, 10.2 type (default)": "series"}


def read(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def pivot(rows, key, metrics):
    """{setup key: {metric: {column: value}}} for setups with all three."""
    out = {}
    for r in rows:
        col = COLUMNS.get(r["configuration"])
        if not col:
            continue
        for name, fn in metrics:
            out.setdefault(key(r), {}).setdefault(name, {})[col] = fn(r)
    return {k: v for k, v in out.items()
            if all(len(m) == 3 for m in v.values())}


def short_works(text):
    """The device-works cell, short: yes, or who failed and how."""
    if text == "yes":
        return text
    if "vu_panic" in text:
        return "no: backend vu_panic (" + \
            text.split("vu_panic:", 1)[1].strip().rstrip(")")[:40] + ")"
    if "vhost_region_add_section" in text:
        return "QEMU dropped a section (" + \
            text.split("vhost_region_add_section:", 1)[1].strip()[:40] + ")"
    return text[:60]


def num(field):
    return lambda r: r[field] if r[field] != "" else "-"


def mtree(qemu, workdir):
    """(info mtree lines of RAM aliases in system memory, info mtree -f
    lines of AS "memory") after SeaBIOS POST on pc-q35-10.2."""
    dbg = os.path.join(workdir, "dbg.log")
    mon = os.path.join(workdir, "mon.sock")
    for f in (dbg, mon):
        if os.path.exists(f):
            os.unlink(f)
    proc = subprocess.Popen(
        [qemu, "-machine", "pc-q35-10.2", "-accel", "tcg", "-m", "2G",
         "-display", "none", "-nodefaults", "-serial", "none",
         "-chardev", f"file,id=dbg,path={dbg}",
         "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
         "-monitor", f"unix:{mon},server=on,wait=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (os.path.exists(dbg) and
                   b"No bootable device." in open(dbg, "rb").read()):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{qemu}: no end of POST")
            time.sleep(0.05)
        out = {}
        for cmd in ("info mtree", "info mtree -f"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(mon)
                s.sendall(cmd.encode() + b"\n")
                time.sleep(1)
                s.settimeout(2)
                data = b""
                try:
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except socket.timeout:
                    pass
            out[cmd] = data.decode(errors="replace").replace("\r", "")
    finally:
        proc.kill()
        proc.wait()
    tree = [line.rstrip() for line in out["info mtree"].split("\n")
            if re.search(r"ram-below-4g|ram-above-4g", line)]
    flat, mine = [], False
    for line in out["info mtree -f"].split("\n"):
        if line.startswith("FlatView #"):
            if mine:
                break
        elif line.startswith(' AS "memory",'):
            mine = True
        if mine and (RANGE_RE.match(line) or
                     "Merge barriers" in line or line.startswith(" AS")):
            flat.append(line.rstrip())
    return tree, flat


def write_mtree(binaries, path):
    names = ["unpatched", "alternative", "series"]
    views = {}
    with tempfile.TemporaryDirectory(prefix="mtree-") as tmp:
        for name, qemu in zip(names, binaries):
            views[name] = mtree(qemu, tmp)
    text = ["What a user sees after SeaBIOS POST, pc-q35-10.2, -m 2G, TCG "
            "(SMM on): info mtree (the RAM aliases of system memory) and "
            "info mtree -f (AS \"memory\").", ""]
    for name in names:
        tree, flat = views[name]
        n = sum(1 for x in flat if RANGE_RE.match(x))
        text += [f"== {name}: info mtree (RAM aliases)"] + tree + \
            [f"== {name}: info mtree -f, AS \"memory\" ({n} ranges)"] + \
            flat + [""]
    for a, b in (("unpatched", "alternative"), ("alternative", "series")):
        text.append(f"== differences {a} -> {b}")
        for i, what in enumerate(("info mtree", "info mtree -f")):
            text += list(difflib.unified_diff(views[a][i], views[b][i],
                                              f"{a}: {what}", f"{b}: {what}",
                                              lineterm="", n=0))
        text.append("")
    with open(path, "w") as f:
        f.write("\n".join(text) + "\n")
    print("written: " + path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown")
    ap.add_argument("--csv")
    ap.add_argument("--mtree", nargs=3,
                    metavar=("UNPATCHED", "ALTERNATIVE", "SERIES"))
    ap.add_argument("--mtree-out", default="out/bench-compare-mtree.txt")
    opts = ap.parse_args()
    if opts.mtree:
        write_mtree(opts.mtree, opts.mtree_out)

    table = []
    dma = read("out/bench-dma-churn.csv")
    metrics = [("vfio-user DMA unmaps of RAM above 1 MiB", num("removals")),
               ("vfio-user DMA maps after boot",
                num("dma_maps_after_boot"))]
    for k, ms in pivot(dma, lambda r: ("vfio-user", r["machine"],
                                       r["firmware"], r["iommu"] or "-",
                                       ram_short(r["memory"]), r["accel"]),
                       metrics + [("KVM memory slots deleted",
                                   num("memslot_removals"))]).items():
        for name, v in ms.items():
            if name.startswith("KVM") and v["series"] == "-":
                continue
            table.append(list(k) + [name, v["unpatched"], v["alternative"],
                                    v["series"]])
    vhost = read("out/bench-vhost-churn.csv")

    def vhost_removals(r):
        if r["boot_removals"] == "":
            return "-"
        return str(int(r["boot_removals"]) + int(r["replay_removals"]))

    for k, ms in pivot(vhost, lambda r: ("vhost-user-blk", r["machine"],
                                         r["firmware"], "-",
                                         ram_short(r["memory"]), "tcg"),
                       [("vhost-user unmaps of RAM above 1 MiB (boot + "
                         "PAM replay)", vhost_removals),
                        ("vhost-user memory regions after boot",
                         num("boot_regions")),
                        ("vhost-user device works",
                         lambda r: short_works(r["device_works"]))]).items():
        for name, v in ms.items():
            table.append(list(k) + [name, v["unpatched"], v["alternative"],
                                    v["series"]])
    slots = read("out/bench-vhost-slots.csv")
    for k, ms in pivot(slots, lambda r: ("fixed mappings", r["machine"],
                                         "SeaBIOS", "-", r["memory"], "tcg"),
                       [("DPDK vhost-user (8 regions): 128 MiB DIMMs "
                         "accepted", num("DIMMs accepted")),
                        ("DPDK vhost-user: regions after boot",
                         num("regions")),
                        ("DPDK vhost-user: device carries packets",
                         lambda r: short_works(r["device works"])),
                        ("vfio-user server (16 regions): DIMMs with every "
                         "region mapped",
                         num("vfio-user: DIMMs, every region mapped"))]
                       ).items():
        for name, v in ms.items():
            table.append(list(k) + [name, v["unpatched"], v["alternative"],
                                    v["series"]])
    cost = {r["configuration"]: r for r in read("out/bench-cost.csv")}
    for label, names in (("pc-i440fx-10.2", ("unpatched", "alternative",
                                             "1 barrier")),
                         ("pc-q35-10.2 + intel-iommu",
                          ("unpatched q35+vtd", "alternative q35+vtd",
                           "q35+vtd default"))):
        if all(n in cost for n in names):
            for metric, field in (("instructions per commit (callgrind)",
                                   "instructions_per_commit"),
                                  ("FlatRanges after SeaBIOS POST",
                                   "flatranges_after_post")):
                table.append(["update cost", label, "SeaBIOS", "-", "-",
                              "qtest"] + [metric] +
                             [cost[n][field] or "-" for n in names])
    header = ["consumer", "machine", "firmware", "iommu", "memory", "accel",
              "measured", "unpatched", "alternative", "series"]
    if not table:
        print("compare: no measurements with all three builds: run "
              "'make bench'", file=sys.stderr)
        return 1
    print(text_table(header, table))
    if opts.markdown:
        write_markdown(opts.markdown, header, table)
    if opts.csv:
        write_csv(opts.csv, header, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
