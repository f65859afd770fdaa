#!/usr/bin/env python3
"""Cross-check: every QEMU command line the libvirt series' tests expect is
one the patched QEMU accepts, with the barriers the domain XML asked for.

qemuxmlconftest compares libvirt's output with the .args files of
out/libvirt-src/tests/qemuxmlconfdata/, but never runs QEMU: an .args file
can hold a command line QEMU refuses (an address that is no multiple of
64 KiB) and the libvirt test suite still passes.  For each .args file of a
merge-barriers case (merge-barriers*.args, and any other .args with a
merge-barriers or merge-layout option), this takes its -machine value
and -m, starts out/qemu-system-x86_64 paused (-accel qtest, no firmware,
no devices; options that need objects or files, memory-backend=, are
dropped) and checks:

  - QEMU starts (a refusal fails, naming the .args file and QEMU's message);
  - qom-get /machine merge-barriers is what the case's domain XML (the .xml
    input with the same base name) asked for: its <barrier address=.../>
    sorted (QEMU keeps them sorted), or for <merge-barriers layout=.../>
    what QEMU itself reports for the same machine type, memory size and
    merge-layout on a bare command line (and [] for layout='none').

Skipped when out/libvirt-src or the QEMU binary is missing.  Speaks TAP.
"""

import glob
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
QEMU = os.path.join(TOP, os.environ.get("QEMU", "out/qemu-system-x86_64"))
DATA = os.path.join(TOP, "out/libvirt-src/tests/qemuxmlconfdata")
# -machine options that refer to objects or files this bare QEMU lacks
DROP = ("memory-backend",)


def c_uint(text):
    """An unsigned integer as strtoull(..., 0) reads it (libvirt's
    virXMLPropULongLong with base 0): 0x hexadecimal, 0 octal, decimal."""
    t = text.strip()
    if t[:2] in ("0x", "0X"):
        return int(t[2:], 16)
    if len(t) > 1 and t[0] == "0":
        return int(t[1:], 8)
    return int(t, 10)


def args_options(path):
    """The -machine value and the -m value of a libvirt .args file."""
    words = shlex.split(open(path).read().replace("\\\n", " "))
    machine = mem = None
    for opt, val in zip(words, words[1:]):
        if opt == "-machine":
            machine = val
        elif opt == "-m":
            mem = val
    return machine, mem


def xml_input(args_path):
    """merge-barriers-q35.x86_64-latest+mergebarriers.args -> merge-barriers-q35.xml"""
    base = os.path.basename(args_path).split(".", 1)[0]
    return os.path.join(DATA, base + ".xml")


def wanted(xml_path):
    """What the domain XML asks for: ("layout", name) or ("addresses", [..])."""
    mb = ET.parse(xml_path).getroot().find("features/merge-barriers")
    if mb is None:
        return None
    if mb.get("layout"):
        return ("layout", mb.get("layout"))
    return ("addresses", sorted(c_uint(b.get("address"))
                                for b in mb.findall("barrier")))


class QMP:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.read()                                   # greeting
        self.cmd("qmp_capabilities")

    def read(self):
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                msg = json.loads(line)
                if "event" not in msg:
                    return msg
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QMP connection closed")
            self.buf += data

    def cmd(self, name, **args):
        self.sock.sendall(json.dumps({"execute": name, "arguments": args})
                          .encode() + b"\n")
        reply = self.read()
        if "error" in reply:
            raise RuntimeError(reply["error"].get("desc", str(reply)))
        return reply["return"]


def qom_barriers(machine, mem):
    """Start QEMU paused with MACHINE (and -m MEM): (barriers, None), or
    (None, QEMU's message) when it refuses."""
    with tempfile.TemporaryDirectory(prefix="mb-crosscheck-") as tmp:
        sock = os.path.join(tmp, "qmp.sock")
        cmd = [QEMU, "-accel", "qtest", "-display", "none", "-nodefaults",
               "-no-user-config", "-S", "-machine", machine,
               "-qmp", f"unix:{sock},server=on,wait=off"]
        if mem:
            cmd += ["-m", mem]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            # the socket file appears (bind) before QEMU listens on it:
            # retry until QEMU answers, exits, or 30 s have passed
            deadline = time.time() + 30
            while True:
                if proc.poll() is not None:
                    out, err = proc.communicate()
                    return None, (err or out).strip() or \
                        f"exit status {proc.returncode}"
                try:
                    qmp = QMP(sock)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.time() > deadline:
                        return None, "QEMU did not answer on QMP in 30 s"
                    time.sleep(0.02)
            got = qmp.cmd("qom-get", path="/machine",
                          property="merge-barriers")
            try:
                qmp.cmd("quit")
            except (EOFError, OSError):
                pass
            return got, None
        except (OSError, EOFError, RuntimeError, ValueError) as e:
            # QEMU creates the socket before it checks the machine's
            # properties: a refusal shows here as a closed connection
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                err = ""
            if proc.returncode is not None and err.strip():
                return None, err.strip()
            return None, f"QMP: {e}"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def main():
    if not os.path.isdir(DATA):
        print(f"1..0 # SKIP no {os.path.relpath(DATA, TOP)}: "
              "run make build-libvirt")
        return 0
    if not os.access(QEMU, os.X_OK):
        print(f"1..0 # SKIP no {os.path.relpath(QEMU, TOP)}: run make build")
        return 0
    n = failed = 0

    def report(good, desc, detail=()):
        nonlocal n, failed
        n += 1
        failed += not good
        print(f"{'ok' if good else 'not ok'} {n} {desc}")
        for line in detail:
            print(f"# {line}")

    # by name, and any other .args that passes a merge barrier option
    files = sorted(p for p in glob.glob(os.path.join(DATA, "*.args"))
                   if os.path.basename(p).startswith("merge-barriers") or
                   re.search(r"[,=]merge-(barriers|layout)[.=]",
                             open(p, errors="replace").read()))
    report(len(files) > 0,
           f"merge-barriers .args files in qemuxmlconfdata: {len(files)}")
    reference = {}
    for path in files:
        name = os.path.basename(path)
        machine, mem = args_options(path)
        if not machine:
            report(False, f"{name}: no -machine argument")
            continue
        opts = [o for o in machine.split(",")
                if o.split("=", 1)[0] not in DROP]
        machine = ",".join(opts)
        xml = xml_input(path)
        if not os.path.exists(xml):
            report(False, f"{name}: no input {os.path.basename(xml)}")
            continue
        want = wanted(xml)
        got, err = qom_barriers(machine, mem)
        report(err is None, f"{name}: QEMU accepts -machine {machine}",
               [f"QEMU: {err}"] if err else ())
        if err is not None:
            continue
        if want is None:
            # no element: libvirt passes nothing, the machine type's default
            label = "the machine type's default"
            expect, err = qom_barriers(opts[0], mem)
        elif want[0] == "layout":
            label = f"layout='{want[1]}'"
            key = (opts[0], mem, want[1])
            if key not in reference:
                reference[key] = qom_barriers(
                    f"{opts[0]},merge-layout={want[1]}", mem)
            expect, err = reference[key]
            if err is None and want[1] == "none" and expect != []:
                err = f"QEMU reports {expect} for merge-layout=none"
        else:
            label = "the XML's addresses, sorted"
            expect = want[1]
        if err is not None:
            report(False, f"{name}: reference for {label}: {err}")
            continue
        report(got == expect,
               f"{name}: qom-get merge-barriers = {label} "
               f"{[hex(a) for a in expect]} (got {[hex(a) for a in got]})")
    print(f"1..{n}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
