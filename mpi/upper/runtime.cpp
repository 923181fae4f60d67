// Loading the lower half, start-up and shut-down, and the messages of the upper half.
#include "runtime.h"

#include <dlfcn.h>
#include <pmix_common.h>
#include <signal.h>
#include <link.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>

#include "abi_impl.h"
#include "attrs.h"
#include "ckpt/mpi/lower_half.h"
#include "quiesce.h"
#include "resources.h"

#ifndef CKPT_MPI_SHIM_PATH
#error "CKPT_MPI_SHIM_PATH (the lower half's shim) must be defined by the build"
#endif

namespace ckpt::mpi {

LowerFns g_lower;
bool g_lower_loaded = false;
void* g_lower_request_null = nullptr;
void* g_lower_comm_null = nullptr;
void* g_lower_group_null = nullptr;
double g_wtime_offset = 0;
double g_wtime_parked = 0;

namespace {

void* g_shim = nullptr;
bool g_initialized = false;
bool g_finalized = false;
// Lower-half handle -> application handle, for what the lower half hands back to us.
std::unordered_map<void*, Handle*>* g_upper_of = nullptr;

int g_thread_level = MPI_THREAD_SINGLE;  // what MPI_Init(_thread) asked the lower half for
int g_rank_at_init = -1, g_size_at_init = -1;

void vreport(const char* fmt, va_list ap) {
    char buf[1024];
    int n = std::snprintf(buf, sizeof buf, "ckpt: ");
    n += std::vsnprintf(buf + n, sizeof buf - n, fmt, ap);
    n = std::min<int>(n, sizeof buf - 2);
    buf[n++] = '\n';
    ssize_t w = ::write(STDERR_FILENO, buf, n);
    (void)w;
}

const char* own_path() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&own_path), &info) && info.dli_fname)
        return info.dli_fname;
    return "?";
}

const char* lower_libmpi_path() {
    Dl_info info{};
    if (g_lower.Init && dladdr(reinterpret_cast<void*>(g_lower.Init), &info) && info.dli_fname)
        return info.dli_fname;
    return "?";
}

// After MPI_Init: one line naming both halves, when CKPT_MPI_TRACE_INIT=1.
void trace_init() {
    const char* t = std::getenv("CKPT_MPI_TRACE_INIT");
    if (!t || std::strcmp(t, "1") != 0)
        return;
    int rank = -1, size = -1;
    g_lower.Comm_rank(in(MPI_COMM_WORLD), &rank);
    g_lower.Comm_size(in(MPI_COMM_WORLD), &size);
    Lmid_t lmid = 0;
    dlinfo(g_shim, RTLD_DI_LMID, &lmid);
    std::fprintf(stderr, "ckpt-mpi: rank %d of %d: upper half %s, lower half %s (namespace %ld)\n", rank,
                 size, own_path(), lower_libmpi_path(), static_cast<long>(lmid));
}

MPI_Comm world() { return MPI_COMM_WORLD; }
MPI_Comm self() { return MPI_COMM_SELF; }

// Open MPI 4.1 ends MPI_Init with a PMIx fence that collects no data, and under Slurm's pmix
// plugin (22.05, PMIx 4.2) such a fence holds only the ranks of one node: measured, the ranks
// of the node that came first left it at once while a rank of the other node still slept. So
// a rank may leave MPI_Init while a peer on another node has not registered its message
// handlers yet, and its first message kills that peer with SIGSEGV inside MPI_Init (plain
// Open MPI under this cluster's srun: 2 starts in 25 with ranks started up to 2 s apart;
// through ckpt about 1 in 20). A fence that collects data is a barrier of every rank: one
// after MPI_Init, on the lower half's own PMIx client, holds each rank until all have left
// MPI_Init. It sends no MPI message. Without that client (another PMIx, a singleton) there
// is nothing to wait for.
void fence_after_init() {
    Lmid_t lmid = 0;
    if (dlinfo(g_shim, RTLD_DI_LMID, &lmid) != 0)
        return;
    void* pmix = dlmopen(lmid, "libpmix.so.2", RTLD_NOW | RTLD_NOLOAD);
    if (!pmix)
        return;
    using FenceFn = pmix_status_t (*)(const pmix_proc_t procs[], size_t nprocs, const pmix_info_t info[], size_t ninfo);
    if (auto fence = reinterpret_cast<FenceFn>(dlsym(pmix, "PMIx_Fence"))) {
        pmix_info_t collect;
        std::memset(&collect, 0, sizeof collect);
        std::strncpy(collect.key, PMIX_COLLECT_DATA, PMIX_MAX_KEYLEN);
        collect.value.type = PMIX_BOOL;
        collect.value.data.flag = true;
        if (pmix_status_t rc = fence(nullptr, 0, &collect, 1); rc != PMIX_SUCCESS && std::getenv("CKPT_MPI_TRACE_INIT"))
            std::fprintf(stderr, "ckpt-mpi: the PMIx fence after MPI_Init failed (%d)\n", rc);
    }
    dlclose(pmix);
}

}  // namespace

