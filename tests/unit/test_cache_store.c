/*
 * A cache store (cache/store.c) and its disk tier (cache/disk.c): heads
 * read back with their policy, variant markers, removal of a key with its
 * variants, the disk encoding refusing every torn or flipped byte, files
 * found again by a new store on the same directory (a restart), a
 * corrupt file being a miss that is removed, the disk bound, purges by
 * prefix across a restart, and the coalescing locks (a waiter woken once,
 * a cancelled waiter never).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/store.h"
#include "core/arena.h"
#include "http/msg.h"

static weir_cobj *make(const char *key, const char *cc, const char *body, const char *vary)
{
    char mem[1024];
    weir_arena a;
    weir__arena_init(&a, mem, sizeof(mem));
    weir_headers h;
    weir__headers_init(&h, &a);
    weir__headers_push(&h, WEIR_STR("Cache-Control"), (weir_str){cc, strlen(cc)});
    weir__headers_push(&h, WEIR_STR("ETag"), WEIR_STR("\"e1\""));
    weir__headers_push(&h, WEIR_STR("Connection"), WEIR_STR("close"));
    weir_centry e;
    cr_assert_eq(weir__centry_make(&e, 200, &h, 1000, 1001), 0);
    weir__arena_reset(&a);
    char *b = malloc(strlen(body) + 1);
    memcpy(b, body, strlen(body));
    weir_cobj *o =
        weir__cstore_obj(key, strlen(key), &e, NULL, 86400, 0, vary, strlen(vary), b, strlen(body));
    cr_assert_not_null(o);
    return o;
}

static char *tmpdir(void)
{
    char *d = strdup("/tmp/weir-cache-test-XXXXXX");
    cr_assert_not_null(mkdtemp(d));
    return d;
}

static void rmtree(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(cache_store, head_policy_and_validators)
{
    weir_cobj *o = make("k", "max-age=60, s-maxage=30", "body", "");
    const weir_chead *h = weir__chead(o);
    cr_assert_eq(h->lifetime, 30);
    cr_assert_eq(h->etag.len, 4);
    cr_assert_null(h->last_modified.ptr);
    cr_assert_null(weir__centry_field(&h->e, "connection"), "hop-by-hop fields are not kept");
    cr_assert(!h->marker);
    weir__cobj_unref(o);
}

Test(cache_store, remove_takes_the_variants)
{
    char err[128];
    weir_cache *c = weir_cache_new(&(weir_cache_options){.memory_bytes = 1 << 20}, err, 128);
    cr_assert_not_null(c, "%s", err);
    cr_assert(weir__cstore_put(c, weir__cstore_marker("http://h/a", 10, "accept", 6)));
    cr_assert(weir__cstore_put(c, make("http://h/a\naccept:x", "max-age=9", "x", "accept")));
    cr_assert(weir__cstore_put(c, make("http://h/ab", "max-age=9", "other", "")));
    cr_assert(weir__cstore_remove(c, "http://h/a", 10));
    cr_assert_null(weir__cstore_get(c, "http://h/a\naccept:x", 19));
    weir_cobj *o = weir__cstore_get(c, "http://h/ab", 11);
    cr_assert_not_null(o, "a longer key is not a variant");
    weir__cobj_unref(o);
    cr_assert(!weir__cstore_remove(c, "http://h/zz", 11));
    weir_cache_free(c);
}

Test(cache_store, too_large_is_refused)
{
    char err[128];
    weir_cache *c = weir_cache_new(
        &(weir_cache_options){.memory_bytes = 1 << 20, .max_object_bytes = 3}, err, 128);
    cr_assert(!weir__cstore_put(c, make("k", "max-age=9", "four", "")));
    cr_assert(weir__cstore_put(c, make("k", "max-age=9", "two", "")));
    cr_assert_eq(weir__cstore_max_object(c), 3);
    weir_cache_free(c);
    cr_assert_null(weir_cache_new(&(weir_cache_options){.memory_bytes = 1000}, err, 128));
    cr_assert(strstr(err, "64 KiB"));
}

Test(cache_disk, encoding_refuses_every_torn_or_flipped_byte)
{
    weir_cobj *o = make("http://h/enc", "max-age=60", "the body", "accept-encoding");
    size_t len = 0;
    char *buf = weir__cdisk_encode(o, &len);
    cr_assert_not_null(buf);
    weir_cobj *back = weir__cdisk_decode(buf, len, "http://h/enc", 12);
    cr_assert_not_null(back);
    cr_assert_eq(back->body_len, 8);
    cr_assert_eq(memcmp(back->body, "the body", 8), 0);
    cr_assert_eq(weir__chead(back)->lifetime, 60);
    cr_assert_str_eq(weir__chead(back)->vary, "accept-encoding");
    weir__cobj_unref(back);
    cr_assert_null(weir__cdisk_decode(buf, len, "http://h/other", 14), "another key's file");
    for (size_t n = 0; n < len; n++)
        cr_assert_null(weir__cdisk_decode(buf, n, NULL, 0), "torn at %zu", n);
    for (size_t i = 0; i < len; i++) {
        buf[i] ^= 0x20;
        cr_assert_null(weir__cdisk_decode(buf, len, NULL, 0), "flipped at %zu", i);
        buf[i] ^= 0x20;
    }
    free(buf);
    weir__cobj_unref(o);
}

static weir_cache *disk_store(const char *dir, uint64_t disk_bytes)
{
    char err[256];
    weir_cache_options o = {.memory_bytes = 1 << 20, .disk_dir = dir, .disk_bytes = disk_bytes};
    weir_cache *c = weir_cache_new(&o, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    return c;
}

static weir_cdisk *disk_of(const char *dir, uint64_t max)
{
    char err[256];
    weir_cdisk *d = weir__cdisk_open(dir, max, err, sizeof(err));
    cr_assert_not_null(d, "%s", err);
    return d;
}

Test(cache_disk, a_restart_finds_the_files_again)
{
    char *dir = tmpdir();
    weir_cdisk *d = disk_of(dir, 1 << 20);
    weir_cobj *o = make("http://h/keep", "max-age=60", "kept across", "");
    weir__cdisk_put(d, o);
    weir__cobj_unref(o);
    weir__cdisk_sync(d);
    weir_cache_stats st = {0};
    weir__cdisk_stats(d, &st);
    cr_assert_eq(st.disk_objects, 1);
    weir__cdisk_close(d);

    d = disk_of(dir, 1 << 20);
    weir__cdisk_sync(d); /* the scan */
    weir__cdisk_stats(d, &st);
    cr_assert_eq(st.disk_objects, 1);
    weir_cobj *back = weir__cdisk_get(d, "http://h/keep", 13);
    cr_assert_not_null(back);
    cr_assert_eq(memcmp(back->body, "kept across", 11), 0);
    weir__cobj_unref(back);
    cr_assert_null(weir__cdisk_get(d, "http://h/none", 13));
    weir__cdisk_close(d);
    rmtree(dir);
    free(dir);
}

