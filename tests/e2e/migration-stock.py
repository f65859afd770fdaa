#!/usr/bin/env python3
"""End-to-end: live migration between stock QEMU 10.2.2 and the series.

A host upgrade (stock 10.2.2 -> patched) and its rollback (patched ->
stock), on pc-q35-10.2 and pc-i440fx-10.2 with the patched build's
default barriers.  The guest has a virtio-net-pci device whose vhost-user
backend is DPDK (dpdk-testpmd, net_vhost: 8 memory regions, no
configurable memory slots), one per QEMU, and as many 128 MiB DIMMs as
stock 10.2.2 accepts next to that backend (measured first, not assumed).
Per direction and machine type: both QEMUs start with those DIMMs, the
device carries packets on the source (SeaBIOS boots the network through
iPXE), the migration completes, the destination runs, and the device
carries packets on the destination after a guest reset.  Speaks TAP;
the results also go to out/migration-stock.md (MIGRATION_MD to change).

Needs the unpatched build (make unpatched: out/qemu-unpatched/build/).
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
from mblib.peers import (TESTPMD, TestPmd, dimm_capacity, qemu_args,  # noqa: E402
                         reset_and_wait, wait_packets)
from mblib.qmp import QMP, stop, wait_migration, wait_running  # noqa: E402
from mblib.report import Tap, write_markdown  # noqa: E402

PATCHED = os.path.abspath(os.environ.get("QEMU", "out/qemu-system-x86_64"))
STOCK = os.path.abspath(os.environ.get(
    "QEMU_UNPATCHED", "out/qemu-unpatched/build/qemu-system-x86_64"))
MACHINES = [("q35", "pc-q35-10.2"), ("pc", "pc-i440fx-10.2")]
CHECKS = 5


def start(tmp, name, qemu, cfg, pmd, dimms, incoming=None):
    qmp = os.path.join(tmp, f"{name}.qmp")
    extra = ["-qmp", f"unix:{qmp},server=on,wait=off"]
    if incoming:
        extra += ["-incoming", incoming]
    args = qemu_args(qemu, cfg, None, pmd.sock, tmp, dimms=dimms,
                     extra=extra)
    err = os.path.join(tmp, f"{name}.err")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                            stderr=open(err, "wb"))
    try:
        return proc, QMP(qmp, timeout=60)
    except (OSError, EOFError):
        stop(proc, 5)
        raise RuntimeError(f"the {name} QEMU ({qemu}) did not start with "
                           f"{dimms} DIMMs: " +
                           open(err, errors="replace").read().strip()[-300:])


def migrate_one(tap, kind, mtype, src_bin, dst_bin, desc, row):
    """Migrate once; fill @row: DIMMs, status, RX on each side, errors."""
    cfg = dict(machine=kind, machine_type=mtype, opts="")
    first = tap.n
    procs, pmds = [], []
    with tempfile.TemporaryDirectory(prefix="mb-migration-stock-") as tmp:
        try:
            pmd = TestPmd(tmp, "limit")
            pmds.append(pmd)
            limit, _ = dimm_capacity(STOCK, cfg, None, pmd, tmp)
            pmd.close()
            src_pmd = TestPmd(tmp, "src-pmd")
            dst_pmd = TestPmd(tmp, "dst-pmd")
            pmds += [src_pmd, dst_pmd]
            sock = os.path.join(tmp, "migration.sock")
            dst, dqmp = start(tmp, "dst", dst_bin, cfg, dst_pmd, limit,
                              incoming=f"unix:{sock}")
            procs.append(dst)
            src, sqmp = start(tmp, "src", src_bin, cfg, src_pmd, limit)
            procs.append(src)
            row["dimms"] = str(limit)
            rx = wait_packets(src_pmd, src, 0, "on the source")
            row["src_rx"] = str(rx)
            tap.check(limit >= 1 and rx > 0,
                      f"{desc}: both start with {limit} DIMMs (stock's "
                      f"limit next to the 8-region backend); the device "
                      f"carries packets on the source (RX {rx})")
            sqmp.cmd("migrate", uri=f"unix:{sock}")
            status = wait_migration(sqmp, 180)
            row["status"] = status
            tap.check(status == "completed", f"{desc}: migration {status}")
            dstat = wait_running(dqmp)
            row["dst"] = dstat
            tap.check(dstat == "running", f"{desc}: destination {dstat}")
            rx = reset_and_wait(dst_pmd, dqmp, dst,
                                "on the destination after a reset")
            row["dst_rx"] = str(rx)
            tap.check(rx > 0, f"{desc}: the device is started again and "
                      f"carries packets on the destination after a guest "
                      f"reset (RX {rx})")
            errs = [line for p in ("src", "dst") for line in
                    open(os.path.join(tmp, f"{p}.err"), errors="replace")
                    .read().splitlines() if "vhost" in line.lower()]
            row["errors"] = "; ".join(errs) or "none"
            tap.check(not errs, f"{desc}: no vhost error "
                      f"({'; '.join(errs) or 'none'})")
        except Exception as e:     # a failed step fails its remaining checks
            row["errors"] = str(e)[:200]
            while tap.n - first < CHECKS:
                tap.check(False, f"{desc}: {str(e)[:300]}")
        finally:
            for p in procs:
                stop(p)
            for p in pmds:
                p.close()


def main():
    tap = Tap()
    print(f"1..{len(MACHINES) * 2 * CHECKS}")
    missing = [p for p in (STOCK, TESTPMD) if not os.path.exists(p)]
    rows = []
    for kind, mtype in MACHINES:
        for src, dst, what in ((STOCK, PATCHED, "stock 10.2.2 -> patched"),
                               (PATCHED, STOCK, "patched -> stock 10.2.2")):
            desc = f"{mtype}, {what}"
            if missing:
                for _ in range(CHECKS):
                    tap.check(False, f"{desc}: no {', '.join(missing)} "
                              "(make unpatched; scripts/deps.sh e2e)")
                continue
            print(f"# {desc}", file=sys.stderr, flush=True)
            row = {}
            migrate_one(tap, kind, mtype, src, dst, desc, row)
            rows.append([mtype, what] + [row.get(k, "-") for k in (
                "dimms", "src_rx", "status", "dst", "dst_rx", "errors")])
    if rows:
        write_markdown(
            os.environ.get("MIGRATION_MD", "out/migration-stock.md"),
            ["machine type", "direction", "DIMMs (stock's limit)",
             "packets on the source (RX)", "migration", "destination",
             "packets after a reset on the destination (RX)", "vhost errors"],
            rows, ["DPDK dpdk-testpmd (net_vhost, 8 regions) as the "
                   "vhost-user backend on each side; -m 1G,slots=8,maxmem=4G"
                   ", memfd RAM, 128 MiB DIMMs; the patched side with its "
                   "default barriers; TCG; made by "
                   "tests/e2e/migration-stock.py."])
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
