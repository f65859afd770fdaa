#!/usr/bin/env python3
"""The log parsers (scripts/mblib/parsers.py) on known input.

Real logs of unpatched QEMU 10.2.2 from ../shared/reference/ (skipped when
that directory is missing) and small synthetic ones for what the e2e runs
cannot pin down: several address spaces with one name sharing a view
(intel-iommu's "vtd-root"), the TSEG window, KVM SMM slots, strace lines
split by other threads.  Speaks TAP.
"""

import os
import sys

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(TOP, "scripts"))
import mblib.parsers as mp  # noqa: E402

REF = os.path.normpath(os.path.join(TOP, "..", "shared", "reference"))
MiB = 1 << 20
TSEG64 = (0x7c000000, 0x80000000)         # q35 10.2, -m 2G
TSEG16 = (0x7f000000, 0x80000000)         # q35 10.1 (extended-tseg-mbytes 16)

tests = []


def test(fn):
    tests.append(fn)
    return fn


def ref(name):
    path = os.path.join(REF, name)
    if not os.path.exists(path):
        return None
    return open(path, errors="replace").read()


@test
def memslot_reference():
    """unpatched-10.2.2-q35-kvm-memslot-trace.txt (counted by hand): slot 0
    [0, 2 GiB) deleted on lines 3 and 21, slot 4 [1 MiB, 2 GiB) on line 11,
    slot 4 [0xf0000, 2 GiB) on line 19; the deletions of slots 0, 2, 3 below
    1 MiB do not count.  Only AddrSpace#0; 6 slots live at the end (0, 1,
    2, 3, 4, 5)."""
    text = ref("unpatched-10.2.2-q35-kvm-memslot-trace.txt")
    if text is None:
        return None, f"no {REF}"
    deleted, live = mp.parse_memslots(text)
    got = (deleted, live, mp.per_as(deleted))
    want = ({0: 4}, {0: 6}, "0:4")
    # TSEG is never a slot of its own there: the window changes nothing
    return (got == want and mp.parse_memslots(text, TSEG64)[0] == {0: 4},
            f"deleted {got[2]}, live {mp.per_as(live)}")


@test
def memslot_per_address_space():
    """SMM (AddrSpace#1) counted apart; a slot only inside TSEG is not
    RAM outside it; re-adding a slot with the same number is no deletion."""
    lines = []
    for asid in (0, 1):
        lines += [
            f"kvm_set_user_memory AddrSpace#{asid} Slot#0 flags=0x0 gpa=0x0 "
            "size=0x80000000 guest_memfd=-1 guest_memfd_offset=0x0 ret=0",
            f"kvm_set_user_memory AddrSpace#{asid} Slot#0 flags=0x0 gpa=0x0 "
            "size=0x0 guest_memfd=-1 guest_memfd_offset=0x0 ret=0",
            f"kvm_set_user_memory AddrSpace#{asid} Slot#0 flags=0x0 "
            "gpa=0x100000 size=0x7bf00000 guest_memfd=-1 "
            "guest_memfd_offset=0x0 ret=0",
            f"kvm_set_user_memory AddrSpace#{asid} Slot#1 flags=0x0 "
            "gpa=0x7c000000 size=0x4000000 guest_memfd=-1 "
            "guest_memfd_offset=0x0 ret=0",
            f"kvm_set_user_memory AddrSpace#{asid} Slot#1 flags=0x0 "
            "gpa=0x7c000000 size=0x0 guest_memfd=-1 guest_memfd_offset=0x0"
            " ret=0",
        ]
    lines.append("kvm_set_user_memory AddrSpace#1 Slot#0 flags=0x0 "
                 "gpa=0x100000 size=0x0 guest_memfd=-1 guest_memfd_offset=0x0"
                 " ret=0")
    deleted, live = mp.parse_memslots("\n".join(lines), TSEG64)
    return (mp.per_as(deleted) == "0:1 1:2" and live == {0: 1, 1: 0},
            f"deleted {mp.per_as(deleted)}, live {mp.per_as(live)}")


