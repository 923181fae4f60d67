// Image streams in the engine: metadata of a dump, a restore's stream, `ckpt-engine stream`.
#include "image_stream.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <vector>

#include "ckpt/base/page_buffer.h"
#include "ckpt/engine/engine.h"
#include "ckpt/image/image_names.h"
#include "files.pb.h"
#include "inventory.pb.h"
#include "mm.pb.h"

namespace ckpt::engine {
namespace {

constexpr size_t kChunk = 4u << 20;  // what one read or write of page data moves

// A whole memory file (it holds what the dump wrote to it).
Result<std::string> read_memory_file(int fd, const std::string& what) {
    struct stat st;
    if (fstat(fd, &st) != 0) return sys_error("fstat {}", what);
    std::string d(static_cast<size_t>(st.st_size), '\0');
    if (pread(fd, d.data(), d.size(), 0) != static_cast<ssize_t>(d.size())) return sys_error("read {}", what);
    return d;
}

image::StreamRecord::Kind record_kind(const std::string& name, uint32_t* image_kind) {
    auto k = image::names::kind_of(name);
    *image_kind = k ? static_cast<uint32_t>(*k) : 0;
    return k ? image::StreamRecord::IMAGE : image::StreamRecord::DATA;
}

// A file of a folder as one record, read in chunks (page data) or whole (the rest).
Result<void> stream_file(const std::string& dir, const std::string& name, image::StreamRecord::Kind kind,
                         std::optional<uint64_t> size, image::StreamWriter& w) {
    const std::string path = dir + "/" + name;
    auto f = CKPT_TRY(image::open_image_file(path));
    if (size && f.size != *size) return error_code(EINVAL, "{}: {} bytes, expected {} (truncated image?)", path, f.size, *size);
    if (kind != image::StreamRecord::PAGES && f.size > image::kMaxImageBytes)
        return error_code(EFBIG, "{}: {} bytes, more than an image may hold: refused", path, f.size);
    uint32_t image_kind = 0;
    if (kind != image::StreamRecord::PAGES) kind = record_kind(name, &image_kind);
    std::vector<uint64_t> extents;
    if (kind == image::StreamRecord::DATA) extents = CKPT_TRY(image::data_extents(f.fd.get(), f.size, path));
    CKPT_TRY(w.begin_record(name, kind, f.size, image_kind, extents));
    thread_local PageBuffer buf(kChunk);  // kept: page faults cost more than small files (page_buffer.h)
    if (!buf) return error_code(ENOMEM, "a buffer of {} bytes to stream {} through", kChunk, path);
    for (uint64_t done = 0; done < f.size;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(f.size - done, kChunk));
        CKPT_TRY_CTX(read_exact(f.fd.get(), buf.data(), n), "{}", path);
        CKPT_TRY(w.data(buf.data(), n));
        done += n;
    }
    return w.end_record();
}

// The blocks of a compressed pages file (dump --compress) as they are stored, one
// PAGE_BLOCK record each, in block order, each checked against its stored checksum as it is
// sent (a block found damaged stops the stream before its trailer: the receiver refuses it).
Result<void> stream_stored_blocks(const std::string& dir, const image::PageMap& pm, image::StreamWriter& w) {
    const std::string path = dir + "/" + pm.pages_file();
    auto f = CKPT_TRY(image::open_image_file(path));
    if (f.size != pm.stored_bytes())
        return error_code(EINVAL, "{}: {} bytes, expected {} (truncated image?)", path, f.size, pm.stored_bytes());
    thread_local PageBuffer buf(kChunk);
    if (!buf) return error_code(ENOMEM, "a buffer of {} bytes to stream {} through", kChunk, path);
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st{XXH3_createState(), &XXH3_freeState};
    for (int b = 0; b < pm.blocks_size(); ++b) {
        const image::PageBlock& blk = pm.blocks(b);
        if (blk.length() == 0 || blk.length() > image::kMaxStreamPageBlock || blk.offset() > f.size ||
            blk.length() > f.size - blk.offset())
            return error_code(EINVAL, "{}: block {} stored at {} ({} bytes) outside the {} bytes of the file, or too "
                                      "large to stream (image is corrupt)", path, b, blk.offset(), blk.length(), f.size);
        CKPT_TRY(w.begin_page_block(pm.pages_file(), static_cast<uint64_t>(b), blk.zstd(), blk.length()));
        XXH3_64bits_reset(st.get());
        for (uint64_t done = 0; done < blk.length();) {
            const size_t n = static_cast<size_t>(std::min<uint64_t>(blk.length() - done, kChunk));
            if (pread(f.fd.get(), buf.data(), n, static_cast<off_t>(blk.offset() + done)) != static_cast<ssize_t>(n))
                return sys_error("read {} at {}", path, blk.offset() + done);
            XXH3_64bits_update(st.get(), buf.data(), n);
            CKPT_TRY(w.data(buf.data(), n));
            done += n;
        }
        if (XXH3_64bits_digest(st.get()) != blk.stored_xxh3())
            return error_code(EINVAL, "{}: checksum mismatch in stored block {} (image is corrupt)", path, b);
        CKPT_TRY(w.end_record());
    }
    return ok();
}

// HOST:PORT (HOST may be [v6]) resolved.
Result<addrinfo*> resolve(const std::string& spec, bool passive) {
    size_t colon = spec.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size())
        return error_code(EINVAL, "{}: not HOST:PORT", spec);
    std::string host = spec.substr(0, colon), port = spec.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    addrinfo* res = nullptr;
    if (int e = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); e != 0)
        return error_code(EINVAL, "{}: {}", spec, gai_strerror(e));
    return res;
}

}  // namespace

