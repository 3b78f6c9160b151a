/* Per-page write counters behind the synthetic content of model and trace. */
#include "sources/sources_int.h"

#include <stdlib.h>

int ms_src_versions_read(ms_src_versions *vs, uint64_t seed, uint64_t npages, uint32_t page_size,
                         const uint64_t *idx, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++)
        if (idx[i] >= npages)
            return ms_error(MS_ERR_INVAL, "read: page %llu out of range (source has %llu pages)",
                            (unsigned long long)idx[i], (unsigned long long)npages);
    if (!vs->v) {
        vs->v = calloc(npages ? npages : 1, sizeof *vs->v);
        if (!vs->v)
            return ms_error(MS_ERR_NOMEM, "cannot allocate version counters for %llu pages",
                            (unsigned long long)npages);
        vs->n = npages;
    }
    for (size_t i = 0; i < n; i++)
        ms_src_content(seed, idx[i], vs->v[idx[i]], out + i * (size_t)page_size, page_size);
    return MS_OK;
}
