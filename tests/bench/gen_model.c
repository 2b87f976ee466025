/*
 * gen_model: synthetic Llama-style safetensors models for benchmarks.
 * Standalone (libc + libm only): cc -O2 -o gen_model gen_model.c -lm
 *
 *   gen_model OUT.safetensors --bytes N [--seed S]
 *       A BF16 model with Hugging Face Llama tensor names and shapes, as
 *       many layers as needed for the file to reach N bytes (suffixes k/m/g
 *       = KiB/MiB/GiB). The width comes from a ladder of Llama-like configs
 *       (the widest one that still gets >= 8 layers). Matrices ~ N(0, 0.02),
 *       norm weights ~ 1 + N(0, 0.02); Box-Muller on xoshiro256** seeded
 *       from (S, tensor name), rounded F32 -> BF16 round-to-nearest-even.
 *       Written like HF: 8-byte LE header length, compact JSON header with
 *       "__metadata__":{"format":"pt"} first, tensors sorted by name and
 *       stored in that order, header padded with spaces to a multiple of 8.
 *
 *   gen_model OUT.safetensors --delta-of BASE.safetensors
 *             [--scale 1e-3] [--frac 0.7] [--seed S] [--additive] [--lowrank R]
 *       A synthetic fine-tune of BASE: round(frac * n) of its n float
 *       tensors (BF16/F16/F32; chosen by S) get w' = w + N(0, scale*|w|)
 *       per element, rounded back to the tensor's dtype (RNE); every other
 *       tensor, and the header, are copied byte for byte. Streams: memory
 *       use is a few MiB whatever the model size. --additive: w' = w +
 *       N(0, scale) instead (dense, near-Gaussian deltas, like the shared
 *       fine-tunes' ~8 % of the weights' RMS at scale 0.0016 on N(0, 0.02)). Note that at scale 1e-3
 *       most BF16 elements round back to w (BF16 keeps 8 significant bits),
 *       as in real BF16 fine-tunes; the summary line says how many changed.
 *       --lowrank R: a 2-D tensor's delta is instead of rank R plus 5 %
 *       white noise, RMS scale, with a steep spectrum (c_t ~ 1 / (t + 1)),
 *       like the shared fine-tunes' deltas (what LOWRANKQ is for).
 *
 * The output is deterministic for given arguments. Exit status 0 on
 * success, 1 on error (message on stderr), 2 on bad usage.
 */
#define _FILE_OFFSET_BITS 64
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUF_BYTES (4u << 20)

static const char *g_out;      /* removed on failure */
static FILE *g_outf;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("gen_model: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (g_outf)
        fclose(g_outf);
    if (g_out)
        unlink(g_out);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory (%zu bytes)", n);
    return p;
}

/* ------------------------------------------------------------ random */

typedef struct {
    uint64_t s[4];
    int have;       /* Box-Muller makes pairs; the second one waits here */
    double spare;
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static void rng_seed(rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed * 0x2545f4914f6cdd1dull ^ stream;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    r->have = 0;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng *r)   /* xoshiro256** */
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static inline double rng_gauss(rng *r)    /* N(0, 1), Box-Muller */
{
    if (r->have) {
        r->have = 0;
        return r->spare;
    }
    double u1 = ((double)(rng_next(r) >> 11) + 1.0) * 0x1p-53;   /* (0, 1] */
    double u2 = (double)(rng_next(r) >> 11) * 0x1p-53;           /* [0, 1) */
    double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
    r->spare = rad * sin(th);
    r->have = 1;
    return rad * cos(th);
}

/* ------------------------------------------------------------ dtypes */

static inline float bits_f32(uint32_t x)
{
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static inline uint32_t f32_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

static inline uint16_t f32_to_bf16(float f)   /* round to nearest even */
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);   /* NaN stays a (quiet) NaN */
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static inline float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

static inline uint16_t f32_to_f16(float f)    /* round to nearest even */
{
    uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000u, o;
    x &= 0x7fffffffu;
    if (x >= (143u << 23)) {                  /* >= 2^16: Inf, or NaN */
        o = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
    } else if (x < (113u << 23)) {            /* F16 subnormal or zero */
        float a = bits_f32(x) + 0.5f;         /* the FPU rounds (RNE) */
        o = f32_bits(a) - f32_bits(0.5f);
    } else {
        uint32_t odd = (x >> 13) & 1;
        x += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
        o = x >> 13;
    }
    return (uint16_t)(o | sign);
}

static inline float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu;
    if (e == 0)
        return bits_f32(f32_bits((float)m * 0x1p-24f) | sign);
    if (e == 31)
        return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

/* ------------------------------------------------------------ output */

static void out_write(const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, g_outf) != n)
        die("%s: write: %s", g_out, strerror(errno));
}

