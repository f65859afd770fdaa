#!/usr/bin/env python3
"""Copy the latest measurements into the docs, and their headlines into the
README.

Each full table lives in a file of docs/measurements/ between
"<!-- NAME table -->" and "<!-- end of NAME table -->", where NAME is the
out/NAME.md file that `make`, `make check` or `make bench` wrote (the table
ends with its measurement stamp: date, machine facts, command).  The README
holds one summary table per consumer between "<!-- summary CONSUMER -->"
and "<!-- end of summary CONSUMER -->", built from the out/*.csv files:
unpatched 10.2.2, the 10.2 defaults and merge-layout=latest on a 10.1 type,
each linking to its full table.  Tables and summaries whose out/ files are
missing are left as they are (and named).  Usage: readme_tables.py [NAME...]
"""

import csv
import os
import re
import sys

DOCS = "docs/measurements"
# out/NAME.md -> the docs/measurements file that holds it
TABLES = {
    "dma-churn": "vfio-user.md",
    "bench-dma-churn": "vfio-user.md",
    "vhost-churn": "vhost-user.md",
    "bench-vhost-churn": "vhost-user.md",
    "vhost-slots": "vhost-user.md",
    "bench-vhost-slots": "vhost-user.md",
    "tseg-sweep": "tseg-sweep.md",
    "bench-compare": "alternative.md",
    "bench-proxy-churn": "proxy.md",
    "bench-kvm-largepages": "kvm-largepages.md",
    "bench-cost": "update-cost.md",
    "migration-stock": "migration.md",
}
# whole files kept with the docs: out/ file -> docs/measurements file
COPIES = {"bench-compare-mtree.txt":
          "info-mtree-unpatched-alternative-series.txt"}
UNPATCHED = "unpatched 10.2.2"
DEFAULT = "patched, 10.2 type (default)"
COLUMNS = ["unpatched 10.2.2", "10.2 defaults", "10.1 + merge-layout=latest"]


def replace_block(text, start_re, end_marker, body):
    start = re.search(start_re, text)
    end = text.find(end_marker)
    if not start or end < 0:
        return None
    return text[:start.end()] + body + text[end:]


def read_csv(*names):
    """Rows of the first out/NAME.csv that exists (bench first), and its
    name; ([], None) if none does."""
    for name in names:
        path = os.path.join("out", f"{name}.csv")
        if os.path.exists(path):
            with open(path, newline="") as f:
                return list(csv.DictReader(f)), name
    return [], None


def cell(rows, column, **match):
    """The value of @column in the row matching @match, or "-"."""
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r.get(column) or "-"
    return "-"


def pair(rows, a, b, **match):
    """"A / B" of one row."""
    return f"{cell(rows, a, **match)} / {cell(rows, b, **match)}"


def source_note(*sources):
    """Where a summary's numbers come from."""
    return "From " + " and ".join(f"`out/{s}.csv`" for s in sources) + "."


def table(header, rows, note):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n\n" + note + "\n"


def summary_vfio_user():
    rows, src = read_csv("bench-dma-churn", "dma-churn")
    slots, src2 = read_csv("bench-vhost-slots", "vhost-slots")
    if not src or not src2:
        return None
    labels = [UNPATCHED, DEFAULT, "patched, 10.1 type, merge-layout=latest"]
    out = []
    for machine, firmware, iommu, what in [
            ("pc", "SeaBIOS", "", "pc, SeaBIOS"),
            ("q35", "SeaBIOS", "", "q35, SeaBIOS"),
            ("q35", "SeaBIOS", "intel-iommu", "q35, SeaBIOS, intel-iommu"),
            ("q35", "OVMF secboot", "", "q35, OVMF Secure Boot (SMM)")]:
        out.append([f"DMA unmaps of RAM above 1 MiB while firmware boots: "
                    f"{what}"] +
                   [cell(rows, "removals", machine=machine, firmware=firmware,
                         iommu=iommu, memory="memfd", accel="tcg",
                         configuration=c) for c in labels])
    slot_labels = [UNPATCHED, DEFAULT, "patched, merge-layout=latest on 10.1"]
    for machine in ("pc", "q35"):
        out.append([f"128 MiB DIMMs with every DMA region mapped (16-region "
                    f"server, -m 1G), {machine}, SeaBIOS"] +
                   [cell(slots, "vfio-user: DIMMs, every region mapped",
                         machine=machine, memory="4 KiB", configuration=c)
                    for c in slot_labels])
    return table(["vfio-user (libvfio-user gpio sample), TCG, 4 KiB pages"]
                 + COLUMNS, out, source_note(src, src2))


