/*
 * toml_edit.c - the admin API's writes to the configuration file (see
 * toml_edit.h): persistence of runtime membership changes, and the TOML
 * rewrite of an upstream's addrs that keeps the rest of the file as the
 * operator wrote it.
 */
#include "app/admin/toml_edit.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/admin/admin.h"
#include "app/toml/toml.h"

/* ---- persistence (main thread) ---- */

char *weir__admin_read_file(const char *path, size_t *len, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = cap <= (64u << 20) ? realloc(buf, cap + 1) : NULL;
            if (!nb) {
                snprintf(err, err_len, "%s is too large", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0)
            break;
        n += got;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(err, err_len, "cannot read %s", path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Writes a new file path with data, mode (whatever the umask) and, when
 * like is not NULL, like's owner, and fsyncs it. A file or link already
 * at path is removed first and never followed. Returns 0 or -errno. */
static int write_synced(const char *path, const char *data, size_t len, mode_t mode,
                        const struct stat *like)
{
    unlink(path); /* a temporary file a crash left */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    int rc = fchmod(fd, mode) < 0 ? -errno : 0;
    if (rc == 0 && like && (like->st_uid != geteuid() || like->st_gid != getegid()) &&
        fchown(fd, like->st_uid, like->st_gid) < 0 && errno != EPERM)
        rc = -errno; /* not allowed to: the file is weir's user's then */
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = w < 0 ? -errno : -EIO;
            break;
        }
        off += (size_t)w;
    }
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0)
        unlink(path);
    return rc;
}

int weir__admin_write_file(const char *path, const char *text, size_t len, unsigned mode)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int rc = write_synced(tmp, text, len, (mode_t)mode, NULL);
    if (rc == 0 && rename(tmp, path) < 0) {
        rc = -errno;
        unlink(tmp);
    }
    if (rc < 0) {
        errno = -rc;
        return -1;
    }
    return 0;
}

/* path <- text, keeping the old text as path.prev: both written to
 * temporary files first and renamed into place. */
int weir__admin_replace_file(const char *path_given, const char *text, size_t len, const char *old,
                             size_t old_len, char *err, size_t err_len)
{
    /* A link (/etc/weir/weir.toml -> a checkout) stays one: its target is
     * what is written. */
    char real[PATH_MAX];
    const char *path = realpath(path_given, real) ? real : path_given;
    char tmp[4200], prev[4200], prev_tmp[4200];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp) ||
        snprintf(prev, sizeof(prev), "%s.prev", path) >= (int)sizeof(prev) ||
        snprintf(prev_tmp, sizeof(prev_tmp), "%s.prev.tmp", path) >= (int)sizeof(prev_tmp)) {
        snprintf(err, err_len, "path too long");
        return -1;
    }
    struct stat st;
    bool have = stat(path, &st) == 0;
    mode_t mode = have ? (st.st_mode & 07777) : 0644;
    int rc = write_synced(tmp, text, len, mode, have ? &st : NULL);
    const char *what = tmp;
    if (rc == 0) {
        what = prev_tmp;
        rc = write_synced(prev_tmp, old, old_len, mode, have ? &st : NULL);
    }
    if (rc == 0) {
        what = prev;
        rc = rename(prev_tmp, prev) < 0 ? -errno : 0;
    }
    if (rc == 0) {
        what = path;
        rc = rename(tmp, path) < 0 ? -errno : 0;
    }
    if (rc < 0) {
        snprintf(err, err_len, "cannot write %.300s: %s", what, strerror(-rc));
        unlink(tmp);
        unlink(prev_tmp);
        return -1;
    }
    /* The renames are durable once the directory is synced. */
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* ---- the TOML rewrite ---- */

typedef struct key_part {
    const char *p;
    size_t len;
    bool escaped; /* a basic string with escapes: never matches */
} key_part;

static bool part_is(const key_part *k, const char *s)
{
    return !k->escaped && k->len == strlen(s) && memcmp(k->p, s, k->len) == 0;
}

