/*
 * session_buffer.c - request bodies read before anything is sent: request
 * buffering (into memory, or past the memory limit into a temporary file,
 * before a backend is chosen: weir_session_buffer_body,
 * weir_session_buffer_to_file) and a whole body for a phase that answers
 * from it (weir_session_read_body). See session.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/pool.h"
#include "proxy/session-t.h"

/* The most the body may be buffered to: memory, or the file. */
static uint64_t buffer_limit(const weir_session *s)
{
    return s->spill_max > s->buf_max ? s->spill_max : s->buf_max;
}

/* Buffer the body before choosing a backend (weir_session_buffer_body)?
 * Not when it cannot fit: a prefix would protect nothing. */
bool weir__session_wants_buffer(const weir_session *s)
{
    if (!s->buf_max || s->req.body == WEIR_BODY_NONE || s->req.upgrade)
        return false;
    return s->req.body != WEIR_BODY_KNOWN || s->req.content_length <= buffer_limit(s);
}

static bool write_all(int fd, const void *p, size_t len)
{
    const char *c = p;
    while (len > 0) {
        ssize_t n = write(fd, c, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = ENOSPC;
            return false;
        }
        c += n;
        len -= (size_t)n;
    }
    return true;
}

static void spill_failed(weir_session *s, const char *what)
{
    weir_str id = weir_session_request_id(s);
    weir_log_error("request %.*s: %s a temporary file for the request body in %s: %s", (int)id.len,
                   id.ptr, what, s->spill_dir, strerror(errno));
    weir__session_fail(s, 503, "cannot buffer the request body");
}

/* Moves the body so far from memory to a new unnamed file. */
static bool start_spill(weir_session *s)
{
    int fd = open(s->spill_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        spill_failed(s, "cannot create");
        return false;
    }
    s->spill_fd = fd;
    s->spilled = true;
    s->spill_len = 0;
    if (s->buf_len && !write_all(fd, s->buf, s->buf_len)) {
        spill_failed(s, "cannot write");
        return false;
    }
    s->spill_len = s->buf_len;
    s->buf_len = 0; /* the arena keeps the memory; the file has the bytes */
    return true;
}

int weir__session_pre_read(weir_session *s, size_t off, weir_str *seg)
{
    if (!s->spilled) {
        if (!s->buf || off >= s->buf_len)
            return WEIR_DONE;
        *seg = (weir_str){s->buf + off, s->buf_len - off};
        return WEIR_OK;
    }
    if (off >= s->spill_len)
        return WEIR_DONE;
    if (!s->spill_rbuf && !(s->spill_rbuf = weir__buf_get()))
        return WEIR_ERR_NOMEM;
    uint64_t left = s->spill_len - off;
    size_t want = left < WEIR_BUF_SIZE ? (size_t)left : WEIR_BUF_SIZE;
    ssize_t n;
    do
        n = pread(s->spill_fd, s->spill_rbuf, want, (off_t)off);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        weir_log_error("reading the buffered request body back: %s",
                       n < 0 ? strerror(errno) : "the file is shorter than written");
        return n < 0 ? -errno : -EIO;
    }
    *seg = (weir_str){s->spill_rbuf, (size_t)n};
    return WEIR_OK;
}

bool weir__session_has_pre(const weir_session *s, size_t off)
{
    return s->spilled ? off < s->spill_len : (s->buf && off < s->buf_len);
}

void weir__session_buffer_free(weir_session *s)
{
    if (s->buf_pooled) {
        weir__buf_put(s->buf);
        s->buf = NULL;
        s->buf_pooled = false;
    }
    if (s->spilled) {
        close(s->spill_fd);
        s->spilled = false;
    }
    if (s->spill_rbuf) {
        weir__buf_put(s->spill_rbuf);
        s->spill_rbuf = NULL;
    }
}

/*
 * BUFFER: the request body goes into memory while the client sends it, so
 * a slow client holds no backend connection (nginx's
 * proxy_request_buffering); past buf_max, with spill_max, into a temporary
 * file. Then PEER, with the body complete (replayed to every attempt, so
 * retries stay possible), or with the first buf_max (spill_max) bytes of a
 * chunked body that is longer (the rest streams).
 */
