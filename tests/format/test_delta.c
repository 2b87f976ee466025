/*
 * format/delta.c: the lossless delta transforms XOR, ORD16 and ORD32
 * (SPEC.md 2.5). make/apply round-trip bit for bit on every kind of bit
 * pattern (NaNs, infinities, signed zeros, denormals, sign flips) and at
 * every length up to 300 bytes, so the SSE2 bodies and their scalar tails
 * both run; the SSE2 paths equal the reference loops in both directions;
 * in-place use works; ulp-sized changes give the small zigzag integers the
 * SPEC promises; the fused plane merge equals merge + apply; bad lengths
 * and unknown transforms are TVS_ECORRUPT; and golden vectors pin the
 * on-disk bytes.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "format/codec.h"
#include "format/delta.h"
#include "tests/support/support.h"

static void restore_simd(void) { tvs__delta_simd = 1; }

static void fini(void)
{
    restore_simd();
    tt_leak_check();
}

TestSuite(delta, .fini = fini);

static const int transforms[] = { TVS_DELTA_XOR, TVS_DELTA_ORD16, TVS_DELTA_ORD32 };

/* Interesting 16-bit (BF16/F16 patterns) and 32-bit (F32) values. */
static const uint16_t special16[] = {
    0x0000, 0x8000,             /* +0, -0 */
    0x0001, 0x8001, 0x007f,     /* bf16 denormals */
    0x03ff, 0x83ff,             /* f16 denormals */
    0x7f80, 0xff80,             /* bf16 infinities */
    0x7c00, 0xfc00,             /* f16 infinities */
    0x7fc0, 0xffc0, 0x7f81, 0xffff, 0x7fff, 0x7e00,   /* NaNs */
    0x3f80, 0xbf80, 0x3f7f, 0xbf7f, 0x7f7f, 0xff7f,   /* ±1, neighbours, ±max */
    0x0080, 0x8080,             /* smallest normals */
};
static const uint32_t special32[] = {
    0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x007fffffu, 0x807fffffu,
    0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xffffffffu,
    0x7fffffffu, 0x3f800000u, 0xbf800000u, 0x3f7fffffu, 0xbf7fffffu, 0x7f7fffffu,
    0xff7fffffu, 0x00800000u, 0x80800000u,
};
#define N16 (sizeof special16 / sizeof special16[0])
#define N32 (sizeof special32 / sizeof special32[0])

/*
 * Fill ft and base with @p n bytes of patterns: mostly specials and random
 * words, with changes of a few ulps and sign flips between the two.
 */
static void fill_pair(uint8_t *ft, uint8_t *base, size_t n, uint64_t seed)
{
    uint64_t st = seed;
    tt_fill_random(base, n, seed * 7 + 1);
    tt_fill_random(ft, n, seed * 7 + 2);
    size_t i = 0;
    while (i + 4 <= n) {
        uint32_t r = tt_lcg(&st), a, b;
        switch (r % 8) {
        case 0:   /* two 16-bit specials against each other */
            tvs_store_le32(base + i, (uint32_t)special16[r / 8 % N16] |
                                         (uint32_t)special16[r / 64 % N16] << 16);
            tvs_store_le32(ft + i, (uint32_t)special16[r / 512 % N16] |
                                       (uint32_t)special16[r / 4096 % N16] << 16);
            break;
        case 1:   /* 32-bit specials */
            tvs_store_le32(base + i, special32[r / 8 % N32]);
            tvs_store_le32(ft + i, special32[r / 256 % N32]);
            break;
        case 2:   /* small change of the pattern, either way */
            a = tt_lcg(&st);
            b = a + (r >> 8 & 15) - 8;
            tvs_store_le32(base + i, a);
            tvs_store_le32(ft + i, b);
            break;
        case 3:   /* sign flips */
            a = tt_lcg(&st);
            tvs_store_le32(base + i, a);
            tvs_store_le32(ft + i, a ^ 0x80008000u);
            break;
        case 4:   /* unchanged */
            a = tt_lcg(&st);
            tvs_store_le32(base + i, a);
            tvs_store_le32(ft + i, a);
            break;
        default:   /* random (already there) */
            break;
        }
        i += 4;
    }
}

