/*
 * Generic file-based runner for an nnc-compiled model, used by the AArch64
 * cross tests (tests/aarch64/run.sh, conformance_sample.py).  It is built
 * twice from the same source -- with aarch64-linux-gnu-gcc (run under
 * qemu-aarch64) and with the host cc -- and linked directly against the model
 * library (no dlopen), whose entry points come from the generated header:
 *
 *   nnc compile m.onnx -o DIR/model.so --name model [--target ...]
 *   CC -std=c11 -O2 -DNNC_PREFIX=model -IDIR runner.c -o DIR/runner \
 *      -LDIR -l:model.so -Wl,-rpath,'$ORIGIN' -lpthread
 *
 *   runner [-w] [-t THREADS] [-r REPEAT] IN_DIR OUT_DIR
 *
 * Reads input i from IN_DIR/input<i>.bin (raw, dense, row-major, exactly
 * numel * sizeof(dtype) bytes, native byte order -- little-endian on both
 * targets), runs the model and writes output i to OUT_DIR/output<i>.bin.
 * The signature is printed first, one line per tensor:
 *
 *   input 0 dtype=1 shape=1,1,28,28 name=input
 *
 * -w   also run with a caller workspace pre-filled with 0xFF and require the
 *      outputs to be bit-identical to the workspace=NULL run
 * -t N run through an N-thread pthread pool (default: threads = NULL)
 * -r N run N times (the last run's outputs are written); prints ms per run
 *
 * Exit status: 0 ok, 1 usage / I/O / model error, 2 workspace mismatch.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "model.h"

#ifndef NNC_PREFIX
#define NNC_PREFIX model
#endif
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define MODEL_INFO CAT(NNC_PREFIX, _info)
#define MODEL_RUN CAT(NNC_PREFIX, _run)

static size_t dtype_size(int32_t dt) {
    switch (dt) {
    case 2: case 3: case 9: return 1;   /* uint8, int8, bool */
    case 4: case 5: case 10: case 16: return 2; /* uint16, int16, f16, bf16 */
    case 1: case 6: case 12: return 4;  /* float, int32, uint32 */
    case 7: case 11: case 13: return 8; /* int64, double, uint64 */
    default: return 0;
    }
}

static size_t numel(const nnc_tensor_info *t) {
    size_t n = 1;
    for (int32_t d = 0; d < t->rank; d++) n *= (size_t)t->shape[d];
    return n;
}

static void print_sig(const char *kind, uint32_t i, const nnc_tensor_info *t) {
    printf("%s %u dtype=%d shape=", kind, i, t->dtype);
    for (int32_t d = 0; d < t->rank; d++) printf(d ? ",%lld" : "%lld", (long long)t->shape[d]);
    printf(" name=%s\n", t->name ? t->name : "");
}

static int read_file(const char *path, void *buf, size_t size) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t got = size ? fread(buf, 1, size, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != size || extra) {
        fprintf(stderr, "%s: expected exactly %zu bytes\n", path, size);
        return -1;
    }
    return 0;
}

static int write_file(const char *path, const void *buf, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t put = size ? fwrite(buf, 1, size, f) : 0;
    if (fclose(f) != 0 || put != size) {
        fprintf(stderr, "%s: write failed\n", path);
        return -1;
    }
    return 0;
}

/* ---- a small pthread pool (workers spawned per parallel_for call) -------- */

struct job {
    nnc_task_fn fn;
    void *ctx;
    size_t num_tasks;
    atomic_size_t next;
};

static void *worker(void *arg) {
    struct job *job = arg;
    for (size_t i; (i = atomic_fetch_add(&job->next, 1)) < job->num_tasks;) job->fn(job->ctx, i);
    return NULL;
}

