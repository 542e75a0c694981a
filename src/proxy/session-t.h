/*
 * session-t.h - the session's state (types only), shared by the state
 * machine (session.c) and the public session API (session_api.c).
 *
 * Owner: the worker thread running the session; nothing here is touched
 * from another thread except through weir_session_resume().
 */
#ifndef WEIR_PROXY_SESSION_T_H
#define WEIR_PROXY_SESSION_T_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/loop.h"
#include "http/exchange.h"
#include "http/h1_exchange.h"
#include "http/h2_client.h"
#include "http/msg.h"
#include "net/conn_limit.h"
#include "net/sock.h"
#include "net/splice.h"
#include "net/tls.h"
#include "net/upool.h"
#include "proxy/service.h"
#include "weir/proxy.h"

#define MAX_SEGS 8
#define MAX_ATTEMPTS 16
#define MAX_RESPONSE_HEAD (64 * 1024)

typedef enum sess_state {
    SS_EARLY,     /* early_request_filter */
    SS_REQUEST,   /* request_filter */
    SS_CACHE,     /* request_cache_filter, then the cache lookup (session_cache.c) */
    SS_BUFFER,    /* the request body is read into memory before a backend is chosen */
    SS_PEER,      /* upstream_peer */
    SS_CONNECT,   /* TCP connect in progress */
    SS_UP_FILTER, /* upstream_request_filter, then the request head goes out */
    SS_PROXY,     /* waiting for the response head (request body streams) */
    SS_RESP_HEAD, /* upstream_response_filter, response_filter, head to the client */
    SS_RESP_BODY, /* response body streams to the client */
    SS_TUNNEL,    /* after a 101: bytes flow both ways until either side closes */
    SS_FLUSH,     /* everything queued; waiting for the client to take it */
    SS_DONE,      /* finished: logging, then freed */
} sess_state;

/* One direction of body streaming. */
typedef struct pump {
    weir_exchange *src, *dst;
    weir_str segs[MAX_SEGS];
    /* The last read: n_avail segments of src_len source bytes; with a body
     * filter they go one at a time (seg_pos is the next), since a filter's
     * output stays valid only until its next call. */
    size_t n_avail, seg_pos;
    uint64_t src_len;
    bool queued;    /* segs are queued on dst, not yet flushed */
    uint64_t moved; /* body bytes consumed from src so far */
    bool done;      /* end of body queued and flushed */
    bool end_queued;
    int err;      /* error, if any */
    bool err_src; /* the error came from the source side */
    /* The request pump replays a buffered body first (SS_BUFFER):
     * pre_off bytes of the session's body buffer are written. */
    size_t pre_off;
    bool from_pre; /* the queued segment came from the buffer */
    bool paused;   /* the filter was told of the source's pause (no read since) */
} pump;

/* Where a generated response's body comes from (session_gen.c): the
 * response pump reads it like an upstream's. */
typedef enum gen_kind {
    GEN_NONE,   /* no body source (no generated response, or no body) */
    GEN_MEMORY, /* gen_body, copied by weir_session_respond */
    GEN_STREAM, /* a weir_body_producer */
    GEN_FILE,   /* fd from off, left bytes to go */
} gen_kind;

typedef struct gen_source {
    weir_exchange x; /* read_body / consume_body for the response pump */
    weir_session *s;
    gen_kind kind;
    weir_body_producer prod; /* GEN_STREAM */
    int fd;                  /* GEN_FILE: owned, closed by weir__gen_release */
    uint64_t off, left;      /* GEN_FILE: next byte, bytes to go */
    uint64_t produced;       /* GEN_STREAM: bytes so far (checked against length) */
    char *buf;               /* one piece; pooled when chunk is WEIR_BUF_SIZE */
    uint32_t chunk;          /* weir_session_set_body_chunk; 0 = WEIR_BUF_SIZE */
    uint32_t have;           /* bytes of buf handed out, not yet consumed */
    bool given;              /* GEN_MEMORY: the body was handed out */
    bool end;                /* the producer said WEIR_DONE */
    bool waiting;            /* the producer said WEIR_AGAIN */
    bool no_sendfile;        /* the client side declined sendfile */
    bool complete;           /* the whole body went out */
} gen_source;

struct weir_session {
    weir_service *svc;
    weir_loop *loop;
    void *ctx;
    sess_state state;
    bool running, rerun;

