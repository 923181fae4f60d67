// Attribute caching on communicators, kept entirely in the upper half: keyvals and the values
// attached with them are the application's memory (pointers it chose), so they are part of the
// image and need no replay at restart. The lower half only answers the predefined attributes
// (MPI_TAG_UB, MPI_HOST, ...), asked each time on the lower communicator so that they are the
// new launch's after a restart. Callbacks get the application's handles.
#include <mpi.h>

#include <algorithm>
#include <map>
#include <vector>

#include "abi_impl.h"
#include "attrs.h"
#include "runtime.h"

namespace ckpt::mpi {

struct Attr {
    int keyval;
    void* value;
};
struct AttrList {
    std::vector<Attr> attrs;  // in the order they were set (MPI_COMM_SELF's are deleted LIFO)
};

namespace {

// Keyvals of ours start far above the predefined ones (Open MPI numbers those from 0), so the
// two never collide and a predefined keyval is told apart by its number alone.
constexpr int kFirstKeyval = 1 << 16;
static_assert(IMPI_HOST_COLOR < kFirstKeyval);

struct Keyval {
    MPI_Comm_copy_attr_function* copy;
    MPI_Comm_delete_attr_function* del;
    void* extra;
    int uses = 0;        // attributes set with it: a freed keyval lives until they are deleted
    bool freed = false;  // the application freed it: no new attributes
};
std::map<int, Keyval>* g_keyvals = nullptr;
int g_next_keyval = kFirstKeyval;

// The predefined attributes' values as last asked: the application gets a pointer into our
// memory, which stays valid in a restored image (the lower half's would be gone).
int g_predefined_values[IMPI_HOST_COLOR + 1];

Keyval* find_keyval(int keyval) {
    if (!g_keyvals)
        return nullptr;
    auto it = g_keyvals->find(keyval);
    return it == g_keyvals->end() ? nullptr : &it->second;
}

void drop_use(int keyval) {
    Keyval* k = find_keyval(keyval);
    if (k && --k->uses == 0 && k->freed)
        g_keyvals->erase(keyval);
}

std::vector<Attr>& attrs_of(Comm* c) {
    if (!c->attrs)
        c->attrs = new AttrList();
    return c->attrs->attrs;
}

Attr* find_attr(Comm* c, int keyval) {
    if (!c->attrs)
        return nullptr;
    auto& v = c->attrs->attrs;
    auto it = std::find_if(v.begin(), v.end(), [keyval](const Attr& a) { return a.keyval == keyval; });
    return it == v.end() ? nullptr : &*it;
}

// Calls the delete callback of one attribute and forgets it; the callback's error is returned
// and the attribute kept, as the standard requires.
int delete_one(MPI_Comm comm, int keyval) {
    Comm* c = obj<Comm>(comm);
    Attr* a = find_attr(c, keyval);
    if (!a)
        return MPI_ERR_KEYVAL;
    Keyval* k = find_keyval(keyval);
    if (k->del) {
        int rc = k->del(comm, keyval, a->value, k->extra);
        if (rc != MPI_SUCCESS)
            return rc;
    }
    auto& v = attrs_of(c);
    v.erase(v.begin() + (find_attr(c, keyval) - v.data()));  // the callback may have set others
    drop_use(keyval);
    return MPI_SUCCESS;
}

void set_one(Comm* c, int keyval, void* value) {
    attrs_of(c).push_back({keyval, value});
    ++find_keyval(keyval)->uses;
}

}  // namespace

int delete_comm_attrs(MPI_Comm comm) {
    Comm* c = obj<Comm>(comm);
    // Last set, first deleted (the order MPI_Finalize must use for MPI_COMM_SELF).
    while (c->attrs && !c->attrs->attrs.empty()) {
        int keyval = c->attrs->attrs.back().keyval;
        if (int rc = delete_one(comm, keyval); rc != MPI_SUCCESS)
            return rc;
    }
    delete c->attrs;
    c->attrs = nullptr;
    return MPI_SUCCESS;
}

int copy_comm_attrs(MPI_Comm from, MPI_Comm to) {
    Comm* src = obj<Comm>(from);
    if (!src->attrs)
        return MPI_SUCCESS;
    std::vector<Attr> snapshot = src->attrs->attrs;  // a callback may change the source's list
    for (const Attr& a : snapshot) {
        Keyval* k = find_keyval(a.keyval);
        if (!k->copy)
            continue;
        void* out = nullptr;
        int flag = 0;
        if (int rc = k->copy(from, a.keyval, k->extra, a.value, &out, &flag); rc != MPI_SUCCESS)
            return rc;
        if (flag)
            set_one(obj<Comm>(to), a.keyval, out);
    }
    return MPI_SUCCESS;
}

namespace impl {

int Comm_create_keyval(MPI_Comm_copy_attr_function* copy, MPI_Comm_delete_attr_function* del, int* keyval,
                       void* extra) {
    if (!g_keyvals)
        g_keyvals = new std::map<int, Keyval>();
    if (g_next_keyval == INT32_MAX)
        return raise_error(MPI_COMM_WORLD, MPI_ERR_KEYVAL);
    int k = g_next_keyval++;
    g_keyvals->emplace(k, Keyval{.copy = copy, .del = del, .extra = extra});
    *keyval = k;
    return MPI_SUCCESS;
}

int Comm_free_keyval(int* keyval) {
    Keyval* k = find_keyval(*keyval);
    if (!k || k->freed)
        return raise_error(MPI_COMM_WORLD, MPI_ERR_KEYVAL);
    k->freed = true;
    if (k->uses == 0)
        g_keyvals->erase(*keyval);
    *keyval = MPI_KEYVAL_INVALID;
    return MPI_SUCCESS;
}

int Comm_set_attr(MPI_Comm comm, int keyval, void* value) {
    Keyval* k = find_keyval(keyval);
    if (!k || k->freed)  // also the predefined keyvals: the application cannot set those
        return raise_error(comm, MPI_ERR_KEYVAL);
    if (find_attr(obj<Comm>(comm), keyval))
        if (int rc = delete_one(comm, keyval); rc != MPI_SUCCESS)
            return raise_error(comm, rc);
    set_one(obj<Comm>(comm), keyval, value);
    return MPI_SUCCESS;
}

int Comm_get_attr(MPI_Comm comm, int keyval, void* value, int* flag) {
    if (keyval >= 0 && keyval < kFirstKeyval) {
        // Predefined: the lower half's value now (after a restart: the new launch's).
        void* p = nullptr;
        int rc = g_lower.Comm_get_attr(in(comm), keyval, &p, flag);
        if (rc == MPI_SUCCESS && *flag && keyval <= IMPI_HOST_COLOR) {
            g_predefined_values[keyval] = *static_cast<int*>(p);
            p = &g_predefined_values[keyval];
        }
        if (rc == MPI_SUCCESS && *flag)
            *static_cast<void**>(value) = p;
        return rc;
    }
    Keyval* k = find_keyval(keyval);
    if (!k)
        return raise_error(comm, MPI_ERR_KEYVAL);
    Attr* a = find_attr(obj<Comm>(comm), keyval);
    *flag = a ? 1 : 0;
    if (a)
        *static_cast<void**>(value) = a->value;
    return MPI_SUCCESS;
}

int Comm_delete_attr(MPI_Comm comm, int keyval) {
    if (!find_keyval(keyval))
        return raise_error(comm, MPI_ERR_KEYVAL);
    int rc = delete_one(comm, keyval);
    return rc == MPI_SUCCESS ? rc : raise_error(comm, rc);
}

// The MPI-1 names: the same calls (MPI_Copy_function has MPI_Comm_copy_attr_function's type).
int Keyval_create(MPI_Copy_function* copy, MPI_Delete_function* del, int* keyval, void* extra) {
    return Comm_create_keyval(copy, del, keyval, extra);
}
int Keyval_free(int* keyval) { return Comm_free_keyval(keyval); }
int Attr_put(MPI_Comm comm, int keyval, void* value) { return Comm_set_attr(comm, keyval, value); }
int Attr_get(MPI_Comm comm, int keyval, void* value, int* flag) { return Comm_get_attr(comm, keyval, value, flag); }
int Attr_delete(MPI_Comm comm, int keyval) { return Comm_delete_attr(comm, keyval); }

}  // namespace impl
}  // namespace ckpt::mpi