static void out_open(const char *path)
{
    g_out = path;
    g_outf = fopen(path, "wb");
    if (!g_outf)
        die("%s: %s", path, strerror(errno));
    setvbuf(g_outf, NULL, _IOFBF, 1u << 20);
}

static void out_close(void)
{
    if (fflush(g_outf) || ferror(g_outf) || fclose(g_outf)) {
        g_outf = NULL;
        die("%s: write: %s", g_out, strerror(errno));
    }
    g_outf = NULL;
}

/* ------------------------------------------------------------ generate */

typedef struct {
    char name[96];
    int ndim;
    uint64_t shape[2];
    int is_norm;
    uint64_t begin, end;
} gtensor;

typedef struct {
    uint64_t hidden, inter, heads, kv_heads, vocab;
} llama_cfg;

/* Llama-like widths; intermediate = 8/3 hidden rounded up to 256 (Llama 2
 * style), GQA where the published model of that width has it. */
static const llama_cfg LADDER[] = {
    { 256, 688, 8, 8, 256 },          /* /work/shared/models tiny llama */
    { 512, 1536, 8, 8, 32000 },
    { 1024, 2816, 16, 4, 32000 },
    { 2048, 5632, 32, 4, 32000 },     /* TinyLlama-1.1B */
    { 4096, 11008, 32, 32, 32000 },   /* Llama-2-7B */
    { 8192, 28672, 64, 8, 32000 },    /* Llama-2-70B */
};
#define N_LADDER (sizeof LADDER / sizeof LADDER[0])
#define MIN_LAYERS 8

static uint64_t fixed_bytes(const llama_cfg *c)    /* embed, lm_head, final norm */
{
    return 2 * (2 * c->vocab * c->hidden + c->hidden);
}

static uint64_t layer_bytes(const llama_cfg *c)
{
    uint64_t h = c->hidden, kv = h / c->heads * c->kv_heads;
    return 2 * (2 * h * h + 2 * kv * h + 3 * c->inter * h + 2 * h);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const gtensor *)a)->name, ((const gtensor *)b)->name);
}

static void add(gtensor *t, size_t *n, int norm, uint64_t d0, uint64_t d1, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t[*n].name, sizeof t[*n].name, fmt, ap);
    va_end(ap);
    t[*n].is_norm = norm;
    t[*n].ndim = d1 ? 2 : 1;
    t[*n].shape[0] = d0;
    t[*n].shape[1] = d1;
    (*n)++;
}

/* The JSON header, padded with spaces so that its length is a multiple of 8. */
static char *make_header(const gtensor *t, size_t n, const char *dtype, size_t *len)
{
    size_t cap = 64 + n * 256, o = 0;
    char *h = xmalloc(cap);
    o += (size_t)snprintf(h + o, cap - o, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        o += (size_t)snprintf(h + o, cap - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%" PRIu64,
                              t[i].name, dtype, t[i].shape[0]);
        if (t[i].ndim == 2)
            o += (size_t)snprintf(h + o, cap - o, ",%" PRIu64, t[i].shape[1]);
        o += (size_t)snprintf(h + o, cap - o,
                              "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", t[i].begin,
                              t[i].end);
    }
    o += (size_t)snprintf(h + o, cap - o, "}");
    while (o % 8)
        h[o++] = ' ';
    *len = o;
    return h;
}

