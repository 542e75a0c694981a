/*
 * toml_edit.c - the admin API's writes to the configuration file (see
 * toml_edit.h): persistence of runtime membership changes, and the TOML
 * rewrite of an upstream's addrs that keeps the rest of the file as the
 * operator wrote it.
 */
#include "app/admin/toml_edit.h"

#include <errno.h>
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

/* Writes path with data and fsyncs it. Returns 0 or -errno. */
static int write_synced(const char *path, const char *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    int rc = 0;
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
    int rc = write_synced(tmp, text, len, (mode_t)mode);
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
int weir__admin_replace_file(const char *path, const char *text, size_t len, const char *old,
                             size_t old_len, char *err, size_t err_len)
{
    char tmp[4200], prev[4200], prev_tmp[4200];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp) ||
        snprintf(prev, sizeof(prev), "%s.prev", path) >= (int)sizeof(prev) ||
        snprintf(prev_tmp, sizeof(prev_tmp), "%s.prev.tmp", path) >= (int)sizeof(prev_tmp)) {
        snprintf(err, err_len, "path too long");
        return -1;
    }
    struct stat st;
    mode_t mode = stat(path, &st) == 0 ? (st.st_mode & 07777) : 0644;
    int rc = write_synced(tmp, text, len, mode);
    const char *what = tmp;
    if (rc == 0) {
        what = prev_tmp;
        rc = write_synced(prev_tmp, old, old_len, mode);
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

int weir__admin_rewrite_addrs(const char *t, size_t len, const char *upstream,
                              const char *const *addrs, size_t n_addrs, char **out, size_t *out_len,
                              char *err, size_t err_len)
{
    size_t i = 0;
    bool in_target = false, seen = false;
    long key_start = -1;
    size_t val_end = 0;
    *out = NULL;
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
        key_part parts[4];
        size_t np;
        if (t[i] == '[') {
            bool aot = i + 1 < len && t[i + 1] == '[';
            long e = parse_key(t, len, i + (aot ? 2 : 1), ']', parts, &np);
            if (e < 0 || (aot && ((size_t)e + 1 >= len || t[e + 1] != ']'))) {
                snprintf(err, err_len, "cannot parse the table header on line %zu", line_of(t, i));
                return -1;
            }
            in_target =
                !aot && np == 2 && part_is(&parts[0], "upstreams") && part_is(&parts[1], upstream);
            seen = seen || in_target;
            i = (size_t)e + (aot ? 2 : 1);
            size_t last;
            long end = skip_value(t, len, i, &last); /* a trailing comment */
            if (end < 0 || last != i) {
                snprintf(err, err_len, "unexpected text after the table header on line %zu",
                         line_of(t, i));
                return -1;
            }
            i = (size_t)end + 1;
            continue;
        }
        size_t ks = i;
        long e = parse_key(t, len, i, '=', parts, &np);
        if (e < 0) {
            snprintf(err, err_len, "cannot parse line %zu", line_of(t, i));
            return -1;
        }
        size_t last;
        long ve = skip_value(t, len, (size_t)e + 1, &last);
        if (ve < 0) {
            snprintf(err, err_len, "unterminated value on line %zu", line_of(t, ks));
            return -1;
        }
        if (in_target && part_is(&parts[0], "addrs")) {
            size_t v = (size_t)e + 1;
            while (v < len && (t[v] == ' ' || t[v] == '\t'))
                v++;
            if (np != 1 || v >= len || t[v] != '[' || key_start >= 0) {
                snprintf(err, err_len,
                         "'addrs' of [upstreams.%s] on line %zu is not a plain array that can "
                         "be rewritten",
                         upstream, line_of(t, ks));
                return -1;
            }
            key_start = (long)ks;
            val_end = last;
        }
        i = (size_t)ve + 1;
    }
    if (!seen) {
        snprintf(err, err_len, "no [upstreams.%s] section in the file", upstream);
        return -1;
    }
    if (key_start < 0) {
        snprintf(err, err_len, "[upstreams.%s] has no 'addrs' key in the file", upstream);
        return -1;
    }
    size_t need = (size_t)key_start + 16 + (len - val_end);
    for (size_t k = 0; k < n_addrs; k++)
        need += strlen(addrs[k]) + 4;
    char *o = malloc(need + 1);
    if (!o) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    size_t n = 0;
    memcpy(o, t, (size_t)key_start);
    n += (size_t)key_start;
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
