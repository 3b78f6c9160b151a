/* libFuzzer target for the page delta.
 * Byte 0 picks the mode and the page length; the rest is the data.
 *  - decode: the data is a delta applied to a fixed page; it must be refused
 *    or applied without touching memory outside the page and the input;
 *  - round trip: the data becomes an old and a new page; the encoder's
 *    output must be below its bound and decode back to the new page. */
#include <stdlib.h>
#include <string.h>

#include "codecs/codecs.h"

#define MAX_PAGE 4096u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void round_trip(const uint8_t *data, size_t size, size_t len, size_t max_out)
{
    uint8_t old[MAX_PAGE], cur[MAX_PAGE], page[MAX_PAGE];
    uint8_t *out = malloc(max_out ? max_out : 1); /* exact size: overflows are caught */
    /* Old page from the first half, new page = old with the second half
     * written over it at an offset chosen by the data. */
    memset(old, 0, len);
    size_t half = size / 2;
    memcpy(old, data, half < len ? half : len);
    memcpy(cur, old, len);
    if (size > half && len) {
        size_t at = data[half] % len, n = size - half - 1;
        if (n > len - at)
            n = len - at;
        memcpy(cur + at, data + half + 1, n);
    }
    size_t n = ms_delta_encode(old, cur, len, out, max_out);
    if (n >= max_out && max_out)
        abort();
    if (n) {
        memcpy(page, old, len);
        if (ms_delta_decode(out, n, page, len) != MS_OK || memcmp(page, cur, len))
            abort();
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t len = 64u << (data[0] & 3); /* 64..512: small pages, more runs */
    if (data[0] & 4)
        len = MAX_PAGE;
    if (data[0] & 8) {
        round_trip(data + 1, size - 1, len, (data[0] >> 4) ? len * (data[0] >> 4) / 8 : len + 16);
        return 0;
    }
    uint8_t page[MAX_PAGE];
    memset(page, 0x5a, len);
    uint8_t *in = malloc(size - 1 ? size - 1 : 1);
    memcpy(in, data + 1, size - 1);
    int rc = ms_delta_decode(in, size - 1, page, len);
    if (rc != MS_OK && rc != MS_ERR_CORRUPT)
        abort();
    free(in);
    return 0;
}
