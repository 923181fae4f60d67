#!/usr/bin/env python3
"""Runs one engine conformance program in one mode, or one negative test, and prints one line.

  run_engine_test.py --engine ckpt-engine --program PROG --mode MODE [--user nobody]
                     [--external-stdio] [--file-locks] [--link-remap] [--workdir DIR]
                     [--compress] [--restore-rss-limit MIB]
  run_engine_test.py --engine ckpt-engine --program PROG --negative KIND

Modes:
  no-dump        start, wait for ready, ask for the check (validates the program itself)
  corrupt        no-dump once per corruption point of the program, each must FAIL
  dump-kill      dump (the tree is killed), restore --detach, check
  restore-wait   dump, restore without --detach (the engine waits for the root and must
                 exit with the root's status), check
  leave-running  dump --leave-running, check the original; then make sure every pid of the
                 tree is gone, put the program's files back as they were at dump time,
                 restore, check again (with --dump-twice: dumped twice before the check,
                 the second restored)
  twice          dump, restore, dump the restored tree, restore again, check
  new-pidns      dump --leave-running, restore --new-pidns --detach while the original still
                 holds every pid; the copy must see its old pids and pass, then the original
  new-pidns-twice  dump --leave-running, restore --new-pidns --detach, dump that copy
                 (--leave-running, from the host), kill its namespace, restore the second
                 dump --new-pidns --detach: every pid and tid inside the new namespace must be
                 the first dump's, the copy must pass, then the original
  stream-pipe    dump --leave-running --stream into a pipe read by restore --stream --new-pidns
                 --detach at the same time (no image folder); the copy must pass, then the original
  stream-tcp     dump --stream to an fd connected to `ckpt-engine stream recv --images-dir`
                 over TCP; then a plain restore -D of what it received, check
  stream-send    dump -D; `stream send` of the folder over TCP to `stream recv` (to stdout), whose
                 output is a pipe read by restore --stream at the same time; check
Negative kinds (the program only provides a tree to dump):
  missing-dir, truncated-image, flipped-byte (every image file in turn), pid-taken,
  dump-nonexistent, dump-fails and dump-enospc (a dump refused at once, or failing half way
  on a full file system, must leave the tree running unharmed), fifo-changed (run with
  fd_fifos: a FIFO removed, replaced by a file, or holding other data at restore is refused
  naming it, and the restore then succeeds), file-changed (a file behind
  a mapping touched after the dump: restore refuses it by name, --skip-file-checks restores),
  other-version and other-arch (well-formed images, checksums valid, of format version 99 or
  recorded on aarch64: refused with a message that says so), unsupported-fd (run with
  fd_unsupported: the dump fails naming "unsupported" and the fd, the tree runs on),
  fd-owner-outside (run with fd_owner_outside: the dump refuses an fd whose F_SETOWN owner
  is outside the tree, naming the fd and the owner; the tree runs on), pidfd-reaped and
  pidfd-outside (run with pidfd_reaped / pidfd_outside: fd 9 is a pidfd of a child already
  reaped / of the runner; the dump refuses it naming the pid and fd 9, the tree runs on).
Streams (dump --stream into a file, then each damaged copy given to restore --stream):
  stream-truncated (cut in the metadata, in the page data, just before the trailer),
  stream-forged-sums (a byte of page data, then of the block checksums after it, changed and
  the record's stream checksum made again: refused by the block checksums, the pages already
  in place), stream-no-sums (the block checksums after page data left out),
  stream-flipped (a byte of page data flipped), stream-forged-name (a record renamed to a name
  with '/' or '..', its length kept), stream-version (the stream's version 99): each refused
  with its message, nothing left running.
Image folders written by their user (every file may be forged, at any moment):
  image-fifo, image-devzero, image-symlink (every file of a dump in turn replaced by a FIFO,
  a link to /dev/zero, a link to a valid copy of itself elsewhere: restore and show refuse it
  by name within seconds), dump-symlinks (links planted at every name a dump writes, to a
  canary file and to /proc/PID/mem of a canary process: neither is touched, the tree runs
  on), pages-outside (a page map or file table naming a file outside the folder: refused),
  dump-foreign-process (an engine run as nobody with CAP_SYS_PTRACE and
  CAP_CHECKPOINT_RESTORE refuses a tree with a root child, naming it, and dumps an all-nobody
  tree).
Pid namespaces: nested-pidns (run with pidns_nested: a dump of a tree holding a process in a
  pid namespace below the root's, or one that unshared its children's, is refused naming it;
  the tree runs on).
Comparison: compare-detects (with --compare: one data byte and one file offset of the restored
  root changed before the snapshot after the restore; the comparison must report both, and
  nothing else than the offsets of dups of that fd).
Memory: unsupported-mapping (run with mem_deleted_linked: a MAP_SHARED mapping of a deleted
  name of a file still linked elsewhere, dumped without --link-remap; the dump refuses it
  naming the pid and the mapping and saying that --link-remap keeps it; with ipc_sysv_host, a
  System V segment attached in the host's IPC namespace; the dump refuses it naming the pid and
  the mapping, the tree runs on; with mem_aio / mem_aio_inflight, the ring of an AIO context:
  refused naming the pid, the mapping and the AIO context).
Batched injected calls: batch-failed (run with tree: a child's mm image forged so that a madvise
  of a batch fails at restore; the restore names the call, the pid and the mapping, nothing is
  left running, the untouched images restore).
System V IPC: ipc-forged (run with ipc_sysv: fields of ipc.img forged, and an attachment naming
  no segment; each restore refuses it as corrupt, nothing is restored), ipc-refused (run with
  ipc_sysv_undo: a semaphore held with SEM_UNDO; the dump refuses it naming the pid, the tree
  runs on).
Fds: refused-fd (run with fd_deleted_linked / fd_dir_removed: fd 9 is a deleted name of a file
  linked elsewhere / a removed directory; with fd_unix_rights, an AF_UNIX socket with an fd in
  flight queued; with fd_unix_outside, a listening AF_UNIX socket with a connection pending
  from outside the tree; the dump refuses it naming the pid and fd 9, the tree runs on), refused-cwd (run
  with cwd_removed: the cwd was removed; refused naming the pid and the cwd), shared-fd-table (run with fd_shared_orphans: two orphans sharing an fd
  table (clone(CLONE_FILES)) neither has from the other or from the root; the dump refuses
  it naming both pids, the tree runs on).

The runner is a child subreaper, so orphans of the tree and trees restored with --detach
become its children: it reaps them all itself and records every exit status. It kills
everything it started on any failure. Exit status 0 means the test passed.
"""
import argparse
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import termios
import time

from public_stage import public_copy, public_folder
import proc_compare

PR_SET_CHILD_SUBREAPER = 36
READY_TIMEOUT = 30.0
ENGINE_TIMEOUT = 120.0
REFUSAL_TIMEOUT = 20.0  # a forged image is refused at once: a hang is a failure
NOBODY = 65534
VERDICT_TIMEOUT = 60.0
GONE_TIMEOUT = 30.0


class TestFailure(Exception):
    pass


class Reaper:
    """Waits for every child of this (subreaper) process and keeps their exit statuses, and the
    peak memory (ru_maxrss, KiB) of the engine's runs (recorded with Run.engine)."""

    def __init__(self):
        self.status = {}
        self.maxrss = {}
        self.watched = set()  # pids whose ru_maxrss is kept

    def poll(self):
        while True:
            try:
                pid, st, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.status[pid] = st
            if pid in self.watched:
                self.watched.discard(pid)
                self.maxrss[pid] = usage.ru_maxrss

    def wait(self, pid, timeout):
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if pid in self.status:
                return self.status.pop(pid)
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)


def describe_status(st):
    if st is None:
        return "still running"
    if os.WIFSIGNALED(st):
        return f"killed by signal {os.WTERMSIG(st)}"
    return f"exit {os.WEXITSTATUS(st)}"


def exit_code(st):
    """The shell's view of a wait status: exit code, or 128 + signal."""
    return 128 + os.WTERMSIG(st) if os.WIFSIGNALED(st) else os.WEXITSTATUS(st)


def tree_pids(root):
    """Every pid and tid of the tree rooted at root (from /proc/PID/task/TID/children)."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        found.append(pid)
        for tid in tids:
            if int(tid) != pid:
                found.append(int(tid))
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except FileNotFoundError:
                pass
    return sorted(set(found))


def status_fields(pid):
    """/proc/PID/status as a dict of stripped values."""
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in f.read().splitlines() if ":" in line)}


def pid_exists(pid):
    return os.path.exists(f"/proc/{pid}")


def proc_state(pid):
    """(state letter, TracerPid) from /proc/PID/status, or None when gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return fields["State"].split()[0], int(fields["TracerPid"])


