/*
 * Minimal C host for an nnc-compiled model.
 *
 *   make run                  # compiles ../mnist_cnn.onnx, builds and runs this
 *   ./build/main [threads] [iterations]
 *
 * Everything the program knows about the model comes from its info
 * function at run time, so the same source works for any model: it prints
 * the signature, fills the inputs deterministically, runs the model and
 * prints the outputs (with top-5 for a [1, N] output such as class scores).
 *
 * The entry points are the prefixed ones that the generated header declares
 * (<prefix>_info / <prefix>_run; the Makefile compiles with `--name model`
 * and passes -DNNC_PREFIX=model).  The fixed names nnc_model_info /
 * nnc_model_run are exported too, but cannot be declared in C under those
 * names because `nnc_model_info` is also the struct typedef; dynamic loaders
 * use them via dlsym.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

#ifndef NNC_PREFIX
#define NNC_PREFIX model
#endif
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define MODEL_INFO CAT(NNC_PREFIX, _info)
#define MODEL_RUN CAT(NNC_PREFIX, _run)

/* ONNX TensorProto.DataType codes used by the ABI. */
enum { DT_FLOAT = 1, DT_UINT8 = 2, DT_INT8 = 3, DT_INT32 = 6, DT_INT64 = 7, DT_BOOL = 9, DT_DOUBLE = 11 };

static const char *dtype_name(int32_t dt) {
    switch (dt) {
    case DT_FLOAT: return "float32";
    case DT_UINT8: return "uint8";
    case DT_INT8: return "int8";
    case DT_INT32: return "int32";
    case DT_INT64: return "int64";
    case DT_BOOL: return "bool";
    case DT_DOUBLE: return "float64";
    default: return "?";
    }
}

static size_t dtype_size(int32_t dt) {
    switch (dt) {
    case DT_UINT8: case DT_INT8: case DT_BOOL: return 1;
    case DT_FLOAT: case DT_INT32: return 4;
    case DT_INT64: case DT_DOUBLE: return 8;
    default: return 0;
    }
}

static size_t numel(const nnc_tensor_info *t) {
    size_t n = 1;
    for (int32_t d = 0; d < t->rank; d++) n *= (size_t)t->shape[d];
    return n;
}

static void print_tensor_sig(const nnc_tensor_info *t) {
    printf("  %-16s %-7s [", t->name, dtype_name(t->dtype));
    for (int32_t d = 0; d < t->rank; d++) printf(d ? ", %lld" : "%lld", (long long)t->shape[d]);
    printf("]\n");
}

/* ---- deterministic inputs ------------------------------------------------ */

static uint32_t lcg_state = 12345u;
static float lcg_uniform(void) { /* in [-1, 1) */
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return (float)(lcg_state >> 8) / (float)(1u << 23) - 1.0f;
}

/* Distance from (y, x) to the segment (y0, x0)-(y1, x1). */
static float seg_dist(float y, float x, float y0, float x0, float y1, float x1) {
    float dy = y1 - y0, dx = x1 - x0;
    float t = ((y - y0) * dy + (x - x0) * dx) / (dy * dy + dx * dx);
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    float ey = y0 + t * dy - y, ex = x0 + t * dx - x;
    return sqrtf(ey * ey + ex * ex);
}

/* A handwritten-looking "7" on a 28x28 canvas, normalised like torchvision's
 * MNIST transform ((v - 0.1307) / 0.3081), drawn in every image of the batch. */
static void draw_seven(float *img, size_t images) {
    for (size_t n = 0; n < images; n++)
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++) {
                float d = seg_dist((float)y, (float)x, 6, 7, 6, 21);
                float d2 = seg_dist((float)y, (float)x, 6, 21, 23, 11);
                if (d2 < d) d = d2;
                float v = 2.0f - d; /* ~2 px wide stroke with a soft edge */
                v = v < 0 ? 0 : v > 1 ? 1 : v;
                img[n * 784 + (size_t)y * 28 + (size_t)x] = (v - 0.1307f) / 0.3081f;
            }
}

static void show_digit(const float *img) {
    for (int y = 2; y < 26; y += 2) {
        printf("    ");
        for (int x = 0; x < 28; x++) putchar(img[y * 28 + x] > 1.0f ? '#' : img[y * 28 + x] > 0 ? '+' : '.');
        putchar('\n');
    }
}

