/*
 * log.c - error log and the asynchronous access-log sink.
 *
 * The sink is a byte ring guarded by a mutex: workers append whole lines
 * (a memcpy under the lock, no I/O), the logger thread swaps out what is
 * there and writes it with one write(2). The ring is bounded; a full ring
 * drops the line and counts it rather than stall a worker.
 */
#include "core/log.h"

#include "weir/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = WEIR_LOG_INFO;

void weir__log_set_level(enum weir_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum weir_log_level weir__log_get_level(void)
{
    return (enum weir_log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};

#define LINE_CAP 2048

/* "TIME LEVEL " at the start of line; returns its length. */
static int line_head(char *line, enum weir_log_level level)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, LINE_CAP, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, LINE_CAP - (size_t)n, ".%03ldZ %s ", ts.tv_nsec / 1000000,
                  level_names[level]);
    return n;
}

/* Ends line (its text may have been cut) with a newline and writes it. */
static void line_write(char *line, int n)
{
    if (n > LINE_CAP - 2)
        n = LINE_CAP - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

/*
 * ---- the repeat limiter ----
 *
 * One dead backend under load logged a warning per request (97,198 lines
 * in 5 s) and a process out of descriptors one per connection attempt:
 * every line a write(2) to a shared file, burying whatever else happened.
 * So a warning or error that repeats is written once per interval (1 s)
 * per process; the copies are counted and summarised as "TEXT (repeated N
 * times)" when the interval ends (the flusher thread) or when the next
 * copy comes after it, whichever is first. The first occurrence is always
 * written; info and debug lines are never limited (state changes such as
 * "reloaded", or asked for).
 *
 * "The same message" is the same call site (format string) with the same
 * %s arguments: names, addresses, reasons. Numbers (%d, %u, %zu: attempt
 * counts, statuses, stream ids) and length-bounded strings (%.*s: request
 * targets, request ids, other slices of the wire) are not part of it, so
 * per-request detail does not make a message new, while two backends that
 * fail are two messages. A call site also writes at most SITE_CAP
 * different messages per interval (one per client address, say); further
 * ones are counted as "TEXT (and N more like it)".
 *
 * Cost of a suppressed copy: a walk of the format, a hash of its %s
 * arguments and a critical section of a few compares; no formatting, no
 * I/O. The table is fixed: a message that finds no free slot among the
 * few it may use is written unlimited rather than lost.
 */
#define REPEAT_SLOTS 512
#define REPEAT_PROBE 8
#define REPEAT_TEXT 256
#define SITE_CAP 8

typedef struct repeat_slot {
    uint64_t key;        /* 0: never used */
    uint64_t end_ms;     /* copies before this (monotonic) time are counted */
    uint32_t n_copies;   /* counted, not written, since the last summary */
    uint32_t n_distinct; /* site slots: messages written in this window */
    enum weir_log_level level;
    bool is_site;           /* counts a call site's messages, not one message */
    const char *fmt;        /* the summary's text until text is filled in */
    char text[REPEAT_TEXT]; /* the text written when the window opened */
} repeat_slot;

typedef struct repeat_summary {
    enum weir_log_level level;
    uint32_t n;
    bool is_site;
    char text[REPEAT_TEXT];
} repeat_summary;

/* Guarded by lock, except interval_ms. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* the flusher's: a count left zero */
    bool flusher_started;
    _Atomic unsigned interval_ms;
    repeat_slot slots[REPEAT_SLOTS];
} rep = {.lock = PTHREAD_MUTEX_INITIALIZER, .interval_ms = 1000};

static pthread_once_t rep_once = PTHREAD_ONCE_INIT;

/* Logging threads read the coarse clock (vDSO, a few ns); the flusher the
 * precise one, which is never behind it, so a window it sees as not ended
 * has not, and its timed wait never wakes before the due time. */