static void gen_model(const char *out, uint64_t want, uint64_t seed)
{
    size_t ci = 0;
    for (size_t i = 1; i < N_LADDER; i++)
        if (fixed_bytes(&LADDER[i]) + MIN_LAYERS * layer_bytes(&LADDER[i]) <= want)
            ci = i;
    const llama_cfg *c = &LADDER[ci];
    uint64_t fixed = fixed_bytes(c), per = layer_bytes(c);
    uint64_t layers = want > fixed ? (want - fixed + per - 1) / per : 1;
    if (layers < 1)
        layers = 1;
    if (layers > 100000)
        die("--bytes too large");

    uint64_t h = c->hidden, kv = h / c->heads * c->kv_heads;
    size_t n = 0, cap = 3 + 9 * (size_t)layers;
    gtensor *t = calloc(cap, sizeof *t);
    if (!t)
        die("out of memory");
    add(t, &n, 0, c->vocab, h, "model.embed_tokens.weight");
    add(t, &n, 0, c->vocab, h, "lm_head.weight");
    add(t, &n, 1, h, 0, "model.norm.weight");
    for (uint64_t l = 0; l < layers; l++) {
        add(t, &n, 0, h, h, "model.layers.%" PRIu64 ".self_attn.q_proj.weight", l);
        add(t, &n, 0, kv, h, "model.layers.%" PRIu64 ".self_attn.k_proj.weight", l);
        add(t, &n, 0, kv, h, "model.layers.%" PRIu64 ".self_attn.v_proj.weight", l);
        add(t, &n, 0, h, h, "model.layers.%" PRIu64 ".self_attn.o_proj.weight", l);
        add(t, &n, 0, c->inter, h, "model.layers.%" PRIu64 ".mlp.gate_proj.weight", l);
        add(t, &n, 0, c->inter, h, "model.layers.%" PRIu64 ".mlp.up_proj.weight", l);
        add(t, &n, 0, h, c->inter, "model.layers.%" PRIu64 ".mlp.down_proj.weight", l);
        add(t, &n, 1, h, 0, "model.layers.%" PRIu64 ".input_layernorm.weight", l);
        add(t, &n, 1, h, 0, "model.layers.%" PRIu64 ".post_attention_layernorm.weight", l);
    }
    qsort(t, n, sizeof *t, by_name);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t elems = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
        t[i].begin = off;
        t[i].end = off += 2 * elems;
    }

    size_t hlen;
    char *hdr = make_header(t, n, "BF16", &hlen);
    out_open(out);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    out_write(len8, 8);
    out_write(hdr, hlen);

    size_t cap_el = BUF_BYTES / 2;
    uint16_t *buf = xmalloc(BUF_BYTES);
    for (size_t i = 0; i < n; i++) {
        rng r;
        rng_seed(&r, seed, fnv1a(t[i].name));
        double mean = t[i].is_norm ? 1.0 : 0.0, sd = 0.02;
        for (uint64_t left = (t[i].end - t[i].begin) / 2; left;) {
            size_t k = left < cap_el ? (size_t)left : cap_el;
            for (size_t j = 0; j < k; j++)
                buf[j] = f32_to_bf16((float)(mean + sd * rng_gauss(&r)));
            out_write(buf, 2 * k);   /* little-endian hosts only (x86, arm64) */
            left -= k;
        }
    }
    out_close();
    printf("wrote %s: %" PRIu64 " bytes, %zu tensors, BF16, %" PRIu64 " layers, hidden %" PRIu64
           ", intermediate %" PRIu64 ", heads %" PRIu64 "/%" PRIu64 " kv, vocab %" PRIu64
           ", seed %" PRIu64 "\n",
           out, 8 + (uint64_t)hlen + off, n, layers, c->hidden, c->inter, c->heads,
           c->kv_heads, c->vocab, seed);
    free(buf);
    free(hdr);
    free(t);
}

/* ------------------------------------------------------------ header parse */

/* Just enough JSON for a safetensors header: the top-level object's tensor
 * entries (dtype, data_offsets); everything else is skipped. */
typedef struct {
    const char *start, *p, *end;
} jcur;

typedef struct {
    char *name;
    char dtype[16];
    uint64_t begin, end;
    uint64_t rows, cols;   /* a 2-D tensor's shape, else 0 */
    int selected;
} ptensor;

static void jfail(const jcur *j, const char *what)
{
    die("bad safetensors header (%s) at byte %td of the JSON", what, j->p - j->start);
}

static void jws(jcur *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static void jexpect(jcur *j, char c)
{
    jws(j);
    if (j->p >= j->end || *j->p != c) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", c);
        jfail(j, what);
    }
    j->p++;
}

static int jpeek(jcur *j, char c)
{
    jws(j);
    return j->p < j->end && *j->p == c;
}

