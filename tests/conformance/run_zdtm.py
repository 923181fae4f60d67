#!/usr/bin/env python3
"""Runs CRIU's conformance programs (zdtm "static" tests, host flavour) against ckpt-engine.

Not part of the test suite: the programs are CRIU's and are not in this repository. Give a
CRIU checkout; its test/zdtm folder is copied into the work folder and built there (gcc, make),
then each program is started as CRIU's runner starts it (as uid 18943 unless its .desc says
suid), dumped (`ckpt-engine dump`, killing it), restored detached, told to check itself
(SIGTERM) and its verdict read. Each result is one of:

  pass             restored, and the program found its state right
  WRONG            restored and reported success, but the program found its state wrong:
                   the worst outcome (a restore that says it worked must be exactly right)
  refused-dump     the dump failed (the first line of its error is shown)
  refused-restore  the restore failed
  env              the program fails here even without a dump (a feature this machine lacks)
  start-fail       the program did not start here
  skip             not for the host flavour, another architecture, or marked noauto

Usage (as root):
  tests/conformance/run_zdtm.py --criu-src ~/criu --engine build/engine/ckpt-engine \\
      --work /var/tmp/zdtm [NAME...]
Results go to WORK/results.json (kept between runs: names already there are not run again
unless given, or with --again) and a table on stdout.
"""
import argparse
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ARCH = os.uname().machine


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def run(cmd, timeout, env=None):
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=timeout, env=env, close_fds=True)
        return r.returncode, r.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        return -1, (e.stdout or b"").decode(errors="replace") + "\n(timed out)"


