// Non-blocking point-to-point and completion. A request the application holds is one of our
// Request objects (from a free list: no allocation or lock on the fast path) carrying the
// lower half's request and the call's arguments (to re-post a receive after a restart).
// When the lower half completes and releases its request (its handle becomes its
// MPI_REQUEST_NULL), ours goes back to the free list and the application's becomes ours.
//
// For the quiesce (quiesce.h): posted requests are linked as active; a receive is counted
// when it completes (once: a drain may have seen it first); waits are tests plus a progress
// loop, so that a rank waiting for a peer that parked can park too; a receive that a held
// (drained) message satisfies completes in the upper half alone.
#include <mpi.h>

#include <vector>

#include "abi_impl.h"
#include "drained.h"
#include "quiesce.h"
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
    r->counted = false;
    r->done_upper = false;
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

inline MPI_Request lower_of(MPI_Request r) {
    return r == MPI_REQUEST_NULL ? static_cast<MPI_Request>(g_lower_request_null)
                                 : real_of<MPI_Request>(obj<Request>(r)->h);
}

// The lower half completed (and released) a request: count a receive once, hand the status
// out, and release ours.
inline void complete(MPI_Request* app, const MPI_Status& st, MPI_Status* out) {
    Request* r = obj<Request>(*app);
    if (r->call == Request::Call::Recv && !r->counted)
        count_received(r->comm, st);
    if (out != MPI_STATUS_IGNORE)
        *out = st;
    unlink_active(r);
    free_request(r);
    *app = MPI_REQUEST_NULL;
}

// After the lower half worked on a request: done (its handle became null), or still going.
inline bool settle(MPI_Request* app, MPI_Request lower_req, const MPI_Status& st, MPI_Status* out) {
    if (*app == MPI_REQUEST_NULL)
        return false;
    if (lower_req == static_cast<MPI_Request>(g_lower_request_null)) {
        complete(app, st, out);
        return true;
    }
    obj<Request>(*app)->h.real = lower_req;
    return false;
}

// A request completed in the upper half (by a held message): its status, and it is gone.
inline void complete_upper(MPI_Request* app, MPI_Status* out) {
    Request* r = obj<Request>(*app);
    if (out != MPI_STATUS_IGNORE)
        *out = r->status;
    free_request(r);
    *app = MPI_REQUEST_NULL;
}

inline bool is_upper_done(MPI_Request r) { return r != MPI_REQUEST_NULL && obj<Request>(r)->done_upper; }

Request* new_request(Request::Call call, const void* buf, int count, MPI_Datatype type, int peer, int tag,
                     MPI_Comm comm) {
    Request* r = alloc_request();
    r->call = call;
    r->buf = buf;
    r->count = count;
    r->peer = peer;
    r->tag = tag;
    r->type = obj<Datatype>(type);  // the recipe keeps both alive until the request is done
    r->comm = obj<Comm>(comm);
    ++r->type->h.refs;
    ++r->comm->h.refs;
    return r;
}

template <class Post>
int post(Request::Call call, const void* buf, int count, MPI_Datatype type, int peer, int tag,
         MPI_Comm comm, MPI_Request* request, Post&& fn) {
    MPI_Request lower_req = MPI_REQUEST_NULL;
    int rc = fn(&lower_req);
    if (rc != MPI_SUCCESS)
        return rc;
    Request* r = new_request(call, buf, count, type, peer, tag, comm);
    r->h.real = lower_req;
    link_active(r);
    *request = handle<MPI_Request>(r);
    return rc;
}

