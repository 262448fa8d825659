/*
 * driver.c - run one nnc model library with exactly-sized heap buffers, for
 * valgrind (tests/memcheck/run.sh).
 *
 *   driver MODEL.so
 *
 * Loads the library with dlopen, reads its signature through
 * dlsym("nnc_model_info"), allocates every input, output and the workspace
 * with malloc / posix_memalign at EXACTLY the size the signature implies (so
 * that any read or write past the end hits valgrind's redzones), fills the
 * inputs, and runs the model four ways:
 *
 *   1. workspace NULL, threads NULL (the library allocates scratch itself)
 *   2. a caller workspace of exactly workspace_size bytes
 *   3. the same workspace again, with a serial "pool" claiming 4 threads
 *      (exercises the parallel split without real threads)
 *   4. workspace NULL with that pool
 *
 * Every run must return 0 and produce the same bytes as run 1 (run 3 and 4
 * may split work differently, and the ABI promises identical results). All
 * buffers are freed and the library closed, so --leak-check=full sees only
 * what the library itself leaks.
 *
 * Exit status: 0 ok, 2 usage / load errors, 3 a run failed, 4 outputs differ.
 */
#define _POSIX_C_SOURCE 200112L
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnc.h"

static size_t dtype_size(int32_t dtype) {
  switch (dtype) {
  case 1: return 4; /* float32 */
  case 7: return 8; /* int64 */
  case 9: return 1; /* bool */
  default: return 0;
  }
}

static size_t tensor_bytes(const nnc_tensor_info *t) {
  size_t n = dtype_size(t->dtype);
  for (int32_t i = 0; i < t->rank; i++) n *= (size_t)t->shape[i];
  return n;
}

/* malloc(0) may return NULL, which the model would rightly refuse as a
 * NULL argument; a 1-byte block stands in for empty tensors. */
static void *alloc_exact(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "driver: out of memory (%zu bytes)\n", n);
    exit(2);
  }
  return p;
}

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void fill(void *buf, const nnc_tensor_info *t) {
  size_t n = tensor_bytes(t) / (dtype_size(t->dtype) ? dtype_size(t->dtype) : 1);
  if (t->dtype == 1) {
    float *f = buf;
    for (size_t i = 0; i < n; i++) f[i] = (float)((double)(rng() % 20001) / 10000.0 - 1.0);
  } else if (t->dtype == 7) {
    /* Index-like inputs: 0 is in range for any non-empty axis. */
    int64_t *v = buf;
    for (size_t i = 0; i < n; i++) v[i] = 0;
  } else {
    uint8_t *b = buf;
    for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(rng() & 1);
  }
}

/* A pool that runs every task on the calling thread, in reverse order (any
 * order is allowed; reverse catches code that assumes task 0 runs first). */
static void serial_for(void *pool, size_t num_tasks, nnc_task_fn fn, void *ctx) {
  (void)pool;
  for (size_t i = num_tasks; i > 0; i--) fn(ctx, i - 1);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.so\n", argv[0]);
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "driver: dlopen %s: %s\n", argv[1], dlerror());
    return 2;
  }
  nnc_info_fn info_fn;
  nnc_run_fn run_fn;
  *(void **)&info_fn = dlsym(lib, "nnc_model_info");
  *(void **)&run_fn = dlsym(lib, "nnc_model_run");
  if (!info_fn || !run_fn) {
    fprintf(stderr, "driver: %s is not an nnc model\n", argv[1]);
    return 2;
  }
  const nnc_model_info *info = info_fn();
  if (!info || info->abi_version != NNC_ABI_VERSION) {
    fprintf(stderr, "driver: bad model info / ABI version\n");
    return 2;
  }
  uint32_t ni = info->num_inputs, no = info->num_outputs;
  const void **in = alloc_exact(sizeof(void *) * (ni ? ni : 1));
  void **out = alloc_exact(sizeof(void *) * (no ? no : 1));
  void **ref = alloc_exact(sizeof(void *) * (no ? no : 1));
  for (uint32_t i = 0; i < ni; i++) {
    void *b = alloc_exact(tensor_bytes(&info->inputs[i]));
    fill(b, &info->inputs[i]);
    in[i] = b;
  }
  for (uint32_t i = 0; i < no; i++) {
    out[i] = alloc_exact(tensor_bytes(&info->outputs[i]));
    ref[i] = alloc_exact(tensor_bytes(&info->outputs[i]));
  }
  size_t ws_size = (size_t)info->workspace_size;
  void *ws = NULL;
  if (posix_memalign(&ws, (size_t)info->workspace_align, ws_size ? ws_size : 1) != 0) {
    fprintf(stderr, "driver: cannot allocate the workspace\n");
    return 2;
  }
  nnc_threads pool = {4, NULL, serial_for};

  struct {
    const char *what;
    void *ws;
    const nnc_threads *threads;
  } runs[] = {
      {"workspace NULL", NULL, NULL},
      {"caller workspace", ws, NULL},
      {"caller workspace + 4-task pool", ws, &pool},
      {"workspace NULL + 4-task pool", NULL, &pool},
  };
  int status = 0;
  for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
    /* Garbage in the outputs, so a kernel that skips writing is visible. */
    for (uint32_t i = 0; i < no; i++) memset(out[i], 0xA5, tensor_bytes(&info->outputs[i]));
    int rc = run_fn(in, (void *const *)out, runs[r].ws, runs[r].threads);
    if (rc != 0) {
      fprintf(stderr, "driver: run (%s) returned %d\n", runs[r].what, rc);
      status = 3;
      break;
    }
    for (uint32_t i = 0; i < no; i++) {
      size_t n = tensor_bytes(&info->outputs[i]);
      if (r == 0) {
        memcpy(ref[i], out[i], n);
      } else if (memcmp(ref[i], out[i], n) != 0) {
        fprintf(stderr, "driver: output \"%s\" differs between \"%s\" and \"%s\"\n", info->outputs[i].name,
                runs[0].what, runs[r].what);
        status = 4;
      }
    }
  }
  if (status == 0)
    printf("driver: %s: %u inputs, %u outputs, workspace %zu bytes: 4 runs ok\n", argv[1], ni, no, ws_size);

  for (uint32_t i = 0; i < ni; i++) free((void *)in[i]);
  for (uint32_t i = 0; i < no; i++) {
    free(out[i]);
    free(ref[i]);
  }
  free(in);
  free(out);
  free(ref);
  free(ws);
  dlclose(lib);
  return status;
}
