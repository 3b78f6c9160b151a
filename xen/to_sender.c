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
    /* The stream entry (type bits included) is the page's address on the
     * wire: the writer needs the type back, and the page caches key on it. */
    return ms_sender_pages(ts->sender, ts->round, ts->fragment, entries, data, count);
}

const ms_xc_reader_cb ms_xc_reader_to_sender_cb = {
    .opaque = ts_opaque,
    .pages = ts_pages,
};