static char *jstring(jcur *j)   /* malloc'd, UTF-8 */
{
    jexpect(j, '"');
    size_t cap = 32, n = 0;
    char *s = xmalloc(cap);
    for (;;) {
        if (j->p >= j->end)
            jfail(j, "unterminated string");
        unsigned char c = (unsigned char)*j->p++;
        if (n + 5 > cap)
            s = realloc(s, cap *= 2);
        if (!s)
            die("out of memory");
        if (c == '"')
            break;
        if (c != '\\') {
            s[n++] = (char)c;
            continue;
        }
        if (j->p >= j->end)
            jfail(j, "bad escape");
        c = (unsigned char)*j->p++;
        switch (c) {
        case '"': case '\\': case '/': s[n++] = (char)c; break;
        case 'b': s[n++] = '\b'; break;
        case 'f': s[n++] = '\f'; break;
        case 'n': s[n++] = '\n'; break;
        case 'r': s[n++] = '\r'; break;
        case 't': s[n++] = '\t'; break;
        case 'u': {
            if (j->end - j->p < 4)
                jfail(j, "bad \\u escape");
            char hx[5] = { j->p[0], j->p[1], j->p[2], j->p[3], 0 };
            char *e;
            unsigned long u = strtoul(hx, &e, 16);
            if (*e)
                jfail(j, "bad \\u escape");
            j->p += 4;
            if (u >= 0xd800 && u < 0xdc00 && j->end - j->p >= 6 && j->p[0] == '\\' &&
                j->p[1] == 'u') {
                char lo[5] = { j->p[2], j->p[3], j->p[4], j->p[5], 0 };
                unsigned long v = strtoul(lo, &e, 16);
                if (!*e && v >= 0xdc00 && v < 0xe000) {
                    u = 0x10000 + ((u - 0xd800) << 10) + (v - 0xdc00);
                    j->p += 6;
                }
            }
            if (u < 0x80) {
                s[n++] = (char)u;
            } else if (u < 0x800) {
                s[n++] = (char)(0xc0 | (u >> 6));
                s[n++] = (char)(0x80 | (u & 0x3f));
            } else if (u < 0x10000) {
                s[n++] = (char)(0xe0 | (u >> 12));
                s[n++] = (char)(0x80 | ((u >> 6) & 0x3f));
                s[n++] = (char)(0x80 | (u & 0x3f));
            } else {
                s[n++] = (char)(0xf0 | (u >> 18));
                s[n++] = (char)(0x80 | ((u >> 12) & 0x3f));
                s[n++] = (char)(0x80 | ((u >> 6) & 0x3f));
                s[n++] = (char)(0x80 | (u & 0x3f));
            }
            break;
        }
        default: jfail(j, "bad escape");
        }
    }
    s[n] = 0;
    return s;
}

static uint64_t juint(jcur *j)
{
    jws(j);
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        jfail(j, "expected an unsigned integer");
    uint64_t v = 0;
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
        unsigned d = (unsigned)(*j->p++ - '0');
        if (v > (UINT64_MAX - d) / 10)
            jfail(j, "integer overflow");
        v = v * 10 + d;
    }
    return v;
}

static void jskip(jcur *j, int depth)
{
    if (depth > 64)
        jfail(j, "nested too deep");
    jws(j);
    if (j->p >= j->end)
        jfail(j, "unexpected end");
    char c = *j->p;
    if (c == '"') {
        free(jstring(j));
    } else if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        if (jpeek(j, close)) {
            j->p++;
            return;
        }
        for (;;) {
            if (c == '{') {
                free(jstring(j));
                jexpect(j, ':');
            }
            jskip(j, depth + 1);
            if (jpeek(j, ',')) {
                j->p++;
                continue;
            }
            jexpect(j, close);
            return;
        }
    } else {   /* number, true, false, null */
        const char *s = j->p;
        while (j->p < j->end && !strchr(",]} \t\r\n", *j->p))
            j->p++;
        if (j->p == s)
            jfail(j, "unexpected character");
    }
}

