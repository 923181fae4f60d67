#!/usr/bin/env python3
"""`ckpt-engine restore --restore-as UID:GID`, run as root for a user, against that user's own
(forged) images: one case per attack, each run by the user nobody (65534:65534, group nogroup).

  restore_as_user_test.py --engine ckpt-engine --image-edit image_edit --programs DIR
                          --workdir DIR --case CASE

Every case starts a program as nobody (restore_as, or identity/tree/threads for the positive
cases), dumps it as root, edits the images as the user could (image_edit totext/fromtext
reseals the checksums) and restores as root with `--restore-as 65534:65534 --new-pidns
--detach --pidfile F`. Then either the restore is refused with one clear line and no process
is left, or the restored process has exactly nobody's uids, gids and groups, no capability,
the restorer's bounding set and nothing the user could not have had (checked from /proc, and
by the program itself on SIGTERM). Canary files outside the case's folder must not change.

What the engine before the restore ran as the user (commit a264f71) did, case by case, is in
each case's comment ("old:").

The runner is a child subreaper: the pid namespace's init of a detached restore becomes its
child; everything it started is killed and reaped at the end. Exit status 0: passed.
"""
import argparse
import ctypes
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

from public_stage import public_copy, public_folder

NOBODY = 65534
CAP_CHECKPOINT_RESTORE = 40
PR_SET_CHILD_SUBREAPER = 36
PTRACE_SEIZE, PTRACE_DETACH = 0x4206, 17
SYS_PIDFD_GETFD = 438
READY_TIMEOUT = 30.0
ENGINE_TIMEOUT = 120.0

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
libc.syscall.restype = ctypes.c_long


class Failure(Exception):
    pass


def fail(msg):
    raise Failure(msg)


# ---- protobuf text (as TextFormat prints it: one field or block per line) ----

class Node:
    """A message in protobuf text: an ordered list of [key, str | Node]."""

    def __init__(self):
        self.items = []

    def blocks(self, key):
        return [v for k, v in self.items if k == key and isinstance(v, Node)]

    def get(self, key):
        for k, v in self.items:
            if k == key and isinstance(v, str):
                return v
        return None

    def set(self, key, value):
        for item in self.items:
            if item[0] == key and isinstance(item[1], str):
                item[1] = value
                return
        self.items.append([key, value])

    def remove(self, key):
        self.items = [i for i in self.items if i[0] != key]

    def add(self, key):
        n = Node()
        self.items.append([key, n])
        return n


def parse_text(text):
    root = Node()
    stack = [root]
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line == "}":
            stack.pop()
            continue
        m = re.match(r"^(\w+) \{$", line)
        if m:
            stack.append(stack[-1].add(m.group(1)))
            continue
        m = re.match(r"^(\w+): (.*)$", line)
        if not m:
            fail(f"image text: cannot read line {raw!r}")
        stack[-1].items.append([m.group(1), m.group(2)])
    return root


def print_text(node, indent=0):
    out = []
    for k, v in node.items:
        if isinstance(v, Node):
            out.append(" " * indent + k + " {")
            out.append(print_text(v, indent + 2))
            out.append(" " * indent + "}")
        else:
            out.append(" " * indent + f"{k}: {v}")
    return "\n".join(x for x in out if x)


def quote_bytes(data):
    return '"' + "".join(f"\\{b:03o}" for b in data) + '"'


def fake_success_filter():
    """A seccomp filter making setresuid, setresgid, setgroups, capset, prctl (and setuid,
    setgid, setfsuid, setfsgid) return 0 without doing anything."""
    calls = [105, 106, 116, 117, 119, 122, 123, 126, 157]  # x86_64 numbers
    ld_abs, jeq, ret = 0x20, 0x15, 0x06
    allow, errno0 = 0x7FFF0000, 0x00050000
    n = len(calls)
    insns = [(ld_abs, 0, 0, 4), (jeq, 0, n + 1, 0xC000003E), (ld_abs, 0, 0, 0)]
    for i, nr in enumerate(calls):
        at = 3 + i
        insns.append((jeq, (4 + n) - (at + 1), 0, nr))
    insns += [(ret, 0, 0, allow), (ret, 0, 0, errno0)]
    return b"".join(code.to_bytes(2, "little") + bytes([jt, jf]) + k.to_bytes(4, "little")
                    for code, jt, jf, k in insns)


# ---- processes ----