    /* the client side */
    weir_stream_origin origin;       /* the connection or stream the request came on */
    struct weir_subrequest *subreqs; /* its sub-requests in flight (subrequest.c) */
    weir_exchange *down;
    const struct sockaddr *client_addr;
    uint8_t client_ip_len; /* of client_ip, below */
    uint8_t peer_ip_len;
    weir_str path;    /* the normalised path (request_gate.h) */
    bool close_after; /* neither connection carries another request */
    SSL *down_ssl;    /* the client connection's TLS, or NULL */
    /* Its handshake (loop clock), for the first request on the connection
     * only; 0: none. */
    uint64_t tls_hs_start_us;
    uint32_t tls_hs_us;
    uint32_t client_idle_ms; /* weir_session_set_client_timeout; 0 = the service's */

    /* the upstream side (the peer itself is below) */
    weir_upconn *up;
    weir_h1x upx;
    weir_h2us *h2up; /* the upstream stream when the peer speaks HTTP/2 */
    weir_exchange *upex;
    int attempts;
    bool up_reused; /* the connection came from the keep-alive pool */
    bool tunnel;    /* a 101 turned the exchange into a byte tunnel */
    /* A tunnel between two plain sockets moves bytes with splice(2)
     * (direction 0: client to backend), never through user space. */
    weir_splice sp;
    bool half_closed; /* the client's side of the tunnel ended; the backend's goes on */
    char *resp_buf;   /* the released upstream's read buffer: the response
                         head's slices point into it until the session ends */
    uint32_t resp_buf_cap;
    bool up_filter_done; /* upstream_request_filter ran and proxy headers were added */
    bool added_set;      /* weir_session_set_added_headers chose `added` */
    uint8_t added;       /* its WEIR_ADD_* bits */
    bool have_peer;      /* s->peer holds the last peer tried */

    weir_str up_target; /* rewritten target, or .ptr NULL */

    pump req_pump, resp_pump;
    bool req_head_sent;
    uint64_t body_limit; /* weir_session_set_body_limit; 0 = none */
    weir_str request_id; /* .ptr NULL until first asked for or added */

    /* weir_session_buffer_body: the body (or its first buf_max bytes) read
     * before the backend is chosen, replayed to each attempt */
    char *buf;
    size_t buf_len, buf_cap, buf_max;
    bool buf_complete; /* the whole body is buffered (trailers in buf_trailers) */
    bool buf_pooled;   /* buf is a pooled I/O buffer (else arena memory) */
    weir_str buf_trailers;
    /* weir_session_buffer_to_file: past buf_max, the body (all of it,
     * from its first byte) is in an unnamed temporary file instead */
    bool spilled;          /* spill_fd is open and holds the body so far */
    int spill_fd;          /* valid only while spilled */
    uint64_t spill_len;    /* bytes in the file */
    uint64_t spill_max;    /* 0 = never spill */
    const char *spill_dir; /* where the file is made */
    char *spill_rbuf;      /* a pooled buffer replays the file to the backend */

    /* weir_session_read_body: the body gathered in arena memory */
    weir_session_body_cb body_cb;
    char *body_buf;
    size_t body_len, body_cap, body_max;
    bool body_reading, body_read_used;

    /* phases */
    bool no_resp_body_filter; /* weir_session_skip_response_body_filter */
    bool no_req_body_filter;  /* weir_session_skip_request_body_filter */
    bool body_flushing;       /* weir_session_body_flushing */
    bool pending;             /* a phase returned PENDING */
    bool have_result;         /* resume delivered a result for the current phase */
    weir_phase_result result;
    int sub; /* sub-step within a state (RESP_HEAD: which filter) */

    /* a response generated by weir (respond() or an error page) */
    bool generated;
    weir_str gen_body;
    gen_source gen;
    bool gen_cut;      /* its body failed midway: the client connection closes */
    bool resp_started; /* the response head was queued to the client */
    bool failed;
    bool client_aborted;
    const char *error;
    weir_failure failure; /* of the last failed attempt */
    /* Waiting for a connection under the peer's conn_limit */
    weir_conn_waiter waiter;
    weir_timer queue_timer;
    bool queued;      /* in the limit's queue (the session pends) */
    bool queue_woken; /* woken to take an idle connection: goes first */
    bool has_slot;    /* holds a slot of peer.conn_limit, no connection yet */
    char term[2];     /* termination state (weir_session_stats), 0 until decided */

    weir_timer up_timer;
    weir_timer client_timer;
    weir_timer user_timer;
    weir_session_timer_cb user_cb;

    int64_t t_start_us, t_up_start_us, t_up_end_us;
    int64_t t_connect_us, connect_us; /* start of the last connect, its duration */
    uint64_t head_len;

    /* The HTTP cache (session_cache.c), once a phase turned it on */
    struct sess_cache *cache;
    bool cache_https; /* a background refresh of an https request */