static char *hexdump(const uint8_t *p, size_t n)
{
    char *s = malloc(3 * n + 1);
    for (size_t i = 0; i < n; i++)
        sprintf(s + 3 * i, "%02x ", p[i]);
    s[3 * n] = 0;
    return s;
}

/* ---- round trips */

static void round_trip_all_lengths(int simd)
{
    tvs__delta_simd = simd;
    uint8_t ft[304], base[304], d[304], back[304];
    for (size_t ti = 0; ti < 3; ti++) {
        int t = transforms[ti];
        unsigned w = tvs_delta_width(t);
        for (size_t n = 0; n <= 300; n++) {
            if (n % w)
                continue;
            for (uint64_t seed = 1; seed <= 3; seed++) {
                fill_pair(ft, base, sizeof ft, seed * 1000 + n);
                memset(d, 0xa5, sizeof d);
                memset(back, 0x5a, sizeof back);
                tt_ok(tvs_delta_make(d, ft, base, n, t));
                cr_assert_eq(d[n], 0xa5, "make wrote past %zu bytes (t=%d)", n, t);
                tt_ok(tvs_delta_apply(back, d, base, n, t));
                cr_assert_eq(back[n], 0x5a, "apply wrote past %zu bytes (t=%d)", n, t);
                if (memcmp(back, ft, n)) {
                    size_t at = 0;
                    while (back[at] == ft[at])
                        at++;
                    cr_assert_fail("transform %d simd=%d n=%zu seed=%llu: byte %zu is %02x, "
                                   "expected %02x (base %02x)", t, simd, n,
                                   (unsigned long long)seed, at, back[at], ft[at], base[at]);
                }
            }
        }
    }
}

Test(delta, every_transform_round_trips_every_pattern_and_length_with_sse2)
{
    round_trip_all_lengths(1);
}

Test(delta, every_transform_round_trips_every_pattern_and_length_in_the_reference_loops)
{
    round_trip_all_lengths(0);
}

/* Exhaustive over one 16-bit operand: every ft against a few bases. */
Test(delta, ord16_round_trips_all_65536_patterns)
{
    static uint8_t ft[2 * 65536], base[2 * 65536], d[2 * 65536], back[2 * 65536];
    const uint16_t bases[] = { 0x0000, 0x8000, 0x3f80, 0xbf80, 0x7fc0, 0xffff, 0x0001 };
    for (int simd = 0; simd <= 1; simd++) {
        tvs__delta_simd = simd;
        for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++) {
            for (uint32_t v = 0; v < 65536; v++) {
                ft[2 * v] = (uint8_t)v;
                ft[2 * v + 1] = (uint8_t)(v >> 8);
                base[2 * v] = (uint8_t)bases[b];
                base[2 * v + 1] = (uint8_t)(bases[b] >> 8);
            }
            tt_ok(tvs_delta_make(d, ft, base, sizeof ft, TVS_DELTA_ORD16));
            tt_ok(tvs_delta_apply(back, d, base, sizeof ft, TVS_DELTA_ORD16));
            cr_assert(memcmp(back, ft, sizeof ft) == 0, "base %04x simd=%d", bases[b], simd);
            /* zigzag is a bijection: every stored value occurs exactly once */
            static uint8_t seen[65536];
            memset(seen, 0, sizeof seen);
            for (uint32_t v = 0; v < 65536; v++) {
                uint16_t z = (uint16_t)(d[2 * v] | d[2 * v + 1] << 8);
                cr_assert_eq(seen[z], 0, "stored value %04x occurs twice (base %04x)", z,
                             bases[b]);
                seen[z] = 1;
            }
        }
    }
}

/* ---- SSE2 against the reference loops */

