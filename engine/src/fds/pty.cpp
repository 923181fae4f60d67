// Terminals the tree makes for itself: pty pairs (man 4 pts) whose master (/dev/ptmx) a
// process of the tree holds, as `script`, `expect` or a terminal multiplexer make them. Each
// pair is made again in the restorer's devpts (/dev/ptmx, /dev/pts) under the number it had,
// so that ttyname() and /proc/PID/fd say what they said; when that number is taken (the
// original still runs, or another program has it) the restore is refused rather than give
// the program another name. Kept: the slave's termios whole (TCGETS2) and window size, packet
// mode, the lock (TIOCSPTLCK), exclusive mode of each end, every open file description of
// each end with its flags, /dev/tty opened by a process whose controlling terminal the slave
// is, and that controlling terminal itself: the session leader takes it again (TIOCSCTTY)
// before any process of its session is made, then the foreground process group is set.
//
// What the slave side wrote and the master has not read (a program's output its terminal
// has not shown yet: Open MPI's ranks write to ptys mpirun reads) is kept: read out of the
// master at dump and written back at once through the slave with output processing (OPOST)
// off for the time of the write, so the master finds the same bytes (already processed), and
// written the same way at restore. Refused by name: such data in packet mode (each read adds
// a status byte) or when the tree holds no slave; complete lines or raw bytes the master
// wrote that the slave has not read (FIONREAD of the slave: writing them again would go
// through echo and input processing a second time); a packet-mode status not yet read
// (POLLPRI). The kernel shows no count of a canonical line not yet ended (FIONREAD counts
// complete lines): such a partial line, and data the master wrote to a locked slave nobody
// opened, cannot be seen at dump and are lost (docs/engine.md).
//
// Refused: the console, virtual terminals, serial ports and any other terminal device, and a
// pty whose other end is outside the tree (unless it is a shell job's terminal, --shell-job:
// terminal.cpp binds it to the restoring shell's).
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstring>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "ckpt/engine/syscalls.h"
#include "fd_kind.h"
#include "fd_table.h"
#include "restore_task.h"

