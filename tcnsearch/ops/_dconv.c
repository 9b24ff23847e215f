/* Depthwise dilated 1-D convolution on (batch, length, channels) float32 tensors, fused
 * with the activation and a residual add. Loaded through ctypes by _dconv.py.
 *
 *   z[b,t,c]   = sum_k w[k,c] * x[b, t + shift[k], c]      (zero outside [0, L))
 *   out[b,t,c] = act(z[b,t,c]) + res[b,t,c]
 *
 * Why a hand-written kernel: with channels innermost, one output row is K vector FMAs over
 * C contiguous floats, and the whole layer is one pass over memory. Rows are visited in
 * "residue tiles": t = j*dilation + r with a few consecutive r at a time and j running, so
 * the K input rows a tile reads stay in L2 even when the taps are (K-1)*dilation rows apart
 * (a plain sweep over t re-reads the input from DRAM K times at large dilations).
 * Every size is a runtime argument: one compilation serves every TCN structure.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { ACT_IDENTITY = 0, ACT_RELU = 1, ACT_GELU = 2, ACT_SILU = 3 };

#define ROWS_PER_TILE 32  /* residues per tile: K*32*C*4 bytes stays within L2 for C <= 128 */
#define ROWS_PER_ITEM 4096

static inline float act_f(float z, int act) {
    switch (act) {
    case ACT_RELU: return z > 0.f ? z : 0.f;
    case ACT_GELU: {
        const float a = 0.7978845608028654f * (z + 0.044715f * z * z * z);
        return 0.5f * z * (1.f + tanhf(a));
    }
    case ACT_SILU: return z / (1.f + expf(-z));
    default: return z;
    }
}

static inline float act_grad(float z, int act) {
    switch (act) {
    case ACT_RELU: return z > 0.f ? 1.f : 0.f;
    case ACT_GELU: {
        const float a = 0.7978845608028654f * (z + 0.044715f * z * z * z);
        const float th = tanhf(a);
        return 0.5f * (1.f + th)
             + 0.5f * z * (1.f - th * th) * 0.7978845608028654f * (1.f + 3.f * 0.044715f * z * z);
    }
    case ACT_SILU: {
        const float s = 1.f / (1.f + expf(-z));
        return s * (1.f + z * (1.f - s));
    }
    default: return 1.f;
    }
}

/* Eight floats, loaded unaligned: GCC lowers these to AVX (or SSE pairs) and keeps them in registers. */
typedef float v8f __attribute__((vector_size(32), aligned(4)));

/* acc[c] = sum_k w[k,c] * x[t + shift[k], c] for one output row: channels in blocks of 32
 * held in four vector registers across all K taps, then 8-wide, then scalar tails. */
static inline void conv_row(const float *x, const float *w, const long long *shift, long long t,
                            long long L, long long C, int K, float *restrict acc) {
    long long c0 = 0;
    for (; c0 + 32 <= C; c0 += 32) {
        v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int k = 0; k < K; k++) {
            const long long s = t + shift[k];
            if (s < 0 || s >= L) continue;
            const v8f *xr = (const v8f *)(x + s * C + c0), *wk = (const v8f *)(w + (long long)k * C + c0);
            a0 += wk[0] * xr[0];
            a1 += wk[1] * xr[1];
            a2 += wk[2] * xr[2];
            a3 += wk[3] * xr[3];
        }
        v8f *o = (v8f *)(acc + c0);
        o[0] = a0; o[1] = a1; o[2] = a2; o[3] = a3;
    }
    for (; c0 + 8 <= C; c0 += 8) {
        v8f a0 = {0};
        for (int k = 0; k < K; k++) {
            const long long s = t + shift[k];
            if (s < 0 || s >= L) continue;
            a0 += *(const v8f *)(w + (long long)k * C + c0) * *(const v8f *)(x + s * C + c0);
        }
        *(v8f *)(acc + c0) = a0;
    }
    for (; c0 < C; c0++) {
        float a = 0.f;
        for (int k = 0; k < K; k++) {
            const long long s = t + shift[k];
            if (s >= 0 && s < L) a += w[(long long)k * C + c0] * x[s * C + c0];
        }
        acc[c0] = a;
    }
}