def status_fields(pid, tid=None):
    path = f"/proc/{pid}/status" if tid is None else f"/proc/{pid}/task/{tid}/status"
    out = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def children_of(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except FileNotFoundError:
        pass
    return out


def as_nobody(fn):
    """Runs fn() in a forked child that is nobody with no capability; returns its result
    (a short string) through a pipe."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rd)
            os.setgroups([NOBODY])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            msg = fn()
        except BaseException as e:  # reported, never raised in the child
            msg = f"error: {e}"
        os.write(wr, msg.encode()[:4000])
        os._exit(0)
    os.close(wr)
    with os.fdopen(rd, "rb") as f:
        msg = f.read().decode()
    os.waitpid(pid, 0)
    return msg


def nobody_probe(pid):
    """As nobody: read /proc/PID/environ and PTRACE_SEIZE PID; says what worked."""
    def probe():
        got = []
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                f.read(1)
            got.append("environ readable")
        except OSError as e:
            got.append(f"environ: {os.strerror(e.errno)}")
        if libc.ptrace(PTRACE_SEIZE, pid, None, None) == 0:
            libc.ptrace(PTRACE_DETACH, pid, None, None)
            got.append("ptrace SEIZE worked")
        else:
            got.append(f"ptrace: {os.strerror(ctypes.get_errno())}")
        return "; ".join(got)
    return as_nobody(probe)


class Case:
    def __init__(self, args):
        self.args = args
        self.engine = args.engine
        self.name = args.case
        self.work = os.path.join(args.workdir, args.case)
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        os.chmod(args.workdir, 0o755)
        os.chown(self.work, NOBODY, NOBODY)
        self.images = os.path.join(self.work, "images")
        self.result = os.path.join(self.work, "result")
        self.pidfile = os.path.join(self.work, "pidfile")
        self.log = os.path.join(self.work, "program.log")
        self.bnd = status_fields(os.getpid())["CapBnd"]
        # Canaries outside the case's folder: root's files that nothing may touch.
        self.canary_dir = os.path.join(args.workdir, f"canary-{args.case}")
        shutil.rmtree(self.canary_dir, ignore_errors=True)
        os.makedirs(self.canary_dir)
        self.canary = os.path.join(self.canary_dir, "canary")
        with open(self.canary, "w") as f:
            f.write("root's canary\n")
        os.chmod(self.canary, 0o644)
        self.canary_stat = os.stat(self.canary)
        self.program = None
        self.notes = []

    def note(self, msg):
        self.notes.append(msg)

    def program_path(self, name):
        return os.path.join(self.args.programs, name)

    # -- the program, as nobody --
    def start(self, name="restore_as", nofile=None):
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--init-groups", "--",
               self.program_path(name), self.result]
        if nofile:
            cmd = ["prlimit", f"--nofile={nofile[0]}:{nofile[1]}", "--"] + cmd
        with open(self.log, "ab") as log:
            os.chown(self.log, NOBODY, NOBODY)  # the program's stdout: reopened as nobody at restore
            self.program = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            cwd=self.work, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while not os.path.exists(self.result + ".ready"):
            if self.program.poll() is not None or time.monotonic() > deadline:
                fail(f"{name} did not get ready (status {self.program.poll()}): {self.read_log()}")
            time.sleep(0.02)
        return self.program.pid

    def read_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def dump(self, pid, images=None):
        images = images or self.images
        os.makedirs(images)
        r = subprocess.run([self.engine, "dump", "-t", str(pid), "-D", images], capture_output=True,
                           text=True, timeout=ENGINE_TIMEOUT)
        if r.returncode != 0:
            fail(f"dump of {pid} failed: {r.stderr.strip()}")
        if self.program and self.program.pid == pid:
            self.program.wait(timeout=30)
        # The images are the user's: they may read and rewrite every byte.
        for d, _, files in os.walk(images):
            os.chown(d, NOBODY, NOBODY)
            for f in files:
                os.chown(os.path.join(d, f), NOBODY, NOBODY)
        return images

    def edit(self, name, change):
        path = os.path.join(self.images, name)
        text = subprocess.run([self.args.image_edit, "totext", path], capture_output=True, text=True,
                              check=True).stdout
        msg = parse_text(text)
        change(msg)
        subprocess.run([self.args.image_edit, "fromtext", path], input=print_text(msg) + "\n", text=True,
                       check=True)
        os.chown(path, NOBODY, NOBODY)

    def core_name(self):
        cores = [n for n in os.listdir(self.images) if n.startswith("core-")]
        if len(cores) != 1:
            fail(f"expected one process in the images, found {cores}")
        return cores[0]

    def edit_core(self, change):
        self.edit(self.core_name(), change)

    def edit_held_file(self, held, path, mode):
        def change(files):
            for f in files.blocks("files"):
                if (f.get("path") or "").endswith(f'/{held}"'):
                    f.set("path", '"' + path + '"')
                    if mode is not None:
                        f.set("mode", str(mode))
                    return
            fail(f"no {held} in files.img")
        self.edit("files.img", change)

    # -- the restore --
    def restore(self, extra=(), new_pidns=True, detach=True, pidfile=True, nofile=None, wait=True, images=None):
        cmd = [self.engine, "restore", "-D", images or self.images, "--restore-as", f"{NOBODY}:{NOBODY}"]
        if new_pidns:
            cmd.append("--new-pidns")
        if detach:
            cmd.append("--detach")
        if pidfile:
            cmd += ["--pidfile", self.pidfile]
        cmd += list(extra)
        if nofile:
            cmd = ["prlimit", f"--nofile={nofile[0]}:{nofile[1]}", "--"] + cmd
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        if not wait:
            return p
        out, err = p.communicate(timeout=ENGINE_TIMEOUT)
        return p.returncode, err.strip()

    def expect_refused(self, rc_err, pattern, rc=1):
        code, err = rc_err
        if code == 0:
            root = self.restored_root(required=False)
            fail(f"restored (root {root}), expected a refusal matching {pattern!r}: "
                 + (self.describe(root) if root else err))
        lines = err.splitlines()
        if rc == 2 and len(lines) == 2 and lines[1] == "(see ckpt-engine --help)":
            lines = lines[:1]  # a usage error's pointer to the help
        if code != rc or not re.search(pattern, err) or len(lines) != 1:
            fail(f"refused with status {code} and {err!r}, expected status {rc} and one line matching "
                 f"{pattern!r}")
        self.note(f"refused: {err}")
        self.expect_nothing_left()

    def restored_root(self, required=True):
        try:
            with open(self.pidfile) as f:
                return int(f.read())
        except (OSError, ValueError):
            if required:
                fail("no pidfile after the restore")
            return None

    def describe(self, pid):
        try:
            st = status_fields(pid)
        except OSError:
            return f"pid {pid} gone"
        keys = ["Uid", "Gid", "Groups", "CapPrm", "CapEff", "NoNewPrivs", "Seccomp"]
        return ", ".join(f"{k} {st.get(k)!r}" for k in keys)

    def expect_user(self, pid, what, nnp=None):
        """pid (every thread) is exactly nobody, with no capability and our bounding set."""
        for tid in os.listdir(f"/proc/{pid}/task"):
            st = status_fields(pid, tid)
            want = {"Uid": "\t".join([str(NOBODY)] * 4), "Gid": "\t".join([str(NOBODY)] * 4),
                    "Groups": str(NOBODY), "CapInh": "0" * 16, "CapPrm": "0" * 16, "CapEff": "0" * 16,
                    "CapAmb": "0" * 16, "CapBnd": self.bnd}
            if nnp is not None:
                want["NoNewPrivs"] = "1" if nnp else "0"
            for k, v in want.items():
                if st.get(k) != v:
                    fail(f"{what} {pid} (thread {tid}): {k} is {st.get(k)!r}, expected {v!r}")

    def expect_restored(self, nnp=None):
        root = self.restored_root()
        self.expect_user(root, "restored root", nnp)
        init = int(status_fields(root)["PPid"])
        self.expect_user(init, "the pid namespace's init")
        if "\t" in status_fields(init)["NSpid"] and status_fields(init)["NSpid"].split("\t")[-1] != "1":
            fail(f"the root's parent {init} is not the init of a pid namespace")
        return root

    def finish_program(self, root):
        """SIGTERM: the program checks itself; its verdict must be PASS."""
        os.kill(root, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.result):
            if time.monotonic() > deadline:
                fail("the restored program gave no verdict")
            self.reap()
            time.sleep(0.05)
        time.sleep(0.05)
        with open(self.result) as f:
            verdict = f.read().strip()
        if verdict != "PASS":
            fail(f"the restored program says {verdict}: {self.read_log()}")

    def reap(self):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def expect_nothing_left(self):
        deadline = time.monotonic() + 10
        while True:
            self.reap()
            left = children_of(os.getpid())
            if not left:
                return
            if time.monotonic() > deadline:
                fail(f"processes left after the restore: {[(p, self.describe(p)) for p in left]}")
            time.sleep(0.05)

    def cleanup(self):
        if self.program and self.program.poll() is None:
            self.program.kill()
        for _ in range(100):
            self.reap()
            left = children_of(os.getpid())
            if not left:
                break
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        st = os.stat(self.canary)
        with open(self.canary) as f:
            if f.read() != "root's canary\n" or st.st_mtime_ns != self.canary_stat.st_mtime_ns:
                fail(f"the canary {self.canary} outside the case's folder was changed")


# ---- the cases ----

def dumped(c, name="restore_as", nofile=None):
    pid = c.start(name, nofile=nofile)
    c.dump(pid)
    return pid


def case_seccomp_no_nnp(c):
    # A filter faking success for setresuid/setresgid/setgroups/capset/prctl, no_new_privs
    # not recorded. old: installed as root before the identity drop, every drop faked: the
    # "nobody" process ran with uids and gids 0 and every capability (CapEff 1fffeffffff).
    dumped(c)
    def change(core):
        core.add("seccomp").set("bpf", quote_bytes(fake_success_filter()))
        core.blocks("creds")[0].remove("no_new_privs")
    c.edit_core(change)
    c.expect_refused(c.restore(), r"a seccomp filter without no_new_privs cannot be restored as a user")


def case_seccomp_nnp(c):
    # The same filter with no_new_privs recorded: the user may install it themselves, so it is
    # restored, last, after the identity is checked. old: the process was nobody too (the
    # filter came after the drop), but the pid namespace's init stayed uid 0 with every
    # capability beside it (true of every old restore with --new-pidns).
    dumped(c)
    def change(core):
        core.add("seccomp").set("bpf", quote_bytes(fake_success_filter()))
        core.blocks("creds")[0].set("no_new_privs", "true")
    c.edit_core(change)
    code, err = c.restore()
    if code != 0:
        fail(f"restore failed: {err}")
    root = c.expect_restored(nnp=True)
    st = status_fields(root)
    if st.get("Seccomp") != "2" or st.get("Seccomp_filters") != "1":
        fail(f"Seccomp {st.get('Seccomp')} with {st.get('Seccomp_filters')} filters, expected 2 with 1")
    c.note(f"restored as nobody: {c.describe(root)}")
    c.finish_program(root)


def case_sched_fifo(c):
    # SCHED_FIFO priority 10 recorded. old: set by root: the user's process ran SCHED_FIFO 10.
    dumped(c)
    def change(core):
        t = core.blocks("threads")[0]
        t.set("sched_policy", "1")
        t.set("sched_priority", "10")
    c.edit_core(change)
    c.expect_refused(c.restore(),
                     r"sched_setattr\(SCHED_FIFO, 10\): Operation not permitted: the user may not set it")


def case_nice(c):
    # nice -10 recorded. old: set by root: the process ran at nice -10.
    dumped(c)
    c.edit_core(lambda core: core.blocks("threads")[0].set("nice", "-10"))
    c.expect_refused(c.restore(), r"setpriority\(nice -10\): Permission denied: the user may not set it")


def case_rlimit_nofile(c):
    # The user runs with RLIMIT_NOFILE 1024:4096 (and so does the restorer, as a batch system
    # starts it with the job's limits); the images claim a hard limit of 20000. Raising a hard
    # limit needs CAP_SYS_RESOURCE: the process gets the restorer's 4096, with a warning.
    # old: the same clamp to the restorer's hard limit ("limit 7 hard 20000 capped at 4096"):
    # not open in the old code beyond the restorer's own limits; kept as a guard.
    dumped(c, nofile=(1024, 4096))
    def change(core):
        for r in core.blocks("rlimits"):
            if r.get("resource") == "7":
                r.set("cur", "20000")
                r.set("max", "20000")
                return
        fail("no RLIMIT_NOFILE in the images")
    c.edit_core(change)
    code, err = c.restore(nofile=(1024, 4096))
    if code != 0:
        fail(f"restore failed: {err}")
    if not re.search(r"hard RLIMIT_NOFILE 20000 is above the restorer's 4096: lowered to it", err):
        fail(f"no warning about the lowered hard limit: {err!r}")
    root = c.expect_restored()
    with open(f"/proc/{root}/limits") as f:
        line = next(x for x in f if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    if hard != "4096" or int(soft) > 4096:
        fail(f"RLIMIT_NOFILE is {soft}:{hard} after the restore, expected at most 4096:4096")
    c.finish_program(root)
    c.note(f"hard RLIMIT_NOFILE lowered to the restorer's: {soft}:{hard}")


def case_chroot(c):
    # The images name a root folder (the program's own `jail`). old: chroot as root: the
    # user's process ran chrooted into that folder, which the user controls (with setuid
    # programs hard-linked in, a classic way to root).
    dumped(c)
    jail = os.path.join(c.result + ".data", "jail")
    c.edit_core(lambda core: core.set("root", '"' + jail + '"'))
    c.expect_refused(c.restore(), r"chroot\(.*/jail\): Operation not permitted: the user may not set it")


def pidfd_getfd(pid, fd):
    pidfd = os.pidfd_open(pid)
    try:
        got = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            fail(f"pidfd_getfd({pid}, {fd}): {os.strerror(ctypes.get_errno())}")
        return got
    finally:
        os.close(pidfd)


def case_kallsyms(c):
    # fd 10 pointed at /proc/kallsyms (mode forged to a device's, so that no size/mtime check
    # applies). kallsyms shows real addresses to whoever opened it with CAP_SYSLOG. old: opened
    # with setfsuid(nobody) but root's capabilities: the process read real kernel addresses
    # ("ffffffff81000000 T _stext").
    dumped(c)
    c.edit_held_file("held-a", "/proc/kallsyms", stat.S_IFCHR | 0o444)
    code, err = c.restore()
    if code != 0:
        c.expect_refused((code, err), r"kallsyms")
        return
    root = c.expect_restored()
    fd = pidfd_getfd(root, 10)
    try:
        first = os.read(fd, 4096).decode(errors="replace").splitlines()[:3]
    finally:
        os.close(fd)
    if not first or any(not line.startswith("0000000000000000 ") for line in first):
        fail(f"the restored process reads real kernel addresses through fd 10: {first}")
    c.finish_program(root)
    c.note(f"opened as nobody: {first[0]}")


def case_kmsg(c):
    # fd 11 pointed at /dev/kmsg (dmesg_restrict: reading needs CAP_SYSLOG, checked at open).
    # old: opened with root's capabilities: the user read the kernel log ("Linux version ...").
    dumped(c)
    c.edit_held_file("held-b", "/dev/kmsg", stat.S_IFCHR | 0o644)
    code, err = c.restore()
    if code == 0:
        root = c.expect_restored()
        fd = pidfd_getfd(root, 11)
        try:
            data = os.read(fd, 4096)
        except OSError as e:
            data = b""
            c.note(f"fd 11 unreadable: {e}")
        finally:
            os.close(fd)
        if data:
            fail(f"the restored process reads the kernel log through fd 11: {data[:80]!r}")
        return
    c.expect_refused((code, err), r"/dev/kmsg: Operation not permitted")


def case_no_pidns(c):
    # --restore-as without --new-pidns: refused as a usage error (exit 2). old: restored in
    # the host's pid namespace with the pid the images chose.
    pid = dumped(c)
    c.expect_refused(c.restore(new_pidns=False), r"--restore-as needs --new-pidns", rc=2)
    if os.path.exists(f"/proc/{pid}"):
        fail(f"pid {pid} exists after the refused restore")


def case_pidfile_symlink(c):
    # The pidfile's name is a symlink to root's canary. old: root wrote the pid through it,
    # replacing the canary's content. Now: O_NOFOLLOW, and written by the engine as nobody.
    dumped(c)
    os.symlink(c.canary, c.pidfile)
    c.expect_refused(c.restore(), r"pidfile|symbolic link|Permission denied")


def case_ipc_namespace(c):
    # An ipc.img planted in the user's images (a tree in an IPC namespace of its own): making
    # one needs CAP_SYS_ADMIN, which a user's restore does not have. Refused before anything
    # is read from it or created.
    dumped(c)
    planted = os.path.join(c.images, "ipc.img")
    with open(planted, "wb") as f:
        f.write(b"forged")
    os.chown(planted, NOBODY, NOBODY)
    c.expect_refused(c.restore(), r"ipc\.img: the tree has its own IPC namespace .* refused")


def case_unix_creds(c):
    # Messages queued with their senders' credentials (SCM_CREDENTIALS) on socketpairs whose
    # receivers have SO_PASSCRED (fd_unix_creds, run as nobody). Sending them again with another
    # process's pid needs CAP_SYS_ADMIN, which a user's restore lacks: refused by name before
    # anything is made, never sent as the engine's own.
    dumped(c, "fd_unix_creds")
    c.expect_refused(c.restore(), r"unix socket pair \d+ end [01]: a message queued with its sender's credentials "
                                  r"\(SCM_CREDENTIALS: pid \d+, uid 65534, gid 65534\): a restore as the user may not")


def case_udp_queued(c):
    # A datagram queued for a UDP socket (udp_queued_alone, run as nobody). Sending it again
    # from its sender's address and port needs a raw socket (CAP_NET_RAW), which a user's
    # restore lacks: refused by the kernel, named, nothing left running.
    dumped(c, "udp_queued_alone")
    c.expect_refused(c.restore(), r"queued datagram 1 of 1 \(6 bytes from 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+\): "
                                  r"socket\(SOCK_RAW\): .*CAP_NET_RAW")


def case_claim_uid0(c):
    # Every process claims uid 0 (the inventory still says nobody). old: refused too ("images
    # belong to uid 0, not to uid 65534"): not open in the old code; kept as a guard.
    dumped(c)
    def change(core):
        creds = core.blocks("creds")[0]
        for k in ("uid", "euid", "suid", "fsuid"):
            creds.set(k, "0")
    c.edit_core(change)
    c.expect_refused(c.restore(), r"claim uid 0 but belong to uid 65534: refused")


def case_thread_creds(c):
    # The leader thread claims credentials of its own, uid 0 (format version 3). A user's
    # restore gives every thread the user's identity: refused by pid and tid, never made.
    dumped(c)
    def change(core):
        cr = core.blocks("threads")[0].add("creds")
        for k in ("uid", "euid", "suid", "fsuid"):
            cr.set(k, "0")
    c.edit_core(change)
    c.expect_refused(c.restore(), r"tid \d+: the thread has credentials of its own \(uid 0, gid 0\): refused")


def case_claim_groups(c):
    # The process claims no supplementary group (the user is in nogroup): dropping a group
    # needs CAP_SETGID (a group can be denied access: a way around a group's deny ACL).
    # old: setgroups as root: restored with no group at all (Groups empty).
    dumped(c)
    c.edit_core(lambda core: core.blocks("creds")[0].remove("groups"))
    c.expect_refused(c.restore(), r"claim groups \[none\], the user's are \[65534\]: refused")


def case_engine_protected(c):
    # While the engine restores as nobody holding CAP_CHECKPOINT_RESTORE, nobody can neither
    # read its environ nor trace it (nor the half-restored root). fd 10 of the images is
    # pointed at a FIFO of the case's folder, so that the engine blocks opening it. old: the
    # engine ran as uid 0 (fsuid 65534) with every capability, out of nobody's reach too:
    # kept as a guard on the new model, where the engine is nobody.
    dumped(c)
    fifo = os.path.join(c.work, "fifo")
    os.mkfifo(fifo, 0o666)
    os.chmod(fifo, 0o666)
    c.edit_held_file("held-a", fifo, None)
    p = c.restore(wait=False)
    deadline = time.monotonic() + 30
    while True:
        try:
            with open(f"/proc/{p.pid}/syscall") as f:
                if f.read().split()[0] == "257":  # openat: blocked on the FIFO
                    break
        except (OSError, IndexError):
            pass
        if p.poll() is not None or time.monotonic() > deadline:
            fail(f"the engine never blocked on the FIFO: {p.communicate()[1] if p.poll() is not None else ''}")
        time.sleep(0.02)
    try:
        st = status_fields(p.pid)
        want_caps = f"{1 << CAP_CHECKPOINT_RESTORE:016x}"
        if st["Uid"] != "\t".join([str(NOBODY)] * 4) or st["CapEff"] != want_caps or st["CapPrm"] != want_caps:
            fail(f"the engine runs as {c.describe(p.pid)}, expected nobody with CAP_CHECKPOINT_RESTORE only")
        probes = {"engine": p.pid}
        init = children_of(p.pid)
        if init:
            probes["init"] = init[0]
            roots = children_of(init[0])
            if roots:
                probes["half-restored root"] = roots[0]
        for what, pid in probes.items():
            got = nobody_probe(pid)
            if "readable" in got or "worked" in got:
                fail(f"nobody reached the {what} ({pid}, {c.describe(pid)}): {got}")
            c.note(f"{what}: {got}")
    finally:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    out, err = p.communicate(timeout=ENGINE_TIMEOUT)
    if p.returncode == 0:
        root = c.expect_restored()
        c.finish_program(root)
    else:
        c.expect_refused((p.returncode, err.strip()), r"fifo")


def positive(c, program, twice):
    # A user's tree restored as the user works (the program's own checks); with `twice` it is
    # dumped again and restored again first. The last restore has the engine waiting as the
    # launcher, which must be nobody without capabilities too and exit with the root's status.
    # (Only `identity` goes twice: a dump of a tree inside a pid namespace records the pids the
    # host sees, so the pids `tree` and `threads` check change at the second restore.)
    # old: the processes were nobody, but the pid namespace's init stayed uid 0 with every
    # capability, and the waiting engine root.
    dumped(c, program)
    images = c.images
    if twice:
        code, err = c.restore()
        if code != 0:
            fail(f"restore failed: {err}")
        root = c.expect_restored(nnp=True if program == "identity" else None)
        c.note(f"first restore: {c.describe(root)}")
        images = c.dump(root, images=os.path.join(c.work, "images2"))
        c.expect_nothing_left()
        os.unlink(c.pidfile)
    p = c.restore(detach=False, wait=False, images=images)
    deadline = time.monotonic() + ENGINE_TIMEOUT
    while c.restored_root(required=False) is None:
        if p.poll() is not None or time.monotonic() > deadline:
            fail(f"second restore failed: {p.communicate()[1] if p.poll() is not None else 'timeout'}")
        time.sleep(0.02)
    time.sleep(0.1)
    root = c.expect_restored(nnp=True if program == "identity" else None)
    c.expect_user(p.pid, "the waiting engine")
    c.finish_program(root)
    out, err = p.communicate(timeout=60)
    if p.returncode != 0:
        fail(f"the waiting engine exited {p.returncode}, expected the root's 0: {err}")
    c.expect_nothing_left()


CASES = {
    "seccomp-no-nnp": case_seccomp_no_nnp,
    "seccomp-nnp": case_seccomp_nnp,
    "sched-fifo": case_sched_fifo,
    "nice": case_nice,
    "rlimit-nofile": case_rlimit_nofile,
    "chroot": case_chroot,
    "kallsyms": case_kallsyms,
    "kmsg": case_kmsg,
    "no-pidns": case_no_pidns,
    "pidfile-symlink": case_pidfile_symlink,
    "ipc-namespace": case_ipc_namespace,
    "unix-creds": case_unix_creds,
    "udp-queued": case_udp_queued,
    "claim-uid0": case_claim_uid0,
    "claim-groups": case_claim_groups,
    "thread-creds": case_thread_creds,
    "engine-protected": case_engine_protected,
    "positive-identity": lambda c: positive(c, "identity", twice=True),
    "positive-tree": lambda c: positive(c, "tree", twice=False),
    "positive-threads": lambda c: positive(c, "threads", twice=False),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--image-edit", required=True)
    ap.add_argument("--programs", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--case", required=True, choices=sorted(CASES))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(f"restore-as {args.case}: SKIP (needs root)")
        return 0
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_CHILD_SUBREAPER): " + os.strerror(ctypes.get_errno()))
    # nobody runs the programs and writes in the work folder: both must be reachable.
    public = public_folder("ckpt-restore-as-")
    for name in os.listdir(args.programs):
        path = os.path.join(args.programs, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            public_copy(path, public)
    args.programs = args.workdir = public
    c = Case(args)
    try:
        try:
            CASES[args.case](c)
        finally:
            c.cleanup()
    except (Failure, subprocess.SubprocessError, OSError) as e:
        print(f"restore-as {args.case}: FAIL: {e}")
        for n in c.notes:
            print(f"  {n}")
        return 1
    print(f"restore-as {args.case}: PASS")
    for n in c.notes:
        print(f"  {n}")
    shutil.rmtree(public, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
