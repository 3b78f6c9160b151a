/* Zero-page check and the XBZRLE-style page delta.
 *
 * Delta format (docs/codecs.md): groups of
 *     ULEB128 zero_run, ULEB128 literal_run, literal_run bytes of the new page
 * covering the page from its start; bytes after the last group are
 * unchanged. The XOR of old and new only decides where runs start and end;
 * literals carry the new bytes, so decoding is a plain copy. An unchanged
 * page is the single group (page_len, 0).
 *
 * Speed comes from never looking at single bytes: a 64-bit mask per 64 bytes
 * says which bytes changed (SSE2 compares, or XOR and bit tricks elsewhere),
 * short gaps are filled in the mask with shifts, and run boundaries are the
 * set bits of mask ^ (mask << 1), found with a count of trailing zeros. */
#include "codecs/codecs.h"

#include <stdlib.h>
#include <string.h>

#define HIGHS 0x8080808080808080ull

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

#if defined(__SSE2__) && !defined(MS_DELTA_PORTABLE)
#include <emmintrin.h>
#define HAVE_SSE2 1
#endif

#ifdef HAVE_SSE2
static inline __m128i load128(const uint8_t *p) { return _mm_loadu_si128((const __m128i *)(const void *)p); }
#endif

#if defined(__x86_64__) && defined(HAVE_SSE2) && !defined(MS_DELTA_PORTABLE)
#include <immintrin.h>
#define HAVE_AVX2_DISPATCH 1

/* Two cache lines per test with 32-byte loads: streams from memory a little
 * faster than SSE2 on CPUs that have it. */
__attribute__((target("avx2"))) static bool page_is_zero_avx2(const uint8_t *p, size_t len)
{
    size_t i = 0;
    for (; i + 128 <= len; i += 128) {
        __m256i a = _mm256_or_si256(_mm256_loadu_si256((const __m256i *)(const void *)(p + i)),
                                    _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 32)));
        __m256i b = _mm256_or_si256(_mm256_loadu_si256((const __m256i *)(const void *)(p + i + 64)),
                                    _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 96)));
        a = _mm256_or_si256(a, b);
        if (!_mm256_testz_si256(a, a))
            return false;
    }
    for (; i < len; i++)
        if (p[i])
            return false;
    return true;
}

/* MIGSTREAM_NO_AVX2 (any value) forces the SSE2 code, so the tests can
 * cover both on a machine that has AVX2. */
static bool cpu_has_avx2(void)
{
    static int known = -1; /* a benign race: every thread computes the same */
    int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") && !getenv("MIGSTREAM_NO_AVX2") ? 1 : 0;
        __atomic_store_n(&known, v, __ATOMIC_RELAXED);
    }
    return v;
}
#endif

bool ms_page_is_zero(const void *page, size_t len)
{
    const uint8_t *p = page;
    size_t i = 0;
#ifdef HAVE_AVX2_DISPATCH
    if (cpu_has_avx2())
        return page_is_zero_avx2(p, len);
#endif
    /* 128 bytes per test: eight independent loads keep enough cache-line
     * fetches in flight to stream from memory, and the early exit costs one
     * branch per two lines. */
#ifdef HAVE_SSE2
    for (; i + 128 <= len; i += 128) {
        __m128i a = _mm_or_si128(_mm_or_si128(load128(p + i), load128(p + i + 16)),
                                 _mm_or_si128(load128(p + i + 32), load128(p + i + 48)));
        __m128i b = _mm_or_si128(_mm_or_si128(load128(p + i + 64), load128(p + i + 80)),
                                 _mm_or_si128(load128(p + i + 96), load128(p + i + 112)));
        a = _mm_or_si128(a, b);
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(a, _mm_setzero_si128())) != 0xffff)
            return false;
    }
#endif
    for (; i + 64 <= len; i += 64) {
        uint64_t acc = load64(p + i) | load64(p + i + 8) | load64(p + i + 16) | load64(p + i + 24) |
                       load64(p + i + 32) | load64(p + i + 40) | load64(p + i + 48) |
                       load64(p + i + 56);
        if (acc)
            return false;
    }
    for (; i < len; i++)
        if (p[i])
            return false;
    return true;
}

#ifndef HAVE_SSE2
/* 0x80 in each byte of x that is zero, nothing elsewhere (exact: no borrow
 * crosses bytes). */
