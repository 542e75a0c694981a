/*
 * discovery.c - an upstream's lookup service (weir/lb.h): rounds on the
 * control thread, their answers applied as one change set, and the rules
 * every source gets: a failed or empty answer never changes the members,
 * failures back off, every change is one log line.
 *
 * Rounds:
 *   IDLE --timer--> IN FLIGHT --weir_lookup_done--> IDLE (timer re-armed)
 * A round may end on any thread (a program's source may answer from its
 * own); the state is under d->lock and the timer, which only the control
 * thread may touch, is re-armed there: at once when the answer comes on
 * the control thread, else through a task posted to its loop. The control
 * thread stops on every change of the server's upstreams: detach cancels
 * the round in flight (its answer, when it comes, is dropped) and the next
 * runner attaches again with the schedule kept in d.
 *
 * Lifetime: d is refcounted, one reference for the upstream and one per
 * round and posted task, so an answer arriving after weir_upstream_free
 * finds d and drops itself.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/loop.h"
#include "lb/upstream_int.h"

#define LOG_LIST_MAX 16 /* addresses named in one change line */

typedef struct lb_discovery {
    pthread_mutex_t lock;
    _Atomic long refs;
    weir_upstream *u; /* NULL once the upstream is freed */
    weir_lookup_service svc;
    weir_lookup *round; /* in flight, or NULL */
    weir_loop *loop;    /* the control loop while attached */
    weir_timer timer;   /* on loop; control thread only */
    bool started;       /* a first round was planned */
    uint64_t due_ms;    /* monotonic (weir__lb_now_ms) time of the next round */
    uint32_t backoff_ms;
    weir_discovery_info info;
} lb_discovery;

struct weir_lookup {
    lb_discovery *d; /* a reference */
    bool cancelled;
};