static size_t parse_header(const char *h, size_t len, ptensor **out)
{
    jcur j = { h, h, h + len };
    size_t n = 0, cap = 64;
    ptensor *t = xmalloc(cap * sizeof *t);
    jexpect(&j, '{');
    if (jpeek(&j, '}')) {
        j.p++;
        *out = t;
        return 0;
    }
    for (;;) {
        char *key = jstring(&j);
        jexpect(&j, ':');
        if (!strcmp(key, "__metadata__")) {
            free(key);
            jskip(&j, 1);
        } else {
            if (n == cap && !(t = realloc(t, (cap *= 2) * sizeof *t)))
                die("out of memory");
            ptensor *e = &t[n++];
            memset(e, 0, sizeof *e);
            e->name = key;
            int have_dt = 0, have_off = 0;
            jexpect(&j, '{');
            while (!jpeek(&j, '}')) {
                char *k = jstring(&j);
                jexpect(&j, ':');
                if (!strcmp(k, "dtype")) {
                    char *v = jstring(&j);
                    snprintf(e->dtype, sizeof e->dtype, "%s", v);
                    free(v);
                    have_dt = 1;
                } else if (!strcmp(k, "data_offsets")) {
                    jexpect(&j, '[');
                    e->begin = juint(&j);
                    jexpect(&j, ',');
                    e->end = juint(&j);
                    jexpect(&j, ']');
                    have_off = 1;
                } else if (!strcmp(k, "shape")) {
                    uint64_t dim[8];
                    int nd = 0;
                    jexpect(&j, '[');
                    while (!jpeek(&j, ']')) {
                        uint64_t v = juint(&j);
                        if (nd < 8)
                            dim[nd] = v;
                        nd++;
                        if (jpeek(&j, ','))
                            j.p++;
                    }
                    j.p++;
                    if (nd == 2)
                        e->rows = dim[0], e->cols = dim[1];
                } else {
                    jskip(&j, 2);
                }
                free(k);
                if (jpeek(&j, ','))
                    j.p++;
            }
            j.p++;
            if (!have_dt || !have_off)
                die("tensor '%s': dtype or data_offsets missing", key);
        }
        if (jpeek(&j, ',')) {
            j.p++;
            continue;
        }
        jexpect(&j, '}');
        break;
    }
    *out = t;
    return n;
}

/* ------------------------------------------------------------ delta */

static int dtype_size(const char *dt)   /* float dtypes we can perturb; 0 = copy */
{
    if (!strcmp(dt, "BF16") || !strcmp(dt, "F16"))
        return 2;
    if (!strcmp(dt, "F32"))
        return 4;
    return 0;
}

static int by_pname(const void *a, const void *b)
{
    return strcmp(((const ptensor *)a)->name, ((const ptensor *)b)->name);
}

