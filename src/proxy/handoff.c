/*
 * handoff.c - zero-downtime binary upgrade (the hand-off): handing listening sockets from
 * a running weir to its successor over a Unix socket (SCM_RIGHTS), as
 * Pingora does.
 *
 * Protocol (SOCK_SEQPACKET, so messages keep their boundaries):
 *   new -> old   "WEIR-UPGRADE 1"
 *   old -> new   one or more batches: text "FD ADDR\n" per descriptor, the
 *                descriptors themselves as SCM_RIGHTS (at most 200 a batch)
 *   old -> new   "END"
 *   new -> old   "READY" once its workers accept on the sockets
 * After READY the old process drains (stop accepting, finish in-flight
 * requests within the grace period) and exits. The sockets never close in
 * between, so no connection is refused: queued ones are accepted by
 * whichever process takes them first.
 */
#include "proxy/handoff.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "weir/types.h"

#define BATCH 200
#define IO_TIMEOUT_MS 5000

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path))
        return WEIR_ERR_INVAL;
    strcpy(sa->sun_path, path);
    return 0;
}

static void set_timeouts(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

int weir__handoff_listen(const char *path)
{
    struct sockaddr_un sa;
    if (unix_addr(path, &sa) < 0)
        return WEIR_ERR_INVAL;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unlink(path); /* a stale socket from a previous process */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

static int send_batch(int fd, const weir_handoff_fd *v, size_t n)
{
    char text[BATCH * 80];
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, sizeof(text) - len, "FD %s\n", v[i].addr);
    union {
        char buf[CMSG_SPACE(sizeof(int) * BATCH)];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct iovec iov = {text, len};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = CMSG_SPACE(sizeof(int) * n)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * n);
    for (size_t i = 0; i < n; i++)
        memcpy(CMSG_DATA(c) + i * sizeof(int), &v[i].fd, sizeof(int));
    return sendmsg(fd, &msg, MSG_NOSIGNAL) < 0 ? -errno : 0;
}

int weir__handoff_serve(int listen_fd, const weir_handoff_fd *fds, size_t n)
{
    int c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return errno == EAGAIN ? WEIR_AGAIN : -errno;
    set_timeouts(c, IO_TIMEOUT_MS);
    char hello[64];
    ssize_t got = recv(c, hello, sizeof(hello) - 1, 0);
    int rc = WEIR_ERR_INVAL;
    if (got <= 0 || strncmp(hello, "WEIR-UPGRADE 1", 14) != 0) {
        weir_log_warn("upgrade: a peer connected without the upgrade greeting");
        goto out;
    }
    for (size_t i = 0; i < n; i += BATCH) {
        size_t k = n - i < BATCH ? n - i : BATCH;
        rc = send_batch(c, fds + i, k);
        if (rc < 0) {
            weir_log_error("upgrade: sending listening sockets: %s", strerror(-rc));
            goto out;
        }
    }
    if (send(c, "END", 3, MSG_NOSIGNAL) != 3) {
        rc = -errno;
        goto out;
    }
    weir_log_info("upgrade: handed %zu listening sockets to the new process", n);
    /* The new process may take a while to start its workers. */
    set_timeouts(c, 60000);
    char ready[16];
    got = recv(c, ready, sizeof(ready), 0);
    if (got == 5 && memcmp(ready, "READY", 5) == 0) {
        rc = WEIR_OK;
    } else {
        weir_log_error("upgrade: the new process did not get ready; this one keeps serving");
        rc = WEIR_ERR;
    }
out:
    close(c);
    return rc;
}

int weir__handoff_receive(const char *path, weir_handoff_fd **out, size_t *n_out, int *conn_out)
{
    struct sockaddr_un sa;
    *out = NULL;
    *n_out = 0;
    *conn_out = -1;
    if (unix_addr(path, &sa) < 0)
        return WEIR_ERR_INVAL;
    int c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (c < 0)
        return -errno;
    set_timeouts(c, IO_TIMEOUT_MS);
    if (connect(c, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        send(c, "WEIR-UPGRADE 1", 14, MSG_NOSIGNAL) != 14) {
        int err = errno;
        close(c);
        return -err;
    }
    weir_handoff_fd *v = NULL;
    size_t n = 0;
    int rc = 0;
    for (;;) {
        char text[BATCH * 80 + 1];
        union {
            char buf[CMSG_SPACE(sizeof(int) * BATCH)];
            struct cmsghdr align;
        } ctl;
        struct iovec iov = {text, sizeof(text) - 1};
        struct msghdr msg = {.msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = ctl.buf,
                             .msg_controllen = sizeof(ctl.buf)};
        ssize_t got = recvmsg(c, &msg, MSG_CMSG_CLOEXEC);
        if (got <= 0) {
            rc = got < 0 ? -errno : WEIR_ERR;
            break;
        }
        text[got] = '\0';
        if (got == 3 && memcmp(text, "END", 3) == 0)
            break;
        int fds[BATCH];
        size_t nfd = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < k && nfd < BATCH; i++)
                    memcpy(&fds[nfd++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            }
        }
        /* One "FD ADDR" line per descriptor, in order. */
        size_t line = 0;
        char *save = NULL;
        for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
            if (strncmp(l, "FD ", 3) != 0 || line >= nfd)
                continue;
            weir_handoff_fd *nv = realloc(v, (n + 1) * sizeof(*v));
            if (!nv) {
                rc = WEIR_ERR_NOMEM;
                break;
            }
            v = nv;
            snprintf(v[n].addr, sizeof(v[n].addr), "%s", l + 3);
            v[n].fd = fds[line++];
            n++;
        }
        for (size_t i = line; i < nfd; i++)
            close(fds[i]); /* descriptors without a line */
        if (msg.msg_flags & MSG_CTRUNC)
            rc = WEIR_ERR;
        if (rc < 0)
            break;
    }
    if (rc < 0) {
        for (size_t i = 0; i < n; i++)
            close(v[i].fd);
        free(v);
        close(c);
        return rc;
    }
    *out = v;
    *n_out = n;
    *conn_out = c;
    return WEIR_OK;
}

void weir__handoff_ready(int conn)
{
    if (conn < 0)
        return;
    ssize_t w = send(conn, "READY", 5, MSG_NOSIGNAL);
    (void)w;
    close(conn);
}
