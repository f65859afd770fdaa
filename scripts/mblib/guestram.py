"""Guest RAM backends and the host's hugepages behind them.

GUEST_RAM names the memory dimension of the end-to-end tests;
guest_ram_pool() and by_guest_ram() reserve what a backend needs
from the host, GuestRam gives one run's QEMU options.  HostLimit is
how every helper says the host cannot run a configuration.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

MiB = 1 << 20
GiB = 1 << 30


class HostLimit(Exception):
    """The host cannot run this configuration (reported as skipped)."""


# Guest RAM backends, the memory dimension of the end-to-end tests:
# name -> (label, hugepage size in KiB or None for the base page,
#          NUMA nodes).  2 GiB of guest RAM, all below 4 GiB on pc and q35.
# One node: memory-backend-memfd "mem"; two nodes: two memory-backend-file
# objects on hugetlbfs (mem0, mem1: 1 GiB each, node 1 at 1 GiB).
GUEST_RAM = {
    "memfd": ("memfd 4 KiB", None, 1),
    "memfd-2M": ("memfd hugetlb 2 MiB", 2048, 1),
    "memfd-1G": ("memfd hugetlb 1 GiB", 1048576, 1),
    "file-2M-numa": ("hugetlbfs file 2 MiB, 2 NUMA nodes", 2048, 2),
    "file-2M-1G-numa": ("hugetlbfs files 2 MiB and 1 GiB, 2 NUMA nodes",
                        2048, 2),
}
# Backends whose NUMA nodes have different page sizes: per node, in KiB
# (GUEST_RAM's page size is the first node's).
NODE_PAGES = {"file-2M-1G-numa": (2048, 1048576)}
RAM_SIZE = 2 * GiB
HUGEPAGES = "/sys/kernel/mm/hugepages/hugepages-{}kB/{}"


def page_label(kb):
    return "4 KiB" if kb is None else \
        (f"{kb >> 20} GiB" if kb >= 1 << 20 else f"{kb >> 10} MiB")


def node_pages(name):
    """The page size of each NUMA node of a GUEST_RAM backend, in KiB."""
    _, kb, nodes = GUEST_RAM[name]
    return NODE_PAGES.get(name, (kb,) * nodes)


def ram_short(name):
    """A table's label of a GUEST_RAM backend: "2 MiB", "2 MiB, 2 nodes"."""
    _, kb, nodes = GUEST_RAM[name]
    if name in NODE_PAGES:
        return (" + ".join(page_label(k) for k in NODE_PAGES[name]) +
                f" files, {nodes} nodes")
    return page_label(kb) + (f" file, {nodes} nodes" if nodes > 1 else "")


def _hugepages(kb, what, value=None):
    path = HUGEPAGES.format(kb, what)
    if value is None:
        with open(path) as f:
            return int(f.read())
    with open(path, "w") as f:
        f.write(str(value))


@contextlib.contextmanager
def hugepages(kb, count):
    """At least `count` free hugepages of `kb` KiB while the block runs;
    the pool goes back to its size before.  Raises HostLimit, with the
    reason, when this host cannot reserve them."""
    size = page_label(kb)
    if not os.path.exists(HUGEPAGES.format(kb, "nr_hugepages")):
        raise HostLimit(f"this host's kernel has no {size} hugepages")
    before = _hugepages(kb, "nr_hugepages")
    need = max(0, count - _hugepages(kb, "free_hugepages"))
    try:
        if need:
            try:
                _hugepages(kb, "nr_hugepages", before + need)
            except OSError as e:
                raise HostLimit(f"cannot reserve {count} {size} hugepages: "
                                f"{e.strerror}") from None
        free = _hugepages(kb, "free_hugepages")
        if free < count:
            raise HostLimit(f"the host reserved {free} of the {count} "
                            f"{size} hugepages needed (memory "
                            "fragmented or short)")
        yield
    finally:
        if need:
            _hugepages(kb, "nr_hugepages", before)