Result<void> stream_metadata(const image::ImageDir& dir, image::StreamWriter& w) {
    for (const auto& [name, fd] : dir.memory_files()) {
        const std::string what = dir.path() + "/" + name;
        std::string d = CKPT_TRY(read_memory_file(fd.get(), what));
        uint32_t image_kind = 0;
        auto kind = record_kind(name, &image_kind);
        std::vector<uint64_t> extents;
        if (kind == image::StreamRecord::DATA) extents = CKPT_TRY(image::data_extents(fd.get(), d.size(), what));
        CKPT_TRY(w.record(name, kind, d, image_kind, extents));
    }
    return ok();
}

Result<std::unique_ptr<RestoreStream>> RestoreStream::open(const std::string& spec) {
    auto fd = CKPT_TRY(image::open_stream(spec, false));
    int raw = fd.get();
    auto s = std::unique_ptr<RestoreStream>(new RestoreStream{std::move(fd), image::StreamReader(raw, "stream:" + spec), {}});
    CKPT_TRY(s->reader.begin());
    std::map<std::string, image::MemoryFile> files;
    for (;;) {
        auto r = CKPT_TRY(s->reader.next());
        if (r.kind() == image::StreamRecord::END || r.kind() == image::StreamRecord::PAGES ||
            r.kind() == image::StreamRecord::PAGE_BLOCK) {
            s->pending = std::move(r);
            break;
        }
        image::MemoryFile& f = files[r.name()];
        f.data = CKPT_TRY(s->reader.read_whole(r));
        if (r.kind() == image::StreamRecord::DATA) f.record = std::move(r);
    }
    if (!files.count(image::names::kInventory))
        return error_code(EINVAL, "{}: no {} before the page data: refused", s->reader.where(), image::names::kInventory);
    image::set_memory_folder(s->reader.where(), std::move(files));
    return s;
}

Result<image::StreamRecord> RestoreStream::next() {
    if (pending) {
        auto r = std::move(*pending);
        pending.reset();
        return r;
    }
    return reader.next();
}

Result<void> RestoreStream::finish() {
    auto r = CKPT_TRY(next());
    if (r.kind() != image::StreamRecord::END)
        return error_code(EINVAL, "{}: record '{}' after the page data of every process: refused", reader.where(), r.name());
    return ok();
}

Result<void> stream_send(const std::string& images_dir, int fd) {
    image::StreamWriter w(fd, "stream to fd " + std::to_string(fd));
    const std::string& d = images_dir;
    image::Inventory inv;
    CKPT_TRY(image::read_image(d + "/" + image::names::kInventory, image::Kind::Inventory, &inv));
    image::FileTable files;
    CKPT_TRY(image::read_image(d + "/" + image::names::kFiles, image::Kind::Files, &files));
    CKPT_TRY(w.begin());
    // Metadata first (the inventory, what it names, the saved files' content), then the
    // page data in inventory order: the order restore fills the processes in.
    auto meta = [&](const std::string& name) { return stream_file(d, name, image::StreamRecord::DATA, std::nullopt, w); };
    CKPT_TRY(meta(image::names::kInventory));
    CKPT_TRY(meta(image::names::kFiles));
    if (CKPT_TRY(image::image_file_exists(d + "/" + image::names::kIpc))) CKPT_TRY(meta(image::names::kIpc));
    std::vector<image::PageMap> pms;
    for (const auto& te : inv.tasks()) {
        if (te.state() == image::TaskEntry::ZOMBIE) continue;
        for (const auto& n : {image::names::core(te.pid()), image::names::mm(te.pid()), image::names::fds(te.pid()),
                              image::names::pagemap(te.pid())})
            CKPT_TRY(meta(n));
        CKPT_TRY(image::read_image(d + "/" + image::names::pagemap(te.pid()), image::Kind::PageMap, &pms.emplace_back()));
    }
    for (const auto& e : files.files()) {
        if (e.content_file().empty()) continue;
        CKPT_TRY(image::check_plain_name(d + "/" + image::names::kFiles, e.content_file()));
        CKPT_TRY(stream_file(d, e.content_file(), image::StreamRecord::DATA, e.size(), w));
    }
    for (const auto& pm : pms) {
        CKPT_TRY(image::check_plain_name(d + "/pagemap", pm.pages_file()));
        if (pm.blocks_size()) CKPT_TRY(stream_stored_blocks(d, pm, w));
        else CKPT_TRY(stream_file(d, pm.pages_file(), image::StreamRecord::PAGES, pm.pages_bytes(), w));
        CKPT_TRY(w.block_sums(pm.pages_file(), {pm.block_xxh3().begin(), pm.block_xxh3().end()}));
    }
    return w.end();
}

