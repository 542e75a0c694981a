/*
 * weir-pp-tool.c - weir's PROXY protocol code (src/net/proxy_proto.c)
 * against real peers, for tests/integration/test_proxy_protocol.py:
 *
 *   weir-pp-tool read PORT N
 *       listens on 127.0.0.1:PORT, and for each of N connections reads a
 *       PROXY header with weir__pp_parse, prints one line
 *       "v<version> <src> <dst> authority=<tlv> next=<next bytes>" (or
 *       "refused"), answers a small HTTP 200 and closes.
 *   weir-pp-tool send v1|v2 PORT SRC DST
 *       connects to 127.0.0.1:PORT, sends the header weir writes for SRC
 *       -> DST ("ip:port" each), then a GET, and prints the response.
 *
 * Every wait is bounded (5 s).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/proxy_proto.h"
#include "net/sock.h"

static int wait_fd(int fd, short ev)
{
    struct pollfd p = {.fd = fd, .events = ev};
    return poll(&p, 1, 5000) == 1 ? 0 : -1;
}

static int do_read(int port, int n)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 16) < 0) {
        perror("listen");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        if (wait_fd(ls, POLLIN) < 0)
            return 1;
        int c = accept(ls, NULL, NULL);
        if (c < 0 && (errno == ECONNABORTED || errno == EINTR || errno == EPROTO)) {
            /* A connection reset in the backlog (a start-up probe's,
             * dropped by the sender): not one of the n. */
            i--;
            continue;
        }
        if (c < 0) {
            perror("accept");
            return 1;
        }
        uint8_t buf[WEIR_PP_MAX + 512];
        size_t len = 0;
        weir_pp_header h;
        ssize_t r = 0;
        while (r == 0 && len < sizeof(buf) && wait_fd(c, POLLIN) == 0) {
            ssize_t got = read(c, buf + len, sizeof(buf) - len);
            if (got <= 0)
                break;
            len += (size_t)got;
            r = weir__pp_parse(buf, len, &h);
        }
        if (r <= 0) {
            printf("refused\n");
        } else {
            char s[WEIR_ADDR_STRLEN] = "-", d[WEIR_ADDR_STRLEN] = "-", auth[300] = "";
            if (h.has_addrs) {
                weir__addr_format((struct sockaddr *)&h.src, s, sizeof(s));
                weir__addr_format((struct sockaddr *)&h.dst, d, sizeof(d));
            }
            size_t al;
            const uint8_t *av = weir__pp_tlv(&h, WEIR_PP2_TYPE_AUTHORITY, &al);
            if (av)
                snprintf(auth, sizeof(auth), "%.*s", (int)al, (const char *)av);
            /* The bytes after the header may come in a later segment. */
            if ((size_t)r == len && wait_fd(c, POLLIN) == 0) {
                ssize_t got = read(c, buf + len, sizeof(buf) - len);
                if (got > 0)
                    len += (size_t)got;
            }
            size_t rest = len - (size_t)r;
            printf("v%d %s %s authority=%s next=%.*s\n", h.version, s, d, auth,
                   (int)(rest > 3 ? 3 : rest), (const char *)buf + r);
            static const char ok[] =
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
            /* A probe's connection may be gone: no SIGPIPE for it. */
            if (send(c, ok, sizeof(ok) - 1, MSG_NOSIGNAL) < 0)
                perror("send");
        }
        fflush(stdout);
        close(c);
    }
    close(ls);
    return 0;
}

static int do_send(const char *ver, int port, const char *src, const char *dst)
{
    struct sockaddr_storage s, d;
    socklen_t sl, dl;
    if (weir__addr_parse(src, &s, &sl) < 0 || weir__addr_parse(dst, &d, &dl) < 0) {
        fprintf(stderr, "bad address\n");
        return 2;
    }
    uint8_t hdr[512];
    size_t n = strcmp(ver, "v1") == 0
                   ? weir__pp_write_v1((char *)hdr, sizeof(hdr), (struct sockaddr *)&s,
                                       (struct sockaddr *)&d)
                   : weir__pp_write_v2(hdr, sizeof(hdr), (struct sockaddr *)&s,
                                       (struct sockaddr *)&d, NULL);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c, (struct sockaddr *)&a, sizeof(a)) < 0) {
        perror("connect");
        return 1;
    }
    static const char get[] = "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    if (write(c, hdr, n) != (ssize_t)n || write(c, get, sizeof(get) - 1) < 0) {
        perror("write");
        return 1;
    }
    char buf[4096];
    size_t len = 0;
    while (len < sizeof(buf) - 1 && wait_fd(c, POLLIN) == 0) {
        ssize_t got = read(c, buf + len, sizeof(buf) - 1 - len);
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    buf[len] = '\0';
    fputs(buf, stdout);
    close(c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "read") == 0)
        return do_read(atoi(argv[2]), atoi(argv[3]));
    if (argc == 6 && strcmp(argv[1], "send") == 0)
        return do_send(argv[2], atoi(argv[3]), argv[4], argv[5]);
    fprintf(stderr, "usage: weir-pp-tool read PORT N | send v1|v2 PORT SRC DST\n");
    return 2;
}
