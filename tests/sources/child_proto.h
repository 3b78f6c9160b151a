/* Commands between test_process.c and its workload, test_sources_child. */
#ifndef MS_TEST_CHILD_PROTO_H
#define MS_TEST_CHILD_PROTO_H

#include <stdint.h>

#define REGION_PAGES 1024u

enum { C_WRITE = 1, C_READ, C_MMAP, C_REMAP, C_UNMAP, C_SPIN, C_EXIT, C_SHARED_FORK, C_GC_WRITE, C_SWEEP };

typedef struct cmd {
    uint32_t op, n;
    uint64_t a, b;
} cmd;

typedef struct child {
    pid_t pid;
    int to, from;          /* command pipe and reply pipe */
    uint64_t region;       /* address of the test region in the child */
} child;

#endif
