#!/usr/bin/env python3
"""End-to-end: live migration between QEMUs whose merge barriers differ.

Merge barriers only change how the host presents guest memory to its
listeners; they must not enter the migration stream.  A pc-q35-10.2 guest
(SeaBIOS running, TCG) migrates between two patched QEMUs with different
barrier settings, both ways; the migration completes, the destination runs,
and it keeps its own barriers.  Speaks TAP.
"""

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "scripts"))
from mbtools import QMP, Tap, stop, wait_migration, wait_running  # noqa: E402

QEMU = os.path.abspath(os.environ.get("QEMU", "out/qemu-system-x86_64"))
CASES = [
    # (machine type, source barriers, destination barriers, expected dest)
    ("pc-q35-10.2", None, "", []),
    ("pc-q35-10.2", "", "1M,,3G", [1 << 20, 3 << 30]),
    ("pc-i440fx-10.2", "1M,,64M", None, [1 << 20]),
]


def start(tmp, name, machine, barriers, incoming=None):
    mopts = machine + ("" if barriers is None
                       else f",merge-barriers={barriers}")
    qmp = os.path.join(tmp, f"{name}.qmp")
    args = [QEMU, "-machine", mopts, "-accel", "tcg", "-m", "256M",
            "-display", "none", "-nodefaults", "-serial", "none",
            "-qmp", f"unix:{qmp},server=on,wait=off"]
    if incoming:
        args += ["-incoming", incoming]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(tmp, f"{name}.err"),
                                        "wb"))
    return proc, QMP(qmp)


def main():
    tap = Tap()
    result = tap.check

    print(f"1..{len(CASES) * 4}")
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
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
