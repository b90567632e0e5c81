// tests/cuemu/nccl.cpp: the mock NCCL of the CUDA host emulator (include/nccl.h), over MPI.
//
// A communicator is MPI_COMM_WORLD split in the order of the ranks given to ncclCommInitRankConfig
// (all world ranks must take part: distributed/comm.c's communicators span the world); the unique
// id of its rank 0 is compared on every rank, so ranks started with different ids fail as NCCL
// would hang. Each collective runs at once: the ranks' inputs are gathered (MPI_Allgather) and
// reduced on every rank in rank order (f32 and bf16 in f32, bf16 rounded once at the end; f64 in
// double; u64 exactly), so every rank gets the same bits, run after run. Buffers must be device
// memory of the emulator, their whole extent (NCCL cannot take host pointers). In-place forms
// (NCCL's: recvbuff + rank * count == sendbuff for all-gather, send == recv for the others) work.
#define OMPI_SKIP_MPICXX 1 // the C API only
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <vector>

#include <cuda_bf16.h>

#include "cuemu_internal.h"

struct cuemu_nccl_comm {
    MPI_Comm mpi;
    int rank, size;
    bool blocking;
    std::atomic<int> async; // ncclResult_t; ncclInProgress: one more poll before ncclSuccess
    char last[256];
};

static ncclResult_t comm_error(cuemu_nccl_comm *c, ncclResult_t r, const char *fmt, const char *a) {
    if (c) snprintf(c->last, sizeof c->last, fmt, a);
    return r;
}

// a finished operation: non-blocking communicators say "in progress" first
static ncclResult_t done(cuemu_nccl_comm *c) {
    if (c->blocking) return ncclSuccess;
    c->async.store(ncclInProgress);
    return ncclInProgress;
}

static size_t type_size(ncclDataType_t t) {
    switch (t) {
    case ncclInt8:
    case ncclUint8: return 1;
    case ncclFloat16:
    case ncclBfloat16: return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32: return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64: return 8;
    }
    return 0;
}

extern "C" {

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

const char *ncclGetLastError(ncclComm_t comm) { return comm ? comm->last : ""; }

ncclResult_t ncclGetVersion(int *version) {
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    static unsigned counter = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(id->internal, sizeof id->internal, "cuemu-nccl pid %ld n %u t %lld.%09ld", (long)getpid(), ++counter,
             (long long)ts.tv_sec, ts.tv_nsec);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t *config) {
    *comm = NULL;
    int inited = 0, world = 0;
    MPI_Initialized(&inited);
    if (!inited) return ncclSystemError; // the mock runs over MPI
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (nranks != world || rank < 0 || rank >= nranks) {
        fprintf(stderr, "cuemu NCCL: ncclCommInitRankConfig(nranks %d, rank %d): the mock takes communicators of "
                "all %d MPI ranks only\n", nranks, rank, world);
        return ncclInvalidArgument;
    }
    if (strncmp(id.internal, "cuemu-nccl ", 11) != 0) return ncclInvalidArgument;
    cuemu_nccl_comm *c = new cuemu_nccl_comm;
    c->rank = rank;
    c->size = nranks;
    c->blocking = !(config && config->blocking == 0);
    c->async.store(ncclSuccess);
    c->last[0] = 0;
    if (MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &c->mpi) != MPI_SUCCESS) {
        delete c;
        return ncclSystemError;
    }
    int r = -1;
    MPI_Comm_rank(c->mpi, &r);
    ncclUniqueId root = id;
    MPI_Bcast(root.internal, NCCL_UNIQUE_ID_BYTES, MPI_CHAR, 0, c->mpi);
    int ok = r == rank && memcmp(root.internal, id.internal, NCCL_UNIQUE_ID_BYTES) == 0, all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, c->mpi);
    if (!all) {
        MPI_Comm_free(&c->mpi);
        delete c;
        fprintf(stderr, "cuemu NCCL: ncclCommInitRankConfig: ranks disagree on the unique id or their ranks\n");
        return ncclInvalidUsage;
    }
    *comm = c;
    return done(c);
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    return ncclCommInitRankConfig(comm, nranks, id, rank, NULL);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *state) {
    if (!comm || !state) return ncclInvalidArgument;
    int s = comm->async.load();
    if (s == ncclInProgress) comm->async.store(ncclSuccess); // reported once
    *state = (ncclResult_t)s;
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    return done(comm);
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    MPI_Comm_free(&comm->mpi);
    delete comm;
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (!comm) return ncclSuccess;
    // no MPI_Comm_free: the other ranks may be gone or stuck; the process is ending anyway
    delete comm;
    return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int *count) {
    *count = comm->size;
    return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank) {
    *rank = comm->rank;
    return ncclSuccess;
}

