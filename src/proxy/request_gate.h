/*
 * request_gate.h - what every request passes before any phase sees it
 * (DESIGN.md, "Trust rules"): the form of its target, one normalised path,
 * the hop-by-hop fields the client nominated, identity headers from
 * untrusted peers, and framing that forbids reusing the connections.
 *
 * Pure functions of their arguments (plus arena memory): any thread.
 */
#ifndef WEIR_PROXY_REQUEST_GATE_H
#define WEIR_PROXY_REQUEST_GATE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core/arena.h"
#include "http/msg.h"
#include "weir/proxy.h"

/* What the gate decided about a request. */
typedef struct weir_gate {
    int status;          /* 0: pass; else the request is answered with it (400, 405, 414) */
    const char *reason;  /* why, for the error log (static) */
    weir_str path;       /* the normalised path: a slice of the target or arena memory */
    weir_str fwd_target; /* the target to send upstream, or .ptr NULL for the client's */
    bool close;          /* GET or HEAD with a body: close both connections after */
} weir_gate;

/*
 * Checks and normalises request m (its headers are edited in place: the
 * fields the client's Connection header nominates, the Connection field
 * itself, names with '_' unless allowed, and identity fields when the peer
 * is not trusted go). Fills *g; g->status is 0 if the request may go on.
 */
void weir__gate_request(weir_msg *m, weir_arena *a, const weir_proxy_options *o, bool trusted_peer,
                        weir_gate *g);

/* Removes from a response head the fields its Connection header nominates
 * (except framing fields), and the Connection fields. */
void weir__gate_response(weir_msg *m);

/*
 * Normalises an origin-form path (starting with '/', no query) into out
 * (capacity at least in.len): unreserved characters decoded, other escapes
 * kept with upper-case hex, "." and ".." segments resolved, repeated
 * slashes merged if merge_slashes. Returns the length, or 0 with *why set
 * when the path must be refused (invalid percent-encoding, an encoded NUL,
 * a fragment, a control byte, a climb above the root, or a "." or ".."
 * segment once %2F, %5C or '\' count as separators).
 */
size_t weir__path_normalize(weir_str in, bool merge_slashes, char *out, const char **why);

/*
 * target ("/path?query") with its path normalised, in arena memory (or
 * target itself when already normal). WEIR_ERR_INVAL with *why set if it
 * must be refused, WEIR_ERR_NOMEM.
 */
int weir__gate_target(weir_arena *a, weir_str target, bool merge_slashes, weir_str *out,
                      const char **why);

/* True if addr is in one of the n blocks (an IPv4-mapped IPv6 address
 * matches IPv4 blocks). */
bool weir__cidr_match(const weir_cidr *v, size_t n, const struct sockaddr *addr);

/*
 * The client address a trusted peer forwards: walking the X-Forwarded-For
 * fields of h from the right, the first address not in o's trusted
 * proxies, or the leftmost valid one if all are trusted. Writes its text
 * into out (cap bytes) and returns its length, or 0 if the fields name no
 * valid address (the peer's address is then the client's).
 */
size_t weir__gate_forwarded_client(const weir_headers *h, const weir_proxy_options *o, char *out,
                                   size_t cap);

/* True if id may be passed on as a request id: 1..64 bytes of
 * [A-Za-z0-9._:-], without "..". */
bool weir__request_id_ok(weir_str id);

#endif
