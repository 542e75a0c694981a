/*
 * pool.h - per-thread free lists for fixed-size hot objects (sessions,
 * connections, 16 KiB I/O buffers).
 *
 * A pool class is registered once, before worker threads start, with its
 * object size. Each thread keeps its own free list per class (no locks);
 * an object may be freed on another thread than the one that allocated it
 * (it joins that thread's list). Each list keeps at most `max_free` objects,
 * the rest go back to malloc.
 *
 * After a burst the lists are full of objects nobody needs any more.
 * weir__pool_trim(), run by each worker about once a second while its lists
 * hold more than a small reserve, frees the objects that stayed unused for a
 * whole interval (a list's low-water mark since the last trim), coldest
 * first, and asks malloc to give the freed pages back to the kernel; a steady
 * load, which keeps taking from its lists, loses nothing.
 *
 * With WEIR_DEBUG_NOPOOL defined, get/put call malloc/free directly so the
 * sanitizers see every object's life; get zeroes what the class promises
 * and fills the rest of the object (all of a buffer) with
 * WEIR_POOL_POISON, so that reading a field nobody set shows up.
 */
#ifndef WEIR_CORE_POOL_H
#define WEIR_CORE_POOL_H

#include <stdbool.h>
#include <stddef.h>

#define WEIR_BUF_SIZE (16 * 1024)

/* WEIR_DEBUG_NOPOOL: the byte past an object's zeroed prefix. */
#define WEIR_POOL_POISON 0xA5

typedef int weir_pool_class;

/* Registers a class; not thread-safe (call at start-up). Returns its id.
 * Objects come zeroed, except past `zero_len` bytes (0 = the whole object):
 * large objects whose tail is initialized on use skip that memset. */
weir_pool_class weir__pool_register(const char *name, size_t obj_size, size_t max_free);
weir_pool_class weir__pool_register_partial(const char *name, size_t obj_size, size_t max_free,
                                            size_t zero_len);
/* A class whose objects are not zeroed at all (buffers, arrays the user
 * fills before reading). */
weir_pool_class weir__pool_register_raw(const char *name, size_t obj_size, size_t max_free);
/* Returns an object (zeroed as registered), or NULL if memory is exhausted. */
void *weir__pool_get(weir_pool_class cls);
/* Returns an object to the calling thread's list. NULL is ignored. */
void weir__pool_put(weir_pool_class cls, void *obj);
/* Frees the calling thread's cached objects (at thread exit). */
void weir__pool_thread_release(void);

/* Objects a list keeps through a trim. */
#define WEIR_POOL_RESERVE 8

/*
 * Frees, per class, the calling thread's objects beyond WEIR_POOL_RESERVE
 * that no get needed since the previous trim. Returns true while some list
 * still holds more than the reserve (call again in about a second).
 */
bool weir__pool_trim(void);
/*
 * Called (once, with `arg`) when a put leaves one of the calling thread's
 * lists above the reserve while no trim is due: the worker arms its trim
 * timer there. NULL (the default) for threads that never trim.
 */
void weir__pool_set_trim_hook(void (*hook)(void *arg), void *arg);
/* Bytes in the calling thread's lists (tests and metrics). */
size_t weir__pool_cached_bytes(void);

/* The 16 KiB I/O buffer class (registered by the library itself). Buffer
 * memory is not zeroed. */
char *weir__buf_get(void);
void weir__buf_put(char *buf);

#endif
