#!/usr/bin/env python3
"""Record the chipset register writes firmware really makes.

Boots SeaBIOS (pc, q35), OVMF and OVMF Secure Boot (q35, SMM) under TCG
with the pci_cfg_write trace event, twice with a system_reset between the
boots, and keeps the writes to the host bridge's PAM, SMRAM and ESMRAMC
registers in order, with the reset where it happened.  The result,
tests/e2e/data/firmware-chipset-writes.json, is what
tests/e2e/stock-differential.py replays on stock QEMU and on the series.

    scripts/trace_chipset_writes.py [--qemu BIN] [--out FILE]

A write wider than a byte is split into its bytes (the trace event gives
the value, not the width); the file says how many writes were wider.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mblib.machine import (OVMF_DIR, connect_qmp, firmware_args,  # noqa: E402
                           wait_boot)
from mblib.qmp import stop  # noqa: E402

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# host bridge name in the trace, and its registers of interest
REGS = {
    "pc": ("i440FX", set(range(0x59, 0x60)) | {0x72}),
    "q35": ("mch", set(range(0x90, 0x97)) | {0x9d, 0x9e}),
}
BOOTS = [("pc", "SeaBIOS"), ("q35", "SeaBIOS"), ("q35", "OVMF"),
         ("q35", "OVMF secboot")]
TRACE_RE = re.compile(r"pci_cfg_write (\S+) 00:00\.0 @0x([0-9a-f]+) <- "
                      r"0x([0-9a-f]+)")


def trace_boot(qemu, kind, firmware, log):
    dev, regs = REGS[kind]
    with tempfile.TemporaryDirectory() as wd:
        fw, watch, ends = firmware_args(firmware, wd, OVMF_DIR)
        mtype = ("pc-q35-10.2" if kind == "q35" else "pc-i440fx-10.2")
        if firmware == "OVMF secboot":
            mtype += ",smm=on"
        qmp_path, trace = os.path.join(wd, "qmp"), os.path.join(wd, "trace")
        err = os.path.join(wd, "err")
        proc = subprocess.Popen(
            [qemu, "-machine", mtype, "-accel", "tcg", "-m", "1G",
             "-display", "none", "-nodefaults", "-no-user-config",
             "-qmp", f"unix:{qmp_path},server=on,wait=off",
             "-d", "trace:pci_cfg_write", "-D", trace] + fw,
            stdout=subprocess.DEVNULL, stderr=open(err, "w"))
        try:
            qmp = connect_qmp(proc, qmp_path, err)
            wait_boot(proc, qmp, watch, ends, err)
            # the guest sits at the end of boot: nothing more is traced
            # until the reset (QEMU's log is line-buffered)
            time.sleep(0.5)
            reset_at = os.path.getsize(trace)
            if os.path.exists(watch):
                open(watch, "w").close()
            qmp.cmd("system_reset")
            wait_boot(proc, qmp, watch, ends, err)
        finally:
            stop(proc)
        steps, wide = [], 0
        with open(trace, "rb") as f:
            text = f.read()
        lines = (text[:reset_at].decode(errors="replace").splitlines() +
                 ["=== reset"] +
                 text[reset_at:].decode(errors="replace").splitlines())
        for line in lines:
            if line.startswith("=== reset"):
                steps.append(["reset"])
                continue
            m = TRACE_RE.search(line)
            if not m or m.group(1) != dev:
                continue
            off, val = int(m.group(2), 16), int(m.group(3), 16)
            nbytes = max(1, (val.bit_length() + 7) // 8)
            if nbytes > 1 and any(off + i in regs for i in range(nbytes)):
                wide += 1
            for i in range(nbytes):
                if off + i in regs:
                    steps.append(["w", off + i, (val >> (8 * i)) & 0xff])
        print(f"{kind} {firmware}: {len(steps)} steps, {wide} wide writes",
              file=log)
        return {"machine": kind, "firmware": firmware, "steps": steps,
                "wide_writes": wide}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", default=os.path.join(
        TOP, "out/qemu-unpatched/build/qemu-system-x86_64"))
    ap.add_argument("--out", default=os.path.join(
        TOP, "tests/e2e/data/firmware-chipset-writes.json"))
    args = ap.parse_args()
    out = {"recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": "scripts/trace_chipset_writes.py",
           "qemu": subprocess.run([args.qemu, "--version"], text=True,
                                  capture_output=True).stdout.splitlines()[0],
           "sequences": []}
    for kind, fw in BOOTS:
        print(f"tracing {kind} {fw} (two boots, a reset between) ...",
              file=sys.stderr)
        out["sequences"].append(trace_boot(args.qemu, kind, fw, sys.stderr))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
