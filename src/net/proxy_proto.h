/*
 * proxy_proto.h - the PROXY protocol, versions 1 (text) and 2 (binary),
 * as HAProxy's proxy-protocol.txt defines it: parsing the header a load
 * balancer in front of weir sends first on a connection, and writing the
 * header weir sends to a backend that expects one.
 *
 * The parser is incremental (call it again with more bytes), bounded
 * (WEIR_PP_MAX bytes at most), and decides early: the first bytes that
 * cannot start a header refuse it, so a client that sends something else
 * is turned away without waiting for a timeout.
 */
#ifndef WEIR_NET_PROXY_PROTO_H
#define WEIR_NET_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* v1: 107 bytes at most ("PROXY UNKNOWN" + two IPv6 addresses + ports +
 * CRLF). v2: 16 + its length; weir takes no v2 header over 4096 bytes
 * (the addresses and a few TLVs need a few hundred). */
#define WEIR_PP_V1_MAX 107
#define WEIR_PP_MAX 4096

/* v2 TLV types (proxy-protocol.txt 2.2). */
enum {
    WEIR_PP2_TYPE_ALPN = 0x01,
    WEIR_PP2_TYPE_AUTHORITY = 0x02,
    WEIR_PP2_TYPE_CRC32C = 0x03,
    WEIR_PP2_TYPE_NOOP = 0x04,
    WEIR_PP2_TYPE_UNIQUE_ID = 0x05,
    WEIR_PP2_TYPE_SSL = 0x20,
    WEIR_PP2_TYPE_NETNS = 0x30,
};

typedef struct weir_pp_header {
    int version; /* 1 or 2 */
    /* The addresses of the client's connection to the sender (src) and of
     * the sender's listener (dst). has_addrs false: v1 UNKNOWN, v2 LOCAL
     * (the sender's own connection, e.g. a health check), or a v2 family
     * weir does not use (AF_UNSPEC, AF_UNIX): keep the socket's own. */
    bool has_addrs;
    bool local;    /* v2 command LOCAL */
    int transport; /* v2: SOCK_STREAM, SOCK_DGRAM or 0 (unspecified); v1: SOCK_STREAM */
    struct sockaddr_storage src, dst;
    socklen_t src_len, dst_len;
    /* v2: the TLVs (each checked to lie within the header), pointing into
     * the parsed buffer; NULL/0 otherwise. */
    const uint8_t *tlvs;
    size_t tlvs_len;
} weir_pp_header;

/*
 * Parses a PROXY header at the start of buf[0..len). Returns its length
 * (> 0) with *out filled in; 0 if buf is a valid beginning and more bytes
 * are needed; -1 if it is not a valid header (or too long: WEIR_PP_MAX).
 * A v2 header with a CRC32C TLV must carry the right checksum.
 */
ssize_t weir__pp_parse(const uint8_t *buf, size_t len, weir_pp_header *out);

/*
 * Finds the first TLV of `type` in h's TLVs: its value and length, or NULL.
 */
const uint8_t *weir__pp_tlv(const weir_pp_header *h, uint8_t type, size_t *len);

/*
 * Writes a v1 header for a connection from src to dst (both AF_INET or
 * both AF_INET6; otherwise "PROXY UNKNOWN") into buf. Returns its length,
 * or 0 if cap is too small (WEIR_PP_V1_MAX is always enough).
 */
size_t weir__pp_write_v1(char *buf, size_t cap, const struct sockaddr *src,
                         const struct sockaddr *dst);

/*
 * Writes a v2 PROXY (STREAM) header for src -> dst (LOCAL with no
 * addresses when they are NULL or of different families), with an
 * AUTHORITY TLV when authority is not NULL (the TLS server name the client
 * asked for), into buf. Returns its length, or 0 if cap is too small.
 */
size_t weir__pp_write_v2(uint8_t *buf, size_t cap, const struct sockaddr *src,
                         const struct sockaddr *dst, const char *authority);

/* What weir__pp_take found. */
enum {
    WEIR_PP_TAKEN = 1,    /* a header, consumed: *out holds it */
    WEIR_PP_MORE = 0,     /* not complete yet: call again when readable */
    WEIR_PP_CLOSED = -1,  /* the peer closed or failed before a whole header */
    WEIR_PP_INVALID = -2, /* not a valid PROXY header (or one for a datagram) */
};

/*
 * Reads a stream's PROXY header from socket fd: peeks, then consumes
 * exactly its bytes, so what follows stays for its own reader (TLS, HTTP,
 * a tunnel). The caller reads on at once: bytes or a FIN that came with
 * the header raise no new edge.
 */
int weir__pp_take(int fd, weir_pp_header *out);

/* CRC-32C (Castagnoli) of data, as the CRC32C TLV carries it. */
uint32_t weir__crc32c(uint32_t crc, const uint8_t *data, size_t len);

#endif