void fatal(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(fmt, ap);
    va_end(ap);
    std::abort();
}

void load_lower() {
    if (g_lower_loaded)
        return;
    resources_before_lower();
    // The shim sits in lower/ beside this library's folder (upper/), in the build and where
    // it is installed or staged as a whole; the build's own path is the last resort.
    std::string beside;
    const char* shim = std::getenv("CKPT_MPI_LOWER_SHIM");
    if (!shim || !*shim) {
        std::string own = own_path();
        std::string built = CKPT_MPI_SHIM_PATH;
        size_t slash = own.rfind('/');
        size_t parent = slash == std::string::npos || slash == 0 ? std::string::npos : own.rfind('/', slash - 1);
        if (parent != std::string::npos)
            beside = own.substr(0, parent) + "/lower" + built.substr(built.rfind('/'));
        shim = !beside.empty() && access(beside.c_str(), R_OK) == 0 ? beside.c_str() : CKPT_MPI_SHIM_PATH;
    }
    g_shim = dlmopen(LM_ID_NEWLM, shim, RTLD_NOW | RTLD_LOCAL);
    if (!g_shim)
        fatal("cannot load the lower half (%s): %s", shim, dlerror());
    for_each_lower(g_lower, [](void** slot, const char* name) {
        *slot = dlsym(g_shim, name);
        if (!*slot)
            fatal("the lower half has no %s", name);
    });
    g_upper_of = new std::unordered_map<void*, Handle*>();
    for (std::size_t i = 0; i < kPredefinedCount; ++i) {
        Handle* h = kPredefined[i].obj;
        h->real = dlsym(g_shim, kPredefined[i].name);
        if (!h->real)
            fatal("the lower half has no %s", kPredefined[i].name);
        (*g_upper_of)[h->real] = h;
    }
    g_lower_request_null = obj<Handle>(MPI_REQUEST_NULL)->real;
    g_lower_comm_null = obj<Handle>(MPI_COMM_NULL)->real;
    g_lower_group_null = obj<Handle>(MPI_GROUP_NULL)->real;
    resources_attach_shim(g_shim);
    g_lower_loaded = true;
}

MPI_Datatype upper_datatype(MPI_Datatype lower_type) {
    auto it = g_upper_of->find(lower_type);
    if (it == g_upper_of->end() || it->second->kind != Kind::Datatype)
        fatal("the lower half handed back a datatype the upper half does not know (%p)",
              static_cast<void*>(lower_type));
    return handle<MPI_Datatype>(it->second);
}

void register_datatype(Datatype* t) { (*g_upper_of)[t->h.real] = &t->h; }
void unregister_datatype(Datatype* t) { g_upper_of->erase(t->h.real); }

MPI_Errhandler upper_errhandler(MPI_Errhandler lower_eh) {
    auto it = g_upper_of->find(lower_eh);
    if (it == g_upper_of->end() || it->second->kind != Kind::Errhandler)
        fatal("MPI_Comm_get_errhandler: only predefined error handlers are supported by ckpt");
    return handle<MPI_Errhandler>(it->second);
}

pthread_t g_mpi_thread{};
bool g_mpi_thread_known = false;

void called_from_other_thread(const char* function) {
    fatal("%s was called from a thread other than the one that initialized MPI: ckpt supports "
          "MPI_THREAD_FUNNELED at most (MPI calls from several threads are not supported yet)",
          function);
}

static void after_init() {
    fence_after_init();
    g_initialized = true;
    g_mpi_thread = pthread_self();
    g_mpi_thread_known = true;
    g_lower.Comm_rank(in(MPI_COMM_WORLD), &g_rank_at_init);
    g_lower.Comm_size(in(MPI_COMM_WORLD), &g_size_at_init);
    // Communicator ids: parent's id and creation ordinal; the predefined ones are fixed.
    obj<Comm>(world())->id = 1;
    obj<Comm>(self())->id = 2;
    resources_after_init();
    quiesce_after_init();
    trace_init();
}

std::vector<int> lower_signals() {
    std::vector<int> sigs(64);
    sigs.resize(std::min<size_t>(sigs.size(), ckpt_mpi_lower_signals(sigs.data(), sigs.size())));
    return sigs;
}