ncclResult_t ncclGroupStart(void) { return ncclSuccess; }
ncclResult_t ncclGroupEnd(void) { return ncclSuccess; }

} // extern "C"

// checks of one collective's arguments
static ncclResult_t coll_check(cuemu_nccl_comm *c, const char *call, const void *send, size_t send_bytes, void *recv,
                               size_t recv_bytes, ncclDataType_t t) {
    if (!c) return ncclInvalidArgument;
    if (c->async.load() != ncclSuccess && c->async.load() != ncclInProgress)
        return comm_error(c, ncclInvalidUsage, "%s on a failed communicator", call);
    if (!type_size(t)) return comm_error(c, ncclInvalidArgument, "%s: bad data type", call);
    if (send_bytes && (!send || !cuemu_is_device(send, send_bytes)))
        return comm_error(c, ncclInvalidArgument, "%s: send buffer is not device memory of that size", call);
    if (recv_bytes && (!recv || !cuemu_is_device(recv, recv_bytes)))
        return comm_error(c, ncclInvalidArgument, "%s: receive buffer is not device memory of that size", call);
    return ncclSuccess;
}

static double elem_load(ncclDataType_t t, const void *p, size_t i) {
    switch (t) {
    case ncclFloat32: return ((const float *)p)[i];
    case ncclFloat64: return ((const double *)p)[i];
    case ncclBfloat16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    default: return 0;
    }
}

// out[i] = op over ranks r of all[r * stride + i], in rank order
static ncclResult_t reduce_rows(cuemu_nccl_comm *c, const char *call, const unsigned char *all, size_t stride_bytes,
                                size_t count, ncclDataType_t t, ncclRedOp_t op, void *out) {
    if (op != ncclSum && op != ncclMax && op != ncclMin)
        return comm_error(c, ncclInvalidArgument, "%s: reduction op not emulated", call);
    for (size_t i = 0; i < count; i++) {
        if (t == ncclUint64 || t == ncclInt64 || t == ncclUint32 || t == ncclInt32) {
            // integers: exact (u64 only is used by addc; the others as their unsigned bits)
            uint64_t acc = 0;
            for (int r = 0; r < c->size; r++) {
                uint64_t v = 0;
                if (t == ncclUint64 || t == ncclInt64) memcpy(&v, all + r * stride_bytes + i * 8, 8);
                else {
                    uint32_t w;
                    memcpy(&w, all + r * stride_bytes + i * 4, 4);
                    v = w;
                }
                acc = r == 0 ? v : op == ncclSum ? acc + v : op == ncclMax ? (v > acc ? v : acc) : (v < acc ? v : acc);
            }
            if (t == ncclUint64 || t == ncclInt64) memcpy((unsigned char *)out + i * 8, &acc, 8);
            else {
                uint32_t w = (uint32_t)acc;
                memcpy((unsigned char *)out + i * 4, &w, 4);
            }
            continue;
        }
        if (t != ncclFloat32 && t != ncclFloat64 && t != ncclBfloat16)
            return comm_error(c, ncclInvalidArgument, "%s: data type not emulated for reductions", call);
        double acc = 0;
        float accf = 0;
        for (int r = 0; r < c->size; r++) {
            double v = elem_load(t, all + r * stride_bytes, i);
            if (t == ncclFloat64) acc = r == 0 ? v : op == ncclSum ? acc + v : op == ncclMax ? (v > acc ? v : acc) : (v < acc ? v : acc);
            else {
                float f = (float)v;
                accf = r == 0 ? f : op == ncclSum ? accf + f : op == ncclMax ? (f > accf ? f : accf) : (f < accf ? f : accf);
            }
        }
        if (t == ncclFloat64) ((double *)out)[i] = acc;
        else if (t == ncclFloat32) ((float *)out)[i] = accf;
        else ((__nv_bfloat16 *)out)[i] = __float2bfloat16_rn(accf);
    }
    return ncclSuccess;
}

