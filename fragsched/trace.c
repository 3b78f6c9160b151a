/* --record-trace: the engine's bitmap reads, written with sources' trace
 * writer so `migstream sim --trace` can replay the same workload.
 *
 * A trace states its page count up front, but a process may map new memory
 * during the migration, and sizing the trace for the source's upper bound
 * (16 GiB by default) would make the simulator migrate pages that never
 * existed. So the reads are kept in memory (one bitmap of the pages known
 * at that read each) and written when the migration ends, with the page
 * count the source finally had. */
#include <stdlib.h>
#include <string.h>

#include "fragsched/fragsched.h"
#include "fragsched/sched_priv.h"

typedef struct trace_rec {
    uint64_t t_ns;
    uint64_t nbits;
    uint64_t *bm;
} trace_rec;

typedef struct engine_trace {
    char *path;
    char desc[128];
    uint32_t page_size;
    uint64_t npages; /* the most pages any read covered */
    trace_rec *recs;
    size_t n, cap;
} engine_trace;

int ms_engine_trace_open(void **trace, const char *path, const ms_page_source *src)
{
    engine_trace *t = calloc(1, sizeof(*t));
    if (!t || !(t->path = strdup(path))) {
        free(t);
        return ms_error(MS_ERR_NOMEM, "--record-trace %s: out of memory", path);
    }
    snprintf(t->desc, sizeof(t->desc), "%s", src->desc);
    t->page_size = src->page_size;
    t->npages = src->npages;
    /* Fail now, not after the migration, if the file cannot be written. */
    ms_trace_writer *w = NULL;
    int rc = ms_trace_writer_open(path, src->npages ? src->npages : 1, src->page_size, t->desc, &w);
    if (!rc)
        rc = ms_trace_writer_close(w);
    if (rc) {
        free(t->path);
        free(t);
        return ms_error_wrap(rc, "--record-trace %s", path);
    }
    *trace = t;
    return MS_OK;
}

int ms_engine_trace_interval(void *trace, double t, const uint64_t *bm, uint64_t npages)
{
    engine_trace *tr = trace;
    if (tr->n == tr->cap) {
        size_t cap = tr->cap ? tr->cap * 2 : 64;
        trace_rec *r = realloc(tr->recs, cap * sizeof(*r));
        if (!r)
            return ms_error(MS_ERR_NOMEM, "--record-trace: out of memory after %zu reads", tr->n);
        tr->recs = r;
        tr->cap = cap;
    }
    size_t words = ms_bitmap_words(npages);
    trace_rec *r = &tr->recs[tr->n];
    r->bm = malloc(words ? words * 8 : 8);
    if (!r->bm)
        return ms_error(MS_ERR_NOMEM, "--record-trace: out of memory for a %llu-page read",
                        (unsigned long long)npages);
    memcpy(r->bm, bm, words * 8);
    r->nbits = npages;
    r->t_ns = t > 0 ? (uint64_t)(t * 1e9) : 0;
    if (tr->n && r->t_ns < tr->recs[tr->n - 1].t_ns)
        r->t_ns = tr->recs[tr->n - 1].t_ns; /* the writer wants time to stand or rise */
    if (npages > tr->npages)
        tr->npages = npages;
    tr->n++;
    return MS_OK;
}

static int write_all(engine_trace *tr)
{
    ms_trace_writer *w = NULL;
    int rc = ms_trace_writer_open(tr->path, tr->npages ? tr->npages : 1, tr->page_size, tr->desc, &w);
    for (size_t i = 0; !rc && i < tr->n; i++)
        rc = ms_trace_writer_add(w, tr->recs[i].t_ns, tr->recs[i].bm, tr->recs[i].nbits);
    int crc = w ? ms_trace_writer_close(w) : MS_OK;
    rc = rc ? rc : crc;
    return rc ? ms_error_wrap(rc, "--record-trace %s", tr->path) : MS_OK;
}

int ms_engine_trace_close(void *trace)
{
    engine_trace *tr = trace;
    int rc = write_all(tr);
    for (size_t i = 0; i < tr->n; i++)
        free(tr->recs[i].bm);
    free(tr->recs);
    free(tr->path);
    free(tr);
    return rc;
}