@contextlib.contextmanager
def hugetlbfs(kb):
    """A private hugetlbfs mount with `kb` KiB pages: its path."""
    path = tempfile.mkdtemp(prefix="mb-hugetlbfs-")
    r = subprocess.run(["mount", "-t", "hugetlbfs", "-o", f"pagesize={kb}K",
                        "mb-hugetlbfs", path], capture_output=True, text=True)
    if r.returncode:
        os.rmdir(path)
        raise HostLimit("cannot mount hugetlbfs: " +
                        (r.stderr.strip() or f"mount exited {r.returncode}"))
    try:
        yield path
    finally:
        subprocess.run(["umount", path], check=False)
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def guest_ram_pool(name):
    """What guest RAM `name` needs from the host, for every run in the
    block: hugepages reserved (2 GiB of them), hugetlbfs mounted for the
    file backends.  Yields {page size in KiB: mount} for the file backends
    (one mount per page size), else None."""
    _, kb, nodes = GUEST_RAM[name]
    if kb is None:
        yield None
        return
    if nodes > 1:
        # one hugetlbfs mount per page size: {KiB: path}
        pages = node_pages(name)
        with contextlib.ExitStack() as stack:
            mounts = {}
            for k in dict.fromkeys(pages):
                per_node = (RAM_SIZE // nodes) // (k << 10)
                stack.enter_context(hugepages(k, per_node * pages.count(k)))
                mounts[k] = stack.enter_context(hugetlbfs(k))
            yield mounts
        return
    with hugepages(kb, RAM_SIZE // (kb << 10)):
        yield None


def by_guest_ram(plan, memory_of, tmp, describe):
    """Run through `plan` grouped by guest RAM backend (memory_of(item)),
    holding each backend's guest_ram_pool() while its items run.  For each
    item, print progress ("[i/n] describe(item) ...") and make a work
    directory below `tmp`; yield (number from 1, item, description, work
    directory, hugetlbfs mount or None, skip): skip is the reason the host
    could not provide the pool (raise it as HostLimit), else None."""
    order = list(dict.fromkeys(memory_of(it) for it in plan))
    plan = sorted(plan, key=lambda it: order.index(memory_of(it)))
    i = 0
    for mem in order:
        items = [it for it in plan if memory_of(it) == mem]
        with contextlib.ExitStack() as stack:
            try:
                mount, skip = stack.enter_context(guest_ram_pool(mem)), None
            except HostLimit as e:
                mount, skip = None, f"{GUEST_RAM[mem][0]}: {e}"
            for it in items:
                i += 1
                what = describe(it)
                print(f"[{i}/{len(plan)}] {what} ...", file=sys.stderr,
                      flush=True)
                workdir = os.path.join(tmp, str(i))
                os.makedirs(workdir)
                yield i, it, what, workdir, mount, skip


class GuestRam:
    """The QEMU options of one guest RAM backend, for one run, and how to
    tell its memory in a peer's mappings: fds (a path fragment, as strace
    -y and /proc/PID/maps show it) and the guest physical address at their
    offset 0."""

    def __init__(self, name, mount=None, tag="guest"):
        self.name = name
        self.label, self.kb, self.nodes = GUEST_RAM[name]
        self.files = []
        if self.nodes > 1:
            self.files = [os.path.join(mount[k], f"{tag}-node{i}")
                          for i, k in enumerate(node_pages(name))]

    def args(self):
        """-object (and -numa) options; the machine option is
        machine_option()."""
        if self.nodes == 1:
            opts = f"memory-backend-memfd,id=mem,size={RAM_SIZE},share=on"
            if self.kb:
                opts += f",hugetlb=on,hugetlbsize={self.kb << 10}"
            return ["-object", opts]
        args = []
        for i, f in enumerate(self.files):
            args += ["-object", f"memory-backend-file,id=mem{i},"
                     f"size={RAM_SIZE // self.nodes},share=on,mem-path={f}",
                     "-numa", f"node,nodeid={i},memdev=mem{i}"]
        return args

    def machine_option(self):
        return ",memory-backend=mem" if self.nodes == 1 else ""

    def fd_bases(self):
        """{path fragment: guest physical address of its offset 0}"""
        if self.nodes == 1:
            return {"memfd:": 0}
        return {f: i * (RAM_SIZE // self.nodes)
                for i, f in enumerate(self.files)}

    def cleanup(self):
        """Give the pages of the files back (hugetlbfs keeps them)."""
        for f in self.files:
            if os.path.exists(f):
                os.unlink(f)