static int by_begin(const void *a, const void *b)
{
    const ptensor *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static void read_exact(FILE *f, const char *path, void *p, size_t n)
{
    if (n && fread(p, 1, n, f) != n)
        die("%s: read: %s", path, ferror(f) ? strerror(errno) : "unexpected end of file");
}

static void copy_bytes(FILE *in, const char *path, uint8_t *buf, uint64_t n)
{
    while (n) {
        size_t k = n < BUF_BYTES ? (size_t)n : BUF_BYTES;
        read_exact(in, path, buf, k);
        out_write(buf, k);
        n -= k;
    }
}

static int additive;
static unsigned lowrank;   /* --lowrank R: the delta of a 2-D tensor is of low rank */

/*
 * --lowrank R: a 2-D tensor's delta is sum over t < R of c_t a_t b_t^T plus
 * white noise, a_t, b_t ~ N(0, 1) and c_t ~ 1 / (t + 1): a steep spectrum
 * like the shared fine-tunes' (there, 32 of 256 directions hold 82-94 % of
 * the energy), RMS @p scale, 95 % of the energy in the low-rank part.
 * Fills a (R x rows, scaled by c_t) and b (R x cols).
 */
static void lowrank_factors(float *a, float *b, uint64_t rows, uint64_t cols, double scale,
                            rng *r)
{
    double sum = 0;
    for (unsigned t = 0; t < lowrank; t++)
        sum += 1.0 / ((t + 1.0) * (t + 1.0));
    for (unsigned t = 0; t < lowrank; t++) {
        double c = scale * sqrt(0.95 / sum) / (t + 1.0);
        for (uint64_t i = 0; i < rows; i++)
            a[t * rows + i] = (float)(c * rng_gauss(r));
        for (uint64_t j = 0; j < cols; j++)
            b[t * cols + j] = (float)rng_gauss(r);
    }
}

static void gen_delta(const char *out, const char *base, double scale, double frac,
                      uint64_t seed)
{
    FILE *in = fopen(base, "rb");
    if (!in)
        die("%s: %s", base, strerror(errno));
    struct stat st;
    if (fstat(fileno(in), &st))
        die("%s: %s", base, strerror(errno));
    uint8_t len8[8];
    read_exact(in, base, len8, 8);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)len8[i] << (8 * i);
    if (hlen > 100u << 20 || 8 + hlen > (uint64_t)st.st_size)
        die("%s: bad header length %" PRIu64, base, hlen);
    char *hdr = xmalloc((size_t)hlen);
    read_exact(in, base, hdr, (size_t)hlen);
    uint64_t data_len = (uint64_t)st.st_size - 8 - hlen;

    ptensor *t;
    size_t n = parse_header(hdr, (size_t)hlen, &t);

    /* choose round(frac * eligible) tensors: Fisher-Yates on name order */
    qsort(t, n, sizeof *t, by_pname);
    size_t *elig = xmalloc(n * sizeof *elig), ne = 0;
    for (size_t i = 0; i < n; i++) {
        int es = dtype_size(t[i].dtype);
        if (t[i].end < t[i].begin || t[i].end > data_len)
            die("%s: tensor '%s': data_offsets out of range", base, t[i].name);
        if (es && (t[i].end - t[i].begin) % (uint64_t)es)
            die("%s: tensor '%s': size not a multiple of its dtype", base, t[i].name);
        if (es)
            elig[ne++] = i;
    }
    rng pick;
    rng_seed(&pick, seed, 0x5e1ec7ull);
    for (size_t i = ne; i > 1; i--) {
        size_t k = (size_t)(rng_next(&pick) % i), tmp = elig[i - 1];
        elig[i - 1] = elig[k];
        elig[k] = tmp;
    }
    size_t nsel = (size_t)llround(frac * (double)ne);
    if (nsel > ne)
        nsel = ne;
    for (size_t i = 0; i < nsel; i++)
        t[elig[i]].selected = 1;
    free(elig);

    /* stream the data in file order */
    qsort(t, n, sizeof *t, by_begin);
    out_open(out);
    out_write(len8, 8);
    out_write(hdr, (size_t)hlen);
    uint8_t *buf = xmalloc(BUF_BYTES);
    uint64_t pos = 0, el_total = 0, el_changed = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i].begin < pos)
            die("%s: tensor '%s' overlaps another", base, t[i].name);
        copy_bytes(in, base, buf, t[i].begin - pos);
        uint64_t left = t[i].end - t[i].begin;
        pos = t[i].end;
        if (!t[i].selected) {
            copy_bytes(in, base, buf, left);
            continue;
        }
        rng r;
        rng_seed(&r, seed, fnv1a(t[i].name));
        int es = dtype_size(t[i].dtype), bf = !strcmp(t[i].dtype, "BF16");
        int lr = lowrank && t[i].rows > 1 && t[i].cols > 1 &&
                 t[i].rows * t[i].cols * (uint64_t)es == t[i].end - t[i].begin;
        float *fa = NULL, *fb = NULL, *row = NULL;
        uint64_t at = 0;   /* element index in the tensor */
        if (lr) {
            fa = xmalloc(lowrank * t[i].rows * sizeof *fa);
            fb = xmalloc(lowrank * t[i].cols * sizeof *fb);
            row = xmalloc(t[i].cols * sizeof *row);
            lowrank_factors(fa, fb, t[i].rows, t[i].cols, scale, &r);
        }
        const double noise = lr ? scale * sqrt(0.05) : scale;
        while (left) {
            size_t k = left < BUF_BYTES ? (size_t)left : BUF_BYTES, m = k / (size_t)es;
            read_exact(in, base, buf, k);
            for (size_t e = 0; e < m; e++) {
                float w;
                uint16_t h16 = 0;
                uint32_t h32 = 0;
                if (es == 2) {
                    memcpy(&h16, buf + 2 * e, 2);
                    w = bf ? bf16_to_f32(h16) : f16_to_f32(h16);
                } else {
                    memcpy(&h32, buf + 4 * e, 4);
                    w = bits_f32(h32);
                }
                double z = rng_gauss(&r);   /* drawn for every element: a
                                               fixed stream per tensor */
                double dl = 0;
                if (lr) {
                    uint64_t j = at % t[i].cols;
                    if (j == 0) {   /* the next row of the low-rank part */
                        uint64_t ri = at / t[i].cols;
                        for (uint64_t x = 0; x < t[i].cols; x++)
                            row[x] = 0;
                        for (unsigned q = 0; q < lowrank; q++) {
                            const float c = fa[q * t[i].rows + ri], *bq = fb + q * t[i].cols;
                            for (uint64_t x = 0; x < t[i].cols; x++)
                                row[x] += c * bq[x];
                        }
                    }
                    dl = row[j];
                }
                at++;
                if (!isfinite(w))
                    continue;
                float w2 = lr ? (float)((double)w + dl + noise * z)
                              : (float)((double)w + scale * (additive ? 1 : fabs((double)w)) * z);
                if (es == 2) {
                    uint16_t n16 = bf ? f32_to_bf16(w2) : f32_to_f16(w2);
                    el_changed += n16 != h16;
                    memcpy(buf + 2 * e, &n16, 2);
                } else {
                    uint32_t n32 = f32_bits(w2);
                    el_changed += n32 != h32;
                    memcpy(buf + 4 * e, &n32, 4);
                }
            }
            el_total += m;
            out_write(buf, k);
            left -= k;
        }
        free(fa);
        free(fb);
        free(row);
    }
    copy_bytes(in, base, buf, data_len - pos);
    out_close();
    fclose(in);
    printf("wrote %s: delta of %s, %zu of %zu tensors perturbed (scale %g, seed %" PRIu64
           "), %" PRIu64 " of their %" PRIu64 " elements changed (%.2f%%)\n",
           out, base, nsel, n, scale, seed, el_changed, el_total,
           el_total ? 100.0 * (double)el_changed / (double)el_total : 0.0);
    for (size_t i = 0; i < n; i++)
        free(t[i].name);
    free(t);
    free(hdr);
    free(buf);
}