Result<void> stream_recv(int fd, const std::string& images_dir) {
    image::StreamReader in(fd, "stream from fd " + std::to_string(fd));
    if (mkdir(images_dir.c_str(), 0700) != 0 && errno != EEXIST) return sys_error("mkdir {}", images_dir);
    auto dir = CKPT_TRY(image::ImageDir::open(images_dir));
    // The inventory says the folder is complete: written last, once the trailer is read.
    CKPT_TRY(dir.remove(image::names::kInventory));
    CKPT_TRY(in.begin());
    std::optional<std::string> inventory;
    // The page maps received, by the pages file they name: each gets the block checksums
    // that follow its page data (stream version 2) before it is written.
    std::map<std::string, std::pair<std::string, image::PageMap>> pagemaps;
    PageBuffer buf(kChunk);
    if (!buf) return error_code(ENOMEM, "a buffer of {} bytes to receive a stream through", kChunk);
    // The compressed pages file being received (PAGE_BLOCK records): where each block went.
    struct StoredBlocks {
        std::string name;
        UniqueFd fd;
        std::vector<image::PageBlock> stored;
        uint64_t end;
    };
    std::optional<StoredBlocks> blocks;
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st{XXH3_createState(), &XXH3_freeState};
    for (;;) {
        auto r = CKPT_TRY(in.next());
        if (r.kind() == image::StreamRecord::END) break;
        if (r.name() == image::names::kInventory) {
            inventory = CKPT_TRY(in.read_whole(r));
            continue;
        }
        if (r.kind() == image::StreamRecord::IMAGE && r.image_kind() == static_cast<uint32_t>(image::Kind::PageMap)) {
            std::string d = CKPT_TRY(in.read_whole(r));
            image::PageMap pm;
            CKPT_TRY(image::parse_image(images_dir + "/" + r.name(), d, image::Kind::PageMap, &pm));
            auto [it, fresh] = pagemaps.try_emplace(pm.pages_file(), r.name(), std::move(pm));
            if (!fresh)
                return error_code(EINVAL, "{}: page maps {} and {} name the same pages file: refused", in.where(),
                                  it->second.first, r.name());
            continue;
        }
        if (r.kind() == image::StreamRecord::PAGE_SUMS) {
            auto it = pagemaps.find(r.name());
            if (it == pagemaps.end())
                return error_code(EINVAL, "{}: page data {} that no page map names: refused", in.where(), r.name());
            auto& [name, pm] = it->second;
            auto sums = CKPT_TRY(in.read_block_sums(r));
            CKPT_TRY(merge_block_sums(pm, sums, images_dir + "/" + name));
            // Compressed page data: the page map records where its blocks now lie.
            const bool compressed = blocks && blocks->name == r.name();
            if (!compressed && (pm.blocks_size() || pm.stored_bytes()))
                return error_code(EINVAL, "{}: page map {} stores {} compressed (dump --compress), the stream has it as is "
                                          "(stream is corrupt): refused", in.where(), name, r.name());
            if (compressed) {
                if (pm.blocks_size() && pm.blocks_size() != static_cast<int>(blocks->stored.size()))
                    return error_code(EINVAL, "{}: page map {} stores {} blocks, the stream has {} (stream is corrupt): "
                                              "refused", in.where(), name, pm.blocks_size(), blocks->stored.size());
                pm.clear_blocks();
                for (auto& blk : blocks->stored) *pm.add_blocks() = std::move(blk);
                pm.set_stored_bytes(blocks->end);
                blocks.reset();
            }
            CKPT_TRY(image::write_image(dir, name, image::Kind::PageMap, pm));
            pagemaps.erase(it);
            continue;
        }
        if (r.kind() == image::StreamRecord::PAGE_BLOCK) {
            // The reader gives the blocks of one pages file in order from 0, then its sums.
            if (r.block() == 0) {
                if (!pagemaps.count(r.name()))
                    return error_code(EINVAL, "{}: page data {} that no page map names: refused", in.where(), r.name());
                blocks.emplace(StoredBlocks{r.name(), CKPT_TRY(dir.create(r.name())), {}, 0});
            }
            auto written = [&]() -> Result<void> {
                image::PageBlock& blk = blocks->stored.emplace_back();
                blk.set_offset(blocks->end);
                blk.set_length(r.length());
                blk.set_zstd(r.zstd());
                XXH3_64bits_reset(st.get());
                for (uint64_t done = 0; done < r.length();) {
                    size_t n = static_cast<size_t>(std::min<uint64_t>(r.length() - done, kChunk));
                    CKPT_TRY(in.read(buf.data(), n));
                    XXH3_64bits_update(st.get(), buf.data(), n);
                    CKPT_TRY_CTX(write_all(blocks->fd.get(), buf.data(), n), "{}/{}", images_dir, r.name());
                    done += n;
                }
                blk.set_stored_xxh3(XXH3_64bits_digest(st.get()));
                blocks->end += r.length();
                return in.end_record();
            }();
            if (!written) {
                (void)dir.remove(r.name());
                return written;
            }
            continue;
        }
        auto out = CKPT_TRY(dir.create(r.name()));
        auto copied = [&]() -> Result<void> {
            if (r.kind() == image::StreamRecord::DATA) {
                std::string d = CKPT_TRY(in.read_whole(r));
                return image::write_with_holes(out.get(), d, r, images_dir + "/" + r.name());
            }
            for (uint64_t done = 0; done < r.length();) {
                size_t n = static_cast<size_t>(std::min<uint64_t>(r.length() - done, kChunk));
                CKPT_TRY(in.read(buf.data(), n));
                CKPT_TRY_CTX(write_all(out.get(), buf.data(), n), "{}/{}", images_dir, r.name());
                done += n;
            }
            return in.end_record();
        }();
        if (!copied) {
            (void)dir.remove(r.name());
            return copied;
        }
    }
    if (!inventory) return error_code(EINVAL, "{}: no {}: refused", in.where(), image::names::kInventory);
    if (!pagemaps.empty())
        return error_code(EINVAL, "{}: no page data for {}: refused", in.where(), pagemaps.begin()->second.first);
    auto out = CKPT_TRY(dir.create(image::names::kInventory));
    CKPT_TRY_CTX(write_all(out.get(), inventory->data(), inventory->size()), "{}/{}", images_dir, image::names::kInventory);
    if (fsync(out.get()) != 0) return sys_error("fsync {}/{}", images_dir, image::names::kInventory);
    return ok();
}

