// Socket options shared by the datagram socket kinds (udp.cpp, netlink.cpp): each recorded as
// the bytes getsockopt gives and set back with setsockopt where a new socket's value differs,
// then read back: a restored option is exactly what was recorded, or the restore fails naming
// it. Only options in the caller's table are read, and only those taken at restore (an image
// naming another is corrupt).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <span>
#include <string>
#include <utility>

#include "ckpt/base/result.h"
#include "files.pb.h"

// Linux 6.5 (older headers lack them).
#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76
#endif
#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04
#endif
#ifndef SCM_SECURITY
#define SCM_SECURITY 0x03
#endif

namespace ckpt::engine {

// AF_INET and AF_INET6 addresses (tcp.cpp, udp.cpp): a socket address recorded, shown as
// people write it ("127.0.0.1:80", "[::1]:80"), and made again from the image (one that does
// not fit the family is refused as corrupt).
void record_addr(const sockaddr_storage& ss, image::InetAddr* a);
std::string show_addr(const image::InetAddr& a);
Result<std::pair<sockaddr_storage, socklen_t>> sockaddr_of(int family, const image::InetAddr& a, const char* which);

}  // namespace ckpt::engine

namespace ckpt::engine::sockopt {

struct Spec {
    int level;
    int name;
    const char* text;
    uint32_t size;  // the value's size in bytes; 0: any size up to kMaxValue
};
inline constexpr uint32_t kMaxValue = 64;

using Options = google::protobuf::RepeatedPtrField<image::SocketOption>;

// Options of every socket (SOL_SOCKET).
std::span<const Spec> socket_level();
// Options of AF_INET sockets (IPPROTO_IP, and UDP's and raw ICMP's own), and the IPPROTO_IPV6
// ones of AF_INET6 sockets (which have the IPPROTO_IP ones too).
std::span<const Spec> ip_level();
std::span<const Spec> ipv6_level();
// The AF_UNIX ones kept beside SO_PASSCRED (socket.cpp): SO_PASSPIDFD, SO_PASSSEC.
std::span<const Spec> unix_level();

// Records every option of specs the socket has (those its protocol does not know are left out).
Result<void> record(int s, std::span<const Spec> specs, Options* out);
// Sets each recorded option (refusing one specs lacks) where the socket's value differs, and
// reads it back.
Result<void> restore(int s, std::span<const Spec> specs, const Options& opts);

Result<int> get_int(int s, int level, int name, const char* text);
Result<void> set_int(int s, int level, int name, int v, const char* text);

// An int option the dump sets on the tree's socket for its own reading (SO_PEEK_OFF for a
// peek from the start ...), given back as it was: by give_back(), whose failure fails the dump
// (a tree left running would keep the wrong option), or when this goes on an error path (the
// dump fails anyway: best effort, logged).
class Borrowed {
public:
    static Result<Borrowed> set(int s, int level, int name, const char* text, int value);
    Borrowed(Borrowed&& o) noexcept
        : s_(o.s_), level_(o.level_), name_(o.name_), text_(o.text_), was_(o.was_), changed_(std::exchange(o.changed_, false)) {}
    Borrowed& operator=(Borrowed&&) = delete;
    ~Borrowed();
    Result<void> give_back();

private:
    Borrowed(int s, int level, int name, const char* text, int was)
        : s_(s), level_(level), name_(name), text_(text), was_(was) {}
    int s_, level_, name_;
    const char* text_;
    int was_;
    bool changed_ = false;
};

// SO_SNDBUF or SO_RCVBUF (as getsockopt reads it, twice what setsockopt is given) set where it
// differs from the socket's, or always with `lock` (any SO_*BUF turns the kernel's tuning of
// that buffer off, as it was on a socket whose size the process had set), past the system's
// limit where the restorer may (SO_*BUFFORCE), and read back: at least as large. 0 (not
// recorded) sets nothing.
Result<void> restore_buffer(int s, int name, int force, uint32_t want, const char* text, bool lock = false);

// SO_BINDTODEVICE: the interface's name ("" none), and set again by that name.
Result<std::string> bound_device(int s);
Result<void> bind_device(int s, const std::string& name);

// A classic BPF filter (SO_ATTACH_FILTER) and SO_LOCK_FILTER, recorded where the socket has
// either (an eBPF filter, SO_ATTACH_BPF, cannot be read back: refused), and set again once
// the socket's queues are back (a filter would judge what the restore puts back): the
// program as recorded (the kernel checks it, as at SO_ATTACH_FILTER), read back whole.
Result<void> record_filter(int s, image::SocketFilter* out);
Result<void> restore_filter(int s, const image::SocketFilter& f);

// Refuses what cannot be seen or made again on any socket: a pending error or an error queue
// (IP_RECVERR: poll's POLLERR).
Result<void> refuse_errors(int s);

// "AF_PACKET", "SOCK_RAW" ... (or the number).
std::string family_name(int family);
std::string type_name(int type);

}  // namespace ckpt::engine::sockopt
