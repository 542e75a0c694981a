/*
 * files.c - opening a request path beneath a document root (files.h has
 * the contract).
 *
 * Two layers, each enough alone: the text of the path is checked after
 * percent-decoding (no "..", no encoded '/', no backslash, no NUL), and
 * the kernel resolves it with RESOLVE_BENEATH, so that a symlink planted
 * in the root cannot lead out of it either. nginx has only the first
 * (plus disable_symlinks, which walks with O_NOFOLLOW: what the fallback
 * below does where openat2 is missing).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "app/plugin/files.h"

/* Set once openat2 answered ENOSYS: every later open goes straight to the
 * fallback instead of paying a failing system call. */
static atomic_bool no_openat2;

void weir__files_force_no_openat2(bool on)
{
    atomic_store(&no_openat2, on);
}

int weir__files_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/*
 * Decodes url_path into out (PATH_MAX bytes) as a path relative to the
 * root: leading slashes dropped (an absolute path would make openat
 * ignore the root), "." when nothing is left. Returns 0 or the refusal
 * (files.h).
 */
static int decode(const char *p, size_t len, bool hidden, char *out)
{
    if (len == 0 || p[0] != '/' || len > PATH_MAX)
        return -ENOENT;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '%') {
            int hi = len - i >= 3 ? weir__files_hex(p[i + 1]) : -1;
            int lo = hi >= 0 ? weir__files_hex(p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -ENOENT;
            c = (char)(hi * 16 + lo);
            /* An encoded '/' would be a separator the normaliser did not
             * see; a file name cannot hold one anyway. */
            if (c == '/' || c == '\0')
                return -ENOENT;
            i += 2;
        }
        if (c == '\\' || c == '\0')
            return -ENOENT;
        if (c == '/' && n == 0)
            continue;
        out[n++] = c;
    }
    /* len <= PATH_MAX and the leading '/' is dropped: room for the NUL. */
    out[n] = '\0';
    bool deny = false;
    for (size_t s = 0; s < n;) {
        const char *slash = memchr(out + s, '/', n - s);
        size_t e = slash ? (size_t)(slash - out) : n;
        size_t seg = e - s;
        if ((seg == 1 && out[s] == '.') || (seg == 2 && out[s] == '.' && out[s + 1] == '.'))
            return -ENOENT;
        if (seg > 0 && out[s] == '.' && !hidden)
            deny = true; /* a later ".." still wins: that is a 404 */
        s = e + 1;
    }
    if (deny)
        return -EACCES;
    if (n == 0) {
        out[0] = '.';
        out[1] = '\0';
    }
    return 0;
}

static int map_errno(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
    case ENAMETOOLONG:
        return -ENOENT;
    case EACCES:
    case EPERM:
    case ELOOP:
    case EXDEV:
    case ENXIO:
    case ENODEV:
        return -EACCES;
    default:
        return -e;
    }
}

/*
 * The fallback without openat2 and !follow_symlinks: one component at a
 * time, each opened O_NOFOLLOW, so a symlink anywhere is refused (-ELOOP,
 * mapped to -EACCES). Intermediate directories are held as O_PATH fds, so
 * a rename elsewhere cannot move the walk out of the root. A trailing '/'
 * makes the last component O_DIRECTORY, as the kernel would.
 */
static int walk(int root_fd, char *rel, int flags)
{
    size_t n = strlen(rel);
    if (n > 0 && rel[n - 1] == '/')
        flags |= O_DIRECTORY;
    while (n > 1 && rel[n - 1] == '/')
        rel[--n] = '\0';
    int dir = root_fd;
    int rc;
    char *s = rel;
    for (;;) {
        char *slash = strchr(s, '/');
        if (!slash) {
            int fd = openat(dir, s, flags | O_NOFOLLOW);
            rc = fd >= 0 ? fd : -errno;
            break;
        }
        *slash = '\0';
        if (*s == '\0') { /* "a//b" */
            s = slash + 1;
            continue;
        }
        int next = openat(dir, s, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            rc = -errno;
            break;
        }
        struct stat st;
        if (fstat(next, &st) < 0) {
            rc = -errno;
            close(next);
            break;
        }
        if (!S_ISDIR(st.st_mode)) {
            rc = S_ISLNK(st.st_mode) ? -ELOOP : -ENOTDIR;
            close(next);
            break;
        }
        if (dir != root_fd)
            close(dir);
        dir = next;
        s = slash + 1;
    }
    if (dir != root_fd)
        close(dir);
    return rc;
}

/* Opens rel beneath root_fd with flags by the rules of files.h. Returns
 * the fd or -errno (unmapped). */
static int open_beneath(int root_fd, char *rel, int flags, bool follow)
{
    if (!atomic_load(&no_openat2)) {
        struct open_how how = {
            .flags = (uint64_t)flags,
            .resolve = RESOLVE_NO_MAGICLINKS | (follow ? 0 : RESOLVE_BENEATH),
        };
        /* EAGAIN: a rename raced a ".." in a symlink target; the kernel
         * asks for a retry. A few, then it is an error. */
        for (int tries = 0; tries < 4; tries++) {
            long fd = syscall(SYS_openat2, root_fd, rel, &how, sizeof(how));
            if (fd >= 0)
                return (int)fd;
            if (errno != EAGAIN)
                break;
        }
        if (errno != ENOSYS)
            return -errno;
        atomic_store(&no_openat2, true);
    }
    if (!follow)
        return walk(root_fd, rel, flags);
    int fd = openat(root_fd, rel, flags);
    return fd >= 0 ? fd : -errno;
}

static bool servable(const struct stat *st)
{
    return S_ISREG(st->st_mode) || S_ISDIR(st->st_mode);
}

int weir__files_open(int root_fd, const char *url_path, size_t len, const weir_files_opts *o,
                     int *fd, struct stat *st)
{
    char rel[PATH_MAX + 1];
    int rc = decode(url_path, len, o->hidden, rel);
    if (rc < 0)
        return rc;
    /* One open, then its type: O_NONBLOCK so a FIFO (or a device) opens
     * without waiting for a writer, and is refused by the fstat before
     * anything reads it; on regular files and directories the flag changes
     * nothing, so it stays (nginx opens the same way). Two syscalls, where
     * a look first (O_PATH) and a second open cost four more. */
    int f = open_beneath(root_fd, rel, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
                         o->follow_symlinks);
    if (f < 0)
        return map_errno(-f);
    if (fstat(f, st) < 0) {
        rc = -errno;
        goto fail;
    }
    if (!servable(st)) {
        rc = -EACCES;
        goto fail;
    }
    *fd = f;
    return 0;
fail:
    close(f);
    return rc;
}
