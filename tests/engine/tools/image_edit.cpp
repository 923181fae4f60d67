// image_edit: makes well-formed images that a restore must still refuse, for the engine
// suite's negative tests (a flipped byte is caught by the checksum; these are not).
//
//   image_edit version FILE N     set the format version in FILE's header, reseal the checksum
//   image_edit arch INVENTORY N   set the architecture recorded in an inventory image
#include <fcntl.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "ckpt/base/fd.h"
#include "ckpt/base/strings.h"
#include "ckpt/image/image_file.h"
#include "inventory.pb.h"

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

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: image_edit version FILE N | arch INVENTORY N\n");
        return 2;
    }
    std::string what = argv[1], path = argv[2];
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