Test(delta, sse2_and_reference_loops_give_identical_bytes_both_ways)
{
    uint8_t ft[304], base[304], stored[304], a[304], b[304];
    for (size_t ti = 0; ti < 3; ti++) {
        int t = transforms[ti];
        unsigned w = tvs_delta_width(t);
        for (size_t n = 0; n <= 300; n += w) {
            fill_pair(ft, base, sizeof ft, 77 + n);
            tt_fill_random(stored, sizeof stored, 99 + n);   /* arbitrary stored bytes */
            tvs__delta_simd = 1;
            tt_ok(tvs_delta_make(a, ft, base, n, t));
            tvs__delta_simd = 0;
            tt_ok(tvs_delta_make(b, ft, base, n, t));
            cr_assert(memcmp(a, b, n) == 0, "make differs: transform %d, %zu bytes", t, n);
            tvs__delta_simd = 1;
            tt_ok(tvs_delta_apply(a, stored, base, n, t));
            tvs__delta_simd = 0;
            tt_ok(tvs_delta_apply(b, stored, base, n, t));
            cr_assert(memcmp(a, b, n) == 0, "apply differs: transform %d, %zu bytes", t, n);
        }
    }
}

/* Misaligned buffers: the SSE2 loads are unaligned loads. */
Test(delta, misaligned_buffers_round_trip)
{
    uint8_t ft[520], base[520], d[520], back[520];
    for (int simd = 0; simd <= 1; simd++) {
        tvs__delta_simd = simd;
        for (size_t off = 1; off < 4; off++) {
            fill_pair(ft, base, sizeof ft, 5 + off);
            for (size_t ti = 1; ti < 3; ti++) {
                int t = transforms[ti];
                size_t n = 256;
                tt_ok(tvs_delta_make(d + off, ft + off, base + 2 * off, n, t));
                tt_ok(tvs_delta_apply(back + 3 * off, d + off, base + 2 * off, n, t));
                cr_assert(memcmp(back + 3 * off, ft + off, n) == 0, "t=%d off=%zu simd=%d", t,
                          off, simd);
            }
        }
    }
}

/* ---- in place */

Test(delta, make_and_apply_work_in_place_on_either_input)
{
    uint8_t ft[260], base[260], want[260], buf[260], back[260];
    for (int simd = 0; simd <= 1; simd++) {
        tvs__delta_simd = simd;
        for (size_t ti = 0; ti < 3; ti++) {
            int t = transforms[ti];
            size_t n = 260;
            fill_pair(ft, base, n, 31 + ti);
            tt_ok(tvs_delta_make(want, ft, base, n, t));

            memcpy(buf, ft, n);   /* dst == ft */
            tt_ok(tvs_delta_make(buf, buf, base, n, t));
            cr_assert(memcmp(buf, want, n) == 0, "make in place over ft, t=%d simd=%d", t, simd);
            memcpy(buf, base, n);   /* dst == base */
            tt_ok(tvs_delta_make(buf, ft, buf, n, t));
            cr_assert(memcmp(buf, want, n) == 0, "make in place over base, t=%d simd=%d", t,
                      simd);

            memcpy(buf, want, n);   /* dst == stored */
            tt_ok(tvs_delta_apply(buf, buf, base, n, t));
            cr_assert(memcmp(buf, ft, n) == 0, "apply in place over stored, t=%d simd=%d", t,
                      simd);
            memcpy(back, base, n);   /* dst == base (what the chain decoder does) */
            tt_ok(tvs_delta_apply(back, want, back, n, t));
            cr_assert(memcmp(back, ft, n) == 0, "apply in place over base, t=%d simd=%d", t,
                      simd);
        }
    }
}

/* ---- what the stored bytes look like */

Test(delta, unchanged_elements_give_zero_bytes)
{
    uint8_t ft[256], base[256], d[256];
    for (int simd = 0; simd <= 1; simd++) {
        tvs__delta_simd = simd;
        for (size_t ti = 0; ti < 3; ti++) {
            int t = transforms[ti];
            unsigned w = tvs_delta_width(t);
            fill_pair(ft, base, sizeof ft, 3);
            memcpy(ft, base, sizeof ft);
            tt_ok(tvs_delta_make(d, ft, base, sizeof d, t));
            for (size_t i = 0; i < sizeof d; i++)
                cr_assert_eq(d[i], 0, "identical input, t=%d: byte %zu is %02x", t, i, d[i]);
            /* change every third element: the others stay zero */
            for (size_t e = 0; e < sizeof ft / w; e += 3)
                ft[e * w] ^= 1;
            tt_ok(tvs_delta_make(d, ft, base, sizeof d, t));
            for (size_t e = 0; e < sizeof ft / w; e++) {
                int any = 0;
                for (unsigned k = 0; k < w; k++)
                    any |= d[e * w + k];
                cr_assert_eq(any != 0, e % 3 == 0, "t=%d element %zu: zero iff unchanged", t, e);
            }
        }
    }
}

static uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* The next float up (towards +inf) of a finite, non-zero sign-magnitude pattern. */
static uint16_t up16(uint16_t v) { return (v & 0x8000) ? (uint16_t)(v - 1) : (uint16_t)(v + 1); }
static uint16_t down16(uint16_t v) { return (v & 0x8000) ? (uint16_t)(v + 1) : (uint16_t)(v - 1); }

Test(delta, ord16_stores_an_ulp_up_as_2_and_an_ulp_down_as_1)
{
    const uint16_t vals[] = { 0x3f80, 0xbf80, 0x0101, 0x8101, 0x4000, 0xc000, 0x7f7e, 0xff7e,
                              0x3c00, 0xbc00, 0x0005, 0x8005 };
    const size_t nv = sizeof vals / sizeof vals[0];
    uint8_t ft[64], base[64], d[64];
    for (int simd = 0; simd <= 1; simd++) {
        tvs__delta_simd = simd;
        for (int dir = 0; dir < 3; dir++) {   /* up 1, down 1, up 3 */
            for (size_t i = 0; i < 32; i++) {
                uint16_t b = vals[i % nv], f = dir == 0 ? up16(b) : dir == 1 ? down16(b)
                                                 : up16(up16(up16(b)));
                base[2 * i] = (uint8_t)b;
                base[2 * i + 1] = (uint8_t)(b >> 8);
                ft[2 * i] = (uint8_t)f;
                ft[2 * i + 1] = (uint8_t)(f >> 8);
            }
            tt_ok(tvs_delta_make(d, ft, base, sizeof d, TVS_DELTA_ORD16));
            uint16_t want = dir == 0 ? 2 : dir == 1 ? 1 : 6;
            for (size_t i = 0; i < 32; i++)
                cr_assert_eq(ld16(d + 2 * i), want, "base %04x, change %d: stored %04x, want "
                             "%04x (simd=%d)", vals[i % nv], dir, ld16(d + 2 * i), want, simd);
        }
    }
}

Test(delta, ord16_orders_minus_zero_one_ulp_below_plus_zero)
{
    uint8_t ft[2] = { 0x00, 0x80 }, base[2] = { 0x00, 0x00 }, d[2];   /* -0 against +0 */
    tt_ok(tvs_delta_make(d, ft, base, 2, TVS_DELTA_ORD16));
    cr_assert_eq(ld16(d), 1);
    tt_ok(tvs_delta_make(d, base, ft, 2, TVS_DELTA_ORD16));   /* +0 against -0 */
    cr_assert_eq(ld16(d), 2);
}

Test(delta, ord32_stores_an_ulp_up_as_2_and_an_ulp_down_as_1)
{
    const uint32_t vals[] = { 0x3f800000u, 0xbf800000u, 0x00000005u, 0x80000005u,
                              0x7f7ffff0u, 0xff7ffff0u, 0x42280000u, 0xc2280000u };
    uint8_t ft[32 * 4], base[32 * 4], d[32 * 4];
    for (int simd = 0; simd <= 1; simd++) {
        tvs__delta_simd = simd;
        for (int dir = 0; dir < 2; dir++) {
            for (size_t i = 0; i < 32; i++) {
                uint32_t b = vals[i % 8];
                int neg = (b >> 31) != 0, up = dir == 0;
                uint32_t f = (up != neg) ? b + 1 : b - 1;
                tvs_store_le32(base + 4 * i, b);
                tvs_store_le32(ft + 4 * i, f);
            }
            tt_ok(tvs_delta_make(d, ft, base, sizeof d, TVS_DELTA_ORD32));
            for (size_t i = 0; i < 32; i++)
                cr_assert_eq(tvs_load_le32(d + 4 * i), dir == 0 ? 2u : 1u,
                             "base %08x dir %d simd %d: stored %08x", vals[i % 8], dir, simd,
                             tvs_load_le32(d + 4 * i));
        }
    }
}

