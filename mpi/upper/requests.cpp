// Non-blocking point-to-point and completion. A request the application holds is one of our
// Request objects (from a free list: no allocation or lock on the fast path) carrying the
// lower half's request and the call's arguments (to re-post a receive after a restart).
// When the lower half completes and releases its request (its handle becomes its
// MPI_REQUEST_NULL), ours goes back to the free list and the application's becomes ours.
#include <mpi.h>

#include <vector>

#include "abi_impl.h"
#include "runtime.h"

namespace ckpt::mpi {
namespace {

Request* g_free = nullptr;

Request* alloc_request() {
    if (!g_free) [[unlikely]] {
        constexpr int kChunk = 256;
        Request* chunk = new Request[kChunk];  // never freed: requests are reused
        for (int i = 0; i < kChunk; ++i) {
            chunk[i].next_free = g_free;
            g_free = &chunk[i];
        }
    }
    Request* r = g_free;
    g_free = r->next_free;
    return r;
}

void free_request(Request* r) {
    release_datatype(r->type);
    release_comm(r->comm);
    r->type = nullptr;
    r->comm = nullptr;
    r->h.real = nullptr;
    r->next_free = g_free;
    g_free = r;
}

inline MPI_Request lower_of(MPI_Request r) { return real_of<MPI_Request>(obj<Request>(r)->h); }

// After the lower half worked on a request: mirror its new value into ours.
inline void settle(MPI_Request* app, MPI_Request lower_req) {
    if (*app == MPI_REQUEST_NULL)
        return;
    if (lower_req == static_cast<MPI_Request>(g_lower_request_null)) {
        free_request(obj<Request>(*app));
        *app = MPI_REQUEST_NULL;
    } else {
        obj<Request>(*app)->h.real = lower_req;
    }
}

template <class Post>
int post(Request::Call call, const void* buf, int count, MPI_Datatype type, int peer, int tag,
         MPI_Comm comm, MPI_Request* request, Post&& fn) {
    Request* r = alloc_request();
    MPI_Request lower_req = MPI_REQUEST_NULL;
    int rc = fn(&lower_req);
    if (rc != MPI_SUCCESS) {
        r->next_free = g_free;
        g_free = r;
        return rc;
    }
    r->h.real = lower_req;
    r->call = call;
    r->buf = buf;
    r->count = count;
    r->peer = peer;
    r->tag = tag;
    r->type = obj<Datatype>(type);  // the recipe keeps both alive until the request is done
    r->comm = obj<Comm>(comm);
    ++r->type->h.refs;
    ++r->comm->h.refs;
    *request = handle<MPI_Request>(r);
    return rc;
}

// Lower-half copies of an array of requests: on the stack for the usual small counts.
class LowerArray {
public:
    LowerArray(int count, const MPI_Request* app) : n_(count) {
        if (count > kSmall) {
            heap_.resize(count);
            p_ = heap_.data();
        }
        for (int i = 0; i < count; ++i)
            p_[i] = lower_of(app[i]);
    }
    MPI_Request* data() { return p_; }
    void settle_all(MPI_Request* app) {
        for (int i = 0; i < n_; ++i)
            settle(&app[i], p_[i]);
    }

private:
    static constexpr int kSmall = 32;
    int n_;
    MPI_Request small_[kSmall];
    std::vector<MPI_Request> heap_;
    MPI_Request* p_ = small_;
};

}  // namespace

namespace impl {

int Isend(const void* buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm, MPI_Request* req) {
    return post(Request::Call::Send, buf, count, type, dest, tag, comm, req, [&](MPI_Request* l) {
        return g_lower.Isend(buf, count, in(type), dest, tag, in(comm), l);
    });
}

int Issend(const void* buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm, MPI_Request* req) {
    return post(Request::Call::Ssend, buf, count, type, dest, tag, comm, req, [&](MPI_Request* l) {
        return g_lower.Issend(buf, count, in(type), dest, tag, in(comm), l);
    });
}

int Irsend(const void* buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm, MPI_Request* req) {
    return post(Request::Call::Rsend, buf, count, type, dest, tag, comm, req, [&](MPI_Request* l) {
        return g_lower.Irsend(buf, count, in(type), dest, tag, in(comm), l);
    });
}

int Irecv(void* buf, int count, MPI_Datatype type, int source, int tag, MPI_Comm comm, MPI_Request* req) {
    return post(Request::Call::Recv, buf, count, type, source, tag, comm, req, [&](MPI_Request* l) {
        return g_lower.Irecv(buf, count, in(type), source, tag, in(comm), l);
    });
}

int Wait(MPI_Request* req, MPI_Status* status) {
    MPI_Request l = lower_of(*req);
    int rc = g_lower.Wait(&l, status);
    settle(req, l);
    return rc;
}

int Test(MPI_Request* req, int* flag, MPI_Status* status) {
    MPI_Request l = lower_of(*req);
    int rc = g_lower.Test(&l, flag, status);
    settle(req, l);
    return rc;
}

int Request_free(MPI_Request* req) {
    MPI_Request l = lower_of(*req);
    int rc = g_lower.Request_free(&l);
    settle(req, l);
    return rc;
}

int Cancel(MPI_Request* req) {
    MPI_Request l = lower_of(*req);
    return g_lower.Cancel(&l);
}

int Waitall(int count, MPI_Request reqs[], MPI_Status statuses[]) {
    LowerArray l(count, reqs);
    int rc = g_lower.Waitall(count, l.data(), statuses);
    l.settle_all(reqs);
    return rc;
}

int Testall(int count, MPI_Request reqs[], int* flag, MPI_Status statuses[]) {
    LowerArray l(count, reqs);
    int rc = g_lower.Testall(count, l.data(), flag, statuses);
    l.settle_all(reqs);
    return rc;
}

int Waitany(int count, MPI_Request reqs[], int* index, MPI_Status* status) {
    LowerArray l(count, reqs);
    int rc = g_lower.Waitany(count, l.data(), index, status);
    l.settle_all(reqs);
    return rc;
}

int Testany(int count, MPI_Request reqs[], int* index, int* flag, MPI_Status* status) {
    LowerArray l(count, reqs);
    int rc = g_lower.Testany(count, l.data(), index, flag, status);
    l.settle_all(reqs);
    return rc;
}

int Waitsome(int incount, MPI_Request reqs[], int* outcount, int indices[], MPI_Status statuses[]) {
    LowerArray l(incount, reqs);
    int rc = g_lower.Waitsome(incount, l.data(), outcount, indices, statuses);
    l.settle_all(reqs);
    return rc;
}

int Testsome(int incount, MPI_Request reqs[], int* outcount, int indices[], MPI_Status statuses[]) {
    LowerArray l(incount, reqs);
    int rc = g_lower.Testsome(incount, l.data(), outcount, indices, statuses);
    l.settle_all(reqs);
    return rc;
}

}  // namespace impl
}  // namespace ckpt::mpi
