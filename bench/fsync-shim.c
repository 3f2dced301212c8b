/* fsync-shim: an LD_PRELOAD library that adds a fixed delay to every fsync and fdatasync,
 * to measure how delivery holds up on a slow disk (issue 3: "~2 ms added to every fsync").
 *
 *   gcc -O2 -shared -fPIC -o fsync-shim.so bench/fsync-shim.c -ldl
 *   LD_PRELOAD=$PWD/fsync-shim.so FSYNC_SHIM_US=2000 reeve hub ...
 *
 * FSYNC_SHIM_US sets the delay in microseconds (default 2000). The delay is slept before
 * the real call, so the call still does its work; SQLite (WAL, synchronous=FULL) calls
 * fdatasync on commit, and the Rust standard library's sync_data/sync_all call these too.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>

static long shim_delay_us(void) {
    static long us = -1;
    if (us < 0) {
        const char *s = getenv("FSYNC_SHIM_US");
        long v = s ? atol(s) : 2000;
        us = v < 0 ? 0 : v;
    }
    return us;
}

static void shim_pause(void) {
    long us = shim_delay_us();
    struct timespec t = {us / 1000000, (us % 1000000) * 1000};
    int saved = errno;
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
    errno = saved;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    shim_pause();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    shim_pause();
    return real(fd);
}
