#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "ckpt/base/fd.h"
#include "ckpt/image/image_file.h"
#include "core.pb.h"
#include "inventory.pb.h"

using namespace ckpt;

namespace {

class ImageFile : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/ckpt-image-test-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

    image::Inventory sample() {
        image::Inventory inv;
        inv.set_format_version(image::kFormatVersion);
        inv.set_arch(image::ARCH_X86_64);
        inv.set_root_pid(1234);
        auto* t = inv.add_tasks();
        t->set_pid(1234);
        t->add_threads(1234);
        t->add_threads(1235);
        return inv;
    }
    std::string dir_;
};

void flip_byte(const std::string& path, long offset) {
    FILE* f = std::fopen(path.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, offset, SEEK_SET);
    int c = std::fgetc(f);
    std::fseek(f, offset, SEEK_SET);
    std::fputc(c ^ 0x40, f);
    std::fclose(f);
}

}  // namespace

TEST_F(ImageFile, RoundTrip) {
    std::string path = dir_ + "/inventory.img";
    ASSERT_TRUE(image::write_image(path, image::Kind::Inventory, sample(), true).ok());
    image::Inventory back;
    auto r = image::read_image(path, image::Kind::Inventory, &back);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(back.root_pid(), 1234);
    ASSERT_EQ(back.tasks_size(), 1);
    EXPECT_EQ(back.tasks(0).threads_size(), 2);
}

TEST_F(ImageFile, ManyRecords) {
    std::string path = dir_ + "/core.img";
    auto w = image::ImageWriter::create(path, image::Kind::Core);
    ASSERT_TRUE(w.ok());
    for (int i = 0; i < 5; ++i) {
        image::TaskCore c;
        c.set_pid(100 + i);
        ASSERT_TRUE(w->add(c).ok());
    }
    ASSERT_TRUE(w->finish().ok());
    auto r = image::ImageReader::open(path, image::Kind::Core);
    ASSERT_TRUE(r.ok()) << r.error().message();
    ASSERT_EQ(r->records(), 5u);
    image::TaskCore c;
    ASSERT_TRUE(r->parse(3, &c).ok());
    EXPECT_EQ(c.pid(), 103);
}

TEST_F(ImageFile, WrongKindRefused) {
    std::string path = dir_ + "/inventory.img";
    ASSERT_TRUE(image::write_image(path, image::Kind::Inventory, sample()).ok());
    image::TaskCore c;
    auto r = image::read_image(path, image::Kind::Core, &c);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("is a inventory image, expected core"), std::string::npos);
}

TEST_F(ImageFile, FlippedByteRefused) {
    std::string path = dir_ + "/inventory.img";
    ASSERT_TRUE(image::write_image(path, image::Kind::Inventory, sample()).ok());
    flip_byte(path, 20);
    image::Inventory back;
    auto r = image::read_image(path, image::Kind::Inventory, &back);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("checksum mismatch"), std::string::npos) << r.error().message();
}

TEST_F(ImageFile, TruncatedRefused) {
    std::string path = dir_ + "/inventory.img";
    ASSERT_TRUE(image::write_image(path, image::Kind::Inventory, sample()).ok());
    auto size = read_file(path)->size();
    ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(size - 5)), 0);
    image::Inventory back;
    auto r = image::read_image(path, image::Kind::Inventory, &back);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find(path), std::string::npos);
}

TEST_F(ImageFile, OtherFormatVersionRefused) {
    std::string path = dir_ + "/inventory.img";
    ASSERT_TRUE(image::write_image(path, image::Kind::Inventory, sample()).ok());
    flip_byte(path, 8);  // the version field of the header
    image::Inventory back;
    auto r = image::read_image(path, image::Kind::Inventory, &back);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("format version"), std::string::npos) << r.error().message();
}

TEST_F(ImageFile, MissingNamesPath) {
    image::Inventory back;
    auto r = image::read_image(dir_ + "/none.img", image::Kind::Inventory, &back);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("none.img"), std::string::npos);
}
