/* Internal to xen/: shared by the libxc reader and the xl/libxl container
 * reader, not part of the module's interface (xen.h). */
#ifndef MS_XEN_INT_H
#define MS_XEN_INT_H

#include "xen/xen.h"

/* A streaming reader as ms_xc_pump_fd drives it: it asks for `want` more
 * bytes, takes any amount up to that, and says when its stream is done. */
typedef struct ms_xc_feed_ops {
    size_t (*want)(void *r);
    int (*push)(void *r, const uint8_t *p, size_t n);
    bool (*done)(void *r);
    int (*finish)(void *r);
} ms_xc_feed_ops;

/* Read fd into the reader until its stream is done, never past its end
 * (reads are sized by `want`); end of file first calls `finish`, which
 * names what was cut off. `who` prefixes the read errors. */
int ms_xc_pump_fd(int fd, const char *who, const ms_xc_feed_ops *ops, void *r);

#endif
