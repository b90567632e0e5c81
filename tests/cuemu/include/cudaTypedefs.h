/* tests/cuemu/include/cudaTypedefs.h: the driver entry-point types core/cuda/runtime.cu looks up
 * through cudaGetDriverEntryPointByVersion, as the host emulator (cuemu) provides them. */
#ifndef CUEMU_CUDA_TYPEDEFS_H
#define CUEMU_CUDA_TYPEDEFS_H

#include "cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef CUresult (*PFN_cuGetErrorString_v6000)(CUresult error, const char **str);
typedef CUresult (*PFN_cuMemGetAllocationGranularity_v10020)(size_t *granularity, const CUmemAllocationProp *prop,
                                                             CUmemAllocationGranularity_flags option);
typedef CUresult (*PFN_cuMemAddressReserve_v10020)(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                                   unsigned long long flags);
typedef CUresult (*PFN_cuMemAddressFree_v10020)(CUdeviceptr ptr, size_t size);
typedef CUresult (*PFN_cuMemCreate_v10020)(CUmemGenericAllocationHandle *handle, size_t size,
                                           const CUmemAllocationProp *prop, unsigned long long flags);
typedef CUresult (*PFN_cuMemMap_v10020)(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                                        unsigned long long flags);
typedef CUresult (*PFN_cuMemSetAccess_v10020)(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count);
typedef CUresult (*PFN_cuMemUnmap_v10020)(CUdeviceptr ptr, size_t size);
typedef CUresult (*PFN_cuMemRelease_v10020)(CUmemGenericAllocationHandle handle);

#ifdef __cplusplus
}
#endif

#endif
