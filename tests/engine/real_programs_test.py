#!/usr/bin/env python3
"""Unmodified Debian programs through dump --leave-running and restore (issue 11).

  real_programs_test.py --engine ckpt-engine --program NAME [--workdir DIR]

NAME is one of:
  pipeline  bash running seq | gawk | gawk | sort -n | sha256sum: dumped while the pipes
            between seq and the gawks are full and sort holds what came through so far
  sort      GNU sort with a 256 KiB buffer spilling to temporary files in a private folder
            (--batch-size=4: it merges temporary files into temporary files, two threads):
            dumped in the merge phase, runs open for reading and one being written
  sort-compress  the same with --compress-program=gzip: dumped while merging, gzip -d
            children feeding sort through pipes (finished compressors often still zombies)
  make      make -j2 building a generated C project with gcc (children: gcc drivers, cc1 writing
            temporary .s files, as): dumped once a few objects exist
  gawk      a gawk script building and walking associative arrays, round after round
  perl      a perl script forking a child per round that sends a hash back through a pipe,
            and one that exits at once and stays a zombie until the next round reaps it

Each workload first runs uninterrupted (the reference). Then it runs again in a clean folder
and is dumped with --leave-running once it shows progress (output lines, temporary files,
objects, bytes read by a stage); the dump's post-dump action script copies its folder while
the tree is still frozen (the files as the images know them). The original must finish with
exactly the reference's output (and files). Once every pid of the tree is gone the folder is
put back as it was at the dump and the images are restored (the engine waits for the root):
the copy must exit 0 and print exactly the rest of the reference's output, and leave the
reference's files.

The workload gets no inherited fd (stdin /dev/null, stdout and stderr one pipe, as in
python_pool_test.py), its own session (no terminal), umask 022, and an environment of its
own (LC_ALL=C, PATH, HOME and TMPDIR in its folder). Prints "SKIP" and exits 0 when a program
is not installed.
"""
import argparse
import ctypes
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

NAME = "real"


def fail(msg, out=None):
    print("FAIL: %s: %s" % (NAME, msg))
    if out:
        print(out[-4000:] if isinstance(out, str) else out[-4000:].decode(errors="replace"))
    sys.exit(1)


# ---------------------------------------------------------------- process helpers

def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def tree_of(root):
    pids, queue = [], [root]
    while queue:
        p = queue.pop(0)
        pids.append(p)
        queue += children(p)
    return pids


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def session_members(sid):
    out = []
    for n in os.listdir("/proc"):
        if not n.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % n) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after ")": state ppid pgrp session
            out.append(int(n))
    return out


def io_bytes(pid, field):
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                k, v = line.split(":")
                if k == field:
                    return int(v)
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------- workloads
# Each: setup(run_dir) writes its inputs; argv; progress(run_dir, out, root) says when the
# work is under way (and not near its end); files: names (relative to run_dir) whose content
# must equal the reference's at the end.

PIPELINE_N = 800000
PIPELINE = r'''
seq 1 %d \
| gawk '{ x = ($1 * 7919) %% 1000003; print x, $1 }' \
| gawk '{ h = 0; for (i = 1; i <= length($2); i++) h = (h * 31 + substr($2, i, 1) + 7) %% 65521
          print $1 + h, $2 }' \
| sort -n -k1,1 -k2,2 -S 64M \
| sha256sum
''' % PIPELINE_N


def pipeline_progress(run, out, root):
    # The second gawk has read 30% of what the first writes (about 14 bytes a line), while
    # seq and the first gawk wait on full pipes.
    stages = [p for p in tree_of(root) if comm(p) == "gawk"]
    return len(stages) == 2 and io_bytes(stages[-1], "rchar") > PIPELINE_N * 14 * 3 // 10


SORT_LINES = 1000000


def sort_setup(run, lines=SORT_LINES):
    rnd = random.Random(11)
    with open(os.path.join(run, "input.txt"), "w") as f:
        for i in range(lines):
            f.write("%08x %d %s\n" % (rnd.getrandbits(32), i, "x" * rnd.randrange(1, 40)))


SORT = r'''
sort -S 256K -T "$TMPDIR" --batch-size=4 --parallel=2 -k1,1 -k2,2n -o sorted.txt input.txt
sha256sum sorted.txt
wc -l < sorted.txt
'''


def open_files(pid):
    out = []
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                out.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
            except OSError:
                pass
    except OSError:
        pass
    return out


