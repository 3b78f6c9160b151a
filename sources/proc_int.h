/* Internals of the process source: /proc parsing and ptrace injection. */
#ifndef MS_PROC_INT_H
#define MS_PROC_INT_H

#include "sources/sources.h"

#include <stdbool.h>
#include <stdint.h>

/* Private memory is keyed by (MS_OBJ_PRIVATE, process serial, address page);
 * shared memory by (device, inode, file page offset), so one shared object
 * mapped by several processes (or twice by one) is numbered once. */
#define MS_OBJ_PRIVATE UINT64_MAX

typedef struct ms_vma {
    uint64_t start, end;   /* addresses */
    uint64_t obj_hi, obj_lo;
    uint64_t pgoff;        /* page offset of `start` within the object */
    bool shared;
    bool registered;       /* registered and write-protected by us */
} ms_vma;

/* The selected mappings of `pid` (see sources.h), sorted by address.
 * `serial` is the private object id of this process. With `filter`, only
 * writable memory inside those ranges (of any kind) is selected.
 * Returns MS_ERR_CLOSED if the process is gone. */
int ms_proc_read_maps(int pid, uint32_t flags, uint64_t serial, const ms_addr_range *filter, size_t nfilter,
                      ms_vma **out, size_t *n);

/* Every descendant of `root` (not root itself), from /proc/<pid>/stat. */
int ms_proc_descendants(int root, int **out, size_t *n);

/* 1 if every thread of pid is stopped (or dead), 0 if not yet, MS_ERR_CLOSED
 * if the process is gone. */
int ms_proc_all_stopped(int pid);

/* Make `pid` create a userfaultfd by injecting the system call with ptrace,
 * take it into this process with pidfd_getfd(), and close the target's copy.
 * *our_fd gets the fd (UFFDIO_API not done yet). */
int ms_proc_inject_uffd(int pid, int pidfd, int *our_fd);

/* UFFDIO_API on a fresh userfaultfd with the features the tracker needs;
 * *features gets what was enabled. */
int ms_proc_uffd_api(int fd, uint64_t *features);

int ms_pidfd_open(int pid);
int ms_pidfd_getfd(int pidfd, int fd);
int ms_pidfd_signal(int pidfd, int sig);
bool ms_pidfd_exited(int pidfd);

#endif