static void spawn_parallel_for(void *pool, size_t num_tasks, nnc_task_fn fn, void *ctx) {
    size_t nthreads = *(size_t *)pool;
    struct job job = {fn, ctx, num_tasks, 0};
    pthread_t tids[64];
    size_t spawned = 0;
    if (nthreads > num_tasks) nthreads = num_tasks;
    for (; spawned + 1 < nthreads && spawned < 64; spawned++)
        if (pthread_create(&tids[spawned], NULL, worker, &job) != 0) break;
    worker(&job);
    for (size_t i = 0; i < spawned; i++) pthread_join(tids[i], NULL);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void usage(const char *argv0) {
    fprintf(stderr, "usage: %s [-w] [-t THREADS] [-r REPEAT] IN_DIR OUT_DIR\n", argv0);
}

int main(int argc, char **argv) {
    int check_ws = 0;
    size_t num_threads = 0;
    long repeat = 1;
    int opt;
    while ((opt = getopt(argc, argv, "wt:r:")) != -1) {
        switch (opt) {
        case 'w': check_ws = 1; break;
        case 't': num_threads = strtoul(optarg, NULL, 10); break;
        case 'r': repeat = strtol(optarg, NULL, 10); break;
        default: usage(argv[0]); return 1;
        }
    }
    if (argc - optind != 2) {
        usage(argv[0]);
        return 1;
    }
    if (repeat < 1) repeat = 1;
    const char *in_dir = argv[optind], *out_dir = argv[optind + 1];

    const nnc_model_info *info = MODEL_INFO();
    if (!info || info->abi_version != NNC_ABI_VERSION) {
        fprintf(stderr, "unsupported model library (abi %u, expected %d)\n", info ? info->abi_version : 0,
                NNC_ABI_VERSION);
        return 1;
    }
    printf("model producer=%s workspace=%llu align=%llu\n", info->producer ? info->producer : "?",
           (unsigned long long)info->workspace_size, (unsigned long long)info->workspace_align);
    for (uint32_t i = 0; i < info->num_inputs; i++) print_sig("input", i, &info->inputs[i]);
    for (uint32_t i = 0; i < info->num_outputs; i++) print_sig("output", i, &info->outputs[i]);
    fflush(stdout);

    char path[4096];
    void **inputs = calloc(info->num_inputs + 1, sizeof(void *));
    void **outputs = calloc(info->num_outputs + 1, sizeof(void *));
    void **outputs2 = calloc(info->num_outputs + 1, sizeof(void *));
    size_t *out_size = calloc(info->num_outputs + 1, sizeof(size_t));
    for (uint32_t i = 0; i < info->num_inputs; i++) {
        const nnc_tensor_info *t = &info->inputs[i];
        size_t es = dtype_size(t->dtype);
        if (!es) {
            fprintf(stderr, "input %u (%s): unsupported dtype %d\n", i, t->name, t->dtype);
            return 1;
        }
        size_t size = numel(t) * es;
        inputs[i] = malloc(size + 1);
        snprintf(path, sizeof path, "%s/input%u.bin", in_dir, i);
        if (read_file(path, inputs[i], size)) return 1;
    }
    for (uint32_t i = 0; i < info->num_outputs; i++) {
        const nnc_tensor_info *t = &info->outputs[i];
        size_t es = dtype_size(t->dtype);
        if (!es) {
            fprintf(stderr, "output %u (%s): unsupported dtype %d\n", i, t->name, t->dtype);
            return 1;
        }
        out_size[i] = numel(t) * es;
        /* Pre-filled with NaN bytes (0x7F...) so unwritten elements show up. */
        outputs[i] = malloc(out_size[i] + 1);
        memset(outputs[i], 0x7F, out_size[i]);
        outputs2[i] = malloc(out_size[i] + 1);
        memset(outputs2[i], 0x55, out_size[i]);
    }

    nnc_threads threads = {num_threads, &num_threads, spawn_parallel_for};
    const nnc_threads *th = num_threads > 1 ? &threads : NULL;

    double t0 = now_ms();
    for (long it = 0; it < repeat; it++) {
        int rc = MODEL_RUN((const void *const *)inputs, outputs, NULL, th);
        if (rc != 0) {
            fprintf(stderr, "model run failed: %d\n", rc);
            return 1;
        }
    }
    double ms = (now_ms() - t0) / (double)repeat;
    printf("run ms=%.3f threads=%zu repeat=%ld\n", ms, num_threads > 1 ? num_threads : 1, repeat);

    int status = 0;
    if (check_ws) {
        size_t align = info->workspace_align > 64 ? (size_t)info->workspace_align : 64;
        size_t ws_size = ((size_t)info->workspace_size + align - 1) / align * align;
        void *ws = ws_size ? aligned_alloc(align, ws_size) : NULL;
        if (ws_size && !ws) {
            fprintf(stderr, "cannot allocate %zu bytes of workspace\n", ws_size);
            return 1;
        }
        if (ws) memset(ws, 0xFF, ws_size);
        int rc = MODEL_RUN((const void *const *)inputs, outputs2, ws, th);
        if (rc != 0) {
            fprintf(stderr, "model run with caller workspace failed: %d\n", rc);
            return 1;
        }
        for (uint32_t i = 0; i < info->num_outputs; i++)
            if (memcmp(outputs[i], outputs2[i], out_size[i]) != 0) {
                fprintf(stderr, "output %u: caller-workspace run differs from the workspace=NULL run\n", i);
                status = 2;
            }
        printf("workspace %s\n", status ? "DIFFERS" : "bit-identical");
        free(ws);
    }

    for (uint32_t i = 0; i < info->num_outputs; i++) {
        snprintf(path, sizeof path, "%s/output%u.bin", out_dir, i);
        if (write_file(path, outputs[i], out_size[i])) return 1;
    }
    for (uint32_t i = 0; i < info->num_inputs; i++) free(inputs[i]);
    for (uint32_t i = 0; i < info->num_outputs; i++) {
        free(outputs[i]);
        free(outputs2[i]);
    }
    free(inputs);
    free(outputs);
    free(outputs2);
    free(out_size);
    return status;
}