// Variables a launch sets for its ranks: taken from the new launch at restart, the rest of
// the environment is the application's.
static bool launch_variable(const std::string& kv) {
    for (const char* prefix : {"OMPI_", "PMIX_", "OPAL_", "SLURM_", "CKPT_MPI_"})
        if (kv.rfind(prefix, 0) == 0)
            return true;
    return false;
}

void restart_lower(const std::vector<std::string>& env) {
    std::vector<std::string> stale;
    for (char** e = environ; e && *e; ++e)
        if (launch_variable(*e))
            stale.emplace_back(*e, std::strcspn(*e, "="));
    for (const auto& name : stale)
        unsetenv(name.c_str());
    for (const auto& kv : env) {
        size_t eq = kv.find('=');
        if (eq != std::string::npos && eq > 0 && launch_variable(kv))
            setenv(kv.substr(0, eq).c_str(), kv.c_str() + eq + 1, 1);
    }
    // The old lower half's handlers run code of a library that is no more.
    for (int sig : g_lower_signals)
        signal(sig, SIG_DFL);
    g_lower_loaded = false;
    load_lower();
    int got = MPI_THREAD_SINGLE;
    int rc = g_lower.Init_thread(nullptr, nullptr, g_thread_level, &got);
    if (rc != MPI_SUCCESS)
        fatal("restart: MPI_Init_thread failed on the new lower half (error %d)", rc);
    fence_after_init();
    int rank = -1, size = -1;
    g_lower.Comm_rank(in(MPI_COMM_WORLD), &rank);
    g_lower.Comm_size(in(MPI_COMM_WORLD), &size);
    if (rank != g_rank_at_init || size != g_size_at_init)
        fatal("restart: this is rank %d of %d, restored from the image of rank %d of %d", rank, size, g_rank_at_init,
              g_size_at_init);
    g_wtime_offset = g_wtime_parked - g_lower.Wtime();
    resources_after_init();
    refresh_comm(obj<Comm>(MPI_COMM_WORLD));
    refresh_comm(obj<Comm>(MPI_COMM_SELF));
    replay_objects();
    trace_init();
}

namespace impl {

int Init(int* argc, char*** argv) {
    int rc = lower().Init(argc, argv);
    if (rc == MPI_SUCCESS)
        after_init();
    return rc;
}

// MPI_THREAD_FUNNELED at most (one thread calls MPI, nothing in the upper half locks); a
// request for more is answered with what is supported, as the standard allows.
int Init_thread(int* argc, char*** argv, int required, int* provided) {
    int level = std::min(required, static_cast<int>(MPI_THREAD_FUNNELED));
    g_thread_level = level;
    int got = MPI_THREAD_SINGLE;
    int rc = lower().Init_thread(argc, argv, level, &got);
    *provided = std::min(got, static_cast<int>(MPI_THREAD_FUNNELED));
    if (rc == MPI_SUCCESS)
        after_init();
    return rc;
}

int Query_thread(int* provided) {
    int got = MPI_THREAD_SINGLE;
    int rc = lower().Query_thread(&got);
    *provided = std::min(got, static_cast<int>(MPI_THREAD_FUNNELED));
    return rc;
}

int Initialized(int* flag) {
    *flag = g_initialized ? 1 : 0;
    return MPI_SUCCESS;
}

int Finalized(int* flag) {
    *flag = g_finalized ? 1 : 0;
    return MPI_SUCCESS;
}

double Wtime() { return lower().Wtime() + g_wtime_offset; }

int Finalize() {
    // MPI_COMM_SELF's attributes are deleted first, as the standard requires (a library's
    // clean-up hook), then MPI_COMM_WORLD's, as Open MPI does, while MPI still works.
    for (MPI_Comm c : {MPI_COMM_SELF, MPI_COMM_WORLD})
        if (int rc = delete_comm_attrs(c); rc != MPI_SUCCESS)
            return rc;
    quiesce_before_finalize();
    int rc = lower().Finalize();
    g_finalized = true;
    return rc;
}

}  // namespace impl
}  // namespace ckpt::mpi

// Called by the generated stubs (abi_stubs.c) of the functions not supported yet.
extern "C" [[noreturn]] void ckpt_mpi_unsupported(const char* name) {
    char buf[256];
    int n = std::snprintf(buf, sizeof buf, "ckpt: %s is not supported by ckpt\n", name);
    ssize_t w = ::write(STDERR_FILENO, buf, std::min<int>(n, sizeof buf - 1));
    (void)w;
    std::abort();
}