static inline uint64_t zero_bytes(uint64_t x)
{
    uint64_t y = ((x & ~HIGHS) + ~HIGHS) | x;
    return ~(y | ~HIGHS);
}
#endif

/* Bit i set when byte i of the 64-byte blocks differs. */
static inline uint64_t diff_mask64(const uint8_t *a, const uint8_t *b)
{
    uint64_t m = 0;
#ifdef HAVE_SSE2
    for (int k = 0; k < 4; k++) {
        unsigned eq = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(load128(a + 16 * k), load128(b + 16 * k)));
        m |= (uint64_t)(~eq & 0xffffu) << (16 * k);
    }
#else
    for (int k = 0; k < 8; k++) {
        uint64_t nz = ~zero_bytes(load64(a + 8 * k) ^ load64(b + 8 * k)) & HIGHS;
        /* Gather the eight byte flags into eight adjacent bits. */
        m |= (((nz >> 7) * 0x0102040810204080ull) >> 56) << (8 * k);
    }
#endif
    return m;
}

#ifdef HAVE_AVX2_DISPATCH
/* The same with two 32-byte compares: half the instructions. */
__attribute__((target("avx2"))) static inline uint64_t diff_mask64_avx2(const uint8_t *a, const uint8_t *b)
{
    __m256i a0 = _mm256_loadu_si256((const __m256i *)(const void *)a);
    __m256i a1 = _mm256_loadu_si256((const __m256i *)(const void *)(a + 32));
    __m256i b0 = _mm256_loadu_si256((const __m256i *)(const void *)b);
    __m256i b1 = _mm256_loadu_si256((const __m256i *)(const void *)(b + 32));
    uint32_t e0 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(a0, b0));
    uint32_t e1 = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(a1, b1));
    return ~((uint64_t)e1 << 32 | e0);
}
#else
#define diff_mask64_avx2 diff_mask64
#endif

/* Mask of word w (64 bytes from w*64), short last word included. */
static inline __attribute__((always_inline)) uint64_t word_mask(const uint8_t *a, const uint8_t *b,
                                                                size_t w, size_t len, bool avx2)
{
    size_t at = w * 64;
    if (at + 64 <= len)
        return avx2 ? diff_mask64_avx2(a + at, b + at) : diff_mask64(a + at, b + at);
    uint64_t m = 0;
    for (size_t i = at; i < len; i++)
        m |= (uint64_t)(a[i] != b[i]) << (i - at);
    return m;
}

/* A gap of one or two equal bytes between changed bytes costs less sent as
 * literals than closing the literal run (at least two length bytes). So
 * fill such gaps in the mask, using the neighbouring words for gaps that
 * straddle a word boundary. */
static inline uint64_t fill_gaps(uint64_t prev, uint64_t cur, uint64_t next)
{
    uint64_t l1 = cur << 1 | prev >> 63, l2 = cur << 2 | prev >> 62;
    uint64_t r1 = cur >> 1 | next << 63, r2 = cur >> 2 | next << 62;
    return cur | (l1 & r1) | (l1 & r2) | (l2 & r1);
}

/* Append the group for literal run [s, e) after the previous run ended at
 * `pos`; returns the new output length, or 0 if it would reach max_out. */
static inline size_t emit(uint8_t *out, size_t o, size_t max_out, const uint8_t *cur, size_t len,
                          size_t pos, size_t s, size_t e)
{
    size_t zrun = s - pos, lrun = e - s;
    /* Most groups: one-byte lengths, a short literal, room to spare. One
     * 16-byte copy instead of a memcpy call; the bytes past the run stay
     * inside the output bound and are overwritten next. */
    if (__builtin_expect(zrun < 0x80 && lrun <= 16 && o + 18 < max_out && s + 16 <= len, 1)) {
        out[o] = (uint8_t)zrun;
        out[o + 1] = (uint8_t)lrun;
        memcpy(out + o + 2, cur + s, 16);
        return o + 2 + lrun;
    }
    if (o + ms_uleb_size(zrun) + ms_uleb_size(lrun) + lrun >= max_out)
        return 0;
    o += ms_uleb_put(out + o, zrun);
    o += ms_uleb_put(out + o, lrun);
    memcpy(out + o, cur + s, lrun);
    return o + lrun;
}

