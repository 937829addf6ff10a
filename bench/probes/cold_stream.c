// Probe: does cutting the arithmetic per weight speed up a matrix-vector product that streams
// its weights from DRAM on the 2-core dev machine? (Evidence for BENCHMARKS.md, issue 3.)
//
// Blocks of 32 weights as the interpreter's re-encoded q5_0/q6_k rows: f32 scale + 32 bytes
// (36 B). Kernels:
//   f32    the interpreter's exact kernel: widen 8 codes (vpmovsxbd m64), convert, FMA with
//          f32 x, scale per block (~14 vector ops per block)
//   split  integer products with x split into an 8-bit and a 15-bit piece (vpmaddubsw +
//          vpmaddwd, one convert and one FMA per block: ~10 ops; 23-bit activations)
//   f32/22 the f32 kernel over blocks 22 B apart (q5_0's size; same ops, fewer bytes)
//   sum    only reads the bytes (the roofline's kernel)
// For each: ns per block per thread with the rows hot in L1/L2 ("hot") and streamed once from
// a 200k-row matrix ("cold"), 1 and 2 threads; cold figures are G blocks/s and GB/s in all.
// The values computed are not used; only the timing is.
//
//   gcc -O2 -mavx2 -mfma -pthread bench/probes/cold_stream.c -o /tmp/cold_stream && /tmp/cold_stream
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
#define W(p, o) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const void *)((p) + (o)))))
#define SCALE(p) _mm256_broadcast_ss((const float *)(p))

#define F32_KERNEL(name, STRIDE)                                                          \
    static void name(const uint8_t *w, int rows, int k, const void *xv, float *out) {     \
        const float *x = xv;                                                              \
        int nb = k / 32;                                                                  \
        for (int r = 0; r < rows; r++) {                                                  \
            const uint8_t *row = w + (size_t)r * nb * STRIDE;                             \
            __m256 acc = _mm256_setzero_ps();                                             \
            for (int b = 0; b < nb; b++) {                                                \
                const uint8_t *p = row + b * STRIDE;                                      \
                const float *xb = x + b * 32;                                             \
                __m256 s = _mm256_mul_ps(W(p, 4), _mm256_loadu_ps(xb));                   \
                s = _mm256_fmadd_ps(W(p, 12), _mm256_loadu_ps(xb + 8), s);                \
                s = _mm256_fmadd_ps(W(p, 20), _mm256_loadu_ps(xb + 16), s);               \
                s = _mm256_fmadd_ps(W(p, 28), _mm256_loadu_ps(xb + 24), s);               \
                acc = _mm256_fmadd_ps(s, SCALE(p), acc);                                  \
            }                                                                             \
            out[r] = hsum(acc);                                                           \
        }                                                                                 \
    }
F32_KERNEL(f32_36, 36)
F32_KERNEL(f32_22, 22)

// x as an 8-bit piece a0 (k bytes) then a 15-bit piece c1 (k i16), in the codes' lane order.
static void split(const uint8_t *w, int rows, int k, const void *xv, float *out) {
    const int8_t *a0 = xv;
    const int16_t *c1 = (const int16_t *)((const int8_t *)xv + k);
    const __m256i c = _mm256_set1_epi16(16384), zero = _mm256_setzero_si256();
    int nb = k / 32;
    for (int r = 0; r < rows; r++) {
        const uint8_t *row = w + (size_t)r * nb * 36;
        __m256 acc = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++) {
            const uint8_t *p = row + b * 36;
            __m256i u = _mm256_loadu_si256((const void *)(p + 4));
            __m256i hi8 = _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_loadu_si256((const void *)(a0 + 32 * b))), c);
            __m256i lo = _mm256_unpacklo_epi8(u, zero), hi = _mm256_unpackhi_epi8(u, zero);
            __m256i lo15 = _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256((const void *)(c1 + 32 * b))),
                                            _mm256_madd_epi16(hi, _mm256_loadu_si256((const void *)(c1 + 32 * b + 16))));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(hi8, lo15)), SCALE(p), acc);
        }
        out[r] = hsum(acc);
    }
}

static void sum(const uint8_t *w, int rows, int k, const void *xv, float *out) {
    (void)xv;
    size_t n = (size_t)rows * (k / 32) * 36 / 32;
    const __m256i *v = (const void *)w;
    __m256i a = _mm256_setzero_si256(), b = a;
    for (size_t i = 0; i + 1 < n; i += 2) {
        a = _mm256_add_epi32(a, _mm256_loadu_si256(v + i));
        b = _mm256_add_epi32(b, _mm256_loadu_si256(v + i + 1));
    }
    out[0] = (float)_mm256_extract_epi32(_mm256_add_epi32(a, b), 0);
}

typedef void (*kernel)(const uint8_t *, int, int, const void *, float *);
struct job { kernel f; const uint8_t *w; int rows, k, reps; const void *x; float *out; double t; };
static void *run(void *a) {
    struct job *j = a;
    double t0 = now();
    for (int i = 0; i < j->reps; i++) j->f(j->w, j->rows, j->k, j->x, j->out);
    j->t = now() - t0;
    return 0;
}
// Wall time of `threads` threads, each running `rows` rows from its own part of `w`, `reps` times.
static double timed(kernel f, const uint8_t *w, size_t stride, int rows, int k, int reps, int threads, const void *x, float *out) {
    struct job j[2];
    pthread_t th[2];
    for (int t = 0; t < threads; t++)
        j[t] = (struct job){f, w + (size_t)t * rows * (k / 32) * stride, rows, k, reps, x, out + (size_t)t * rows, 0};
    for (int t = 0; t < threads; t++) pthread_create(&th[t], 0, run, &j[t]);
    for (int t = 0; t < threads; t++) pthread_join(th[t], 0);
    double m = 0;
    for (int t = 0; t < threads; t++) m = j[t].t > m ? j[t].t : m;
    return m;
}

int main(void) {
    const int k = 896, hot_rows = 256, cold_rows = 200000, reps = 5;
    size_t bytes = (size_t)cold_rows * (k / 32) * 36 + 4096;
    uint8_t *w = aligned_alloc(64, bytes);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)(rand() % 30);
    void *x = aligned_alloc(64, 16 * (size_t)k);
    for (size_t i = 0; i < 4 * (size_t)k; i++) ((float *)x)[i] = (rand() % 1000) / 1e5f;
    float *out = malloc(sizeof(float) * cold_rows);
    kernel ks[] = {f32_36, split, f32_22, sum};
    const char *names[] = {"f32", "split", "f32/22", "sum"};
    size_t strides[] = {36, 36, 22, 36};
    for (int rep = 0; rep < reps; rep++)
        for (int i = 0; i < 4; i++)
            for (int threads = 1; threads <= 2; threads++) {
                double hot = i == 3 ? 0 : timed(ks[i], w, strides[i], hot_rows, k, 2000, threads, x, out) / (hot_rows * (k / 32) * 2000.0) * 1e9;
                int rows = (int)((size_t)cold_rows * 36 / strides[i] / 2);
                double t = timed(ks[i], w, strides[i], rows, k, 2, threads, x, out);
                double blocks = (double)rows * threads * (k / 32) * 2;
                printf("%-7s %d thr: hot %5.2f ns/block/thread  cold %.3f Gblock/s %5.1f GB/s\n", names[i], threads, hot,
                       blocks / t / 1e9, blocks * strides[i] / t / 1e9);
            }
    return 0;
}
