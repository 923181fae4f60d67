#!/usr/bin/env python3
"""Incremental dumps (dump --track-mem, --prev-images-dir) and their restore, for real.

  incremental_test.py --engine ckpt-engine --program mem_incremental --workdir DIR --case CASE

chain:   a program that keeps changing its memory (programs/mem_incremental.c) is dumped 10
         times with --leave-running --track-mem, each link after the first with the previous
         one as --prev-images-dir; the original checks every page after each dump. Every
         link after the first must save far fewer page bytes than the first (1 % of the big
         region written). Then links 0, 1, 5 and 9 are restored one after the other, each
         copy checking every page against the hashes it recorded before its dump.
damaged: on the same chain, a parent whose page data changed, whose page map is another
         dump's, that is missing, or that is a symbolic link is refused by name; restored
         whole again, the link restores right.
closed:  the program closes the tracker at step 3: link 3 is saved whole and restores right,
         link 4 is incremental again (from link 3) and restores right.
refused: --track-mem without --leave-running, a --prev-images-dir not beside -D; a dump that
         does not name the dump that left a write tracker (its tracker is not recognised).
max_chain: links dumped with --max-chain 1: every other link is saved whole (its tracker still
         recognised through its parent) and the next is incremental from it; both restore right.
own_uffd: the program holds a userfaultfd of its own with the tracker's features: a dump,
         with or without --track-mem, refuses it by name and leaves it open in the program
         (never recorded as the engine's, never closed as a stale tracker).
cousin:  the Slurm agent's layout, each link in a folder of its own (set-K/member-0) with the
         previous link's as --prev-images-dir (recorded as "set-K/member-0", opened beneath
         their common folder): links 1 and 3 restore right; the parent's folder or the
         parent's set folder a symbolic link, or the parent's set folder missing, is refused
         by name; restored whole again, the link restores right.
nobody:  the program runs as an unprivileged user (nobody, with RLIMIT_NOFILE below the highest fd a
         tracker may take) and root dumps it: a chain of 3 links, link 2 restored (its tracker
         is made in the process and moved below the process's own fd limit).
compress: links 0, 1 and 3 dumped --compress (their page maps record stored blocks, link 0
         has zstd frames and is stored in under half its page data), links 2 and 4 not; links
         0, 2, 3 and 4 restore right, each reading pages from parents stored both ways; a
         compressed parent whose stored bytes changed is refused by name; --compress with
         --stream and levels outside 1-19 are refused.
"""
import argparse
import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from public_stage import public_copy, public_folder

PR_SET_CHILD_SUBREAPER = 36
NOBODY = 65534