class Run:
    def __init__(self, args):
        self.args = args
        self.reaper = Reaper()
        self.started = set()  # pids to kill on failure
        base = args.workdir or tempfile.mkdtemp(prefix="ckpt-enginetest-")
        self.work = os.path.join(base, args.work_name or f"{os.path.basename(args.program)}.{args.mode or args.negative}")
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        os.chmod(self.work, 0o777)  # the program may run as nobody
        self.result = os.path.join(self.work, "result")
        self.log = os.path.join(self.work, "program.log")
        self.images = os.path.join(self.work, "images")
        self.root = None
        self.pids = []
        self.stdio_pipes = []
        self.engine_log = os.path.join(self.work, "engine.log")
        self.root_waiter = None  # who reports the root's exit: its "shell" in --shell-job mode
        self.tty_master = None   # the pty of the shell-job session, read for the tty marker
        self.shells = 0
        self.peer = None       # --peer: (pid, port) of the peer outside the tree
        self.eintr_threads = set()  # --compare: threads whose syscall returns EINTR after a dump

    # ---- processes -------------------------------------------------------------------
    def start_peer(self):
        """--peer: starts the peer program outside the tree (the runner's child, in a session
        of its own), which prints the TCP port it listens on; the program finds it in
        CKPT_TEST_PEER_PORT. The peer's own verdict is its exit status (finish_peer)."""
        r, w = os.pipe()
        log_fd = os.open(os.path.join(self.work, "peer.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
                os.dup2(w, 1)
                os.dup2(log_fd, 2)
                os.closerange(3, 1 << 16)
                os.execv(self.args.peer, [self.args.peer])
            except BaseException as e:  # noqa: B902: report anything and die
                os.write(2, f"runner: cannot start the peer {self.args.peer}: {e}\n".encode())
            os._exit(127)
        os.close(w)
        os.close(log_fd)
        self.started.add(pid)
        with os.fdopen(r) as out:
            line = out.readline().strip()
        if not line.isdigit():
            raise TestFailure(f"the peer printed no port ({line!r})")
        self.peer = (pid, int(line))

    def finish_peer(self):
        """Asks the peer for its verdict (SIGTERM): it waits for its connections to end and
        exits 0 only if none was reset and every byte was right."""
        pid = self.peer[0]
        os.kill(pid, signal.SIGTERM)
        st = self.reaper.wait(pid, VERDICT_TIMEOUT)
        self.started.discard(pid)
        if st is None or exit_code(st) != 0:
            log = open(os.path.join(self.work, "peer.log"), errors="replace").read().strip()
            raise TestFailure(f"the peer outside the tree noticed ({describe_status(st) if st is not None else 'no exit'}): "
                              f"{log[-2000:]}")

    def spawn_program(self, env_extra=None):
        env = dict(os.environ)
        env.pop("CKPT_TEST_CORRUPT", None)
        if self.args.peer:
            if self.peer is None:
                self.start_peer()
            env["CKPT_TEST_PEER_PORT"] = str(self.peer[1])
        if env_extra:
            env.update(env_extra)
        log_fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        null_fd = os.open("/dev/null", os.O_RDWR)
        out_fd = err_fd = log_fd
        extra = {}
        if self.args.external_stdio:
            # stdout is a pipe to the runner (external to the tree), fd 3 another one.
            r1, w1 = os.pipe()
            r3, w3 = os.pipe()
            self.stdio_pipes = [r1, r3]
            out_fd = w1
            extra = {3: w3}
        if self.args.shell_job:
            # A "shell" owns a session whose controlling terminal is a pty; the program is a
            # job in it (own process group), with the terminal as stdin and stdout.
            self.tty_master, slave = os.openpty()
            pid = os.fork()
            if pid == 0:
                try:
                    os.setsid()
                    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
                    job = os.fork()
                    if job == 0:
                        os.setpgid(0, 0)
                        self.exec_program(env, slave, slave, err_fd, extra)
                    os._exit(exit_code(os.waitpid(job, 0)[1]))
                except BaseException as e:  # noqa: B902: report anything and die
                    os.write(2, f"runner: cannot start the shell job: {e}\n".encode())
                os._exit(127)
            os.close(slave)
            self.root_waiter = pid
            self.started.add(pid)
        else:
            pid = os.fork()
            if pid == 0:
                os.setsid()
                self.exec_program(env, null_fd, out_fd, err_fd, extra)
        os.close(log_fd)
        os.close(null_fd)
        if self.args.external_stdio:
            os.close(out_fd)
            os.close(extra[3])
        self.started.add(pid)
        self.root = pid if not self.args.shell_job else None  # the job: known once ready
        return pid

    def exec_program(self, env, stdin, stdout, stderr, extra):
        """In a forked child: becomes the test program (as nobody if asked)."""
        try:
            os.dup2(stdin, 0)
            os.dup2(stdout, 1)
            os.dup2(stderr, 2)
            for target, fd in extra.items():
                os.dup2(fd, target)
            os.closerange(3 + len(extra), 1 << 16)
            if getattr(self, "exec_as", None) == NOBODY:  # entirely nobody's
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
            elif self.args.user == "nobody":
                os.setgroups([65534, 100])
                os.setresgid(65534, 65533, 65533)  # exec copies effective to saved
                os.setresuid(65534, 65533, 65533)
            os.execve(self.args.program, [self.args.program, self.result], env)
        except BaseException as e:  # noqa: B902: report anything and die
            os.write(2, f"runner: cannot start {self.args.program}: {e}\n".encode())
        os._exit(127)

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        waiter = self.root_waiter or self.root
        while not os.path.exists(self.result + ".ready"):
            self.reaper.poll()
            if waiter in self.reaper.status:
                raise TestFailure(f"program exited before ready "
                                  f"({describe_status(self.reaper.status[waiter])})")
            if time.monotonic() > deadline:
                raise TestFailure("program not ready after %.0f s" % READY_TIMEOUT)
            time.sleep(0.01)
        if self.root is None:
            with open(f"/proc/{waiter}/task/{waiter}/children") as f:
                self.root = int(f.read().split()[0])
        self.pids = tree_pids(self.root)
        self.started.update(self.pids)

    def engine(self, *argv, check=True, wait=True, stdout=None, keep_fd=None, timeout=ENGINE_TIMEOUT,
               prefix=()):
        """Runs ckpt-engine; returns (exit code, stderr), or (pid, stderr file) if not wait.

        prefix is a command that runs the engine (setpriv, to run it as another user).

        A --shell-job restore runs in a new session whose controlling terminal is a new pty
        (what a shell gives it); after a --detach restore that session leader stays alive,
        as a shell would, so the restored job keeps its terminal."""
        if self.args.tcp_established and argv and argv[0] in ("dump", "restore"):
            argv = (*argv, "--tcp-established")
        if argv and argv[0] == "restore":
            argv = (*argv, *self.args.restore_arg)
        cmd = [*prefix, self.args.engine, *argv]
        with open(self.engine_log, "a") as log:
            log.write("$ " + " ".join(cmd) + "\n")
        err = open(self.engine_log + ".last", "w+")
        in_session = self.args.shell_job and argv[0] == "restore"
        detached = in_session and "--detach" in argv
        status_file = os.path.join(self.work, f"shell{len(self.started)}.status")
        stdin = os.open("/dev/null", os.O_RDONLY)
        if in_session:
            self.tty_master, slave = os.openpty()  # the old one may still serve the original
            stdin = stdout = slave
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(stdin, 0)
                if stdout is not None:
                    os.dup2(stdout, 1)
                else:
                    os.dup2(os.open(self.engine_log, os.O_WRONLY | os.O_APPEND), 1)
                os.dup2(err.fileno(), 2)
                # As a shell's background job would, the engine starts with SIGINT and SIGQUIT
                # ignored (kept across exec): no restored process may take that from it.
                for sig in (signal.SIGINT, signal.SIGQUIT):
                    signal.signal(sig, signal.SIG_IGN)
                if keep_fd is None:
                    os.closerange(3, 1 << 16)
                else:  # an fd given to the engine by --inherit-fd
                    os.closerange(3, keep_fd)
                    os.closerange(keep_fd + 1, 1 << 16)
                    os.set_inheritable(keep_fd, True)
                if not in_session:
                    os.execv(cmd[0], cmd)
                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
                engine = os.fork()
                if engine == 0:
                    os.execv(cmd[0], cmd)
                code = exit_code(os.waitpid(engine, 0)[1])
                if not detached:
                    os._exit(code)
                with open(status_file + ".tmp", "w") as f:
                    f.write(str(code))
                os.rename(status_file + ".tmp", status_file)
                while True:
                    signal.pause()
            except BaseException as e:  # noqa: B902
                os.write(2, f"runner: cannot run {cmd[0]}: {e}\n".encode())
            os._exit(127)
        os.close(stdin)
        self.started.add(pid)
        self.reaper.watched.add(pid)
        if not wait:
            return pid, err
        if detached:
            code = self.wait_for_file(status_file, timeout)
        else:
            st = self.reaper.wait(pid, timeout)
            code = None if st is None else exit_code(st)
            # The engine's peak memory: its own (the restored processes are not its reaped
            # children: a --detach restore leaves them to us).
            self.engine_maxrss_kib = self.reaper.maxrss.pop(pid, None)
        err.seek(0)
        stderr = err.read()
        err.close()
        with open(self.engine_log, "a") as log:
            log.write(stderr)
            log.write(f"[exit {code}]\n")
        if code is None:
            raise TestFailure(f"'{' '.join(argv[:1])}' did not finish in {timeout:.0f} s")
        if check and code != 0:
            line = stderr.strip().splitlines()[-1] if stderr.strip() else "(no message)"
            raise TestFailure(f"ckpt-engine {argv[0]} failed (exit {code}): {line}")
        return code, stderr

    def wait_for_file(self, path, timeout):
        """The integer a helper writes into path, or None after timeout."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            self.reaper.poll()
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)
        return int(open(path).read())

    def wait_gone(self, pids):
        """Reaps and waits until none of pids exists any more (not even as a zombie)."""
        deadline = time.monotonic() + GONE_TIMEOUT
        while True:
            self.reaper.poll()
            alive = [p for p in pids if pid_exists(p)]
            if not alive:
                # Forget how they ended: a restored process will carry the same pid.
                for p in pids:
                    self.reaper.status.pop(p, None)
                return
            if time.monotonic() > deadline:
                raise TestFailure(f"pids {alive} still exist {GONE_TIMEOUT:.0f} s after the kill")
            time.sleep(0.01)

    def kill_pids(self, pids):
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cleanup(self):
        self.kill_pids(sorted(self.started | set(self.pids)))
        try:
            self.wait_gone(sorted(self.started | set(self.pids)))
        except TestFailure:
            pass
        # Named POSIX shared memory objects a program made (it writes their names into
        # "posix-shm-names" in its data folder): they outlive the program in /dev/shm.
        for d, _, files in os.walk(self.work):
            if "posix-shm-names" in files:
                with open(os.path.join(d, "posix-shm-names")) as f:
                    for name in f.read().split():
                        if name.startswith("/ckpt-") and "/" not in name[1:]:
                            try:
                                os.unlink("/dev/shm" + name)
                            except FileNotFoundError:
                                pass

    # ---- steps -----------------------------------------------------------------------
    def check_verdict(self, root_status=None, what="check"):
        """Sends the check signal and expects PASS (exit 0) from the root."""
        if os.path.exists(self.result):
            os.unlink(self.result)
        os.kill(self.root, signal.SIGTERM)
        if root_status is None:
            st = self.reaper.wait(self.root_waiter or self.root, VERDICT_TIMEOUT)
            if st is None:
                raise TestFailure(f"{what}: no verdict after {VERDICT_TIMEOUT:.0f} s")
            root_status = st
        verdict = open(self.result).read().strip() if os.path.exists(self.result) else ""
        if not verdict:
            raise TestFailure(f"{what}: program wrote no verdict ({describe_status(root_status)})")
        if verdict != "PASS" or exit_code(root_status) != 0:
            raise TestFailure(f"{what}: {verdict} ({describe_status(root_status)})")
        if self.args.external_stdio:
            self.check_external_output(what)
        if self.args.shell_job:
            self.check_tty_output(what)

    def check_tty_output(self, what):
        """The program writes a marker to its controlling terminal at its check."""
        os.set_blocking(self.tty_master, False)
        try:
            data = os.read(self.tty_master, 4096)
        except (BlockingIOError, OSError):
            data = b""
        if b"marker tty" not in data:
            raise TestFailure(f"{what}: the terminal of the session got {data!r}")

    def check_external_output(self, what):
        """The program writes a marker to fd 1 and fd 3 at its check."""
        for fd, name in zip(self.stdio_pipes, ("fd 1", "fd 3")):
            os.set_blocking(fd, False)
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                data = b""
            if f"marker {name}".encode() not in data:
                raise TestFailure(f"{what}: the runner's pipe behind {name} got {data!r}")

    def dump(self, leave_running=False, images=None):
        argv = ["dump", "-t", str(self.root), "-D", images or self.images]
        if leave_running:
            argv.append("--leave-running")
            if self.args.snapshot:
                argv.append("--snapshot")
        if self.args.shell_job:
            argv.append("--shell-job")
        if self.args.file_locks:
            argv.append("--file-locks")
        if self.args.link_remap:
            argv.append("--link-remap")
        argv += self.args.dump_arg
        if self.args.compress:
            argv.append("--compress")
        os.makedirs(images or self.images, exist_ok=True)
        if leave_running and self.args.snapshot and self.args.expect_snapshot:
            self.dump_snapshot(argv)
        else:
            self.engine(*argv)
        if self.args.compress:
            self.check_compressed(images or self.images)
        if self.args.compare:
            try:
                self.eintr_threads |= proc_compare.eintr_threads(self.args.engine, images or self.images)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                raise TestFailure(f"--compare: reading the dump's registers: {e}")
        if not leave_running:
            # The engine killed the tree: the root is our child, orphans come to us.
            self.wait_gone(self.pids)

    def dump_snapshot(self, argv):
        """--expect-snapshot: the dump's pages were copied by the copy-on-write snapshot (its
        --stats say "snapshot": true), not while the tree was frozen (the fallback)."""
        out = os.path.join(self.work, "dump-stats.json")
        with open(out, "w") as f:
            self.engine(*argv, "--stats", stdout=f.fileno())
        try:
            with open(out) as f:
                stats = json.loads(f.read())
        except ValueError as e:
            raise TestFailure(f"dump --stats: {e}")
        if stats.get("snapshot") is not True:
            raise TestFailure(f"dump --snapshot copied the pages with the tree frozen, not copy-on-write: {stats}")
        # The engine's userfaultfds (and /dev/userfaultfd, for a user's process) are closed in
        # the tree before the dump returns.
        for pid in self.pids:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except FileNotFoundError:
                    continue
                if target in ("/dev/userfaultfd", "anon_inode:[userfaultfd]"):
                    raise TestFailure(f"pid {pid} holds fd {fd} ({target}) after dump --snapshot")

    def page_maps(self, images):
        """{name: page map as JSON} of every page map in images (ckpt-engine show --json)."""
        r = subprocess.run([self.args.engine, "show", images, "--json"], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=ENGINE_TIMEOUT)
        if r.returncode != 0:
            raise TestFailure(f"show {images}: {r.stderr.strip()}")
        return {n: m for n, m in json.loads(r.stdout)["images"].items() if n.startswith("pagemap-")}

    def check_compressed(self, images):
        """A dump --compress: every page map with page data has its blocks stored (PageMap.blocks),
        its pages file as long as they say, and some block of the dump is a zstd frame smaller than
        the block."""
        frames = 0
        for name, pm in self.page_maps(images).items():
            data = int(pm.get("pages_bytes", 0))
            blocks = pm.get("blocks", [])
            if data and not blocks:
                raise TestFailure(f"{name}: {data} bytes of page data not stored compressed by dump --compress")
            stored = int(pm.get("stored_bytes", 0))
            size = os.path.getsize(os.path.join(images, pm["pages_file"]))
            if size != stored or sum(int(b.get("length", 0)) for b in blocks) != stored:
                raise TestFailure(f"{name}: pages file of {size} bytes, blocks of {stored}")
            frames += sum(1 for b in blocks if b.get("zstd"))
        if not frames:
            raise TestFailure(f"{images}: dump --compress stored no block as a zstd frame")

    def inherit_args(self):
        if not self.args.external_stdio:
            return []
        # fd 3 was the write end of a pipe whose read end is the runner's: CRIU's key form.
        r, w = os.pipe()
        self.stdio_pipes[1] = r
        self.inherit_w = w
        return ["--inherit-fd", f"fd[{w}]:{self.fd3_key}"]

    def restore(self, images=None, extra=()):
        pidfile = os.path.join(self.work, "restore.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        stdout = self.new_stdout_pipe()
        argv = ["restore", "-D", images or self.images, "--detach", "--pidfile", pidfile, *extra]
        argv += self.shell_job_args()
        argv += self.inherit_args()
        self.engine_maxrss_kib = None
        self.engine_pass_fds(argv, stdout)
        self.after_restore_check(pidfile)
        if self.args.restore_rss_limit is not None:
            self.check_restore_rss(self.engine_maxrss_kib)
        if self.args.compare:
            self.restores = getattr(self, "restores", 0) + 1
            self.compare_with_before(f"restore {self.restores}")

    def check_restore_rss(self, kib):
        """--restore-rss-limit: the restore just made stayed within the limit (peak RSS of the
        engine, as the kernel counts it for the process reaped)."""
        if kib is None:
            raise TestFailure("--restore-rss-limit: the restore's peak memory was not measured")
        mib = kib / 1024
        self.restore_rss_mib = max(getattr(self, "restore_rss_mib", 0), mib)
        if mib > self.args.restore_rss_limit:
            raise TestFailure(f"restore: the engine's peak RSS was {mib:.0f} MiB, over the limit of "
                              f"{self.args.restore_rss_limit} MiB")

    def shell_job_args(self):
        return ["--shell-job"] if self.args.shell_job else []

    def new_stdout_pipe(self):
        if not self.args.external_stdio:
            return None
        r, w = os.pipe()
        self.stdio_pipes[0] = r
        return w

    def engine_pass_fds(self, argv, stdout, wait=True):
        """Runs the engine with the runner's new pipes as its stdout and --inherit-fd fd."""
        inherit = getattr(self, "inherit_w", None)
        try:
            return self.engine(*argv, stdout=stdout, keep_fd=inherit, wait=wait)
        finally:
            if stdout is not None:
                os.close(stdout)
            if inherit is not None:
                os.close(inherit)
                self.inherit_w = None

    def after_restore_check(self, pidfile):
        try:
            got = int(open(pidfile).read().strip())
        except (OSError, ValueError):
            raise TestFailure("restore --detach: no pid in the --pidfile")
        if got != self.root:
            raise TestFailure(f"restore --pidfile says {got}, the root was {self.root}")
        self.root_waiter = None  # the restored root is ours (we are its subreaper)
        now = tree_pids(self.root)
        if not self.same_tree(now):
            raise TestFailure(f"restored tree has pids {now}, the dumped one had {self.pids}")
        self.started.update(now)

    def same_tree(self, now):
        """now (tree_pids) is the tree started; with --threads-may-exit, some of its threads
        may be gone (never a process, and nothing new)."""
        if not self.args.threads_may_exit:
            return now == self.pids
        return self.root in now and set(now) <= set(self.pids)

    def remember_files(self):
        """Content and mtime of the program's data files, as they are at dump time. A folder
        named no-snapshot holds files the runner must not open (a lease would be broken, a
        fanotify mark would report it)."""
        saved = {}
        data = self.result + ".data"
        for dirpath, dirs, files in os.walk(data):
            if "no-snapshot" in dirs:
                dirs.remove("no-snapshot")
            for name in files:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue  # a FIFO would block the open; links are the program's
                saved[path] = (open(path, "rb").read(), st.st_mtime_ns, st.st_atime_ns)
        return saved

    def put_back_files(self, saved):
        for path, (content, mtime, atime) in saved.items():
            if not os.path.exists(path):
                continue
            with open(path, "r+b") as f:  # same inode: the restore checks size and mtime
                f.write(content)
                f.truncate(len(content))
            os.utime(path, ns=(atime, mtime))

    def start(self):
        """Starts the program and waits until it is ready to be dumped."""
        self.spawn_program()
        self.wait_ready()
        self.prepare_external()
        if self.args.compare:
            # A snapshot interrupts every thread as a dump does: a thread in a call that this
            # ends with EINTR (sigtimedwait) runs its retry path afterwards, which may write
            # memory for the first time (binding a libc function, its stack). The first
            # snapshot lets that happen once; the second is the one compared.
            self.snapshot("to settle")
            self.wait_asleep()
            self.before = self.snapshot("before the dump")

    def wait_asleep(self):
        """Until no thread of the tree is running (each back in its blocking call), or 5 s."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            running = False
            for p in tree_pids(self.root):
                try:
                    with open(f"/proc/{p}/stat") as f:
                        running |= f.read().rsplit(")", 1)[1].split()[0] == "R"
                except OSError:
                    pass
            if not running:
                return
            time.sleep(0.01)

    def snapshot(self, when):
        """--compare: the tree's mappings, memory and fds now (tools/proc_snapshot)."""
        try:
            raw = None
            if os.environ.get("CKPT_COMPARE_RAW"):  # by hand: every mapping's bytes, to cmp
                raw = os.path.join(self.work, f"raw {when}")
                os.makedirs(raw, exist_ok=True)
            text = proc_compare.take(self.args.compare, self.root, raw)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            raise TestFailure(f"snapshot {when}: {e}")
        with open(os.path.join(self.work, f"snapshot {when}.txt"), "w") as f:
            f.write(text)
        return proc_compare.canonical(text, self.root, self.args.external_stdio, self.args.shell_job)

    def compare_with_before(self, what):
        """--compare: the restored tree must hold what the dumped one held (proc_compare.py)."""
        diff, known = proc_compare.differences(self.before, self.snapshot(f"after {what}"),
                                               os.path.basename(self.args.program), self.eintr_threads)
        for line in known:
            print(f"  {what}: {line}")
        if diff:
            shown = diff[:20] + ([f"... and {len(diff) - 20} more"] if len(diff) > 20 else [])
            raise TestFailure(f"{what}: the restored tree differs from the dumped one "
                              f"({len(diff)} differences; snapshots kept in the work directory):\n  "
                              + "\n  ".join(shown))

    def prepare_external(self):
        if self.args.external_stdio:
            self.fd3_key = os.readlink(f"/proc/{self.root}/fd/3")

    # ---- modes -----------------------------------------------------------------------
    def mode_no_dump(self):
        self.spawn_program()
        self.wait_ready()
        self.check_verdict()
        return "PASS"

    def mode_corrupt(self):
        count = int(subprocess.run([self.args.program, "--corruptions"], check=True,
                                   capture_output=True, text=True).stdout)
        if count < 1:
            raise TestFailure("program has no corruption point: its checks cannot be shown to fail")
        for n in range(1, count + 1):
            for name in ("result", "result.ready"):
                path = os.path.join(self.work, name)
                if os.path.exists(path):
                    os.unlink(path)
            shutil.rmtree(self.result + ".data", ignore_errors=True)
            self.spawn_program({"CKPT_TEST_CORRUPT": str(n)})
            self.wait_ready()
            try:
                self.check_verdict(what=f"corruption {n}")
            except TestFailure as e:
                if "FAIL" not in str(e):
                    raise
                print(f"  {e}")
                self.kill_pids(self.pids)
                self.wait_gone(self.pids)
                continue
            raise TestFailure(f"corruption point {n} was not detected: the check passed")
        return f"PASS ({count} corruptions detected)"

    def mode_dump_kill(self):
        self.start()
        self.dump()
        self.restore()
        self.check_verdict(what="after restore")
        if self.args.restore_rss_limit is not None:
            return f"PASS (restore peak RSS {self.restore_rss_mib:.0f} MiB, limit {self.args.restore_rss_limit} MiB)"
        return "PASS"

    def mode_restore_wait(self):
        self.start()
        self.dump()
        stdout = self.new_stdout_pipe()
        argv = ["restore", "-D", self.images] + self.inherit_args() + self.shell_job_args()
        pid, err = self.engine_pass_fds(argv, stdout, wait=False)
        # The restored tree is ready when every pid is back, untraced and asleep (or stopped,
        # as it was: the `stopped` program).
        deadline = time.monotonic() + ENGINE_TIMEOUT
        while True:
            self.reaper.poll()
            if pid in self.reaper.status:
                err.seek(0)
                raise TestFailure(f"restore exited early ({describe_status(self.reaper.status[pid])}): "
                                  f"{err.read().strip()}")
            states = [proc_state(p) for p in self.pids]
            if all(s is not None and s[1] == 0 and s[0] in "SZT" for s in states):
                break
            if time.monotonic() > deadline:
                raise TestFailure("restored tree not running after %.0f s" % ENGINE_TIMEOUT)
            time.sleep(0.05)
        time.sleep(0.2)
        self.started.update(self.pids)
        os.kill(self.root, signal.SIGTERM)
        st = self.reaper.wait(pid, VERDICT_TIMEOUT)
        err.seek(0)
        with open(self.engine_log, "a") as log:
            log.write(err.read() + f"[{describe_status(st)}]\n")
        if st is None:
            raise TestFailure("restore (without --detach) did not exit after the root did")
        verdict = open(self.result).read().strip() if os.path.exists(self.result) else ""
        if verdict != "PASS":
            raise TestFailure(f"after restore: {verdict or 'no verdict'}")
        if exit_code(st) != 0:
            raise TestFailure(f"restore exited {describe_status(st)} though the root passed (exit 0)")
        if self.args.external_stdio:
            self.check_external_output("after restore")
        return "PASS"

    def mode_leave_running(self):
        self.start()
        self.dump(leave_running=True)
        images = self.images
        if self.args.dump_twice:
            # A second dump of the same original (with --link-remap it reuses the first's
            # hidden links: the program counts them at its check), and its images restore.
            images = self.images + "-again"
            self.dump(leave_running=True, images=images)
        files = self.remember_files()
        if not self.same_tree(tree_pids(self.root)):
            raise TestFailure(f"tree changed during dump --leave-running: {tree_pids(self.root)} "
                              f"instead of {self.pids}")
        self.check_verdict(what="original after dump --leave-running")
        self.kill_pids(self.pids)
        self.wait_gone(self.pids)
        self.put_back_files(files)
        self.restore(images=images)
        self.check_verdict(what="after restore")
        return "PASS"

    def mode_new_pidns(self):
        """Restore --new-pidns while the original still holds every pid, then check both."""
        self.start()
        self.dump(leave_running=True)
        original = (self.stdio_pipes[:], self.tty_master)
        host_root, init = self.restore_in_new_pidns(self.images, "restore --new-pidns --detach")
        # The copy first (its init passes the root's status out), then the original.
        self.check_copy(host_root, init, "restored copy in a new pid namespace")
        self.stdio_pipes, self.tty_master = original
        self.check_verdict(what="original, after the copy ran in a new pid namespace")
        return "PASS"

    # ---- streams ----------------------------------------------------------------------
    def wait_engine(self, pid, err, what):
        st = self.reaper.wait(pid, ENGINE_TIMEOUT)
        err.seek(0)
        text = err.read()
        with open(self.engine_log, "a") as log:
            log.write(text + f"[{describe_status(st)}]\n")
        if st is None:
            raise TestFailure(f"{what}: still running after {ENGINE_TIMEOUT:.0f} s")
        if exit_code(st) != 0:
            raise TestFailure(f"{what} failed ({describe_status(st)}): {text.strip()}")

    def start_receiver(self, *extra, stdout=None):
        """`stream recv --listen 127.0.0.1:0`: (its pid, stderr file, the port it took)."""
        port_file = os.path.join(self.work, "recv.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        pid, err = self.engine("stream", "recv", "--listen", "127.0.0.1:0", "--port-file", port_file, *extra,
                               stdout=stdout, wait=False)
        deadline = time.monotonic() + ENGINE_TIMEOUT
        while True:
            text = open(port_file).read() if os.path.exists(port_file) else ""
            if text.endswith("\n"):
                return pid, err, int(text)
            self.reaper.poll()
            if pid in self.reaper.status or time.monotonic() > deadline:
                err.seek(0)
                raise TestFailure(f"stream recv did not listen: {err.read().strip()}")
            time.sleep(0.02)

    def mode_stream_pipe(self):
        """dump --leave-running --stream | restore --stream --new-pidns, both at once."""
        self.start()
        r, w = os.pipe()
        dump_argv = ["dump", "-t", str(self.root), "--leave-running", "--stream", str(w)] + self.compress_args()
        dump_pid, dump_err = self.engine(*dump_argv, keep_fd=w, wait=False)
        os.close(w)
        pidfile = os.path.join(self.work, "restore.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        try:
            self.engine("restore", "--stream", str(r), "--new-pidns", "--detach", "--pidfile", pidfile, keep_fd=r)
        finally:
            os.close(r)
        self.wait_engine(dump_pid, dump_err, "dump --stream")
        host_root = int(open(pidfile).read().strip())
        self.started.add(host_root)
        nspid = [int(p) for p in status_fields(host_root)["NSpid"].split()]
        if len(nspid) < 2 or nspid[-1] != self.root:
            raise TestFailure(f"restore --stream: the restored root has NSpid {nspid}, expected pid {self.root}")
        init = int(status_fields(host_root)["PPid"])
        self.started.update(tree_pids(init))
        self.check_copy(host_root, init, "copy restored from a pipe")
        self.check_verdict(what="original, after the copy restored from a pipe ran")
        return "PASS"

    def mode_stream_tcp(self):
        """dump --stream over TCP to `stream recv --images-dir`, then restore -D."""
        self.start()
        received = os.path.join(self.work, "received")
        shutil.rmtree(received, ignore_errors=True)
        recv_pid, recv_err, port = self.start_receiver("--images-dir", received)
        sock = socket.create_connection(("127.0.0.1", port))
        try:
            self.engine("dump", "-t", str(self.root), "--stream", str(sock.fileno()), *self.compress_args(),
                        keep_fd=sock.fileno())
        finally:
            sock.close()
        self.wait_gone(self.pids)
        self.wait_engine(recv_pid, recv_err, "stream recv --images-dir")
        if self.args.compress:
            # The blocks came compressed (PAGE_BLOCK records): the receiver stored them so.
            self.check_compressed(received)
        self.restore(images=received)
        self.check_verdict(what="after restore of the received folder")
        return "PASS"

    def mode_stream_send(self):
        """dump -D; stream send over TCP to stream recv, piped into restore --stream."""
        self.start()
        self.dump()
        r, w = os.pipe()
        recv_pid, recv_err, port = self.start_receiver(stdout=w)
        os.close(w)
        pidfile = os.path.join(self.work, "restore.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        try:
            restore_pid, restore_err = self.engine("restore", "--stream", str(r), "--detach", "--pidfile", pidfile,
                                                   keep_fd=r, wait=False)
        finally:
            os.close(r)
        self.engine("stream", "send", "--images-dir", self.images, "--to", f"127.0.0.1:{port}")
        self.wait_engine(recv_pid, recv_err, "stream recv")
        self.wait_engine(restore_pid, restore_err, "restore --stream")
        self.after_restore_check(pidfile)
        self.check_verdict(what="after restore from the stream sent")
        return "PASS"

    def compress_args(self):
        return ["--compress"] if self.args.compress else []

    def stream_records(self, path):
        """The frames of a stream file: (offset of the frame, its message bytes, data offset,
        data length, kind)."""
        data = open(path, "rb").read()
        if data[:8] != b"CKPTSTRM":
            raise TestFailure(f"{path}: no stream magic")
        off, out = 8, []
        first = True
        while off < len(data):
            (n,) = struct.unpack_from("<I", data, off)
            msg = data[off + 4:off + 4 + n]
            fields = parse_proto(msg)
            length = 0 if first else fields.get(4, 0)
            out.append((off, msg, off + 4 + n, length, None if first else fields.get(2, 0)))
            off += 4 + n + length + 8
            first = False
        return data, out

    def stream_damaged(self, damage, must_say, what):
        """dump --stream into a file; each damaged copy refused by restore --stream, nothing left."""
        self.spawn_program()
        self.wait_ready()
        stream_file = os.path.join(self.work, "dump.stream")
        self.engine("dump", "-t", str(self.root), "--stream", stream_file, *self.compress_args())
        self.wait_gone(self.pids)
        data, records = self.stream_records(stream_file)
        copy = os.path.join(self.work, "damaged.stream")
        count = 0
        for name, damaged in damage(data, records):
            with open(copy, "wb") as f:
                f.write(damaged)
            line = self.expect_failure(["restore", "--stream", copy, "--detach"], "stream", f"{what} {name}",
                                       timeout=REFUSAL_TIMEOUT)
            says = must_say(name) if callable(must_say) else must_say
            if not any(m in line for m in ([says] if isinstance(says, str) else says)):
                raise TestFailure(f"{what} {name}: the message does not say {says!r}: {line}")
            self.expect_nothing_restored(f"{what} {name}")
            count += 1
        if count == 0:
            raise TestFailure("nothing to damage in the stream")
        return f"PASS ({count} damaged streams)"

    def neg_stream_truncated(self):
        def cuts(data, records):
            meta = records[1]
            pages = [r for r in records if r[4] in (PAGES, PAGE_BLOCK)]
            yield "in the metadata", data[:meta[2] + meta[3] // 2]
            yield "in the page data", data[:pages[-1][2] + max(pages[-1][3] // 2, 1)]
            yield "before the trailer", data[:records[-1][0]]
        return self.stream_damaged(cuts, "truncated stream", "stream cut")

    def neg_stream_flipped(self):
        def flips(data, records):
            for r in records:
                if r[4] in (PAGES, PAGE_BLOCK) and r[3] > 0:
                    at = r[2] + r[3] // 2
                    yield f"page data at {at}", data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]
        return self.stream_damaged(flips, "checksum mismatch", "flipped byte")

    def resealed(self, data, r, at):
        """data with the byte at `at` (inside record r) flipped and r's checksum made again:
        a stream forged, not damaged."""
        data = data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]
        end = r[2] + r[3]
        body = os.path.join(self.work, "record")
        with open(body, "wb") as f:
            f.write(data[r[0]:end])
        out = subprocess.run([self.args.image_edit, "xxh3", body], capture_output=True, text=True, check=True)
        return data[:end] + struct.pack("<Q", int(out.stdout)) + data[end + 8:]

    def reframed(self, data, r, msg):
        """data with record r's frame message replaced by msg, its data kept, its checksum made
        again."""
        frame = struct.pack("<I", len(msg)) + msg + data[r[2]:r[2] + r[3]]
        body = os.path.join(self.work, "record")
        with open(body, "wb") as f:
            f.write(frame)
        out = subprocess.run([self.args.image_edit, "xxh3", body], capture_output=True, text=True, check=True)
        return data[:r[0]] + frame + struct.pack("<Q", int(out.stdout)) + data[r[2] + r[3] + 8:]

    def neg_stream_compressed(self):
        """dump --compress --stream (run with mem_private): its blocks of page data (PAGE_BLOCK
        records) damaged or forged as their user could, each refused at restore --stream, nothing
        left: a zstd frame's byte flipped (as is, then resealed), a block dropped, a frame said
        to be the block as is, the stream said to be of version 2 (which has no blocks)."""
        if not self.args.image_edit:
            raise TestFailure("stream-compressed needs --image-edit")
        self.args.compress = True
        says = {"frame flipped": "checksum mismatch", "block dropped": "stream is corrupt",
                "frame said stored as is": "stored as is in", "stream version 2": "stream of version 2",
                # Caught by zstd, or by the block's checksum once decompressed.
                "frame flipped, resealed": ("(stream is corrupt): refused", "checksum mismatch in block")}

        def forged(data, records):
            frames = [r for r in records[1:] if r[4] == PAGE_BLOCK and parse_proto(r[1]).get(8)]
            if not frames:
                raise TestFailure("dump --compress --stream sent no block as a zstd frame")
            r = frames[0]
            at = r[2] + r[3] // 2
            yield "frame flipped", data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]
            yield "frame flipped, resealed", self.resealed(data, r, at)
            yield "block dropped", data[:r[0]] + data[r[2] + r[3] + 8:]
            if not r[1].endswith(b"\x40\x01"):
                raise TestFailure(f"a zstd block's frame does not end with its zstd field: {r[1]!r}")
            yield "frame said stored as is", self.reframed(data, r, r[1][:-2])
            h = records[0]
            if h[1][:1] != b"\x08":
                raise TestFailure("stream header does not start with its version")
            yield "stream version 2", self.reframed(data, h, b"\x08\x02" + h[1][2:])
        return self.stream_damaged(forged, lambda name: says[name], "compressed stream")

    def neg_stream_forged_sums(self):
        """Page data flipped and block checksums forged, each record resealed (its stream
        checksum right): caught by the block checksums that follow the page data, once the
        pages are in place; the tree is killed."""
        if not self.args.image_edit:
            raise TestFailure("stream-forged-sums needs --image-edit")
        def forged(data, records):
            for r in records[1:]:
                if r[4] == PAGES and r[3] > 0:
                    yield "page data flipped, resealed", self.resealed(data, r, r[2] + r[3] // 2)
                if r[4] == PAGE_SUMS and r[3] > 0:
                    yield "block checksum forged, resealed", self.resealed(data, r, r[2] + r[3] - 1)
        return self.stream_damaged(forged, "checksum mismatch in block", "forged")

    def neg_stream_no_sums(self):
        """The block checksums after a process's page data left out."""
        def dropped(data, records):
            for r in records[1:]:
                if r[4] == PAGE_SUMS:
                    yield "block checksums dropped", data[:r[0]] + data[r[2] + r[3] + 8:]
        return self.stream_damaged(dropped, "no block checksums after the page data", "stream")

    def neg_stream_forged_name(self):
        def forged(data, records):
            for r in records[1:]:
                name = parse_proto(r[1]).get(1, b"")
                if len(name) < 4:
                    continue
                for new in (b"../" + name[3:], name[:1] + b"/" + name[2:], b".."):
                    new = new[:len(name)].ljust(len(name), b".") if new != b".." else new
                    msg = r[1].replace(b"\x0a" + bytes([len(name)]) + name, b"\x0a" + bytes([len(new)]) + new, 1)
                    frame = struct.pack("<I", len(msg)) + msg
                    yield new.decode(), data[:r[0]] + frame + data[r[0] + 4 + len(r[1]):]
                return
        return self.stream_damaged(forged, "outside its folder", "record renamed")

    def neg_stream_version(self):
        def other(data, records):
            h = records[0]
            msg = b"\x08\x63" + h[1][2:]  # stream_version 99 (field 1, kept first by the writer)
            if h[1][:1] != b"\x08":
                raise TestFailure("stream header does not start with its version")
            yield "stream version 99", data[:h[0]] + struct.pack("<I", len(msg)) + msg + data[h[0] + 4 + len(h[1]):]
        return self.stream_damaged(other, "version 99", "other version")

    def restore_in_new_pidns(self, images, what, check_root=True):
        """restore --new-pidns --detach of images: (host pid of the root, its init). With
        check_root, the root must have the dumped root's pid in its own namespace."""
        pidfile = os.path.join(self.work, "restore.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        stdout = self.new_stdout_pipe()
        argv = ["restore", "-D", images, "--new-pidns", "--detach", "--pidfile", pidfile]
        self.engine_pass_fds(argv + self.inherit_args() + self.shell_job_args(), stdout)
        try:
            host_root = int(open(pidfile).read().strip())
        except (OSError, ValueError):
            raise TestFailure(f"{what}: no pid in the --pidfile")
        self.started.add(host_root)
        fields = status_fields(host_root)
        nspid = [int(p) for p in fields["NSpid"].split()]
        if check_root and (len(nspid) < 2 or nspid[-1] != self.root):
            raise TestFailure(f"{what}: the restored root (host pid {host_root}) has NSpid {nspid}, "
                              f"expected its own namespace with pid {self.root}")
        init = int(fields["PPid"])
        self.started.update(tree_pids(init))
        return host_root, init

    def check_copy(self, host_root, init, what, problem=None):
        """Asks a copy restored in a new pid namespace for its check: it must pass (its init
        exits with the root's status). problem: what else is wrong with it, said either way."""
        if os.path.exists(self.result):
            os.unlink(self.result)
        os.kill(host_root, signal.SIGTERM)
        st = self.reaper.wait(init, VERDICT_TIMEOUT)
        verdict = open(self.result).read().strip() if os.path.exists(self.result) else ""
        if verdict != "PASS" or st is None or exit_code(st) != 0:
            raise TestFailure(f"{what}: {verdict or 'no verdict'} (its init: {describe_status(st)})"
                              + (f"; {problem}" if problem else ""))
        if problem:
            raise TestFailure(f"{what} passed its checks, but {problem}")
        if self.args.external_stdio:
            self.check_external_output(what)
        if self.args.shell_job:
            self.check_tty_output(what)

    def pids_in_own_namespace(self, host_root):
        """Every pid and tid of the tree at host_root as its own pid namespace sees them, or a
        reason why that cannot be said."""
        seen = []
        for p in tree_pids(host_root):
            try:
                seen.append(int(status_fields(p)["NSpid"].split()[-1]))
            except (OSError, KeyError, ValueError) as e:
                return None, f"host pid {p}: no NSpid ({e})"
        return sorted(seen), None

    def mode_new_pidns_twice(self):
        """A tree restored in a new pid namespace is dumped there and restored in another new
        pid namespace (the Slurm agent's periodic checkpoints after a restart): it must get
        the pids it had at the first dump, not the ones the host gave its first copy."""
        self.start()
        self.dump(leave_running=True)
        original = (self.stdio_pipes[:], self.tty_master)
        first_root, first_init = self.restore_in_new_pidns(self.images, "first restore --new-pidns")
        first = tree_pids(first_init)
        if self.args.external_stdio:
            self.fd3_key = os.readlink(f"/proc/{first_root}/fd/3")  # the first copy's pipe
        second = self.images + "2"
        os.makedirs(second, exist_ok=True)
        self.engine("dump", "-t", str(first_root), "-D", second, "--leave-running", *self.shell_job_args(),
                    *(["--file-locks"] if self.args.file_locks else []),
                    *(["--link-remap"] if self.args.link_remap else []),
                    *(["--snapshot"] if self.args.snapshot else []))
        # The first copy ends as a failed job would: its whole namespace at once.
        os.kill(first_init, signal.SIGKILL)
        self.wait_gone(first)
        # Every pid checked after the program's own verdict, which says more when one is wrong.
        host_root, init = self.restore_in_new_pidns(second, "second restore --new-pidns", check_root=False)
        ns_pids, problem = self.pids_in_own_namespace(host_root)
        if problem is None and ns_pids != self.pids:
            problem = f"the pids inside its namespace are {ns_pids}, the dumped tree had {self.pids}"
        self.check_copy(host_root, init, "second copy in a new pid namespace", problem)
        self.stdio_pipes, self.tty_master = original
        self.check_verdict(what="original, after both copies ran")
        return "PASS"

    def mode_twice(self):
        self.start()
        self.dump()
        self.restore()
        self.prepare_external()
        second = self.images + "2"
        self.dump(images=second)
        self.restore(images=second)
        self.check_verdict(what="after the second restore")
        return "PASS"

    # ---- negative tests ----------------------------------------------------------------
    def expect_failure(self, argv, must_name, what, timeout=ENGINE_TIMEOUT, prefix=()):
        code, stderr = self.engine(*argv, check=False, timeout=timeout, prefix=prefix)
        lines = [line for line in stderr.splitlines() if line.strip()]
        if code == 0:
            raise TestFailure(f"{what}: ckpt-engine {argv[0]} succeeded")
        if len(lines) != 1:
            raise TestFailure(f"{what}: expected one line on stderr, got {len(lines)}: {stderr!r}")
        if must_name not in lines[0]:
            raise TestFailure(f"{what}: message does not name {must_name!r}: {lines[0]}")
        return lines[0]

    def expect_nothing_restored(self, what):
        self.reaper.poll()  # a process the engine killed may have come to us to be reaped
        alive = [p for p in self.pids if pid_exists(p)]
        if alive:
            self.kill_pids(alive)
            raise TestFailure(f"{what}: failed restore left pids {alive} behind")
        for p in self.pids:
            self.reaper.status.pop(p, None)

    def dumped_and_gone(self):
        self.spawn_program()
        self.wait_ready()
        self.dump()

    def neg_missing_dir(self):
        missing = os.path.join(self.work, "no-such-dir")
        self.expect_failure(["restore", "-D", missing, "--detach"], "no-such-dir", "missing dir")
        return "PASS"

    def damaged_copies(self, damage):
        for name in sorted(os.listdir(self.images)):
            path = os.path.join(self.images, name)
            if not os.path.isfile(path) or os.path.getsize(path) == 0:
                continue
            copy = os.path.join(self.work, "damaged")
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(self.images, copy)
            damage(os.path.join(copy, name))
            yield name, copy

    def refused_damaged_images(self, damage, what):
        """Each image file damaged in turn: restore must refuse it, name it, leave nothing."""
        self.dumped_and_gone()
        count = 0
        for name, copy in self.damaged_copies(damage):
            self.expect_failure(["restore", "-D", copy, "--detach"], name, f"{what} {name}")
            self.expect_nothing_restored(f"{what} {name}")
            count += 1
        if count == 0:
            raise TestFailure("dump wrote no non-empty image file")
        return f"PASS ({count} image files)"

    def neg_truncated_image(self):
        return self.refused_damaged_images(
            lambda path: os.truncate(path, os.path.getsize(path) // 2), "truncated")

    def neg_flipped_byte(self):
        def flip(path):
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.seek(size // 2)
                b = f.read(1)
                f.seek(size // 2)
                f.write(bytes([b[0] ^ 0x10]))

        return self.refused_damaged_images(flip, "flipped byte in")

    def neg_file_changed(self):
        """A file behind a mapping changed since the dump (mtime): refused, unless overridden."""
        self.start()
        self.dump()
        changed = [os.path.join(d, f) for d, _, files in os.walk(self.result + ".data") for f in files]
        if not changed:
            raise TestFailure("the program has no data file to change")
        st = os.stat(changed[0])
        os.utime(changed[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))
        name = os.path.basename(changed[0])
        self.expect_failure(["restore", "-D", self.images, "--detach"], name, f"changed {name}")
        self.expect_nothing_restored(f"changed {name}")
        self.restore(extra=["--skip-file-checks"])
        self.check_verdict(what="after restore with --skip-file-checks")
        return "PASS"

    def neg_fifo_changed(self):
        """fd_fifos's FIFOs after the dump: one removed, one replaced by a regular file, one
        holding other data through an open of its own: each refused by name, nothing left."""
        self.start()
        self.dump()
        data = self.result + ".data"
        link, self_fifo = os.path.join(data, "link.fifo"), os.path.join(data, "self.fifo")
        os.rename(link, link + ".away")
        self.expect_failure(["restore", "-D", self.images, "--detach"], "no longer exists", "removed FIFO")
        self.expect_nothing_restored("removed FIFO")
        os.rename(link + ".away", link)
        os.rename(self_fifo, self_fifo + ".away")
        open(self_fifo, "w").close()
        self.expect_failure(["restore", "-D", self.images, "--detach"], "no longer a FIFO", "replaced FIFO")
        self.expect_nothing_restored("replaced FIFO")
        os.unlink(self_fifo)
        os.rename(self_fifo + ".away", self_fifo)
        holder = os.open(self_fifo, os.O_RDWR | os.O_NONBLOCK)
        try:
            os.write(holder, b"someone else's data")
            self.expect_failure(["restore", "-D", self.images, "--detach"], "other than", "FIFO with other data")
            self.expect_nothing_restored("FIFO with other data")
        finally:
            os.close(holder)
        self.restore()
        self.check_verdict(what="after restore with the FIFOs as they were")
        return "PASS"

    def refused_edited_images(self, edit, value, must_say, what):
        """Well-formed images (valid checksums) that restore must refuse: image_edit makes them."""
        if not self.args.image_edit:
            raise TestFailure("--image-edit is needed for this test")
        self.dumped_and_gone()
        count = 0
        names = ["inventory.img"] if edit == "arch" else sorted(os.listdir(self.images))
        for name in names:
            copy = os.path.join(self.work, "edited")
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(self.images, copy)
            subprocess.run([self.args.image_edit, edit, os.path.join(copy, name), str(value)],
                           check=True)
            line = self.expect_failure(["restore", "-D", copy, "--detach"],
                                       name if edit == "version" else "edited", f"{what} {name}")
            says = must_say(name) if callable(must_say) else must_say
            if not any(m in line for m in ([says] if isinstance(says, str) else says)):
                raise TestFailure(f"{what} {name}: the message does not say {says!r}: {line}")
            self.expect_nothing_restored(f"{what} {name}")
            count += 1
        return f"PASS ({count} image files)"

    def neg_other_version(self):
        return self.refused_edited_images("version", 99, "version", "format version 99 in")

    def neg_other_arch(self):
        return self.refused_edited_images("arch", 2, "architecture", "aarch64 recorded in")

    def neg_pid_taken(self):
        self.spawn_program()
        self.wait_ready()
        self.dump(leave_running=True)
        self.expect_failure(["restore", "-D", self.images, "--detach"], str(self.root),
                            "restore while the original runs")
        self.check_verdict(what="original after the refused restore")
        return "PASS"

    def neg_dump_nonexistent(self):
        pid_max = int(open("/proc/sys/kernel/pid_max").read())
        free = next(p for p in range(pid_max - 1, 300, -1) if not pid_exists(p))
        self.expect_failure(["dump", "-t", str(free), "-D", self.images], str(free),
                            "dump of a nonexistent pid")
        return "PASS"

    def expect_tree_unharmed(self, what):
        """After a failed dump: same pids, none traced any more, and the program passes."""
        if tree_pids(self.root) != self.pids:
            raise TestFailure(f"{what}: the tree changed")
        for p in self.pids:
            st = proc_state(p)
            if st is None or st[1] != 0:
                raise TestFailure(f"{what}: pid {p} is gone or still traced")
        self.check_verdict(what=f"tree after {what}")

    def neg_dump_fails(self):
        """A dump refused before it starts (the image directory cannot be made)."""
        self.start()
        blocker = os.path.join(self.work, "not-a-dir")
        open(blocker, "w").close()
        self.expect_failure(["dump", "-t", str(self.root), "-D", blocker + "/images"], "not-a-dir",
                            "dump into an impossible directory")
        self.expect_tree_unharmed("a refused dump")
        return "PASS"

    def neg_unsupported_fd(self):
        """A tree holding an fd of a kind the engine cannot dump: a clear error, tree unharmed."""
        self.start()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], "unsupported",
                                   "dump of an unsupported fd kind")
        if "fd 9" not in line:
            raise TestFailure(f"the error does not name fd 9: {line}")
        self.expect_tree_unharmed("a dump refused for an unsupported fd")
        return "PASS"

    def neg_shared_fd_table(self):
        """Two processes sharing one fd table (clone(CLONE_FILES)) that neither has from the
        other nor from a parent sharing it (fd_shared_orphans: their parent exited, they were
        reparented to the root): no clone from a restored parent can make that table again, so
        the dump refuses it, naming both pids, and the tree runs on.
        Before: dumped and restored as two tables, an fd opened by one no longer the other's."""
        self.start()
        others = [p for p in self.pids if p != self.root]
        if len(others) != 2:
            raise TestFailure(f"expected the root and two orphans, the tree is {self.pids}")
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], "fd table",
                                   "dump of processes sharing one fd table", timeout=REFUSAL_TIMEOUT)
        if any(f"pid {p}" not in line for p in others):
            raise TestFailure(f"the refusal does not name pids {others}: {line}")
        self.expect_tree_unharmed("a dump refused for a shared fd table")
        return "PASS"

    def neg_refused_fd(self):
        """An fd the engine could not restore exactly (fd_deleted_linked: a deleted name of a file
        linked elsewhere; fd_dir_removed: a directory removed after it was opened;
        fd_unix_rights: an fd in flight on an AF_UNIX socket; fd_unix_outside: a connection
        pending on a listening AF_UNIX socket from outside the tree; fd_unix_creds_gone:
        credentials of a message queued (SCM_CREDENTIALS) by a child reaped since): the dump
        refuses it naming the pid and fd 9, and the tree runs on."""
        self.start()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], f"pid {self.root}",
                                   "dump of an fd that cannot be restored exactly")
        if "fd 9" not in line:
            raise TestFailure(f"the refusal does not name fd 9: {line}")
        if os.path.basename(self.args.program) == "fd_deleted_linked" and "--link-remap" not in line:
            raise TestFailure(f"the refusal does not say that --link-remap keeps such a file: {line}")
        if os.path.basename(self.args.program).startswith("fd_unix_creds") and "SCM_CREDENTIALS" not in line:
            raise TestFailure(f"the refusal does not name the credentials (SCM_CREDENTIALS): {line}")
        if os.path.basename(self.args.program) == "udp_queued" and "SO_REUSEPORT" not in line:
            raise TestFailure(f"the refusal does not name SO_REUSEPORT: {line}")
        if os.path.basename(self.args.program) == "sock_ebpf_filter" and "eBPF socket filter" not in line:
            raise TestFailure(f"the refusal does not name the eBPF socket filter: {line}")
        if os.path.basename(self.args.program) == "fd_mqueue" and "POSIX message queue" not in line:
            raise TestFailure(f"the refusal does not name the POSIX message queue: {line}")
        self.expect_tree_unharmed("a dump refused for an fd")
        return "PASS"

    def neg_tcp_refused(self):
        """An established TCP connection dumped without --tcp-established (tcp_established,
        with its peer): the dump refuses it naming the pid, fd 20 and the option; the tree
        runs on and its connections carry on, the peer noticing nothing."""
        self.start()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], f"pid {self.root}",
                                   "dump of an established TCP connection without --tcp-established")
        if "fd 20" not in line or "--tcp-established" not in line:
            raise TestFailure(f"the refusal does not name fd 20 and --tcp-established: {line}")
        self.expect_tree_unharmed("a dump refused for a TCP connection")
        self.finish_peer()
        return "PASS"

    def neg_leave_running_original(self):
        """dump --leave-running, then only the original's check (no restore): for programs
        whose copy cannot be restored after the original ran on (tcp_established: its peer
        has closed the connections by then)."""
        self.start()
        self.dump(leave_running=True)
        self.check_verdict(what="original after dump --leave-running")
        if self.peer:
            self.finish_peer()
        return "PASS"

    def neg_tcp_forged(self):
        """Images of established TCP connections (tcp_established) edited as their user could:
        each forged field is refused at restore ("image is corrupt"), nothing is restored."""
        if not self.args.image_edit:
            raise TestFailure("--image-edit is needed for this test")
        self.dumped_and_gone()
        edits = [(r"mss: ", "unsent: 99999999 mss: "), (r"snd_wscale: \d+", "snd_wscale: 15"),
                 (r"family: 2\b", "family: 1"), (r"port: \d+", "port: 70000"), (r"mss: \d+", "mss: 0"),
                 (r"state: ESTABLISHED", "state: ESTABLISHED backlog: 7"), (r"mss: ", "tcp_state: 3 mss: ")]
        name = f"fds-{self.root}.img"
        count = 0
        for pattern, forged in edits:
            copy = self.forged_copy(name, pattern, forged)
            line = self.expect_failure(["restore", "-D", copy, "--detach"], "image is corrupt", f"forged {forged!r}")
            if "TCP" not in line:
                raise TestFailure(f"forged {forged!r}: the refusal does not say TCP: {line}")
            self.expect_nothing_restored(f"forged {forged!r}")
            count += 1
        return f"PASS ({count} forged fields refused)"

    def neg_udp_forged(self):
        """Images of UDP sockets with datagrams queued (sock_udp) edited as their user could: a
        datagram sent to an address of another host (it would be sent again there), to another
        address than its socket's, to another port: each refused at restore naming the datagram,
        nothing restored; the untouched images then restore and pass."""
        if not self.args.image_edit:
            raise TestFailure("--image-edit is needed for this test")
        self.dumped_and_gone()
        edits = [(r'\\377\\377\\177\\000\\000\\002"', r'\\377\\377\\010\\010\\010\\010"', "not an address of this host"),
                 (r'(to \{\s*addr: )"\\177\\000\\000\\001"', r'\1"\\177\\000\\000\\003"', "image is corrupt"),
                 (r'(to \{\s*addr: "[^"]*"\s*port: )\d+', r"\g<1>1", "image is corrupt")]
        name = f"fds-{self.root}.img"
        for pattern, forged, says in edits:
            copy = self.forged_copy(name, pattern, forged)
            line = self.expect_failure(["restore", "-D", copy, "--detach"], says, f"forged {forged!r}")
            if "queued datagram" not in line:
                raise TestFailure(f"forged {forged!r}: the refusal does not name the queued datagram: {line}")
            self.expect_nothing_restored(f"forged {forged!r}")
        self.restore()
        self.check_verdict(what="the untouched images after the refused restores")
        return f"PASS ({len(edits)} forged datagrams refused)"

    def forged_copy(self, name, pattern, forged):
        """A copy of the images in which image `name` has its first match of `pattern` replaced
        by `forged` (through its text form), as the images' user could."""
        copy = os.path.join(self.work, "edited")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.images, copy)
        path = os.path.join(copy, name)
        text = subprocess.run([self.args.image_edit, "totext", path], capture_output=True, text=True,
                              check=True).stdout
        edited, n = re.subn(pattern, forged, text, count=1)
        if n != 1:
            raise TestFailure(f"{name} has no {pattern!r} to forge")
        subprocess.run([self.args.image_edit, "fromtext", path], input=edited, text=True, check=True)
        return copy

    def neg_ipc_refused(self):
        """System V IPC state of the tree's own IPC namespace that cannot be restored
        (ipc_sysv_undo: a semaphore adjustment held with SEM_UNDO): the dump refuses it, naming
        the pid and SEM_UNDO, and the tree runs on."""
        self.start()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], f"pid {self.root}",
                                   "dump of a tree holding SEM_UNDO adjustments")
        if "SEM_UNDO" not in line:
            raise TestFailure(f"the refusal does not name SEM_UNDO: {line}")
        self.expect_tree_unharmed("a dump refused for SEM_UNDO")
        return "PASS"

    def neg_ipc_forged(self):
        """Images of a tree with its own IPC namespace (ipc_sysv) edited as their user could:
        each forged field of ipc.img, and an attachment naming no segment, is refused at restore
        ("image is corrupt"), nothing is restored."""
        if not self.args.image_edit:
            raise TestFailure("--image-edit is needed for this test")
        self.dumped_and_gone()
        edits = [("ipc.img", r"size: 65536", "size: 0"), ("ipc.img", r"mode: 416", "mode: 4095"),
                 ("ipc.img", r"values: 42", "values: 40000"), ("ipc.img", r"type: 2\b", "type: -2"),
                 ("ipc.img", r"offset: 409600", "offset: 409601"), ("ipc.img", r"qbytes: 20000", "qbytes: 10"),
                 ("ipc.img", r"sem: 128", ""), ("ipc.img", r"id: (\d+)\n", "id: -5\n"),
                 (f"mm-{self.root}.img", r"shm_id: \d+", "shm_id: 999999")]
        count = 0
        for name, pattern, forged in edits:
            copy = self.forged_copy(name, pattern, forged)
            self.expect_failure(["restore", "-D", copy, "--detach"], "image is corrupt", f"forged {forged!r}")
            self.expect_nothing_restored(f"forged {forged!r}")
            count += 1
        return f"PASS ({count} forged fields refused)"

    def neg_batch_failed(self):
        """A tree (tree) whose last process's mm image is forged as its user could: a file
        mapping given MADV_WIPEONFORK (bit 8), which the kernel refuses for anything but
        private anonymous memory. The madvise is one of a batch of injected calls
        (syscall_batch.h): the restore must fail naming that call (madvise, its place in the
        batch, EINVAL) and the pid and mapping, with nothing left running, though the
        processes before it were made; the untouched images then restore and pass."""
        if not self.args.image_edit:
            raise TestFailure("--image-edit is needed for this test")
        self.dumped_and_gone()
        if len(self.pids) < 2:
            raise TestFailure(f"the tree has {len(self.pids)} process(es); the test needs a child")
        victim = max(p for p in self.pids if p != self.root)
        copy = self.forged_copy(f"mm-{victim}.img", r"kind: FILE\b", "kind: FILE madvise: 8")
        line = self.expect_failure(["restore", "-D", copy, "--detach"], f"pid {victim}: mapping ", "forged madvise")
        for must in ("madvise (batched call ", ": syscall ", "Invalid argument"):
            if must not in line:
                raise TestFailure(f"the refusal does not name {must!r}: {line}")
        self.expect_nothing_restored("a batched call failed")
        self.restore()
        self.check_verdict(what="the untouched images after the failed restore")
        return "PASS"

    def neg_refused_cwd(self):
        """A cwd removed (rmdir) after it was entered (cwd_removed): the dump refuses it naming
        the pid and the cwd, and the tree runs on."""
        self.start()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], f"pid {self.root}",
                                   "dump of a removed cwd")
        if "cwd" not in line:
            raise TestFailure(f"the refusal does not name the cwd: {line}")
        self.expect_tree_unharmed("a dump refused for a removed cwd")
        return "PASS"

    def neg_unsupported_mapping(self):
        """A mapping the engine cannot restore exactly (mem_deleted_linked: a MAP_SHARED mapping
        of a deleted name of a file still linked elsewhere): the dump refuses it, naming the
        pid and the mapping, and the tree runs on."""
        self.start()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], f"pid {self.root}",
                                   "dump of a mapping that cannot be restored exactly")
        if "mapping" not in line:
            raise TestFailure(f"the refusal does not name the mapping: {line}")
        if os.path.basename(self.args.program) == "mem_deleted_linked" and "--link-remap" not in line:
            raise TestFailure(f"the refusal does not say that --link-remap keeps such a file: {line}")
        if os.path.basename(self.args.program) == "ipc_sysv_host" and "unshare -i" not in line:
            raise TestFailure(f"the refusal does not say that the tree needs its own IPC namespace: {line}")
        if os.path.basename(self.args.program).startswith("mem_aio") and "AIO context" not in line:
            raise TestFailure(f"the refusal does not name the AIO context: {line}")
        if os.path.basename(self.args.program) == "mem_secret" and "memfd_secret" not in line:
            raise TestFailure(f"the refusal does not name the memfd_secret memory: {line}")
        self.expect_tree_unharmed("a dump refused for a mapping")
        return "PASS"

    def neg_fd_owner_outside(self):
        """An fd whose signal owner (F_SETOWN) is outside the tree: the dump refuses it, naming
        the fd, and the tree runs on (fd_owner_outside: fd 9, owned by the runner)."""
        self.start()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], "outside the dumped tree",
                                   "dump of an fd owned from outside the tree")
        if "fd 9" not in line or f"process {os.getpid()}" not in line:
            raise TestFailure(f"the error does not name fd 9 and its owner {os.getpid()}: {line}")
        self.expect_tree_unharmed("a dump refused for an fd owned from outside")
        return "PASS"

    def neg_pidfd_reaped(self):
        """A pidfd of a child that exited and was reaped (pidfd_reaped, fd 9): no restored
        process can be that one again, so the dump refuses it naming the pid and the fd.
        Before: refused only as an "unsupported fd kind"."""
        self.start()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], "reaped",
                                   "dump of a pidfd of a reaped child")
        if "fd 9" not in line or f"pid {self.root}" not in line:
            raise TestFailure(f"the error does not name pid {self.root} and fd 9: {line}")
        self.expect_tree_unharmed("a dump refused for a pidfd of a reaped child")
        return "PASS"

    def neg_pidfd_outside(self):
        """A pidfd of a process outside the tree (pidfd_outside: fd 9, of the runner): the dump
        refuses it naming pid, fd and the process named, and the tree runs on."""
        self.start()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], "outside the dumped tree",
                                   "dump of a pidfd of a process outside the tree")
        if "fd 9" not in line or f"process {os.getpid()}" not in line or f"pid {self.root}" not in line:
            raise TestFailure(f"the error does not name pid {self.root}, fd 9 and process {os.getpid()}: {line}")
        self.expect_tree_unharmed("a dump refused for a pidfd of a process outside the tree")
        return "PASS"

    def start_root_and_child(self):
        """start() for a program of a root and one child: the child's pid."""
        self.start()
        others = [p for p in self.pids if p != self.root]
        if len(others) != 1:
            raise TestFailure(f"expected the root and one child, the tree is {self.pids}")
        return others[0]

    def neg_nested_pidns(self):
        """A tree with a process in a pid namespace below the root's (pidns_nested; built with
        UNSHARED, a process whose children would go to one): the dump refuses it, naming
        that process, and the tree runs on.
        Before: the process was recorded with the host's numbers and restored as an ordinary
        member of the root's namespace, with other pids than it saw (or, unshared, without
        the namespace its children were to have)."""
        child = self.start_root_and_child()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], f"pid {child}",
                                   "dump of a tree with a nested pid namespace", timeout=REFUSAL_TIMEOUT)
        if "nested pid namespace" not in line:
            raise TestFailure(f"the refusal does not say 'nested pid namespace': {line}")
        self.expect_tree_unharmed("a dump refused for a nested pid namespace")
        return "PASS"

    def neg_traced(self):
        """A child its parent traces (traced_child: PTRACE_TRACEME): the dump refuses it naming
        the child and its tracer, and the tree runs on, the child still traced by the root.
        Before: "ptrace(SEIZE) ... Operation not permitted", naming neither."""
        child = self.start_root_and_child()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], f"tid {child}",
                                   "dump of a tree with a traced child", timeout=REFUSAL_TIMEOUT)
        if f"traced by pid {self.root}" not in line:
            raise TestFailure(f"the refusal does not name the tracer, pid {self.root}: {line}")
        if tree_pids(self.root) != self.pids:
            raise TestFailure("the tree changed after a refused dump")
        self.check_verdict(what="tree after a dump refused for a traced child")
        return "PASS"

    def neg_seccomp_strict(self):
        """A child in seccomp's strict mode (seccomp_strict): the dump refuses it naming the
        child before injecting anything, and the child runs on (it exits cleanly at the check).
        Before: the dump's first injected call made the kernel kill it."""
        child = self.start_root_and_child()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], f"pid {child}",
                                   "dump of a tree with a process in strict seccomp mode", timeout=REFUSAL_TIMEOUT)
        if "strict" not in line:
            raise TestFailure(f"the refusal does not say 'strict': {line}")
        self.expect_tree_unharmed("a dump refused for strict seccomp mode")
        return "PASS"

    def neg_seccomp_thread(self):
        """A thread with a seccomp filter of its own besides the ones its process shares
        (seccomp_filters with CKPT_TEST_THREAD_FILTER=1): the dump refuses it naming the thread,
        and the tree runs on. Before: only the leader's filters were saved, and the restored
        thread came back without its own."""
        self.spawn_program({"CKPT_TEST_THREAD_FILTER": "1"})
        self.wait_ready()
        thread = sorted(int(t) for t in os.listdir(f"/proc/{self.root}/task"))[-1]
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], f"thread {thread}",
                                   "dump of a thread with a seccomp filter of its own", timeout=REFUSAL_TIMEOUT)
        if "filters of its own" not in line:
            raise TestFailure(f"the refusal does not say why: {line}")
        self.expect_tree_unharmed("a dump refused for a thread's own seccomp filter")
        return "PASS"

    def neg_seccomp_unsuspended(self):
        """seccomp_filters dumped by an engine that may not suspend filters for its own calls
        (CKPT_NO_SUSPEND_SECCOMP=1, as one without CAP_SYS_ADMIN): the filter kills the process
        at the dump's first injected prctl, and the dump fails at once saying the process
        ended. Before: the engine waited forever for the leader, whose end the kernel reports
        only once the group's other threads, traced, are reaped."""
        self.spawn_program()
        self.wait_ready()
        self.expect_failure(["dump", "-t", str(self.root), "-D", self.images], "exited while traced",
                            "dump of a process whose filter kills the dump's calls", timeout=REFUSAL_TIMEOUT,
                            prefix=(shutil.which("env") or "/usr/bin/env", "CKPT_NO_SUSPEND_SECCOMP=1"))
        st = self.reaper.wait(self.root, VERDICT_TIMEOUT)
        self.started.discard(self.root)
        if st is None or not os.WIFSIGNALED(st) or os.WTERMSIG(st) != signal.SIGSYS:
            raise TestFailure(f"the process was not killed by its filter: {st}")
        return "PASS"

    def neg_shared_mm(self):
        """A child sharing the root's address space without being its thread (shared_mm:
        clone(CLONE_VM)), or its cwd, root and umask (shared_fs: CLONE_FS): the dump refuses
        it naming both pids. Built with VFORK (shared_mm_vfork), the root waits in the kernel
        for its vfork child, where no interrupt stops it: the dump, with --timeout 1, fails
        within it naming the root and the vfork wait. Either way the tree runs on.
        Before: the shared ones were dumped and restored unshared (silently wrong); the vfork
        parent hung the dump until its child exited."""
        child = self.start_root_and_child()
        vfork = self.args.program.endswith("_vfork")
        argv = ["dump", "-t", str(self.root), "-D", self.images] + (["--timeout", "1"] if vfork else [])
        line = self.expect_failure(argv, f"pid {self.root}", "dump of a tree sharing what threads share",
                                   timeout=REFUSAL_TIMEOUT)
        if vfork:
            if "did not stop within 1000 ms" not in line or "vfork" not in line:
                raise TestFailure(f"the failure does not name the 1 s timeout and the vfork wait: {line}")
        else:
            shared = "one cwd, root and umask" if self.args.program.endswith("shared_fs") else "one address space"
            if f"pid {child}" not in line or f"share {shared}" not in line:
                raise TestFailure(f"the refusal does not name pid {child} and {shared} shared: {line}")
        self.expect_tree_unharmed("a dump refused for a shared address space")
        return "PASS"

    # ---- image folders written by their user -----------------------------------------
    def replaced_copies(self, replace):
        """Copies of the dump with each of its files in turn removed and replace(path, name)d."""
        for name in sorted(os.listdir(self.images)):
            copy = os.path.join(self.work, "replaced")
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(self.images, copy, symlinks=True)
            path = os.path.join(copy, name)
            os.unlink(path)
            replace(path, name)
            yield name, copy

    def refused_replaced_files(self, replace, what):
        """Each file of a dump replaced in turn: restore refuses it by name, within seconds, and
        leaves nothing; show refuses it too if it reads it, and never hangs."""
        self.dumped_and_gone()
        count = 0
        for name, copy in self.replaced_copies(replace):
            self.expect_failure(["restore", "-D", copy, "--detach"], name, f"{what} {name}",
                                timeout=REFUSAL_TIMEOUT)
            self.expect_nothing_restored(f"{what} {name}")
            if name.endswith(".img") and not name.startswith("pages-"):  # what show decodes
                self.expect_failure(["show", copy], name, f"show: {what} {name}", timeout=REFUSAL_TIMEOUT)
            else:
                self.engine("show", copy, check=False, timeout=REFUSAL_TIMEOUT)
            count += 1
        if count == 0:
            raise TestFailure("dump wrote no file")
        return f"PASS ({count} files)"

    def neg_image_fifo(self):
        # Before: restore blocked for ever opening the FIFO (core-PID.img, the first replaced).
        return self.refused_replaced_files(lambda path, name: os.mkfifo(path), "FIFO as")

    def neg_image_devzero(self):
        # Before: restore read /dev/zero without end (core-PID.img first), memory growing,
        # until the timeout.
        return self.refused_replaced_files(lambda path, name: os.symlink("/dev/zero", path),
                                           "link to /dev/zero as")

    def neg_image_symlink(self):
        # Before: the link was followed and the restore succeeded from the copy (core-PID.img).
        elsewhere = os.path.join(self.work, "elsewhere")

        def link_to_copy(path, name):
            os.makedirs(elsewhere, exist_ok=True)
            shutil.copy2(os.path.join(self.images, name), os.path.join(elsewhere, name))
            os.symlink(os.path.join(elsewhere, name), path)

        return self.refused_replaced_files(link_to_copy, "link to a valid copy as")

    CANARY_PROCESS = r"""
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
# 4 MiB at address 0 (root may map there): an image written through /proc/PID/mem from
# offset 0 lands in it.
size = 4 << 20
if libc.mmap(0, size, 3, 0x10 | 0x02 | 0x20, -1, 0) not in (0, None):
    sys.exit("canary: cannot map address 0")
mem = os.open("/proc/self/mem", os.O_RDWR)
pattern = bytes(range(256)) * (size // 256)
os.pwrite(mem, pattern, 0)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
open(sys.argv[1], "w").close()
signal.sigwait([signal.SIGTERM])
sys.exit(0 if os.pread(mem, size, 0) == pattern else 3)
"""

    def neg_dump_symlinks(self):
        """Links planted at every name a dump writes: to a canary file outside the folder, and
        to /proc/PID/mem of a canary process outside the tree. The dump succeeds or fails
        cleanly, neither canary changes, the tree runs on.
        Before: both dumps "succeeded", leaving the links; each image opened with O_TRUNC
        through a link overwrote the canary file, and was written into the canary process's
        memory (at address 0, through /proc/PID/mem)."""
        self.start()
        self.dump(leave_running=True)
        names = sorted(os.listdir(self.images))
        canary_file = os.path.join(self.work, "canary")
        content = os.urandom(8192)
        ready = os.path.join(self.work, "canary.ready")
        canary = subprocess.Popen([sys.executable, "-c", self.CANARY_PROCESS, ready])
        self.started.add(canary.pid)
        deadline = time.monotonic() + READY_TIMEOUT
        while not os.path.exists(ready):
            self.reaper.poll()
            if canary.pid in self.reaper.status or time.monotonic() > deadline:
                raise TestFailure("the canary process did not start")
            time.sleep(0.02)
        problems = []
        for what, target in (("canary file", canary_file), ("canary process", f"/proc/{canary.pid}/mem")):
            with open(canary_file, "wb") as f:  # afresh, so that each round tells its own
                f.write(content)
            planted = os.path.join(self.work, "planted-" + what.split()[1])
            os.makedirs(planted)
            for name in names:
                os.symlink(target, os.path.join(planted, name))
            code, stderr = self.engine("dump", "-t", str(self.root), "-D", planted, "--leave-running",
                                       check=False, timeout=REFUSAL_TIMEOUT)
            lines = [line for line in stderr.splitlines() if line.strip()]
            if code != 0 and len(lines) != 1:
                problems.append(f"links to the {what}: the dump failed uncleanly: {stderr!r}")
            if code == 0:
                links = [n for n in os.listdir(planted) if not os.path.isfile(os.path.join(planted, n))
                         or os.path.islink(os.path.join(planted, n))]
                if links:
                    problems.append(f"links to the {what}: the dump left {links} as they were")
            with open(canary_file, "rb") as f:
                if f.read() != content:
                    problems.append(f"links to the {what}: the canary file changed")
            if tree_pids(self.root) != self.pids:
                problems.append(f"links to the {what}: the tree changed")
        os.kill(canary.pid, signal.SIGTERM)
        st = self.reaper.wait(canary.pid, VERDICT_TIMEOUT)
        if st is None or exit_code(st) != 0:
            problems.append(f"the canary process's memory changed ({describe_status(st)})")
        if problems:
            raise TestFailure("; ".join(problems))
        self.expect_tree_unharmed("dumps into planted links")
        return "PASS"

    def neg_compress_forged(self):
        """Compressed page data (dump --compress, run with mem_private) damaged or forged as its
        user could, the checksums of the bytes stored re-sealed where that is the point: a zstd
        frame cut short; the pages file cut; a byte of a frame flipped (as is, then re-sealed);
        a frame of the block's exact length but other content, and a block stored as is with
        other content (both caught by the checksum of the uncompressed block alone); frames
        declaring a huge length or none; page data 1 TiB longer, or a page shorter, than the
        page runs hold. Each refused at
        restore ("image is corrupt", or naming the pages file), fast, nothing restored."""
        if not self.args.image_edit:
            raise TestFailure("--image-edit is needed for this test")
        self.args.compress = True
        self.dumped_and_gone()
        name = f"pagemap-{self.root}.img"
        pm = self.page_maps(self.images)[name]
        pages, bs, data = pm["pages_file"], int(pm["block_size"]), int(pm["pages_bytes"])
        blocks = pm["blocks"]
        k = next((i for i, b in enumerate(blocks) if b.get("zstd")), None)
        if k is None:
            raise TestFailure(f"{name}: no block stored as a zstd frame to forge")
        want = min(bs, data - k * bs)
        offset, length = int(blocks[k].get("offset", 0)), int(blocks[k]["length"])
        with open(os.path.join(self.images, pages), "rb") as f:
            stored = f.read()
        frame = stored[offset:offset + length]

        def xxh3(b):
            tmp = os.path.join(self.work, "xxh3.tmp")
            with open(tmp, "wb") as f:
                f.write(b)
            return int(subprocess.run([self.args.image_edit, "xxh3", tmp], capture_output=True, text=True,
                                      check=True).stdout.split()[0])

        def zstd_frame(content, declared=None):
            """A zstd frame of raw blocks holding content, declaring length `declared`."""
            out = [struct.pack("<IBQ", 0xFD2FB528, 0xE0,  # 8-byte content size, single segment
                               len(content) if declared is None else declared)]
            pos = 0
            while True:
                chunk = content[pos:pos + 131072]
                pos += len(chunk)
                last = pos >= len(content)
                out += [((len(chunk) << 3) | int(last)).to_bytes(3, "little"), chunk]
                if last:
                    return b"".join(out)

        def forge(what, block=None, append=b"", cut=0, flip=None, fields=()):
            """A copy of the images: `append` added to the pages file (and to stored_bytes), `cut`
            bytes cut from its end, the byte at `flip` flipped; block k's fields replaced by
            `block` (a dict), top-level fields by `fields` (pairs of pattern and replacement)."""
            copy = os.path.join(self.work, "edited")
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(self.images, copy)
            with open(os.path.join(copy, pages), "r+b") as f:
                body = bytearray(f.read())
                if flip is not None:
                    body[flip] ^= 0x10
                body += append
                if cut:
                    del body[-cut:]
                f.seek(0)
                f.truncate()
                f.write(body)
            path = os.path.join(copy, name)
            text = subprocess.run([self.args.image_edit, "totext", path], capture_output=True, text=True,
                                  check=True).stdout
            groups = list(re.finditer(r"^blocks \{\n.*?^\}\n", text, re.M | re.S))
            if len(groups) != len(blocks):
                raise TestFailure(f"{name}: {len(groups)} blocks in its text form, {len(blocks)} in its JSON")
            if block is not None:
                g = groups[k]
                body_text = "".join(f"  {key}: {val}\n" for key, val in block.items())
                text = text[:g.start()] + "blocks {\n" + body_text + "}\n" + text[g.end():]
            if append:
                text, n = re.subn(r"^stored_bytes: (\d+)$", lambda m: f"stored_bytes: {int(m.group(1)) + len(append)}",
                                  text, flags=re.M)
                if n != 1:
                    raise TestFailure(f"{name}: no stored_bytes to forge")
            for pattern, repl in fields:
                text, n = re.subn(pattern, repl, text, count=1, flags=re.M)
                if n != 1:
                    raise TestFailure(f"{name}: no {pattern!r} to forge")
            subprocess.run([self.args.image_edit, "fromtext", path], input=text, text=True, check=True)
            return copy

        end = len(stored)
        mid = offset + length // 2
        flipped = bytearray(frame)
        flipped[length // 2] ^= 0x10
        other = zstd_frame(b"\x5a" * want)
        huge = zstd_frame(b"abcd", declared=1 << 40)
        undeclared = struct.pack("<IBB", 0xFD2FB528, 0x00, 0x00) + ((4 << 3) | 1).to_bytes(3, "little") + b"abcd"
        at = lambda b: {"offset": end, "length": len(b), "zstd": "true", "stored_xxh3": xxh3(b)}
        cases = [
            ("zstd frame cut short, re-sealed", "image is corrupt", None,
             dict(block={"offset": offset, "length": length // 2, "zstd": "true",
                         "stored_xxh3": xxh3(frame[:length // 2])})),
            ("pages file cut", pages, None, dict(cut=100)),
            ("frame byte flipped", "image is corrupt", "stored block", dict(flip=mid)),
            ("frame byte flipped, re-sealed", "image is corrupt", None,
             dict(flip=mid, block={"offset": offset, "length": length, "zstd": "true",
                                   "stored_xxh3": xxh3(bytes(flipped))})),
            ("frame of the right length, other content, re-sealed", "image is corrupt", f"checksum mismatch in block {k} ",
             dict(append=other, block=at(other))),
            ("block stored as is, other content, re-sealed", "image is corrupt", f"checksum mismatch in block {k} ",
             dict(append=b"\x5a" * want, block={**at(b"\x5a" * want), "zstd": "false"})),
            ("frame declaring 1 TiB, re-sealed", "image is corrupt", "1099511627776", dict(append=huge, block=at(huge))),
            ("frame declaring no length, re-sealed", "image is corrupt", "undeclared length",
             dict(append=undeclared, block=at(undeclared))),
            ("page data of 1 TiB more", "image is corrupt", None,
             dict(fields=[(r"^pages_bytes: \d+$", f"pages_bytes: {data + (1 << 40)}")])),
            ("page data a page shorter than the runs", "image is corrupt", "bytes of page data for runs",
             dict(fields=[(r"^pages_bytes: \d+$", f"pages_bytes: {data - 4096}")])),
        ]
        for what, must_name, must_say, kw in cases:
            copy = forge(what, **kw)
            line = self.expect_failure(["restore", "-D", copy, "--detach"], must_name, what, timeout=REFUSAL_TIMEOUT)
            if must_say and must_say not in line:
                raise TestFailure(f"{what}: the refusal does not say {must_say!r}: {line}")
            self.expect_nothing_restored(what)
        # The images themselves restore.
        self.restore()
        self.check_verdict(what="compressed images after the forged ones")
        return f"PASS ({len(cases)} forgeries refused)"

    def neg_pages_outside(self):
        """Images naming a file outside their folder (made by image_edit, checksums valid).
        Before: the pages file was read from outside the folder and the restore succeeded."""
        if not self.args.image_edit:
            raise TestFailure("--image-edit is needed for this test")
        self.dumped_and_gone()
        names = sorted(os.listdir(self.images))
        pages = [n for n in names if n.startswith("pages-")]
        edits = [("pages-file", n.replace("pages-", "pagemap-"), "../outside-" + n) for n in pages]
        edits.append(("content-file", "files.img", "../outside-content"))
        for edit, image, outside in edits:
            copy = os.path.join(self.work, "edited")
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(self.images, copy)
            if edit == "pages-file":  # a valid copy: only the name is wrong
                shutil.copy2(os.path.join(self.images, image.replace("pagemap-", "pages-")),
                             os.path.join(self.work, outside[3:]))
            else:
                with open(os.path.join(self.work, outside[3:]), "wb") as f:
                    f.write(b"outside")
            subprocess.run([self.args.image_edit, edit, os.path.join(copy, image), outside], check=True)
            line = self.expect_failure(["restore", "-D", copy, "--detach"], image, f"{image} naming {outside}",
                                       timeout=REFUSAL_TIMEOUT)
            if f"names file '{outside}' outside its folder: refused" not in line:
                raise TestFailure(f"{image} naming {outside}: not refused as outside the folder: {line}")
            self.expect_nothing_restored(f"{image} naming {outside}")
        return f"PASS ({len(edits)} images)"

    def setpriv_nobody(self):
        setpriv = shutil.which("setpriv")
        if not setpriv:
            raise TestFailure("setpriv (util-linux) is needed for this test")
        caps = "+checkpoint_restore,+sys_ptrace"
        return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                f"--inh-caps={caps}", f"--ambient-caps={caps}"]

    def spawn_mixed_tree(self):
        """A tree whose root runs as nobody and whose child stays root: (root, child)."""
        sleep = shutil.which("sleep")
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.closerange(3, 1 << 16)
                if os.fork() == 0:
                    os.execv(sleep, [sleep, "600"])
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
                os.execv(sleep, [sleep, "600"])
            except BaseException:  # noqa: B902
                pass
            os._exit(127)
        self.started.add(pid)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            pids = tree_pids(pid)
            try:
                ready = len(pids) == 2 and all(os.readlink(f"/proc/{p}/exe") == os.path.realpath(sleep)
                                               for p in pids) and os.stat(f"/proc/{pid}").st_uid == NOBODY
            except OSError:
                ready = False
            if ready:
                break
            if time.monotonic() > deadline:
                raise TestFailure("the mixed tree did not start")
            time.sleep(0.02)
        self.started.update(pids)
        return pid, [p for p in pids if p != pid][0]

    def nobody_images(self, name):
        images = os.path.join(self.work, name)
        os.makedirs(images)
        os.chown(images, NOBODY, NOBODY)
        return images

    def neg_dump_foreign_process(self):
        """An engine run as nobody, holding CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE, refuses a
        tree of nobody's with a child running as root (naming it; the tree runs on), and dumps
        a tree entirely of nobody's (restored as root).
        Before: it seized the root child, ran injected system calls inside it and read its
        mappings through map_files, and failed only at its fd folder (opendir /proc/PID/fd:
        Permission denied), with no word of whose process it was."""
        nobody = self.setpriv_nobody()
        root, child = self.spawn_mixed_tree()
        mixed = [root, child]
        line = self.expect_failure(["dump", "-t", str(root), "-D", self.nobody_images("mixed")], f"pid {child}",
                                   "dump as nobody of a tree with a root child", timeout=REFUSAL_TIMEOUT,
                                   prefix=nobody)
        if "uid 0" not in line:
            raise TestFailure(f"the refusal does not say the child runs as uid 0: {line}")
        time.sleep(0.2)
        for p in mixed:
            st = proc_state(p)
            if st is None or st[1] != 0 or st[0] not in "SR":
                raise TestFailure(f"after the refused dump: pid {p} is {st and st[0]}, traced by {st and st[1]}")
        if tree_pids(root) != sorted(mixed):
            raise TestFailure(f"after the refused dump the tree is {tree_pids(root)}, not {sorted(mixed)}")
        self.kill_pids(mixed)
        self.wait_gone(mixed)

        # The program, entirely nobody's (all uids and gids, no groups), dumped by nobody.
        os.chmod(self.work, 0o777)
        self.exec_as = NOBODY
        self.start()
        self.images = self.nobody_images("images-nobody")
        self.engine("dump", "-t", str(self.root), "-D", self.images, prefix=nobody)
        self.wait_gone(self.pids)
        self.restore()
        self.check_verdict(what="after the dump as nobody and restore")
        return "PASS"

    def neg_udp_queued_unprivileged(self):
        """A UDP socket with a datagram queued (udp_queued_alone, run as nobody) dumped by an
        engine run as nobody with CAP_SYS_PTRACE and CAP_CHECKPOINT_RESTORE (as the Slurm agent
        runs it): putting the datagram back needs CAP_NET_RAW, which neither that dump nor a
        restore as nobody has, so the dump is refused naming it and the tree runs on (a set no
        restore could take is never made)."""
        nobody = self.setpriv_nobody()
        os.chmod(self.work, 0o777)
        self.exec_as = NOBODY
        self.start()
        line = self.expect_failure(["dump", "-t", str(self.root), "-D", self.nobody_images("images-nobody")],
                                   f"pid {self.root}", "dump as nobody of a queued UDP datagram",
                                   timeout=REFUSAL_TIMEOUT, prefix=nobody)
        if "fd 9" not in line or "CAP_NET_RAW" not in line:
            raise TestFailure(f"the refusal does not name fd 9 and CAP_NET_RAW: {line}")
        self.expect_tree_unharmed("a dump refused for a queued datagram")
        return "PASS"

    def neg_compare_detects(self):
        """--compare can fail: after the restore, one byte of the root's data is changed through
        /proc/PID/mem and the offset of one of its regular files moved (through a copy of its
        fd from pidfd_getfd, which shares the description); the comparison must name both."""
        if not self.args.compare:
            raise TestFailure("--compare is needed for this test")
        self.start()
        self.dump()
        pidfile = os.path.join(self.work, "restore.pid")
        self.engine("restore", "-D", self.images, "--detach", "--pidfile", pidfile)
        self.after_restore_check(pidfile)
        # The last byte of the program's own writable data (nothing reads it before the kill).
        data = None
        with open(f"/proc/{self.root}/maps") as f:
            for line in f:
                fields = line.split()
                if len(fields) == 6 and fields[1] == "rw-p" and fields[5] == os.path.realpath(self.args.program):
                    data = fields[0]
        if data is None:
            raise TestFailure(f"pid {self.root} has no writable mapping of its program to change")
        end = int(data.split("-")[1], 16)
        with open(f"/proc/{self.root}/mem", "r+b", buffering=0) as mem:
            mem.seek(end - 1)
            byte = mem.read(1)
            mem.seek(end - 1)
            mem.write(bytes([byte[0] ^ 0xff]))
        fd = next((int(n) for n in sorted(os.listdir(f"/proc/{self.root}/fd"), key=int)
                   if os.path.isfile(os.readlink(f"/proc/{self.root}/fd/{n}")) and int(n) > 2), None)
        if fd is None:
            raise TestFailure(f"pid {self.root} has no regular file open above fd 2")
        libc = ctypes.CDLL(None, use_errno=True)
        pidfd = os.pidfd_open(self.root)
        copy = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
        os.close(pidfd)
        if copy < 0:
            raise TestFailure(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
        os.lseek(copy, 1, os.SEEK_CUR)
        os.close(copy)
        diff, _ = proc_compare.differences(self.before, self.snapshot("after the changes"),
                                           os.path.basename(self.args.program), self.eintr_threads)
        wanted = [f"pid {self.root} mapping {data} contents differ", f"pid {self.root} fd {fd} fdinfo pos:"]
        missing = [w for w in wanted if not any(line.startswith(w) for line in diff)]
        # Other fds of the same description (dup) have moved too: nothing else may be reported.
        other = [line for line in diff if not line.startswith(wanted[0])
                 and not (line.startswith(f"pid {self.root} fd ") and " fdinfo pos: " in line)]
        if missing or other:
            raise TestFailure(f"the comparison should report {wanted} (and the offsets of dups), it reports {diff}")
        return "PASS (a changed data byte and file offset reported)"

    def neg_dump_enospc(self):
        """A dump that fails half way, with the tree frozen: its images fill a 16 KiB tmpfs."""
        self.start()
        tiny = os.path.join(self.work, "tiny")
        os.makedirs(tiny)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", tiny], check=True)
        try:
            self.expect_failure(["dump", "-t", str(self.root), "-D", tiny + "/images"], "tiny",
                                "dump onto a full file system")
        finally:
            subprocess.run(["umount", tiny], check=False)
        self.expect_tree_unharmed("a dump that ran out of space")
        return "PASS"


# StreamRecord kinds (proto/stream.proto).
PAGES, PAGE_SUMS, PAGE_BLOCK = 2, 4, 5


def parse_proto(msg):
    """The fields of a protobuf message of varints and byte strings: {number: value}."""
    out, off = {}, 0

    def varint():
        nonlocal off
        v, shift = 0, 0
        while True:
            b = msg[off]
            off += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    while off < len(msg):
        key = varint()
        if key & 7 == 0:
            out[key >> 3] = varint()
        elif key & 7 == 2:
            n = varint()
            out[key >> 3] = msg[off:off + n]
            off += n
        else:
            raise TestFailure(f"unexpected wire type in a stream frame: {key & 7}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--program", required=True)
    ap.add_argument("--mode", choices=["no-dump", "corrupt", "dump-kill", "restore-wait",
                                       "leave-running", "twice", "new-pidns", "new-pidns-twice",
                                       "stream-pipe", "stream-tcp", "stream-send"])
    ap.add_argument("--negative", choices=["compress-forged", "missing-dir", "truncated-image", "flipped-byte",
                                           "pid-taken", "dump-nonexistent", "dump-fails",
                                           "dump-enospc", "file-changed", "other-version",
                                           "other-arch", "unsupported-fd", "fd-owner-outside",
                                           "pidfd-reaped", "pidfd-outside", "image-fifo",
                                           "image-devzero", "image-symlink", "dump-symlinks",
                                           "pages-outside", "dump-foreign-process", "nested-pidns", "shared-mm", "traced", "seccomp-strict", "seccomp-thread", "seccomp-unsuspended",
                                           "unsupported-mapping", "refused-fd", "refused-cwd",
                                           "compare-detects", "shared-fd-table", "fifo-changed",
                                           "tcp-refused", "tcp-forged", "udp-forged", "udp-queued-unprivileged", "leave-running-original", "ipc-forged", "batch-failed",
                                           "ipc-refused", "stream-truncated", "stream-flipped",
                                           "stream-forged-name", "stream-version",
                                           "stream-forged-sums", "stream-no-sums", "stream-compressed"])
    ap.add_argument("--user", choices=["root", "nobody"], default="root")
    ap.add_argument("--file-locks", action="store_true", help="dump with --file-locks")
    ap.add_argument("--link-remap", action="store_true", help="dump with --link-remap")
    ap.add_argument("--dump-twice", action="store_true",
                    help="leave-running mode: dump the original twice before its check, restore the second")
    ap.add_argument("--compress", action="store_true",
                    help="dump with --compress; each dump checked to have stored its page data compressed")
    ap.add_argument("--restore-rss-limit", type=int, metavar="MIB",
                    help="every restore -D: the engine's peak RSS (ru_maxrss) must be at most MIB "
                         "(not with --shell-job)")
    ap.add_argument("--dump-arg", action="append", default=[], help="one more argument for every dump (--no-snapshot)")
    ap.add_argument("--restore-arg", action="append", default=[],
                    help="one more argument for every restore (--with-cpu-affinity)")
    ap.add_argument("--threads-may-exit", action="store_true",
                    help="threads of the program may exit during a dump or after a restore (mem_snapshot_exit)")
    ap.add_argument("--snapshot", action="store_true",
                    help="every dump --leave-running with --snapshot (the copy-on-write snapshot)")
    ap.add_argument("--expect-snapshot", action="store_true",
                    help="with --snapshot: every dump --leave-running must have copied its pages "
                         "copy-on-write (--stats), not frozen")
    ap.add_argument("--tcp-established", action="store_true",
                    help="dump and restore with --tcp-established")
    ap.add_argument("--peer", metavar="PROGRAM",
                    help="start PROGRAM outside the tree first: it prints a TCP port on stdout, given to the "
                         "program as CKPT_TEST_PEER_PORT; its exit status after SIGTERM is its verdict, "
                         "required to be 0 in every mode but corrupt")
    ap.add_argument("--external-stdio", action="store_true",
                    help="the program's fd 1 and fd 3 are pipes to the runner")
    ap.add_argument("--image-edit", help="the image_edit helper (other-version, other-arch)")
    ap.add_argument("--shell-job", action="store_true",
                    help="run the program as a job of a shell session with a terminal, dump and "
                         "restore it with --shell-job")
    ap.add_argument("--compare", metavar="PROC_SNAPSHOT",
                    help="compare the tree's mappings, memory and fds before the dump and after "
                         "each restore (tools/proc_snapshot; modes dump-kill, leave-running, twice)")
    ap.add_argument("--workdir", help="where to keep results, logs and images")
    ap.add_argument("--work-name", help="the folder of this run in the workdir (default PROGRAM.MODE); "
                    "runs at once need names of their own")
    ap.add_argument("--keep", action="store_true", help="keep the work directory on success")
    args = ap.parse_args()
    if bool(args.mode) == bool(args.negative):
        ap.error("give exactly one of --mode and --negative")

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("runner: prctl(PR_SET_CHILD_SUBREAPER): " + os.strerror(ctypes.get_errno()))

    # Tests where nobody runs the program or the engine work in a public folder of their own.
    public = None
    if args.user == "nobody" or args.negative in ("dump-foreign-process", "udp-queued-unprivileged"):
        public = public_folder("ckpt-enginetest-")
        args.program = public_copy(args.program, public)
        args.engine = public_copy(args.engine, public)
        args.workdir = public
    run = Run(args)
    name = os.path.basename(args.program)
    label = f"{name} [{args.mode or args.negative}{', as nobody' if args.user == 'nobody' else ''}]"
    try:
        if args.mode:
            outcome = getattr(run, "mode_" + args.mode.replace("-", "_"))()
            if run.peer and args.mode != "corrupt":  # corruptions may reset its connections
                run.finish_peer()
        else:
            outcome = getattr(run, "neg_" + args.negative.replace("-", "_"))()
    except (TestFailure, OSError) as e:
        run.cleanup()
        print(f"{label}: FAIL: {e}")
        for path in (run.log, run.engine_log):
            if os.path.exists(path) and os.path.getsize(path):
                print(f"--- {path}")
                print(open(path, errors="replace").read()[-4000:])
        print(f"(work directory kept: {run.work})")
        sys.exit(1)
    run.cleanup()
    print(f"{label}: {outcome}")
    if not args.keep:  # images can be large: keep a work directory only after a failure
        shutil.rmtree(run.work if args.workdir else os.path.dirname(run.work), ignore_errors=True)
        if public:
            shutil.rmtree(public, ignore_errors=True)


if __name__ == "__main__":
    main()
