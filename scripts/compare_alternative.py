#!/usr/bin/env python3
"""One table: unpatched 10.2.2, the `unmergeable` alternative, the series.

Reads what `make bench` measured (out/bench-dma-churn.csv,
out/bench-vhost-churn.csv, out/bench-cost.csv; each run with --unpatched and
--alternative) and writes, for every setup the three builds ran, one row
per measured quantity with three columns: unpatched 10.2.2, the
alternative (alternative-patches/: "ram-below-4g" unmergeable, split at
the TSEG base on q35 with SMM; the 10.2 machine type) and the series (the
10.2 machine type's default barriers).

Usage: compare_alternative.py [--markdown F] [--csv F]
"""

import argparse
import csv
import os
import sys

from mbtools import ALTERNATIVE, ram_short, text_table, write_csv, \
    write_markdown

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


def num(field):
    return lambda r: r[field] if r[field] != "" else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown")
    ap.add_argument("--csv")
    opts = ap.parse_args()

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
                         lambda r: r["device_works"])]).items():
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