namespace ckpt::engine {

extern const FdKind kTerminalKind;

namespace {

constexpr unsigned kPtsMajor = 136;                // UNIX98_PTY_SLAVE_MAJOR: /dev/pts/N is 136:N
constexpr uint32_t kMaxPtsIndex = (1u << 20) - 1;  // NR_UNIX98_PTY_MAX
constexpr size_t kNccs = 19;                       // the kernel's NCCS

// The kernel's struct termios2 (asm/termbits.h, which clashes with glibc's <termios.h>).
struct KTermios2 {
    uint32_t iflag, oflag, cflag, lflag;
    uint8_t line;
    uint8_t cc[kNccs];
    uint32_t ispeed, ospeed;
};
static_assert(sizeof(KTermios2) == 44);
constexpr unsigned long kTcgets2 = _IOR('T', 0x2A, KTermios2);
constexpr unsigned long kTcsets2 = _IOW('T', 0x2B, KTermios2);

bool is_ptmx(dev_t r) { return major(r) == 5 && minor(r) == 2; }
bool is_dev_tty(dev_t r) { return major(r) == 5 && minor(r) == 0; }
bool is_pts(dev_t r) { return major(r) == kPtsMajor; }

// A terminal device the tree may not take along, by name.
std::string refused_device(dev_t r, std::string_view link) {
    if (major(r) == 5 && minor(r) == 1) return "the console (/dev/console)";
    if (major(r) == 4 && minor(r) < 64) return fmt::format("a virtual terminal (/dev/tty{}, {})", minor(r), link);
    if (major(r) == 4) return fmt::format("a serial port (/dev/ttyS{}, {})", minor(r) - 64, link);
    return fmt::format("a terminal device {}:{} ({}): a serial port or another terminal driver", major(r), minor(r), link);
}

Result<int> ioctl_int(int fd, unsigned long req, const char* name) {
    int v = 0;
    if (::ioctl(fd, req, &v) != 0) return sys_error("ioctl({})", name);
    return v;
}

// The pair of a master: its pts number and the st_dev of the devpts instance its slave is in.
// The slave's node of a pair (named, not opened: a locked one could not be), and its number.
Result<std::pair<struct stat, uint32_t>> slave_node(int master) {
    int index = CKPT_TRY(ioctl_int(master, TIOCGPTN, "TIOCGPTN"));
    UniqueFd peer(::ioctl(master, TIOCGPTPEER, O_PATH | O_CLOEXEC));
    if (!peer) return sys_error("ioctl(TIOCGPTPEER) of /dev/pts/{}", index);
    struct stat st;
    if (fstat(peer.get(), &st) != 0) return sys_error("fstat of /dev/pts/{}", index);
    return std::pair<struct stat, uint32_t>{st, static_cast<uint32_t>(index)};
}

Result<std::pair<uint64_t, uint32_t>> master_key(int master) {
    auto [st, index] = CKPT_TRY(slave_node(master));
    return std::pair<uint64_t, uint32_t>{static_cast<uint64_t>(st.st_dev), index};
}

Result<short> poll_now(int fd) {
    pollfd p{fd, POLLIN | POLLPRI, 0};
    if (::poll(&p, 1, 0) < 0) return sys_error("poll");
    return p.revents;
}

// The pairs of the tree with pts number index (devpts instances are told apart only by an
// fd's st_dev, which /proc/PID/stat and TIOCGDEV do not give).
std::vector<const PtyPairs::Master*> pairs_numbered(const PtyPairs& ptys, uint32_t index) {
    std::vector<const PtyPairs::Master*> out;
    for (const auto& [key, m] : ptys.masters)
        if (key.second == index) out.push_back(&m);
    return out;
}

// The one pair of the tree whose slave is the terminal rdev; null when none is.
Result<const PtyPairs::Master*> pair_of_terminal(const PtyPairs& ptys, uint64_t rdev) {
    if (!is_pts(static_cast<dev_t>(rdev))) return static_cast<const PtyPairs::Master*>(nullptr);
    auto found = pairs_numbered(ptys, minor(static_cast<dev_t>(rdev)));
    if (found.size() > 1)
        return error_code(ENOTSUP, "the tree holds the masters of two ptys numbered {} (in different devpts "
                                   "instances): which one a controlling terminal is cannot be told",
                          minor(static_cast<dev_t>(rdev)));
    return found.empty() ? nullptr : found.front();
}

// tty_nr (st_rdev form) and tpgid (as the engine sees it) of /proc/PID/stat.
struct ProcTty {
    uint64_t tty_nr = 0;
    pid_t tpgid = -1;
};
Result<ProcTty> proc_tty(pid_t pid) {
    std::string text = CKPT_TRY(read_file(proc_path(pid, "stat")));
    size_t close = text.rfind(')');
    if (close == std::string::npos) return error("/proc/{}/stat: no ')'", pid);
    // After "comm)": state ppid pgrp session tty_nr tpgid
    std::vector<std::string> fields;
    for (std::string_view rest = std::string_view(text).substr(close + 1); fields.size() < 6;) {
        rest = trim(rest);
        size_t sp = rest.find(' ');
        if (rest.empty()) return error("/proc/{}/stat: too few fields", pid);
        fields.emplace_back(rest.substr(0, sp));
        rest = sp == std::string_view::npos ? std::string_view() : rest.substr(sp);
    }
    auto tty_nr = parse_uint(fields[4]);
    auto tpgid = parse_int(fields[5]);
    if (!tty_nr || !tpgid) return error("/proc/{}/stat: tty_nr '{}' or tpgid '{}' is not a number", pid, fields[4], fields[5]);
    ProcTty t;
    t.tty_nr = *tty_nr;
    t.tpgid = static_cast<pid_t>(*tpgid);
    return t;
}

// Any other terminal (a USB serial port...): a device number in the range of a tty driver
// (/proc/tty/drivers: name, node, major, minor or first-last, type). Asked of the kernel's
// list, not of the device: an ioctl to an unknown driver could mean anything to it.
std::vector<std::array<uint32_t, 3>> read_tty_drivers() {
    std::vector<std::array<uint32_t, 3>> out;
    auto drivers = read_file("/proc/tty/drivers");
    if (!drivers) return out;
    for (std::string_view line : split(*drivers, '\n')) {
        std::vector<std::string_view> f;
        for (std::string_view w : split(line, ' '))
            if (!w.empty()) f.push_back(w);
        if (f.size() < 4) continue;
        auto maj = parse_uint(f[2]);
        const size_t dash = f[3].find('-');
        auto first = parse_uint(f[3].substr(0, dash));
        auto last = dash == std::string_view::npos ? first : parse_uint(f[3].substr(dash + 1));
        if (maj && first && last)
            out.push_back({static_cast<uint32_t>(*maj), static_cast<uint32_t>(*first), static_cast<uint32_t>(*last)});
    }
    return out;
}

bool is_tty_driver_device(dev_t r, PtyPairs& ptys) {
    if (!ptys.tty_drivers) ptys.tty_drivers = read_tty_drivers();
    for (const auto& [maj, first, last] : *ptys.tty_drivers)
        if (maj == major(r) && minor(r) >= first && minor(r) <= last) return true;
    return false;
}

bool claims_pty(const FdProbe& probe) {
    if (probe.link.empty() || probe.link[0] != '/' || (probe.info.flags & O_PATH)) return false;
    auto st = probe.stat_target();
    if (!st || !S_ISCHR(st->st_mode)) return false;
    dev_t r = st->st_rdev;
    if (is_ptmx(r) || is_dev_tty(r) || is_pts(r) || major(r) == 4 || (major(r) == 5 && minor(r) == 1)) return true;
    return is_tty_driver_device(r, probe.state->ptys);
}

// Every master of the tree with its pair's state (recorded once), what of the slaves the tree
// holds, and which terminals its /dev/tty fds name.
Result<void> survey_pty(const FdProbe& probe) {
    if (probe.restorers()) return ok();
    PtyPairs& ptys = probe.state->ptys;
    dev_t r = CKPT_TRY(probe.stat_target()).st_rdev;
    if (is_pts(r)) {
        ptys.slaves.insert({static_cast<uint64_t>(CKPT_TRY(probe.stat_target()).st_dev), minor(r)});
        return ok();
    }
    if (is_dev_tty(r)) {
        UniqueFd mine = CKPT_TRY(probe.take());
        unsigned int dev = 0;
        if (::ioctl(mine.get(), TIOCGDEV, &dev) != 0) return sys_error("ioctl(TIOCGDEV) of /dev/tty");
        ptys.dev_tty.insert(dev);
        return ok();
    }
    if (!is_ptmx(r)) return ok();
    UniqueFd mine = CKPT_TRY(probe.take());
    auto key = CKPT_TRY(master_key(mine.get()));
    auto [it, fresh] = ptys.masters.try_emplace(key);
    if (!fresh) return ok();
    PtyPairs::Master& m = it->second;
    m.pid = probe.pid;
    m.fd = probe.fd;
    m.hup = (CKPT_TRY(poll_now(mine.get())) & POLLHUP) != 0;
    image::FileTable& table = probe.state->files.table();
    m.entry = table.ptys_size();
    auto* e = table.add_ptys();
    e->set_id(static_cast<uint64_t>(m.entry) + 1);
    e->set_index(key.second);
    // Termios and window size ioctls on a master act on its slave.
    KTermios2 t{};
    if (::ioctl(mine.get(), kTcgets2, &t) != 0) return sys_error("ioctl(TCGETS2)");
    auto* tt = e->mutable_termios();
    tt->set_iflag(t.iflag);
    tt->set_oflag(t.oflag);
    tt->set_cflag(t.cflag);
    tt->set_lflag(t.lflag);
    tt->set_line(t.line);
    tt->set_cc(std::string(reinterpret_cast<const char*>(t.cc), kNccs));
    tt->set_ispeed(t.ispeed);
    tt->set_ospeed(t.ospeed);
    winsize ws{};
    if (::ioctl(mine.get(), TIOCGWINSZ, &ws) != 0) return sys_error("ioctl(TIOCGWINSZ)");
    e->set_ws_row(ws.ws_row);
    e->set_ws_col(ws.ws_col);
    e->set_ws_xpixel(ws.ws_xpixel);
    e->set_ws_ypixel(ws.ws_ypixel);
    e->set_packet(CKPT_TRY(ioctl_int(mine.get(), TIOCGPKT, "TIOCGPKT")) != 0);
    e->set_locked(CKPT_TRY(ioctl_int(mine.get(), TIOCGPTLCK, "TIOCGPTLCK")) != 0);
    e->set_master_exclusive(CKPT_TRY(ioctl_int(mine.get(), TIOCGEXCL, "TIOCGEXCL")) != 0);
    const struct stat node = CKPT_TRY(slave_node(mine.get())).first;
    e->set_slave_node_recorded(true);
    e->set_slave_uid(node.st_uid);
    e->set_slave_gid(node.st_gid);
    e->set_slave_mode(node.st_mode & 07777);
    return ok();
}

// What is queued for the fd to read (FIONREAD); refused when anything is.
Result<void> refuse_queued(int fd, const char* what) {
    int n = CKPT_TRY(ioctl_int(fd, FIONREAD, "FIONREAD"));
    if (n > 0) return error_code(ENOTSUP, "{} bytes {} (queued terminal data is not supported)", n, what);
    return ok();
}

// Writes data through the slave to be read by the master as it is: output processing off
// (termios, set through the master, is the slave's) for the time of the write.
Result<void> write_through_slave(int master, int slave, const std::string& data) {
    KTermios2 t{};
    if (::ioctl(master, kTcgets2, &t) != 0) return sys_error("ioctl(TCGETS2)");
    KTermios2 raw = t;
    constexpr uint32_t kOpost = 01;  // OPOST (asm/termbits.h)
    raw.oflag &= ~kOpost;
    if (::ioctl(master, kTcsets2, &raw) != 0) return sys_error("ioctl(TCSETS2) without OPOST");
    Result<void> written = write_all(slave, data.data(), data.size());
    if (::ioctl(master, kTcsets2, &t) != 0) return sys_error("ioctl(TCSETS2) putting OPOST back");
    return written;
}

// What the slave wrote that the master has not read, taken out of the master (non-blocking
// for the time of the read: a read, unlike FIONREAD, first takes in what the kernel still
// holds in its buffers) and given back at once through the slave.
Result<std::string> take_master_input(int master) {
    int fl = fcntl(master, F_GETFL);
    if (fl < 0) return sys_error("fcntl(F_GETFL)");
    if (!(fl & O_NONBLOCK) && fcntl(master, F_SETFL, fl | O_NONBLOCK) != 0) return sys_error("fcntl(F_SETFL)");
    std::string data;
    char buf[65536];
    int err = 0;
    for (;;) {
        ssize_t n = ::read(master, buf, sizeof buf);
        if (n > 0) {
            data.append(buf, static_cast<size_t>(n));
            if (data.size() > (1u << 20)) {
                err = EFBIG;
                break;
            }
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno != EAGAIN && errno != EIO) err = errno;
        break;
    }
    if (!(fl & O_NONBLOCK) && fcntl(master, F_SETFL, fl) != 0) return sys_error("fcntl(F_SETFL)");
    if (!data.empty()) {
        UniqueFd slave(::ioctl(master, TIOCGPTPEER, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC));
        if (!slave) return sys_error("ioctl(TIOCGPTPEER): giving the master back the {} bytes read out", data.size());
        CKPT_TRY_CTX(write_through_slave(master, slave.get(), data), "giving the master back the {} bytes read out",
                     data.size());
    }
    if (err == EFBIG) return error_code(ENOTSUP, "more than 1 MiB queued for the master: not supported");
    if (err) return sys_error_code(err, "read of the master");
    return data;
}

Result<void> dump_pty(const FdProbe& probe, image::Fd* f) {
    PtyPairs& ptys = probe.state->ptys;
    image::FileTable& table = probe.state->files.table();
    struct stat st = CKPT_TRY(probe.stat_target());
    dev_t r = st.st_rdev;
    const PtyPairs::Master* pair = nullptr;
    image::PtyEnd end = image::PTY_MASTER;
    UniqueFd mine = CKPT_TRY(probe.take());
    if (is_ptmx(r)) {
        auto it = ptys.masters.find(CKPT_TRY(master_key(mine.get())));
        if (it == ptys.masters.end()) return error("a pty master the survey of the tree did not see");
        pair = &it->second;
        const image::PtyEntry& e = table.ptys(pair->entry);
        if (e.packet() || !e.slave_held()) {
            CKPT_TRY(refuse_queued(mine.get(), fmt::format("the slave /dev/pts/{} wrote are not read by this master{}",
                                                           e.index(), e.packet() ? " in packet mode" : "").c_str()));
        } else if (pair->pid == probe.pid && pair->fd == probe.fd) {
            std::string out = CKPT_TRY_CTX(take_master_input(mine.get()), "/dev/pts/{}", e.index());
            table.mutable_ptys(pair->entry)->set_to_master(std::move(out));
        }
        if (e.packet() && (CKPT_TRY(poll_now(mine.get())) & POLLPRI))
            return error_code(ENOTSUP, "a packet-mode status of /dev/pts/{} is not read by this master yet: not supported",
                              e.index());
    } else if (is_pts(r) || is_dev_tty(r)) {
        uint64_t tty = r;
        if (is_dev_tty(r)) {
            unsigned int dev = 0;
            if (::ioctl(mine.get(), TIOCGDEV, &dev) != 0) return sys_error("ioctl(TIOCGDEV) of /dev/tty");
            tty = dev;
            pair = CKPT_TRY(pair_of_terminal(ptys, tty));
            end = image::PTY_DEV_TTY;
        } else {
            auto it = ptys.masters.find({static_cast<uint64_t>(st.st_dev), minor(r)});
            if (it != ptys.masters.end()) pair = &it->second;
            end = image::PTY_SLAVE;
        }
        if (!pair) {
            if (probe.state->shell_job) return kTerminalKind.dump(probe, f);
            return error_code(ENOTSUP,
                              "the terminal {} ({}:{}) is a pty whose master is not held by the tree: a terminal of "
                              "another program cannot be restored (a shell job's terminal is taken again with "
                              "--shell-job)",
                              probe.link, major(static_cast<dev_t>(tty)), minor(static_cast<dev_t>(tty)));
        }
        const image::PtyEntry& e = table.ptys(pair->entry);
        if (end == image::PTY_DEV_TTY) {
            // Restored by the process opening /dev/tty: its controlling terminal must be that one.
            if (CKPT_TRY(proc_tty(probe.pid)).tty_nr != tty)
                return error_code(ENOTSUP, "/dev/tty of /dev/pts/{}, which is no longer the process's controlling "
                                           "terminal: not supported", e.index());
        }
        CKPT_TRY(refuse_queued(mine.get(), fmt::format("the master wrote are not read from /dev/pts/{}", e.index()).c_str()));
        if (CKPT_TRY(ioctl_int(mine.get(), TIOCGEXCL, "TIOCGEXCL")))
            table.mutable_ptys(pair->entry)->set_slave_exclusive(true);
    } else {
        if (probe.state->shell_job) return kTerminalKind.dump(probe, f);
        return error_code(ENOTSUP, "{} cannot be restored", refused_device(r, probe.link));
    }
    f->set_kind(image::Fd::PTY);
    f->set_pty_id(table.ptys(pair->entry).id());
    f->set_pty_end(end);
    f->set_description_id(CKPT_TRY(probe.description_id(st)));
    return ok();
}

// --- restore ---

Result<const image::PtyEntry*> entry_of(const RestoreShared& sh, uint64_t id) {
    for (const auto& e : sh.files.ptys())
        if (e.id() == id) return &e;
    return error_code(EINVAL, "pty {} missing from the images (image is corrupt)", id);
}

// A new pair in this devpts numbered index: /dev/ptmx gives the lowest free number, so it is
// opened until that number comes (the ones below held meanwhile); refused when it is taken.
Result<UniqueFd> open_pty_numbered(uint32_t index) {
    std::vector<UniqueFd> below;
    for (;;) {
        UniqueFd m(::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!m) return sys_error("open /dev/ptmx for /dev/pts/{}", index);
        int got = CKPT_TRY(ioctl_int(m.get(), TIOCGPTN, "TIOCGPTN"));
        if (static_cast<uint32_t>(got) == index) return m;
        if (static_cast<uint32_t>(got) > index)
            return error_code(EBUSY,
                              "/dev/pts/{} is in use in this devpts (by another program, or by the original tree "
                              "still running): the restored tree would see its terminal under another name; refused",
                              index);
        below.push_back(std::move(m));
    }
}

// The slave's node given its recorded owner and mode (as the restoring user may: a user's
// restore is refused an owner it could not give).
Result<void> set_slave_node(int master, const image::PtyEntry& e) {
    if (!e.slave_node_recorded()) return ok();
    if (e.slave_mode() & ~07777u) return error_code(EINVAL, "slave mode {:o} (image is corrupt)", e.slave_mode());
    UniqueFd peer(::ioctl(master, TIOCGPTPEER, O_PATH | O_CLOEXEC));
    if (!peer) return sys_error("ioctl(TIOCGPTPEER)");
    struct stat st;
    if (fstat(peer.get(), &st) != 0) return sys_error("fstat of the slave");
    if ((st.st_uid != e.slave_uid() || st.st_gid != e.slave_gid()) &&
        fchownat(peer.get(), "", e.slave_uid(), e.slave_gid(), AT_EMPTY_PATH) != 0)
        return sys_error("giving the slave its owner {}:{} (fchownat)", e.slave_uid(), e.slave_gid());
    // After the owner: a change of owner clears set-id bits. (chmod through the fd's link:
    // an O_PATH fd takes no fchmod.)
    if ((st.st_mode & 07777) != e.slave_mode() &&
        chmod(fmt::format("/proc/self/fd/{}", peer.get()).c_str(), e.slave_mode()) != 0)
        return sys_error("giving the slave its mode {:o} (chmod)", e.slave_mode());
    return ok();
}

Result<void> set_termios(int master, const image::PtyEntry& e) {
    const auto& tt = e.termios();
    KTermios2 t{};
    t.iflag = tt.iflag();
    t.oflag = tt.oflag();
    t.cflag = tt.cflag();
    t.lflag = tt.lflag();
    t.line = static_cast<uint8_t>(tt.line());
    std::memcpy(t.cc, tt.cc().data(), kNccs);
    t.ispeed = tt.ispeed();
    t.ospeed = tt.ospeed();
    if (::ioctl(master, kTcsets2, &t) != 0) return sys_error("ioctl(TCSETS2)");
    KTermios2 now{};
    if (::ioctl(master, kTcgets2, &now) != 0) return sys_error("ioctl(TCGETS2)");
    if (std::memcmp(&now, &t, sizeof t) != 0)
        return error_code(EINVAL, "the terminal does not take the recorded termios (flags {:o} {:o} {:o} {:o}, speeds {} {})",
                          t.iflag, t.oflag, t.cflag, t.lflag, t.ispeed, t.ospeed);
    return ok();
}

// Every pair before any process: numbered as recorded, with the slave's termios and window
// size; packet mode once the termios is set (a change in packet mode is a status to read).
Result<void> make_ptys(RestoreShared& sh) {
    std::set<uint64_t> ids;
    for (const auto& e : sh.files.ptys()) {
        auto ctx = [&](Error err) { return err.context("/dev/pts/{}", e.index()); };
        if (e.id() == 0 || !ids.insert(e.id()).second)
            return error_code(EINVAL, "pty {} recorded twice or numbered 0 (image is corrupt)", e.id());
        if (e.index() > kMaxPtsIndex || e.termios().cc().size() != kNccs || e.ws_row() > 0xffff ||
            e.ws_col() > 0xffff || e.ws_xpixel() > 0xffff || e.ws_ypixel() > 0xffff || e.termios().line() > 0xff ||
            e.session() < 0 || e.foreground() < 0 || (e.foreground() != 0 && e.session() == 0))
            return error_code(EINVAL, "pty {}: a field out of range (image is corrupt)", e.id());
        if (!e.slave_held() && (!e.locked() || e.session() != 0))
            return error_code(EINVAL, "pty {}: a slave nobody holds must be locked (image is corrupt)", e.id());
        auto master = open_pty_numbered(e.index());
        if (!master) return ctx(std::move(master).error());
        UniqueFd slave;
        int zero = 0;
        if (e.slave_held()) {
            if (::ioctl(master->get(), TIOCSPTLCK, &zero) != 0) return ctx(sys_error_code(errno, "ioctl(TIOCSPTLCK)"));
            slave = UniqueFd(::ioctl(master->get(), TIOCGPTPEER, O_RDWR | O_NOCTTY));
            if (!slave || fcntl(slave.get(), F_SETFD, FD_CLOEXEC) != 0)
                return ctx(sys_error_code(errno, "ioctl(TIOCGPTPEER)"));
        }
        if (auto r = set_termios(master->get(), e); !r) return ctx(std::move(r).error());
        if (auto r = set_slave_node(master->get(), e); !r) return ctx(std::move(r).error());
        winsize ws{static_cast<unsigned short>(e.ws_row()), static_cast<unsigned short>(e.ws_col()),
                   static_cast<unsigned short>(e.ws_xpixel()), static_cast<unsigned short>(e.ws_ypixel())};
        int on = 1;
        if (::ioctl(master->get(), TIOCSWINSZ, &ws) != 0) return ctx(sys_error_code(errno, "ioctl(TIOCSWINSZ)"));
        if (e.packet() && ::ioctl(master->get(), TIOCPKT, &on) != 0) return ctx(sys_error_code(errno, "ioctl(TIOCPKT)"));
        if (e.master_exclusive() && ::ioctl(master->get(), TIOCEXCL) != 0)
            return ctx(sys_error_code(errno, "ioctl(TIOCEXCL)"));
        if (!e.to_master().empty()) {
            if (!slave || e.packet() || e.to_master().size() > (1u << 20))
                return error_code(EINVAL, "pty {}: data for the master with no slave, in packet mode or too much (image "
                                          "is corrupt)", e.id());
            if (auto r = write_through_slave(master->get(), slave.get(), e.to_master()); !r)
                return ctx(std::move(r).error().context("what the slave had written"));
        }
        sh.ptys[e.id()] = {std::move(*master), std::move(slave)};
    }
    return ok();
}

// A process's own open of /dev/tty (its controlling terminal is the pair's slave by now),
// taken into the engine so that every fd sharing the description gets it.
Result<UniqueFd> open_dev_tty_in(RestoreTask& t, const image::Fd& f, const image::PtyEntry& e) {
    auto s = t.scratch.scope();
    static constexpr char kPath[] = "/dev/tty";
    uint64_t path = CKPT_TRY(s.put(kPath, sizeof kPath, 1));
    int64_t fd = CKPT_TRY(t.leader->syscall_ok(
        "openat(/dev/tty)", SYS_openat,
        {static_cast<uint64_t>(AT_FDCWD), path, (f.flags() & O_ACCMODE) | O_NOCTTY | O_CLOEXEC, 0}));
    UniqueFd pidfd(sys_pidfd_open(t.host, 0));
    UniqueFd mine;
    if (pidfd) mine = UniqueFd(sys_pidfd_getfd(pidfd.get(), static_cast<int>(fd), 0));
    int err = errno;
    CKPT_TRY(t.leader->syscall_ok("close", SYS_close, {static_cast<uint64_t>(fd)}));
    if (!mine) return sys_error_code(err, fmt::format("taking /dev/tty from pid {}", t.pid));
    unsigned int dev = 0;
    if (::ioctl(mine.get(), TIOCGDEV, &dev) != 0) return sys_error("ioctl(TIOCGDEV) of /dev/tty");
    if (dev != makedev(kPtsMajor, e.index()))
        return error("/dev/tty of pid {} is {}:{}, not /dev/pts/{}", t.pid, major(dev), minor(dev), e.index());
    return mine;
}

Result<void> restore_pty(RestoreTask& t, const image::Fd& f) {
    const image::PtyEntry& e = *CKPT_TRY(entry_of(*t.shared, f.pty_id()));
    auto it = t.shared->ptys.find(e.id());
    if (it == t.shared->ptys.end()) return error("pty {} was not made", e.id());
    int master = it->second.first.get();
    if (f.description_id() == 0) return error_code(EINVAL, "pty {}: an fd without description id (image is corrupt)", e.id());
    std::function<Result<UniqueFd>()> make;
    switch (f.pty_end()) {
        case image::PTY_MASTER:
            if ((f.flags() & O_ACCMODE) != O_RDWR)
                return error_code(EINVAL, "pty {}: a master not open read-write (image is corrupt)", e.id());
            make = [master]() -> Result<UniqueFd> {
                UniqueFd d(fcntl(master, F_DUPFD_CLOEXEC, 3));
                if (!d) return sys_error("dup");
                return d;
            };
            break;
        case image::PTY_SLAVE:
            if (!it->second.second)
                return error_code(EINVAL, "pty {}: a slave fd of a pair recorded with none (image is corrupt)", e.id());
            make = [master, &f, &e]() -> Result<UniqueFd> {
                // As open(2) would: the access mode and O_LARGEFILE (which glibc defines as 0 on
                // 64-bit, the kernel's value here); the other flags are set after. Not
                // O_CLOEXEC: TIOCGPTPEER keeps it in the file's flags.
                constexpr uint32_t kLargeFile = 0100000;
                int fd = ::ioctl(master, TIOCGPTPEER, (f.flags() & (O_ACCMODE | kLargeFile)) | O_NOCTTY);
                if (fd < 0) return sys_error("ioctl(TIOCGPTPEER) of /dev/pts/{}", e.index());
                UniqueFd d(fd);
                if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) return sys_error("fcntl(F_SETFD)");
                return d;
            };
            break;
        case image::PTY_DEV_TTY:
            if (e.session() == 0)
                return error_code(EINVAL, "pty {}: /dev/tty of a pair that is nobody's terminal (image is corrupt)", e.id());
            make = [&t, &f, &e]() { return open_dev_tty_in(t, f, e); };
            break;
        default: return error_code(EINVAL, "pty {}: end {} (image is corrupt)", e.id(), static_cast<int>(f.pty_end()));
    }
    return install_description(t, f, make, true);
}

// Every fd is in place: the slave exclusive and the pair locked as recorded (both refuse
// opens of the slave, which are done), and the engine's own ends let go.
Result<void> release_ptys(RestoreShared& sh) {
    for (const auto& e : sh.files.ptys()) {
        auto it = sh.ptys.find(e.id());
        if (it == sh.ptys.end()) continue;
        auto& [master, slave] = it->second;
        if (e.slave_exclusive() && slave && ::ioctl(slave.get(), TIOCEXCL) != 0)
            return sys_error("/dev/pts/{}: ioctl(TIOCEXCL)", e.index());
        int lock = 1;
        if (e.locked() && ::ioctl(master.get(), TIOCSPTLCK, &lock) != 0)
            return sys_error("/dev/pts/{}: ioctl(TIOCSPTLCK)", e.index());
    }
    sh.ptys.clear();
    return ok();
}

// Runs f with the pair's slave as an fd of the session leader t (installed, then closed).
Result<void> with_slave_in(RestoreTask& t, const image::PtyEntry& e,
                           const std::function<Result<void>(uint64_t fd)>& f) {
    auto it = t.shared->ptys.find(e.id());
    if (it == t.shared->ptys.end() || !it->second.second)
        return error_code(EINVAL, "pty {}: a controlling terminal of a pair recorded with no slave (image is corrupt)",
                          e.id());
    auto fd = static_cast<uint64_t>(CKPT_TRY(t.install_fd(it->second.second.get(), -1, true)));
    auto r = f(fd);
    CKPT_TRY(t.leader->syscall_ok("close", SYS_close, {fd}));
    return r;
}

}  // namespace

