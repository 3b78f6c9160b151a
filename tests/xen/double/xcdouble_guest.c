/* libxenguest.so.4.17 test double: xc_domain_save drives the call pattern
 * of Xen 4.17's xg_sr_save.c (precopy policy before and after each pass,
 * log-dirty CLEAN between passes, suspend, a FINAL log-dirty, one writev
 * per PAGE_DATA batch of up to 1024 pfns) and writes a spec-valid libxc
 * stream; xc_domain_restore reads one up to END and keeps the pages. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <xenctrl.h>
#include <xenguest.h>

#include "xcdouble.h"
#include "xen/xen.h"

#define BATCH 1024

typedef struct save {
    int fd;
    uint64_t pages;
    unsigned long *dirty;   /* the log-dirty bitmap */
    uint64_t entries[BATCH];
    uint8_t *data;          /* BATCH pages */
    unsigned n, with_data;
} save;

static int put(int fd, const void *p, size_t n)
{
    int fdc = fd;
    return ms_xc_out_fd(&fdc, p, n) ? -1 : 0;
}

static int put_record(int fd, uint32_t type, const void *body, uint32_t len)
{
    static const uint8_t zeros[8];
    uint8_t rh[8];
    ms_put_le32(rh, type);
    ms_put_le32(rh + 4, len);
    struct iovec iov[3] = {{rh, 8}, {(void *)body, len}, {(void *)zeros, ms_xc_padded(len) - len}};
    size_t total = 8 + ms_xc_padded(len);
    ssize_t w = writev(fd, iov, 3);
    if (w == (ssize_t)total)
        return 0;
    /* short write: finish the rest plainly */
    uint8_t *all = malloc(total);
    if (!all)
        return -1;
    memcpy(all, rh, 8);
    memcpy(all + 8, body, len);
    memset(all + 8 + len, 0, total - 8 - len);
    int rc = w < 0 ? -1 : put(fd, all + w, total - (size_t)w);
    free(all);
    return rc;
}

static int flush_batch(save *s)
{
    if (s->n == 0)
        return 0;
    uint8_t head[16];
    ms_put_le32(head, MS_XC_REC_PAGE_DATA);
    ms_put_le32(head + 4, 8 + s->n * 8 + s->with_data * 4096);
    ms_put_le32(head + 8, s->n);
    ms_put_le32(head + 12, 0);
    /* one writev per record, like write_batch() */
    struct iovec iov[3] = {{head, 16}, {s->entries, s->n * 8u}, {s->data, (size_t)s->with_data * 4096}};
    size_t total = 16 + s->n * 8u + (size_t)s->with_data * 4096, done = 0;
    int idx = 0;
    while (done < total) {
        ssize_t w = writev(s->fd, iov + idx, 3 - idx);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        done += (size_t)w;
        while (idx < 3 && (size_t)w >= iov[idx].iov_len) {
            w -= (ssize_t)iov[idx].iov_len;
            idx++;
        }
        if (idx < 3) {
            iov[idx].iov_base = (uint8_t *)iov[idx].iov_base + w;
            iov[idx].iov_len -= (size_t)w;
        }
    }
    s->n = s->with_data = 0;
    return 0;
}

static int send_dirty(save *s)
{
    for (uint64_t pfn = 0; pfn < s->pages; pfn++) {
        if (!(s->dirty[pfn / 64] & (1ul << (pfn % 64))))
            continue;
        if (s->n == BATCH && flush_batch(s))
            return -1;
        unsigned t = xcdouble_type(pfn);
        s->entries[s->n++] = ms_xc_entry(t, pfn);
        if (ms_xc_page_type_has_data(t))
            xcdouble_page(pfn, s->data + (size_t)s->with_data++ * 4096);
    }
    return flush_batch(s);
}

static int simple_policy(struct precopy_stats st, void *user)
{
    (void)user;
    return ((st.dirty_count >= 0 && st.dirty_count < 50) || st.iteration >= 5) ? XGS_POLICY_STOP_AND_COPY
                                                                                : XGS_POLICY_CONTINUE_PRECOPY;
}