/* The one file of the tier under dir (its path in out). */
static void only_file(const char *dir, char *out, size_t cap)
{
    char sub[600];
    int found = 0;
    for (int i = 0; i < 256; i++) {
        snprintf(sub, sizeof(sub), "%s/%02x", dir, i);
        DIR *dd = opendir(sub);
        struct dirent *de;
        while (dd && (de = readdir(dd))) {
            if (de->d_name[0] == '.')
                continue;
            snprintf(out, cap, "%s/%s", sub, de->d_name);
            found++;
        }
        if (dd)
            closedir(dd);
    }
    cr_assert_eq(found, 1);
}

Test(cache_disk, a_corrupt_file_is_a_miss_and_is_removed)
{
    char *dir = tmpdir();
    weir_cdisk *d = disk_of(dir, 1 << 20);
    weir_cobj *o = make("http://h/bad", "max-age=60", "0123456789abcdef", "");
    weir__cdisk_put(d, o);
    weir__cobj_unref(o);
    weir__cdisk_sync(d);
    char path[1024];
    only_file(dir, path, sizeof(path));
    /* one byte of the body changed on disk */
    int fd = open(path, O_RDWR);
    struct stat stt;
    fstat(fd, &stt);
    char c;
    pread(fd, &c, 1, stt.st_size - 8);
    c ^= 1;
    pwrite(fd, &c, 1, stt.st_size - 8);
    close(fd);
    cr_assert_null(weir__cdisk_get(d, "http://h/bad", 12));
    cr_assert_neq(access(path, F_OK), 0, "removed");
    weir_cache_stats st = {0};
    weir__cdisk_stats(d, &st);
    cr_assert_eq(st.disk_errors, 1);
    cr_assert_eq(st.disk_objects, 0);
    weir__cdisk_close(d);
    rmtree(dir);
    free(dir);
}

