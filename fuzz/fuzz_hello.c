/* libFuzzer target: the 160-byte hello parser. The handshake hashes a
 * re-packed copy of the peer's hello into its transcript, so an accepted
 * hello must pack back to exactly the bytes received. A 161st input byte
 * with bit 0 set makes the target fix the check (at 156) first, so the
 * field checks behind it are reached too. */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "stream/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t in[MS_HELLO_SIZE], out[MS_HELLO_SIZE];
    ms_hello h;
    int rc;

    if (size < MS_HELLO_SIZE)
        return 0;
    memcpy(in, data, sizeof in);
    if (size > MS_HELLO_SIZE && (data[MS_HELLO_SIZE] & 1))
        ms_put_le32(in + 156, XXH32(in, 156, 0));
    rc = ms_hello_unpack(in, &h);
    if (rc != MS_OK) {
        if ((rc != MS_ERR_CORRUPT && rc != MS_ERR_VERSION) || !ms_last_error()[0])
            abort();
        return 0;
    }
    if (!memchr(h.chain, 0, MS_CHAIN_TEXT_MAX) || h.channels > MS_HELLO_MAX_CHANNELS)
        abort();
    ms_hello_pack(&h, out);
    if (memcmp(in, out, sizeof in))
        abort();
    return 0;
}