static void disc_unref(lb_discovery *d)
{
    if (atomic_fetch_sub(&d->refs, 1) != 1)
        return;
    if (d->svc.free)
        d->svc.free(d->svc.ud);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int weir_upstream_set_lookup(weir_upstream *u, const weir_lookup_service *svc)
{
    if (svc && !svc->lookup)
        return WEIR_ERR_INVAL;
    lb_discovery *d = NULL;
    if (svc) {
        d = calloc(1, sizeof(*d));
        if (!d)
            return WEIR_ERR_NOMEM;
        pthread_mutex_init(&d->lock, NULL);
        d->refs = 1;
        d->u = u;
        d->svc = *svc;
        d->svc.kind[sizeof(d->svc.kind) - 1] = '\0';
        if (!d->svc.kind[0])
            snprintf(d->svc.kind, sizeof(d->svc.kind), "lookup");
        if (!d->svc.interval_ms)
            d->svc.interval_ms = 30000;
        if (!d->svc.retry_min_ms)
            d->svc.retry_min_ms = 1000;
        if (d->svc.retry_min_ms > d->svc.interval_ms)
            d->svc.retry_min_ms = d->svc.interval_ms;
        snprintf(d->info.kind, sizeof(d->info.kind), "%s", d->svc.kind);
    }
    weir__discovery_free(u);
    u->disc = d;
    return WEIR_OK;
}

void weir__discovery_free(weir_upstream *u)
{
    lb_discovery *d = u->disc;
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    d->u = NULL;
    pthread_mutex_unlock(&d->lock);
    u->disc = NULL;
    disc_unref(d);
}

/* ---- rounds (control thread) ---- */

static void round_due(weir_timer *t);

/* Arms the timer for d->due_ms (d->lock held, on d->loop's thread). */
static void arm(lb_discovery *d)
{
    uint64_t now = weir__lb_now_ms();
    weir__loop_update_time(d->loop);
    weir__timer_start(d->loop, &d->timer, d->due_ms > now ? d->due_ms - now : 0, round_due);
    d->info.next_round_ms = wall_ms() + (int64_t)(d->due_ms > now ? d->due_ms - now : 0);
}

static void round_due(weir_timer *t)
{
    lb_discovery *d = weir_container_of(t, lb_discovery, timer);
    pthread_mutex_lock(&d->lock);
    if (d->round || !d->u || !d->loop) {
        pthread_mutex_unlock(&d->lock);
        return; /* one round at a time; its end re-arms */
    }
    weir_lookup *r = calloc(1, sizeof(*r));
    if (!r) {
        d->due_ms = weir__lb_now_ms() + d->svc.retry_min_ms;
        arm(d);
        pthread_mutex_unlock(&d->lock);
        return;
    }
    atomic_fetch_add(&d->refs, 1);
    r->d = d;
    d->round = r;
    d->info.next_round_ms = 0;
    pthread_mutex_unlock(&d->lock);
    /* Unlocked: the service may answer at once, from inside lookup. */
    d->svc.lookup(d->svc.ud, r);
}

void weir__discovery_attach(weir_upstream *u, weir_loop *loop)
{
    lb_discovery *d = u->disc;
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    d->loop = loop;
    if (!d->started) {
        d->started = true;
        d->due_ms = weir__lb_now_ms() + d->svc.first_ms;
    }
    if (!d->round)
        arm(d);
    pthread_mutex_unlock(&d->lock);
}

void weir__discovery_detach(weir_upstream *u)
{
    lb_discovery *d = u->disc;
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    weir_lookup *r = d->round;
    if (d->loop)
        weir__timer_stop(d->loop, &d->timer);
    d->loop = NULL;
    d->info.next_round_ms = 0;
    if (r) {
        /* The next runner starts a new round; this one's answer is dropped. */
        r->cancelled = true;
        d->round = NULL;
        d->due_ms = weir__lb_now_ms();
    }
    pthread_mutex_unlock(&d->lock);
    if (r && d->svc.cancel)
        d->svc.cancel(d->svc.ud, r);
}

static void rearm_task(void *arg)
{
    lb_discovery *d = arg;
    pthread_mutex_lock(&d->lock);
    if (d->loop && d->loop == weir__loop_current() && !d->round)
        arm(d);
    pthread_mutex_unlock(&d->lock);
    disc_unref(d);
}

/* ---- answers (any thread) ---- */

/* One change line: "+a +b -c", the first LOG_LIST_MAX addresses. */
typedef struct change_line {
    char text[LOG_LIST_MAX * 50];
    size_t len, listed, more;
} change_line;

static void note_change(void *ctx, bool added, const char *text)
{
    change_line *l = ctx;
    if (l->listed == LOG_LIST_MAX) {
        l->more++;
        return;
    }
    int w = snprintf(l->text + l->len, sizeof(l->text) - l->len, "%s%c%s", l->len ? " " : "",
                     added ? '+' : '-', text);
    if (w > 0 && (size_t)w < sizeof(l->text) - l->len)
        l->len += (size_t)w;
    l->listed++;
}

void weir_lookup_done(weir_lookup *round, const weir_lb_target *v, size_t n, uint32_t next_ms,
                      const char *error)
{
    lb_discovery *d = round->d;
    pthread_mutex_lock(&d->lock);
    weir_upstream *u = d->u;
    if (round->cancelled || !u || d->round != round) {
        pthread_mutex_unlock(&d->lock);
        free(round);
        disc_unref(d);
        return;
    }
    d->round = NULL;
    weir_discovery_info *in = &d->info;
    in->rounds++;
    bool failed = n == 0 || error;
    int rc = WEIR_OK;
    change_line line = {0};
    weir_lb_changes ch = {0};
    if (n > WEIR_UPSTREAM_MAX_BACKENDS) {
        failed = true;
        n = 0;
        error = "the answer has more backends than an upstream takes "
                "(WEIR_UPSTREAM_MAX_BACKENDS)";
    }
    if (n > 0) {
        rc = weir__lb_update(u, v, n, &ch, note_change, &line);
        if (rc != WEIR_OK) {
            failed = true;
            error = rc == WEIR_ERR_NOMEM ? "out of memory applying the answer"
                                         : "the answer has an invalid address or weight";
        }
    }
    size_t members = 0;
    if (ch.added || ch.removed) {
        in->changes++;
        in->added += ch.added;
        in->removed += ch.removed;
        pthread_mutex_lock(&u->lock);
        members = u->n_members;
        pthread_mutex_unlock(&u->lock);
        weir_log_info("upstream %s: %s%s%.0zu%s (%s, %zu backends)", u->name, line.text,
                      line.more ? " and " : "", line.more, line.more ? " more" : "", d->svc.kind,
                      members);
    }
    uint64_t now = weir__lb_now_ms();
    if (failed) {
        in->failures++;
        in->consecutive_failures++;
        in->last_failure_ms = wall_ms();
        const char *what = error ? error : "empty answer";
        snprintf(in->last_error, sizeof(in->last_error), "%s", what);
        d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : d->svc.retry_min_ms;
        if (d->backoff_ms > d->svc.interval_ms)
            d->backoff_ms = d->svc.interval_ms;
        weir_log_warn("upstream %s: %s discovery %s: %s; %s (failure %u in a row, next try in %u "
                      "ms)",
                      u->name, d->svc.kind, n ? "answered in part" : "failed", what,
                      n ? "the names that failed keep their last addresses"
                        : "the backends stay as they are",
                      in->consecutive_failures, d->backoff_ms);
        d->due_ms = now + d->backoff_ms;
    }
    if (!failed || (n > 0 && rc == WEIR_OK)) {
        in->last_success_ms = wall_ms();
        if (!failed) {
            in->consecutive_failures = 0;
            d->backoff_ms = 0;
            uint32_t after = next_ms && next_ms < d->svc.interval_ms ? next_ms : d->svc.interval_ms;
            d->due_ms = now + after;
        }
    }
    if (d->loop) {
        if (weir__loop_current() == d->loop) {
            arm(d);
        } else {
            atomic_fetch_add(&d->refs, 1);
            if (weir__loop_post(d->loop, rearm_task, d) != 0)
                atomic_fetch_sub(&d->refs, 1); /* the runner's next start plans it */
        }
    }
    pthread_mutex_unlock(&d->lock);
    free(round);
    disc_unref(d);
}

bool weir_upstream_discovery_info(weir_upstream *u, weir_discovery_info *out)
{
    lb_discovery *d = u->disc;
    if (!d)
        return false;
    pthread_mutex_lock(&d->lock);
    *out = d->info;
    pthread_mutex_unlock(&d->lock);
    return true;
}

bool weir_upstream_note_lookup(weir_upstream *u, const char *error)
{
    lb_discovery *d = u->disc;
    if (!d)
        return false;
    pthread_mutex_lock(&d->lock);
    weir_discovery_info *in = &d->info;
    in->rounds++;
    if (error) {
        in->failures++;
        in->consecutive_failures++;
        in->last_failure_ms = wall_ms();
        snprintf(in->last_error, sizeof(in->last_error), "%s", error);
    } else {
        in->consecutive_failures = 0;
        in->last_success_ms = wall_ms();
    }
    pthread_mutex_unlock(&d->lock);
    return true;
}
