#include "sources/sources.h"

uint64_t ms_bitmap_count(const uint64_t *bm, uint64_t nbits)
{
    uint64_t n = 0;
    size_t full = (size_t)(nbits / 64);
    for (size_t i = 0; i < full; i++)
        n += (uint64_t)__builtin_popcountll(bm[i]);
    if (nbits % 64)
        n += (uint64_t)__builtin_popcountll(bm[full] & ((1ull << (nbits % 64)) - 1));
    return n;
}
