/* Page generators shared by the codecs tests: every kind of page the codec
 * chain must handle, deterministic for a seed. */
#ifndef MS_TEST_CODECS_PAGES_H
#define MS_TEST_CODECS_PAGES_H

#include <stdint.h>
#include <string.h>

#include "common/common.h"

enum test_kind { TK_ZERO, TK_TEXT, TK_POINTERS, TK_RANDOM, TK_NEARLY_ZERO, TK_COUNT };
static const char *const test_kind_names[TK_COUNT] = {"zero", "text", "pointers", "random",
                                                      "nearly-zero"};

static inline uint64_t t_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void t_fill(uint8_t *p, size_t ps, enum test_kind k, uint64_t *rs)
{
    static const char *const words[] = {"page", "memory", "the", "return", "struct", "migration",
                                        "int", "error", "buffer", "value"};
    memset(p, 0, ps);
    switch (k) {
    case TK_ZERO:
        break;
    case TK_TEXT:
        for (size_t i = 0; i < ps;) {
            const char *w = words[t_rand(rs) % 10];
            for (size_t j = 0; w[j] && i < ps; j++)
                p[i++] = (uint8_t)w[j];
            if (i < ps)
                p[i++] = t_rand(rs) % 9 ? ' ' : '\n';
        }
        break;
    case TK_POINTERS:
        for (size_t i = 0; i + 8 <= ps; i += 8) {
            uint64_t r = t_rand(rs);
            uint64_t v = (i / 8) % 4 == 3 ? r % 256 : 0x00007f0000000000ull + ((r & 0xfffff) << 4);
            memcpy(p + i, &v, 8);
        }
        break;
    case TK_RANDOM:
        for (size_t i = 0; i < ps; i++)
            p[i] = (uint8_t)t_rand(rs);
        break;
    case TK_NEARLY_ZERO:
        for (int n = 0; n < 3; n++)
            p[t_rand(rs) % ps] = (uint8_t)(1 + t_rand(rs) % 255);
        break;
    default:
        break;
    }
}

/* Change about `frac` of the bytes in runs of 1..16. */
static inline void t_mutate(uint8_t *p, size_t ps, double frac, uint64_t *rs)
{
    size_t want = (size_t)(frac * (double)ps) + 1, done = 0;
    while (done < want) {
        size_t off = t_rand(rs) % ps, len = 1 + t_rand(rs) % 16;
        for (size_t k = 0; k < len && off + k < ps && done < want; k++, done++)
            p[off + k] ^= (uint8_t)(1 + t_rand(rs) % 255);
    }
}

#endif