void weir__session_step_buffer(weir_session *s)
{
    weir_exchange *x = s->down;
    uint64_t limit = buffer_limit(s);
    bool known_long = s->req.body == WEIR_BODY_KNOWN && s->req.content_length > s->buf_max;
    while ((s->spilled ? s->spill_len : s->buf_len) < limit) {
        weir_str segs[MAX_SEGS], trailers = WEIR_STR_NULL;
        size_t n = 0;
        int rc = x->ops->read_body(x, segs, MAX_SEGS, &n, &trailers);
        if (rc == WEIR_AGAIN)
            return;
        if (rc == WEIR_DONE) {
            s->buf_complete = true;
            if (trailers.len &&
                !(s->buf_trailers.ptr = weir__arena_dup(&s->arena, trailers.ptr, trailers.len))) {
                weir__session_fail(s, 503, "out of memory");
                return;
            }
            s->buf_trailers.len = trailers.len;
            s->req_pump.done = false;
            break;
        }
        if (rc < 0) {
            if (rc == WEIR_EX_E_TOO_LARGE) {
                weir__session_fail(s, 413, "request body over the limit");
            } else if (rc == WEIR_EX_E_FRAMING) {
                weir__session_fail(s, 400, "invalid request body framing");
            } else {
                weir__session_terminate(s, 'C');
                s->client_aborted = true;
                s->error = "client closed during the request body";
                weir__session_set_state(s, SS_DONE);
            }
            return;
        }
        size_t total = 0;
        for (size_t i = 0; i < n; i++)
            total += segs[i].len;
        uint64_t have = s->spilled ? s->spill_len : s->buf_len;
        if (s->body_limit && have + total > s->body_limit) {
            weir__session_fail(s, 413, "request body over the limit");
            return;
        }
        if (!s->spilled && s->spill_max > s->buf_max &&
            (known_long || s->buf_len + total > s->buf_max) && !start_spill(s))
            return;
        if (s->spilled) {
            for (size_t i = 0; i < n; i++) {
                if (!write_all(s->spill_fd, segs[i].ptr, segs[i].len)) {
                    spill_failed(s, "cannot write");
                    return;
                }
            }
            s->spill_len += total;
            x->ops->consume_body(x);
            continue;
        }
        if (s->buf_len + total > s->buf_cap) {
            /* Room for what came (a read may pass buf_max by one buffer). */
            size_t cap = s->buf_cap ? s->buf_cap * 2 : 4096;
            if (s->req.body == WEIR_BODY_KNOWN && cap < s->req.content_length)
                cap = (size_t)s->req.content_length;
            while (cap < s->buf_len + total)
                cap *= 2;
            /* Most bodies fit a pooled I/O buffer, which costs no malloc;
             * larger ones grow in the arena. */
            bool pooled = !s->buf && cap <= WEIR_BUF_SIZE;
            char *nb = pooled ? weir__buf_get() : weir__arena_alloc(&s->arena, cap);
            if (!nb) {
                weir__session_fail(s, 503, "out of memory");
                return;
            }
            if (pooled)
                cap = WEIR_BUF_SIZE;
            if (s->buf && s->buf_len)
                memcpy(nb, s->buf, s->buf_len);
            if (s->buf_pooled)
                weir__buf_put(s->buf);
            s->buf = nb;
            s->buf_cap = cap;
            s->buf_pooled = pooled;
        }
        for (size_t i = 0; i < n; i++) {
            memcpy(s->buf + s->buf_len, segs[i].ptr, segs[i].len);
            s->buf_len += segs[i].len;
        }
        x->ops->consume_body(x);
    }
    weir__session_set_state(s, SS_PEER);
}

/* Gathers the request body for weir_session_read_body while the phase that
 * asked for it is pending; calls its callback at the end. */
void weir__session_read_whole_body(weir_session *s)
{
    weir_exchange *x = s->down;
    for (;;) {
        weir_str segs[MAX_SEGS], trailers;
        size_t n = 0;
        int rc = x->ops->read_body(x, segs, MAX_SEGS, &n, &trailers);
        if (rc == WEIR_AGAIN)
            return;
        int err = 0;
        if (rc == WEIR_DONE) {
            s->req_pump.done = true;
        } else if (rc < 0) {
            err = rc == WEIR_EX_E_TOO_LARGE ? WEIR_ERR_INVAL : rc;
        } else {
            for (size_t i = 0; i < n && !err; i++) {
                if (s->body_len + segs[i].len > s->body_max) {
                    err = WEIR_ERR_INVAL;
                    break;
                }
                if (s->body_len + segs[i].len > s->body_cap) {
                    size_t cap = s->body_cap ? s->body_cap * 2 : 4096;
                    while (cap < s->body_len + segs[i].len)
                        cap *= 2;
                    if (cap > s->body_max)
                        cap = s->body_max;
                    char *nb = weir__arena_alloc(&s->arena, cap);
                    if (!nb) {
                        err = WEIR_ERR_NOMEM;
                        break;
                    }
                    if (s->body_len)
                        memcpy(nb, s->body_buf, s->body_len);
                    s->body_buf = nb;
                    s->body_cap = cap;
                }
                memcpy(s->body_buf + s->body_len, segs[i].ptr, segs[i].len);
                s->body_len += segs[i].len;
            }
            x->ops->consume_body(x);
            if (!err)
                continue;
        }
        s->body_reading = false;
        weir_str body =
            err ? (weir_str){"", 0} : (weir_str){s->body_buf ? s->body_buf : "", s->body_len};
        s->body_cb(s, s->ctx, body, err);
        return;
    }
}
