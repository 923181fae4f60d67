// The upper half's runtime: the lower half's entry points and handle translation.
// Only one thread calls MPI (we grant at most MPI_THREAD_FUNNELED), so nothing here locks.
#pragma once

#include <mpi.h>
#include <pthread.h>

#include <string>
#include <type_traits>
#include <vector>

#include "abi_lower.h"
#include "objects.h"

namespace ckpt::mpi {

extern LowerFns g_lower;
extern bool g_lower_loaded;

// Loads the lower half (the real libmpi in its own dlmopen namespace) on first use.
void load_lower();

inline const LowerFns& lower() {
    if (!g_lower_loaded) [[unlikely]]
        load_lower();
    return g_lower;
}

[[noreturn]] void fatal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// The thread that initialized MPI: the only one that may call it (MPI_THREAD_FUNNELED is the
// most we grant, also to a program that asked for MPI_THREAD_MULTIPLE and did not check what
// it got). pthread_self() is the thread pointer, which a restored image keeps.
extern pthread_t g_mpi_thread;
extern bool g_mpi_thread_known;
[[noreturn]] void called_from_other_thread(const char* function);

// Every exported function but the few any thread may call (generated into abi_exports.cpp).
inline void check_thread(const char* function) {
    if (g_mpi_thread_known && !pthread_equal(pthread_self(), g_mpi_thread)) [[unlikely]]
        called_from_other_thread(function);
}

// An error found in the upper half, reported as the real library would: through the
// communicator's error handler (which may abort), then returned.
inline int raise_error(MPI_Comm comm, int code) {
    g_lower.Comm_call_errhandler(static_cast<MPI_Comm>(reinterpret_cast<const Handle*>(comm)->real), code);
    return code;
}

template <class T>
inline constexpr bool is_handle_v =
    std::is_same_v<T, MPI_Comm> || std::is_same_v<T, MPI_Datatype> || std::is_same_v<T, MPI_Op> ||
    std::is_same_v<T, MPI_Group> || std::is_same_v<T, MPI_Request> || std::is_same_v<T, MPI_Info> ||
    std::is_same_v<T, MPI_Errhandler> || std::is_same_v<T, MPI_Win> || std::is_same_v<T, MPI_File> ||
    std::is_same_v<T, MPI_Message>;

// An argument on its way to the lower half: handles become the lower half's, the rest passes.
template <class T>
inline T in(T v) {
    if constexpr (is_handle_v<T>)
        return static_cast<T>(reinterpret_cast<const Handle*>(v)->real);
    else
        return v;
}

// The lower half's handle stored in one of our objects, typed.
template <class H>
inline H real_of(const Handle& h) {
    return static_cast<H>(h.real);
}

// Lower-half datatype -> the application's (user operations are called with the former).
MPI_Datatype upper_datatype(MPI_Datatype lower_type);
void register_datatype(Datatype* t);
void unregister_datatype(Datatype* t);
// Lower-half errhandler -> the application's (only predefined error handlers so far).
MPI_Errhandler upper_errhandler(MPI_Errhandler lower_eh);

// Drop one reference to an object made at run time (predefined ones are never freed); the
// last one deletes it and drops its recipe's references.
void release_comm(Comm* c);
void release_datatype(Datatype* t);

// Restart (runtime.cpp): takes the new launch's environment, drops the old lower half's
// signal handlers, loads a fresh lower half, initialises MPI again (same rank and size, or
// it fails), and replays every object (objects.cpp: replay_objects).
void restart_lower(const std::vector<std::string>& env);
void replay_objects();
// After the pending receives are posted again: frees the replayed objects the application
// had freed (a receive may name a datatype or communicator freed since it was posted).
void free_replayed_objects();
// MPI_Wtime: a lower half's clock starts at its MPI_Init, so a restart sets the offset that
// makes it go on from its value when the rank parked (the time the job was down left out).
extern double g_wtime_offset;
extern double g_wtime_parked;
// Signals whose handlers run code of the lower half (reset at restart).
std::vector<int> lower_signals();
extern std::vector<int> g_lower_signals;  // as the rank parked (quiesce.cpp)

// Cached lower-half null handles.
extern void* g_lower_request_null;
extern void* g_lower_comm_null;
extern void* g_lower_group_null;

}  // namespace ckpt::mpi
