// What the host C++ compiler needs to build conv.cu for the CPU (the `cuda-emu` backend).
//
// Injected with `-include`, so conv.cu itself is compiled unchanged. It supplies CUDA's
// built-in launch coordinates as thread-local globals and turns the execution-space
// qualifiers into nothing. `dualnet_emu::launch` then runs a kernel once for every
// (block, thread) of a 1-D grid, one after another: correct for conv.cu's grid-stride
// kernels, which never use shared memory, __syncthreads or inter-thread communication.
#pragma once

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// g++ and clang++ accept __restrict__ natively.

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};

thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace dualnet_emu {

// Calls `kernel` with the arguments that `args[i]` point to, as cudaLaunchKernel reads them.
template <typename... Args, std::size_t... I>
void call(void (*kernel)(Args...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_reference_t<Args>*>(args[I])...);
}

template <typename... Args>
void launch(void (*kernel)(Args...), unsigned int grid, unsigned int block, void** args) {
    gridDim = dim3{grid, 1, 1};
    blockDim = dim3{block, 1, 1};
    for (unsigned int b = 0; b < grid; ++b) {
        blockIdx = dim3{b, 0, 0};
        for (unsigned int t = 0; t < block; ++t) {
            threadIdx = dim3{t, 0, 0};
            call(kernel, args, std::index_sequence_for<Args...>{});
        }
    }
}

}  // namespace dualnet_emu

// `DUALNET_EMU_EXPORT(im2col_f32)` defines the C entry point `dualnet_launch_im2col_f32(grid,
// block, args)` that Python calls through ctypes; the argument types come from the kernel's own
// signature, so a mismatch is a compile error, not a silent reinterpretation.
#define DUALNET_EMU_EXPORT(kernel)                                                       \
    extern "C" void dualnet_launch_##kernel(unsigned int grid, unsigned int block,       \
                                            void** args) {                               \
        dualnet_emu::launch(kernel, grid, block, args);                                  \
    }
