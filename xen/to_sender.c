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
