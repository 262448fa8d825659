/*
 * nnc.h - the C ABI shared by every library that nnc generates.
 *
 * A generated library for a model with prefix `M` exports
 *
 *   const nnc_model_info *M_info(void);
 *   int M_run(const void *const *inputs, void *const *outputs,
 *             void *workspace, const nnc_threads *threads);
 *
 * and the same two functions under the fixed names `nnc_model_info` and
 * `nnc_model_run`, so a loader can use any model library without knowing its
 * prefix (the prefixed names let several models link into one program).
 *
 * Calling convention of M_run:
 *  - `inputs` / `outputs`: one dense, row-major buffer per tensor, in graph
 *    order, of exactly the dtype and shape in M_info(). Shapes are fixed at
 *    compile time, so no shapes are passed at run time.
 *  - `workspace`: NULL, or `workspace_size` bytes aligned to
 *    `workspace_align`. With NULL the library allocates and frees scratch
 *    within the call; passing one lets callers avoid that per-run cost.
 *  - `threads`: NULL (run on the calling thread) or a thread pool (below).
 *  - returns 0 on success, non-zero on failure.
 * The library keeps no mutable global state: runs that use distinct
 * workspaces (or NULL) may proceed concurrently.
 */
#ifndef NNC_H
#define NNC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A generated model header may carry its own copy of these types so that it
 * stands alone; this guard lets both headers be included together. */
#ifndef NNC_ABI_TYPES_DEFINED
#define NNC_ABI_TYPES_DEFINED

/* Bumped on any incompatible change; loaders must check `abi_version`. */
#define NNC_ABI_VERSION 1

/* One input or output. `dtype` uses ONNX TensorProto.DataType codes so that
 * nothing needs translating: 1 = float32, 7 = int64, 9 = bool (one byte). */
typedef struct nnc_tensor_info {
  const char *name;     /* the ONNX graph name, NUL-terminated */
  int32_t dtype;
  int32_t rank;
  const int64_t *shape; /* `rank` entries, all fixed at compile time */
} nnc_tensor_info;

/* Static description of a model; all pointers refer to constant data that
 * lives as long as the library stays loaded. */
typedef struct nnc_model_info {
  uint32_t abi_version;          /* NNC_ABI_VERSION */
  uint32_t num_inputs;
  uint32_t num_outputs;
  const nnc_tensor_info *inputs;  /* graph order */
  const nnc_tensor_info *outputs; /* graph order */
  uint64_t workspace_size;       /* bytes of scratch one run needs */
  uint64_t workspace_align;      /* a power of two, at least 64 */
  const char *producer;          /* e.g. "nnc 0.1.0" */
} nnc_model_info;

/* One task of a parallel loop. */
typedef void (*nnc_task_fn)(void *ctx, size_t task);

/* A thread pool supplied by the caller, so that the library never creates
 * threads of its own and the application decides how many cores it uses.
 * Any pool works: `parallel_for` must run fn(ctx, i) exactly once for every
 * i in 0..num_tasks-1, in any order and on any threads, and return only when
 * all of them are done. `num_threads` tells the library how many tasks may
 * usefully run at once (it sizes its work split by it). The pool must cope
 * with num_tasks == 0, and with calls from several threads at once if runs
 * share it. The Rust runtime (nnc-runtime's ThreadPool) is one such pool;
 * examples/c/main.c has a small pthread one.
 *
 * How a model uses it: with threads == NULL or num_threads <= 1 everything
 * runs on the calling thread and parallel_for is never called. Otherwise
 * each large operator (GEMM, convolution, attention, pooling, elementwise,
 * softmax/normalization over many rows) makes one parallel_for call; its
 * task count is fixed when the model is compiled (at most 16), and tasks
 * never call parallel_for themselves. Every task writes its own part of the
 * output, computed exactly as on one thread, so results are bit-identical
 * for any pool and thread count. */
typedef struct nnc_threads {
  size_t num_threads;
  void *pool; /* opaque, handed back to parallel_for */
  void (*parallel_for)(void *pool, size_t num_tasks, nnc_task_fn fn, void *ctx);
} nnc_threads;

#endif /* NNC_ABI_TYPES_DEFINED */

/* Types of the two entry points, for loaders that look them up at run time
 * (dlsym / GetProcAddress). The fixed-name functions are deliberately not
 * declared here: in C a function named `nnc_model_info` would clash with the
 * typedef above, so use dlsym(lib, "nnc_model_info"), or link against the
 * prefixed M_info / M_run that the model's own header declares. */
typedef const nnc_model_info *(*nnc_info_fn)(void);
typedef int (*nnc_run_fn)(const void *const *inputs, void *const *outputs,
                          void *workspace, const nnc_threads *threads);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* NNC_H */
