/* libFuzzer target for the `xl save` file / libxl stream reader and writer
 * (xen/savefile.c), with the libxc reader and writer inside.
 *
 * Input: byte 0 picks the reader's batch size, byte 1 seeds the sizes of
 * the pushes (each different, 1..4096 bytes); the rest is the file.
 * Whatever the reader accepts must come out of the writer byte for byte;
 * before the final END the reader must always want more than 0 bytes and
 * take every byte it is given; anything else must be refused cleanly
 * (sanitizers catch the rest). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xen/xen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int to_opaque(void *ctx, const uint8_t *d, size_t n) { return ms_save_writer_opaque(ctx, d, n); }

static int to_pages(void *ctx, const ms_xc_record *rec, const uint64_t *e, const uint8_t *d, size_t n)
{
    (void)rec;
    return ms_save_writer_pages(ctx, e, d, n);
}

static const ms_save_reader_cb to_writer = {.xc = {.opaque = to_opaque, .pages = to_pages}};

/* Feed the file in pushes of varying size; the bytes taken, or -1 if an
 * invariant broke. *rc: the reader's status. */
static long feed(ms_save_reader *r, const uint8_t *data, size_t size, uint32_t seed, int *rc)
{
    size_t off = 0;
    *rc = MS_OK;
    while (*rc == MS_OK && off < size && !ms_save_reader_done(r)) {
        if (ms_save_reader_want(r) == 0)
            return -1;
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 8) % 4096, used = 0;
        if (n > size - off)
            n = size - off;
        *rc = ms_save_reader_push(r, data + off, n, &used);
        if (*rc == MS_OK && used < n && !ms_save_reader_done(r))
            return -1;
        off += used;
    }
    return (long)off;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    ms_buf out = {0};
    ms_save_writer *w = NULL;
    ms_save_reader *r = NULL;
    int rc = ms_save_writer_new(ms_xc_out_buf, &out, &w);
    if (!rc)
        rc = ms_save_reader_new(&to_writer, w, 1 + data[0] % 8, &r);
    if (!rc) {
        long took = feed(r, data + 2, size - 2, data[1], &rc);
        if (took < 0)
            abort(); /* the reader stalled or dropped input before END */
        if (!rc)
            rc = ms_save_reader_finish(r);
        if (!rc && (ms_save_writer_finish(w) != MS_OK || out.len != (size_t)took ||
                    memcmp(out.data, data + 2, out.len) != 0))
            abort(); /* accepted but not rebuilt byte for byte */
    }
    ms_save_reader_free(r);
    ms_save_writer_free(w);
    ms_buf_free(&out);
    return 0;
}
