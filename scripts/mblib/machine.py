"""The machine under test: firmware, machine options and the boot.

Firmware arguments and their end-of-boot markers, machine options,
starting QEMU and waiting for the end of boot, the TSEG window, the
options and reference rows the churn experiments share, and the
replay of firmware's PAM programming through qtest.
"""

import os
import shutil
import socket
import subprocess
import time

from .guestram import GUEST_RAM, MiB, HostLimit
from .qmp import QMP

RAM_REGION = "mem"          # the memory backend's id: the RAM's region name
BOOT_TIMEOUT = 300
OVMF_DIR = "/usr/share/OVMF"

SEABIOS_END = b"No bootable device."
SHELL_PROMPT = b"Shell> "
SECBOOT_END = b"No bootable option or device was found."
# machine kind -> machine type family ("pc-q35" + "-10.2")
FAMILY = {"pc": "pc-i440fx", "q35": "pc-q35"}


def add_churn_args(ap, setups, ovmf_dir, tap_help):
    """The options dma_churn.py and vhost_churn.py share: what to compare,
    which setups, where OVMF is, where the results go, TAP."""
    ap.add_argument("--unpatched", help="unpatched qemu-system-x86_64")
    ap.add_argument("--alternative",
                    help="the comparison variant's qemu-system-x86_64 "
                    "(alternative-patches/: ram-below-4g unmergeable)")
    ap.add_argument("--setup", action="append", choices=list(setups),
                    help="run only these setups (default: all)")
    ap.add_argument("--memory", action="append", choices=list(GUEST_RAM),
                    help="guest RAM backends to run on (default: all)")
    ap.add_argument("--ovmf-dir", default=ovmf_dir)
    ap.add_argument("--csv")
    ap.add_argument("--svg")
    ap.add_argument("--markdown", help="write the table as Markdown here")
    ap.add_argument("--tap", action="store_true", help=tap_help)


ALTERNATIVE = "alternative, 10.2 type (unmergeable)"


def reference_rows(unpatched, alternative, mtype):
    """The rows every setup gets besides the series' own: unpatched 10.2.2
    and the comparison variant, both on the newest machine type."""
    rows = []
    if unpatched:
        rows.append(("unpatched 10.2.2", unpatched, mtype))
    if alternative:
        rows.append((ALTERNATIVE, alternative, mtype))
    return rows


def kvm_usable():
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def tseg_window(qmp, kind):
    """q35: [below_4g - extended-tseg-mbytes MiB, below_4g); pc: None."""
    if kind != "q35":
        return None
    mbytes = qmp.cmd("qom-get", path="/machine/q35/mch",
                     property="extended-tseg-mbytes")
    below = qmp.cmd("qom-get", path="/machine/q35",
                    property="below-4g-mem-size")
    return (below - mbytes * MiB, below) if mbytes else None


def firmware_args(firmware, workdir, ovmf_dir):
    """(QEMU arguments, file to watch, end-of-boot markers)."""
    if firmware == "SeaBIOS":
        dbg = os.path.join(workdir, "debugcon.log")
        return (["-serial", "none",
                 "-chardev", f"file,id=dbg,path={dbg}",
                 "-device", "isa-debugcon,iobase=0x402,chardev=dbg"],
                dbg, [SEABIOS_END])
    secboot = firmware == "OVMF secboot"
    code = os.path.join(ovmf_dir, "OVMF_CODE_4M.secboot.fd" if secboot
                        else "OVMF_CODE_4M.fd")
    tmpl = os.path.join(ovmf_dir, "OVMF_VARS_4M.ms.fd" if secboot
                        else "OVMF_VARS_4M.fd")
    for f in (code, tmpl):
        if not os.path.exists(f):
            raise RuntimeError(f"no {f}: install Debian's ovmf "
                               "(scripts/deps.sh e2e)")
    nvram = os.path.join(workdir, "OVMF_VARS.fd")
    shutil.copyfile(tmpl, nvram)
    serial = os.path.join(workdir, "serial.log")
    args = ["-chardev", f"file,id=ser,path={serial}",
            "-serial", "chardev:ser",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={nvram}"]
    if secboot:
        args += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return args, serial, ([SHELL_PROMPT, SECBOOT_END] if secboot
                          else [SHELL_PROMPT])


def machine_opts(cfg, ram):
    mopts = cfg["machine_type"] + ram.machine_option()
    if cfg["firmware"] == "OVMF secboot":
        mopts += ",smm=on"
    if cfg["barriers"] is not None:
        mopts += f",merge-barriers={cfg['barriers']}"
    return mopts


def qemu_failed(err):
    """Raise what QEMU said when it exited at startup: HostLimit when the
    accelerator lacks what the machine needs (SMM under this host's KVM)."""
    msg = open(err, errors="replace").read().strip()
    if "not supported by this hypervisor" in msg:
        raise HostLimit(msg.splitlines()[-1])
    raise RuntimeError("QEMU did not start: " + msg)


def connect_qmp(qemu_proc, path, err, timeout=30):
    """QMP once QEMU listens.  QEMU creates and even accepts on the socket
    before it may still fail (accelerator setup): a QEMU that exits instead
    of answering raises its own message."""
    deadline = time.time() + timeout
    while True:
        if qemu_proc.poll() is not None:
            qemu_failed(err)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
                break
            except OSError:
                pass
        if time.time() > deadline:
            raise RuntimeError(f"QMP not listening after {timeout} s")
        time.sleep(0.02)
    try:
        return QMP(path)
    except (OSError, EOFError):
        try:
            qemu_proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise
        qemu_failed(err)


def wait_boot(qemu_proc, qmp, watch, ends, err, check=None):
    """Wait for an end-of-boot marker in `watch`; returns the seconds
    since QEMU started.  Presses ESC at the UEFI shell's startup.nsh
    countdown.  A guest stopped on an internal error (a KVM that cannot
    run this firmware) ends the wait at once; so does check() raising
    (a device's peer that failed)."""
    start = time.time()
    esc_sent = False
    while True:
        out = open(watch, "rb").read() if os.path.exists(watch) else b""
        if any(e in out for e in ends):
            return time.time() - start
        if not esc_sent and b"startup.nsh" in out:
            qmp.cmd("send-key", keys=[{"type": "qcode", "data": "esc"}])
            esc_sent = True
        if check:
            check()
        if qemu_proc.poll() is not None:
            raise RuntimeError("QEMU exited before the end of boot: " +
                               open(err).read().strip())
        if qmp.cmd("query-status")["status"] == "internal-error":
            msg = [m for m in open(err, errors="replace").read()
                   .splitlines() if "internal error" in m or
                   m == "emulation failure"]
            raise HostLimit("the guest stopped on an internal error (" +
                            ", ".join(msg or ["see query-status"]) +
                            "): this host's accelerator cannot run it")
        if time.time() - start > BOOT_TIMEOUT:
            raise RuntimeError("no end of boot after %d s" % BOOT_TIMEOUT)
        time.sleep(0.05)


PAM_REGS = {"pc": range(0x59, 0x60), "q35": range(0x90, 0x97)}
PAM_REPLAY = (0x00, 0x33, 0x11)


def replay_pam(qt, kind):
    """Firmware's PAM programming, while the guest sits at the end of boot:
    every PAM register to 0, 0x33, 0x11 (PAM0 holds only 0xf0000's
    nibble), one memory transaction per write, like the firmware."""
    regs = PAM_REGS[kind]
    for val in PAM_REPLAY:
        for reg in regs:
            qt.pci_config_writeb(reg, val & 0xf0 if reg == regs[0] else val)