@test
def server_log_reference():
    """The vfio-user server logs of unpatched 10.2.2: pc 3, q35 4 removals
    of RAM above 1 MiB (each 2047 MiB of it); teardown entries
    ("removing DMA region iova=[...") do not count."""
    pc = ref("unpatched-10.2.2-pc-tcg-vfio-user-server.log")
    q35 = ref("unpatched-10.2.2-q35-tcg-vfio-user-server.log")
    if pc is None or q35 is None:
        return None, f"no {REF}"
    got_pc = mp.parse_server_log(pc)
    got_q35 = mp.parse_server_log(q35, TSEG64)
    return (got_pc == (3, 3 * 2047 * MiB, 0) and
            got_q35 == (4, 4 * (2047 - 64) * MiB, 0),
            f"pc {got_pc}, q35 {got_q35}")


@test
def tseg_window():
    """[1M, TSEG base) and [1M, 2G) take RAM outside TSEG; [TSEG base, 2G)
    only inside; below 1 MiB nothing; without a window all is outside."""
    log = "\n".join(f"gpio: removing DMA region [{a:#x}, {b:#x}) flags=0"
                    for a, b in ((MiB, TSEG64[0]), (MiB, 2 << 30),
                                 TSEG64, (0, MiB), (0xf0000, TSEG64[0])))
    got = mp.parse_server_log(log, TSEG64)
    want = (3, 3 * (TSEG64[0] - MiB), 1)
    nowin = mp.parse_server_log(log)
    return (got == want and nowin[0] == 4 and nowin[2] == 0,
            f"{got}, without a window {nowin}")


VTD_TRACE = """\
flatview_new 0x1 (root 0x2)
address_space_topology_del as vtd-root: 0x0 size 0x80000000 region mem
address_space_topology_del as vtd-root: 0x0 size 0x80000000 region mem
vfio_listener_region_add_ram region_add [ram] 0x0 - 0x7fffffff [0x7f0]
flatview_new 0x3 (root 0x2)
address_space_topology_del as memory: 0x0 size 0x80000000 region mem
address_space_topology_del as vtd-root: 0x0 size 0x80000000 region mem
address_space_topology_del as vtd-root: 0x0 size 0x80000000 region mem
vfio_listener_region_del region_del 0x0 - 0x7fffffff
address_space_topology_del as vtd-root: 0x0 size 0x80000000 region mem
flatview_new 0x4 (root 0x2)
flatview_new 0x5 (root 0x6)
address_space_topology_del as vtd-root: 0x0 size 0xc0000 region mem
address_space_topology_del as vtd-root: 0x100000 size 0x7ff00000 region mem
kvm_set_user_memory AddrSpace#0 Slot#4 flags=0x0 gpa=0x100000 size=0x0
vfio_listener_region_del region_del 0x100000 - 0x7fffffff
address_space_topology_del as vtd-root: 0x0 size 0xc0000 region mem
address_space_topology_del as vtd-root: 0x100000 size 0x7ff00000 region mem
address_space_topology_del as vtd-root: 0x7c000000 size 0x4000000 region mem
address_space_topology_del as vtd-root: 0x7c000000 size 0x4000000 region tseg-blackhole
address_space_topology_del as vtd-root: 0xfffc0000 size 0x40000 region pc.bios
"""


@test
def topology_shared_view():
    """Three "vtd-root" address spaces on one view: each change counts once
    per transaction (flatview_new), from the device's first mapping on;
    other address spaces, other regions and TSEG-only removals do not."""
    got = mp.parse_topology(VTD_TRACE, "vtd-root", TSEG64)
    mem = mp.parse_topology(VTD_TRACE, "memory", TSEG64)
    return got == 2 and mem == 1, f"vtd-root {got}, memory {mem}"


@test
def listener_follows_device_view():
    """Each vfio_listener_region_del is attributed to the address space of
    the topology event just before it (KVM lines in between ignored)."""
    got = mp.listener_address_spaces(VTD_TRACE)
    return got == {"vtd-root": 2}, f"{got}"


@test
def flatview_listing():
    """info mtree -f: address spaces per view, roots and barriers."""
    text = """\
FlatView #0
 AS "memory", root: system, merge barriers: 0000000000100000 000000007c000000
 AS "cpu-memory-0", root: system
 Root memory region: system
  0000000000000000-000000000009ffff (prio 0, ram): mem
FlatView #1
 AS "vtd-root", root: vtd-00.0
 AS "vtd-root", root: vtd-01.0
 Root memory region: vtd-nodmar
"""
    views = mp.parse_flatviews(text)
    ok = (len(views) == 2 and
          views[0][1] == {"memory": "0000000000100000 000000007c000000"} and
          ("vtd-root", "vtd-01.0") in views[1][0] and len(views[1][0]) == 2)
    return ok, f"{views}"


