/* helpers.h - tiny assertion and fixture helpers for the C unit tests. */
#ifndef HGSMI_TEST_HELPERS_H
#define HGSMI_TEST_HELPERS_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)
#define CHECK_RC(expr)                                                         \
	do {                                                                   \
		long long rc_ = (long long)(expr);                             \
		if (rc_ < 0) {                                                 \
			fprintf(stderr, "%s:%d: %s = %lld (%s)\n", __FILE__,   \
				__LINE__, #expr, rc_, hgsmi_strerror((int)rc_)); \
			exit(1);                                               \
		}                                                              \
	} while (0)

/* The tests' byte pattern: byte i of a message with this seed. */
static inline uint8_t pattern_at(uint32_t seed, uint32_t i)
{
	return (uint8_t)(seed * 131u + i * 7u);
}

static inline void fill_pattern(uint8_t *p, uint32_t n, uint32_t seed)
{
	for (uint32_t i = 0; i < n; i++)
		p[i] = pattern_at(seed, i);
}

/* A guest's end of a clean run: nothing in flight, its heap empty, no
 * protocol error seen; then detach. */
static inline void detach_clean(struct hgsmi_guest *g)
{
	struct hgsmi_guest_stats st;

	hgsmi_guest_stats(g, &st);
	CHECK(st.inflight == 0);
	CHECK(st.guest_heap.used == 0);
	CHECK(st.errors == 0);
	hgsmi_guest_detach(g);
}

/* The running fixture host and its runtime directory, stopped and removed
 * however the guest side ends. */
static pid_t fixture_host;
static char fixture_dir[] = "/tmp/hgsmi-test-XXXXXX";

/*
 * A failed CHECK on the guest side exits (or its alarm fires) with the host
 * still running: stop it with SIGTERM, so that it removes its socket and its
 * named semaphores, rather than leave it to die of its own alarm and leave
 * them behind (/dev/shm/sem.hgsmi-*).  Only what is async-signal-safe.
 */
static void stop_fixture_host(void)
{
	pid_t host = fixture_host;

	fixture_host = 0;
	if (host > 0) {
		kill(host, SIGTERM);
		waitpid(host, NULL, 0); /* bounded: the host has its own alarm */
		rmdir(fixture_dir);     /* empty once the host removed its socket */
	}
}

static void on_fixture_alarm(int sig)
{
	(void)sig;
	stop_fixture_host();
	_exit(1);
}

/*
 * Two real processes under a private runtime directory: fork a host that
 * runs run_host(name, backend, ready_fd) (it writes a byte to ready_fd once
 * it listens and exits 0 on SIGTERM), run the guest here, stop the host,
 * and check it removed its socket.  Each side is bounded by alarm(60); a
 * guest side that fails stops the host first.
 */
static inline void fork_host_run_guest(const char *tag, uint32_t backend,
				       void (*run_host)(const char *, uint32_t, int),
				       void (*run_guest)(const char *))
{
	static int registered;
	char name[17], *dir = fixture_dir;
	int p[2], status;
	pid_t host;
	char c;

	if (!registered++)
		CHECK(atexit(stop_fixture_host) == 0);
	strcpy(dir + sizeof(fixture_dir) - 7, "XXXXXX"); /* a new one each run */
	CHECK(mkdtemp(dir));
	setenv("HGSMI_RUNTIME_DIR", dir, 1);
	snprintf(name, sizeof(name), "%s%d%u", tag, (int)getpid() % 100000, backend);
	CHECK(pipe(p) == 0);
	host = fork();
	if (host == 0) {
		alarm(60);
		run_host(name, backend, p[1]);
	}
	fixture_host = host;
	signal(SIGALRM, on_fixture_alarm);
	CHECK(read(p[0], &c, 1) == 1);
	alarm(60);
	run_guest(name);
	alarm(0);
	fixture_host = 0;
	kill(host, SIGTERM);
	CHECK(waitpid(host, &status, 0) == host);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(rmdir(dir) == 0); /* the host removed its socket */
	close(p[0]);
	close(p[1]);
}

/* main() of a two-process test: the same run over each backend, then its
 * ok line. */
static inline int fork_host_run_guest_each_backend(const char *tag, const char *test,
						   void (*run_host)(const char *, uint32_t, int),
						   void (*run_guest)(const char *))
{
	fork_host_run_guest(tag, HGSMI_BACKEND_EVENTFD, run_host, run_guest);
	fork_host_run_guest(tag, HGSMI_BACKEND_SEMAPHORE, run_host, run_guest);
	printf("%s: ok\n", test);
	return 0;
}
#endif
