/*
 * limit.c - rate and concurrency limits, keyed by the client's address, a
 * header, a cookie or a query parameter, one limit across every worker.
 *
 *     [plugins.api_rate]
 *     category = "limit"
 *     type = "rate"           # or "inflight"
 *     tag = "ip"              # or "header", "cookie", "query"
 *     key = "X-Api-Key"       # the header/cookie/parameter name
 *     max = 100               # requests per interval, or at once
 *     interval = "1s"         # rate only
 *
 * Over the limit: 429 with Retry-After. A request without the key (no such
 * header, cookie or parameter) is not limited.
 *
 * rate is GCRA (the generic cell rate algorithm): per key, one atomic
 * "theoretical arrival time"; a request moves it one emission interval
 * (interval / max) ahead, and is refused when that would put it more than
 * `interval` ahead of now. So max requests may come at once, and then one
 * per interval / max: a sliding window without counters to reset.
 * inflight counts the key's requests in progress (incremented when one
 * passes, decremented when it is logged).
 *
 * The table: SLOTS slots of (key fingerprint, value) shared by all
 * workers, no lock: a key takes a free or expired slot with one CAS (up
 * to PROBE tries), and keys that find none share a slot, which can only
 * limit them more, never less. The table is the plugin's state, so a
 * reload keeps the buckets (and the counts of requests still in flight).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app/fields.h"
#include "app/plugin/plugins.h"

#define SLOTS 16384 /* a power of two */
#define PROBE 4

typedef enum ltype { L_RATE, L_INFLIGHT } ltype;
typedef enum ltag { T_IP, T_HEADER, T_COOKIE, T_QUERY } ltag;

typedef struct limit_conf {
    ltype type;
    ltag tag;
    char *key;
    uint32_t max;
    uint64_t interval_ns;
} limit_conf;

typedef struct slot {
    _Atomic uint64_t key;   /* fingerprint, 0 = free */
    _Atomic uint64_t value; /* rate: arrival time (ns); inflight: requests in progress */
} slot;

typedef struct limit_state {
    slot rate[SLOTS];
    slot inflight[SLOTS];
} limit_state;

/* Per request: the inflight slot it counted in, for logging. */
typedef struct limit_ctx {
    slot *held;
} limit_ctx;

static void limit_free(void *conf)
{
    limit_conf *l = conf;
    free(l->key);
    free(l);
}

static bool limit_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    limit_conf *l = calloc(1, sizeof(*l));
    if (!l)
        return false;
    *conf = l;
    bool present;
    weir_toml_entry e;
    char *s = weir__cfg_dup_string(ld, t, "type", section, &present);
    if (s && strcmp(s, "inflight") == 0) {
        l->type = L_INFLIGHT;
    } else if (s && strcmp(s, "rate") != 0) {
        weir__cfg_entry_of(t, "type", &e);
        weir__cfg_err_at(ld, e.line, "'type' in [%s] must be rate or inflight, not '%s'", section,
                         s);
    }
    free(s);
    s = weir__cfg_dup_string(ld, t, "tag", section, &present);
    if (s) {
        static const char *const tags[] = {"ip", "header", "cookie", "query"};
        int found = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(s, tags[i]) == 0)
                found = i;
        if (found < 0) {
            weir__cfg_entry_of(t, "tag", &e);
            weir__cfg_err_at(ld, e.line,
                             "'tag' in [%s] must be ip, header, cookie or query, not '%s'", section,
                             s);
        } else {
            l->tag = (ltag)found;
        }
        free(s);
    }
    l->key = weir__cfg_dup_string(ld, t, "key", section, &present);
    if (l->tag == T_IP && present) { /* a key with tag ip would be ignored: say so */
        weir__cfg_entry_of(t, "key", &e);
        weir__cfg_err_at(ld, e.line,
                         "'key' in [%s] is for tag header, cookie or query (tag ip limits by "
                         "the client address)",
                         section);
    }
    if (l->tag != T_IP && (!l->key || !l->key[0]))
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'key': the %s to limit by", section,
                         l->tag == T_HEADER   ? "header"
                         : l->tag == T_COOKIE ? "cookie"
                                              : "parameter");
    int64_t max;
    if (weir__cfg_get_int(ld, t, "max", section, 1, 1000000000, &max))
        l->max = (uint32_t)max;
    else if (!weir__cfg_entry_of(t, "max", &e))
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'max'", section);
    uint32_t ms = 1000;
    weir__cfg_get_duration(ld, t, "interval", section, 86400000, false, &ms);
    if (l->type == L_INFLIGHT && weir__cfg_entry_of(t, "interval", &e))
        weir__cfg_err_at(ld, e.line, "'interval' in [%s] is for type = \"rate\"", section);
    l->interval_ns = (uint64_t)ms * 1000000;
    return true;
}