Result<void> record_pty_sessions(const std::vector<FrozenProcess>& processes, FdDumpState& state) {
    PtyPairs& ptys = state.ptys;
    image::FileTable& table = state.files.table();
    std::vector<bool> held(static_cast<size_t>(table.ptys_size()));
    for (const auto& [key, m] : ptys.masters)
        if (ptys.slaves.count(key)) held[static_cast<size_t>(m.entry)] = true;
    for (uint64_t dev : ptys.dev_tty)
        if (auto m = CKPT_TRY(pair_of_terminal(ptys, dev))) held[static_cast<size_t>(m->entry)] = true;

    std::map<pid_t, const FrozenProcess*> by_ns;
    for (const auto& p : processes) by_ns[p.ns_pid] = &p;
    std::map<pid_t, uint64_t> session_tty;  // session (ns) -> its terminal, where a tree pty
    for (const auto& p : processes) {
        if (p.zombie) continue;
        ProcTty pt = CKPT_TRY(proc_tty(p.pid));
        auto* m = CKPT_TRY_CTX(pair_of_terminal(ptys, pt.tty_nr), "pid {}", p.pid);
        if (!m) continue;
        image::PtyEntry* e = table.mutable_ptys(m->entry);
        auto leader = by_ns.find(p.ns_sid);
        if (p.ns_sid == 0 || leader == by_ns.end() || leader->second->zombie)
            return error_code(ENOTSUP,
                              "pid {}: its controlling terminal /dev/pts/{} is a pty of the tree, but the leader of its "
                              "session is not a live process of the tree: the terminal cannot be given back",
                              p.pid, e->index());
        if (e->session() != 0 && e->session() != p.ns_sid)
            return error("pid {}: /dev/pts/{} the controlling terminal of sessions {} and {}", p.pid, e->index(),
                         e->session(), p.ns_sid);
        e->set_session(p.ns_sid);
        session_tty[p.ns_sid] = pt.tty_nr;
        held[static_cast<size_t>(m->entry)] = true;
        if (pt.tpgid > 0) {
            const FrozenProcess* fg = nullptr;
            for (const auto& q : processes)
                if (q.stat.pgid == pt.tpgid && !q.zombie) fg = &q;
            if (!fg)
                return error_code(ENOTSUP,
                                  "pid {}: the foreground process group {} of its terminal /dev/pts/{} has no live "
                                  "process in the tree: not supported",
                                  p.pid, pt.tpgid, e->index());
            e->set_foreground(fg->ns_pgid);
        }
    }
    // Each process of such a session is made with the terminal (it is the leader's when made).
    for (const auto& p : processes) {
        auto s = session_tty.find(p.ns_sid);
        if (p.zombie || s == session_tty.end()) continue;
        if (CKPT_TRY(proc_tty(p.pid)).tty_nr != s->second)
            return error_code(ENOTSUP,
                              "pid {}: in session {}, whose controlling terminal is a pty of the tree, but without "
                              "that terminal (TIOCNOTTY): not supported",
                              p.pid, p.ns_sid);
    }
    for (const auto& [key, m] : ptys.masters) {
        image::PtyEntry* e = table.mutable_ptys(m.entry);
        e->set_slave_held(held[static_cast<size_t>(m.entry)]);
        if (e->slave_held()) continue;
        if (m.hup)
            return error_code(ENOTSUP,
                              "pid {}: fd {}: the master of /dev/pts/{}, whose slave every holder has closed (its "
                              "reads fail with EIO): not supported",
                              m.pid, m.fd, key.second);
        if (!e->locked())
            return error_code(ENOTSUP,
                              "pid {}: fd {}: the master of /dev/pts/{}, whose slave is open outside the tree or "
                              "not opened yet (unlocked): not supported",
                              m.pid, m.fd, key.second);
    }
    return ok();
}

