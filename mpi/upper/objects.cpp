// Communicators, groups, datatypes, operations and error handlers made at run time: each is
// an object of ours in the application's memory holding the lower half's handle and the
// recipe to make it again (its origin, its arguments and the objects it was made from, which
// it keeps alive through their reference counts).
#include <mpi.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "abi_impl.h"
#include "attrs.h"
#include "quiesce.h"
#include "runtime.h"

namespace ckpt::mpi {

void release_group(Group* g);

namespace {

void retain(Handle* h) {
    if (h)
        ++h->refs;
}

// What a restart replays on a fresh lower half, in the order it happened: every collective
// creation of a communicator (also where this rank got MPI_COMM_NULL, or the application
// freed the result since: the other members replay it too), and the groups, datatypes and
// operations that exist (local calls: only the living ones).
struct Recipe {
    bool collective = false;
    // collective: the call
    Origin origin = Origin::Predefined;
    Comm* parent = nullptr;
    int color = 0, key = 0;
    Group* group = nullptr;
    Comm* result = nullptr;  // nullptr: this rank got MPI_COMM_NULL
    // local
    Handle* object = nullptr;
};
std::vector<Recipe>* g_recipes = nullptr;

void add_recipe(const Recipe& r) {
    if (!g_recipes)
        g_recipes = new std::vector<Recipe>();
    g_recipes->push_back(r);
}

void drop_local_recipe(Handle* h) {
    if (!g_recipes)
        return;
    for (auto it = g_recipes->begin(); it != g_recipes->end(); ++it)
        if (!it->collective && it->object == h) {
            g_recipes->erase(it);
            return;
        }
}

}  // namespace

void release_group(Group* g) {
    if (!g || --g->h.refs > 0)
        return;
    if (g->comm)
        release_comm(g->comm);
    if (g->parent)
        release_group(g->parent);
    drop_local_recipe(&g->h);
    delete[] g->ranks;
    delete g;
}

void release_comm(Comm* c) {
    if (!c || --c->h.refs > 0)
        return;
    if (c->parent)
        release_comm(c->parent);
    if (c->group)
        release_group(c->group);
    delete[] c->world_of;
    delete c;
}

void release_datatype(Datatype* t) {
    if (!t || --t->h.refs > 0)
        return;
    if (t->old)
        release_datatype(t->old);
    for (int i = 0; t->types && i < t->count; ++i)
        release_datatype(t->types[i]);
    drop_local_recipe(&t->h);
    delete[] t->blocklengths;
    delete[] t->displacements;
    delete[] t->types;
    delete t;
}

namespace {

// A child communicator's id: parent's id and creation ordinal, mixed (splitmix64), so that
// every rank names the same communicator alike and a dup differs from its parent.
uint64_t comm_id(uint64_t parent, uint32_t ordinal) {
    uint64_t z = parent * 0x9e3779b97f4a7c15ULL + ordinal + 1;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// Wraps the lower half's result of a collective communicator creation. Every member calls
// it, including those that get MPI_COMM_NULL, so the parent's ordinal stays the same on all.
int new_comm(int rc, MPI_Comm lower_new, MPI_Comm parent, Origin origin, MPI_Comm* out, int color = 0,
             int key = 0, Group* group = nullptr) {
    Comm* p = obj<Comm>(parent);
    uint32_t ordinal = p->children++;
    if (rc != MPI_SUCCESS)
        return rc;
    Recipe recipe{.collective = true, .origin = origin, .parent = p, .color = color, .key = key, .group = group};
    retain(&p->h);
    retain(group ? &group->h : nullptr);
    if (lower_new == static_cast<MPI_Comm>(g_lower_comm_null)) {
        add_recipe(recipe);
        *out = MPI_COMM_NULL;
        return rc;
    }
    Comm* c = new Comm{};
    recipe.result = c;
    retain(&c->h);  // communicators live as long as the process: the recipes replay them
    add_recipe(recipe);
    c->h.real = lower_new;
    c->origin = origin;
    c->parent = p;
    retain(&p->h);
    c->ordinal = ordinal;
    c->id = comm_id(p->id, ordinal);
    c->color = color;
    c->key = key;
    c->group = group;
    retain(group ? &group->h : nullptr);
    register_comm(c);
    *out = handle<MPI_Comm>(c);
    return rc;
}

Group* new_group(MPI_Group lower_new, Origin origin) {
    Group* g = new Group{};
    g->h.real = lower_new;
    g->origin = origin;
    add_recipe({.object = &g->h});
    return g;
}

// A datatype the lower half made: its recipe `t` (holding references to the types it names)
// becomes the application's handle.
int adopt_datatype(Datatype* t, MPI_Datatype lower_new, MPI_Datatype* out) {
    t->h.real = lower_new;
    register_datatype(t);
    add_recipe({.object = &t->h});
    *out = handle<MPI_Datatype>(t);
    return MPI_SUCCESS;
}

int new_datatype(int rc, MPI_Datatype lower_new, Origin origin, MPI_Datatype old, int count, int blocklength,
                 int stride, MPI_Datatype* out) {
    if (rc != MPI_SUCCESS)
        return rc;
    Datatype* t = new Datatype{};
    t->origin = origin;
    t->old = obj<Datatype>(old);
    retain(&t->old->h);
    t->count = count;
    t->blocklength = blocklength;
    t->stride = stride;
    return adopt_datatype(t, lower_new, out);
}

// The lower half's handles of a struct's block types, for a call.
std::vector<MPI_Datatype> lower_types(int count, Datatype* const types[]) {
    std::vector<MPI_Datatype> l(std::max(count, 0));
    for (int i = 0; i < count; ++i)
        l[i] = real_of<MPI_Datatype>(types[i]->h);
    return l;
}

// User operations: the lower half calls a trampoline of ours with its own datatype handle;
// the trampoline calls the application's function with the application's handle. One
// trampoline per slot, since MPI_User_function carries no user data.
constexpr int kOpSlots = 64;
std::array<Op*, kOpSlots> g_op_slots{};

template <int I>
void op_trampoline(void* in, void* inout, int* len, MPI_Datatype* lower_type) {
    MPI_Datatype t = upper_datatype(*lower_type);
    g_op_slots[I]->fn(in, inout, len, &t);
}

template <int... I>
constexpr std::array<MPI_User_function*, kOpSlots> make_trampolines(std::integer_sequence<int, I...>) {
    return {&op_trampoline<I>...};
}
constexpr auto kTrampolines = make_trampolines(std::make_integer_sequence<int, kOpSlots>{});

}  // namespace

namespace impl {

// ---- communicators ----

int Comm_dup(MPI_Comm comm, MPI_Comm* newcomm) {
    MPI_Comm l = MPI_COMM_NULL;
    int rc;
    {
        CollectiveScope scope(comm);  // a collective on the parent
        rc = g_lower.Comm_dup(in(comm), &l);
    }
    rc = new_comm(rc, l, comm, Origin::Dup, newcomm);
    // The new communicator exists for the other members alike: a failing copy callback
    // leaves it to the application (with the attributes copied so far), error returned.
    return rc == MPI_SUCCESS ? copy_comm_attrs(comm, *newcomm) : rc;
}

int Comm_split(MPI_Comm comm, int color, int key, MPI_Comm* newcomm) {
    MPI_Comm l = MPI_COMM_NULL;
    int rc;
    {
        CollectiveScope scope(comm);  // a collective on the parent
        rc = g_lower.Comm_split(in(comm), color, key, &l);
    }
    return new_comm(rc, l, comm, Origin::Split, newcomm, color, key);
}

int Comm_split_type(MPI_Comm comm, int split_type, int key, MPI_Info info, MPI_Comm* newcomm) {
    MPI_Comm l = MPI_COMM_NULL;
    int rc;
    {
        CollectiveScope scope(comm);  // a collective on the parent
        rc = g_lower.Comm_split_type(in(comm), split_type, key, in(info), &l);
    }
    return new_comm(rc, l, comm, Origin::SplitType, newcomm, split_type, key);
}

int Comm_create(MPI_Comm comm, MPI_Group group, MPI_Comm* newcomm) {
    MPI_Comm l = MPI_COMM_NULL;
    int rc;
    {
        CollectiveScope scope(comm);  // a collective on the parent
        rc = g_lower.Comm_create(in(comm), in(group), &l);
    }
    Group* g = group == MPI_GROUP_NULL ? nullptr : obj<Group>(group);
    return new_comm(rc, l, comm, Origin::Create, newcomm, 0, 0, g);
}

int Comm_free(MPI_Comm* comm) {
    Comm* c = obj<Comm>(*comm);
    // Delete callbacks first, while the communicator still works (they may use it).
    if (c->origin != Origin::Predefined)
        if (int rc = delete_comm_attrs(*comm); rc != MPI_SUCCESS)
            return rc;
    MPI_Comm l = in(*comm);
    int rc = g_lower.Comm_free(&l);
    if (rc != MPI_SUCCESS || c->origin == Origin::Predefined)  // the lower half refuses those
        return rc;
    c->h.real = nullptr;
    c->h.app_freed = true;
    retire_comm(c);
    release_comm(c);
    *comm = MPI_COMM_NULL;
    return rc;
}

int Comm_set_errhandler(MPI_Comm comm, MPI_Errhandler errhandler) {
    int rc = g_lower.Comm_set_errhandler(in(comm), in(errhandler));
    if (rc == MPI_SUCCESS)
        obj<Comm>(comm)->errhandler = obj<Errhandler>(errhandler);
    return rc;
}

int Comm_get_errhandler(MPI_Comm comm, MPI_Errhandler* errhandler) {
    MPI_Errhandler l = MPI_ERRHANDLER_NULL;
    int rc = g_lower.Comm_get_errhandler(in(comm), &l);
    if (rc == MPI_SUCCESS)
        *errhandler = upper_errhandler(l);
    return rc;
}

int Errhandler_free(MPI_Errhandler* errhandler) {
    MPI_Errhandler l = in(*errhandler);
    int rc = g_lower.Errhandler_free(&l);
    if (rc == MPI_SUCCESS)
        *errhandler = MPI_ERRHANDLER_NULL;
    return rc;
}

// ---- groups ----

int Comm_group(MPI_Comm comm, MPI_Group* group) {
    MPI_Group l = MPI_GROUP_NULL;
    int rc = g_lower.Comm_group(in(comm), &l);
    if (rc != MPI_SUCCESS)
        return rc;
    Group* g = new_group(l, Origin::FromComm);
    g->comm = obj<Comm>(comm);
    retain(&g->comm->h);
    *group = handle<MPI_Group>(g);
    return rc;
}

static int group_subset(int rc, MPI_Group l, MPI_Group parent, Origin origin, int n, const int ranks[],
                        MPI_Group* out) {
    if (rc != MPI_SUCCESS)
        return rc;
    Group* g = new_group(l, origin);
    g->parent = obj<Group>(parent);
    retain(&g->parent->h);
    g->nranks = n;
    g->ranks = new int[std::max(n, 1)];
    std::memcpy(g->ranks, ranks, sizeof(int) * n);
    *out = handle<MPI_Group>(g);
    return rc;
}

int Group_incl(MPI_Group group, int n, const int ranks[], MPI_Group* newgroup) {
    MPI_Group l = MPI_GROUP_NULL;
    int rc = g_lower.Group_incl(in(group), n, ranks, &l);
    return group_subset(rc, l, group, Origin::Incl, n, ranks, newgroup);
}

int Group_excl(MPI_Group group, int n, const int ranks[], MPI_Group* newgroup) {
    MPI_Group l = MPI_GROUP_NULL;
    int rc = g_lower.Group_excl(in(group), n, ranks, &l);
    return group_subset(rc, l, group, Origin::Excl, n, ranks, newgroup);
}

int Group_free(MPI_Group* group) {
    Group* g = obj<Group>(*group);
    MPI_Group l = in(*group);
    int rc = g_lower.Group_free(&l);
    if (rc != MPI_SUCCESS)
        return rc;
    if (g->origin != Origin::Predefined) {
        g->h.real = nullptr;
        g->h.app_freed = true;
        release_group(g);
    }
    *group = MPI_GROUP_NULL;
    return rc;
}

// ---- datatypes ----

int Type_contiguous(int count, MPI_Datatype oldtype, MPI_Datatype* newtype) {
    MPI_Datatype l = MPI_DATATYPE_NULL;
    int rc = g_lower.Type_contiguous(count, in(oldtype), &l);
    return new_datatype(rc, l, Origin::Contiguous, oldtype, count, 0, 0, newtype);
}

int Type_vector(int count, int blocklength, int stride, MPI_Datatype oldtype, MPI_Datatype* newtype) {
    MPI_Datatype l = MPI_DATATYPE_NULL;
    int rc = g_lower.Type_vector(count, blocklength, stride, in(oldtype), &l);
    return new_datatype(rc, l, Origin::Vector, oldtype, count, blocklength, stride, newtype);
}

int Type_create_struct(int count, const int blocklengths[], const MPI_Aint displacements[],
                       const MPI_Datatype types[], MPI_Datatype* newtype) {
    // The lower half checks the arguments (a negative count, a null type) first.
    std::vector<MPI_Datatype> lt(std::max(count, 0));
    for (int i = 0; i < count; ++i)
        lt[i] = in(types[i]);
    MPI_Datatype l = MPI_DATATYPE_NULL;
    int rc = g_lower.Type_create_struct(count, blocklengths, displacements, lt.data(), &l);
    if (rc != MPI_SUCCESS)
        return rc;
    Datatype* t = new Datatype{};
    t->origin = Origin::Struct;
    t->count = count;
    t->blocklengths = new int[std::max(count, 1)];  // a struct of no blocks is valid
    t->displacements = new MPI_Aint[std::max(count, 1)];
    t->types = new Datatype*[std::max(count, 1)];
    for (int i = 0; i < count; ++i) {
        t->blocklengths[i] = blocklengths[i];
        t->displacements[i] = displacements[i];
        t->types[i] = obj<Datatype>(types[i]);
        retain(&t->types[i]->h);
    }
    return adopt_datatype(t, l, newtype);
}

int Type_commit(MPI_Datatype* type) {
    Datatype* t = obj<Datatype>(*type);
    MPI_Datatype l = in(*type);
    int rc = g_lower.Type_commit(&l);
    if (rc == MPI_SUCCESS)
        t->committed = true;
    return rc;
}

int Type_free(MPI_Datatype* type) {
    Datatype* t = obj<Datatype>(*type);
    MPI_Datatype l = in(*type);
    int rc = g_lower.Type_free(&l);
    if (rc != MPI_SUCCESS)
        return rc;
    if (t->origin != Origin::Predefined) {
        unregister_datatype(t);
        t->h.real = nullptr;
        t->h.app_freed = true;
        release_datatype(t);
    }
    *type = MPI_DATATYPE_NULL;
    return rc;
}

// ---- operations ----

int Op_create(MPI_User_function* fn, int commute, MPI_Op* op) {
    auto free_slot = std::find(g_op_slots.begin(), g_op_slots.end(), nullptr);
    if (free_slot == g_op_slots.end())
        fatal("MPI_Op_create: more than %d user operations at once are not supported by ckpt", kOpSlots);
    int slot = static_cast<int>(free_slot - g_op_slots.begin());
    MPI_Op l = MPI_OP_NULL;
    int rc = g_lower.Op_create(kTrampolines[slot], commute, &l);
    if (rc != MPI_SUCCESS)
        return rc;
    Op* o = new Op{};
    o->h.real = l;
    o->origin = Origin::User;
    o->fn = fn;
    o->commute = commute;
    o->slot = slot;
    g_op_slots[slot] = o;
    add_recipe({.object = &o->h});
    *op = handle<MPI_Op>(o);
    return rc;
}

int Op_free(MPI_Op* op) {
    Op* o = obj<Op>(*op);
    MPI_Op l = in(*op);
    int rc = g_lower.Op_free(&l);
    if (rc != MPI_SUCCESS)
        return rc;
    if (o->origin == Origin::User) {
        g_op_slots[o->slot] = nullptr;
        drop_local_recipe(&o->h);
        delete o;
    }
    *op = MPI_OP_NULL;
    return rc;
}

}  // namespace impl
}  // namespace ckpt::mpi

namespace ckpt::mpi {

namespace {
// Replayed objects the application had freed: freed again once pending receives that name
// them are posted again (free_replayed_objects).
std::vector<Handle*> g_refree;
}  // namespace

// On a fresh lower half (restart): every recipe again, in order. Fails (naming the call)
// rather than carry on with a wrong object.
void replay_objects() {
    auto check = [](int rc, const char* call) {
        if (rc != MPI_SUCCESS)
            fatal("restart: replaying %s failed (error %d)", call, rc);
    };
    std::vector<Handle*>& freed = g_refree;
    freed.clear();
    for (const Recipe& r : g_recipes ? *g_recipes : std::vector<Recipe>{}) {
        if (r.collective) {
            MPI_Comm parent = real_of<MPI_Comm>(r.parent->h), l = MPI_COMM_NULL;
            switch (r.origin) {
                case Origin::Dup: check(g_lower.Comm_dup(parent, &l), "MPI_Comm_dup"); break;
                case Origin::Split: check(g_lower.Comm_split(parent, r.color, r.key, &l), "MPI_Comm_split"); break;
                case Origin::SplitType:
                    // Re-queried: the ranks may share other nodes now.
                    check(g_lower.Comm_split_type(parent, r.color, r.key, in(MPI_INFO_NULL), &l), "MPI_Comm_split_type");
                    break;
                case Origin::Create:
                    check(g_lower.Comm_create(parent, r.group ? real_of<MPI_Group>(r.group->h) : in(MPI_GROUP_NULL), &l),
                          "MPI_Comm_create");
                    break;
                default: fatal("restart: a communicator recipe of unknown origin %d", static_cast<int>(r.origin));
            }
            bool got = l != static_cast<MPI_Comm>(g_lower_comm_null);
            if (got != (r.result != nullptr))
                fatal("restart: a replayed communicator creation gave %s here, and %s before the checkpoint",
                      got ? "a communicator" : "MPI_COMM_NULL", r.result ? "a communicator" : "MPI_COMM_NULL");
            if (!r.result)
                continue;
            r.result->h.real = l;
            if (r.result->errhandler)
                check(g_lower.Comm_set_errhandler(l, in(handle<MPI_Errhandler>(r.result->errhandler))),
                      "MPI_Comm_set_errhandler");
            refresh_comm(r.result);
            if (r.result->h.app_freed)
                freed.push_back(&r.result->h);
            continue;
        }
        Handle* h = r.object;
        switch (h->kind) {
            case Kind::Group: {
                auto* g = reinterpret_cast<Group*>(h);
                MPI_Group l = MPI_GROUP_NULL;
                if (g->origin == Origin::FromComm)
                    check(g_lower.Comm_group(real_of<MPI_Comm>(g->comm->h), &l), "MPI_Comm_group");
                else if (g->origin == Origin::Incl)
                    check(g_lower.Group_incl(real_of<MPI_Group>(g->parent->h), g->nranks, g->ranks, &l), "MPI_Group_incl");
                else
                    check(g_lower.Group_excl(real_of<MPI_Group>(g->parent->h), g->nranks, g->ranks, &l), "MPI_Group_excl");
                h->real = l;
                break;
            }
            case Kind::Datatype: {
                auto* t = reinterpret_cast<Datatype*>(h);
                MPI_Datatype l = MPI_DATATYPE_NULL, old = t->old ? real_of<MPI_Datatype>(t->old->h) : nullptr;
                if (t->origin == Origin::Contiguous) {
                    check(g_lower.Type_contiguous(t->count, old, &l), "MPI_Type_contiguous");
                } else if (t->origin == Origin::Vector) {
                    check(g_lower.Type_vector(t->count, t->blocklength, t->stride, old, &l), "MPI_Type_vector");
                } else {
                    // Displacements as the application gave them: absolute addresses (from
                    // MPI_BOTTOM) still hold, the image keeps the memory where it was.
                    std::vector<MPI_Datatype> lt = lower_types(t->count, t->types);
                    check(g_lower.Type_create_struct(t->count, t->blocklengths, t->displacements, lt.data(), &l),
                          "MPI_Type_create_struct");
                }
                if (t->committed)
                    check(g_lower.Type_commit(&l), "MPI_Type_commit");
                h->real = l;
                register_datatype(t);
                break;
            }
            case Kind::Op: {
                auto* o = reinterpret_cast<Op*>(h);
                MPI_Op l = MPI_OP_NULL;
                check(g_lower.Op_create(kTrampolines[o->slot], o->commute, &l), "MPI_Op_create");
                h->real = l;
                break;
            }
            default: fatal("restart: a recipe for an object of kind %d", static_cast<int>(h->kind));
        }
        if (h->app_freed)
            freed.push_back(h);
    }
    // Error handlers the application set on the predefined communicators.
    for (MPI_Comm c : {MPI_COMM_WORLD, MPI_COMM_SELF})
        if (Errhandler* e = obj<Comm>(c)->errhandler)
            check(g_lower.Comm_set_errhandler(in(c), in(handle<MPI_Errhandler>(e))), "MPI_Comm_set_errhandler");
}

// What the application had freed is freed again (pending operations keep what they use).
void free_replayed_objects() {
    for (Handle* h : g_refree) {
        switch (h->kind) {
            case Kind::Comm: { MPI_Comm l = real_of<MPI_Comm>(*h); g_lower.Comm_free(&l); break; }
            case Kind::Group: { MPI_Group l = real_of<MPI_Group>(*h); g_lower.Group_free(&l); break; }
            case Kind::Datatype: {
                unregister_datatype(reinterpret_cast<Datatype*>(h));
                MPI_Datatype l = real_of<MPI_Datatype>(*h);
                g_lower.Type_free(&l);
                break;
            }
            default: break;
        }
        h->real = nullptr;
    }
    g_refree.clear();
}

}  // namespace ckpt::mpi