Test(delta, xor_stores_the_bytewise_xor)
{
    uint8_t ft[37], base[37], d[37];
    tt_fill_random(ft, sizeof ft, 1);
    tt_fill_random(base, sizeof base, 2);
    tt_ok(tvs_delta_make(d, ft, base, sizeof d, TVS_DELTA_XOR));
    for (size_t i = 0; i < sizeof d; i++)
        cr_assert_eq(d[i], ft[i] ^ base[i]);
}

/* ---- planes fused with apply */

static void split(uint8_t *planes, const uint8_t *src, size_t ne, unsigned w)
{
    for (size_t i = 0; i < ne; i++)
        for (unsigned k = 0; k < w; k++)
            planes[k * ne + i] = src[i * w + k];
}

Test(delta, apply_planes_equals_merge_then_apply)
{
    static uint8_t ft[4 * 1100], base[4 * 1100], stored[4 * 1100], planes[4 * 1100];
    static uint8_t want[4 * 1100 + 16], got[4 * 1100 + 16];
    const size_t counts[] = { 0, 1, 7, 15, 16, 17, 31, 32, 33, 100, 255, 256, 257, 511, 512,
                              513, 1024, 1100 };
    for (int simd = 0; simd <= 1; simd++) {
        tvs__delta_simd = simd;
        for (size_t ti = 1; ti < 3; ti++) {
            int t = transforms[ti];
            unsigned w = tvs_delta_width(t);
            for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
                size_t ne = counts[c], n = ne * w;
                fill_pair(ft, base, sizeof ft, 500 + ne);
                tt_ok(tvs_delta_make(stored, ft, base, n, t));
                split(planes, stored, ne, w);
                const uint8_t *pp[4];
                for (unsigned k = 0; k < w; k++)
                    pp[k] = planes + k * ne;
                tvs_planes_merge_ref(want, pp, ne, w, 0);
                cr_assert(memcmp(want, stored, n) == 0, "the test's split is wrong");
                tt_ok(tvs_delta_apply(want, want, base, n, t));
                memset(got, 0xcc, sizeof got);
                tt_ok(tvs_delta_apply_planes(got, pp, w, base, n, t));
                cr_assert(memcmp(got, want, n) == 0, "t=%d, %zu elements, simd=%d", t, ne, simd);
                cr_assert(memcmp(got, ft, n) == 0, "t=%d, %zu elements: not ft", t, ne);
                cr_assert_eq(got[n], 0xcc, "apply_planes wrote past the end (t=%d, %zu elements)", t, ne);
                /* in place over the base, as the chain decoder calls it */
                memcpy(got, base, n);
                tt_ok(tvs_delta_apply_planes(got, pp, w, got, n, t));
                cr_assert(memcmp(got, ft, n) == 0, "in place: t=%d, %zu elements, simd=%d", t,
                          ne, simd);
            }
        }
    }
}

/* ---- errors */

