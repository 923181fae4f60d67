#include "ckpt/set/model.h"

#include <endian.h>
#include <xxhash.h>

#include <algorithm>
#include <array>

#include "ckpt/base/strings.h"

namespace ckpt::set {
namespace {

// Names as they appear in index.h5, the manifests and ckpt-job output.
template <typename E, size_t N>
Result<E> parse_name(std::string_view s, const std::array<std::string_view, N>& names,
                     std::string_view what) {
    for (size_t i = 0; i < N; ++i)
        if (names[i] == s) return static_cast<E>(i);
    return error_code(EINVAL, "unknown {} '{}'", what, s);
}

constexpr std::array<std::string_view, 3> kSetStates = {"writing", "committed", "failed"};
constexpr std::array<std::string_view, 4> kTriggers = {"interval", "manual", "preempt",
                                                       "time-limit"};
constexpr std::array<std::string_view, 3> kMemberStates = {"writing", "done", "failed"};

}  // namespace

std::string_view to_string(SetState s) { return kSetStates[static_cast<size_t>(s)]; }
std::string_view to_string(Trigger t) { return kTriggers[static_cast<size_t>(t)]; }
std::string_view to_string(MemberState s) { return kMemberStates[static_cast<size_t>(s)]; }
Result<SetState> parse_set_state(std::string_view s) {
    return parse_name<SetState>(s, kSetStates, "set state");
}
Result<Trigger> parse_trigger(std::string_view s) {
    return parse_name<Trigger>(s, kTriggers, "trigger");
}
Result<MemberState> parse_member_state(std::string_view s) {
    return parse_name<MemberState>(s, kMemberStates, "member state");
}

uint64_t SetRecord::bytes() const {
    uint64_t n = 0;
    for (const MemberRecord& m : members) n += m.bytes;
    return n;
}

std::string SetRecord::folder() const { return set_folder_name(seq); }

std::string SetRecord::levels() const {
    std::string out = local_complete ? "local" : "";
    if (state == SetState::Committed) out += out.empty() ? "shared" : " shared";
    return out;
}

Result<void> parse_levels(std::string_view text, SetRecord& s) {
    bool local = false, shared = false;
    for (std::string_view word : split(text, ' ')) {
        if (word == "local") local = true;
        else if (word == "shared") shared = true;
        else if (!word.empty()) return error_code(EINVAL, "unknown level '{}'", word);
    }
    if (shared != (s.state == SetState::Committed))
        return error_code(EINVAL, "levels '{}' disagree with state {}", text, to_string(s.state));
    s.local_complete = local;
    return ok();
}

uint32_t Index::fence() const {
    uint32_t f = restart_count;
    for (const SetRecord& s : sets) f = std::max(f, s.restart_count);
    return f;
}

const SetRecord* Index::find(uint64_t seq) const {
    for (const SetRecord& s : sets)
        if (s.seq == seq) return &s;
    return nullptr;
}

SetRecord* Index::find(uint64_t seq) {
    return const_cast<SetRecord*>(static_cast<const Index*>(this)->find(seq));
}

const SetRecord* Index::newest_committed() const {
    for (auto it = sets.rbegin(); it != sets.rend(); ++it)
        if (it->state == SetState::Committed) return &*it;
    return nullptr;
}

uint64_t Index::max_seq() const { return sets.empty() ? 0 : sets.back().seq; }

std::string set_folder_name(uint64_t seq) { return fmt::format("set-{:06}", seq); }

std::optional<uint64_t> parse_set_folder_name(std::string_view name) {
    if (!starts_with(name, "set-") || name.size() < 10) return std::nullopt;
    auto n = parse_uint(name.substr(4));
    if (!n || *n == 0) return std::nullopt;
    return *n;
}

uint64_t member_digest(const std::vector<FileRecord>& files) {
    std::vector<const FileRecord*> sorted;
    for (const FileRecord& f : files) sorted.push_back(&f);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->name < b->name; });
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    for (const FileRecord* f : sorted) {
        XXH3_64bits_update(st, f->name.data(), f->name.size());
        XXH3_64bits_update(st, "", 1);
        uint64_t le[2] = {htole64(f->bytes), htole64(f->checksum)};
        XXH3_64bits_update(st, le, sizeof le);
    }
    uint64_t d = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return d;
}

}  // namespace ckpt::set
