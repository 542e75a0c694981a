/*
 * l4_load.c - load and backends for the L4 benchmark (bench/l4.py), one
 * thread, epoll:
 *
 *   l4_load serve PORT                      backend: each connection's first byte
 *                                           picks its mode: 'u' discard what comes,
 *                                           'd' send zeros until the peer closes,
 *                                           'e' echo one read and close
 *   l4_load up|down PORT CONNS SECS         CONNS connections to PORT sending
 *                                           (up) or receiving (down) for SECS;
 *                                           prints "bytes=N secs=S"
 *   l4_load conns PORT CONNS SECS           short connections, CONNS at once: connect,
 *                                           send 'e'+16 bytes, read them back, close;
 *                                           prints "conns=N failed=F secs=S"
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (256 * 1024)

static char buf[BUF];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- the backend ---- */

typedef struct bconn {
    int fd;
    char mode; /* 0 until the first byte */
} bconn;

static int serve(int port)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 4096) < 0) {
        perror("listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("listening\n");
    fflush(stdout);
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            bconn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    c = calloc(1, sizeof(*c));
                    c->fd = fd;
                    struct epoll_event ce = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            bool done = false;
            if (c->mode != 'd') {
                for (;;) {
                    ssize_t r = read(c->fd, buf, BUF);
                    if (r == 0 || (r < 0 && errno != EAGAIN)) {
                        done = true;
                        break;
                    }
                    if (r < 0)
                        break;
                    if (!c->mode)
                        c->mode = buf[0];
                    if (c->mode == 'e') {
                        (void)!write(c->fd, buf, (size_t)r);
                        done = true;
                        break;
                    }
                    if (c->mode == 'd')
                        break;
                }
            }
            if (!done && c->mode == 'd') {
                for (;;) {
                    ssize_t w = send(c->fd, buf, BUF, MSG_NOSIGNAL);
                    if (w < 0) {
                        done = errno != EAGAIN;
                        break;
                    }
                }
            }
            if (done) {
                close(c->fd);
                free(c);
            }
        }
    }
}

/* ---- the load ---- */

static int stream(int port, int conns, double secs, bool up)
{
    int ep = epoll_create1(0);
    for (int i = 0; i < conns; i++) {
        int fd = dial(port);
        if (fd < 0)
            return 1;
        struct epoll_event ev = {.events = (up ? EPOLLOUT : EPOLLIN) | EPOLLET, .data.fd = fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        /* The mode byte; the backend discards (u) or sends (d). */
        char m = up ? 'u' : 'd';
        for (int k = 0; k < 200; k++) {
            if (send(fd, &m, 1, MSG_NOSIGNAL) == 1)
                break;
            usleep(1000);
        }
    }
    memset(buf, 'x', BUF);
    uint64_t total = 0;
    double t0 = now(), end = t0 + secs;
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            for (;;) {
                ssize_t r = up ? send(fd, buf, BUF, MSG_NOSIGNAL) : read(fd, buf, BUF);
                if (r <= 0)
                    break;
                total += (uint64_t)r;
            }
        }
    }
    double took = now() - t0;
    printf("bytes=%llu secs=%.3f\n", (unsigned long long)total, took);
    return 0;
}

typedef struct sconn {
    int fd;
    int state; /* 0 connecting, 1 reading */
} sconn;

static void short_start(int ep, int port, sconn *c, uint64_t *failed)
{
    for (;;) {
        c->fd = dial(port);
        if (c->fd >= 0)
            break;
        (*failed)++;
        usleep(1000);
    }
    c->state = 0;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static int shorts(int port, int conns, double secs)
{
    int ep = epoll_create1(0);
    sconn *v = calloc((size_t)conns, sizeof(*v));
    uint64_t done = 0, failed = 0;
    for (int i = 0; i < conns; i++)
        short_start(ep, port, &v[i], &failed);
    static const char msg[] = "e0123456789abcdef";
    double t0 = now(), end = t0 + secs;
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            sconn *c = evs[i].data.ptr;
            if (c->state == 0) {
                if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                    failed++;
                } else {
                    if (send(c->fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL) != sizeof(msg) - 1) {
                        failed++;
                    } else {
                        c->state = 1;
                        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                        continue;
                    }
                }
            } else {
                char r[64];
                ssize_t got = read(c->fd, r, sizeof(r));
                if (got < 0 && errno == EAGAIN)
                    continue;
                if (got == (ssize_t)(sizeof(msg) - 1))
                    done++;
                else
                    failed++;
            }
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            short_start(ep, port, c, &failed);
        }
    }
    printf("conns=%llu failed=%llu secs=%.3f\n", (unsigned long long)done,
           (unsigned long long)failed, now() - t0);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "serve") == 0)
        return serve(atoi(argv[2]));
    if (argc == 5 && (strcmp(argv[1], "up") == 0 || strcmp(argv[1], "down") == 0))
        return stream(atoi(argv[2]), atoi(argv[3]), atof(argv[4]), argv[1][0] == 'u');
    if (argc == 5 && strcmp(argv[1], "conns") == 0)
        return shorts(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
    fprintf(stderr, "usage: l4_load serve PORT | up|down|conns PORT CONNS SECS\n");
    return 2;
}