Test(delta, lengths_that_are_not_whole_elements_are_corrupt)
{
    uint8_t a[16] = { 0 }, b[16] = { 0 }, d[16];
    const uint8_t *pp[4] = { a, a, a, a };
    for (size_t n = 1; n < 16; n++) {
        int r16 = n % 2 ? TVS_ECORRUPT : 0, r32 = n % 4 ? TVS_ECORRUPT : 0;
        cr_assert_eq(tvs_delta_make(d, a, b, n, TVS_DELTA_ORD16), r16, "make ORD16 n=%zu", n);
        cr_assert_eq(tvs_delta_apply(d, a, b, n, TVS_DELTA_ORD16), r16, "apply ORD16 n=%zu", n);
        cr_assert_eq(tvs_delta_make(d, a, b, n, TVS_DELTA_ORD32), r32, "make ORD32 n=%zu", n);
        cr_assert_eq(tvs_delta_apply(d, a, b, n, TVS_DELTA_ORD32), r32, "apply ORD32 n=%zu", n);
        cr_assert_eq(tvs_delta_apply_planes(d, pp, 2, b, n, TVS_DELTA_ORD16), r16,
                     "planes ORD16 n=%zu", n);
        cr_assert_eq(tvs_delta_apply_planes(d, pp, 4, b, n, TVS_DELTA_ORD32), r32,
                     "planes ORD32 n=%zu", n);
        tt_ok(tvs_delta_make(d, a, b, n, TVS_DELTA_XOR));
    }
}

Test(delta, unknown_transforms_are_corrupt)
{
    uint8_t a[16] = { 0 }, b[16] = { 0 }, d[16];
    const uint8_t *pp[4] = { a, a, a, a };
    const int bad[] = { 0, 4, 5, 255, -1 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tt_fails(tvs_delta_make(d, a, b, 16, bad[i]), TVS_ECORRUPT);
        tt_msg_has("transform");
        tt_fails(tvs_delta_apply(d, a, b, 16, bad[i]), TVS_ECORRUPT);
        tt_fails(tvs_delta_apply_planes(d, pp, 2, b, 16, bad[i]), TVS_ECORRUPT);
        cr_assert_eq(tvs_delta_width(bad[i]), 0u);
    }
}

Test(delta, planes_of_the_wrong_width_are_corrupt)
{
    uint8_t a[16] = { 0 }, b[16] = { 0 }, d[16];
    const uint8_t *pp[8] = { a, a, a, a, a, a, a, a };
    tt_fails(tvs_delta_apply_planes(d, pp, 4, b, 16, TVS_DELTA_ORD16), TVS_ECORRUPT);
    tt_fails(tvs_delta_apply_planes(d, pp, 2, b, 16, TVS_DELTA_ORD32), TVS_ECORRUPT);
    tt_fails(tvs_delta_apply_planes(d, pp, 8, b, 16, TVS_DELTA_ORD32), TVS_ECORRUPT);
    tt_fails(tvs_delta_apply_planes(d, pp, 1, b, 16, TVS_DELTA_XOR), TVS_ECORRUPT);
}

Test(delta, transform_and_width_for_each_dtype)
{
    cr_assert_eq(tvs_delta_transform_for(TVS_DTYPE_BF16), TVS_DELTA_ORD16);
    cr_assert_eq(tvs_delta_transform_for(TVS_DTYPE_F16), TVS_DELTA_ORD16);
    cr_assert_eq(tvs_delta_transform_for(TVS_DTYPE_F32), TVS_DELTA_ORD32);
    cr_assert_eq(tvs_delta_transform_for(TVS_DTYPE_I32), TVS_DELTA_XOR);
    cr_assert_eq(tvs_delta_transform_for(TVS_DTYPE_U8), TVS_DELTA_XOR);
    cr_assert_eq(tvs_delta_transform_for(TVS_DTYPE_F64), TVS_DELTA_XOR);
    cr_assert_eq(tvs_delta_transform_for(TVS_DTYPE_F8_E4M3), TVS_DELTA_XOR);
    cr_assert_eq(tvs_delta_width(TVS_DELTA_XOR), 1u);
    cr_assert_eq(tvs_delta_width(TVS_DELTA_ORD16), 2u);
    cr_assert_eq(tvs_delta_width(TVS_DELTA_ORD32), 4u);
    /* the ids are on disk (SPEC.md 2.5) */
    cr_assert_eq(TVS_DELTA_XOR, 1);
    cr_assert_eq(TVS_DELTA_ORD16, 2);
    cr_assert_eq(TVS_DELTA_ORD32, 3);
}

/* ---- golden vectors: these bytes are on disk and must never change */