static size_t line_of(const char *t, size_t i)
{
    size_t line = 1;
    for (size_t k = 0; k < i; k++)
        line += t[k] == '\n';
    return line;
}

/* Skips the string that starts at t[i] (a quote); returns the index past
 * it, or -1 if unterminated. */
static long skip_string(const char *t, size_t len, size_t i)
{
    char q = t[i];
    bool basic = q == '"';
    if (i + 2 < len && t[i + 1] == q && t[i + 2] == q) {
        for (i += 3; i + 3 <= len; i++) {
            if (basic && t[i] == '\\') {
                i++;
                continue;
            }
            if (t[i] == q && t[i + 1] == q && t[i + 2] == q) {
                i += 3;
                /* up to two more quotes are the content's last characters */
                for (int extra = 0; extra < 2 && i < len && t[i] == q; extra++)
                    i++;
                return (long)i;
            }
        }
        return -1;
    }
    for (i++; i < len; i++) {
        if (t[i] == '\n')
            return -1;
        if (basic && t[i] == '\\') {
            i++;
            continue;
        }
        if (t[i] == q)
            return (long)i + 1;
    }
    return -1;
}

/* Skips a value from t[i] to the end of its (last) line; returns the index
 * of the newline (or len), -1 if malformed. *last_sig is the index past
 * the value's last character before any trailing blanks or comment. */
static long skip_value(const char *t, size_t len, size_t i, size_t *last_sig)
{
    int depth = 0;
    *last_sig = i;
    while (i < len) {
        char c = t[i];
        if (c == '"' || c == '\'') {
            long e = skip_string(t, len, i);
            if (e < 0)
                return -1;
            i = (size_t)e;
            *last_sig = i;
            continue;
        }
        if (c == '#') {
            while (i < len && t[i] != '\n')
                i++;
            continue;
        }
        if (c == '\n') {
            if (depth == 0)
                return (long)i;
            i++;
            continue;
        }
        if (c == '[' || c == '{') {
            depth++;
        } else if (c == ']' || c == '}') {
            if (--depth < 0)
                return -1;
        }
        if (c != ' ' && c != '\t' && c != '\r')
            *last_sig = i + 1;
        i++;
    }
    return depth == 0 ? (long)len : -1;
}

/* Parses a dotted key from t[i] up to `stop`; returns the index of stop,
 * or -1. Up to 4 parts are kept; *n_parts counts all. */
