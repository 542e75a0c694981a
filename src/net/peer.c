/*
 * peer.c - weir_peer helpers (public API).
 */
#include <string.h>

#include "net/sock.h"
#include "weir/peer.h"

int weir_peer_set_addr(weir_peer *peer, const char *ip_port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (weir__addr_parse(ip_port, &ss, &len) < 0)
        return WEIR_ERR_INVAL;
    memcpy(&peer->addr, &ss, sizeof(ss));
    peer->addr_len = len;
    return WEIR_OK;
}

const char *weir_peer_addr_str(const weir_peer *peer, char *buf, size_t buf_len)
{
    if (peer->addr_len == 0) {
        if (buf_len)
            buf[0] = '\0';
        return buf;
    }
    weir__addr_format((const struct sockaddr *)&peer->addr, buf, buf_len);
    return buf;
}
