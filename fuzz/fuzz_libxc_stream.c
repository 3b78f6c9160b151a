/* libFuzzer target for the libxc stream reader (and writer).
 *
 * Input: byte 0 picks the reader's batch size, byte 1 the chunk size the
 * stream is pushed in; the rest is the stream. Whatever the reader
 * accepts must come out of the writer byte for byte; anything else must
 * be refused cleanly (sanitizers catch the rest). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xen/xen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t batch = 1 + data[0] % 8;
    size_t chunk = 1 + (size_t)data[1] * 61;
    data += 2;
    size -= 2;

    ms_buf out = {0};
    ms_xc_writer *w = NULL;
    ms_xc_reader *r = NULL;
    size_t off = 0;
    int rc = ms_xc_writer_new(ms_xc_out_buf, &out, &w);
    if (!rc)
        rc = ms_xc_reader_new(&ms_xc_reader_to_writer_cb, w, batch, &r);
    while (!rc && off < size && !ms_xc_reader_done(r)) {
        size_t n = size - off < chunk ? size - off : chunk, used = 0;
        rc = ms_xc_reader_push(r, data + off, n, &used);
        off += used;
    }
    if (!rc)
        rc = ms_xc_reader_finish(r);
    if (!rc) {
        if (ms_xc_writer_finish(w) != MS_OK || out.len != off || memcmp(out.data, data, off) != 0)
            abort(); /* accepted but not rebuilt byte for byte */
    }
    ms_xc_reader_free(r);
    ms_xc_writer_free(w);
    ms_buf_free(&out);
    return 0;
}