// The predefined callbacks (MPI_COMM_NULL_COPY_FN, MPI_COMM_DUP_FN, ... are macros for these):
// applications pass our addresses, so they must be ours, not stubs.
namespace {
int null_copy(int* flag) {
    *flag = 0;
    return MPI_SUCCESS;
}
int dup_copy(void* in, void* out, int* flag) {
    *static_cast<void**>(out) = in;
    *flag = 1;
    return MPI_SUCCESS;
}
}  // namespace

extern "C" {
int OMPI_C_MPI_COMM_NULL_COPY_FN(MPI_Comm, int, void*, void*, void*, int* flag) { return null_copy(flag); }
int OMPI_C_MPI_COMM_DUP_FN(MPI_Comm, int, void*, void* in, void* out, int* flag) { return dup_copy(in, out, flag); }
int OMPI_C_MPI_COMM_NULL_DELETE_FN(MPI_Comm, int, void*, void*) { return MPI_SUCCESS; }
int OMPI_C_MPI_NULL_COPY_FN(MPI_Comm, int, void*, void*, void*, int* flag) { return null_copy(flag); }
int OMPI_C_MPI_DUP_FN(MPI_Comm, int, void*, void* in, void* out, int* flag) { return dup_copy(in, out, flag); }
int OMPI_C_MPI_NULL_DELETE_FN(MPI_Comm, int, void*, void*) { return MPI_SUCCESS; }
}