static void fill_input(const nnc_tensor_info *t, void *buf) {
    size_t n = numel(t);
    if (t->dtype == DT_FLOAT && t->rank == 4 && t->shape[1] == 1 && t->shape[2] == 28 && t->shape[3] == 28) {
        draw_seven(buf, (size_t)t->shape[0]);
        printf("  %s: a drawn \"7\" (every image of the batch)\n", t->name);
        show_digit(buf);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case DT_FLOAT: ((float *)buf)[i] = lcg_uniform(); break;
        case DT_DOUBLE: ((double *)buf)[i] = lcg_uniform(); break;
        case DT_INT64: ((int64_t *)buf)[i] = (int64_t)(i % 10); break;
        case DT_INT32: ((int32_t *)buf)[i] = (int32_t)(i % 10); break;
        case DT_BOOL: case DT_UINT8: case DT_INT8: ((uint8_t *)buf)[i] = (uint8_t)(i & 1); break;
        }
    }
    const char *how = t->dtype == DT_FLOAT || t->dtype == DT_DOUBLE ? "LCG values in [-1, 1)"
                      : t->dtype == DT_INT64 || t->dtype == DT_INT32 ? "i % 10"
                                                                     : "alternating 0, 1";
    printf("  %s: %s\n", t->name, how);
}

/* ---- output printing ----------------------------------------------------- */

static double as_double(const nnc_tensor_info *t, const void *buf, size_t i) {
    switch (t->dtype) {
    case DT_FLOAT: return ((const float *)buf)[i];
    case DT_DOUBLE: return ((const double *)buf)[i];
    case DT_INT64: return (double)((const int64_t *)buf)[i];
    case DT_INT32: return ((const int32_t *)buf)[i];
    case DT_INT8: return ((const int8_t *)buf)[i];
    default: return ((const uint8_t *)buf)[i];
    }
}

static void print_output(const nnc_tensor_info *t, const void *buf) {
    size_t n = numel(t);
    print_tensor_sig(t);
    printf("    first values:");
    for (size_t i = 0; i < n && i < 8; i++) printf(" %.6g", as_double(t, buf, i));
    printf(n > 8 ? " ...\n" : "\n");

    int is_float = t->dtype == DT_FLOAT || t->dtype == DT_DOUBLE;
    if (is_float && t->rank == 2 && t->shape[0] == 1 && n >= 2) { /* scores of one sample */
        size_t top[5], k = n < 5 ? n : 5;
        for (size_t j = 0; j < k; j++) {
            size_t best = (size_t)-1;
            for (size_t i = 0; i < n; i++) {
                int taken = 0;
                for (size_t m = 0; m < j; m++) taken |= top[m] == i;
                if (!taken && (best == (size_t)-1 || as_double(t, buf, i) > as_double(t, buf, best))) best = i;
            }
            top[j] = best;
        }
        printf("    top-1: %zu\n    top-%zu:", top[0], k);
        for (size_t j = 0; j < k; j++) printf(" %zu (%.4f)", top[j], as_double(t, buf, top[j]));
        printf("\n");
    }
}

/* ---- a small persistent thread pool for nnc_threads ----------------------
 * The model splits its large operators into tasks and hands each batch to
 * parallel_for; this pool runs them on `n - 1` parked workers plus the
 * calling thread.  Workers sleep on a condition variable between batches
 * and claim tasks from an atomic counter.  Any pool works as long as
 * parallel_for runs every task exactly once and returns when all are done
 * (the Rust runtime's nnc_runtime::ThreadPool is another one). */

#define POOL_MAX_WORKERS 63

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* workers: a new batch (or shutdown) */
    pthread_cond_t done; /* caller: the last worker left the batch */
    pthread_mutex_t busy; /* one parallel_for at a time */
    pthread_t tids[POOL_MAX_WORKERS];
    size_t workers;
    unsigned long generation; /* bumped per batch */
    size_t active;            /* workers not yet done with this batch */
    int shutdown;
    nnc_task_fn fn;
    void *ctx;
    size_t num_tasks;
    atomic_size_t next;
};

static void pool_run_tasks(struct pool *p) {
    for (size_t i; (i = atomic_fetch_add(&p->next, 1)) < p->num_tasks;) p->fn(p->ctx, i);
}

static void *pool_worker(void *arg) {
    struct pool *p = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->shutdown && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->shutdown) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        pool_run_tasks(p);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void pool_parallel_for(void *pool, size_t num_tasks, nnc_task_fn fn, void *ctx) {
    struct pool *p = pool;
    if (num_tasks <= 1 || p->workers == 0) {
        for (size_t i = 0; i < num_tasks; i++) fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&p->busy);
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->num_tasks = num_tasks;
    atomic_store(&p->next, 0);
    p->active = p->workers;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    pool_run_tasks(p); /* the calling thread works too */
    pthread_mutex_lock(&p->mu);
    while (p->active > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->busy);
}

