"""Parsers of what the peers and QEMU log (pure functions of text).

vfio-user server logs (DMA regions added and removed), QEMU trace
events (address_space_topology_del, vfio_listener_*, KVM memory
slots, vhost_user_write), info mtree -f, and strace's mmap/munmap
lines; RAM above 1 MiB and the TSEG window are told apart.
"""

import re

from .guestram import MiB, RAM_SIZE
from .machine import RAM_REGION

RAM_ABOVE_1M = (MiB, RAM_SIZE)


def overlap(start, end, lo=RAM_ABOVE_1M[0], hi=RAM_ABOVE_1M[1]):
    return max(0, min(end, hi) - max(start, lo))


def outside_tseg(start, end, tseg=None):
    """Bytes of RAM above 1 MiB outside the TSEG window in [start, end)."""
    if not tseg:
        return overlap(start, end)
    return overlap(start, end, MiB, tseg[0]) + \
        overlap(start, end, tseg[1], RAM_SIZE)


def classify(start, end, tseg=None):
    """'outside' (with the bytes outside TSEG), 'tseg' or None."""
    nbytes = outside_tseg(start, end, tseg)
    if nbytes:
        return "outside", nbytes
    if tseg and overlap(start, end, *tseg):
        return "tseg", overlap(start, end, *tseg)
    return None, 0


def parse_server_log(text, tseg=None):
    """vfio-user server: removals of DMA regions over RAM above 1 MiB.

    Returns (removals outside TSEG, bytes outside TSEG they unmap, removals
    inside TSEG only).  The server's teardown ("removing DMA region
    iova=[...") is not a removal by QEMU and does not match."""
    removals, nbytes, in_tseg = 0, 0, 0
    for m in re.finditer(r"removing DMA region \[(0x[0-9a-f]+|0), "
                         r"(0x[0-9a-f]+)\)", text):
        where, size = classify(int(m.group(1), 16), int(m.group(2), 16),
                               tseg)
        if where == "outside":
            removals += 1
            nbytes += size
        elif where == "tseg":
            in_tseg += 1
    return removals, nbytes, in_tseg


def live_dma_regions(text):
    """vfio-user server: the DMA regions QEMU has mapped at the end (after
    the boot), each [start, end) added and not removed since."""
    live = set()
    for m in re.finditer(r"(adding|removing) DMA region \[(0x[0-9a-f]+|0), "
                         r"(0x[0-9a-f]+)\)", text):
        region = (int(m.group(2), 16), int(m.group(3), 16))
        if m.group(1) == "adding":
            live.add(region)
        else:
            live.discard(region)
    return len(live)


TOPO_RE = re.compile(r"address_space_topology_del as (.+?): 0x([0-9a-f]+) "
                     r"size 0x([0-9a-f]+) region (.*)$")


def parse_topology(text, as_name="memory", tseg=None, ram=RAM_REGION):
    """address_space_topology_del events of AS as_name that remove RAM
    outside TSEG, from the device's first DMA mapping on.

    flatview_new lines start each memory transaction (all views are
    rendered first, then each address space updated).  Within one
    transaction, every address space named as_name that shares the view
    reports the same removal: it counts once."""
    trace, txn, seen = 0, 0, set()
    listening = text.find("vfio_listener_region_add_ram")
    for line in text[max(listening, 0):].splitlines():
        if line.startswith("flatview_new"):
            txn += 1
            continue
        m = TOPO_RE.match(line)
        if not m or m.group(1) != as_name or m.group(4) != ram:
            continue
        start, size = int(m.group(2), 16), int(m.group(3), 16)
        key = (txn, start, size)
        if key not in seen and outside_tseg(start, start + size, tseg):
            seen.add(key)
            trace += 1
    return trace


def listener_address_spaces(text):
    """The address spaces whose topology changes the device's DMA listener
    followed: for each vfio_listener_region_del, the AS of the
    address_space_topology_del just before it (same section)."""
    names, last = {}, None
    for line in text.splitlines():
        m = TOPO_RE.match(line)
        if m:
            last = m.group(1)
        elif line.startswith("flatview_new"):
            last = None
        elif line.startswith("vfio_listener_region_del") and last:
            names[last] = names.get(last, 0) + 1
    return names


KVM_RE = re.compile(r"kvm_set_user_memory AddrSpace#(\d+) Slot#(\d+) "
                    r"flags=0x[0-9a-f]+ gpa=0x([0-9a-f]+) size=0x([0-9a-f]+)")


