/*
 * plugin.h - the weir program's plugin contract.
 *
 * A plugin category (a weir_plugin_def, one per .c file in this folder,
 * listed in registry.c's static table like nginx's ngx_modules[]) turns a
 * [plugins.NAME] table into a configuration, and hooks the phases it needs.
 * A location lists the plugins it runs, in order:
 *
 *     [plugins.hello]
 *     category = "mock"
 *     status = 200
 *     data = "hello"
 *
 *     [locations.l]
 *     plugins = ["hello"]
 *
 * Steps (Pingap's names; `step = "..."` moves a plugin's request hook
 * where its category allows): early_request (as soon as the location is
 * known, before anything else runs for the request), request (after the
 * location's own rules: body limit, rewrite), proxy_upstream (the request
 * about to go to the chosen backend), and on the way back
 * upstream_response and response.
 *
 * A hook returns a weir_phase_result: CONTINUE runs the next plugin,
 * ANSWERED (after weir_session_respond) ends the chain and the request's
 * processing, ERROR fails the request (500), PENDING parks the chain
 * until the plugin calls weir__plugin_resume() on the session's worker,
 * which goes on with the next plugin.
 *
 * Memory: the configuration (conf) is made by parse on the main thread and
 * read by every worker, never written. A category that keeps counters or
 * buckets across requests declares state_new: the state of [plugins.NAME]
 * is kept across reloads as long as NAME keeps its category (reference
 * counted; the old snapshot's requests and the new one's share it), and
 * must be safe to use from every worker at once. Per-request memory
 * (ctx_size bytes, zeroed) lives in the session arena.
 */
#ifndef WEIR_APP_PLUGIN_PLUGIN_H
#define WEIR_APP_PLUGIN_PLUGIN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/config/read.h"
#include "weir/weir.h"

typedef enum weir_plugin_step {
    WEIR_STEP_EARLY_REQUEST,
    WEIR_STEP_REQUEST,
    WEIR_STEP_PROXY_UPSTREAM,
    WEIR_STEP_UPSTREAM_RESPONSE,
    WEIR_STEP_RESPONSE,
    WEIR_STEP_COUNT
} weir_plugin_step;

#define WEIR_STEP_BIT(s) (1u << (s))
/* The request-side steps a `step` key may choose. */
#define WEIR_STEPS_REQUEST_SIDE                                                                    \
    (WEIR_STEP_BIT(WEIR_STEP_EARLY_REQUEST) | WEIR_STEP_BIT(WEIR_STEP_REQUEST) |                   \
     WEIR_STEP_BIT(WEIR_STEP_PROXY_UPSTREAM))

typedef struct weir_plugin weir_plugin;
typedef struct weir_plugin_call weir_plugin_call;

/* State that outlives a snapshot (see above). */
typedef struct weir_plugin_state {
    _Atomic long refs;
    void *data;
    void (*free)(void *data);
} weir_plugin_state;

/* What a hook is given. */
struct weir_plugin_call {
    weir_session *s;
    const weir_plugin *plugin; /* its conf and state */
    void *ctx;                 /* this plugin's per-request memory, or NULL (ctx_size 0) */
    void *req;                 /* the program's request context (app_int.h req_ctx) */
    /* The header table of the step's message: the request's at the request
     * steps, the response's at upstream_response and response; NULL in
     * the body and logging hooks. */
    weir_headers *headers;
    /* request_body: this piece is the first of the body sent again, to
     * another connection or backend (a retry replays it from its start):
     * what the hook kept of the earlier attempt is void. */
    bool restart;
    /* response_body: the source paused (weir_session_body_flushing): give
     * what is held back, if it can go now. */
    bool flush;
};

typedef weir_phase_result (*weir_plugin_hook)(weir_plugin_call *c);

