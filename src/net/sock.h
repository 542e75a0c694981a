/*
 * sock.h - socket helpers: address parsing/formatting, listening sockets,
 * non-blocking connect.
 */
#ifndef WEIR_NET_SOCK_H
#define WEIR_NET_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "weir/addr.h" /* WEIR_ADDR_STRLEN, and the public forms of these */

/* Parses "ip:port", "[v6]:port" or "*:port" (numeric only, no DNS).
 * Returns 0, or WEIR_ERR_INVAL. */
int weir__addr_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len);
/* Formats ss as "ip:port" / "[v6]:port" into buf (WEIR_ADDR_STRLEN). */
void weir__addr_format(const struct sockaddr *sa, char *buf, size_t buf_len);
/* Formats only the IP ("1.2.3.4", "::1"); returns its length. */
size_t weir__addr_format_ip(const struct sockaddr *sa, char *buf, size_t buf_len);
bool weir__addr_equal(const struct sockaddr *a, const struct sockaddr *b);

/* A non-blocking listening socket of type (SOCK_STREAM: with
 * SO_REUSEADDR; SOCK_DGRAM: bound only, with IP_PKTINFO or
 * IPV6_RECVPKTINFO on a wildcard address) and, if reuseport,
 * SO_REUSEPORT. Returns the fd or -errno. */
int weir__listen_socket(const struct sockaddr *sa, socklen_t len, int type, bool reuseport,
                        int backlog);
/* Whether sa is 0.0.0.0 or [::]. */
bool weir__addr_is_wildcard(const struct sockaddr *sa);

/*
 * Whether another socket already listens on sa. SO_REUSEPORT lets every
 * process of our user join a listening address, so a second weir (or an
 * nginx with reuseport) would silently share its connections: before its
 * first socket on an address, weir binds a probe there without
 * SO_REUSEPORT (SO_REUSEADDR kept for TCP, so TIME_WAIT does not count),
 * which any listener of that type refuses, and closes it at once. Returns 0 (free),
 * -EADDRINUSE, or another -errno from the probe.
 */
int weir__listen_addr_free(const struct sockaddr *sa, socklen_t len, int type);

/* Starts a non-blocking connect with TCP_NODELAY. Returns the fd (the
 * connection may still be in progress) or -errno. */
int weir__connect_start(const struct sockaddr *sa, socklen_t len);

#endif
