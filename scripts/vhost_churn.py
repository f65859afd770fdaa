#!/usr/bin/env python3
"""How often a real vhost-user backend loses guest RAM while firmware boots.

qemu-storage-daemon exports an empty raw image as a vhost-user-blk device
(--export type=vhost-user-blk); QEMU, with its RAM in a shared memfd,
attaches it with -device vhost-user-blk-pci (modern virtio only:
libvhost-user refuses legacy virtio, which OVMF would otherwise use) and
boots firmware with no other disk: SeaBIOS tries to boot from it and ends
with "No bootable device." on its debug console (isa-debugcon at 0x402);
OVMF on q35, plain and with Secure Boot (see dma_churn.py), ends at the UEFI
shell prompt, or with Secure Boot at "No bootable option or device was
found.".  The backend runs under strace (mmap, munmap, with file descriptor
paths and time stamps).

A vhost device is started (its memory table sent) only when the guest's
driver sets DRIVER_OK, and vhost joins sections that are contiguous in host
memory whatever their read-only flag.  Firmware starts the device after the
last PAM change that alters what vhost sees (SeaBIOS: the final switch of
0xc0000-0xfffff from read/write to read-only RAM is invisible to vhost), so
the boot alone may show no removal even without barriers.  A second phase
therefore replays firmware's PAM programming while the device runs: through
the qtest protocol (-qtest, next to TCG), all PAM registers go to 0 (BIOS
area from ROM/PCI, as after reset), to 0x33 (RAM read/write, SeaBIOS's
make_bios_writable) and to 0x11 (read-only, make_bios_readonly).

For each run, per phase (boot, then PAM replay):

  SET/ADD/REM   memory-table messages QEMU sent (trace event
                vhost_user_write: req 5 SET_MEM_TABLE, 37 ADD_MEM_REG,
                38 REM_MEM_REG)
  removals      munmap()s by the backend of its mappings of the guest
                memfd that covered guest RAM above 1 MiB outside the TSEG
                window (REM_MEM_REG and SET_MEM_TABLE both unmap), and the
                bytes of that RAM
  TSEG          such munmap()s that covered RAM only inside the TSEG
                window [below_4g - extended-tseg-mbytes MiB, below_4g) (q35)
  unmaps        all munmap()s of guest memfd mappings; with the
                configurable-memory-slots protocol (no SET_MEM_TABLE after
                the first) it must equal REM_MEM_REG
  regions       the backend's live mappings of the guest memfd at the end
                of the phase (/proc/PID/maps): its memory regions

The guest memfd's file offset is the guest physical address here (2 GiB,
all below 4 GiB, one memory backend), so a mapping's fd offset and size
give the guest RAM it covers.

Usage: vhost_churn.py [--unpatched BIN] [--csv F] [--svg F] [--markdown F]
                      [--tap] [--setup NAME ...]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from mblib.guestram import (GUEST_RAM, NODE_PAGES, GuestRam, HostLimit,
                            by_guest_ram, ram_short)
from mblib.machine import (ALTERNATIVE, FAMILY, OVMF_DIR, add_churn_args,
                           connect_qmp, firmware_args, machine_opts,
                           reference_rows, replay_pam, tseg_window, wait_boot)
from mblib.parsers import human, parse_strace, parse_vhost_writes
from mblib.peers import (QSD, SEABIOS_DISK_READ, backend_failure,
                         guest_mappings, start_backend, stop_backend)
from mblib.qmp import QTestConn, connect_unix, stop
from mblib.report import (grouped_bars_svg, log, text_table, write_csv,
                          write_markdown)

SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG = 5, 37, 38
# Rows that measure other builds: a failure there is a result, not an error.
REFERENCE = ("unpatched 10.2.2", ALTERNATIVE)
# The labels of vhost policy variants (--variant) start with this.
VARIANT = "vhost policy: "

# name -> (machine kind, firmware, whether "merge-barriers=" rows run)
SETUPS = {
    "pc": ("pc", "SeaBIOS", True),
    "q35": ("q35", "SeaBIOS", True),
    "q35-ovmf": ("q35", "OVMF", False),
    "q35-ovmf-secboot": ("q35", "OVMF secboot", False),
}


def trace_size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def run_one(qemu, qsd, cfg, workdir, ovmf_dir=OVMF_DIR, mount=None):
    """Boot the firmware to its end with a vhost-user-blk device, then
    replay the PAM programming; count both phases, and check that the
    device worked: the firmware reached its end of boot (SeaBIOS after
    reading the disk's first sector through the device), the backend
    stayed up through both phases, and QEMU reported no vhost error."""
    qmp_path = os.path.join(workdir, "qmp.sock")
    qtest_path = os.path.join(workdir, "qtest.sock")
    trace = os.path.join(workdir, "trace.log")
    err = os.path.join(workdir, "qemu.err")
    ram = GuestRam(cfg["memory"], mount, tag=os.path.basename(workdir))
    fw_args, watch, ends = firmware_args(cfg["firmware"], workdir, ovmf_dir)
    backend, sock, qsd_pid = start_backend(qsd, workdir)
    qemu_proc = None
    fragments = list(ram.fd_bases())

    def backend_check():
        failure = backend_failure(backend, workdir)
        if failure:
            raise RuntimeError(failure)

    try:
        args = [qemu, "-machine", machine_opts(cfg, ram), "-accel", "tcg",
                "-m", "2G"] + ram.args() + \
            ["-display", "none", "-nodefaults"] + fw_args
        args += ["-chardev", f"socket,id=vu,path={sock}",
                 "-device",
                 "vhost-user-blk-pci,chardev=vu,disable-legacy=on,bootindex=1",
                 "-qmp", f"unix:{qmp_path},server=on,wait=off",
                 "-qtest", f"unix:{qtest_path},server=on,wait=off",
                 "-D", trace, "-trace", "enable=vhost_user_write"]
        with open(err, "wb") as errf:
            qemu_proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                         stderr=errf)
        qmp = connect_qmp(qemu_proc, qmp_path, err)
        boot = wait_boot(qemu_proc, qmp, watch, ends, err,
                         check=backend_check)
        # The backend answers every memory-table message before QEMU goes
        # on (REPLY_ACK), and QEMU's log is flushed line by line: what the
        # backend did so far belongs to the boot.
        t_boot, n_boot = time.time(), trace_size(trace)
        regions_boot = guest_mappings(qsd_pid, fragments)
        alive_boot = backend_failure(backend, workdir)
        tseg = tseg_window(qmp, cfg["machine"])
        qt = QTestConn(connect_unix(qtest_path, timeout=30))
        replay_pam(qt, cfg["machine"])
        qt.close()
        t_replay, n_replay = time.time(), trace_size(trace)
        regions_replay = guest_mappings(qsd_pid, fragments)
        alive_replay = backend_failure(backend, workdir)
        qmp.cmd("quit")
        qmp.close()
        qemu_proc.wait(timeout=30)
    finally:
        stop(qemu_proc, 5)
        stop_backend(backend, qsd_pid)
        ram.cleanup()

    text = open(trace, "rb").read()
    msgs = [parse_vhost_writes(text[:n_boot].decode(errors="replace")),
            parse_vhost_writes(text[n_boot:n_replay]
                               .decode(errors="replace"))]
    unmaps = parse_strace(open(os.path.join(workdir, "strace.log"),
                               errors="replace").read(),
                          (t_boot, t_replay), tseg, ram.fd_bases())
    fw_out = open(watch, "rb").read()
    qemu_errors = [line for line in open(err, errors="replace")
                   .read().splitlines() if "vhost" in line.lower()]
    r = {"boot_s": round(boot, 2), "tseg_window": tseg,
         # SeaBIOS read the disk's first sector through the device (an
         # empty image: no boot signature); OVMF: end of boot reached
         "disk_read": (SEABIOS_DISK_READ in fw_out
                       if cfg["firmware"] == "SeaBIOS" else None),
         "qemu_errors": qemu_errors}
    for phase, m, u, regions, failure in (
            ("boot", msgs[0], unmaps[0], regions_boot, alive_boot),
            ("replay", msgs[1], unmaps[1], regions_replay, alive_replay)):
        r[phase] = {
            "set": m.get(SET_MEM_TABLE, 0), "add": m.get(ADD_MEM_REG, 0),
            "rem": m.get(REM_MEM_REG, 0),
            "removals": u["removals"], "bytes": u["bytes"],
            "tseg": u["tseg"] if tseg else None,
            "unmapped": u["unmapped"], "regions": regions,
            "regions_strace": u["live"], "backend_failure": failure,
        }
    return r


# Guest RAM backends (mblib.guestram.GUEST_RAM) -> the setups that run on them.
MEMORY = {
    "memfd": list(SETUPS),
    "memfd-2M": list(SETUPS),
    "memfd-1G": ["q35", "q35-ovmf-secboot"],
    "file-2M-numa": ["q35"],
    # vhost's overlap checks with memdevs of different page sizes, and a
    # barrier at the node boundary (1 GiB)
    "file-2M-1G-numa": ["q35"],
}


def configs(patched, unpatched, setups, memories=("memfd",),
            alternative=None, variants=()):
    """Rows; expect_boot / expect_replay: "zero", "churn" or "any".

    On hugepages vhost-user maps whole pages: the PAM changes below 1 MiB
    all fall inside the first page, and the region that covers it never
    changes, with barriers or without; the replay must remove nothing
    anywhere.  On 4 KiB pages, the replay must churn without barriers."""
    out = []
    for memory, name in [(m, n) for m in memories for n in setups
                         if n in MEMORY[m]]:
        kind, firmware, off_row = SETUPS[name]
        fam = FAMILY[kind]
        churn = "churn" if GUEST_RAM[memory][1] is None else "zero"
        rows = []
        rows += [(label, binary, mtype, None, "any", "any")
                 for label, binary, mtype
                 in reference_rows(unpatched, alternative, f"{fam}-10.2")]
        # vhost policy variants (make bench): measured, not judged
        rows += [(VARIANT + label, binary, f"{fam}-10.2", None, "any", "any")
                 for label, binary in variants]
        # vhost joins sections across merge barriers (patch 3): with the
        # defaults the backend sees what it sees without barriers, so the
        # replay churns on 4 KiB pages as on the old types.
        rows.append(("patched, 10.2 type (default)", patched, f"{fam}-10.2",
                     None, "zero", churn))
        # The boot alone shows no removal even without barriers (see the
        # docstring: measured 0 with SeaBIOS and OVMF on every machine
        # type); the replay must.
        if off_row:
            rows.append(("patched, merge-barriers= (off)", patched,
                         f"{fam}-10.2", "", "any", churn))
        rows.append(("patched, 10.1 type", patched, f"{fam}-10.1", None,
                     "any", churn))
        if memory == "memfd":
            # an old type opting in by intent: what the 10.2 defaults get
            rows.append(("patched, 10.1 type, merge-layout=latest", patched,
                         f"{fam}-10.1,merge-layout=latest", None, "zero",
                         churn))
        if memory in NODE_PAGES:
            rows.append(("patched, merge-barriers=1M,,1G (node boundary)",
                         patched, f"{fam}-10.2", "1M,,1G", "zero", churn))
        for label, binary, mtype, barriers, e_boot, e_replay in rows:
            out.append({"setup": name, "machine": kind, "firmware": firmware,
                        "memory": memory, "configuration": label,
                        "binary": binary, "machine_type": mtype,
                        "barriers": barriers, "expect_boot": e_boot,
                        "expect_replay": e_replay})
    return out


EXPECTED = {"zero": "0", "churn": "> 0", "any": "any"}


def tap_checks(cfg, r):
    """[(ok, text)]: one test per phase."""
    out = []
    for phase, expect in (("boot", cfg["expect_boot"]),
                          ("replay", cfg["expect_replay"])):
        p = r[phase]
        problems = []
        n = p["removals"]
        # The device works: started, the backend up, no vhost error.
        if p["backend_failure"]:
            problems.append(p["backend_failure"])
        if phase == "boot":
            if not p["set"] and not p["add"]:
                problems.append("the device was never started (no memory "
                                "table sent)")
            if r["disk_read"] is False:
                problems.append("SeaBIOS did not read the disk through "
                                "the device")
            if r["qemu_errors"]:
                problems.append("QEMU: " + "; ".join(r["qemu_errors"][:3]))
        if expect == "zero" and n:
            problems.append(f"the backend unmapped guest RAM above 1 MiB "
                            f"{n} times, expected 0")
        if expect == "churn" and not n:
            problems.append("0 removals, expected > 0")
        # Cross-check: with add/remove messages (SET_MEM_TABLE at most
        # once, before anything was mapped), every unmap is a REM_MEM_REG.
        if r["boot"]["set"] + r["replay"]["set"] <= 1 and \
                p["unmapped"] != p["rem"]:
            problems.append(f"{p['unmapped']} unmaps of guest memory but "
                            f"{p['rem']} REM_MEM_REG")
        if p["regions"] != p["regions_strace"]:
            problems.append(f"{p['regions']} guest memory mappings in "
                            f"/proc/PID/maps, {p['regions_strace']} by "
                            "strace")
        text = (f"{'boot' if phase == 'boot' else 'PAM replay'}: {n} "
                f"removals, TSEG {'-' if p['tseg'] is None else p['tseg']} "
                f"(SET_MEM_TABLE {p['set']}, ADD_MEM_REG {p['add']}, "
                f"REM_MEM_REG {p['rem']}, {p['regions']} regions after), "
                f"expected {EXPECTED[expect]}")
        if expect == "any" and phase == "boot" and \
                cfg["configuration"] != "unpatched 10.2.2":
            text += " (firmware starts vhost after its last visible change)"
        if problems:
            text += ": " + "; ".join(problems)
        out.append((not problems, text))
    return out


def works(r):
    """"yes", or what failed: the backend, the disk read, QEMU."""
    if "failed" in r:
        return "no: " + r["failed"].splitlines()[0][:100]
    bad = [r[p]["backend_failure"] for p in ("boot", "replay")
           if r[p]["backend_failure"]]
    if r["disk_read"] is False:
        bad.append("no disk read")
    bad += r["qemu_errors"][:1]
    return "; ".join(bad) if bad else "yes"


def write_svg(rows, path):
    """Grouped bars: the backend's removals of guest RAM above 1 MiB during
    the boot and during the PAM replay."""
    labels = list(dict.fromkeys(r["configuration"] for r in rows))
    def where(r):
        return f"{r['machine']} / {r['firmware']}", ram_short(r["memory"])

    groups = list(dict.fromkeys(where(r) + (caption,) for r in rows
                                for caption in ("boot", "PAM replay")))

    def value(g, label):
        phase = "boot" if g[2] == "boot" else "replay"
        return next((r[phase]["removals"] if phase in r else None
                     for r in rows
                     if where(r) == g[:2]
                     and r["configuration"] == label), None)

    grouped_bars_svg(path, "vhost-user backend (qemu-storage-daemon): "
                     "unmaps of guest RAM above 1 MiB", groups, labels,
                     value)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu", default="out/qemu-system-x86_64")
    ap.add_argument("--qsd", default=QSD,
                    help="qemu-storage-daemon (the vhost-user-blk backend)")
    add_churn_args(ap, SETUPS, OVMF_DIR,
                   "emit TAP: 0 removals with the default machine types, "
                   "more than 0 without barriers (replay)")
    ap.add_argument("--variant", action="append", default=[],
                    help="LABEL=BIN: a vhost policy variant on the 10.2 "
                    "types (scripts/build-vhost-variants.sh)")
    opts = ap.parse_args()

    missing = []
    if not os.access(opts.qsd, os.X_OK):
        missing.append(f"no qemu-storage-daemon at {opts.qsd}: build it "
                       "with 'make build' (QEMU configured with "
                       "--enable-tools)")
    if not shutil.which("strace"):
        missing.append("strace is not installed: scripts/deps.sh e2e")
    if missing:
        for m in missing:
            log(f"error: {m}")
        if opts.tap:
            print("1..1\nnot ok 1 " + "; ".join(missing))
        return 1

    plan = configs(opts.qemu, opts.unpatched, opts.setup or list(SETUPS),
                   opts.memory or list(MEMORY), opts.alternative,
                   [tuple(v.split("=", 1)) for v in opts.variant])
    if opts.tap:
        print(f"1..{2 * len(plan)}", flush=True)
    rows = []
    notes = []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="vhost-churn-") as tmp:
        for i, cfg, what, workdir, mount, skip in by_guest_ram(
                plan, lambda c: c["memory"], tmp,
                lambda c: f"{c['machine_type']} {c['firmware']} "
                f"{GUEST_RAM[c['memory']][0]}: {c['configuration']}"):
            try:
                if skip:
                    raise HostLimit(skip)
                r = run_one(cfg["binary"], opts.qsd, cfg, workdir,
                            opts.ovmf_dir, mount)
            except HostLimit as e:
                log(f"    skipped: {e}")
                notes.append(f"skipped {what}: {e}")
                if opts.tap:
                    for k in (1, 2):
                        print(f"ok {2 * i - 2 + k} {what} # SKIP {e}")
                continue
            except Exception as e:            # report, keep going
                keep = os.path.join("out", "vhost-churn-failed", str(i))
                shutil.rmtree(keep, ignore_errors=True)
                shutil.copytree(workdir, keep,
                                ignore=shutil.ignore_patterns("*.sock",
                                                              "*.raw"))
                log(f"    failed: {e} (files: {keep})")
                if cfg["configuration"] in REFERENCE or \
                        cfg["configuration"].startswith(VARIANT):
                    # what unpatched QEMU, the alternative or a variant
                    # does: a result
                    rows.append(dict(failed=str(e), **{k: cfg[k] for k in (
                        "setup", "machine", "firmware", "memory",
                        "configuration", "machine_type")}))
                    continue
                if opts.tap:
                    for k in (1, 2):
                        print(f"not ok {2 * i - 2 + k} {what}: {e}",
                              flush=True)
                rows.append(None)
                continue
            r.update({k: cfg[k] for k in ("setup", "machine", "firmware",
                                          "memory", "configuration",
                                          "machine_type")})
            rows.append(r)
            for phase in ("boot", "replay"):
                p = r[phase]
                log(f"    {'boot' if phase == 'boot' else 'PAM replay'}: "
                    f"SET_MEM_TABLE {p['set']}, ADD_MEM_REG {p['add']}, "
                    f"REM_MEM_REG {p['rem']}; backend: {p['removals']} "
                    f"removals ({human(p['bytes'])}) outside TSEG, "
                    f"{'-' if p['tseg'] is None else p['tseg']} in TSEG, "
                    f"{p['unmapped']} unmaps, {p['regions']} regions after"
                    + (f"; boot in {r['boot_s']} s" if phase == "boot"
                       else ""))
            if opts.tap:
                for k, (good, text) in enumerate(tap_checks(cfg, r), 1):
                    print(f"{'ok' if good else 'not ok'} {2 * i - 2 + k} "
                          f"{what}: {text}", flush=True)
    log(f"{len(plan)} runs in {time.time() - t0:.0f} s")

    done = [r for r in rows if r]
    header = ["machine", "firmware", "memory", "configuration",
              "SET_MEM_TABLE", "ADD_MEM_REG", "REM_MEM_REG", "removals",
              "bytes unmapped", "TSEG", "regions", "replay: REM_MEM_REG",
              "replay: removals", "replay: regions", "device works",
              "boot s"]
    table = [[r["machine"], r["firmware"], ram_short(r["memory"]),
              r["configuration"]] +
             (["-"] * 10 + [works(r), "-"] if "failed" in r else
              [str(r["boot"]["set"]), str(r["boot"]["add"]),
               str(r["boot"]["rem"]), str(r["boot"]["removals"]),
               human(r["boot"]["bytes"]),
               "-" if r["boot"]["tseg"] is None else str(r["boot"]["tseg"]),
               str(r["boot"]["regions"]), str(r["replay"]["rem"]),
               str(r["replay"]["removals"]), str(r["replay"]["regions"]),
               works(r), f"{r['boot_s']:.1f}"]) for r in done]
    out = sys.stderr if opts.tap else sys.stdout
    print("", file=out)
    print(text_table(header, table), file=out)
    print("SET_MEM_TABLE/ADD_MEM_REG/REM_MEM_REG: vhost-user messages QEMU "
          "sent during the boot; removals: the backend's\nmunmap()s of "
          "guest memory that covered RAM above 1 MiB outside TSEG; TSEG: "
          "only inside it; regions: its\nguest memory mappings after the "
          "boot; replay: the same while firmware's PAM programming is "
          "replayed\n(qemu-storage-daemon vhost-user-blk export, TCG)",
          file=out)
    for n in notes:
        print(n, file=out)

    if opts.csv:
        cols = ["set_mem_table", "add_mem_reg", "rem_mem_reg", "removals",
                "bytes_unmapped", "tseg_removals", "unmaps", "regions"]
        keys = ["set", "add", "rem", "removals", "bytes", "tseg",
                "unmapped", "regions"]
        write_csv(opts.csv,
                  ["machine", "machine_type", "firmware", "memory",
                   "configuration", "tseg_window"] + [f"boot_{c}" for c in cols]
                  + [f"replay_{c}" for c in cols]
                  + ["device_works", "boot_seconds"],
                  [[r["machine"], r["machine_type"], r["firmware"],
                    r["memory"], r["configuration"],
                    "%#x-%#x" % r["tseg_window"] if r.get("tseg_window")
                    else None]
                   + [r["boot"][k] if "boot" in r else None for k in keys]
                   + [r["replay"][k] if "replay" in r else None
                      for k in keys]
                   + [works(r), r.get("boot_s")]
                   for r in done])
    if opts.svg and done:
        write_svg(done, opts.svg)
    if opts.markdown:
        write_markdown(opts.markdown, header, table, notes)
    if opts.csv or opts.svg or opts.markdown:
        print("written: " + ", ".join(p for p in (opts.csv, opts.svg,
                                                   opts.markdown) if p),
              file=out)
    return 0 if len(done) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