static int headers_and_static(save *s)
{
    bool pv = xcdouble_is_pv();
    uint8_t h[40] = {0};
    memset(h, 0xff, 8);
    memcpy(h + 8, "XENF", 4);
    h[15] = 3;
    ms_put_le32(h + 24, pv ? MS_XC_DOM_X86_PV : MS_XC_DOM_X86_HVM);
    ms_put_le16(h + 28, 12);
    ms_put_le32(h + 32, 4);
    ms_put_le32(h + 36, 17);
    if (put(s->fd, h, sizeof(h)))
        return -1;
    uint8_t info[8] = {8, 4}, cpuid[24 * 4] = {0}, msr[16] = {0};
    for (unsigned i = 0; i < 4; i++)
        ms_put_le32(cpuid + i * 24, i);
    ms_put_le32(msr, 0xce);
    if (pv && put_record(s->fd, MS_XC_REC_X86_PV_INFO, info, 8))
        return -1;
    if (put_record(s->fd, MS_XC_REC_X86_CPUID_POLICY, cpuid, sizeof(cpuid)) ||
        put_record(s->fd, MS_XC_REC_X86_MSR_POLICY, msr, sizeof(msr)) ||
        put_record(s->fd, MS_XC_REC_STATIC_DATA_END, NULL, 0))
        return -1;
    if (pv) {
        uint8_t p2m[8 + 8 * 8] = {0};
        ms_put_le32(p2m + 4, (uint32_t)(s->pages - 1));
        return put_record(s->fd, MS_XC_REC_X86_PV_P2M_FRAMES, p2m, 8 + 8 * (uint32_t)((s->pages + 511) / 512 > 8 ? 8 : (s->pages + 511) / 512));
    }
    return 0;
}

static int tail(save *s)
{
    uint8_t tsc[24] = {0};
    ms_put_le32(tsc + 4, 2400000);
    if (put_record(s->fd, MS_XC_REC_X86_TSC_INFO, tsc, sizeof(tsc)))
        return -1;
    if (!xcdouble_is_pv()) {
        uint8_t ctx[1283] = {'H', 'V', 'M'}, params[8 + 16] = {1};
        ms_put_le64(params + 8, 1);
        ms_put_le64(params + 16, s->pages - 1);
        return put_record(s->fd, MS_XC_REC_HVM_CONTEXT, ctx, sizeof(ctx)) ||
               put_record(s->fd, MS_XC_REC_HVM_PARAMS, params, sizeof(params)) ? -1 : 0;
    }
    uint8_t shinfo[4096] = {0}, vcpu[8 + 512] = {0};
    if (put_record(s->fd, MS_XC_REC_SHARED_INFO, shinfo, sizeof(shinfo)))
        return -1;
    return put_record(s->fd, MS_XC_REC_X86_PV_VCPU_BASIC, vcpu, sizeof(vcpu));
}

static int write_image(const char *path, bool received, const uint8_t *mem, uint64_t pages)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    int rc = 0;
    uint8_t page[4096];
    for (uint64_t pfn = 0; pfn < pages && !rc; pfn++) {
        if (received)
            memcpy(page, mem + pfn * 4096, 4096);
        else if (ms_xc_page_type_has_data(xcdouble_type(pfn)))
            xcdouble_page(pfn, page);
        else
            memset(page, 0, sizeof(page));
        rc = put(fd, page, sizeof(page));
    }
    return close(fd) || rc ? -1 : 0;
}

static int save_loop(xc_interface *xch, uint32_t dom, struct save_callbacks *cb, save *s)
{
    precopy_policy_t policy = cb && cb->precopy_policy ? cb->precopy_policy : simple_policy;
    void *data = cb ? cb->data : NULL;
    xc_hypercall_buffer_t hbuf = {.hbuf = s->dirty};
    xc_shadow_op_stats_t lstats = {0, (uint32_t)s->pages};
    struct precopy_stats st = {.dirty_count = (long)s->pages};
    unsigned x = 0;
    int decision;
    if (xc_shadow_control(xch, dom, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, NULL, 0) < 0)
        return -1;
    memset(s->dirty, 0xff, (s->pages + 63) / 64 * 8);
    for (;;) {
        decision = policy(st, data);
        xcdouble_log("policy iteration %u dirty %ld -> %d", st.iteration, st.dirty_count, decision);
        x++;
        if (lstats.dirty_count > 0 && decision != XGS_POLICY_ABORT && send_dirty(s))
            return -1;
        if (decision != XGS_POLICY_CONTINUE_PRECOPY)
            break;
        st.iteration = x;
        st.total_written += (unsigned long)st.dirty_count;
        st.dirty_count = -1;
        decision = policy(st, data);
        xcdouble_log("policy iteration %u dirty %ld -> %d", st.iteration, st.dirty_count, decision);
        if (decision != XGS_POLICY_CONTINUE_PRECOPY)
            break;
        if (xc_logdirty_control(xch, dom, XEN_DOMCTL_SHADOW_OP_CLEAN, &hbuf, s->pages, 0, &lstats) !=
            (long long)s->pages)
            return -1;
        st.dirty_count = lstats.dirty_count;
    }
    if (decision == XGS_POLICY_ABORT) {
        fprintf(stderr, "xcdouble: precopy policy aborted the save\n");
        return -1;
    }
    if (cb && cb->suspend && cb->suspend(cb->data) == 0) {
        fprintf(stderr, "xcdouble: suspend callback failed\n");
        return -1;
    }
    const char *img = getenv("XCDOUBLE_SAVE_IMAGE");
    if (xc_logdirty_control(xch, dom, XEN_DOMCTL_SHADOW_OP_CLEAN, &hbuf, s->pages,
                            XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL, &lstats) != (long long)s->pages)
        return -1;
    /* Memory is final now: the guest is suspended. */
    if (img && write_image(img, false, NULL, s->pages))
        return -1;
    return send_dirty(s);
}