def sort_progress(run, out, root):
    # In the merge phase: the input read and closed, runs on disk being merged into new ones.
    tmp = os.path.join(run, "tmp")
    if len([n for n in os.listdir(tmp) if n.startswith("sort")]) < 8:
        return False
    sorts = [p for p in tree_of(root) if comm(p) == "sort"]
    if not sorts:
        return False
    files = open_files(sorts[0])
    return (not any(f.endswith("/input.txt") for f in files) and
            sum(f.startswith(tmp + "/sort") for f in files) >= 2)


SORTZ = r'''
sort -S 256K -T "$TMPDIR" --batch-size=4 --compress-program=gzip -k1,1 -k2,2n -o sorted.txt input.txt
sha256sum sorted.txt
wc -l < sorted.txt
'''


def sortz_setup(run):
    sort_setup(run, 250000)


def sortz_progress(run, out, root):
    # Merging: the input closed, gzip -d children feeding sort through pipes.
    procs = tree_of(root)
    sorts = [p for p in procs if comm(p) == "sort"]
    gzips = [p for p in procs if comm(p) == "gzip"]
    if not sorts or len(gzips) < 2:
        return False
    return not any(f.endswith("/input.txt") for f in open_files(sorts[0]))


MAKE_UNITS = 10


def make_setup(run):
    units = ["f%02d" % i for i in range(MAKE_UNITS)]
    for k, u in enumerate(units):
        body = ["unsigned long %s(unsigned long x) {" % u, "    unsigned long h = %du;" % (k + 1)]
        # Enough straight-line code that cc1 takes a moment at -O2.
        for j in range(400):
            body.append("    h = (h ^ (x + %du)) * 2654435761u + (h >> %d);" % (j * 7 + k, j % 13 + 1))
            if j % 40 == 0:
                body.append("    if (h %% %du == 0) h += x * %du;" % (j + 3, j + 1))
        body += ["    return h;", "}"]
        with open(os.path.join(run, u + ".c"), "w") as f:
            f.write("\n".join(body) + "\n")
    with open(os.path.join(run, "main.c"), "w") as f:
        f.write("#include <stdio.h>\n")
        for u in units:
            f.write("unsigned long %s(unsigned long);\n" % u)
        f.write("int main(void) {\n    unsigned long s = 0;\n")
        f.write("    for (unsigned long i = 0; i < 1000; ++i) {\n")
        for u in units:
            f.write("        s = s * 31 + %s(i + s);\n" % u)
        f.write("    }\n    printf(\"%lu\\n\", s);\n    return 0;\n}\n")
    objs = " ".join(u + ".o" for u in units + ["main"])
    with open(os.path.join(run, "Makefile"), "w") as f:
        f.write("OBJS = %s\n" % objs)
        f.write("prog: $(OBJS)\n\tgcc -o $@ $(OBJS)\n")
        f.write("%.o: %.c\n\tgcc -O2 -c $< -o $@\n")
        f.write("result.txt: prog\n\t./prog > $@\n")


MAKE = r'''
make -s -j2 result.txt
echo "make exit $?"
cat result.txt
'''


def make_progress(run, out, root):
    return len([n for n in os.listdir(run) if n.endswith(".o")]) >= 3


GAWK = r'''
gawk 'BEGIN {
    n = 40000
    for (r = 0; r < 14; r++) {
        delete a
        for (i = 0; i < n; i++) a[sprintf("k%d_%d", i * 7 % n, r)] = (i * i + r) % 1000003
        s = 0; c = 0
        for (k in a) { s = (s * 3 + a[k] + length(k)) % 2147483647; c++ }
        t = 0
        for (i = 0; i < n; i += 3) t = (t + a[sprintf("k%d_%d", i, r)]) % 2147483647
        printf "round %d %d %d\n", r, c, t
        fflush()
        total = (total * 131 + t) % 2147483647
    }
    printf "checksum %d\n", total
}'
'''


def rounds_progress(run, out, root):
    return out.count(b"\nround ") + out.startswith(b"round ") >= 4