/* Two consecutive rows t, t+1 whose taps are all inside [0, L): eight independent FMA chains
 * (FMA latency, not bandwidth, bounds the one-row loop) and each weight vector loaded once. */
static inline void conv_rows2(const float *x, const float *w, const long long *shift, long long t,
                              long long C, int K, float *restrict acc) {
    long long c0 = 0;
    for (; c0 + 32 <= C; c0 += 32) {
        v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
        for (int k = 0; k < K; k++) {
            const float *xs = x + (t + shift[k]) * C + c0;
            const v8f *xr = (const v8f *)xs, *xq = (const v8f *)(xs + C);
            const v8f *wk = (const v8f *)(w + (long long)k * C + c0);
            const v8f w0 = wk[0], w1 = wk[1], w2 = wk[2], w3 = wk[3];
            a0 += w0 * xr[0]; a1 += w1 * xr[1]; a2 += w2 * xr[2]; a3 += w3 * xr[3];
            b0 += w0 * xq[0]; b1 += w1 * xq[1]; b2 += w2 * xq[2]; b3 += w3 * xq[3];
        }
        v8f *o = (v8f *)(acc + c0), *p = (v8f *)(acc + C + c0);
        o[0] = a0; o[1] = a1; o[2] = a2; o[3] = a3;
        p[0] = b0; p[1] = b1; p[2] = b2; p[3] = b3;
    }
    if (c0 < C) {  /* channel tail: the checked one-row path handles it exactly */
        for (int row = 0; row < 2; row++) {
            for (long long c = c0; c < C; c++) {
                float a = 0.f;
                for (int k = 0; k < K; k++) a += w[(long long)k * C + c] * x[(t + row + shift[k]) * C + c];
                acc[row * C + c] = a;
            }
        }
    }
}

/* After the convolution: store z, apply the activation, add the residual, store the row. */
static inline void finish_row(float *restrict acc, float *z_out, const float *res, float *out,
                              long long o, long long C, int act) {
    if (z_out) memcpy(z_out + o, acc, sizeof(float) * C);
    if (act == ACT_RELU) {
        #pragma omp simd
        for (long long c = 0; c < C; c++) acc[c] = acc[c] > 0.f ? acc[c] : 0.f;
    } else if (act != ACT_IDENTITY) {
        for (long long c = 0; c < C; c++) acc[c] = act_f(acc[c], act);
    }
    if (res) {
        #pragma omp simd
        for (long long c = 0; c < C; c++) out[o + c] = acc[c] + res[o + c];
    } else {
        memcpy(out + o, acc, sizeof(float) * C);
    }
}

/* The work items: (batch, residue tile, block of j). Returns their number. */
typedef struct { long long L; int dil, tile, n_tiles, j_per_item, n_jchunks; } plan_t;

static plan_t make_plan(long long L, int dil) {
    plan_t p;
    p.L = L;
    p.dil = dil;
    p.tile = dil < ROWS_PER_TILE ? dil : ROWS_PER_TILE;
    p.n_tiles = (dil + p.tile - 1) / p.tile;
    long long n_j = (L + dil - 1) / dil;
    p.j_per_item = ROWS_PER_ITEM / p.tile;
    if (p.j_per_item < 1) p.j_per_item = 1;
    p.n_jchunks = (int)((n_j + p.j_per_item - 1) / p.j_per_item);
    return p;
}

/* One work item: batch row offset, residues [r0, r1) and blocks [j0, j1). */
typedef struct { long long base, j0, j1; int r0, r1; } item_t;

static inline item_t decode(const plan_t *p, long long item, long long C) {
    const long long per_batch = (long long)p->n_tiles * p->n_jchunks;
    const long long rem = item % per_batch;
    const int tile = (int)(rem / p->n_jchunks), jc = (int)(rem % p->n_jchunks);
    item_t it;
    it.base = (item / per_batch) * p->L * C;
    it.r0 = tile * p->tile;
    it.r1 = it.r0 + p->tile < p->dil ? it.r0 + p->tile : p->dil;
    it.j0 = (long long)jc * p->j_per_item;
    it.j1 = it.j0 + p->j_per_item;
    return it;
}

