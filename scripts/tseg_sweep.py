#!/usr/bin/env python3
"""OVMF Secure Boot (SMM, TSEG) on q35 for several RAM and TSEG sizes.

The default TSEG barrier of the new q35 machine types is armed by the MCH
when firmware first enables TSEG, at the top of low RAM minus the TSEG
size (OVMF: extended-tseg-mbytes), so it moves with -m and with that
property.  For each size, boot Debian's OVMF_CODE_4M.secboot.fd (smm=on,
secure pflash) to the end of its boot and count, with the series' trace
event address_space_topology_del, how often the system memory view
("memory", the view every listener of guest RAM sees) removed RAM above
1 MiB outside the TSEG window, and how often only the window itself.
pc-q35-10.2 (default barriers: exactly 1 removal, the first TSEG enable)
against pc-q35-10.1 (none: more), and pc-q35-10.1 with
merge-layout=latest (the newest types' barriers, computed by the machine:
its TSEG is 16 MiB); the barriers in force in the system memory address
space are read back from "info mtree -f".  Patched QEMU only (the trace event is
the series').

Usage: tseg_sweep.py [--qemu BIN] [--tap] [--markdown F]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from mblib.machine import (OVMF_DIR, connect_qmp, firmware_args, tseg_window,
                           wait_boot)
from mblib.parsers import TOPO_RE, classify, parse_topology
from mblib.qmp import stop
from mblib.report import log, text_table, write_markdown

# (-m, extended-tseg-mbytes or None for the machine type's default)
SIZES = [("1G", None), ("2G", None), ("2560M", None), ("4G", None),
         ("8G", None), ("2G", 16), ("2G", 32)]
# the sizes on which pc-q35-10.1 also runs with merge-layout=latest
LATEST_SIZES = [("1G", None), ("2G", None), ("2560M", None)]


def count_tseg(text, tseg):
    """address_space_topology_del of AS memory over the TSEG window only."""
    n = 0
    for line in text.splitlines():
        m = TOPO_RE.match(line)
        if m and m.group(1) == "memory" and m.group(4) == "pc.ram":
            start, size = int(m.group(2), 16), int(m.group(3), 16)
            n += classify(start, start + size, tseg)[0] == "tseg"
    return n


def as_barriers(qmp):
    """The merge barriers of AS "memory" as "info mtree -f" lists them."""
    out = qmp.cmd("human-monitor-command",
                  **{"command-line": "info mtree -f"})
    for line in out.splitlines():
        if line.startswith(' AS "memory",') and "merge barriers:" in line:
            return [int(a, 16) for a in
                    line.split("merge barriers:")[1].split()]
    return []


def run_one(qemu, mtype, mem, tseg_mb, workdir, layout=None):
    args, watch, ends = firmware_args("OVMF secboot", workdir, OVMF_DIR)
    qmp_path = os.path.join(workdir, "qmp.sock")
    trace = os.path.join(workdir, "trace.log")
    err = os.path.join(workdir, "qemu.err")
    mopts = f"{mtype},smm=on" + (f",merge-layout={layout}" if layout else "")
    cmd = [qemu, "-machine", mopts, "-accel", "tcg", "-m", mem,
           "-display", "none", "-nodefaults", *args,
           "-qmp", f"unix:{qmp_path},server=on,wait=off", "-D", trace,
           "-trace", "enable=address_space_topology_del"]
    if tseg_mb is not None:
        cmd += ["-global", f"mch.extended-tseg-mbytes={tseg_mb}"]
    proc = None
    try:
        with open(err, "wb") as errf:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                    stderr=errf)
        qmp = connect_qmp(proc, qmp_path, err)
        boot = wait_boot(proc, qmp, watch, ends, err)
        tseg = tseg_window(qmp, "q35")
        barriers = as_barriers(qmp)
        qmp.cmd("quit")
        qmp.close()
        proc.wait(timeout=30)
    finally:
        stop(proc, 5)
    text = open(trace, errors="replace").read()
    return {"removals": parse_topology(text, "memory", tseg, ram="pc.ram"),
            "tseg": count_tseg(text, tseg), "window": tseg,
            "barriers": barriers, "boot_s": round(boot, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", default="out/qemu-system-x86_64")
    ap.add_argument("--tap", action="store_true",
                    help="emit TAP: 1 removal outside TSEG (the first "
                         "TSEG enable) on pc-q35-10.2 and with "
                         "merge-layout=latest, more than 1 on pc-q35-10.1")
    ap.add_argument("--markdown")
    opts = ap.parse_args()

    plan = [(m, t, mt, None) for m, t in SIZES
            for mt in ("pc-q35-10.2", "pc-q35-10.1")]
    plan += [(m, t, "pc-q35-10.1", "latest") for m, t in LATEST_SIZES]
    if opts.tap:
        print(f"1..{len(plan)}")
    rows, failed = [], 0
    with tempfile.TemporaryDirectory(prefix="tseg-sweep-") as tmp:
        for i, (mem, tseg_mb, mtype, layout) in enumerate(plan, 1):
            machine = mtype + (f",merge-layout={layout}" if layout else "")
            what = (f"{machine} -m {mem} extended-tseg-mbytes="
                    f"{'default' if tseg_mb is None else tseg_mb}")
            log(f"[{i}/{len(plan)}] OVMF secboot {what} ...")
            workdir = os.path.join(tmp, str(i))
            os.makedirs(workdir)
            try:
                r = run_one(opts.qemu, mtype, mem, tseg_mb, workdir, layout)
            except Exception as e:             # report, keep going
                keep = os.path.join("out", "tseg-sweep-failed", str(i))
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(workdir, keep)
                log(f"    failed: {e} (files: {keep})")
                failed += 1
                if opts.tap:
                    print(f"not ok {i} {what}: {e}")
                continue
            new = mtype.endswith("10.2") or layout == "latest"
            good = r["removals"] == 1 if new else r["removals"] > 1
            log(f"    {r['removals']} removals outside TSEG, {r['tseg']} of "
                f"the window; barriers {r['barriers']}; {r['boot_s']} s")
            if opts.tap:
                print(f"{'ok' if good else 'not ok'} {i} {what}: "
                      f"{r['removals']} removals outside TSEG "
                      f"(window {r['tseg']}), expected "
                      f"{'1' if new else '> 1'}")
            failed += not good
            rows.append([machine, mem,
                         "default" if tseg_mb is None else str(tseg_mb),
                         "%#x-%#x" % r["window"] if r["window"] else "-",
                         ",".join("%#x" % b for b in r["barriers"]) or "-",
                         str(r["removals"]), str(r["tseg"]),
                         f"{r['boot_s']:.1f}"])
    header = ["machine", "-m", "ext. TSEG MiB", "TSEG window", "barriers",
              "removals outside TSEG", "TSEG window removals", "boot s"]
    out = sys.stderr if opts.tap else sys.stdout
    print("", file=out)
    print(text_table(header, rows), file=out)
    print("removals: address_space_topology_del of AS \"memory\" taking "
          "away RAM above 1 MiB outside the TSEG window\n(OVMF Secure Boot "
          "with SMM, TCG, to \"No bootable option or device was found.\")",
          file=out)
    if opts.markdown:
        write_markdown(opts.markdown, header, rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
