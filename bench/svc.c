/* The benchmark service: reads CLOCK_MONOTONIC first thing, sends "IDX PID NS" in one
 * datagram to the harness's Unix datagram socket, then sleeps in pause() forever.
 *
 *   svc SOCKET IDX     (reeve, supervisord, pm2)
 *   svc                (as ./run of daemontools/runit/s6: SOCKET from $BENCH_SOCK, IDX
 *                       from the service directory's name "sNNN", i.e. the cwd)
 *
 * Under s6 with a ./notification-fd file (the "s6" peer), it also declares readiness
 * (a newline on that descriptor) once the datagram is sent.
 *
 * Built static (no dynamic loader) by bench/run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    const char *sock = argc >= 3 ? argv[1] : getenv("BENCH_SOCK");
    long idx = -1;
    if (argc >= 3) {
        idx = strtol(argv[2], NULL, 10);
    } else {
        char cwd[4096];
        if (getcwd(cwd, sizeof cwd)) {
            char *b = strrchr(cwd, '/');
            b = b ? b + 1 : cwd;
            if (*b == 's') idx = strtol(b + 1, NULL, 10);
        }
    }
    if (sock) {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        strncpy(a.sun_path, sock, sizeof a.sun_path - 1);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            char msg[96];
            int n = snprintf(msg, sizeof msg, "%ld %ld %lld", idx, (long)getpid(),
                             (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
            sendto(fd, msg, (size_t)n, 0, (struct sockaddr *)&a, sizeof a);
            close(fd);
        }
    }
    if (argc < 3) {
        FILE *f = fopen("notification-fd", "r");
        int nfd;
        if (f) {
            if (fscanf(f, "%d", &nfd) == 1 && write(nfd, "\n", 1) == 1) close(nfd);
            fclose(f);
        }
    }
    for (;;) pause();
}