class Fail(Exception):
    pass


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def wait_for(what, cond, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        reap()
        if cond():
            return
        time.sleep(0.01)
    raise Fail(f"timed out waiting for {what}")


class Test:
    def __init__(self, args):
        self.engine = args.engine
        self.program = args.program
        self.pid = None
        self.trackers = []  # the program's userfaultfds (inodes) after each link of chain()
        self.cousin = args.case == "cousin"
        self.public = None  # case nobody: the public folder of nobody's program and work folder
        if args.case == "nobody":
            # The build folder may be private (a clone in a 0700 folder): nobody's program, its
            # log and the images live in a folder everyone may traverse.
            self.public = public_folder("ckpt-incremental-")
            self.program = public_copy(self.program, self.public)
            self.dir = tempfile.mkdtemp(prefix="incremental-", dir=self.public)
            os.chmod(self.dir, 0o755)
            os.chown(self.dir, NOBODY, NOBODY)
        else:
            os.makedirs(args.workdir, exist_ok=True)
            self.dir = tempfile.mkdtemp(prefix="incremental-", dir=args.workdir)
        self.log = os.path.join(self.dir, "log")

    def lines(self):
        try:
            with open(self.log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_line(self, line, count=1):
        def seen():
            ls = self.lines()
            bad = [l for l in ls if l.startswith("BAD")]
            if bad:
                raise Fail(f"the program says: {bad[0]}")
            return sum(1 for l in ls if l == line or l.startswith(line + " ")) >= count
        wait_for(f"'{line}' (x{count}) in the log; log ends {self.lines()[-3:]}", seen)

    def digest(self, what, k, nth):
        """The digest of the nth line 'what k digest D' of the log."""
        ds = [l.split()[3] for l in self.lines() if l.startswith(f"{what} {k} digest ")]
        if len(ds) <= nth:
            raise Fail(f"no {what} {k} line #{nth}")
        return ds[nth]

    def check_digest(self, k, nth):
        """The nth 'verified k' line must give the digest the original recorded at step k."""
        want, got = self.digest("step", k, 0), self.digest("verified", k, nth)
        if want != got:
            raise Fail(f"step {k}: pages digest {got}, the original had {want} before its dump")

    def engine_run(self, argv, expect_ok=True):
        r = subprocess.run([self.engine, *argv], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           close_fds=True, timeout=300)
        if expect_ok and r.returncode != 0:
            raise Fail(f"ckpt-engine {' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def start(self, extra=()):
        def as_nobody():
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
        p = subprocess.Popen([self.program, self.log, *extra], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True,
                             preexec_fn=as_nobody if self.public else None)
        self.pid = p.pid

    def link(self, k):
        if self.cousin:
            os.makedirs(os.path.join(self.dir, f"set-{k}"), exist_ok=True)
            return os.path.join(self.dir, f"set-{k}", "member-0")
        return os.path.join(self.dir, f"link{k}")

    def pages_size(self, k):
        return os.path.getsize(os.path.join(self.link(k), f"pages-{self.pid}.img"))

    def chain(self, n, extra=(), per_link=lambda k: []):
        """n links of the running program (link k dumped with per_link(k) too); returns their
        pages file sizes."""
        for k in range(n):
            self.wait_line(f"step {k}")
            wait_for(f"pid {self.pid} stopped", lambda: state(self.pid) == "T")
            argv = ["dump", "-t", str(self.pid), "-D", self.link(k), "--leave-running", "--track-mem", *per_link(k)]
            if k:
                argv += ["--prev-images-dir", self.link(k - 1), *extra]
            self.engine_run(argv)
            self.trackers.append(uffds(self.pid))
            os.kill(self.pid, signal.SIGCONT)
            self.wait_line(f"verified {k}")
            self.check_digest(k, 0)
        return [self.pages_size(k) for k in range(n)]

    def page_map(self, k):
        """Link k's page map of the program, as ckpt-engine show --json gives it."""
        r = self.engine_run(["show", self.link(k), "--json"])
        return json.loads(r.stdout)["images"][f"pagemap-{self.pid}.img"]

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_for(f"pid {self.pid} gone", lambda: state(self.pid) is None)

    def restore(self, k):
        """Restores link k, lets it check its pages, kills it."""
        before = sum(1 for l in self.lines() if l.startswith(f"verified {k} "))
        pidfile = os.path.join(self.dir, "pidfile")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        self.engine_run(["restore", "-D", self.link(k), "--detach", "--pidfile", pidfile])
        with open(pidfile) as f:
            if int(f.read().strip()) != self.pid:
                raise Fail("restored with another pid")
        os.kill(self.pid, signal.SIGCONT)
        self.wait_line(f"verified {k}", before + 1)
        self.check_digest(k, before)
        self.kill()

    def refused(self, k, words, what):
        r = self.engine_run(["restore", "-D", self.link(k), "--detach"], expect_ok=False)
        if r.returncode == 0:
            raise Fail(f"restore of link {k} with {what} succeeded")
        if words not in r.stderr:
            raise Fail(f"restore of link {k} with {what}: expected '{words}' in: {r.stderr.strip()}")
        wait_for(f"pid {self.pid} gone after the refused restore", lambda: state(self.pid) is None)


def case_chain(t):
    t.start()
    sizes = t.chain(10)
    print("pages bytes per link:", sizes)
    for k in range(1, 10):
        # 1 % of 64 MiB written, plus the heap (hashes), the stack and the changed mappings.
        if sizes[k] * 10 > sizes[0]:
            raise Fail(f"link {k} saved {sizes[k]} page bytes, not much fewer than the full link 0's {sizes[0]}")
    # Guard pages (MADV_GUARD_INSTALL, linux 6.13) in a tracked mapping: the program installs
    # them at step 5; where the kernel has them, a run without them tested nothing of them.
    release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    if release >= (6, 13) and "guards installed at step 5" not in t.lines():
        raise Fail("the program installed no guard pages on linux " + os.uname().release)
    t.kill()
    for k in (0, 1, 5, 9):
        t.restore(k)


def case_damaged(t):
    t.start()
    t.chain(4)
    t.kill()
    pages0 = os.path.join(t.link(0), f"pages-{t.pid}.img")
    with open(pages0, "r+b") as f:
        f.seek(8192 + 17)
        b = f.read(1)
        f.seek(8192 + 17)
        f.write(bytes([b[0] ^ 0x5a]))
    t.refused(2, "checksum mismatch", "the grandparent's page data changed")
    with open(pages0, "r+b") as f:
        f.seek(8192 + 17)
        f.write(b)
    pm1 = os.path.join(t.link(1), f"pagemap-{t.pid}.img")
    shutil.copy(pm1, pm1 + ".orig")
    shutil.copy(os.path.join(t.link(3), f"pagemap-{t.pid}.img"), pm1)
    t.refused(2, "is not the page map", "the parent's page map replaced by another dump's")
    os.replace(pm1 + ".orig", pm1)
    os.rename(t.link(1), t.link(1) + ".away")
    t.refused(2, "cannot be opened", "the parent missing")
    os.symlink(os.path.basename(t.link(1)) + ".away", t.link(1))
    t.refused(2, "cannot be opened", "the parent a symbolic link")
    os.unlink(t.link(1))
    os.rename(t.link(1) + ".away", t.link(1))
    t.restore(2)
    t.restore(3)


def case_closed(t):
    t.start(["--close-tracker-at", "3"])
    sizes = t.chain(5)
    print("pages bytes per link:", sizes)
    if sizes[3] * 10 < sizes[0] * 9:
        raise Fail(f"link 3 (tracker closed) saved {sizes[3]} bytes: expected the whole {sizes[0]}")
    if sizes[4] * 10 > sizes[0]:
        raise Fail(f"link 4 saved {sizes[4]} bytes: expected incremental again")
    t.kill()
    t.restore(3)
    t.restore(4)


def case_refused(t):
    t.start()
    t.wait_line("step 0")
    r = t.engine_run(["dump", "-t", str(t.pid), "-D", t.link(0), "--track-mem"], expect_ok=False)
    if r.returncode == 0 or "--track-mem needs --leave-running" not in r.stderr:
        raise Fail(f"--track-mem without --leave-running: {r.returncode} {r.stderr.strip()}")
    t.engine_run(["dump", "-t", str(t.pid), "-D", t.link(0), "--leave-running", "--track-mem"])
    other = tempfile.mkdtemp(dir=t.dir)
    r = t.engine_run(["dump", "-t", str(t.pid), "-D", os.path.join(other, "x"), "--leave-running",
                      "--prev-images-dir", t.link(0)], expect_ok=False)
    if r.returncode == 0 or "must be a folder beside the images folder" not in r.stderr:
        raise Fail(f"--prev-images-dir elsewhere: {r.returncode} {r.stderr.strip()}")
    # The tracker link 0 left is recognised only through link 0.
    r = t.engine_run(["dump", "-t", str(t.pid), "-D", t.link(1), "--leave-running"], expect_ok=False)
    if r.returncode == 0 or "did not record" not in r.stderr:
        raise Fail(f"a dump not naming the dump that left the tracker: {r.returncode} {r.stderr.strip()}")
    t.engine_run(["dump", "-t", str(t.pid), "-D", t.link(1), "--leave-running", "--prev-images-dir", t.link(0)])
    # That dump did not arm the tracker but records it: a dump naming it knows it (and,
    # the tracker not being its, saves the pages whole).
    t.engine_run(["dump", "-t", str(t.pid), "-D", t.link(2), "--leave-running", "--track-mem",
                  "--prev-images-dir", t.link(1)])
    if t.pages_size(2) * 10 < t.pages_size(0) * 9:
        raise Fail(f"link 2 saved {t.pages_size(2)} bytes after a dump that did not arm the tracker: expected "
                   f"the whole {t.pages_size(0)}")
    # An incremental dump refers to a folder of images: never into a stream.
    for extra in (["--track-mem"], ["--prev-images-dir", t.link(0)]):
        r = t.engine_run(["dump", "-t", str(t.pid), "--stream", os.path.join(t.dir, "stream"), "--leave-running",
                          *extra], expect_ok=False)
        if r.returncode == 0 or "--stream does not go together with --track-mem or --prev-images-dir" not in r.stderr:
            raise Fail(f"--stream with {extra[0]}: {r.returncode} {r.stderr.strip()}")
    t.kill()


def case_max_chain(t):
    t.start()
    sizes = t.chain(5, ["--max-chain", "1"])
    print("pages bytes per link:", sizes)
    for k in (2, 4):  # their parent's chain is 1 long already
        if sizes[k] * 10 < sizes[0] * 9:
            raise Fail(f"link {k} (--max-chain 1) saved {sizes[k]} bytes: expected the whole {sizes[0]}")
    for k in (1, 3):
        if sizes[k] * 10 > sizes[0]:
            raise Fail(f"link {k} saved {sizes[k]} bytes: expected incremental")
    # A link saved whole keeps the tracker (re-armed, not made again).
    if len(t.trackers[0]) != 1 or any(tr != t.trackers[0] for tr in t.trackers):
        raise Fail(f"the program's userfaultfds (inodes) after each link: {t.trackers}: expected one tracker, kept")
    t.kill()
    for k in (2, 3):
        t.restore(k)


def uffds(pid):
    """The inodes of the userfaultfds pid holds."""
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{fd}"
        try:
            if os.readlink(path) == "anon_inode:[userfaultfd]":
                out.add(os.stat(path).st_ino)
        except FileNotFoundError:
            pass
    return out


def case_failed(t):
    """A dump that fails at its very end (post-dump) leaves no tracker it made, and loses no page
    written since the dump before it."""
    failing = '[ "$CRTOOLS_SCRIPT_ACTION" != post-dump ]'  # run by /bin/sh -c
    t.start()
    t.wait_line("step 0")
    wait_for(f"pid {t.pid} stopped", lambda: state(t.pid) == "T")
    r = t.engine_run(["dump", "-t", str(t.pid), "-D", t.link(0), "--leave-running", "--track-mem",
                      "--action-script", failing], expect_ok=False)
    if r.returncode == 0 or "(post-dump) exited 1" not in r.stderr:
        raise Fail(f"the dump with a failing post-dump script: {r.returncode} {r.stderr.strip()}")
    if uffds(t.pid):
        raise Fail("the failed first --track-mem dump left a userfaultfd in the program")
    # The next dump of the tree is not refused for a tracker nobody recorded.
    t.engine_run(["dump", "-t", str(t.pid), "-D", t.link(0), "--leave-running", "--track-mem"])
    os.kill(t.pid, signal.SIGCONT)
    t.wait_line("verified 0")
    # Step 1 is written, its dump re-arms the tracker and then fails: step 1's pages are in no
    # complete dump, so the next dump against link 0 must save them.
    t.wait_line("step 1")
    wait_for(f"pid {t.pid} stopped", lambda: state(t.pid) == "T")
    r = t.engine_run(["dump", "-t", str(t.pid), "-D", t.link(1), "--leave-running", "--track-mem",
                      "--prev-images-dir", t.link(0), "--action-script", failing], expect_ok=False)
    if r.returncode == 0 or "(post-dump) exited 1" not in r.stderr:
        raise Fail(f"the incremental dump with a failing post-dump script: {r.returncode} {r.stderr.strip()}")
    if len(uffds(t.pid)) != 1:
        raise Fail(f"after the failed incremental dump the program holds {len(uffds(t.pid))} userfaultfds, not 1")
    os.kill(t.pid, signal.SIGCONT)
    t.wait_line("verified 1")
    t.wait_line("step 2")
    wait_for(f"pid {t.pid} stopped", lambda: state(t.pid) == "T")
    t.engine_run(["dump", "-t", str(t.pid), "-D", t.link(2), "--leave-running", "--track-mem",
                  "--prev-images-dir", t.link(0)])
    t.kill()
    t.restore(2)


def case_own_uffd(t):
    t.start(["--own-uffd"])
    t.wait_line("step 0")
    wait_for(f"pid {t.pid} stopped", lambda: state(t.pid) == "T")
    for extra in ([], ["--track-mem"]):
        r = t.engine_run(["dump", "-t", str(t.pid), "-D", t.link(0), "--leave-running", *extra], expect_ok=False)
        if r.returncode == 0 or "fd 200: a userfaultfd" not in r.stderr or "did not record" not in r.stderr:
            raise Fail(f"dump {' '.join(extra)} of a program with its own userfaultfd: {r.returncode} "
                       f"{r.stderr.strip()}")
        shutil.rmtree(t.link(0), ignore_errors=True)
    os.kill(t.pid, signal.SIGCONT)
    t.wait_line("verified 0")  # its userfaultfd still open: checked by the program
    t.kill()


def case_cousin(t):
    t.start()
    t.chain(4)
    t.kill()
    t.restore(1)
    t.restore(3)
    set1 = os.path.dirname(t.link(1))
    os.rename(t.link(1), t.link(1) + ".away")
    os.symlink("member-0.away", t.link(1))
    t.refused(3, "cannot be opened", "the grandparent's folder a symbolic link")
    os.unlink(t.link(1))
    os.rename(t.link(1) + ".away", t.link(1))
    os.rename(set1, set1 + ".away")
    t.refused(3, "cannot be opened", "the grandparent's set folder missing")
    os.symlink(os.path.basename(set1) + ".away", set1)
    t.refused(2, "cannot be opened", "the parent's set folder a symbolic link")
    os.unlink(set1)
    os.rename(set1 + ".away", set1)
    t.restore(2)


def case_compress(t):
    t.start()
    compressed = {0, 1, 3}
    sizes = t.chain(5, per_link=lambda k: ["--compress"] if k in compressed else [])
    print("pages file bytes per link:", sizes)
    for k in range(5):
        pm = t.page_map(k)
        blocks = pm.get("blocks", [])
        if (k in compressed) != bool(blocks):
            raise Fail(f"link {k}: {len(blocks)} stored blocks in its page map, dumped "
                       f"{'with' if k in compressed else 'without'} --compress")
        if k == 0 and not any(b.get("zstd") for b in blocks):
            raise Fail("link 0: no block stored as a zstd frame")
        if k == 0 and sizes[0] * 2 > int(pm["pages_bytes"]):
            raise Fail(f"link 0: {sizes[0]} bytes stored for {pm['pages_bytes']} of page data")
    t.kill()
    # Each link reads pages from parents stored both ways (4: 3 compressed, 2 not, 1 and 0 compressed).
    for k in (0, 2, 3, 4):
        t.restore(k)
    # A compressed parent whose stored bytes changed: refused by name.
    pages1 = os.path.join(t.link(1), f"pages-{t.pid}.img")
    with open(pages1, "r+b") as f:
        f.seek(sizes[1] // 2)
        b = f.read(1)
        f.seek(sizes[1] // 2)
        f.write(bytes([b[0] ^ 0x5a]))
    t.refused(2, "checksum mismatch in stored block", "the compressed parent's stored bytes changed")
    with open(pages1, "r+b") as f:
        f.seek(sizes[1] // 2)
        f.write(b)
    t.restore(2)
    # Levels outside zstd's 1 to 19.
    t.start()
    t.wait_line("step 0")
    for argv, words in ((["-D", t.link(9), "--compress=0"], "zstd level from 1 to 19"),
                        (["-D", t.link(9), "--compress=20"], "zstd level from 1 to 19")):
        r = t.engine_run(["dump", "-t", str(t.pid), "--leave-running", *argv], expect_ok=False)
        if r.returncode == 0 or words not in r.stderr:
            raise Fail(f"dump {' '.join(argv)}: {r.returncode} {r.stderr.strip()}")
    t.kill()


def case_nobody(t):
    t.start()
    t.chain(3)
    fds = os.listdir(f"/proc/{t.pid}/fd")
    trackers = [int(fd) for fd in fds if os.readlink(f"/proc/{t.pid}/fd/{fd}") == "anon_inode:[userfaultfd]"]
    if len(trackers) != 1 or not 64 <= trackers[0] < 1024:
        raise Fail(f"the write trackers of nobody's process: fds {trackers}, not one below its limit of 1024")
    t.kill()
    t.restore(2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--program", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--case", required=True,
                    choices=["chain", "damaged", "closed", "refused", "own_uffd", "max_chain", "cousin", "failed", "compress",
                             "nobody"])
    args = ap.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    t = Test(args)
    try:
        globals()["case_" + args.case](t)
    except Fail as e:
        print(f"FAIL: incremental {args.case}: {e}")
        if t.pid and state(t.pid):
            os.kill(t.pid, signal.SIGKILL)
        return 1
    shutil.rmtree(t.dir, ignore_errors=True)
    if t.public:
        shutil.rmtree(t.public, ignore_errors=True)
    print(f"PASS: incremental {args.case}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
