/* trproxy's clock shim (LD_PRELOAD): the app's wall clock reads the real clock plus an
 * offset that `trproxy test` writes into a shared page before each test.
 *
 * Why not libfaketime: to follow a setting that changes between tests it must re-read its
 * file on every clock call (FAKETIME_NO_CACHE), which made each read ~80x slower; cached,
 * it still costs ~3x. Here a read is the real (vDSO) clock plus one load from a page the
 * app maps once: about the cost of the native read.
 *
 * TRPROXY_CLOCK_FILE names the page: its first 8 bytes are the offset in nanoseconds,
 * written with one aligned 64-bit store (so never seen torn). trproxy writes whole
 * seconds, which lets time() stay on the vDSO's cheap path. Without the variable, or
 * when the file cannot be mapped, the offset is 0. Realtime clocks are shifted;
 * monotonic, boottime and CPU clocks are not (event loops and timeouts keep working).
 * Absolute realtime sleeps (clock_nanosleep TIMER_ABSTIME, sem_timedwait) are shifted
 * back, so a deadline computed from the faked clock is honoured by the kernel.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*gettime_fn)(clockid_t, struct timespec *);
typedef int (*nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);
typedef int (*semwait_fn)(sem_t *, const struct timespec *);
typedef time_t (*time_fn)(time_t *);

static const int64_t no_offset = 0;
static const volatile int64_t *offset_ns = &no_offset;
static gettime_fn real_gettime;
static nanosleep_fn real_nanosleep;
static semwait_fn real_semwait;
static time_fn real_time;

static int syscall_gettime(clockid_t clock, struct timespec *ts) {
    return (int)syscall(SYS_clock_gettime, clock, ts);
}

__attribute__((constructor)) static void trproxy_clock_init(void) {
    if (real_gettime)
        return;
    const char *path = getenv("TRPROXY_CLOCK_FILE");
    if (path && *path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            void *page = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
            close(fd);
            if (page != MAP_FAILED)
                offset_ns = page;
        }
    }
    real_nanosleep = (nanosleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    real_semwait = (semwait_fn)dlsym(RTLD_NEXT, "sem_timedwait");
    real_time = (time_fn)dlsym(RTLD_NEXT, "time");
    gettime_fn found = (gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    real_gettime = found ? found : syscall_gettime;
}

static inline int realtime(clockid_t clock) {
    return clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE ||
           clock == CLOCK_TAI || clock == CLOCK_REALTIME_ALARM;
}

static inline void shift(struct timespec *ts, int64_t ns) {
    int64_t total = (int64_t)ts->tv_nsec + ns % 1000000000LL;
    ts->tv_sec += ns / 1000000000LL + total / 1000000000LL;
    total %= 1000000000LL;
    if (total < 0) {
        total += 1000000000LL;
        ts->tv_sec -= 1;
    }
    ts->tv_nsec = total;
}

static inline int read_clock(clockid_t clock, struct timespec *ts) {
    if (__builtin_expect(real_gettime == NULL, 0))
        trproxy_clock_init();
    int r = real_gettime(clock, ts);
    if (r == 0 && realtime(clock)) {
        int64_t ns = *offset_ns;
        if (ns)
            shift(ts, ns);
    }
    return r;
}

int clock_gettime(clockid_t clock, struct timespec *ts) { return read_clock(clock, ts); }

int __clock_gettime(clockid_t clock, struct timespec *ts) { return read_clock(clock, ts); }

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    struct timespec ts;
    if (tz) {
        struct timezone *zone = tz; /* obsolete: glibc reports UTC */
        zone->tz_minuteswest = 0;
        zone->tz_dsttime = 0;
    }
    if (!tv)
        return 0;
    int r = read_clock(CLOCK_REALTIME, &ts);
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return r;
}

time_t time(time_t *out) {
    if (__builtin_expect(real_gettime == NULL, 0))
        trproxy_clock_init();
    int64_t ns = *offset_ns;
    time_t now;
    if (real_time && ns % 1000000000LL == 0) { /* whole seconds (what trproxy writes): vDSO time() */
        now = real_time(NULL) + (time_t)(ns / 1000000000LL);
    } else {
        struct timespec ts;
        read_clock(CLOCK_REALTIME_COARSE, &ts);
        now = ts.tv_sec;
    }
    if (out)
        *out = now;
    return now;
}

int timespec_get(struct timespec *ts, int base) {
    if (base != TIME_UTC || read_clock(CLOCK_REALTIME, ts) != 0)
        return 0;
    return base;
}

int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req, struct timespec *rem) {
    if (__builtin_expect(real_gettime == NULL, 0))
        trproxy_clock_init();
    if ((flags & TIMER_ABSTIME) && realtime(clock) && *offset_ns && req) {
        struct timespec real_deadline = *req;
        shift(&real_deadline, -*offset_ns);
        return real_nanosleep(clock, flags, &real_deadline, rem);
    }
    return real_nanosleep(clock, flags, req, rem);
}

int sem_timedwait(sem_t *restrict sem, const struct timespec *restrict deadline) {
    if (__builtin_expect(real_gettime == NULL, 0))
        trproxy_clock_init();
    if (deadline && *offset_ns) {
        struct timespec real_deadline = *deadline;
        shift(&real_deadline, -*offset_ns);
        return real_semwait(sem, &real_deadline);
    }
    return real_semwait(sem, deadline);
}
