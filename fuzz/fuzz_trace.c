/* libFuzzer target: the dirty-trace reader (sources/trace.c). Any input
 * must either be refused with an error or play back without touching
 * memory out of bounds. Links: sources_lib, common_lib, libxxhash. */
#include "sources/sources.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A valid header may ask for up to 2^40 pages; the reader would then
     * allocate the bitmap for real. Keep inputs within the fuzzer's memory
     * limit by skipping those before parsing. */
    if (size >= 24 && ms_get_le64(data + 16) > (1u << 24))
        return 0;
    ms_trace_opts o = {.loop = size & 1, .seed = size};
    ms_page_source *s = NULL;
    if (ms_trace_source_open_mem(data, size, &o, &s) != MS_OK)
        return 0;
    uint64_t *bm = calloc(ms_bitmap_words(s->npages), 8);
    uint8_t *page = malloc(s->page_size);
    if (bm && page && ms_source_start(s) == MS_OK) {
        const double steps[] = {0.0, 1e-6, 0.01, 0.5, 3.0, 1e3};
        for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
            if (s->ops->advance(s, steps[i]) != MS_OK || ms_source_dirty(s, bm) != MS_OK)
                break;
            uint64_t idx = s->npages - 1;
            if (ms_source_read(s, &idx, 1, page) != MS_OK)
                break;
        }
    }
    free(bm);
    free(page);
    ms_source_destroy(s);
    return 0;
}