/* A pool running up to `n` tasks at once (fewer if threads cannot start). */
static struct pool *pool_create(size_t n) {
    struct pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->busy, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->next, 0);
    for (; p->workers + 1 < n && p->workers < POOL_MAX_WORKERS; p->workers++)
        if (pthread_create(&p->tids[p->workers], NULL, pool_worker, p) != 0) break;
    return p;
}

static void pool_destroy(struct pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->shutdown = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->workers; i++) pthread_join(p->tids[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->busy);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    size_t num_threads = argc > 1 ? strtoul(argv[1], NULL, 10) : 1;
    long iterations = argc > 2 ? strtol(argv[2], NULL, 10) : 1;
    if (num_threads < 1) num_threads = 1;
    if (iterations < 1) iterations = 1;

    const nnc_model_info *info = MODEL_INFO();
    if (!info || info->abi_version != NNC_ABI_VERSION) {
        fprintf(stderr, "unsupported model library (abi %u, expected %d)\n", info ? info->abi_version : 0,
                NNC_ABI_VERSION);
        return 1;
    }
    printf("model by %s, abi %u, workspace %llu bytes (align %llu)\ninputs:\n", info->producer ? info->producer : "?",
           info->abi_version, (unsigned long long)info->workspace_size, (unsigned long long)info->workspace_align);
    for (uint32_t i = 0; i < info->num_inputs; i++) print_tensor_sig(&info->inputs[i]);
    printf("outputs:\n");
    for (uint32_t i = 0; i < info->num_outputs; i++) print_tensor_sig(&info->outputs[i]);

    void **inputs = calloc(info->num_inputs + 1, sizeof(void *));
    void **outputs = calloc(info->num_outputs + 1, sizeof(void *));
    printf("filling inputs:\n");
    for (uint32_t i = 0; i < info->num_inputs; i++) {
        const nnc_tensor_info *t = &info->inputs[i];
        if (!dtype_size(t->dtype)) {
            fprintf(stderr, "input %s: unsupported dtype %d\n", t->name, t->dtype);
            return 1;
        }
        inputs[i] = malloc(numel(t) * dtype_size(t->dtype) + 1);
        fill_input(t, inputs[i]);
    }
    for (uint32_t i = 0; i < info->num_outputs; i++) {
        const nnc_tensor_info *t = &info->outputs[i];
        outputs[i] = calloc(numel(t) * (dtype_size(t->dtype) ? dtype_size(t->dtype) : 8) + 1, 1);
    }

    /* Caller-owned scratch, so repeated runs do not allocate.  aligned_alloc
     * wants the size to be a multiple of the alignment. */
    size_t align = info->workspace_align > 64 ? (size_t)info->workspace_align : 64;
    size_t ws_size = ((size_t)info->workspace_size + align - 1) / align * align;
    void *workspace = ws_size ? aligned_alloc(align, ws_size) : NULL;
    if (ws_size && !workspace) {
        fprintf(stderr, "cannot allocate %zu bytes of workspace\n", ws_size);
        return 1;
    }

    /* threads = NULL runs on the calling thread; a pool lets the model split
     * its large operators (results are bit-identical either way). */
    struct pool *pool = num_threads > 1 ? pool_create(num_threads) : NULL;
    if (num_threads > 1 && !pool) {
        fprintf(stderr, "cannot create the thread pool\n");
        return 1;
    }
    nnc_threads threads = {pool ? pool->workers + 1 : 1, pool, pool_parallel_for};
    const nnc_threads *th = pool ? &threads : NULL;

    double t0 = now_ms();
    for (long it = 0; it < iterations; it++) {
        int rc = MODEL_RUN((const void *const *)inputs, outputs, workspace, th);
        if (rc != 0) {
            fprintf(stderr, "model run failed: %d\n", rc);
            return 1;
        }
    }
    double ms = (now_ms() - t0) / (double)iterations;

    printf("outputs (%.3f ms per run, %zu thread%s, %ld run%s):\n", ms, num_threads, num_threads > 1 ? "s" : "",
           iterations, iterations > 1 ? "s" : "");
    for (uint32_t i = 0; i < info->num_outputs; i++) print_output(&info->outputs[i], outputs[i]);

    for (uint32_t i = 0; i < info->num_inputs; i++) free(inputs[i]);
    for (uint32_t i = 0; i < info->num_outputs; i++) free(outputs[i]);
    free(inputs);
    free(outputs);
    free(workspace);
    pool_destroy(pool);
    return 0;
}
