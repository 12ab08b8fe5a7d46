/* SPDX-License-Identifier: MIT */
/*
 * fuzz_handshake.c - the control-socket handshake, both parsers, through the
 * real sockets: a hostile guest's hello to hgsmi_host_accept, and a hostile
 * host's welcome to hgsmi_guest_attach, followed (when the attach succeeds)
 * by that host scribbling over the segment while the guest works on it.
 *
 * Input, first byte `mode`, bit 0 chooses the side:
 *
 * bit 0 = 0, hello: the bytes after `ctl` are written to a connection to a
 *   real host (hgsmi_host_create in a private directory); then the write side
 *   is shut down and hgsmi_host_accept runs.
 *     u8 ctl    bits 0-1: eventfds passed with SCM_RIGHTS (0..3)
 *     ...       the bytes sent: a struct hgsmi_hello, or anything
 *   Oracles: an accepted guest got a complete welcome with status 0 and three
 *   fds, the first a memfd of the segment's size sealed against shrink, grow
 *   and new seals, with nothing in /dev/shm; no fd is leaked by any path
 *   (the memfd goes with our copy and the conn); the host has no conn left.
 *
 * bit 0 = 1, welcome: a fake host (a thread of this process listening in the
 *   private directory) answers the guest's hello with the bytes given and
 *   shuts down its write side; hgsmi_guest_attach parses them.
 *     u8 ctl    bits 0-1: eventfds passed with SCM_RIGHTS (0..3)
 *               bit 2: replace the welcome's segment name with the name of a
 *                      real segment this harness made; bit 3: its epoch;
 *                      bit 4: its size (so mutations can get past them)
 *               bit 5: pass a real sealed memfd segment as the first fd
 *                      (for HGSMI_F_SEGMENT_FD), before the eventfds
 *     u8 plen   bytes of welcome that follow
 *     u8 npre   how many of the ops below are applied before the attach
 *               (a host that lays out a hostile header)
 *     ...       plen bytes: a struct hgsmi_welcome, or anything
 *     ...       ops, 8 bytes each, u32 where + u32 value, at most MAX_OPS:
 *               0xffffffff: the guest works: recv (acks all), reap, wait(0)
 *               0xfffffffe: the guest sends (channel value & 0xff, value >> 8
 *                           & 0xff bytes), fire and forget
 *               0xfffffffd: the guest calls with timeout 0 (the buffer is
 *                           orphaned and freed when it comes back)
 *               0xfffffffc: the host raises the IRQ (eventfd)
 *               otherwise:  the host stores value at (where % (size - 3)) & ~3
 *   The real segments (one named, one memfd) are reset to their pristine
 *   image before every input; the host's stores go to both.
 *   Oracles: no crash or ASan report (the guest's private memory is
 *   checked, and PROT_NONE guard pages sit right around the guest's mapping
 *   of the segment, see reserve_guarded()); no fd is leaked; the guest's
 *   stats stay consistent.
 *
 * Not reachable this way: a welcome that arrives in pieces, then stalls (the
 * guest bounds it with SO_RCVTIMEO, too slow to fuzz).  The host no longer
 * blocks on a hello at all: pending connections wait in its epoll set
 * (tests/test_limits.py covers silent and half hellos).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"

#define MAX_OPS 48
#define SEG_SIZE (64u << 10)
#define SEG_ENTRIES 16u
#define SEG_EPOCH 5u
#define PAGE 4096u

static char dir[64], host_dir[96], fake_path[108];
static struct hgsmi_host *host;
static struct hgsmi_segment seg;  /* the real segment a welcome may name */
static struct hgsmi_segment mseg; /* the same as a sealed memfd (mseg.fd) */
static uint8_t *pristine;
static bool verbose;
static unsigned long attached, guarded; /* how often the guard pages held */

/* The fake host's thread and what it is told to answer. */
static int fake_listen = -1;
static sem_t go, done;
static uint8_t reply[256];
static size_t reply_len;
static int reply_fds[4], reply_nfds;
static int fake_conn = -1; /* the accepted connection, closed by the main thread */
static volatile bool quitting;