/* The encoder, compiled once per mask flavour (see ms_delta_encode). */
static inline __attribute__((always_inline)) size_t delta_encode(const uint8_t *old, const uint8_t *cur,
                                                                 size_t len, uint8_t *out,
                                                                 size_t max_out, bool avx2)
{
    size_t nw = (len + 63) / 64, o = 0, pos = 0, lit = 0;
    bool in_lit = false;
    uint64_t prev = 0, m = nw ? word_mask(old, cur, 0, len, avx2) : 0;
    uint64_t next = nw > 1 ? word_mask(old, cur, 1, len, avx2) : 0, carry = 0;
    for (size_t w = 0; w < nw; w++) {
        uint64_t f = fill_gaps(prev, m, next);
        /* Bit i of t marks a run boundary: byte i differs from byte i-1.
         * Boundaries alternate literal start, literal end. */
        uint64_t t = f ^ (f << 1 | carry);
        size_t base = w * 64;
        if (in_lit && t) {
            size_t e = base + (size_t)__builtin_ctzll(t);
            t &= t - 1;
            if (!(o = emit(out, o, max_out, cur, len, pos, lit, e)))
                return 0;
            pos = e;
            in_lit = false;
        }
        while (t) {
            size_t s = base + (size_t)__builtin_ctzll(t);
            t &= t - 1;
            if (!t) {
                lit = s;
                in_lit = true;
                break;
            }
            size_t e = base + (size_t)__builtin_ctzll(t);
            t &= t - 1;
            if (!(o = emit(out, o, max_out, cur, len, pos, s, e)))
                return 0;
            pos = e;
        }
        carry = f >> 63;
        prev = m;
        m = next;
        next = w + 2 < nw ? word_mask(old, cur, w + 2, len, avx2) : 0;
    }
    if (in_lit && !(o = emit(out, o, max_out, cur, len, pos, lit, len)))
        return 0;
    if (o == 0) {
        /* Unchanged page: one zero run over all of it, no literal. */
        if (ms_uleb_size(len) + 1 >= max_out)
            return 0;
        o = ms_uleb_put(out, len);
        out[o++] = 0;
    }
    return o;
}

#ifdef HAVE_AVX2_DISPATCH
__attribute__((target("avx2"))) static size_t delta_encode_avx2(const uint8_t *old, const uint8_t *cur,
                                                                size_t len, uint8_t *out, size_t max_out)
{
    return delta_encode(old, cur, len, out, max_out, true);
}
#endif

size_t ms_delta_encode(const uint8_t *old, const uint8_t *cur, size_t len, uint8_t *out,
                       size_t max_out)
{
#ifdef HAVE_AVX2_DISPATCH
    if (cpu_has_avx2())
        return delta_encode_avx2(old, cur, len, out, max_out);
#endif
    return delta_encode(old, cur, len, out, max_out, false);
}

int ms_delta_decode(const uint8_t *in, size_t in_len, uint8_t *page, size_t len)
{
    size_t i = 0, pos = 0;
    if (!in_len)
        return ms_error(MS_ERR_CORRUPT, "delta: empty (an unchanged page is one zero run)");
    while (i < in_len) {
        uint64_t zrun, lrun;
        size_t n = ms_uleb_get(in + i, in_len - i, &zrun);
        if (!n)
            return ms_error(MS_ERR_CORRUPT, "delta: bad or truncated zero-run length at offset %zu", i);
        i += n;
        if (zrun > len - pos)
            return ms_error(MS_ERR_CORRUPT,
                            "delta: zero run of %llu at page offset %zu crosses the page end (%zu)",
                            (unsigned long long)zrun, pos, len);
        pos += zrun;
        n = ms_uleb_get(in + i, in_len - i, &lrun);
        if (!n)
            return ms_error(MS_ERR_CORRUPT, "delta: bad or truncated literal-run length at offset %zu", i);
        i += n;
        if (lrun > len - pos)
            return ms_error(MS_ERR_CORRUPT,
                            "delta: literal run of %llu at page offset %zu crosses the page end (%zu)",
                            (unsigned long long)lrun, pos, len);
        if (lrun > in_len - i)
            return ms_error(MS_ERR_CORRUPT,
                            "delta: literal run of %llu at offset %zu runs past the input end (%zu)",
                            (unsigned long long)lrun, i, in_len);
        memcpy(page + pos, in + i, lrun);
        pos += lrun;
        i += lrun;
    }
    return MS_OK;
}
