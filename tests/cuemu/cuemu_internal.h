// tests/cuemu/cuemu_internal.h: what the parts of the CUDA host emulator (cuemu.cpp, cublaslt.cpp,
// nccl.cpp) share: the device-memory registry and the error helpers.
#ifndef CUEMU_INTERNAL_H
#define CUEMU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

// [p, p + bytes) lies inside one device allocation (cudaMalloc or a mapped, accessible VMM range).
bool cuemu_is_device(const void *p, size_t bytes);
// Prints "cuemu: <message>" and aborts (an emulated program error the GPU would not report either:
// a divergent barrier, an impossible state).
[[noreturn]] void cuemu_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// An integer environment variable, dflt when unset (a malformed value aborts naming it).
long cuemu_env_long(const char *name, long dflt);

#endif
