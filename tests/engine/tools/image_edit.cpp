// image_edit: makes well-formed images that a restore must still refuse, for the engine
// suite's negative tests (a flipped byte is caught by the checksum; these are not).
//
//   image_edit version FILE N     set the format version in FILE's header, reseal the checksum
//   image_edit arch INVENTORY N   set the architecture recorded in an inventory image
//   image_edit pages-file PAGEMAP NAME      set the pages file a page map names
//   image_edit content-file FILES NAME      make the first file of a file table a saved copy
//                                           (deleted) kept in NAME
//   image_edit xxh3 FILE                    print the XXH3-64 of FILE (decimal): to reseal a
//                                           record of an image stream forged
//   image_edit totext FILE                  print an image as protobuf text (kind from its name)
//   image_edit fromtext FILE                rewrite FILE from protobuf text on stdin, resealed,
//                                           as a user forging their own images would
//                                           (restore_as_user_test.py)
#include <fcntl.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <google/protobuf/text_format.h>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "ckpt/image/image_file.h"
#include "core.pb.h"
#include "files.pb.h"
#include "inventory.pb.h"
#include "ipc.pb.h"
#include "mm.pb.h"

namespace {

constexpr size_t kVersionOffset = 8;  // magic[4], kind, version (engine/image/src/image_file.cpp)
constexpr size_t kChecksumSize = 8;   // the trailer ends with the XXH3-64 of all before it

ckpt::Result<void> set_version(const std::string& path, uint32_t version) {
    std::string data = CKPT_TRY(ckpt::read_file(path));
    if (data.size() < 32) return ckpt::error("{}: too small for an image", path);
    std::memcpy(data.data() + kVersionOffset, &version, sizeof version);
    uint64_t sum = ckpt::image::checksum(data.data(), data.size() - kChecksumSize);
    std::memcpy(data.data() + data.size() - kChecksumSize, &sum, sizeof sum);
    auto fd = CKPT_TRY(ckpt::open_file(path, O_WRONLY | O_TRUNC));
    return ckpt::write_all(fd.get(), data.data(), data.size());
}

ckpt::Result<void> set_arch(const std::string& path, int arch) {
    ckpt::image::Inventory inv;
    CKPT_TRY(ckpt::image::read_image(path, ckpt::image::Kind::Inventory, &inv));
    inv.set_arch(static_cast<ckpt::image::Arch>(arch));
    return ckpt::image::write_image(path, ckpt::image::Kind::Inventory, inv);
}

ckpt::Result<void> set_pages_file(const std::string& path, const std::string& name) {
    ckpt::image::PageMap pm;
    CKPT_TRY(ckpt::image::read_image(path, ckpt::image::Kind::PageMap, &pm));
    pm.set_pages_file(name);
    return ckpt::image::write_image(path, ckpt::image::Kind::PageMap, pm);
}

ckpt::Result<void> set_content_file(const std::string& path, const std::string& name) {
    ckpt::image::FileTable t;
    CKPT_TRY(ckpt::image::read_image(path, ckpt::image::Kind::Files, &t));
    if (t.files_size() == 0) return ckpt::error("{}: no file to edit", path);
    auto* e = t.mutable_files(0);
    e->set_deleted(true);
    e->set_content_file(name);
    return ckpt::image::write_image(path, ckpt::image::Kind::Files, t);
}

using Message = std::unique_ptr<google::protobuf::Message>;

// The message and kind of an image, from its file name (as `ckpt-engine show` tells them).
ckpt::Result<std::pair<Message, ckpt::image::Kind>> message_for(const std::string& path) {
    using ckpt::image::Kind;
    std::string_view name = std::string_view(path).substr(path.rfind('/') + 1);
    if (name == "inventory.img") return std::pair{Message(new ckpt::image::Inventory), Kind::Inventory};
    if (name == "files.img") return std::pair{Message(new ckpt::image::FileTable), Kind::Files};
    if (name == "ipc.img") return std::pair{Message(new ckpt::image::IpcNamespace), Kind::Ipc};
    if (name.starts_with("core-")) return std::pair{Message(new ckpt::image::TaskCore), Kind::Core};
    if (name.starts_with("mm-")) return std::pair{Message(new ckpt::image::MmCore), Kind::Mm};
    if (name.starts_with("pagemap-")) return std::pair{Message(new ckpt::image::PageMap), Kind::PageMap};
    if (name.starts_with("fds-")) return std::pair{Message(new ckpt::image::FdTable), Kind::Fds};
    return ckpt::error("{}: not an image name this tool knows", path);
}

ckpt::Result<void> to_text(const std::string& path) {
    auto [msg, kind] = CKPT_TRY(message_for(path));
    CKPT_TRY(ckpt::image::read_image(path, kind, msg.get()));
    std::string out;
    if (!google::protobuf::TextFormat::PrintToString(*msg, &out))
        return ckpt::error("{}: cannot print", path);
    std::fwrite(out.data(), 1, out.size(), stdout);
    return ckpt::ok();
}

ckpt::Result<void> from_text(const std::string& path) {
    auto [msg, kind] = CKPT_TRY(message_for(path));
    std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    if (!google::protobuf::TextFormat::ParseFromString(text, msg.get()))
        return ckpt::error("{}: the text on stdin does not parse", path);
    return ckpt::image::write_image(path, kind, *msg);
}

}  // namespace

int main(int argc, char** argv) {
    std::string_view verb = argc > 1 ? argv[1] : "";
    if (argc == 3 && verb == "xxh3") {
        auto data = ckpt::read_file(argv[2]);
        if (!data) {
            std::fprintf(stderr, "image_edit: %s\n", data.error().message().c_str());
            return 1;
        }
        std::printf("%llu\n", static_cast<unsigned long long>(ckpt::image::checksum(data->data(), data->size())));
        return 0;
    }
    if (argc == 3 && (verb == "totext" || verb == "fromtext")) {
        auto r = verb == "totext" ? to_text(argv[2]) : from_text(argv[2]);
        if (!r) {
            std::fprintf(stderr, "image_edit: %s\n", r.error().message().c_str());
            return 1;
        }
        return 0;
    }
    if (argc != 4) {
        std::fprintf(stderr,
                     "usage: image_edit version FILE N | arch INVENTORY N | pages-file PAGEMAP NAME | "
                     "content-file FILES NAME | xxh3 FILE | totext FILE | fromtext FILE\n");
        return 2;
    }
    std::string what = argv[1], path = argv[2];
    if (what == "pages-file" || what == "content-file") {
        auto r = what == "pages-file" ? set_pages_file(path, argv[3]) : set_content_file(path, argv[3]);
        if (!r) {
            std::fprintf(stderr, "image_edit: %s\n", r.error().message().c_str());
            return 1;
        }
        return 0;
    }
    auto value = ckpt::parse_uint(argv[3]);
    if (!value) {
        std::fprintf(stderr, "image_edit: %s\n", value.error().message().c_str());
        return 2;
    }
    ckpt::Result<void> r = what == "version" ? set_version(path, static_cast<uint32_t>(*value))
                           : what == "arch"  ? set_arch(path, static_cast<int>(*value))
                                             : ckpt::error("unknown edit '{}'", what);
    if (!r) {
        std::fprintf(stderr, "image_edit: %s\n", r.error().message().c_str());
        return 1;
    }
    return 0;
}
