// The objects behind the handles the application sees. An MPI_Comm, MPI_Datatype, ... the
// application holds is the address of one of these: a predefined object (exported with the
// real library's symbol name and size, see abi_predefined.cpp) or one we allocate. Each
// starts with a Handle whose first word is the lower half's handle, so translating is one
// load; the rest is the recipe to rebuild the object in a fresh lower half.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>

namespace ckpt::mpi {

enum class Kind : uint32_t { Comm = 1, Group, Datatype, Op, Request, Errhandler, Info, Message, Win, File };

inline constexpr uint32_t kHandleMagic = 0x706d6b63;  // "ckmp"

struct Handle {
    void* real = nullptr;          // the lower half's handle; first, for one-load translation
    uint32_t magic = kHandleMagic;
    Kind kind{};
    const char* symbol = nullptr;  // predefined objects: the same-named symbol in the lower half
    uint32_t refs = 1;             // the application's handle plus recipes that name this object
    bool app_freed = false;        // the application freed it; kept for the recipes that name it
};

struct Group;
struct Errhandler;
struct AttrList;

// How an object was made: replayed in order on a fresh lower half at restart.
enum class Origin : uint8_t {
    Predefined, Dup, Split, SplitType, Create, FromComm, Incl, Excl, Contiguous, Vector, Struct, User
};

struct Comm {
    Handle h{.kind = Kind::Comm};
    Origin origin = Origin::Predefined;
    Comm* parent = nullptr;
    uint64_t id = 0;                // parent's id and creation ordinal (see comm_id)
    uint32_t ordinal = 0;           // which child of the parent this is
    uint32_t children = 0;          // communicators created from this one so far
    int color = 0, key = 0;         // Split; SplitType: color is the split type (re-queried at restart)
    Group* group = nullptr;         // Create
    Errhandler* errhandler = nullptr;  // set by MPI_Comm_set_errhandler, replayed
    AttrList* attrs = nullptr;      // cached attributes (attrs.cpp): upper half only, never replayed
    // Quiesce (quiesce.h): the name every member gives this communicator (id and the world
    // rank of its rank 0, since the children of one split share an id), the collectives
    // entered on it so far, and its ranks' world ranks (nullptr for MPI_COMM_WORLD).
    uint64_t quiesce_key = 0;
    uint64_t coll_seq = 0;
    int* world_of = nullptr;
    int size = 0;
};

struct Group {
    Handle h{.kind = Kind::Group};
    Origin origin = Origin::Predefined;
    Comm* comm = nullptr;   // FromComm
    Group* parent = nullptr;  // Incl, Excl
    int* ranks = nullptr;   // Incl, Excl
    int nranks = 0;
};

struct Datatype {
    Handle h{.kind = Kind::Datatype};
    Origin origin = Origin::Predefined;
    Datatype* old = nullptr;        // Contiguous, Vector
    int count = 0, blocklength = 0, stride = 0;
    // Struct: count blocks, each with its length, displacement and type (kept alive).
    int* blocklengths = nullptr;
    MPI_Aint* displacements = nullptr;
    Datatype** types = nullptr;
    bool committed = false;
};

struct Op {
    Handle h{.kind = Kind::Op};
    Origin origin = Origin::Predefined;
    MPI_User_function* fn = nullptr;
    int commute = 1;
    int slot = -1;          // which trampoline the lower half calls
};

// A non-blocking operation in progress; its arguments allow re-posting a receive later.
struct Request {
    Handle h{.kind = Kind::Request};
    enum class Call : uint8_t { None, Send, Ssend, Rsend, Recv } call = Call::None;
    const void* buf = nullptr;
    int count = 0;
    int peer = 0;
    int tag = 0;
    Datatype* type = nullptr;
    Comm* comm = nullptr;
    Request* next_free = nullptr;
    // While posted: in the list of active requests, which a quiesce completes or re-posts.
    Request* prev_active = nullptr;
    Request* next_active = nullptr;
    // Completion seen by the upper half before the application asked for it (a quiesce
    // drained it, or a drained message satisfied a receive): counted once, status kept.
    bool counted = false;
    bool done_upper = false;  // no lower request any more: complete with `status`
    MPI_Status status{};
};

struct Errhandler { Handle h{.kind = Kind::Errhandler}; };
struct Info { Handle h{.kind = Kind::Info}; };
struct DrainedMessage;
// MPI_Mprobe/MPI_Improbe: the matched message, already received into the upper half as bytes
// (so it is in the image; the lower half no longer knows it), until MPI_Mrecv/MPI_Imrecv.
struct Message {
    Handle h{.kind = Kind::Message};
    DrainedMessage* matched = nullptr;
};
struct Win { Handle h{.kind = Kind::Win}; };
struct File { Handle h{.kind = Kind::File}; };

// Constant-initialised predefined object (no constructor runs: the dynamic linker copies it
// into the application when the application has a copy relocation for it).
template <class T>
constexpr T predefined(const char* symbol) {
    T t{};
    t.h.symbol = symbol;
    t.h.refs = UINT32_MAX / 2;  // never freed
    return t;
}

struct PredefinedEntry {
    Handle* obj;
    const char* name;
};
extern const PredefinedEntry kPredefined[];
extern const std::size_t kPredefinedCount;

// Application handle <-> our object.
template <class T, class H>
inline T* obj(H handle) {
    return reinterpret_cast<T*>(handle);
}
template <class H, class T>
inline H handle(T* o) {
    return reinterpret_cast<H>(o);
}

}  // namespace ckpt::mpi