    weir_arena arena;

    /* From here on, what is not zeroed on reuse (the pool zeroes what is
     * above): memory that is written before it is read. */
    weir_peer peer;                 /* reset by start_peer before each pick */
    char up_addr[WEIR_ADDR_STRLEN]; /* its text, formatted on first use (have_peer) */
    char client_ip[48];             /* the peer's, or the client a trusted proxy names */
    char peer_ip[48];               /* both set by begin() */
    /* The messages are reset by stream_new up to their inline header
     * arrays, which fill on use; the arena's first block holds only what
     * was allocated. */
    weir_msg req;
    weir_msg resp;
    _Alignas(8) char arena_mem[1024];
};

/* The state machine's steps and helpers shared by session*.c. */
void weir__session_set_state(weir_session *s, int to);
void weir__session_terminate(weir_session *s, char who);
/* The request failed with status: error_while_proxy or weir's error page
 * (session_reply.c). */
void weir__session_fail(weir_session *s, int status, const char *reason);
/* "ip:port" of the last peer tried, or "-". */
const char *weir__session_up_addr(weir_session *s);
/* Request id, X-Forwarded-*, Via on the request going upstream
 * (session_forward.c). */
int weir__session_add_proxy_headers(weir_session *s);
void weir__session_release_upstream(weir_session *s, bool reusable);
/* A pump's error when its body filter returned other than CONTINUE. */
#define PUMP_E_FILTER (-2900)
/* Moves body bytes from p->src to p->dst until one side blocks (see
 * session_pump.c): WEIR_DONE when the whole body is written, WEIR_AGAIN
 * when blocked, or an error (p->err, p->err_src). */
int weir__session_pump_run(weir_session *s, pump *p,
                           weir_phase_result (*filter)(weir_session *, void *, weir_str *, bool));
bool weir__session_wants_buffer(const weir_session *s); /* session_buffer.c */
void weir__session_step_buffer(weir_session *s);
/* The buffered body from byte `off`: WEIR_OK with a slice (valid until the
 * next call), WEIR_DONE past its end, or an error reading the file back. */
int weir__session_pre_read(weir_session *s, size_t off, weir_str *seg);
bool weir__session_has_pre(const weir_session *s, size_t off);
/* Gathers the body for weir_session_read_body while the phase that asked
 * for it pends; calls its callback at the end. */
void weir__session_read_whole_body(weir_session *s);
/* Gives the body buffer and the file back (the session ends). */
void weir__session_buffer_free(weir_session *s);
void weir__session_step_tunnel(weir_session *s); /* session_tunnel.c */
/* The cache (session_cache.c): the CACHE state; the response head after
 * upstream_response_filter (true: it is answered from the store now);
 * each piece of the upstream body; its end; a failure before the response
 * (true: a stale response answers); an abort (false: a wake is on its way,
 * the session stays pending); the client not taking the body as fast as it
 * comes; the session's end. */
void weir__session_step_cache(weir_session *s);
bool weir__cache_response(weir_session *s);
void weir__cache_tee(weir_session *s, const weir_str *segs, size_t n);
void weir__cache_body_end(weir_session *s);
bool weir__cache_on_fail(weir_session *s, int status);
bool weir__cache_abort(weir_session *s);
void weir__cache_client_slow(weir_session *s);
void weir__cache_end(weir_session *s);
/* The worker stops: its background refreshes end. */
void weir__cache_shutdown(void);
void weir__session_end_splice(weir_session *s);

/* The state machine's driver and end (session.c), for the API's use. */
void weir__session_run(weir_session *s);
void weir__session_run_task(void *arg);
void weir__session_finish(weir_session *s);

/* The generated body as a pump source (session_gen.c): WEIR_OK when
 * there is one (s->gen.x), WEIR_DONE when the response has no body. */
void weir__gen_start(weir_session *s);
/* Sends a file body with sendfile when the client side can:
 * WEIR_DECLINED (pump it instead), or what pump_run would return. */
int weir__gen_sendfile(weir_session *s);
/* Ends the body source: the producer's done, the file closed, the
 * buffer given back. Idempotent. */
void weir__gen_release(weir_session *s);

/* Makes the session's response a generated one (weir_session_respond and
 * weir's error pages); gRPC requests get a trailers-only answer. */
int weir__session_set_generated(weir_session *s, int status, const weir_header *headers, size_t n,
                                const void *body, size_t body_len);
/* The same for a body from elsewhere (s->gen): `length` bytes, or -1. */
int weir__session_set_generated_head(weir_session *s, int status, const weir_header *headers,
                                     size_t n, int64_t length);

#endif
