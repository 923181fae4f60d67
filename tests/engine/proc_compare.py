"""Compares two snapshots of a process tree made by tools/proc_snapshot (run_engine_test.py
--compare): one right after the program said it is ready, before the dump, one right after the
restore, before the program is asked for its own checks. Any difference not in the allowlist
below is a failure, reported naming the pid and the address range or fd.

What must be equal, per process (by pid: the modes compared keep the pids):
  - its state letter and number of threads;
  - each thread's rseq registration (address, size, signature);
  - every line of /proc/PID/maps: address range, permissions, offset and path. The device and
    inode numbers are not compared as numbers, since an object the engine makes again (a
    deleted file's copy, a memfd, shared anonymous memory, a pipe) is a new inode: each
    (inode) is replaced by a label, numbered in order of first appearance over the whole tree
    (processes by pid, mappings by address, then fds by number). So mappings and fds of one
    object before must be of one object after, and of distinct objects stay distinct;
  - the contents of every mapping (XXH3 of its pages as read through /proc/PID/mem, with the
    places of unreadable and guard pages);
  - every fd: the link target (with [inode] labelled likewise) and every line of its fdinfo
    (pos, flags, mnt_id, ino labelled, kind-specific lines: eventfd-count, sigmask, epoll tfd
    lines with their target's ino labelled, pidfd Pid, ...).
"""

import json
import re
import subprocess

# ---- the allowlist: what may differ, and why ---------------------------------------------
# Mappings whose contents are not compared (their map line still is): the kernel's time data
# (vvar pages; they change on their own, and reading them through /proc/PID/mem fails).
CONTENTS_NOT_COMPARED = {"[vvar]", "[vvar_vclock]"}

# The page below a thread's thread pointer (its static TLS, errno among it) may differ for a
# thread whose system call returns EINTR because of the dump: one stopped in a call the kernel
# restarts through its restart block (nanosleep, clock_nanosleep, poll, futex with a timeout:
# usleep loops), as that block does not survive a restore and the call is made to return EINTR
# (arch/x86_64/thread_state.cpp, prepare_restart); and one in a call that the dump's
# PTRACE_INTERRUPT itself ends with EINTR (sigtimedwait: glibc's sigwait sets errno and calls
# it again), which the original sees as well after a --leave-running dump. Which threads those
# are is read from the registers in the images (eintr_threads); every other thread's TLS
# page is compared.
EINTR = 4
ERESTART_RESTARTBLOCK = 516


def eintr_threads(engine, images):
    """{(pid, tid)} of the threads a dump stopped in a system call that returns EINTR to them
    (their registers in the images: orig_rax a system call, rax -ERESTART_RESTARTBLOCK or
    -EINTR; a register that is 0 is not in the JSON)."""
    out = subprocess.run([engine, "show", images, "--json"], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"ckpt-engine show {images} failed: {out.stderr.strip()}")
    found = set()
    for name, image in json.loads(out.stdout)["images"].items():
        if not name.startswith("core-"):
            continue
        for t in image.get("threads", []):
            regs = t.get("x86_64", {})
            orig, rax = int(regs.get("orig_rax", -1)), int(regs.get("rax", 0))
            if orig < (1 << 63) and rax in ((1 << 64) - ERESTART_RESTARTBLOCK, (1 << 64) - EINTR):
                found.add((str(image["pid"]), str(t["tid"])))
    return found

# fdinfo lines that change on their own while the program sleeps (the program checks them
# itself, fd_events): a timerfd's time left, and its expirations, which grow while it waits.
FDINFO_CHANGES_BY_ITSELF = {"it_value", "ticks"}
# fdinfo lines no restore can make again: an eventfd's id (eventfd-id, Linux 6.3+) is taken
# from one kernel-wide pool, the lowest free one, so it matches after a restore only when no
# other eventfd was made or freed in between (it failed fd_kinds and fd_unix_inflight when
# tests ran side by side).
FDINFO_NOT_RESTORABLE = {"eventfd-id"}