PERL = r'''
perl -e '
use strict; use warnings;
$| = 1;
my $total = 0;
my $zombie;
for my $r (0 .. 9) {
    # A child that exits at once and stays a zombie until the next round reaps it.
    if (defined $zombie) {
        waitpid($zombie, 0) == $zombie or die "waitpid: $!";
        my $code = $? >> 8;
        $code == ($r - 1) * 3 % 7 + 1 or die "zombie of round @{[$r - 1]} exited $code";
        print "reaped round @{[$r - 1]} exit $code\n";
    }
    $zombie = fork() // die "fork: $!";
    exit(($r * 3) % 7 + 1) if !$zombie;
    # A child per round computes a hash and sends it back through a pipe (open "-|" forks).
    my $pid = open(my $fh, "-|") // die "fork: $!";
    if (!$pid) {
        my %h;
        for my $i (0 .. 19999) { $h{"k" . ($i * 13 % 20000) . "_$r"} = ($i * $i + $r) % 1000003 }
        print "$_ $h{$_}\n" for sort keys %h;
        exit 0;
    }
    my %got;
    while (my $line = <$fh>) { chomp $line; my ($k, $v) = split / /, $line; $got{$k} = $v }
    close($fh) or die "child: $?";
    my $s = 0;
    $s = ($s * 31 + $got{$_} + length $_) % 2147483647 for sort { $got{$a} <=> $got{$b} || $a cmp $b } keys %got;
    printf "round %d %d %d\n", $r, scalar(keys %got), $s;
    $total = ($total * 131 + $s) % 2147483647;
}
print "checksum $total\n";
'
'''

WORKLOADS = {
    "pipeline": dict(script=PIPELINE, progress=pipeline_progress, needs=["bash", "seq", "gawk", "sort", "sha256sum"]),
    "sort": dict(script=SORT, setup=sort_setup, progress=sort_progress, files=["sorted.txt"],
                 needs=["bash", "sort", "sha256sum", "wc"]),
    "sort-compress": dict(script=SORTZ, setup=sortz_setup, progress=sortz_progress, files=["sorted.txt"],
                          needs=["bash", "sort", "gzip", "sha256sum", "wc"]),
    "make": dict(script=MAKE, setup=make_setup, progress=make_progress,
                 files=["f%02d.o" % i for i in range(MAKE_UNITS)] + ["main.o", "prog", "result.txt"],
                 needs=["bash", "make", "gcc"]),
    "gawk": dict(script=GAWK, progress=rounds_progress, needs=["bash", "gawk"]),
    "perl": dict(script=PERL, progress=rounds_progress, needs=["bash", "perl"]),
}


# ---------------------------------------------------------------- driver

def prepare(run, w):
    os.makedirs(os.path.join(run, "tmp"))
    if "setup" in w:
        w["setup"](run)


def environment(run):
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C", "HOME": run,
            "TMPDIR": os.path.join(run, "tmp"), "SHELL": "/bin/sh"}