Test(cache_disk, a_torn_temporary_is_removed_at_start)
{
    char *dir = tmpdir();
    weir_cdisk *d = disk_of(dir, 1 << 20);
    weir__cdisk_close(d);
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s/ab/.tmp-abc-1", dir);
    FILE *f = fopen(tmp, "w");
    fputs("WCD1 torn", f);
    fclose(f);
    d = disk_of(dir, 1 << 20);
    weir__cdisk_sync(d);
    cr_assert_neq(access(tmp, F_OK), 0);
    weir__cdisk_close(d);
    rmtree(dir);
    free(dir);
}

Test(cache_disk, bounded_with_clock_eviction)
{
    char *dir = tmpdir();
    weir_cdisk *d = disk_of(dir, 4000);
    char body[500];
    memset(body, 'b', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    for (int i = 0; i < 20; i++) {
        char key[32];
        snprintf(key, sizeof(key), "http://h/%d", i);
        weir_cobj *o = make(key, "max-age=60", body, "");
        weir__cdisk_put(d, o);
        weir__cobj_unref(o);
        weir__cdisk_sync(d);
        if (i == 2) { /* read: it gets another round */
            weir_cobj *r = weir__cdisk_get(d, "http://h/0", 10);
            cr_assert_not_null(r);
            weir__cobj_unref(r);
        }
    }
    weir_cache_stats st = {0};
    weir__cdisk_stats(d, &st);
    cr_assert_leq(st.disk_bytes, 4000);
    cr_assert_gt(st.disk_evictions, 10);
    weir_cobj *last = weir__cdisk_get(d, "http://h/19", 11);
    cr_assert_not_null(last);
    weir__cobj_unref(last);
    cr_assert_null(weir__cdisk_get(d, "http://h/1", 10));
    weir__cdisk_close(d);
    rmtree(dir);
    free(dir);
}

Test(cache_disk, purges_by_prefix_after_a_restart)
{
    char *dir = tmpdir();
    weir_cache *c = disk_store(dir, 1 << 20);
    cr_assert(weir__cstore_put(c, make("http://h/a/1", "max-age=60", "1", "")));
    cr_assert(weir__cstore_put(c, make("http://h/a/2", "max-age=60", "2", "")));
    cr_assert(weir__cstore_put(c, make("http://h/b/1", "max-age=60", "3", "")));
    weir_cache_free(c); /* finishes its writes */
    c = disk_store(dir, 1 << 20);
    cr_assert_eq(weir_cache_purge_prefix(c, "http://h/a/", 11), 2);
    cr_assert_null(weir__cstore_get(c, "http://h/a/1", 12));
    weir_cobj *o = weir__cstore_get(c, "http://h/b/1", 12);
    cr_assert_not_null(o, "from disk, into memory");
    weir__cobj_unref(o);
    weir_cache_stats st;
    weir_cache_get_stats(c, &st);
    cr_assert_eq(st.mem_objects, 1);
    cr_assert_eq(st.disk_objects, 1);
    weir_cache_free(c);
    rmtree(dir);
    free(dir);
}

/* ---- locks ---- */

static int woken;

static void wake(void *arg)
{
    (void)arg;
    woken++;
}

Test(cache_lock, one_owner_waiters_woken_once_cancel_is_final)
{
    char err[128];
    weir_cache *c = weir_cache_new(NULL, err, sizeof(err));
    weir_loop *loop = weir__loop_new(0);
    cr_assert_eq(weir__clock_acquire(c, "k", 1, NULL), WEIR_CLOCK_OWNER);
    cr_assert_eq(weir__clock_acquire(c, "k", 1, NULL), WEIR_CLOCK_BUSY);
    weir_cwaiter w[3];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 3; i++) {
        w[i].loop = loop;
        w[i].wake = wake;
        cr_assert_eq(weir__clock_acquire(c, "k", 1, &w[i]), WEIR_CLOCK_WAIT);
    }
    cr_assert(weir__clock_cancel(c, &w[1]));
    cr_assert_eq(w[1].state, WEIR_CWAIT_IDLE);
    weir__clock_release(c, "k", 1, true);
    cr_assert_eq(w[0].state, WEIR_CWAIT_WOKEN);
    cr_assert_eq(w[2].state, WEIR_CWAIT_WOKEN);
    cr_assert(w[0].stored && w[2].stored);
    cr_assert(!weir__clock_cancel(c, &w[0]), "its wake is on the way");
    woken = 0;
    weir__loop_run_pending(loop);
    cr_assert_eq(woken, 2);
    /* the key is free again */
    cr_assert_eq(weir__clock_acquire(c, "k", 1, NULL), WEIR_CLOCK_OWNER);
    weir__clock_release(c, "k", 1, false);
    weir__loop_free(loop);
    weir_cache_free(c);
}