Result<void> take_pty_terminal(RestoreTask& t) {
    for (const auto& e : t.shared->files.ptys()) {
        if (e.session() != t.pid) continue;
        CKPT_TRY_CTX(with_slave_in(t, e,
                                   [&](uint64_t fd) -> Result<void> {
                                       CKPT_TRY(t.leader->syscall_ok("ioctl(TIOCSCTTY)", SYS_ioctl, {fd, TIOCSCTTY, 0}));
                                       return ok();
                                   }),
                     "pid {}: taking /dev/pts/{} as controlling terminal", t.pid, e.index());
    }
    return ok();
}

Result<void> restore_pty_foreground(std::map<pid_t, RestoreTask>& tasks) {
    if (tasks.empty()) return ok();
    for (const auto& e : tasks.begin()->second.shared->files.ptys()) {
        if (e.session() == 0) continue;
        auto leader = tasks.find(e.session());
        if (leader == tasks.end() || !leader->second.leader)
            return error_code(EINVAL, "pty {}: the terminal of session {}, which is not restored (image is corrupt)",
                              e.id(), e.session());
        RestoreTask& t = leader->second;
        CKPT_TRY_CTX(with_slave_in(t, e,
                                   [&](uint64_t fd) -> Result<void> {
                                       auto s = t.scratch.scope();
                                       pid_t sid = 0;
                                       uint64_t at = CKPT_TRY(s.put(sid));
                                       CKPT_TRY(t.leader->syscall_ok("ioctl(TIOCGSID)", SYS_ioctl, {fd, TIOCGSID, at}));
                                       CKPT_TRY(read_remote(t.host, at, &sid, sizeof sid));
                                       if (sid != e.session())
                                           return error("its session is {}, not {}", sid, e.session());
                                       if (e.foreground() == 0) return ok();
                                       // The leader is in the foreground since TIOCSCTTY: no SIGTTOU.
                                       pid_t fg = e.foreground();
                                       uint64_t pg = CKPT_TRY(s.put(fg));
                                       CKPT_TRY(t.leader->syscall_ok("ioctl(TIOCSPGRP)", SYS_ioctl, {fd, TIOCSPGRP, pg}));
                                       return ok();
                                   }),
                     "pid {}: /dev/pts/{} as controlling terminal", t.pid, e.index());
    }
    return ok();
}

extern const FdKind kPtyKind{
    .name = "pty",
    .image_kind = image::Fd::PTY,
    .claims = claims_pty,
    .survey = survey_pty,
    .dump = dump_pty,
    .prepare_restore = make_ptys,
    .restore = restore_pty,
    .finish_restore = release_ptys,
};

}  // namespace ckpt::engine