/* ------------------------------------------------------------ main */

static void usage(void)
{
    fputs("usage: gen_model OUT.safetensors --bytes N[k|m|g] [--seed S]\n"
          "       gen_model OUT.safetensors --delta-of BASE.safetensors [--scale 1e-3]"
          " [--frac 0.7] [--seed S] [--additive] [--lowrank R]\n",
          stderr);
    exit(2);
}

static uint64_t parse_size(const char *s)
{
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (errno || e == s || *s == '-')
        usage();
    uint64_t mul = 1;
    switch (*e) {
    case 0: break;
    case 'k': case 'K': mul = 1ull << 10; e++; break;
    case 'm': case 'M': mul = 1ull << 20; e++; break;
    case 'g': case 'G': mul = 1ull << 30; e++; break;
    default: usage();
    }
    if (*e && strcmp(e, "iB") && strcmp(e, "B"))
        usage();
    if (v > UINT64_MAX / mul)
        usage();
    return (uint64_t)v * mul;
}

static double parse_double(const char *s)
{
    char *e;
    double v = strtod(s, &e);
    if (e == s || *e || !isfinite(v) || v < 0)
        usage();
    return v;
}

int main(int argc, char **argv)
{
    const char *out = NULL, *base = NULL;
    uint64_t bytes = 0, seed = 1;
    double scale = 1e-3, frac = 0.7;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--bytes") && more)
            bytes = parse_size(argv[++i]);
        else if (!strcmp(a, "--seed") && more)
            seed = parse_size(argv[++i]);
        else if (!strcmp(a, "--delta-of") && more)
            base = argv[++i];
        else if (!strcmp(a, "--scale") && more)
            scale = parse_double(argv[++i]);
        else if (!strcmp(a, "--additive"))
            additive = 1;
        else if (!strcmp(a, "--lowrank") && more)
            lowrank = (unsigned)parse_double(argv[++i]);
        else if (!strcmp(a, "--frac") && more)
            frac = parse_double(argv[++i]);
        else if (a[0] == '-' && a[1])
            usage();
        else if (!out)
            out = a;
        else
            usage();
    }
    if (!out || (!base && !bytes) || (base && bytes) || frac > 1)
        usage();
    if (base)
        gen_delta(out, base, scale, frac, seed);
    else
        gen_model(out, bytes, seed);
    return 0;
}
