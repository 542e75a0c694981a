/*
 * round_robin.c - the classic tutorial load balancer on libweir.
 *
 *     round_robin LISTEN_ADDR PEER1 PEER2
 *     round_robin 127.0.0.1:6188 127.0.0.1:8001 127.0.0.1:8002
 *
 * upstream_peer alternates between the two peers, upstream_request_filter
 * sets the Host header the backends expect, and every request prints
 * "upstream peer is: ADDR".
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <weir/weir.h>

typedef struct lb {
    weir_peer peers[2];
    _Atomic unsigned next;
} lb;

/* The per-request context is the load balancer itself: nothing per request. */
static void *new_ctx(weir_session *s, void *app)
{
    return app;
}

static weir_phase_result upstream_peer(weir_session *s, void *ctx, weir_peer *peer)
{
    lb *b = ctx;
    unsigned i = atomic_fetch_add(&b->next, 1) % 2;
    memcpy(&peer->addr, &b->peers[i].addr, sizeof(peer->addr));
    peer->addr_len = b->peers[i].addr_len;
    char addr[64];
    printf("upstream peer is: %s\n", weir_peer_addr_str(peer, addr, sizeof(addr)));
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result upstream_request_filter(weir_session *s, void *ctx)
{
    if (weir_headers_set(weir_session_req_headers(s), "Host", "one.one.one.one") != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_CONTINUE;
}

static const weir_proxy_ops ops = {
    .new_ctx = new_ctx,
    .upstream_peer = upstream_peer,
    .upstream_request_filter = upstream_request_filter,
};

int main(int argc, char **argv)
{
    static lb b;
    if (argc != 4) {
        fprintf(stderr, "usage: %s LISTEN_ADDR PEER1 PEER2\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < 2; i++) {
        if (weir_peer_set_addr(&b.peers[i], argv[2 + i]) != WEIR_OK) {
            fprintf(stderr, "%s: invalid peer address '%s'\n", argv[0], argv[2 + i]);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    weir_server_options opts = {.threads = 1, .handle_signals = true};
    weir_server *srv = weir_server_new(&opts);
    const char *listen[] = {argv[1]};
    if (!srv || weir_server_add_proxy(srv, listen, 1, &ops, &b, NULL) != WEIR_OK) {
        fprintf(stderr, "%s: cannot set up the proxy on %s\n", argv[0], argv[1]);
        weir_server_free(srv);
        return 1;
    }
    int rc = weir_server_run(srv);
    weir_server_free(srv);
    return rc == WEIR_OK ? 0 : 1;
}