Test(delta, ord16_golden_vector)
{
    /* (ft, base) pairs; expected t(ft, base) worked out by hand from SPEC.md 2.5 */
    static const uint16_t ftv[] = { 0x3f80, 0x3f81, 0x3f7f, 0x8000, 0x0000, 0xbf80, 0x7f80,
                                    0x7fc0, 0x0001, 0x0000, 0x1234, 0xbf7f };
    static const uint16_t bv[] = { 0x3f80, 0x3f80, 0x3f80, 0x0000, 0x8000, 0x3f80, 0x7f7f,
                                   0x7f80, 0x0000, 0xffff, 0xabcd, 0xbf80 };
    static const uint8_t want[] = {
        0x00, 0x00,   /* unchanged */
        0x02, 0x00,   /* +1 ulp */
        0x01, 0x00,   /* -1 ulp */
        0x01, 0x00,   /* -0 from +0: one step down */
        0x02, 0x00,   /* +0 from -0: one step up */
        0x01, 0xfe,   /* -1.0 from 1.0: d = -0x7f01, zigzag 0xfe01 */
        0x02, 0x00,   /* +inf from max finite */
        0x80, 0x00,   /* quiet NaN from +inf: d = 0x40 */
        0x02, 0x00,   /* smallest denormal from +0 */
        0xff, 0xff,   /* +0 from the all-ones NaN: d = -32768 */
        0x04, 0x7c,   /* 0x9234 - 0x5432 = 0x3e02 -> 0x7c04 */
        0x02, 0x00,   /* -1.0 towards zero by one ulp: up */
    };
    enum { N = sizeof ftv / sizeof ftv[0] };
    /* repeated so that the SSE2 body (16 bytes at a time) and the tail both see it */
    uint8_t ft[4 * 2 * N], base[4 * 2 * N], d[4 * 2 * N], back[4 * 2 * N];
    for (size_t r = 0; r < 4; r++)
        for (size_t i = 0; i < N; i++) {
            size_t k = r * N + i;
            ft[2 * k] = (uint8_t)ftv[i];
            ft[2 * k + 1] = (uint8_t)(ftv[i] >> 8);
            base[2 * k] = (uint8_t)bv[i];
            base[2 * k + 1] = (uint8_t)(bv[i] >> 8);
        }
    for (int simd = 0; simd <= 1; simd++) {
        tvs__delta_simd = simd;
        tt_ok(tvs_delta_make(d, ft, base, sizeof d, TVS_DELTA_ORD16));
        for (size_t r = 0; r < 4; r++)
            if (memcmp(d + r * sizeof want, want, sizeof want)) {
                char *got = hexdump(d + r * sizeof want, sizeof want);
                cr_assert_fail("simd=%d copy %zu: got %s", simd, r, got);
            }
        tt_ok(tvs_delta_apply(back, d, base, sizeof d, TVS_DELTA_ORD16));
        cr_assert(memcmp(back, ft, sizeof ft) == 0);
    }
}

Test(delta, ord32_golden_vector)
{
    static const uint32_t ftv[] = { 0x3f800001u, 0x3f7fffffu, 0xbf800000u, 0x80000000u,
                                    0x7fc00000u };
    static const uint32_t bv[] = { 0x3f800000u, 0x3f800000u, 0x3f800000u, 0x00000000u,
                                   0x7f800000u };
    static const uint32_t want[] = { 2u, 1u, 0xfe000001u, 1u, 0x00800000u };
    uint8_t ft[20 * 4], base[20 * 4], d[20 * 4];
    for (size_t i = 0; i < 20; i++) {
        tvs_store_le32(ft + 4 * i, ftv[i % 5]);
        tvs_store_le32(base + 4 * i, bv[i % 5]);
    }
    for (int simd = 0; simd <= 1; simd++) {
        tvs__delta_simd = simd;
        tt_ok(tvs_delta_make(d, ft, base, sizeof d, TVS_DELTA_ORD32));
        for (size_t i = 0; i < 20; i++)
            cr_assert_eq(tvs_load_le32(d + 4 * i), want[i % 5],
                         "element %zu simd=%d: %08x, want %08x", i, simd,
                         tvs_load_le32(d + 4 * i), want[i % 5]);
    }
}
