/*
 * sock.c - socket helpers.
 */
#include "net/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ascii.h"
#include "weir/types.h"

int weir__addr_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[WEIR_ADDR_STRLEN];
    const char *colon;
    memset(ss, 0, sizeof(*ss));
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || end[1] != ':' || (size_t)(end - text - 1) >= sizeof(host))
            return WEIR_ERR_INVAL;
        memcpy(host, text + 1, (size_t)(end - text - 1));
        host[end - text - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) >= sizeof(host))
            return WEIR_ERR_INVAL;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        if (strchr(host, ':'))
            return WEIR_ERR_INVAL; /* IPv6 must be bracketed: "[::1]:80" */
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || port < 0 || port > 65535)
        return WEIR_ERR_INVAL;

    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (strcmp(host, "*") == 0 || host[0] == '\0') {
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_ANY);
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof(*v4);
    } else if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*v6);
    } else {
        return WEIR_ERR_INVAL;
    }
    return 0;
}

size_t weir__addr_format_ip(const struct sockaddr *sa, char *buf, size_t buf_len)
{
    if (sa->sa_family == AF_INET && buf_len >= 16) {
        /* Every request formats its client's address: without printf
         * (glibc's inet_ntop for IPv4 is one). */
        const unsigned char *a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        size_t n = 0;
        for (int i = 0; i < 4; i++) {
            if (i)
                buf[n++] = '.';
            n += weir__put_dec(buf + n, a[i]);
        }
        buf[n] = '\0';
        return n;
    }
    const void *src = sa->sa_family == AF_INET6
                          ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                          : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    if (!inet_ntop(sa->sa_family, src, buf, (socklen_t)buf_len)) {
        snprintf(buf, buf_len, "?");
    }
    return strlen(buf);
}

void weir__addr_format(const struct sockaddr *sa, char *buf, size_t buf_len)
{
    char ip[INET6_ADDRSTRLEN];
    size_t n = weir__addr_format_ip(sa, ip, sizeof(ip));
    bool v6 = sa->sa_family == AF_INET6;
    unsigned port = ntohs(v6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                             : ((const struct sockaddr_in *)sa)->sin_port);
    if (buf_len < n + 9) { /* "[" ip "]:" 5 digits NUL */
        snprintf(buf, buf_len, v6 ? "[%s]:%u" : "%s:%u", ip, port);
        return;
    }
    size_t o = 0;
    if (v6)
        buf[o++] = '[';
    memcpy(buf + o, ip, n);
    o += n;
    if (v6)
        buf[o++] = ']';
    buf[o++] = ':';
    o += weir__put_dec(buf + o, port);
    buf[o] = '\0';
}

bool weir__addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

/*
 * A socket of type with the options a listener has before bind; -errno.
 * SO_REUSEADDR only for TCP, where it lets a restart bind past TIME_WAIT:
 * on UDP it would let any socket with it share the port (and take its
 * datagrams), which is what the probe must find.
 */
static int bindable_socket(const struct sockaddr *sa, int type, bool reuseport)
{
    int fd = socket(sa->sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (type == SOCK_STREAM)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    /* The probe must see the same conflicts as the real bind: [::]:80
     * shares nothing with 0.0.0.0:80 either way. */
    if (sa->sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    return fd;
}

int weir__listen_socket(const struct sockaddr *sa, socklen_t len, int type, bool reuseport,
                        int backlog)
{
    int fd = bindable_socket(sa, type, reuseport);
    if (fd < 0)
        return fd;
    if (type == SOCK_DGRAM && weir__addr_is_wildcard(sa)) {
        /* Each datagram says which local address it came to: the reply
         * must leave from there. */
        int one = 1;
        if (sa->sa_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
        else
            setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
    }
    if (bind(fd, sa, len) < 0 || (type == SOCK_STREAM && listen(fd, backlog) < 0)) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

bool weir__addr_is_wildcard(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_ANY);
}

int weir__listen_addr_free(const struct sockaddr *sa, socklen_t len, int type)
{
    int fd = bindable_socket(sa, type, false);
    if (fd < 0)
        return fd;
    int rc = bind(fd, sa, len) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int weir__connect_start(const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, sa, len) < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

/* ---- the public forms (weir/addr.h) ---- */

int weir_addr_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    return weir__addr_parse(text, ss, len);
}

void weir_addr_format(const struct sockaddr *sa, char *buf, size_t buf_len)
{
    weir__addr_format(sa, buf, buf_len);
}

size_t weir_addr_format_ip(const struct sockaddr *sa, char *buf, size_t buf_len)
{
    return weir__addr_format_ip(sa, buf, buf_len);
}

bool weir_addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
    return weir__addr_equal(a, b);
}
