/* helpers.h - tiny assertion and fixture helpers for the C unit tests. */
#ifndef HGSMI_TEST_HELPERS_H
#define HGSMI_TEST_HELPERS_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

/*
 * Two real processes under a private runtime directory: fork a host that
 * runs run_host(name, backend, ready_fd) (it writes a byte to ready_fd once
 * it listens and exits 0 on SIGTERM), run the guest here, stop the host,
 * and check it removed its socket.  Each side is bounded by alarm(60).
 */
static inline void fork_host_run_guest(const char *tag, uint32_t backend,
				       void (*run_host)(const char *, uint32_t, int),
				       void (*run_guest)(const char *))
{
	char name[17], dir[] = "/tmp/hgsmi-test-XXXXXX";
	int p[2], status;
	pid_t host;
	char c;

	CHECK(mkdtemp(dir));
	setenv("HGSMI_RUNTIME_DIR", dir, 1);
	snprintf(name, sizeof(name), "%s%d%u", tag, (int)getpid() % 100000, backend);
	CHECK(pipe(p) == 0);
	host = fork();
	if (host == 0) {
		alarm(60);
		run_host(name, backend, p[1]);
	}
	CHECK(read(p[0], &c, 1) == 1);
	alarm(60);
	run_guest(name);
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
