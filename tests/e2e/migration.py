#!/usr/bin/env python3
"""End-to-end: live migration between QEMUs whose merge barriers differ.

Merge barriers only change how the host presents guest memory to its
listeners; they must not enter the migration stream.  A pc-q35-10.2 guest
(SeaBIOS running, TCG) migrates between two patched QEMUs with different
barrier settings, both ways; the migration completes, the destination runs,
and it keeps its own barriers.  Then the TSEG barrier, which the MCH arms
when firmware enables TSEG: a pc-q35-10.2 guest with OVMF Secure Boot
(SMM) migrates once OVMF has enabled TSEG; the destination arms the
barrier when it loads the MCH state, and drops it at the next reset, as
the source would.  Speaks TAP.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "scripts"))
from mblib.qmp import QMP, stop, wait_migration, wait_running  # noqa: E402
from mblib.report import Tap  # noqa: E402

QEMU = os.path.abspath(os.environ.get("QEMU", "out/qemu-system-x86_64"))
CASES = [
    # (machine type, source barriers, destination barriers, expected dest)
    ("pc-q35-10.2", None, "", []),
    ("pc-q35-10.2", "", "1M,,3G", [1 << 20, 3 << 30]),
    ("pc-i440fx-10.2", "1M,,64M", None, [1 << 20]),
]


def launch(tmp, name, args, incoming=None):
    """Start QEMU with @args, its QMP socket and stderr in @tmp."""
    qmp = os.path.join(tmp, f"{name}.qmp")
    args = [QEMU] + args + ["-display", "none", "-nodefaults",
                            "-serial", "none",
                            "-qmp", f"unix:{qmp},server=on,wait=off"]
    if incoming:
        args += ["-incoming", incoming]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(tmp, f"{name}.err"),
                                        "wb"))
    return proc, QMP(qmp)


def start(tmp, name, machine, barriers, incoming=None):
    mopts = machine + ("" if barriers is None
                       else f",merge-barriers={barriers}")
    return launch(tmp, name, ["-machine", mopts, "-accel", "tcg",
                              "-m", "256M"], incoming)


OVMF = "/usr/share/OVMF"
TSEG_CHECKS = 5


def memory_barriers(qmp):
    """The merge barriers of AS "memory", as "info mtree -f" lists them."""
    out = qmp.cmd("human-monitor-command", **{"command-line": "info mtree -f"})
    line = next((x for x in out.splitlines()
                 if x.startswith(' AS "memory"')), "")
    if "merge barriers:" not in line:
        return []
    return [int(a, 16) for a in line.split("merge barriers:")[1].split()]


def start_ovmf(tmp, name, incoming=None):
    vars_fd = os.path.join(tmp, "VARS.fd")
    if not os.path.exists(vars_fd):
        shutil.copyfile(os.path.join(OVMF, "OVMF_VARS_4M.ms.fd"), vars_fd)
    return launch(tmp, name, [
        "-machine", "pc-q35-10.2,smm=on", "-accel", "tcg", "-m", "2G",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file="
        + os.path.join(OVMF, "OVMF_CODE_4M.secboot.fd"),
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_fd}",
        "-global", "driver=cfi.pflash01,property=secure,value=on"], incoming)


def tseg_case(tap):
    """OVMF Secure Boot source with the TSEG barrier armed -> destination."""
    desc = "pc-q35-10.2 OVMF Secure Boot, TSEG enabled"
    want = [1 << 20, 0x7c000000]          # -m 2G, 64 MiB TSEG
    if not os.path.exists(os.path.join(OVMF, "OVMF_CODE_4M.secboot.fd")):
        for _ in range(TSEG_CHECKS):
            tap.check(True, f"{desc} # SKIP no Debian ovmf")
        return
    first = tap.n
    procs = []
    with tempfile.TemporaryDirectory(prefix="mb-migration-") as tmp:
        try:
            sock = os.path.join(tmp, "migration.sock")
            dst, dqmp = start_ovmf(tmp, "dst", incoming=f"unix:{sock}")
            procs.append(dst)
            src, sqmp = start_ovmf(tmp, "src")
            procs.append(src)
            got = []
            for _ in range(600):            # OVMF enables TSEG in PEI
                got = memory_barriers(sqmp)
                if got == want:
                    break
                time.sleep(0.1)
            tap.check(got == want, f"{desc}: source armed the TSEG barrier "
                      f"({[hex(b) for b in got]})")
            sqmp.cmd("migrate", uri=f"unix:{sock}")
            status = wait_migration(sqmp, 120)
            tap.check(status == "completed", f"{desc}: migration {status}")
            dstat = wait_running(dqmp)
            tap.check(dstat == "running", f"{desc}: destination {dstat}")
            got = memory_barriers(dqmp)
            tap.check(got == want, f"{desc}: the destination armed it when "
                      f"it loaded the MCH ({[hex(b) for b in got]})")
            dqmp.cmd("stop")                # firmware must not re-arm it
            dqmp.cmd("system_reset")
            for _ in range(50):
                got = memory_barriers(dqmp)
                if got == want[:1]:
                    break
                time.sleep(0.1)
            tap.check(got == want[:1], f"{desc}: reset on the destination "
                      f"drops it ({[hex(b) for b in got]})")
        except Exception as e:
            while tap.n - first < TSEG_CHECKS:
                tap.check(False, f"{desc}: {e}")
        finally:
            for p in procs:
                stop(p)


def main():
    tap = Tap()
    result = tap.check

    print(f"1..{len(CASES) * 4 + TSEG_CHECKS}")
    for machine, src_b, dst_b, want in CASES:
        desc = (f"{machine}: merge-barriers "
                f"{'default' if src_b is None else repr(src_b)} -> "
                f"{'default' if dst_b is None else repr(dst_b)}")
        procs = []
        first = tap.n
        with tempfile.TemporaryDirectory(prefix="mb-migration-") as tmp:
            try:
                sock = os.path.join(tmp, "migration.sock")
                dst, dqmp = start(tmp, "dst", machine, dst_b,
                                  incoming=f"unix:{sock}")
                procs.append(dst)
                src, sqmp = start(tmp, "src", machine, src_b)
                procs.append(src)
                time.sleep(0.5)               # let SeaBIOS run a little
                sqmp.cmd("migrate", uri=f"unix:{sock}")
                status = wait_migration(sqmp, 120)
                result(status == "completed",
                       f"{desc}: migration {status}")
                dstat = wait_running(dqmp)
                result(dstat == "running",
                       f"{desc}: destination {dstat}")
                got = dqmp.cmd("qom-get", path="/machine",
                               property="merge-barriers")
                result(got == want,
                       f"{desc}: destination keeps its barriers {got}")
                mtree = dqmp.cmd("human-monitor-command",
                                 **{"command-line": "info mtree -f"})
                line = next((x for x in mtree.splitlines()
                             if x.startswith(' AS "memory"')), "")
                shown = ("merge barriers" in line) == bool(want)
                result(shown, f"{desc}: destination view: {line.strip()}")
            except Exception as e:
                while tap.n - first < 4:
                    result(False, f"{desc}: {e}")
            finally:
                for p in procs:
                    stop(p)
    tseg_case(tap)
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
