/*
 * client_hello.h - the server name (SNI) of a TLS ClientHello, read
 * without terminating TLS: for passthrough routing by name.
 */
#ifndef WEIR_NET_CLIENT_HELLO_H
#define WEIR_NET_CLIENT_HELLO_H

#include <stddef.h>
#include <stdint.h>

/* The most weir reads of a connection's first bytes looking for it: a
 * ClientHello with post-quantum key shares is about 2 KB; a TLS record
 * holds at most 16 KB. */
#define WEIR_CH_MAX (16384 + 5)

enum {
    WEIR_CH_FOUND = 1,    /* a whole ClientHello: sni holds its name, or "" for none */
    WEIR_CH_MORE = 0,     /* a valid beginning: more bytes are needed */
    WEIR_CH_INVALID = -1, /* not a TLS ClientHello (or one over WEIR_CH_MAX bytes) */
};

/*
 * Looks at the first len bytes of a connection for a ClientHello, in one
 * TLS record or several (a fragmented handshake message). On FOUND, sni
 * (cap bytes, at least 256) gets its host_name in lower case without a
 * trailing dot, or "" when it names none; a name that is not a valid DNS
 * name (characters, label and total lengths) makes the ClientHello
 * INVALID.
 */
int weir__client_hello_sni(const uint8_t *buf, size_t len, char *sni, size_t cap);

#endif