// every rank's `bytes` from src into all (size * bytes)
static ncclResult_t gather_all(cuemu_nccl_comm *c, const void *src, size_t bytes, std::vector<unsigned char> &all) {
    all.resize(bytes * c->size + 1);
    std::vector<unsigned char> mine((const unsigned char *)src, (const unsigned char *)src + bytes);
    if (bytes > (size_t)INT32_MAX) return comm_error(c, ncclInvalidArgument, "%s", "collective over 2 GiB (mock limit)");
    if (MPI_Allgather(mine.data(), (int)bytes, MPI_BYTE, all.data(), (int)bytes, MPI_BYTE, c->mpi) != MPI_SUCCESS)
        return comm_error(c, ncclSystemError, "%s", "MPI_Allgather failed");
    return ncclSuccess;
}

extern "C" ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                                      ncclComm_t c, cudaStream_t stream) {
    (void)stream;
    size_t bytes = count * type_size(t);
    ncclResult_t r = coll_check(c, "ncclAllReduce", send, bytes, recv, bytes, t);
    if (r != ncclSuccess) return r;
    std::vector<unsigned char> all;
    if ((r = gather_all(c, send, bytes, all)) != ncclSuccess) return r;
    if ((r = reduce_rows(c, "ncclAllReduce", all.data(), bytes, count, t, op, recv)) != ncclSuccess) return r;
    return done(c);
}

extern "C" ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount, ncclDataType_t t,
                                          ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
    (void)stream;
    size_t rb = recvcount * type_size(t);
    ncclResult_t r = coll_check(c, "ncclReduceScatter", send, c ? rb * c->size : 0, recv, rb, t);
    if (r != ncclSuccess) return r;
    std::vector<unsigned char> all;
    if ((r = gather_all(c, send, rb * c->size, all)) != ncclSuccess) return r;
    std::vector<unsigned char> out(rb + 1);
    if ((r = reduce_rows(c, "ncclReduceScatter", all.data() + (size_t)c->rank * rb, rb * c->size, recvcount, t, op,
                         out.data())) != ncclSuccess)
        return r;
    memcpy(recv, out.data(), rb);
    return done(c);
}

extern "C" ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t t, ncclComm_t c,
                                      cudaStream_t stream) {
    (void)stream;
    size_t sb = sendcount * type_size(t);
    ncclResult_t r = coll_check(c, "ncclAllGather", send, sb, recv, c ? sb * c->size : 0, t);
    if (r != ncclSuccess) return r;
    std::vector<unsigned char> all;
    if ((r = gather_all(c, send, sb, all)) != ncclSuccess) return r;
    memcpy(recv, all.data(), sb * c->size);
    return done(c);
}

extern "C" ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t t, int root,
                                      ncclComm_t c, cudaStream_t stream) {
    (void)stream;
    size_t bytes = count * type_size(t);
    ncclResult_t r = coll_check(c, "ncclBroadcast", c && c->rank == root ? send : NULL,
                                c && c->rank == root ? bytes : 0, recv, bytes, t);
    if (r != ncclSuccess) return r;
    if (root < 0 || root >= c->size) return comm_error(c, ncclInvalidArgument, "%s", "ncclBroadcast: bad root");
    if (bytes > (size_t)INT32_MAX) return comm_error(c, ncclInvalidArgument, "%s", "collective over 2 GiB (mock limit)");
    std::vector<unsigned char> buf(bytes + 1);
    if (c->rank == root) memcpy(buf.data(), send, bytes);
    if (MPI_Bcast(buf.data(), (int)bytes, MPI_BYTE, root, c->mpi) != MPI_SUCCESS)
        return comm_error(c, ncclSystemError, "%s", "MPI_Bcast failed");
    memcpy(recv, buf.data(), bytes);
    return done(c);
}