static long parse_key(const char *t, size_t len, size_t i, char stop, key_part *parts,
                      size_t *n_parts)
{
    *n_parts = 0;
    for (;;) {
        while (i < len && (t[i] == ' ' || t[i] == '\t'))
            i++;
        if (i >= len)
            return -1;
        key_part k = {0};
        if (t[i] == '"' || t[i] == '\'') {
            char q = t[i];
            size_t s = ++i;
            while (i < len && t[i] != q && t[i] != '\n') {
                if (q == '"' && t[i] == '\\') {
                    k.escaped = true;
                    i++;
                }
                i++;
            }
            if (i >= len || t[i] != q)
                return -1;
            k.p = t + s;
            k.len = i - s;
            i++;
        } else {
            size_t s = i;
            while (i < len && ((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
                               (t[i] >= '0' && t[i] <= '9') || t[i] == '_' || t[i] == '-'))
                i++;
            if (i == s)
                return -1;
            k.p = t + s;
            k.len = i - s;
        }
        if (*n_parts < 4)
            parts[*n_parts] = k;
        (*n_parts)++;
        while (i < len && (t[i] == ' ' || t[i] == '\t'))
            i++;
        if (i < len && t[i] == '.') {
            i++;
            continue;
        }
        return i < len && t[i] == stop ? (long)i : -1;
    }
}

/* One header or key of the text (scan). */
typedef struct scan_item {
    bool header;       /* [a.b] or [[a.b]]; else a key = value line */
    key_part parts[4]; /* the dotted key's first parts */
    size_t np;         /* how many it has */
    size_t at;         /* where the header's '[' or the key starts */
    size_t value;      /* a key's value: where it starts (after '=') */
    size_t value_last; /* ... and its last significant byte + 1 */
} scan_item;

/* Calls fn for each header and key of the TOML text t, in order, until fn
 * returns false. Returns 0, or -1 with err when the text is not well
 * formed. */
static int scan(const char *t, size_t len, bool (*fn)(void *arg, const scan_item *it), void *arg,
                char *err, size_t err_len)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (t[i] == ' ' || t[i] == '\t'))
            i++;
        if (i >= len)
            break;
        if (t[i] == '\n' || t[i] == '\r' || t[i] == '#') {
            while (i < len && t[i] != '\n')
                i++;
            i++;
            continue;
        }
        scan_item it = {.at = i};
        if (t[i] == '[') {
            bool aot = i + 1 < len && t[i + 1] == '[';
            long e = parse_key(t, len, i + (aot ? 2 : 1), ']', it.parts, &it.np);
            if (e < 0 || (aot && ((size_t)e + 1 >= len || t[e + 1] != ']'))) {
                snprintf(err, err_len, "cannot parse the table header on line %zu", line_of(t, i));
                return -1;
            }
            it.header = true;
            i = (size_t)e + (aot ? 2 : 1);
            size_t last;
            long end = skip_value(t, len, i, &last); /* a trailing comment */
            if (end < 0 || last != i) {
                snprintf(err, err_len, "unexpected text after the table header on line %zu",
                         line_of(t, i));
                return -1;
            }
            i = (size_t)end + 1;
        } else {
            long e = parse_key(t, len, i, '=', it.parts, &it.np);
            if (e < 0) {
                snprintf(err, err_len, "cannot parse line %zu", line_of(t, it.at));
                return -1;
            }
            it.value = (size_t)e + 1;
            long ve = skip_value(t, len, it.value, &it.value_last);
            if (ve < 0) {
                snprintf(err, err_len, "unterminated value on line %zu", line_of(t, it.at));
                return -1;
            }
            i = (size_t)ve + 1;
        }
        if (!fn(arg, &it))
            break;
    }
    return 0;
}

typedef struct addrs_scan {
    const char *t, *upstream;
    size_t len;
    bool in_target, seen, bad;
    long key_start;
    size_t val_end, bad_line;
} addrs_scan;

static bool addrs_item(void *arg, const scan_item *it)
{
    addrs_scan *a = arg;
    if (it->header) {
        a->in_target = it->np == 2 && a->t[it->at + 1] != '[' &&
                       part_is(&it->parts[0], "upstreams") && part_is(&it->parts[1], a->upstream);
        a->seen = a->seen || a->in_target;
        return true;
    }
    if (!a->in_target || !part_is(&it->parts[0], "addrs"))
        return true;
    size_t v = it->value;
    while (v < a->len && (a->t[v] == ' ' || a->t[v] == '\t'))
        v++;
    if (it->np != 1 || v >= a->len || a->t[v] != '[' || a->key_start >= 0) {
        a->bad = true;
        a->bad_line = line_of(a->t, it->at);
        return false;
    }
    a->key_start = (long)it->at;
    a->val_end = it->value_last;
    return true;
}

int weir__admin_rewrite_addrs(const char *t, size_t len, const char *upstream,
                              const char *const *addrs, size_t n_addrs, char **out, size_t *out_len,
                              char *err, size_t err_len)
{
    *out = NULL;
    addrs_scan a = {.t = t, .upstream = upstream, .len = len, .key_start = -1};
    if (scan(t, len, addrs_item, &a, err, err_len) < 0)
        return -1;
    if (a.bad) {
        snprintf(err, err_len,
                 "'addrs' of [upstreams.%s] on line %zu is not a plain array that can be "
                 "rewritten",
                 upstream, a.bad_line);
        return -1;
    }
    if (!a.seen) {
        snprintf(err, err_len, "no [upstreams.%s] section in the file", upstream);
        return -1;
    }
    if (a.key_start < 0) {
        snprintf(err, err_len, "[upstreams.%s] has no 'addrs' key in the file", upstream);
        return -1;
    }
    size_t key_start = (size_t)a.key_start, val_end = a.val_end;
    size_t need = key_start + 16 + (len - val_end);
    for (size_t k = 0; k < n_addrs; k++)
        need += strlen(addrs[k]) + 4;
    char *o = malloc(need + 1);
    if (!o) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    size_t n = 0;
    memcpy(o, t, key_start);
    n += key_start;
    n += (size_t)sprintf(o + n, "addrs = [");
    for (size_t k = 0; k < n_addrs; k++)
        n += (size_t)sprintf(o + n, "%s\"%s\"", k ? ", " : "", addrs[k]);
    o[n++] = ']';
    memcpy(o + n, t + val_end, len - val_end);
    n += len - val_end;
    o[n] = '\0';
    *out = o;
    *out_len = n;
    return 0;
}

