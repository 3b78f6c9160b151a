/* --record-trace: the engine's bitmap reads, written with sources' trace
 * writer so `migstream sim --trace` can replay the same workload. */
#include "fragsched/fragsched.h"
#include "fragsched/sched_priv.h"

int ms_engine_trace_open(void **trace, const char *path, const ms_page_source *src)
{
    uint64_t cap = ms_source_max_pages(src);
    ms_trace_writer *w = NULL;
    int rc = ms_trace_writer_open(path, cap > src->npages ? cap : src->npages, src->page_size,
                                  src->desc, &w);
    if (rc)
        return ms_error_wrap(rc, "--record-trace %s", path);
    *trace = w;
    return MS_OK;
}

int ms_engine_trace_interval(void *trace, double t, const uint64_t *bm, uint64_t npages)
{
    uint64_t t_ns = t > 0 ? (uint64_t)(t * 1e9) : 0;
    return ms_trace_writer_add(trace, t_ns, bm, npages);
}

int ms_engine_trace_close(void *trace) { return ms_trace_writer_close(trace); }
