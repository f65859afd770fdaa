#!/usr/bin/env python3
"""End-to-end: a vfio-user server's capacity while OVMF Secure Boot boots.

libvfio-user's sample server holds at most 16 DMA regions and does not
tell QEMU so.  OVMF Secure Boot (SMM) enables TSEG, disables it and enables
it again in PEI; while TSEG is disabled after the first enable, the series
keeps the RAM below TSEG one section and TSEG's RAM a section of its own
(one DMA region more than stock at that moment), and again from a reset
until PEI enables TSEG.  This test boots OVMF Secure Boot on pc-q35-10.2
(TCG, -m 1G) with the server and 11, 12 and 13 128 MiB DIMMs, resets the
guest and boots it again, on stock QEMU 10.2.2 and on the series, and
counts the regions the server refused and the DMA unmaps of RAM above
1 MiB outside TSEG (first boot; reset and second boot).  The rule:
whatever stock maps in full, the series maps in full too.  Both sides are
reported.

    tests/e2e/secboot-capacity.py [--dimms N ...] [--markdown FILE]

Speaks TAP; skipped with the reason where OVMF or the server is missing.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(TOP, "scripts"))
from mblib.machine import (OVMF_DIR, connect_qmp, firmware_args,  # noqa: E402
                           tseg_window, wait_boot)
from mblib.parsers import live_dma_regions, parse_server_log  # noqa: E402
from mblib.peers import (GUEST_MB, VFIO_USER_SERVER, ram_args,  # noqa: E402
                         start_vfio_user_server)
from mblib.qmp import stop  # noqa: E402
from mblib.report import Tap, write_markdown  # noqa: E402

SERIES = os.environ.get("QEMU", os.path.join(TOP, "out/qemu-system-x86_64"))
STOCK = os.environ.get("UNPATCHED", os.path.join(
    TOP, "out/qemu-unpatched/build/qemu-system-x86_64"))
SERVER = os.path.join(TOP, VFIO_USER_SERVER)
DIMMS = [11, 12, 13]


def boot(qemu, dimms, wd):
    """(regions refused, regions mapped at the end, unmaps outside TSEG in
    the first boot, unmaps outside TSEG in the reset and second boot)."""
    for f in os.listdir(wd):
        os.unlink(os.path.join(wd, f))
    sock, slog = os.path.join(wd, "vfu.sock"), os.path.join(wd, "vfu.log")
    qmp_path, err = os.path.join(wd, "qmp"), os.path.join(wd, "qemu.err")
    fw, watch, ends = firmware_args("OVMF secboot", wd, OVMF_DIR)
    srv = start_vfio_user_server(SERVER, sock, slog)
    proc = None
    try:
        proc = subprocess.Popen(
            [qemu, "-machine", "pc-q35-10.2,smm=on,memory-backend=mem",
             "-accel", "tcg", "-m", f"{GUEST_MB}M,slots=16,maxmem=8G",
             "-display", "none", "-nodefaults", "-no-user-config",
             "-qmp", f"unix:{qmp_path},server=on,wait=off",
             "-device", '{"driver": "vfio-user-pci", "socket": '
             f'{{"path": "{sock}", "type": "unix"}}}}'] + fw +
            ram_args(None, dimms),
            stdout=subprocess.DEVNULL, stderr=open(err, "w"))
        qmp = connect_qmp(proc, qmp_path, err)
        tseg = tseg_window(qmp, "q35")
        wait_boot(proc, qmp, watch, ends, err)
        first = open(slog, errors="replace").read()
        open(watch, "w").close()
        qmp.cmd("system_reset")
        wait_boot(proc, qmp, watch, ends, err)
    finally:
        stop(proc, 5)
        stop(srv, 5)
    text = open(slog, errors="replace").read()
    refused = len(re.findall(r"failed to add DMA region", text))
    again = text[len(first):]
    # the server's teardown at exit is no removal by QEMU (parse_server_log)
    return (refused, live_dma_regions(text),
            parse_server_log(first, tseg)[0], parse_server_log(again, tseg)[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dimms", type=int, action="append")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    tap = Tap()
    # the server: built by make bench and vhost-slots.sh; idempotent
    subprocess.run([os.path.join(TOP, "scripts/build-vfio-user.sh")],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=TOP)
    missing = [p for p in (SERIES, STOCK, SERVER,
                           os.path.join(OVMF_DIR, "OVMF_CODE_4M.secboot.fd"))
               if not os.path.exists(p)]
    if missing:
        print(f"1..0 # SKIP missing {', '.join(missing)} (make check builds "
              "the QEMUs and the server; Debian's ovmf has the firmware)")
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as wd:
        for n in args.dimms or DIMMS:
            res = {}
            for label, qemu in (("stock 10.2.2", STOCK), ("series", SERIES)):
                try:
                    res[label] = boot(qemu, n, wd)
                except (RuntimeError, OSError, EOFError) as e:
                    res[label] = None
                    print(f"# {label}, {n} DIMMs: {e}")
            st, se = res["stock 10.2.2"], res["series"]
            if st is None or se is None:
                tap.check(False, f"OVMF Secure Boot, {n} DIMMs: a boot failed")
                continue
            ok = st[0] > 0 or se[0] == 0
            tap.check(ok, f"OVMF Secure Boot, pc-q35-10.2, {n} DIMMs: the "
                      f"vfio-user server refused {st[0]} regions on stock, "
                      f"{se[0]} on the series"
                      + (" (stock maps every region: so must the series)"
                         if st[0] == 0 else ""))
            print(f"# regions mapped after the second boot: stock {st[1]}, "
                  f"series {se[1]}; DMA unmaps outside TSEG, first boot: "
                  f"stock {st[2]}, series {se[2]}; reset and second boot: "
                  f"stock {st[3]}, series {se[3]}")
            rows.append((n, st[0], se[0], st[1], se[1], st[2], se[2], st[3],
                         se[3]))
    if args.markdown:
        write_markdown(args.markdown, [
            "128 MiB DIMMs", "regions refused, stock 10.2.2",
            "regions refused, series", "regions mapped at the end, stock",
            "regions mapped at the end, series", "unmaps, first boot, stock",
            "unmaps, first boot, series",
            "unmaps, reset + second boot, stock",
            "unmaps, reset + second boot, series"],
            [[str(c) for c in r] for r in rows])
    print(f"1..{tap.n}")
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