static uint64_t mono_ms(bool precise)
{
    struct timespec ts;
    clock_gettime(precise ? CLOCK_MONOTONIC : CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#define FNV_BASIS 14695981039346656037ull

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/*
 * The identity of a message (see above): its format's address and its
 * unbounded %s arguments. The other arguments are fetched by type only to
 * reach the next ones; a conversion this walk does not know ends it (the
 * key is then coarser, never a wrongly typed va_arg).
 */
static uint64_t message_key(const char *fmt, va_list ap_in)
{
    va_list ap;
    va_copy(ap, ap_in);
    uintptr_t site = (uintptr_t)fmt;
    uint64_t h = fnv(FNV_BASIS, &site, sizeof(site));
    for (const char *p = fmt; *p; p++) {
        if (*p != '%')
            continue;
        p++;
        while (*p && strchr("-+ #0'", *p))
            p++;
        if (*p == '*') {
            (void)va_arg(ap, int);
            p++;
        }
        while (*p >= '0' && *p <= '9')
            p++;
        bool bounded = false;
        if (*p == '.') {
            bounded = true;
            p++;
            if (*p == '*') {
                (void)va_arg(ap, int);
                p++;
            }
            while (*p >= '0' && *p <= '9')
                p++;
        }
        char len = 0; /* 'H' hh, 'h', 'l', 'q' ll, 'j', 'z', 't', 'L' */
        if (*p == 'h' || *p == 'l') {
            len = p[1] == *p ? (*p == 'h' ? 'H' : 'q') : *p;
            p += len == 'H' || len == 'q' ? 2 : 1;
        } else if (*p && strchr("jztL", *p)) {
            len = *p++;
        }
        switch (*p) {
        case '%':
        case 'm':
            break;
        case 'd':
        case 'i':
        case 'u':
        case 'o':
        case 'x':
        case 'X':
            if (len == 'l')
                (void)va_arg(ap, long);
            else if (len == 'q')
                (void)va_arg(ap, long long);
            else if (len == 'j')
                (void)va_arg(ap, intmax_t);
            else if (len == 'z')
                (void)va_arg(ap, size_t);
            else if (len == 't')
                (void)va_arg(ap, ptrdiff_t);
            else
                (void)va_arg(ap, int); /* hh and h are promoted */
            break;
        case 'c':
            (void)va_arg(ap, int); /* char and wint_t are promoted */
            break;
        case 's': {
            if (len == 'l') {
                (void)va_arg(ap, void *);
                break;
            }
            const char *str = va_arg(ap, const char *);
            if (!bounded) {
                h = fnv(h, str ? str : "", str ? strnlen(str, LINE_CAP) : 0);
                h = fnv(h, "", 1); /* ("ab","c") is not ("a","bc") */
            }
            break;
        }
        case 'p':
        case 'n':
            (void)va_arg(ap, void *);
            break;
        case 'e':
        case 'E':
        case 'f':
        case 'F':
        case 'g':
        case 'G':
        case 'a':
        case 'A':
            if (len == 'L')
                (void)va_arg(ap, long double);
            else
                (void)va_arg(ap, double);
            break;
        default:
            goto out;
        }
    }
out:
    va_end(ap);
    return h ? h : 1;
}

static uint64_t site_key(const char *fmt)
{
    uintptr_t site = (uintptr_t)fmt;
    uint64_t h = fnv(fnv(FNV_BASIS, "site", 4), &site, sizeof(site));
    return h ? h : 1;
}

/* The slot of key, or a free one claimed for it, or NULL (table crowded
 * here). A slot is free when its window ended with nothing counted. */
static repeat_slot *slot_get(uint64_t key, bool is_site, uint64_t now)
{
    repeat_slot *free_slot = NULL;
    for (size_t i = 0; i < REPEAT_PROBE; i++) {
        repeat_slot *s = &rep.slots[(key + i) % REPEAT_SLOTS];
        if (s->key == key)
            return s;
        if (!free_slot && (s->key == 0 || (now >= s->end_ms && s->n_copies == 0)))
            free_slot = s;
    }
    if (free_slot)
        *free_slot = (repeat_slot){.key = key, .is_site = is_site};
    return free_slot;
}

static void take_summary(repeat_slot *s, repeat_summary *out)
{
    out->level = s->level;
    out->n = s->n_copies;
    out->is_site = s->is_site;
    if (s->text[0])
        memcpy(out->text, s->text, sizeof(out->text));
    else
        snprintf(out->text, sizeof(out->text), "%s", s->fmt ? s->fmt : "");
    s->n_copies = 0;
}

static void summary_write(const repeat_summary *sum)
{
    char line[LINE_CAP];
    int n = line_head(line, sum->level);
    int m = snprintf(line + n, LINE_CAP - (size_t)n - 1,
                     sum->is_site ? "%s (and %u more like it)" : "%s (repeated %u time%s)",
                     sum->text, sum->n, sum->n == 1 ? "" : "s");
    line_write(line, n + (m > 0 ? m : 0));
}

/* Writes the summaries of windows ended by now (all pending ones when
 * flush_all), a batch at a time without the lock. Returns the earliest
 * end of a window still counting, or UINT64_MAX. Called locked. */
static uint64_t write_ended(uint64_t now, bool flush_all)
{
    for (;;) {
        repeat_summary out[8];
        size_t n = 0;
        uint64_t next = UINT64_MAX;
        for (size_t i = 0; i < REPEAT_SLOTS; i++) {
            repeat_slot *s = &rep.slots[i];
            if (s->n_copies == 0)
                continue;
            if (flush_all || now >= s->end_ms) {
                if (n < sizeof(out) / sizeof(out[0]))
                    take_summary(s, &out[n++]);
                else
                    next = now; /* another batch */
            } else if (s->end_ms < next) {
                next = s->end_ms;
            }
        }
        if (n == 0)
            return next;
        pthread_mutex_unlock(&rep.lock);
        for (size_t i = 0; i < n; i++)
            summary_write(&out[i]);
        pthread_mutex_lock(&rep.lock);
    }
}

static void *flusher_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&rep.lock);
    for (;;) {
        uint64_t next = write_ended(mono_ms(true), false);
        if (next == UINT64_MAX) {
            pthread_cond_wait(&rep.cond, &rep.lock);
            continue;
        }
        struct timespec ts = {(time_t)(next / 1000), (long)(next % 1000) * 1000000};
        pthread_cond_timedwait(&rep.cond, &rep.lock, &ts);
    }
    return NULL;
}