def summary_kvm():
    rows, src = read_csv("bench-dma-churn", "dma-churn")
    if not src:
        return None
    labels = [UNPATCHED, DEFAULT, "patched, 10.1 type, merge-layout=latest"]
    out = []
    for machine in ("pc", "q35"):
        if not any(r.get("accel") == "kvm" and r.get("machine") == machine
                   for r in rows):
            continue
        out.append([f"memory slots over RAM above 1 MiB deleted while "
                    f"SeaBIOS boots, {machine}"] +
                   [cell(rows, "memslot_removals", machine=machine,
                         firmware="SeaBIOS", iommu="", memory="memfd",
                         accel="kvm", configuration=c) for c in labels])
    if not out:
        return ("Not measured on the machine that ran the last `make bench`"
                " (no usable /dev/kvm); the trace event `kvm_set_user_memory`"
                " proves it where KVM exists.\n")
    return table(["KVM, 4 KiB pages"] + COLUMNS, out, source_note(src))


def summary_vhost():
    slots, src = read_csv("bench-vhost-slots", "vhost-slots")
    churn, src2 = read_csv("bench-vhost-churn", "vhost-churn")
    if not src or not src2:
        return None
    slot_labels = [UNPATCHED, DEFAULT, "patched, merge-layout=latest on 10.1"]
    churn_labels = [UNPATCHED, DEFAULT,
                    "patched, 10.1 type, merge-layout=latest"]
    out = []
    for machine in ("pc", "q35"):
        out.append([f"DPDK (8 regions): 128 MiB DIMMs accepted / regions "
                    f"after boot, {machine}"] +
                   [pair(slots, "DIMMs accepted", "regions", machine=machine,
                         memory="4 KiB", configuration=c)
                    for c in slot_labels])
    for machine in ("pc", "q35"):
        out.append([f"qemu-storage-daemon: unmaps of RAM above 1 MiB, boot / "
                    f"PAM replay, {machine}"] +
                   [pair(churn, "boot_removals", "replay_removals",
                         machine=machine, firmware="SeaBIOS", memory="memfd",
                         configuration=c)
                    for c in churn_labels])
    return table(["vhost-user, SeaBIOS, TCG, 4 KiB pages"] + COLUMNS, out,
                 source_note(src, src2))


def summary_cost():
    rows, src = read_csv("bench-cost")
    if not rows:
        return None
    out = []
    for name, what in [("1 barrier", "pc-i440fx-10.2, its 1 MiB barrier"),
                       ("q35+vtd default",
                        "pc-q35-10.2 + intel-iommu, its defaults")]:
        out.append([f"instructions per update, {what}",
                    cell(rows, "instructions_ratio", configuration=name)])
    return table(["memory topology update (PAM write), against unpatched",
                  "ratio"], out, source_note(src))


def summary_migration():
    path = os.path.join("out", "migration-stock.md")
    if not os.path.exists(path):
        return None
    return open(path).read().strip("\n") + "\n"


SUMMARIES = {
    "vfio-user": summary_vfio_user,
    "kvm": summary_kvm,
    "vhost-user": summary_vhost,
    "update-cost": summary_cost,
    "migration": summary_migration,
}


def main():
    names = sys.argv[1:] or list(TABLES)
    for name in names:
        doc = os.path.join(DOCS, TABLES[name])
        path = os.path.join("out", f"{name}.md")
        if not os.path.exists(path):
            print(f"docs: no {path}: {name} table left as it is")
            continue
        text = open(doc).read()
        body = open(path).read().strip("\n") + "\n"
        new = replace_block(text, rf"<!-- {re.escape(name)} table[^>]*-->\n",
                            f"<!-- end of {name} table -->", body)
        if new is None:
            print(f"docs: no {name} table markers in {doc}")
            continue
        with open(doc, "w") as f:
            f.write(new)
        print(f"docs: {name} table in {doc} from {path}")
    for src, dst in COPIES.items():
        path = os.path.join("out", src)
        if os.path.exists(path) and not sys.argv[1:]:
            with open(path) as f, open(os.path.join(DOCS, dst), "w") as g:
                g.write(f.read())
            print(f"docs: {dst} from {path}")
    text = open("README.md").read()
    for name, fn in SUMMARIES.items():
        body = fn()
        if body is None:
            # a summary is made from every one of its out/ files or not at
            # all: the committed numbers stay until they are measured again
            print(f"readme: summary {name} left as it is (not every one of "
                  "its out/ files is there)")
            continue
        new = replace_block(text, rf"<!-- summary {name} -->\n",
                            f"<!-- end of summary {name} -->", body)
        if new is not None:
            text = new
            print(f"readme: summary {name}")
    with open("README.md", "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