static void *limit_state_new(const void *conf)
{
    return calloc(1, sizeof(limit_state));
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t fingerprint(weir_str k)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < k.len; i++) {
        h ^= (unsigned char)k.ptr[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    return h ? h : 1;
}

static weir_str key_of(weir_session *s, const limit_conf *l)
{
    switch (l->tag) {
    case T_IP:
        return weir_session_client_ip(s);
    case T_HEADER:
        return weir_headers_get(weir_session_req_headers(s), l->key);
    case T_COOKIE:
        return weir__cookie(weir_session_req_headers(s), l->key);
    case T_QUERY:
        return weir__query_param(weir_session_query(s), l->key);
    }
    return WEIR_STR_NULL;
}

/* The key's slot: its own, a free or expired one it takes, or (table full
 * around it) the first one it probed, shared. */
static slot *slot_of(slot *table, uint64_t fp, uint64_t now, bool rate)
{
    size_t base = (size_t)fp & (SLOTS - 1);
    for (int i = 0; i < PROBE; i++) {
        slot *sl = &table[(base + (size_t)i) & (SLOTS - 1)];
        uint64_t k = atomic_load_explicit(&sl->key, memory_order_acquire);
        if (k == fp)
            return sl;
        uint64_t v = atomic_load_explicit(&sl->value, memory_order_relaxed);
        /* Free, or nothing left of its key's use: rate past, none in flight. */
        bool idle = k == 0 || (rate ? v <= now : v == 0);
        if (idle && atomic_compare_exchange_strong_explicit(&sl->key, &k, fp, memory_order_acq_rel,
                                                            memory_order_acquire)) {
            if (rate)
                atomic_store_explicit(&sl->value, 0, memory_order_relaxed);
            return sl;
        }
        if (k == fp)
            return sl;
    }
    return &table[base];
}

static weir_phase_result too_many(weir_session *s, uint64_t retry_ns)
{
    char ra[24];
    uint64_t sec = (retry_ns + 999999999u) / 1000000000u;
    snprintf(ra, sizeof(ra), "%llu", (unsigned long long)(sec ? sec : 1));
    weir_header h[2] = {{WEIR_STR("Retry-After"), {ra, strlen(ra)}},
                        {WEIR_STR("Content-Type"), WEIR_STR("text/plain")}};
    static const char body[] = "429 Too Many Requests\n";
    if (weir_session_respond(s, 429, h, 2, body, sizeof(body) - 1) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

static weir_phase_result limit_request(weir_plugin_call *c)
{
    const limit_conf *l = c->plugin->conf;
    limit_state *st = c->plugin->state ? c->plugin->state->data : NULL;
    if (!st)
        return WEIR_PHASE_CONTINUE;
    weir_str k = key_of(c->s, l);
    if (!k.ptr || k.len == 0)
        return WEIR_PHASE_CONTINUE;
    uint64_t fp = fingerprint(k), now = now_ns();
    if (l->type == L_INFLIGHT) {
        slot *sl;
        uint64_t n;
        for (int tries = 0;; tries++) {
            sl = slot_of(st->inflight, fp, now, false);
            n = atomic_fetch_add_explicit(&sl->value, 1, memory_order_acq_rel);
            /* Another key may have taken the slot (free, count 0) between
             * the look-up and the increment: then the count went to it.
             * Once counted the slot cannot change hands, so checking after
             * is enough. (A slot shared by keys is checked by nobody.) */
            uint64_t owner = atomic_load_explicit(&sl->key, memory_order_acquire);
            if (owner == fp || tries == PROBE)
                break;
            if (sl == &st->inflight[(size_t)fp & (SLOTS - 1)] && owner != 0 && tries > 0)
                break;
            atomic_fetch_sub_explicit(&sl->value, 1, memory_order_acq_rel);
        }
        if (n >= l->max) {
            atomic_fetch_sub_explicit(&sl->value, 1, memory_order_acq_rel);
            return too_many(c->s, 1000000000u);
        }
        ((limit_ctx *)c->ctx)->held = sl;
        return WEIR_PHASE_CONTINUE;
    }
    /* GCRA. */
    uint64_t t = l->interval_ns / l->max ? l->interval_ns / l->max : 1;
    slot *sl = slot_of(st->rate, fp, now, true);
    uint64_t tat = atomic_load_explicit(&sl->value, memory_order_relaxed);
    for (;;) {
        uint64_t next = (tat > now ? tat : now) + t;
        if (next - now > l->interval_ns)
            return too_many(c->s, next - now - l->interval_ns);
        if (atomic_compare_exchange_weak_explicit(&sl->value, &tat, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return WEIR_PHASE_CONTINUE;
    }
}

static void limit_logging(weir_plugin_call *c, const weir_session_stats *st)
{
    limit_ctx *x = c->ctx;
    if (x && x->held) {
        atomic_fetch_sub_explicit(&x->held->value, 1, memory_order_acq_rel);
        x->held = NULL;
    }
}

const weir_plugin_def weir__plugin_limit = {
    .category = "limit",
    .keys = (const weir_cfg_key[]){{"type", WEIR_CT_STRING, NULL},
                                   {"tag", WEIR_CT_STRING, NULL},
                                   {"key", WEIR_CT_STRING, NULL},
                                   {"max", WEIR_CT_INTEGER, NULL},
                                   {"interval", WEIR_CT_DURATION, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = limit_parse,
    .free = limit_free,
    .ctx_size = sizeof(limit_ctx),
    .state_new = limit_state_new,
    .state_free = free,
    .request = limit_request,
    .logging = limit_logging,
};