/* Forward: out = act(conv(x)) + res; z (pre-activation) is stored when z_out is non-NULL. */
void dconv_forward(const float *x, const float *w, const float *res, float *z_out, float *out,
                   long long B, long long L, long long C, int K, int dil, const long long *shift,
                   int act, int n_threads) {
    const plan_t p = make_plan(L, dil);
    const long long n_items = B * (long long)p.n_tiles * p.n_jchunks;
    long long smin = shift[0], smax = shift[0];
    for (int k = 1; k < K; k++) {
        smin = shift[k] < smin ? shift[k] : smin;
        smax = shift[k] > smax ? shift[k] : smax;
    }
    #pragma omp parallel num_threads(n_threads)
    {
        float *acc = malloc(sizeof(float) * 2 * C);
        #pragma omp for schedule(dynamic, 1)
        for (long long item = 0; item < n_items; item++) {
            const item_t it = decode(&p, item, C);
            const long long base = it.base, j0 = it.j0, j1 = it.j1;
            const int r0 = it.r0, r1 = it.r1;
            for (long long j = j0; j < j1; j++) {
                for (int r = r0; r < r1;) {
                    const long long t = j * dil + r;
                    if (t >= L) break;
                    const long long o = base + t * C;
                    if (r + 1 < r1 && t + smin >= 0 && t + 1 + smax < L) {
                        conv_rows2(x + base, w, shift, t, C, K, acc);
                        finish_row(acc, z_out, res, out, o, C, act);
                        finish_row(acc + C, z_out, res, out, o + C, C, act);
                        r += 2;
                    } else {
                        conv_row(x + base, w, shift, t, L, C, K, acc);
                        finish_row(acc, z_out, res, out, o, C, act);
                        r += 1;
                    }
                }
            }
        }
        free(acc);
    }
}

/* Backward, first half: gz = g_out * act'(z) (written to gz), and the weight gradient
 * gw[k,c] = sum_{b,t} gz[b,t,c] * x[b, t + shift[k], c], accumulated per item in float and
 * across items in double. */
void dconv_backward_weight(const float *g_out, const float *z, const float *x, float *gz, float *gw,
                           long long B, long long L, long long C, int K, int dil,
                           const long long *shift, int act, int n_threads) {
    const plan_t p = make_plan(L, dil);
    const long long n_items = B * (long long)p.n_tiles * p.n_jchunks;
    double *total = calloc((size_t)K * C, sizeof(double));
    #pragma omp parallel num_threads(n_threads)
    {
        float *part = malloc(sizeof(float) * K * C);
        double *mine = calloc((size_t)K * C, sizeof(double));
        #pragma omp for schedule(dynamic, 1)
        for (long long item = 0; item < n_items; item++) {
            const item_t it = decode(&p, item, C);
            const long long base = it.base, j0 = it.j0, j1 = it.j1;
            const int r0 = it.r0, r1 = it.r1;
            memset(part, 0, sizeof(float) * K * C);
            for (long long j = j0; j < j1; j++) {
                for (int r = r0; r < r1; r++) {
                    const long long t = j * dil + r;
                    if (t >= L) break;
                    const long long o = base + t * C;
                    float *g = gz + o;
                    if (act == ACT_IDENTITY) {
                        memcpy(g, g_out + o, sizeof(float) * C);
                    } else if (act == ACT_RELU) {
                        #pragma omp simd
                        for (long long c = 0; c < C; c++) g[c] = z[o + c] > 0.f ? g_out[o + c] : 0.f;
                    } else {
                        for (long long c = 0; c < C; c++) g[c] = g_out[o + c] * act_grad(z[o + c], act);
                    }
                    for (int k = 0; k < K; k++) {
                        const long long s = t + shift[k];
                        if (s < 0 || s >= L) continue;
                        const float *xr = x + base + s * C;
                        float *pk = part + (long long)k * C;
                        #pragma omp simd
                        for (long long c = 0; c < C; c++) pk[c] += g[c] * xr[c];
                    }
                }
            }
            for (long long i = 0; i < (long long)K * C; i++) mine[i] += part[i];
        }
        #pragma omp critical
        for (long long i = 0; i < (long long)K * C; i++) total[i] += mine[i];
        free(part);
        free(mine);
    }
    for (long long i = 0; i < (long long)K * C; i++) gw[i] = (float)total[i];
    free(total);
}
