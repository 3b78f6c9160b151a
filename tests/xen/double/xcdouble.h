/* Test double of libxenctrl / libxenguest 4.17 ("xcdouble"): the call
 * pattern of Xen 4.17's save loop without a hypervisor. The guest is a
 * deterministic model living in the libxenctrl double: it dirties pages
 * between two log-dirty calls, as a running guest does between rounds.
 * Configured by XCDOUBLE_* variables (never MIGSTREAM_*, which would wake
 * the preload up):
 *   XCDOUBLE_PAGES (2048), XCDOUBLE_TYPE (hvm|pv), XCDOUBLE_DIRTY (0.05),
 *   XCDOUBLE_SEED (1), XCDOUBLE_IMAGE (memory image for page contents),
 *   XCDOUBLE_SAVE_IMAGE / XCDOUBLE_RESTORE_IMAGE (where the save writes the
 *   guest's memory at suspend time / the restore writes what it received),
 *   XCDOUBLE_LOG (a file receiving one line per policy / log-dirty call). */
#ifndef XCDOUBLE_H
#define XCDOUBLE_H

#include <stdbool.h>
#include <stdint.h>

uint64_t xcdouble_pages(void);
bool xcdouble_is_pv(void);
unsigned xcdouble_type(uint64_t pfn);               /* page type (0..15) */
void xcdouble_page(uint64_t pfn, uint8_t *page);    /* current contents */
void xcdouble_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
