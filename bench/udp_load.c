/*
 * udp_load.c - load and backend for the UDP benchmark (bench/udp.py), one
 * thread, epoll:
 *
 *   udp_load serve PORT                  backend: echoes every datagram to its sender
 *   udp_load ping PORT CLIENTS SECS      CLIENTS sockets, each with one 64-byte
 *                                        datagram in flight: send, wait for the echo,
 *                                        send the next; a datagram unanswered for
 *                                        200 ms counts as lost and is sent anew.
 *                                        prints "replies=N lost=L secs=S"
 *   udp_load fresh PORT CLIENTS SECS     the same, but each query from a new socket
 *                                        (a new client port: a new session)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 64
#define LOST_MS 200

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int serve(int port)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = loopback(port);
    int big = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("bind");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    enum { BATCH = 64 };
    static char bufs[BATCH][2048];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in from[BATCH];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){bufs[i], sizeof(bufs[i])};
            msgs[i].msg_hdr = (struct msghdr){.msg_name = &from[i],
                                              .msg_namelen = sizeof(from[i]),
                                              .msg_iov = &iov[i],
                                              .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0)
            continue;
        for (int i = 0; i < n; i++)
            iov[i].iov_len = msgs[i].msg_len;
        sendmmsg(fd, msgs, (unsigned)n, 0);
    }
}

typedef struct client {
    int fd;
    double sent_at;
} client;

static int open_client(int ep, int port, client *c, int ix)
{
    c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = loopback(port);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)ix};
    return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void send_one(client *c)
{
    char m[MSG];
    memset(m, 'q', sizeof(m));
    send(c->fd, m, sizeof(m), 0);
    c->sent_at = now();
}

static int ping(int port, int n, double secs, bool fresh)
{
    int ep = epoll_create1(0);
    client *cs = calloc((size_t)n, sizeof(*cs));
    for (int i = 0; i < n; i++) {
        if (open_client(ep, port, &cs[i], i) < 0) {
            perror("client");
            return 1;
        }
        send_one(&cs[i]);
    }
    uint64_t replies = 0, lost = 0;
    double t0 = now(), end = t0 + secs, last_check = t0;
    struct epoll_event evs[256];
    while (now() < end) {
        int k = epoll_wait(ep, evs, 256, 50);
        for (int j = 0; j < k; j++) {
            client *c = &cs[evs[j].data.u32];
            char m[2048];
            while (recv(c->fd, m, sizeof(m), 0) > 0) {
                replies++;
                if (fresh) {
                    close(c->fd);
                    open_client(ep, port, c, (int)evs[j].data.u32);
                }
                send_one(c);
                if (fresh)
                    break;
            }
        }
        double t = now();
        if (t - last_check > 0.05) {
            last_check = t;
            for (int i = 0; i < n; i++) {
                if (t - cs[i].sent_at > LOST_MS / 1000.0) {
                    lost++;
                    send_one(&cs[i]);
                }
            }
        }
    }
    printf("replies=%llu lost=%llu secs=%.3f\n", (unsigned long long)replies,
           (unsigned long long)lost, now() - t0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "serve") == 0)
        return serve(atoi(argv[2]));
    if (argc == 5 && (strcmp(argv[1], "ping") == 0 || strcmp(argv[1], "fresh") == 0))
        return ping(atoi(argv[2]), atoi(argv[3]), atof(argv[4]), argv[1][0] == 'f');
    fprintf(stderr, "usage: udp_load serve PORT | ping|fresh PORT CLIENTS SECS\n");
    return 2;
}
