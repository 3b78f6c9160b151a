/* migstream public API: include this one header.
 * Build flags: pkg-config --cflags --libs migstream */
#ifndef MIGSTREAM_H
#define MIGSTREAM_H

#include "common/common.h"
#include "codecs/codecs.h"
#include "transport/transport.h"
#include "tcp/tcp.h"
#include "stream/stream.h"
#include "sources/sources.h"
#include "fragsched/fragsched.h"

#endif