int xc_domain_save(xc_interface *xch, int io_fd, uint32_t dom, uint32_t flags, struct save_callbacks *callbacks,
                   xc_stream_type_t stream_type, int recv_fd)
{
    (void)flags;
    (void)stream_type;
    (void)recv_fd;
    save s = {.fd = io_fd, .pages = xcdouble_pages()};
    s.dirty = calloc((s.pages + 63) / 64, sizeof(unsigned long));
    s.data = malloc((size_t)BATCH * 4096);
    int rc = s.dirty && s.data ? 0 : -1;
    if (!rc)
        rc = headers_and_static(&s);
    if (!rc)
        rc = save_loop(xch, dom, callbacks, &s);
    if (!rc)
        rc = tail(&s);
    if (!rc)
        rc = put_record(io_fd, MS_XC_REC_END, NULL, 0);
    xc_shadow_control(xch, dom, XEN_DOMCTL_SHADOW_OP_OFF, NULL, 0);
    if (rc)
        fprintf(stderr, "xcdouble: save failed: %s\n", strerror(errno));
    free(s.dirty);
    free(s.data);
    return rc;
}

typedef struct restore {
    uint8_t *mem;
    uint64_t pages;
    int rc;
} restore;

static int rs_opaque(void *ctx, const uint8_t *d, size_t n)
{
    (void)ctx;
    (void)d;
    (void)n;
    return MS_OK;
}

static int rs_pages(void *ctx, const ms_xc_record *rec, const uint64_t *e, const uint8_t *d, size_t n)
{
    (void)rec;
    restore *r = ctx;
    for (size_t i = 0; i < n; i++) {
        uint64_t pfn = ms_xc_entry_pfn(e[i]);
        if (pfn >= r->pages)
            return ms_error(MS_ERR_CORRUPT, "pfn 0x%llx outside the domain", (unsigned long long)pfn);
        memcpy(r->mem + pfn * 4096, d + i * 4096, 4096);
    }
    return MS_OK;
}

int xc_domain_restore(xc_interface *xch, int io_fd, uint32_t dom, unsigned int store_evtchn,
                      unsigned long *store_mfn, uint32_t store_domid, unsigned int console_evtchn,
                      unsigned long *console_mfn, uint32_t console_domid, xc_stream_type_t stream_type,
                      struct restore_callbacks *callbacks, int send_back_fd)
{
    (void)xch;
    (void)dom;
    (void)store_evtchn;
    (void)store_domid;
    (void)console_evtchn;
    (void)console_domid;
    (void)stream_type;
    (void)callbacks;
    (void)send_back_fd;
    static const ms_xc_reader_cb cb = {.opaque = rs_opaque, .pages = rs_pages};
    restore r = {.pages = xcdouble_pages()};
    r.mem = calloc(r.pages, 4096);
    ms_xc_reader *rd = NULL;
    int rc = r.mem ? ms_xc_reader_new(&cb, &r, 0, &rd) : -1;
    if (!rc)
        rc = ms_xc_reader_pump_fd(rd, io_fd); /* like libxc: never past END */
    if (rc)
        fprintf(stderr, "xcdouble: restore failed: %s\n", ms_last_error());
    const char *img = getenv("XCDOUBLE_RESTORE_IMAGE");
    if (!rc && img && write_image(img, true, r.mem, r.pages))
        rc = -1;
    if (store_mfn)
        *store_mfn = r.pages - 1;
    if (console_mfn)
        *console_mfn = r.pages - 2;
    ms_xc_reader_free(rd);
    free(r.mem);
    return rc ? -1 : 0;
}