def gone(pid, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


class Suite:
    def __init__(self, args):
        self.engine = os.path.abspath(args.engine)
        self.static = os.path.join(args.work, "test", "zdtm", "static")
        self.images = os.path.join(args.work, "images")

    def desc(self, name):
        text = read(os.path.join(self.static, name + ".desc")).strip()
        try:
            return ast.literal_eval(text) if text else {}
        except (ValueError, SyntaxError):
            return {}

    def env(self, d):
        env = dict(os.environ, TMPDIR="/tmp")
        if "suid" not in d.get("flags", "").split():
            env.update(ZDTM_UID="18943", ZDTM_GID="58467", ZDTM_GROUPS="27495 48244")
        return env

    def pid(self, name):
        try:
            return int(read(os.path.join(self.static, name + ".pid")).split()[0])
        except (IndexError, ValueError):
            return None

    def clean(self, name):
        run(["make", "--no-print-directory", "-C", self.static, name + ".cleanout"], 60)
        for suffix in (".pid", ".out", ".out.inprogress", ".test", ".dir.test"):
            p = os.path.join(self.static, name + suffix)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                os.unlink(p)

    def kill(self, pid):
        if pid:
            for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    kill()
                except OSError:
                    pass
            gone(pid, 5)

    def kill_strays(self, name):
        """A program that failed to start may still run (it timed out before writing its pid):
        every process running its executable is killed, so that it holds no port or file."""
        exe = os.path.join(self.static, name)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/exe") == exe:
                        os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass

    def start(self, name, d):
        self.clean(name)
        rc, out = run(["make", "--no-print-directory", "-C", self.static, name + ".pid"],
                      int(d.get("timeout") or 30), self.env(d))
        if rc != 0:
            self.kill_strays(name)
        return self.pid(name) if rc == 0 else None, out

    def verdict(self, name, pid):
        """SIGTERM asks the program to check itself; its .out says PASS or why not."""
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return None
        end = time.monotonic() + 15
        while time.monotonic() < end and os.path.exists(os.path.join(self.static, name + ".pid")):
            time.sleep(0.05)
        gone(pid, 5)
        out = read(os.path.join(self.static, name + ".out"))
        return "PASS" in out.split(), out + read(os.path.join(self.static, name + ".out.inprogress"))

    def baseline(self, name, d):
        pid, _ = self.start(name, d)
        if pid is None:
            return False
        time.sleep(0.3)
        v = self.verdict(name, pid)
        self.kill(pid)
        return bool(v and v[0])

    def one(self, name):
        try:
            return self.run_one(name)
        finally:
            self.kill_strays(name)

    def run_one(self, name):
        d = self.desc(name)
        flags = d.get("flags", "").split()
        if d.get("arch", ARCH) != ARCH:
            return "skip", "arch " + d["arch"]
        if "h" not in d.get("flavor", "h ns uns").split():
            return "skip", "flavour " + d.get("flavor", "")
        if "noauto" in flags:
            return "skip", "noauto"
        pid, out = self.start(name, d)
        if pid is None:
            return "start-fail", out[-400:] + read(os.path.join(self.static, name + ".out"))
        opts = d.get("opts", "").split()
        img = os.path.join(self.images, name)
        shutil.rmtree(img, ignore_errors=True)
        os.makedirs(img)
        crfail = "crfail" in flags
        rc, out = run([self.engine, "dump", "-t", str(pid), "-D", img] + opts + d.get("dopts", "").split(), 120)
        if rc != 0:
            self.kill(pid)
            return ("pass", "refused, as expected (crfail)") if crfail else ("refused-dump", out)
        if not gone(pid, 30):
            self.kill(pid)
            return "refused-dump", "the dumped tree is still there"
        os.unlink(os.path.join(self.static, name + ".pid"))
        rc, out = run([self.engine, "restore", "-D", img, "-d", "--pidfile", os.path.join(self.static, name + ".pid")]
                      + opts + d.get("ropts", "").split(), 120)
        if rc != 0:
            return ("pass", "refused, as expected (crfail)") if crfail else ("refused-restore", out)
        pid = self.pid(name)
        time.sleep(0.2)
        v = self.verdict(name, pid) if pid else None
        self.kill(pid)
        if v and v[0]:
            return "pass", ""
        why = v[1] if v else "the restored program was gone before it was asked to check"
        return ("WRONG", why) if self.baseline(name, d) else ("env", why)

    def names(self):
        out = []
        for f in sorted(os.listdir(self.static)):
            n = f[:-2] if f.endswith(".c") else None
            if n and os.access(os.path.join(self.static, n), os.X_OK):
                out.append(n)
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criu-src", required=True, help="a CRIU checkout (its test/zdtm is used)")
    ap.add_argument("--engine", required=True)
    ap.add_argument("--work", required=True, help="where the programs are built and run")
    ap.add_argument("--again", action="store_true", help="run every program again")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run_zdtm.py: run as root (the programs run as another user, the engine as root)")
    src = os.path.join(args.criu_src, "test", "zdtm")
    if not os.path.isdir(os.path.join(src, "static")):
        sys.exit(f"run_zdtm.py: no test/zdtm/static in {args.criu_src}")
    dest = os.path.join(args.work, "test", "zdtm")
    if not os.path.isdir(dest):
        shutil.copytree(src, dest, symlinks=True)
    for part in ("lib", "static"):
        # -k: a program that needs a header this machine lacks is left out, the rest built.
        run(["make", "-k", "-j", str(os.cpu_count() or 1), "-C", os.path.join(dest, part)], 3600)
    suite = Suite(args)
    os.chmod(suite.static, 0o777)  # the programs run as uid 18943 and write their .out there
    results_path = os.path.join(args.work, "results.json")
    results = json.loads(read(results_path) or "{}")
    for name in args.names or suite.names():
        if name in results and not args.names and not args.again:
            continue
        t0 = time.monotonic()
        try:
            res, why = suite.one(name)
        except Exception as e:  # a runner failure is recorded, the run goes on
            res, why = "error", repr(e)
        results[name] = [res, why]
        last = (why.strip().splitlines() or [""])[-1][:140]
        print(f"{name:36} {res:16} {time.monotonic() - t0:5.1f}s {last}", flush=True)
        with open(results_path, "w") as f:
            json.dump(results, f, indent=1)
    counts = {}
    for res, _ in results.values():
        counts[res] = counts.get(res, 0) + 1
    print(" ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 1 if counts.get("WRONG") else 0


if __name__ == "__main__":
    sys.exit(main())