// Lower-half copies of an array of requests, and statuses to count receives with: on the
// stack for the usual small counts.
class LowerArray {
public:
    LowerArray(int count, const MPI_Request* app) : n_(count) {
        if (count > kSmall) {
            heap_.resize(count);
            heap_status_.resize(count);
            p_ = heap_.data();
            st_ = heap_status_.data();
        }
        for (int i = 0; i < count; ++i) {
            p_[i] = lower_of(app[i]);
            upper_done_ += is_upper_done(app[i]);
        }
    }
    MPI_Request* data() { return p_; }
    MPI_Status* statuses() { return st_; }
    int upper_done() const { return upper_done_; }
    // After a call that reported statuses for every request (the *all forms).
    void settle_all(MPI_Request* app, MPI_Status* out) {
        for (int i = 0; i < n_; ++i) {
            MPI_Status* o = out == MPI_STATUSES_IGNORE ? MPI_STATUS_IGNORE : &out[i];
            if (is_upper_done(app[i]))
                complete_upper(&app[i], o);
            else
                settle(&app[i], p_[i], st_[i], o);
        }
    }
    // After a call that reported the requests at indices[0..n) (the *some forms).
    void settle_some(MPI_Request* app, int n, const int* indices, MPI_Status* out) {
        for (int k = 0; k < n; ++k)
            settle(&app[indices[k]], p_[indices[k]], st_[k], out == MPI_STATUSES_IGNORE ? MPI_STATUS_IGNORE : &out[k]);
        for (int i = 0; i < n_; ++i)  // still going: the lower handle may have changed
            if (app[i] != MPI_REQUEST_NULL && !is_upper_done(app[i]) && p_[i] != static_cast<MPI_Request>(g_lower_request_null))
                obj<Request>(app[i])->h.real = p_[i];
    }

private:
    static constexpr int kSmall = 32;
    int n_;
    int upper_done_ = 0;
    MPI_Request small_[kSmall];
    MPI_Status small_status_[kSmall];
    std::vector<MPI_Request> heap_;
    std::vector<MPI_Status> heap_status_;
    MPI_Request* p_ = small_;
    MPI_Status* st_ = small_status_;
};

int test_one(MPI_Request* req, int* flag, MPI_Status* status) {
    if (is_upper_done(*req)) {
        complete_upper(req, status);
        *flag = 1;
        return MPI_SUCCESS;
    }
    if (*req == MPI_REQUEST_NULL) {
        MPI_Request l = static_cast<MPI_Request>(g_lower_request_null);
        return g_lower.Test(&l, flag, status);  // the empty status, as the lower half fills it
    }
    MPI_Request l = lower_of(*req);
    MPI_Status st{};
    int rc = g_lower.Test(&l, flag, &st);
    if (*flag && !settle(req, l, st, status) && status != MPI_STATUS_IGNORE)
        *status = st;  // a persistent or freed-later request: not ours to release
    else if (!*flag)
        obj<Request>(*req)->h.real = l;
    return rc;
}

int test_some(int incount, MPI_Request reqs[], int* outcount, int indices[], MPI_Status statuses[]) {
    LowerArray l(incount, reqs);
    if (l.upper_done()) {
        int n = 0;
        for (int i = 0; i < incount; ++i)
            if (is_upper_done(reqs[i])) {
                indices[n] = i;
                complete_upper(&reqs[i], statuses == MPI_STATUSES_IGNORE ? MPI_STATUS_IGNORE : &statuses[n]);
                ++n;
            }
        *outcount = n;
        return MPI_SUCCESS;
    }
    int rc = g_lower.Testsome(incount, l.data(), outcount, indices, l.statuses());
    if (*outcount != MPI_UNDEFINED)
        l.settle_some(reqs, *outcount, indices, statuses);
    return rc;
}

}  // namespace

// A receive satisfied by a held message: the request is complete in the upper half.
int post_from_drained(DrainedMessage* m, void* buf, int count, MPI_Datatype type, int source, int tag,
                      MPI_Comm comm, MPI_Request* req) {
    Request* r = new_request(Request::Call::Recv, buf, count, type, source, tag, comm);
    r->h.real = g_lower_request_null;
    r->counted = true;
    r->done_upper = true;
    r->status.MPI_ERROR = deliver_drained(m, buf, count, type, &r->status);
    *req = handle<MPI_Request>(r);
    return MPI_SUCCESS;
}