# Differences of one program that are known, each said in the test's outcome and not failed:
# (program, kinds of line, regular expression on the readable line, required, why). A required
# one must be seen (a fixed bug makes its entry fail, so it is removed); the others happen only
# sometimes. Never a blanket skip: each names what differs and why.
KNOWN_DIFFERENCES = [
    # Not a restore bug: the program's timers keep firing (interval and POSIX timers with
    # handlers) between the snapshot and the moment the dump stops the tree, and the handlers
    # count in its memory (its .data, its threads' stacks, libc's data). Maps and fds are
    # still compared; the program checks its own counts.
    # A limit of the kernel's interface (CRIU's too): an EPOLLONESHOT target already reported
    # is disabled in the kernel (its events are EPOLLONESHOT alone, 0x40000000). The engine
    # adds it again with EPOLLONESHOT, but epoll_ctl always adds EPOLLERR|EPOLLHUP
    # (0x40000018), so the restored epoll reports an error or hang-up of that target where
    # the original stays quiet. Only a report of the target disables it again, which a
    # restore cannot cause for an arbitrary file.
    ("fd_events", {"fdinfo"}, r"fdinfo tfd \d+: before the dump '\d+ events: 40000000 .*"
     r"after the restore '\d+ events: 40000018 ", True,
     "a reported EPOLLONESHOT target comes back armed for EPOLLERR|EPOLLHUP (docs/engine.md, Event fds)"),
    # Not a restore bug as such (the restart block is not kept, see the TLS note above): its
    # workers wait in sem_timedwait (futex with a timeout, restarted through the restart
    # block); after the restore that call returns EINTR and the program's retry loop runs for
    # the first time, binding a libc function (GOT in its .data, ld.so's data) on its stack.
    ("ipc_pool", {"mem"}, r"contents differ \((.*/ipc_pool|.*/ld-linux-x86-64\.so\.2|\[stack\])\)$", False,
     "ipc_pool: its workers' sem_timedwait returns EINTR after the restore and their retry path runs"),
    # Same cause: tcp_established's child waits in poll() without a timeout; the snapshot
    # taken before the dump interrupts it, which leaves it in restart_syscall (restart
    # block); after the restore that returns EINTR and its loop's retry path runs for the
    # first time.
    ("tcp_established", {"mem"}, r"contents differ \((.*/tcp_established|.*/ld-linux-x86-64\.so\.2|\[stack\])\)$",
     False, "tcp_established: its child's poll returns EINTR after the restore and its retry path runs"),
    # Same cause: attrs's threads sleep in usleep (nanosleep, restarted through the restart
    # block); after the restore it returns EINTR, the kernel writes the time left into the
    # sleeping thread's stack (an anonymous mapping of its own) and the loop sleeps again.
    ("attrs", {"mem"}, r"contents differ \(anonymous\)$", False,
     "attrs: its threads' usleep returns EINTR after the restore, the time left lands on their stacks"),
    ("timers", {"mem", "tls"}, r"contents differ", False,
     "timers: handlers of its still-running timers write its memory between snapshot and dump"),
]


def external_objects(lines, root, external_stdio, shell_job):
    """Inodes of objects that belong to whoever runs the tree, not to the tree: the engine binds
    such fds to the restorer's own at restore (docs/engine.md: "Fds bound to the restorer's
    own (external, terminal) keep the restorer's flags"), so nothing of them is compared but
    that the fd is there and of the same kind:
      - --external-stdio: the runner's pipes at the root's fds 1 and 3;
      - --shell-job: the terminal (/dev/pts/N) of the session, which the restore replaces
        with the restoring session's terminal."""
    external = {}
    fdinfo_ino = {}
    for f in lines:
        if f[0] == "fdinfo" and f[3] == "ino":
            fdinfo_ino[(f[1], f[2])] = f[4]
    for f in lines:
        if f[0] != "fd":
            continue
        pid, fd, target = f[1], f[2], f[3]
        if external_stdio and pid == str(root) and fd in ("1", "3") and target.startswith("pipe:"):
            external[fdinfo_ino.get((pid, fd))] = "<runner's pipe>"
        if shell_job and re.fullmatch(r"/dev/pts/\d+", target):
            external[fdinfo_ino.get((pid, fd))] = "<session terminal>"
    external.pop(None, None)
    return external