static void repeat_atexit(void)
{
    weir__log_flush_repeats();
}

/* fork (weir -d): the child has no flusher and must not report the
 * parent's counts a second time. */
static void rep_prefork(void)
{
    pthread_mutex_lock(&rep.lock);
}

static void rep_postfork_parent(void)
{
    pthread_mutex_unlock(&rep.lock);
}

static void rep_postfork_child(void)
{
    rep.flusher_started = false;
    for (size_t i = 0; i < REPEAT_SLOTS; i++)
        rep.slots[i].n_copies = 0;
    pthread_mutex_unlock(&rep.lock);
}

static void rep_init(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rep.cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_atfork(rep_prefork, rep_postfork_parent, rep_postfork_child);
    atexit(repeat_atexit);
}

/* A count left zero: the flusher must write it when its window ends.
 * Called locked. */
static void wake_flusher(void)
{
    if (rep.flusher_started) {
        pthread_cond_signal(&rep.cond);
        return;
    }
    /* Takes no signals: they belong to the main thread's signalfd. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    /* If it cannot start, summaries still come with the next copy or at
     * exit. */
    rep.flusher_started = pthread_create(&t, &a, flusher_main, NULL) == 0;
    pthread_attr_destroy(&a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void weir__log_set_repeat_interval(unsigned interval_ms)
{
    atomic_store(&rep.interval_ms, interval_ms);
}

void weir__log_flush_repeats(void)
{
    pthread_once(&rep_once, rep_init);
    pthread_mutex_lock(&rep.lock);
    write_ended(mono_ms(true), true);
    pthread_mutex_unlock(&rep.lock);
}

void weir__logv(enum weir_log_level level, const char *fmt, va_list ap)
{
    if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    unsigned interval_ms = atomic_load_explicit(&rep.interval_ms, memory_order_relaxed);
    bool limited = level <= WEIR_LOG_WARN && interval_ms > 0;
    repeat_summary sums[2];
    size_t n_sums = 0;
    uint64_t key = 0, site = 0;
    bool site_first = false;
    if (limited) {
        pthread_once(&rep_once, rep_init);
        key = message_key(fmt, ap);
        site = site_key(fmt);
        uint64_t now = mono_ms(false);
        pthread_mutex_lock(&rep.lock);
        repeat_slot *m = slot_get(key, false, now);
        if (m && now < m->end_ms) {
            if (m->n_copies++ == 0)
                wake_flusher();
            pthread_mutex_unlock(&rep.lock);
            return;
        }
        repeat_slot *s = slot_get(site, true, now);
        if (s && now < s->end_ms && s->n_distinct >= SITE_CAP) {
            if (s->n_copies++ == 0)
                wake_flusher();
            pthread_mutex_unlock(&rep.lock);
            return;
        }
        /* Written: first what the ended windows counted. */
        if (m && m->n_copies)
            take_summary(m, &sums[n_sums++]);
        if (s && now >= s->end_ms) {
            if (s->n_copies)
                take_summary(s, &sums[n_sums++]);
            s->end_ms = now + interval_ms;
            s->n_distinct = 0;
        }
        if (s) {
            s->level = level;
            site_first = s->n_distinct++ == 0;
            if (site_first) {
                s->fmt = fmt;
                s->text[0] = '\0';
            }
        }
        if (m) {
            m->end_ms = now + interval_ms;
            m->level = level;
            m->fmt = fmt;
            m->text[0] = '\0';
        }
        pthread_mutex_unlock(&rep.lock);
    }
    for (size_t i = 0; i < n_sums; i++)
        summary_write(&sums[i]);

    char line[LINE_CAP];
    int n = line_head(line, level);
    int m = vsnprintf(line + n, LINE_CAP - (size_t)n - 1, fmt, ap);
    if (m < 0)
        m = 0;
    if (limited) {
        /* The text for the summaries. The slots stay ours: a window just
         * opened, so neither is free for another key before it ends. */
        pthread_mutex_lock(&rep.lock);
        for (size_t i = 0; i < REPEAT_PROBE; i++) {
            repeat_slot *s = &rep.slots[(key + i) % REPEAT_SLOTS];
            if (s->key == key) {
                snprintf(s->text, sizeof(s->text), "%s", line + n);
                break;
            }
        }
        for (size_t i = 0; site_first && i < REPEAT_PROBE; i++) {
            repeat_slot *s = &rep.slots[(site + i) % REPEAT_SLOTS];
            if (s->key == site) {
                snprintf(s->text, sizeof(s->text), "%s", line + n);
                break;
            }
        }
        pthread_mutex_unlock(&rep.lock);
    }
    line_write(line, n + m);
}

void weir__log(enum weir_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    weir__logv(level, fmt, ap);
    va_end(ap);
}

#define SINK_CAP (4u << 20) /* 4 MiB of queued lines */

struct weir_logsink {
    int fd;
    bool own_fd;
    char *path;  /* for reopening */
    bool reopen; /* guarded by lock */
    bool syslog; /* lines go to syslog(3) instead of fd */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char *buf; /* filled by workers */
    size_t len;
    bool stopping;
    _Atomic uint64_t dropped;
};

static void *sink_main(void *arg)
{
    weir_logsink *s = arg;
    char *out = malloc(SINK_CAP);
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->len == 0 && !s->stopping && !s->reopen)
            pthread_cond_wait(&s->cond, &s->lock);
        if (s->len == 0 && s->stopping)
            break;
        /* Copy out under the lock, write without it. */
        size_t n = s->len;
        memcpy(out, s->buf, n);
        s->len = 0;
        bool reopen = s->reopen;
        s->reopen = false;
        pthread_mutex_unlock(&s->lock);
        if (reopen && s->own_fd) {
            int fd = open(s->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (fd >= 0) {
                close(s->fd);
                s->fd = fd;
            } else {
                weir_log_error("access log %s: cannot reopen: %s", s->path, strerror(errno));
            }
        }
        if (s->syslog) {
            /* one syslog record per line */
            size_t start = 0;
            for (size_t i = 0; i < n; i++) {
                if (out[i] == '\n') {
                    syslog(LOG_INFO, "%.*s", (int)(i - start), out + start);
                    start = i + 1;
                }
            }
            pthread_mutex_lock(&s->lock);
            continue;
        }
        size_t off = 0;
        while (off < n) {
            ssize_t w = write(s->fd, out + off, n - off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                break; /* disk full or closed: lines are lost, workers unaffected */
            }
            off += (size_t)w;
        }
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    free(out);
    return NULL;
}

weir_logsink *weir__logsink_open(const char *path)
{
    weir_logsink *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    if (strcmp(path, "-") == 0) {
        s->fd = STDOUT_FILENO;
    } else if (strncmp(path, "syslog", 6) == 0 && (path[6] == '\0' || path[6] == ':')) {
        /* "syslog" or "syslog:FACILITY" (local0..local7, daemon, user) */
        static const struct {
            const char *name;
            int facility;
        } fac[] = {{"daemon", LOG_DAEMON}, {"user", LOG_USER},     {"local0", LOG_LOCAL0},
                   {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2}, {"local3", LOG_LOCAL3},
                   {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5}, {"local6", LOG_LOCAL6},
                   {"local7", LOG_LOCAL7}};
        int facility = LOG_DAEMON;
        if (path[6] == ':') {
            facility = -1;
            for (size_t i = 0; i < sizeof(fac) / sizeof(fac[0]); i++) {
                if (strcmp(path + 7, fac[i].name) == 0)
                    facility = fac[i].facility;
            }
            if (facility < 0) {
                weir_log_error("access log %s: unknown syslog facility", path);
                free(s);
                return NULL;
            }
        }
        openlog("weir", LOG_PID | LOG_NDELAY, facility);
        s->syslog = true;
        s->fd = -1;
    } else {
        s->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (s->fd < 0) {
            weir_log_error("access log %s: %s", path, strerror(errno));
            free(s);
            return NULL;
        }
        s->own_fd = true;
        s->path = strdup(path);
    }
    s->buf = malloc(SINK_CAP);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    /* The writer thread takes no signals: a process that handles SIGTERM
     * through a signalfd must not have it delivered (fatally) here. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int prc = s->buf ? pthread_create(&s->thread, NULL, sink_main, s) : -1;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (prc != 0) {
        weir_log_error("access log %s: cannot start the logger thread", path);
        if (s->own_fd)
            close(s->fd);
        free(s->buf);
        free(s->path);
        free(s);
        return NULL;
    }
    return s;
}

int weir__logsink_write(weir_logsink *s, const char *line, size_t len)
{
    pthread_mutex_lock(&s->lock);
    if (s->len + len + 1 > SINK_CAP) {
        pthread_mutex_unlock(&s->lock);
        atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
        return -1;
    }
    bool was_empty = s->len == 0;
    memcpy(s->buf + s->len, line, len);
    s->buf[s->len + len] = '\n';
    s->len += len + 1;
    pthread_mutex_unlock(&s->lock);
    if (was_empty)
        pthread_cond_signal(&s->cond);
    return 0;
}

void weir__logsink_close(weir_logsink *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_mutex_unlock(&s->lock);
    pthread_cond_signal(&s->cond);
    pthread_join(s->thread, NULL);
    if (s->own_fd)
        close(s->fd);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s->buf);
    free(s->path);
    free(s);
}

static void logsink_reopen(weir_logsink *s)
{
    pthread_mutex_lock(&s->lock);
    s->reopen = true;
    pthread_mutex_unlock(&s->lock);
    pthread_cond_signal(&s->cond);
}

uint64_t weir__logsink_dropped(const weir_logsink *s)
{
    return atomic_load(&((weir_logsink *)s)->dropped);
}

/* ---- public API (weir/log.h) ---- */

void weir_log(int level, const char *fmt, ...)
{
    if (level < WEIR_LOG_ERROR || level > WEIR_LOG_DEBUG ||
        level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    /* Straight to weir__logv, not through a "%s" of our own: the caller's
     * format is the call site the repeat limiter keys on. */
    va_list ap;
    va_start(ap, fmt);
    weir__logv((enum weir_log_level)level, fmt, ap);
    va_end(ap);
}

weir_logger *weir_logger_open(const char *path)
{
    return (weir_logger *)weir__logsink_open(path);
}

int weir_logger_write(weir_logger *l, const char *line, size_t len)
{
    return weir__logsink_write((weir_logsink *)l, line, len);
}

uint64_t weir_logger_dropped(const weir_logger *l)
{
    return weir__logsink_dropped((const weir_logsink *)l);
}

void weir_logger_reopen(weir_logger *l)
{
    if (l)
        logsink_reopen((weir_logsink *)l);
}

void weir_logger_close(weir_logger *l)
{
    weir__logsink_close((weir_logsink *)l);
}