static void make_eventfds(int *fds, int n)
{
	for (int i = 0; i < n; i++) {
		fds[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		FUZZ_CHECK(fds[i] >= 0);
	}
}

static void close_fds(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

/* One sendmsg of len bytes with n fds (which stay open here): the core's own. */
static void send_with_fds(int sock, const void *buf, size_t len, const int *fds, int n)
{
	if (len > 0)
		FUZZ_CHECK(hgsmi_int_send_fds(sock, buf, len, fds, n) == 0);
}

static void *fake_host(void *arg)
{
	sigset_t all;

	(void)arg;
	/* Signals (libFuzzer's alarm) go to the main thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		struct hgsmi_hello hello;
		struct pollfd p;
		int fd;

		while (sem_wait(&go) < 0)
			;
		if (quitting)
			return NULL;
		fd = accept4(fake_listen, NULL, NULL, SOCK_CLOEXEC);
		FUZZ_CHECK(fd >= 0);
		/* The guest's hello must be what the protocol says. */
		p = (struct pollfd){.fd = fd, .events = POLLIN};
		FUZZ_CHECK(poll(&p, 1, 5000) == 1);
		FUZZ_CHECK(recv(fd, &hello, sizeof(hello), MSG_WAITALL) == sizeof(hello));
		FUZZ_CHECK(hello.magic == HGSMI_CTL_MAGIC && hello.abi_major == HGSMI_ABI_MAJOR &&
			   hello.kind == HGSMI_HELLO_ATTACH);
		send_with_fds(fd, reply, reply_len, reply_fds, reply_nfds);
		/* EOF after the welcome: a short one fails instead of hanging. */
		shutdown(fd, SHUT_WR);
		fake_conn = fd;
		sem_post(&done);
	}
}

static void cleanup(void)
{
	if (attached)
		fprintf(stderr, "fuzz_handshake: %lu attaches, %lu with guard pages around "
			"the guest's segment\n", attached, guarded);
	quitting = true;
	sem_post(&go);
	if (host)
		hgsmi_host_destroy(host);
	host = NULL;
	if (seg.base)
		hgsmi_int_segment_close(&seg, true);
	if (mseg.base)
		hgsmi_int_segment_close(&mseg, true);
	if (fake_listen >= 0)
		close(fake_listen);
	unlink(fake_path);
	rmdir(host_dir);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct hgsmi_host_config cfg = {0};
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char name[16], segname[HGSMI_NAME_MAX];
	pthread_t t;

	(void)argc, (void)argv;
	verbose = getenv("HGSMI_FUZZ_VERBOSE") != NULL;
	/* The pid in every name lets fuzz/run.sh remove what a crash left. */
	snprintf(dir, sizeof(dir), "/tmp/hgsmi-fuzz-%d-XXXXXX", (int)getpid());
	FUZZ_CHECK(mkdtemp(dir));
	snprintf(host_dir, sizeof(host_dir), "%s/h", dir);
	snprintf(fake_path, sizeof(fake_path), "%s/fake.sock", dir);
	atexit(cleanup);

	/* A real host, small segments; the pid keeps parallel jobs apart. */
	snprintf(name, sizeof(name), "fz%d", (int)getpid() % 10000000);
	cfg.name = name;
	cfg.runtime_dir = host_dir;
	cfg.segment_size = SEG_SIZE;
	cfg.ring_entries = SEG_ENTRIES;
	FUZZ_CHECK(hgsmi_host_create(&cfg, &host) == 0);

	/* The segment a welcome may name (another instance name: the host's
	 * create cleans up its own). */
	snprintf(segname, sizeof(segname), "/hgsmi-fy%d.1", (int)getpid() % 10000000);
	hgsmi_int_segment_cleanup(segname + 7, true);
	FUZZ_CHECK(hgsmi_int_segment_create(&seg, segname, SEG_SIZE, SEG_ENTRIES, 50, 3,
					    SEG_EPOCH, HGSMI_F_ALL & ~HGSMI_F_SEGMENT_FD,
					    false) == 0);
	FUZZ_CHECK(hgsmi_int_segment_create(&mseg, segname, SEG_SIZE, SEG_ENTRIES, 50, 3,
					    SEG_EPOCH, HGSMI_F_ALL, true) == 0 &&
		   mseg.fd >= 0);
	pristine = malloc(SEG_SIZE);
	FUZZ_CHECK(pristine);
	memcpy(pristine, seg.base, SEG_SIZE);

	fake_listen = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	strcpy(sa.sun_path, fake_path);
	FUZZ_CHECK(fake_listen >= 0 && bind(fake_listen, (void *)&sa, sizeof(sa)) == 0 &&
		   listen(fake_listen, 4) == 0);
	FUZZ_CHECK(sem_init(&go, 0, 0) == 0 && sem_init(&done, 0, 0) == 0);
	FUZZ_CHECK(pthread_create(&t, NULL, fake_host, NULL) == 0);
	pthread_detach(t);
	return 0;
}

/* ---- hello -> hgsmi_host_accept ---------------------------------------- */

static void drain(int fd)
{
	char buf[512];
	struct pollfd p = {.fd = fd, .events = POLLIN};

	while (poll(&p, 1, 0) == 1 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

static void hello(struct cursor *in)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	uint8_t ctl = take_u8(in);
	int fds[3], nfds = ctl & 3, cli, rc;
	struct hgsmi_conn *conn = NULL;

	cli = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	strcpy(sa.sun_path, hgsmi_host_socket_path(host));
	FUZZ_CHECK(cli >= 0 && connect(cli, (void *)&sa, sizeof(sa)) == 0);
	make_eventfds(fds, nfds);
	send_with_fds(cli, in->p, in->left, fds, nfds);
	close_fds(fds, nfds);
	shutdown(cli, SHUT_WR);

	rc = hgsmi_host_accept(host, &conn);
	if (verbose)
		fprintf(stderr, "fuzz_handshake: accept %d (%s)\n", rc, hgsmi_strerror(rc));
	FUZZ_CHECK(rc <= 0);
	if (rc == 0 && conn) {
		struct hgsmi_welcome w;
		char shm[HGSMI_NAME_MAX + 16];
		int got[3], n = 0, want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
		struct stat st;

		FUZZ_CHECK(hgsmi_host_conn_count(host) == 1);
		FUZZ_CHECK(hgsmi_int_recv_fds(cli, &w, sizeof(w), got, 3, &n, 1000) == 0);
		FUZZ_CHECK(w.magic == HGSMI_CTL_MAGIC && w.status == 0 && n == 3 &&
			   w.nfds == 3 && memchr(w.segment, 0, sizeof(w.segment)));
		FUZZ_CHECK((w.features & ~HGSMI_F_ALL) == 0 && (w.features & HGSMI_F_SEGMENT_FD));
		FUZZ_CHECK((fcntl(got[0], F_GET_SEALS) & want) == want);
		FUZZ_CHECK(fstat(got[0], &st) == 0 && st.st_size == SEG_SIZE);
		FUZZ_CHECK(ftruncate(got[0], 0) < 0 && errno == EPERM);
		close_fds(got, n);
		snprintf(shm, sizeof(shm), "/dev/shm%s", w.segment);
		FUZZ_CHECK(access(shm, F_OK) < 0);
		hgsmi_conn_close(conn);
	}
	FUZZ_CHECK(hgsmi_host_conn_count(host) == 0);
	drain(cli);
	close(cli);
}

/* ---- welcome -> hgsmi_guest_attach, then a hostile host ----------------- */

static void host_store(uint32_t where, uint32_t value)
{
	uint32_t at = (where % (SEG_SIZE - 3)) & ~3u;

	WRITE_ONCE(*(uint32_t *)(void *)(seg.base + at), value);
	WRITE_ONCE(*(uint32_t *)(void *)(mseg.base + at), value);
}

/*
 * PROT_NONE pages right around the guest's mapping of the segment, so that a
 * guest touching a byte just outside it faults.  A reservation of the
 * segment's size plus two pages is made and its middle given back just
 * before the attach: the kernel's top-down search puts the guest's mmap of
 * the same size there.  Returns the reservation, or MAP_FAILED.
 */
static uint8_t *reserve_guarded(void)
{
	uint8_t *r = mmap(NULL, SEG_SIZE + 2 * PAGE, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (r != MAP_FAILED)
		munmap(r + PAGE, SEG_SIZE);
	return r;
}

static void release_guarded(uint8_t *r)
{
	if (r == MAP_FAILED)
		return;
	munmap(r, PAGE);
	munmap(r + PAGE + SEG_SIZE, PAGE);
}

static void guest_round(struct hgsmi_guest *g)
{
	struct hgsmi_msg m[HGSMI_BATCH];
	int n;

	n = hgsmi_guest_recv(g, m, HGSMI_BATCH);
	if (n > 0) {
		for (int i = 0; i < n; i++)
			m[i].status = 0, m[i].size = 0;
		hgsmi_guest_ack(g, m, (unsigned)n);
	}
	n = hgsmi_guest_reap(g, m, HGSMI_BATCH);
	for (int i = 0; i < n; i++) {
		/* A completion the guest accepted names its own heap and a
		 * reply that fits the block. */
		FUZZ_CHECK(m[i].size <= m[i].capacity || m[i].status < 0);
		hgsmi_guest_free(g, m[i].offset);
	}
	hgsmi_guest_wait(g, 0);
}

static void welcome(struct cursor *in)
{
	struct hgsmi_guest_config cfg = {.connect_timeout_ms = 2000};
	struct hgsmi_guest *g = NULL;
	struct hgsmi_welcome *w = (void *)reply;
	uint8_t ctl = take_u8(in);
	uint8_t plen = take_u8(in), npre = take_u8(in);
	struct timespec ts;
	uint8_t *guards;
	int irq = -1, rc, rc2;

	memset(reply, 0, sizeof(reply));
	reply_len = take_bytes(in, reply, plen);
	if (reply_len >= sizeof(*w)) {
		if (ctl & 4)
			strcpy(w->segment, seg.name);
		if (ctl & 8)
			w->epoch = SEG_EPOCH;
		if (ctl & 16)
			w->segment_size = SEG_SIZE;
	}
	reply_nfds = 0;
	if (ctl & 32)
		FUZZ_CHECK((reply_fds[reply_nfds++] = dup(mseg.fd)) >= 0);
	make_eventfds(reply_fds + reply_nfds, ctl & 3);
	if ((ctl & 3) >= 2)
		irq = reply_fds[reply_nfds + 1];
	reply_nfds += ctl & 3;

	/* The host lays out the segment (possibly a hostile header). */
	memcpy(seg.base, pristine, SEG_SIZE);
	memcpy(mseg.base, pristine, SEG_SIZE);
	for (int i = 0; i < npre && in->left >= 8; i++) {
		uint32_t where = take_u32(in), value = take_u32(in);

		if (where < 0xfffffff0u)
			host_store(where, value);
	}

	guards = reserve_guarded();
	sem_post(&go);
	rc = hgsmi_guest_attach(fake_path, &cfg, &g);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	/* libFuzzer's SIGALRM (its -timeout) interrupts the wait. */
	while ((rc2 = sem_timedwait(&done, &ts)) < 0 && errno == EINTR)
		;
	FUZZ_CHECK(rc2 == 0);
	if (verbose)
		fprintf(stderr, "fuzz_handshake: attach %d (%s)\n", rc, hgsmi_strerror(rc));
	FUZZ_CHECK((rc == 0) == (g != NULL));
	if (g) {
		struct hgsmi_guest_stats st;

		FUZZ_CHECK(hgsmi_guest_size(g) == SEG_SIZE);
		guarded += guards != MAP_FAILED &&
			   (uint8_t *)hgsmi_guest_base(g) == guards + PAGE;
		attached++;
		if (verbose)
			fprintf(stderr, "fuzz_handshake: guard pages %s\n",
				guards != MAP_FAILED &&
				(uint8_t *)hgsmi_guest_base(g) == guards + PAGE ? "around the segment"
										: "missed");
		for (int ops = 0; ops < MAX_OPS && in->left >= 8; ops++) {
			uint32_t where = take_u32(in), value = take_u32(in);
			struct hgsmi_msg m;
			uint8_t payload[256];
			const void *datas[1] = {payload};
			uint32_t lens[1] = {(value >> 8) & 0xff};

			switch (where) {
			case 0xffffffffu:
				guest_round(g);
				break;
			case 0xfffffffeu:
				memset(payload, 0x5a, sizeof(payload));
				hgsmi_guest_send(g, (uint8_t)(value | 2), 0, datas, lens, 1);
				break;
			case 0xfffffffdu:
				if (hgsmi_guest_alloc(g, lens[0], 0, (uint8_t)(value | 2), 0, &m) == 0 &&
				    hgsmi_guest_call_buffer(g, m.offset, 0, &m) != -ETIMEDOUT)
					hgsmi_guest_free(g, m.offset);
				break;
			case 0xfffffffcu:
				if (irq >= 0)
					FUZZ_CHECK(eventfd_write(irq, 1) == 0);
				break;
			default:
				host_store(where, value);
			}
		}
		guest_round(g);
		hgsmi_guest_stats(g, &st);
		if (verbose)
			fprintf(stderr, "fuzz_handshake: guest out %llu in %llu errors %llu "
				"remote %llu inflight %u\n", (unsigned long long)st.msgs_out,
				(unsigned long long)st.msgs_in, (unsigned long long)st.errors,
				(unsigned long long)st.remote_errors, st.inflight);
		FUZZ_CHECK(st.inflight <= SEG_ENTRIES);
		hgsmi_guest_detach(g);
	}
	release_guarded(guards);
	close(fake_conn);
	fake_conn = -1;
	close_fds(reply_fds, reply_nfds);
	reply_nfds = 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cursor in = {data, size};
	uint8_t mode = take_u8(&in);
	int fds_before = fuzz_count_fds();

	if (mode & 1)
		welcome(&in);
	else
		hello(&in);
	FUZZ_CHECK(fuzz_count_fds() == fds_before);
	return 0;
}