def parse_memslots(text, tseg=None):
    """KVM memory slots: per KVM address space (0 memory, 1 SMM), how many
    slots over RAM above 1 MiB outside TSEG were deleted, and how many
    slots exist at the end.  Returns ({as: deleted}, {as: live})."""
    slots, deleted = {}, {}
    for m in KVM_RE.finditer(text):
        asid, key = int(m.group(1)), (int(m.group(1)), int(m.group(2)))
        gpa, size = int(m.group(3), 16), int(m.group(4), 16)
        deleted.setdefault(asid, 0)
        if size == 0:
            old = slots.pop(key, None)
            if old and outside_tseg(old[0], old[0] + old[1], tseg):
                deleted[asid] += 1
        else:
            slots[key] = (gpa, size)
    live = {a: sum(1 for (s, _) in slots if s == a) for a in deleted}
    return deleted, live


def per_as(counts):
    """{0: 4, 1: 4} -> "0:4 1:4"."""
    return " ".join(f"{a}:{counts[a]}" for a in sorted(counts))


def parse_flatviews(text):
    """info mtree -f: [(set of (AS name, root), {AS name: barriers})]."""
    views = []
    for line in text.splitlines():
        if line.startswith("FlatView #"):
            views.append((set(), {}))
            continue
        m = re.match(r' AS "(.*)", root: (.*?)(?:, merge barriers: (.*))?$',
                     line)
        if m and views:
            views[-1][0].add((m.group(1), m.group(2)))
            if m.group(3):
                views[-1][1][m.group(1)] = m.group(3)
    return views


def human(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def parse_vhost_writes(text):
    """vhost_user_write trace events: {request number: count}."""
    reqs = {}
    for m in re.finditer(r"^vhost_user_write req:(\d+) ", text, re.M):
        req = int(m.group(1))
        reqs[req] = reqs.get(req, 0) + 1
    return reqs


STRACE_RE = re.compile(r"^(\d+)\s+(\d+\.\d+) (.*)$")
MMAP_RE = re.compile(r"mmap\((?:NULL|0x[0-9a-f]+), (\d+), [^,]+, [^,]+, "
                     r"(-?\d+)(?:<([^>]*)>(?:\(deleted\))?)?, "
                     r"(0x[0-9a-f]+|0)\)\s+= (0x[0-9a-f]+)")
MUNMAP_RE = re.compile(r"munmap\((0x[0-9a-f]+), (\d+)\)\s+= 0")


def strace_calls(text):
    """strace -f -ttt -y output: (time, call text) with the calls that other
    threads interrupted (<unfinished ...> / <... resumed>) put together."""
    pending = {}
    for line in text.splitlines():
        m = STRACE_RE.match(line)
        if not m:
            continue
        pid, ts, call = m.group(1), float(m.group(2)), m.group(3)
        if call.endswith("<unfinished ...>"):
            pending[pid] = (ts, call[:-len("<unfinished ...>")].rstrip())
            continue
        r = re.match(r"<\.\.\. \w+ resumed>(.*)$", call)
        if r:
            if pid not in pending:
                continue
            ts, head = pending.pop(pid)
            call = head + r.group(1)
        yield ts, call


def parse_strace(text, phases=(None,), tseg=None, fd_bases=None):
    """The backend's munmap()s of its guest memory mappings, per phase:
    phases are end times (None: the end of the log).  fd_bases maps a
    fragment of the guest memory fds' paths to the guest physical address
    at their offset 0 (GuestRam.fd_bases(); default: one memfd at 0).
    Returns one dict per phase: removals outside TSEG, their bytes outside
    TSEG ("bytes"), removals inside TSEG only ("tseg"), all unmaps of
    guest memory mappings ("unmapped") and the live mappings at its end
    ("live")."""
    fd_bases = fd_bases or {"memfd:": 0}
    maps = {}
    out = []
    cur = dict(removals=0, bytes=0, tseg=0, unmapped=0)

    def close_phase():
        nonlocal cur
        out.append(dict(cur, live=len(maps)))
        cur = dict(removals=0, bytes=0, tseg=0, unmapped=0)

    ends = list(phases)
    for ts, call in strace_calls(text):
        while ends and ends[0] is not None and ts > ends[0]:
            close_phase()
            ends.pop(0)
        if not ends:
            break
        m = MMAP_RE.match(call)
        if m:
            base = next((b for frag, b in fd_bases.items()
                         if m.group(3) and frag in m.group(3)), None)
            if base is not None:
                maps[int(m.group(5), 16)] = (base + int(m.group(4), 16),
                                             int(m.group(1)))
            continue
        m = MUNMAP_RE.match(call)
        if m:
            addr = int(m.group(1), 16)
            if addr not in maps:
                continue
            gpa, size = maps.pop(addr)
            cur["unmapped"] += 1
            where, n = classify(gpa, gpa + size, tseg)
            if where == "outside":
                cur["removals"] += 1
                cur["bytes"] += n
            elif where == "tseg":
                cur["tseg"] += 1
    while ends:
        close_phase()
        ends.pop(0)
    return out
