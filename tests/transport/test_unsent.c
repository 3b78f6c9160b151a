/* ms_conn_unsent: bytes a connection accepted that the peer has not yet
 * acknowledged. On a TCP socket (fd or tcp transport) it follows the send
 * queue: bytes the peer's full receive buffer left queued, then none once
 * the peer has read them; elsewhere (pipes, Unix sockets) it is unknown. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tcp/tcp.h"
#include "tests/ms_test.h"
#include "transport/transport.h"

/* What c still has unacknowledged once the peer had time to acknowledge. */
static int64_t settled_unsent(ms_conn *c)
{
    int64_t left = ms_conn_unsent(c);
    for (int i = 0; i < 200 && left > 0; i++) {
        nanosleep(&(struct timespec){0, 5000000}, NULL);
        left = ms_conn_unsent(c);
    }
    return left;
}

/* A loopback listener whose accepted sockets have a small receive buffer. */
static int listen_small_rcvbuf(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), small = 4096;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    CU_ASSERT_EQUAL_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    CU_ASSERT_EQUAL_FATAL(listen(fd, 4), 0);
    CU_ASSERT_EQUAL_FATAL(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int connect_big_sndbuf(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), big = 1 << 20;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big), 0);
    CU_ASSERT_EQUAL_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void test_tcp_socket(void)
{
    uint16_t port;
    int lfd = listen_small_rcvbuf(&port);
    int cfd = connect_big_sndbuf(port);
    int sfd = accept(lfd, NULL, NULL);
    CU_ASSERT_FATAL(sfd >= 0);
    ms_conn *c = NULL;
    CU_ASSERT_EQUAL_FATAL(ms_fd_conn_new(cfd, cfd, true, &c), MS_OK);
    CU_ASSERT_EQUAL(ms_conn_unsent(c), 0);

    /* The peer reads nothing: what its receive buffer cannot take stays
     * queued on this side. */
    size_t n = 256 * 1024;
    uint8_t *buf = calloc(1, n);
    CU_ASSERT_FATAL(buf != NULL);
    CU_ASSERT_EQUAL_FATAL(ms_conn_send(c, buf, n), MS_OK);
    int64_t queued = ms_conn_unsent(c);
    CU_ASSERT(queued > (int64_t)(n / 2));
    CU_ASSERT(queued <= (int64_t)n);

    /* The peer reads it all: nothing stays unacknowledged. */
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(sfd, buf, n);
        CU_ASSERT_FATAL(r > 0);
        got += (size_t)r;
    }
    CU_ASSERT_EQUAL(settled_unsent(c), 0);
    free(buf);
    ms_conn_close(c);
    close(sfd);
    close(lfd);
}

/* The tcp transport's connections (a renamed copy of the fd ops). */
static void test_tcp_transport(void)
{
    ms_listener *l = NULL;
    ms_conn *c = NULL, *s = NULL;
    char port[16];
    CU_ASSERT_EQUAL_FATAL(ms_tcp_listen("127.0.0.1", "0", NULL, &l), MS_OK);
    snprintf(port, sizeof port, "%u", l->port);
    CU_ASSERT_EQUAL_FATAL(ms_tcp_connect("127.0.0.1", port, NULL, &c), MS_OK);
    CU_ASSERT_EQUAL_FATAL(ms_listener_accept(l, &s, 5000), MS_OK);
    CU_ASSERT_STRING_EQUAL(c->ops->name, "tcp");
    CU_ASSERT_EQUAL(ms_conn_unsent(c), 0);
    CU_ASSERT_EQUAL(ms_conn_send(c, "hello", 5), MS_OK);
    char in[5];
    CU_ASSERT_EQUAL(ms_conn_recv(s, in, sizeof in, NULL), MS_OK);
    CU_ASSERT_EQUAL(settled_unsent(c), 0);
    ms_conn_close(c);
    ms_conn_close(s);
    ms_listener_close(l);
}

static void test_unknown(void)
{
    int p[2], sp[2];
    ms_conn *c = NULL;
    CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
    CU_ASSERT_EQUAL_FATAL(ms_fd_conn_new(-1, p[1], true, &c), MS_OK);
    CU_ASSERT_EQUAL(ms_conn_unsent(c), -1);
    ms_conn_close(c);
    close(p[0]);
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
    CU_ASSERT_EQUAL_FATAL(ms_fd_conn_new(sp[0], sp[0], true, &c), MS_OK);
    CU_ASSERT_EQUAL(ms_conn_unsent(c), -1);
    ms_conn_close(c);
    close(sp[1]);
    CU_ASSERT_EQUAL(ms_conn_unsent(NULL), -1);
}

MS_TEST_MAIN(ms_test_add_suite("unsent", (ms_test_case[]){
                                             {"tcp socket", test_tcp_socket},
                                             {"tcp transport", test_tcp_transport},
                                             {"unknown", test_unknown},
                                             {NULL, NULL},
                                         }))
