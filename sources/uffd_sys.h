/* Kernel interfaces for process tracking that Debian 12's headers (Linux
 * 6.1 UAPI) predate, from include/uapi/linux/userfaultfd.h and fs.h, plus
 * the message the uffd preload sends to the tracker. Private to sources/. */
#ifndef MS_UFFD_SYS_H
#define MS_UFFD_SYS_H

#include <linux/fs.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <sys/ioctl.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#ifndef PAGEMAP_SCAN
struct page_region {
    __u64 start;
    __u64 end; /* exclusive */
    __u64 categories;
};
struct pm_scan_arg {
    __u64 size;
    __u64 flags;
    __u64 start;
    __u64 end;
    __u64 walk_end;
    __u64 vec;
    __u64 vec_len;
    __u64 max_pages;
    __u64 category_inverted;
    __u64 category_mask;
    __u64 category_anyof_mask;
    __u64 return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#endif

/* Features the tracker needs, and the optional one for shmem/hugetlbfs. */
#define MS_UFFD_NEEDED (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED)
#define MS_UFFD_OPTIONAL UFFD_FEATURE_WP_HUGETLBFS_SHMEM

/* The preload writes one of these (atomically: < PIPE_BUF) to the fd named
 * by $MIGSTREAM_UFFD_REPORT_FD each time a process gets its userfaultfd: at
 * load (exec) and in the child after fork(). */
#define MS_UFFD_REPORT_ENV "MIGSTREAM_UFFD_REPORT_FD"
#define MS_UFFD_REPORT_MAGIC 0x4655534du /* "MSUF" */
struct ms_uffd_report {
    uint32_t magic;
    int32_t pid;
    int32_t fd;       /* the userfaultfd in that process, -1 on failure */
    int32_t err;      /* errno of the failure, 0 on success */
    uint64_t features;/* features enabled with UFFDIO_API */
};

#endif