/* ---- a whole section ---- */

/* The start of the line t[i] is on. */
static size_t line_start(const char *t, size_t i)
{
    while (i > 0 && t[i - 1] != '\n')
        i--;
    return i;
}

/* Back from the start of a line over the blank and comment lines before
 * it (they belong to what follows), not past the line floor is on. */
static size_t before_comments(const char *t, size_t from, size_t floor)
{
    size_t at = from;
    while (at > floor) {
        size_t ls = line_start(t, at - 1);
        if (ls < floor) /* the line a value of the section ends on */
            break;
        size_t k = ls;
        while (k < at && (t[k] == ' ' || t[k] == '\t' || t[k] == '\r'))
            k++;
        if (k < at && t[k] != '\n' && t[k] != '#')
            break;
        at = ls;
    }
    return at;
}

typedef struct span_scan {
    const char *t, *kind, *name;
    int state; /* 0: not seen, 1: in it, 2: past it */
    bool any_header;
    size_t start, end, bad_line;
    size_t floor;    /* past the last value of the section seen so far */
    const char *bad; /* why it is not rewritten, or NULL */
} span_scan;

static bool span_item(void *arg, const scan_item *it)
{
    span_scan *sp = arg;
    bool mine = part_is(&it->parts[0], sp->kind) &&
                (sp->name ? it->np >= 2 && part_is(&it->parts[1], sp->name) : it->np >= 1);
    if (!it->header) {
        /* At the top: `upstreams.api.addrs = ...` or `upstreams = {...}`. */
        if (!sp->any_header && part_is(&it->parts[0], sp->kind)) {
            sp->bad = "is written as a dotted key or inline table";
            sp->bad_line = line_of(sp->t, it->at);
            return false;
        }
        if (sp->state == 1) /* a multi-line value's last lines are no comments */
            sp->floor = it->value_last;
        return true;
    }
    sp->any_header = true;
    if (mine && sp->state == 2) {
        sp->bad = "is written in several places";
        sp->bad_line = line_of(sp->t, it->at);
        return false;
    }
    if (mine && sp->state == 0) {
        sp->start = sp->floor = line_start(sp->t, it->at);
        sp->state = 1;
    } else if (!mine && sp->state == 1) {
        sp->end = before_comments(sp->t, line_start(sp->t, it->at), sp->floor);
        sp->state = 2;
    }
    return true;
}

int weir__admin_section_span(const char *t, size_t len, const char *kind, const char *name,
                             size_t *start, size_t *end, char *err, size_t err_len)
{
    span_scan sp = {.t = t, .kind = kind, .name = name, .start = len, .end = len};
    if (scan(t, len, span_item, &sp, err, err_len) < 0)
        return -1;
    if (sp.bad) {
        snprintf(err, err_len, "[%s%s%s] %s (line %zu): edit the file", kind, name ? "." : "",
                 name ? name : "", sp.bad, sp.bad_line);
        return -1;
    }
    if (sp.state == 1) /* the file's last section: its trailing comments stay */
        sp.end = before_comments(t, len, sp.floor);
    *start = sp.start;
    *end = sp.end;
    return sp.state ? 1 : 0;
}
