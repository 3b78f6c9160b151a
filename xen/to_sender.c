/* Reader callbacks that hand a libxc stream to an ms_sender: the sending
 * half of carrying libxc streams through migstream (preload, replay). */
#include "xen/xen.h"

static int ts_opaque(void *ctx, const uint8_t *data, size_t len)
{
    ms_xc_to_sender *ts = ctx;
    return ms_sender_opaque(ts->sender, ts->round, data, len);
}

static int ts_pages(void *ctx, const ms_xc_record *rec, const uint64_t *entries, const uint8_t *data,
                    size_t count)
{
    (void)rec;
    ms_xc_to_sender *ts = ctx;
    /* Plain pfns on the wire: the types travel in the opaque pfn list, and
     * the stream layer (like libxc) takes pfns below 2^52 only. */
    enum { SLICE = 1024 };
    uint64_t pfns[SLICE];
    for (size_t done = 0; done < count;) {
        size_t n = count - done < SLICE ? count - done : SLICE;
        for (size_t i = 0; i < n; i++)
            pfns[i] = ms_xc_entry_pfn(entries[done + i]);
        int rc = ms_sender_pages(ts->sender, ts->round, ts->fragment, pfns, data + done * MS_XC_PAGE_SIZE, n);
        if (rc)
            return rc;
        done += n;
    }
    return MS_OK;
}

const ms_xc_reader_cb ms_xc_reader_to_sender_cb = {
    .opaque = ts_opaque,
    .pages = ts_pages,
};

/* ---- save files: the container's bytes go as opaque bytes too ------------ */

static int ss_xc_record(void *ctx, const ms_xc_record *rec)
{
    ms_save_to_sender *st = ctx;
    st->xc_records++;
    if (rec->type != MS_XC_REC_PAGE_DATA || rec->data_pages == 0)
        return MS_OK;
    uint64_t first = UINT64_MAX, last = 0;
    for (uint32_t i = 0; i < rec->count; i++) {
        if (!ms_xc_page_type_has_data(ms_xc_entry_type(rec->entries[i])))
            continue;
        if (first == UINT64_MAX)
            first = ms_xc_entry_pfn(rec->entries[i]);
        last = ms_xc_entry_pfn(rec->entries[i]);
    }
    if (st->round_has_pages && first <= st->last_pfn) {
        int rc = ms_sender_round_end(st->ts.sender, st->ts.round);
        if (rc)
            return rc;
        st->ts.round++;
        st->round_has_pages = false;
    }
    st->last_pfn = last;
    return MS_OK;
}

static int ss_libxl_record(void *ctx, const ms_libxl_record *rec)
{
    (void)rec;
    ((ms_save_to_sender *)ctx)->libxl_records++;
    return MS_OK;
}

static int ss_opaque(void *ctx, const uint8_t *data, size_t len)
{
    return ts_opaque(&((ms_save_to_sender *)ctx)->ts, data, len);
}

static int ss_pages(void *ctx, const ms_xc_record *rec, const uint64_t *entries, const uint8_t *data, size_t count)
{
    ms_save_to_sender *st = ctx;
    st->round_has_pages = true;
    st->data_pages += count;
    return ts_pages(&st->ts, rec, entries, data, count);
}

const ms_save_reader_cb ms_save_reader_to_sender_cb = {
    .libxl_record = ss_libxl_record,
    .xc = {.record = ss_xc_record, .opaque = ss_opaque, .pages = ss_pages},
};

int ms_save_to_sender_end(ms_save_to_sender *st)
{
    return ms_sender_round_end(st->ts.sender, st->ts.round);
}