typedef struct weir_plugin_def {
    const char *category;
    /* Keys of [plugins.NAME] besides category and step; a NULL name ends it. */
    const weir_cfg_key *keys;
    /* Steps the request hook may run at, and where it runs by default. */
    uint32_t steps;
    weir_plugin_step default_step;
    /* Reads [plugins.NAME] (t, in section "plugins.NAME") into *conf.
     * Errors go through ld (FILE:LINE: message); returns false on any. */
    bool (*parse)(loader *ld, const weir_toml_value *t, const char *section, void **conf);
    void (*free)(void *conf);
    /* Optional: after the whole document is loaded, resolves what conf
     * names (an upstream). Errors through ld. */
    void (*link)(loader *ld, void *conf, const char *section);
    /* Per-request memory, zeroed, in the session arena (0: none). */
    size_t ctx_size;
    /* Optional state kept across reloads: made from the first conf. */
    void *(*state_new)(const void *conf);
    void (*state_free)(void *data);
    /* The request hook, at the plugin's step; response hooks. */
    weir_plugin_hook request;
    weir_plugin_hook upstream_response;
    weir_plugin_hook response;
    /*
     * Each piece of the response body, in order; `end` on the last call
     * (the chunk may then be empty). The hook may point *chunk at its own
     * memory, valid until its next call, to change the bytes; one that
     * changes the length must have removed Content-Length in its response
     * hook (the body then goes chunked). Must not pend. NULL = none.
     */
    weir_phase_result (*response_body)(weir_plugin_call *c, weir_str *chunk, bool end);
    /*
     * Each piece of the request body on its way to the backend, with the
     * same rules (a hook that changes the length removes Content-Length in
     * its request hook; the body then goes chunked). A retry sends the body
     * again from its start: the hook then sees c->restart on its first
     * piece. Returning ERROR ends the request (the client gets 502, the
     * backend connection is dropped). NULL = none.
     */
    weir_phase_result (*request_body)(weir_plugin_call *c, weir_str *chunk, bool end);
    /* The request is over. */
    void (*logging)(weir_plugin_call *c, const weir_session_stats *st);
    /*
     * Its response and response_body hooks run after those of every plugin
     * without this flag, whatever the order of the location's list: an
     * encoder (compression) must see the body as the other filters left
     * it, as nginx's gzip filter comes after sub_filter.
     */
    bool runs_last;
    /* Its body hook leaves a 206 (a part of a body) untouched
     * (compression): a directory on its location still serves ranges,
     * which it does not under a plugin that may change any body. */
    bool keeps_ranges;
    /* Its request hook answers every request (directory): a location with
     * it needs no upstream, unless it runs at proxy_upstream. */
    bool answers;
    /*
     * A conf doing a's work and then b's, for two plugins of this category
     * next to each other in a chain (at one step), borrowing from both
     * (they outlive it); NULL when it cannot. A chain of header plugins
     * then runs as one call. Only for categories without per-request
     * memory, state or pending. NULL = never merged.
     */
    void *(*merge)(const void *a, const void *b);
} weir_plugin_def;

/* One [plugins.NAME] (or a location's built-in rule made into one). */
struct weir_plugin {
    char *name;
    int line;
    const weir_plugin_def *def;
    weir_plugin_step step; /* where its request hook runs */
    void *conf;
    weir_plugin_state *state; /* NULL without state_new, and in weir -t */
    bool builtin;             /* made from a location's or server's own keys */
};

/* The category called `name`, or NULL; the table (registry.c). */
const weir_plugin_def *weir__plugin_def(const char *category);
extern const weir_plugin_def *const weir__plugin_defs[];
extern const size_t weir__n_plugin_defs;

/* The step called `name` ("early_request", ...), or -1. */
int weir__plugin_step_of(const char *name);
const char *weir__plugin_step_name(weir_plugin_step step);

/*
 * Gives every plugin of cfg that keeps state its state: the one of the
 * plugin of the same name and category in old (the running snapshot; NULL
 * at start), shared, else a new one. Main thread, before cfg becomes
 * current. False on out of memory.
 */
bool weir__plugin_states(struct weir_config *cfg, const struct weir_config *old);

/* Frees a plugin made by the loader (its conf; its state reference). */
void weir__plugin_free(weir_plugin *p);
void weir__plugin_state_unref(weir_plugin_state *st);

/*
 * Continues a chain parked by a hook that returned PENDING: `result` is
 * what that hook would have returned. On the session's worker (a session
 * timer, a task posted to it); exactly once per PENDING. PENDING again
 * keeps the chain parked on the same hook (it set another timer or
 * started another sub-request).
 */
void weir__plugin_resume(weir_session *s, weir_phase_result result);
/* The plugin whose hook returned PENDING for this session (for its timer
 * callback), or NULL. */
const weir_plugin *weir__plugin_parked(weir_session *s);
/* Its per-request memory (ctx_size), or NULL. */
void *weir__plugin_parked_ctx(weir_session *s);

/* ---- helpers for categories ---- */

/* parse for a category whose only key is a required `path` starting with
 * '/' (ping, stats): *conf is the malloc'd path. */
bool weir__plugin_parse_path(loader *ld, const weir_toml_value *t, const char *section,
                             void **conf);

/* The value of every field `name` of h, joined with ", " in session
 * memory when there are several (RFC 9110 5.3: they are one list); the
 * first's value itself when there is one; .ptr NULL when none. */
weir_str weir__plugin_field(weir_session *s, const weir_headers *h, const char *name);

/* A strong ETag of h becomes weak (W/"..."): the body it names is
 * changed (compressed, filtered). */
void weir__plugin_weaken_etag(weir_session *s, weir_headers *h);

/* An http(s) URL a plugin asks with sub-requests (url.c). */
typedef struct weir_plugin_url {
    weir_peer peer;       /* resolved when loaded; TLS for https */
    weir_tls_client *tls; /* https: the system's CAs, or ca_file's */
    char *authority;      /* host[:port] as written */
    char *target;         /* path and query, "/" at least */
} weir_plugin_url;

/* Reads the URL of key (and the section's ca_file for https) into u,
 * errors through ld. False if the key is absent. */
bool weir__plugin_url(loader *ld, const weir_toml_value *t, const char *key, const char *section,
                      weir_plugin_url *u);
void weir__plugin_url_free(weir_plugin_url *u);

/* True if ip (text, v4 or v6) is in one of the n blocks (an IPv4 block
 * matches an IPv4-mapped IPv6 address). */
bool weir__plugin_ip_in(const weir_cidr *c, size_t n, weir_str ip);

/* Answers `status` with a text/plain body (copied). */
weir_phase_result weir__plugin_respond_text(weir_session *s, int status, const char *text,
                                            size_t len);

#endif