Result<UniqueFd> tcp_connect(const std::string& spec) {
    addrinfo* res = CKPT_TRY(resolve(spec, false));
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> hold(res, &freeaddrinfo);
    int err = 0;
    for (addrinfo* a = res; a; a = a->ai_next) {
        UniqueFd s(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
        if (!s) return sys_error("socket for {}", spec);
        if (connect(s.get(), a->ai_addr, a->ai_addrlen) == 0) return s;
        err = errno;
    }
    return error_code(err, "connect {}: {}", spec, strerror(err));
}

Result<UniqueFd> tcp_accept(const std::string& spec, const std::string& port_file) {
    addrinfo* res = CKPT_TRY(resolve(spec, true));
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> hold(res, &freeaddrinfo);
    UniqueFd s(socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol));
    if (!s) return sys_error("socket for {}", spec);
    int one = 1;
    setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(s.get(), res->ai_addr, res->ai_addrlen) != 0) return sys_error("bind {}", spec);
    if (listen(s.get(), 1) != 0) return sys_error("listen {}", spec);
    if (!port_file.empty()) {
        sockaddr_storage a{};
        socklen_t len = sizeof a;
        if (getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) return sys_error("getsockname {}", spec);
        uint16_t port = a.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&a)->sin6_port
                                                : reinterpret_cast<sockaddr_in*>(&a)->sin_port;
        std::string text = std::to_string(ntohs(port)) + "\n";
        auto f = CKPT_TRY(open_file(port_file, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
        CKPT_TRY_CTX(write_all(f.get(), text.data(), text.size()), "{}", port_file);
    }
    int c = accept4(s.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return sys_error("accept {}", spec);
    return UniqueFd(c);
}

}  // namespace ckpt::engine