namespace impl {

int Isend(const void* buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm, MPI_Request* req) {
    p2p_entry();
    count_sent(obj<Comm>(comm), dest);
    return post(Request::Call::Send, buf, count, type, dest, tag, comm, req, [&](MPI_Request* l) {
        return g_lower.Isend(buf, count, in(type), dest, tag, in(comm), l);
    });
}

int Issend(const void* buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm, MPI_Request* req) {
    p2p_entry();
    count_sent(obj<Comm>(comm), dest);
    return post(Request::Call::Ssend, buf, count, type, dest, tag, comm, req, [&](MPI_Request* l) {
        return g_lower.Issend(buf, count, in(type), dest, tag, in(comm), l);
    });
}

int Irsend(const void* buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm, MPI_Request* req) {
    p2p_entry();
    count_sent(obj<Comm>(comm), dest);
    return post(Request::Call::Rsend, buf, count, type, dest, tag, comm, req, [&](MPI_Request* l) {
        return g_lower.Irsend(buf, count, in(type), dest, tag, in(comm), l);
    });
}

int Irecv(void* buf, int count, MPI_Datatype type, int source, int tag, MPI_Comm comm, MPI_Request* req) {
    p2p_entry();
    if (g_drained_head) [[unlikely]]
        if (DrainedMessage* m = find_drained(obj<Comm>(comm), source, tag))
            return post_from_drained(m, buf, count, type, source, tag, comm, req);
    return post(Request::Call::Recv, buf, count, type, source, tag, comm, req, [&](MPI_Request* l) {
        return g_lower.Irecv(buf, count, in(type), source, tag, in(comm), l);
    });
}

int Wait(MPI_Request* req, MPI_Status* status) {
    for (;;) {
        int flag = 0;
        int rc = test_one(req, &flag, status);
        if (flag || rc != MPI_SUCCESS)
            return rc;
        waiting();
    }
}

int Test(MPI_Request* req, int* flag, MPI_Status* status) {
    p2p_entry();
    return test_one(req, flag, status);
}

int Request_free(MPI_Request* req) {
    if (is_upper_done(*req)) {
        complete_upper(req, MPI_STATUS_IGNORE);
        return MPI_SUCCESS;
    }
    // The lower half completes it in the background: no longer ours to count or drain.
    Request* r = obj<Request>(*req);
    MPI_Request l = lower_of(*req);
    int rc = g_lower.Request_free(&l);
    unlink_active(r);
    free_request(r);
    *req = MPI_REQUEST_NULL;
    return rc;
}

int Cancel(MPI_Request* req) {
    if (is_upper_done(*req))
        return MPI_SUCCESS;  // already complete: nothing to cancel, as for a matched receive
    MPI_Request l = lower_of(*req);
    return g_lower.Cancel(&l);
}

int Request_get_status(MPI_Request req, int* flag, MPI_Status* status) {
    if (is_upper_done(req)) {
        *flag = 1;
        if (status != MPI_STATUS_IGNORE)
            *status = obj<Request>(req)->status;
        return MPI_SUCCESS;
    }
    return g_lower.Request_get_status(lower_of(req), flag, status);
}

int Waitall(int count, MPI_Request reqs[], MPI_Status statuses[]) {
    for (;;) {
        int flag = 0;
        int rc = Testall(count, reqs, &flag, statuses);
        if (flag || rc != MPI_SUCCESS)
            return rc;
        waiting();
    }
}

int Testall(int count, MPI_Request reqs[], int* flag, MPI_Status statuses[]) {
    p2p_entry();
    LowerArray l(count, reqs);
    int rc = g_lower.Testall(count, l.data(), flag, l.statuses());
    if (*flag) {
        l.settle_all(reqs, statuses);
    } else {
        // Nothing is released when not all are done, but handles may have changed.
        for (int i = 0; i < count; ++i)
            if (reqs[i] != MPI_REQUEST_NULL && !is_upper_done(reqs[i]))
                obj<Request>(reqs[i])->h.real = l.data()[i];
    }
    return rc;
}

int Waitany(int count, MPI_Request reqs[], int* index, MPI_Status* status) {
    for (;;) {
        int flag = 0;
        int rc = Testany(count, reqs, index, &flag, status);
        if (flag || rc != MPI_SUCCESS)
            return rc;
        waiting();
    }
}

int Testany(int count, MPI_Request reqs[], int* index, int* flag, MPI_Status* status) {
    p2p_entry();
    for (int i = 0; i < count; ++i)
        if (is_upper_done(reqs[i])) {
            complete_upper(&reqs[i], status);
            *index = i;
            *flag = 1;
            return MPI_SUCCESS;
        }
    LowerArray l(count, reqs);
    MPI_Status st{};
    int rc = g_lower.Testany(count, l.data(), index, flag, &st);
    if (*flag && *index != MPI_UNDEFINED) {
        if (!settle(&reqs[*index], l.data()[*index], st, status) && status != MPI_STATUS_IGNORE)
            *status = st;
    } else if (*flag && status != MPI_STATUS_IGNORE) {
        *status = st;  // no active request: the empty status
    }
    return rc;
}

int Waitsome(int incount, MPI_Request reqs[], int* outcount, int indices[], MPI_Status statuses[]) {
    for (;;) {
        int rc = test_some(incount, reqs, outcount, indices, statuses);
        if (rc != MPI_SUCCESS || *outcount != 0)
            return rc;
        waiting();
    }
}

int Testsome(int incount, MPI_Request reqs[], int* outcount, int indices[], MPI_Status statuses[]) {
    p2p_entry();
    return test_some(incount, reqs, outcount, indices, statuses);
}

}  // namespace impl
}  // namespace ckpt::mpi