def take(tool, root, raw=None):
    out = subprocess.run([tool, *(["--raw", raw] if raw else []), str(root)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"proc_snapshot {root} failed (exit {out.returncode}): {out.stderr.strip()}")
    return out.stdout


def canonical(text, root, external_stdio=False, shell_job=False):
    """{key: value} of one snapshot, with inodes replaced by labels and the allowlist applied."""
    lines = []
    for line in text.splitlines():
        kind, rest = line.split(" ", 1)
        if kind == "map":
            pid, rng, perms, offset, dev, inode, *path = rest.split(" ", 6)
            lines.append(("map", pid, rng, perms, offset, dev, inode, path[0] if path else ""))
        elif kind == "mem":
            lines.append(("mem", *rest.split(" ")))
        elif kind == "fd":
            pid, fd, target = rest.split(" ", 2)
            lines.append(("fd", pid, fd, target))
        elif kind in ("rseq", "tls"):
            pid, tid, value = rest.split(" ", 2)
            lines.append((kind, pid, tid, value))
        elif kind == "fdinfo":
            pid, fd, key, *value = rest.split(" ", 3)
            lines.append(("fdinfo", pid, fd, key, value[0] if value else ""))
        else:
            lines.append((kind, rest))
    external = external_objects(lines, root, external_stdio, shell_job)
    labels = {}

    def label(inode):
        if inode in ("0", ""):
            return "-"
        if inode in external:
            return external[inode]
        return labels.setdefault(inode, f"#{len(labels) + 1}")

    # Inodes are labelled in order of mappings and fds first, so that an epoll's targets
    # (listed in the kernel's order) take the labels of the fds they are.
    for f in lines:
        if f[0] == "map":
            label(f[6])
        elif f[0] == "fdinfo" and f[3] == "ino" and (f[4] not in external):
            label(f[4])
    out = {}
    paths = {}
    tfds = {}
    external_fds = set()
    for f in lines:
        if f[0] == "proc":
            pid = f[1].split()[0]
            out[("proc", pid)] = f[1]
        elif f[0] == "rseq":
            out[("rseq", f[1], f[2])] = f[3]
        elif f[0] == "tls":
            out[("tls", f[1], f[2])] = f[3]
        elif f[0] == "map":
            _, pid, rng, perms, offset, dev, inode, path = f
            paths[(pid, rng)] = path
            out[("map", pid, rng)] = f"{perms} {offset} {label(inode)} {path}"
        elif f[0] == "mem":
            _, pid, rng, digest = f
            if paths.get((pid, rng)) in CONTENTS_NOT_COMPARED:
                continue
            out[("mem", pid, rng)] = digest
        elif f[0] == "fd":
            _, pid, fd, target = f
            ino = next((g[4] for g in lines if g[0] == "fdinfo" and g[1:4] == (pid, fd, "ino")), None)
            if ino in external:
                external_fds.add((pid, fd))
                out[("fd", pid, fd)] = external[ino]
                continue
            out[("fd", pid, fd)] = re.sub(r"\[(\d+)\]$", lambda m: f"[{label(m.group(1))}]", target)
        elif f[0] == "fdinfo":
            _, pid, fd, key, value = f
            if (pid, fd) in external_fds or key in FDINFO_CHANGES_BY_ITSELF or key in FDINFO_NOT_RESTORABLE:
                continue
            if key == "tfd":
                tfds.setdefault((pid, fd), [])
            if key == "ino":
                value = label(value)
            elif key == "tfd":  # epoll target: "N events: E data: D pos:P ino:HEX sdev:S"
                value = re.sub(r"ino:([0-9a-f]+)", lambda m: f"ino:{label(str(int(m.group(1), 16)))}", value)
            if key == "tfd":  # one line per target, in the kernel's order (of struct file addresses)
                tfds[(pid, fd)].append(value)
                continue
            out[("fdinfo", pid, fd, key, 0)] = value
    for (pid, fd), targets in tfds.items():  # by target fd number
        for value in sorted(targets, key=lambda v: int(v.split()[0])):
            out[("fdinfo", pid, fd, f"tfd {value.split()[0]}", 0)] = value
    return out


def describe(key):
    kind, pid, *rest = key
    if kind == "proc":
        return f"pid {pid}"
    if kind in ("map", "mem"):
        return f"pid {pid} mapping {rest[0]}" + (" contents" if kind == "mem" else "")
    if kind == "tls":
        return f"pid {pid} tid {rest[0]} TLS page (below its thread pointer)"
    if kind == "rseq":
        return f"pid {pid} tid {rest[0]} rseq registration (address size signature)"
    if kind == "fd":
        return f"pid {pid} fd {rest[0]}"
    return f"pid {pid} fd {rest[0]} fdinfo {rest[1]}"


def differences(before, after, program, eintr):
    """(failures, known): readable lines, one per difference; known are those of
    KNOWN_DIFFERENCES, said but not failed. A required known difference not seen is a failure
    (the entry is stale: remove it). eintr: eintr_threads of every dump."""
    out, known, seen = [], [], set()
    for key in sorted(set(before) | set(after), key=lambda k: (int(k[1]), k[0], str(k[2:]))):
        b, a = before.get(key), after.get(key)
        if b == a:
            continue
        if key[0] == "tls" and (key[1], key[2]) in eintr:
            continue
        line = describe_difference(key, b, a, before, after)
        entry = next((e for e in KNOWN_DIFFERENCES if e[0] == program and key[0] in e[1]
                      and re.search(e[2], line)), None)
        if entry:
            seen.add(id(entry))
            known.append(f"{line} [known: {entry[4]}]")
        else:
            out.append(line)
    for e in KNOWN_DIFFERENCES:
        if e[0] == program and e[3] and id(e) not in seen:
            out.append(f"known difference no longer seen (remove it from KNOWN_DIFFERENCES): {e[4]}")
    return out, known


def describe_difference(key, b, a, before, after):
    where = describe(key)
    if key[0] == "mem":
        path = (before.get(("map", *key[1:])) or after.get(("map", *key[1:])) or "").split(" ", 3)[-1]
        return f"{where} differ ({path or 'anonymous'})"
    if b is None:
        return f"{where}: only after the restore: {a}"
    if a is None:
        return f"{where}: only before the dump: {b}"
    return f"{where}: before the dump {b!r}, after the restore {a!r}"
