/* libFuzzer target for what the rdma transport takes from outside before any
 * verbs call: a peer's connection private data (rd_info_unpack) and an
 * option string (ms_rdma_options_parse, as `--rdma-opts` hands it over).
 * Byte 0 picks the parser; the rest is its input. Accepted values must lie
 * inside the documented ranges. */
#include <stdlib.h>
#include <string.h>

#include "rdma/rdma_priv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        rd_info info;
        if (rd_info_unpack(data + 1, size - 1, &info) == MS_OK &&
            (info.magic != RD_MAGIC || info.version != RD_PROTO_VERSION || info.slots < 2 ||
             info.slots > MS_RDMA_MAX_SLOTS || info.slot_size < MS_RDMA_MIN_SLOT_SIZE ||
             info.slot_size > MS_RDMA_MAX_SLOT_SIZE || size - 1 < RD_INFO_SIZE))
            abort();
        if (size - 1 >= RD_INFO_SIZE) {
            uint8_t back[RD_INFO_SIZE];
            if (rd_info_unpack(data + 1, size - 1, &info) == MS_OK) {
                rd_info_pack(&info, back);
                if (memcmp(back, data + 1, RD_INFO_SIZE))
                    abort();
            }
        }
        return 0;
    }
    char *spec = malloc(size);
    memcpy(spec, data + 1, size - 1);
    spec[size - 1] = '\0';
    ms_rdma_options o = {0};
    if (ms_rdma_options_parse(spec, &o) == MS_OK) {
        if ((o.ring_slots && (o.ring_slots < 2 || o.ring_slots > MS_RDMA_MAX_SLOTS)) ||
            (o.slot_size && (o.slot_size < MS_RDMA_MIN_SLOT_SIZE || o.slot_size > MS_RDMA_MAX_SLOT_SIZE)) ||
            o.ack_timeout > 31 || o.retry_cnt > 7 || o.reg_cache_entries > 1024)
            abort();
    }
    free(spec);
    return 0;
}
