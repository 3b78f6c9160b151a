/* libFuzzer target for the page-section decoder (zero, dedup, delta).
 * A decoder is primed with a fixed first section (so some pfns are cached),
 * then given the input as the next section. Byte 0: page count (1..16) and
 * whether to decode in place; byte 1: page stages (MS_STAGE_* bits); the
 * rest: the section.
 * Whatever the input, the decoder must refuse it or decode it, and after a
 * refusal it must still decode the valid next section correctly: a refused
 * section leaves the cache untouched. */
#include <stdlib.h>
#include <string.h>

#include "codecs/codecs.h"

#define PS 512u
#define NPAGES 16u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t first[NPAGES * PS], second[NPAGES * PS];
static uint64_t pfns[NPAGES];

static void make_pages(void)
{
    uint64_t s = 7;
    for (unsigned i = 0; i < NPAGES; i++) {
        pfns[i] = 0x1000 + i * 3;
        for (unsigned k = 0; k < PS; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            first[i * PS + k] = (i % 4 == 0) ? 0 : (uint8_t)((s >> 59) * (k % 5 == 0));
        }
    }
    memcpy(second, first, sizeof second);
    for (unsigned i = 1; i < NPAGES; i += 2)
        second[i * PS + (i * 37) % PS] ^= 0x41;
    /* Duplicates: of a page of the first section, and within the second. */
    memcpy(second + 2 * PS, first + 5 * PS, PS);
    memcpy(second + 14 * PS, second + 3 * PS, PS);
}

#define STORE_BYTES (8 * (PS + 64) + 4096)

static ms_page_coder *new_coder(uint32_t stages)
{
    /* A store of a few pages, so evictions are part of the state. */
    ms_page_coder_config cfg = {.stages = stages, .page_size = PS, .delta_cache_bytes = STORE_BYTES,
                                .dedup_bytes = STORE_BYTES};
    ms_page_coder *pc = ms_page_coder_new(&cfg);
    if (!pc)
        abort();
    return pc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    if (!pfns[0])
        make_pages();
    size_t count = 1 + data[0] % NPAGES;
    bool inplace = data[0] & 0x80;
    uint32_t stages = data[1] & (MS_STAGE_ZERO | MS_STAGE_DELTA | MS_STAGE_DEDUP);
    ms_page_coder *enc = new_coder(stages), *dec = new_coder(stages);
    ms_buf sec1 = {0}, sec2 = {0};
    uint8_t *out = malloc(NPAGES * PS + size);
    if (ms_page_coder_encode(enc, pfns, first, NPAGES, &sec1, NULL) ||
        ms_page_coder_encode(enc, pfns, second, NPAGES, &sec2, NULL))
        abort();
    if (ms_page_coder_decode(dec, pfns, NPAGES, sec1.data, sec1.len, out, NULL))
        abort();
    /* The fuzzed section, in an exact-size buffer. */
    size_t len = size - 2, cap = len > count * PS ? len : count * PS;
    uint8_t *in = malloc(cap ? cap : 1);
    memcpy(in, data + 2, len);
    int rc = inplace ? ms_page_coder_decode_inplace(dec, pfns, count, in, len, cap, NULL)
                     : ms_page_coder_decode(dec, pfns, count, in, len, out, NULL);
    if (rc != MS_OK && rc != MS_ERR_CORRUPT)
        abort();
    if (rc) {
        if (ms_page_coder_decode(dec, pfns, NPAGES, sec2.data, sec2.len, out, NULL) ||
            memcmp(out, second, sizeof second))
            abort();
    }
    if (ms_page_coder_cache_bytes(dec) > 2 * STORE_BYTES)
        abort();
    free(in);
    free(out);
    ms_buf_free(&sec1);
    ms_buf_free(&sec2);
    ms_page_coder_free(enc);
    ms_page_coder_free(dec);
    return 0;
}
