/* libFuzzer target: "HOST:PORT" / "[V6]:PORT" splitting, which parses
 * command-line and environment input (--to, MIGSTREAM_PEER). Accepted input
 * must split into a non-empty port that ends the string after a ':', with a
 * host that fits its buffer; refused input must say why. */
#include <stdlib.h>
#include <string.h>

#include "tcp/tcp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    size_t len = strlen(s);
    /* Small buffers too, so the length checks are reached. */
    static const size_t sizes[] = {1, 8, 64, 300};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char host[300], port[300];
        size_t hn = sizes[i], pn = sizes[(i + 1) % 4];
        memset(host, 'X', sizeof(host));
        memset(port, 'X', sizeof(port));
        int rc = ms_split_hostport(s, host, hn, port, pn);
        if (rc != MS_OK) {
            if (rc != MS_ERR_INVAL || !ms_last_error()[0])
                abort();
            continue;
        }
        size_t hl = strnlen(host, hn), pl = strnlen(port, pn);
        if (hl >= hn || pl >= pn || pl == 0 || pl >= len)
            abort();
        if (s[len - pl - 1] != ':' || memcmp(s + len - pl, port, pl) != 0)
            abort();
        if (!strstr(s, host))
            abort();
    }
    free(s);
    return 0;
}