STRACE = """\
100  1000.000001 mmap(NULL, 1048576, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_NORESERVE, 14</memfd:mem>(deleted), 0) = 0x7f0000000000
100  1000.000002 mmap(NULL, 2147483648, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_NORESERVE, 14</memfd:mem>(deleted), 0 <unfinished ...>
101  1000.000003 munmap(0x7e0000000000, 67108864) = 0
100  1000.000004 <... mmap resumed>) = 0x7e8000000000
100  1000.000005 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 3</usr/lib/x.so>, 0) = 0x7d0000000000
100  2000.000001 munmap(0x7e8000000000, 2147483648) = 0
100  2000.000002 mmap(NULL, 2146435072, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_NORESERVE, 14</memfd:mem>(deleted), 0x100000) = 0x7e8000100000
100  2000.000003 munmap(0x7f0000000000, 1048576) = 0
100  2000.000004 munmap(0x7d0000000000, 4096) = 0
100  3000.000001 munmap(0x7e8000100000, 2146435072) = 0
"""


@test
def strace_phases():
    """Guest memfd mappings only, resumed calls joined, per phase: phase 1
    maps two, phase 2 removes [0, 2G) (RAM above 1 MiB) and [0, 1M), phase
    3 (the end of the log: teardown) removes [1M, 2G)."""
    got = mp.parse_strace(STRACE, (1500.0, 2500.0, None), TSEG64)
    want = [dict(removals=0, bytes=0, tseg=0, unmapped=0, live=2),
            dict(removals=1, bytes=TSEG64[0] - MiB, tseg=0, unmapped=2,
                 live=1),
            dict(removals=1, bytes=TSEG64[0] - MiB, tseg=0, unmapped=1,
                 live=0)]
    return got == want, f"{got}"


STRACE_NUMA = """\
100  1000.000001 mmap(NULL, 1073741824, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_NORESERVE, 14</tmp/h/1-node0>, 0) = 0x7f0000000000
100  1000.000002 mmap(NULL, 1073741824, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_NORESERVE, 15</tmp/h/1-node1>, 0) = 0x7e0000000000
100  2000.000001 munmap(0x7f0000000000, 1073741824) = 0
100  2000.000002 munmap(0x7e0000000000, 1073741824) = 0
"""


@test
def strace_numa_files():
    """Two NUMA nodes on hugetlbfs files: node 1's offset 0 is guest
    address 1 GiB, so unmapping it removes RAM up to the TSEG window and
    the TSEG window; node 0's mapping is RAM above 1 MiB too."""
    bases = {"/tmp/h/1-node0": 0, "/tmp/h/1-node1": 1 << 30}
    got = mp.parse_strace(STRACE_NUMA, (1500.0, None), TSEG64, bases)
    want = [dict(removals=0, bytes=0, tseg=0, unmapped=0, live=2),
            dict(removals=2, bytes=TSEG64[0] - MiB, tseg=0, unmapped=2,
                 live=0)]
    return got == want, f"{got}"


@test
def vhost_user_writes():
    """vhost_user_write events counted per request."""
    text = ("vhost_user_write req:37 flags:0x9\n"
            "vhost_user_write req:38 flags:0x9\n"
            "vhost_user_read req:38 flags:0x5\n"
            "vhost_user_write req:37 flags:0x9\n"
            "vhost_user_write req:5 flags:0x9\n")
    got = mp.parse_vhost_writes(text)
    return got == {37: 2, 38: 1, 5: 1}, f"{got}"


def main():
    print(f"1..{len(tests)}")
    failed = 0
    for i, fn in enumerate(tests, 1):
        name = fn.__name__.replace("_", " ")
        try:
            ok, detail = fn()
        except Exception as e:            # a crash is a failure
            ok, detail = False, f"{type(e).__name__}: {e}"
        if ok is None:
            print(f"ok {i} {name} # SKIP {detail}")
            continue
        failed += not ok
        print(f"{'ok' if ok else 'not ok'} {i} {name}: {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