def start(run, w):
    return subprocess.Popen(["bash", "-c", w["script"]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, cwd=run,
                            env=environment(run), umask=0o022)


def file_hashes(run, names):
    h = {}
    for n in names:
        p = os.path.join(run, n)
        if not os.path.exists(p):
            h[n] = None
            continue
        with open(p, "rb") as f:
            h[n] = hashlib.sha256(f.read()).hexdigest()
    return h


def check_files(who, run, want):
    got = file_hashes(run, want.keys())
    for n in want:
        if got[n] != want[n]:
            fail("%s: %s differs from the reference's (%s, want %s)" % (who, n, got[n], want[n]))


class Reader(threading.Thread):
    """Collects a pipe's bytes as they come (the workload must never block on its output)."""

    def __init__(self, f):
        super().__init__(daemon=True)
        self.f, self.data, self.lock = f, b"", threading.Lock()
        self.start()

    def run(self):
        while True:
            b = os.read(self.f.fileno(), 65536)
            if not b:
                break
            with self.lock:
                self.data += b

    def get(self):
        with self.lock:
            return self.data


def main():
    global NAME
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--program", required=True, choices=sorted(WORKLOADS))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    NAME = "real." + args.program
    w = WORKLOADS[args.program]
    missing = [p for p in w["needs"] if not shutil.which(p, path="/usr/local/bin:/usr/bin:/bin")]
    if missing:
        print("SKIP: %s: not installed: %s" % (NAME, " ".join(missing)))
        return 0
    engine = os.path.abspath(args.engine)
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="real-%s-" % args.program, dir=args.workdir)
    os.chmod(work, 0o755)
    # Orphans of the tree (and the restored tree) become ours, so that we can reap them.
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER

    # The reference: an uninterrupted run.
    ref = os.path.join(work, "ref")
    prepare(ref, w)
    t0 = time.time()
    r = subprocess.run(["bash", "-c", w["script"]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, cwd=ref,
                       env=environment(ref), umask=0o022, timeout=120)
    ref_time = time.time() - t0
    want = r.stdout
    if r.returncode != 0:
        fail("the reference run exited %d" % r.returncode, want)
    want_files = file_hashes(ref, w.get("files", []))
    if None in want_files.values():
        fail("the reference run left no %s" % [n for n, h in want_files.items() if h is None], want)

    run = os.path.join(work, "run")
    snap = os.path.join(work, "snapshot")
    images = os.path.join(work, "images")
    prepare(run, w)
    os.mkdir(images)
    tree = []

    orig = None

    def kill_tree():
        # The workload's group (the original's, then the copy's: same pgid), and every pid
        # dumped, whatever their group by then.
        if orig is not None:
            try:
                os.killpg(orig.pid, signal.SIGKILL)
            except OSError:
                pass
        for p in tree:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    try:
        orig = start(run, w)
        t_start = time.time()
        reader = Reader(orig.stdout)
        # Dump in the middle of the work: once it shows progress.
        deadline = time.time() + 60
        while not w["progress"](run, reader.get(), orig.pid):
            if orig.poll() is not None:
                fail("the workload ended before the dump (reference run: %.1f s)" % ref_time, reader.get())
            if time.time() > deadline:
                orig.kill()
                fail("no progress seen in 60 s", reader.get())
            time.sleep(0.01)
        # The files as the images know them: copied while the tree is still frozen.
        action = '[ "$CRTOOLS_SCRIPT_ACTION" != post-dump ] || cp -a %s %s' % (shlex.quote(run), shlex.quote(snap))
        t_at = time.time() - t_start
        t_dump = time.time()
        d = subprocess.run([engine, "dump", "-t", str(orig.pid), "-D", images, "--leave-running",
                            "--action-script", action], capture_output=True, text=True, timeout=120)
        t_dump = time.time() - t_dump
        if d.returncode != 0:
            os.killpg(orig.pid, signal.SIGKILL)
            fail("dump failed: " + d.stderr.strip())
        tree = [int(m.group(1)) for n in os.listdir(images) if (m := re.fullmatch(r"core-(\d+)\.img", n))]
        shown = subprocess.run([engine, "show", images, "--json"], capture_output=True, text=True, timeout=60)
        tasks = json.loads(shown.stdout)["images"]["inventory.img"]["tasks"] if shown.returncode == 0 else []
        zombies = sum(t.get("state") == "ZOMBIE" for t in tasks)
        if not os.path.isdir(snap):
            fail("the post-dump action script made no copy of the workload's folder")
        orig.wait(timeout=120)
        reader.join(timeout=10)
        out = reader.get()
        if orig.returncode != 0:
            fail("the original exited %d" % orig.returncode, out)
        if out != want:
            fail("the original's output differs from the reference's", out)
        check_files("the original", run, want_files)
        # Every pid of the tree free again: its processes gone, and no process left in its
        # session (a group or session id holds the pid too). Orphans are ours to reap: perl
        # leaves its last zombie child unreaped.
        deadline = time.time() + 30
        while True:
            try:
                while os.waitpid(-1, os.WNOHANG)[0] > 0:
                    pass
            except ChildProcessError:
                pass
            left = [p for p in tree if os.path.exists("/proc/%d" % p)] + session_members(orig.pid)
            if not left:
                break
            if time.time() > deadline:
                fail("processes of the tree still there 30 s after the original ended: %s" % left)
            time.sleep(0.05)
        # The folder as it was at the dump.
        shutil.rmtree(run)
        os.rename(snap, run)
        r = subprocess.run([engine, "restore", "-D", images], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=120)
        if r.returncode != 0:
            fail("the restored copy (or the restore) exited %d: %s" % (r.returncode, r.stderr.decode(errors="replace").strip()),
                 r.stdout)
        rest = r.stdout
        # The copy prints what the original had not printed when it was frozen: a suffix of
        # the reference's output, from a line start.
        if not want.endswith(rest) or (len(rest) < len(want) and want[len(want) - len(rest) - 1:len(want) - len(rest)] != b"\n"):
            fail("the restored copy's output is not the rest of the reference's (stderr: %s)" %
                 r.stderr.decode(errors="replace").strip(), rest)
        if not rest:
            fail("the restored copy printed nothing (the dump came after the end?)")
        check_files("the restored copy", run, want_files)
    except subprocess.TimeoutExpired as e:
        kill_tree()
        out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output or "")
        fail("timed out: %s" % (e.cmd,), out)
    finally:
        kill_tree()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS: %s (%d processes, %d zombies dumped after %.1f s of a %.1f s run, dump %.2f s; the copy printed %d of %d lines, exact)" %
          (NAME, len(tree), zombies, t_at, ref_time, t_dump, rest.count(b"\n"), want.count(b"\n")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
