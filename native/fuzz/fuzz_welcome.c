/* SPDX-License-Identifier: MIT */
/*
 * fuzz_welcome.c - the guest's side of the handshake at memory speed: a
 * welcome's fields and the fds that ride with it, as a hostile host chooses
 * them, to hgsmi_int_guest_adopt (what hgsmi_guest_attach runs once the
 * welcome is read; fuzz_handshake reaches it through the socket), then guest
 * operations over whatever was adopted, with the host scribbling and ringing.
 *
 * Input:
 *   u8 kinds[3]  what each fd is (FD_* below, modulo FD_KINDS); the list
 *                ends at the first FD_NONE
 *   u8 fix       bit 0: the welcome's features, backend, nfds and segment
 *                size made those of a real host with these fds (so that
 *                mutations get past them); bit 1: its epoch the segment's;
 *                bit 2: its segment label NUL-terminated
 *   u8 plen      bytes of struct hgsmi_welcome that follow (the rest zero)
 *   ...          plen bytes
 *   ...          ops, one byte each (modulo 8): 0 wait(0), 1 send,
 *                2 call(timeout 0), 3 recv + ack(timeout 0), 4 disarm,
 *                5 arm, 6 the host rings the IRQ fd (whatever it is),
 *                7 the host stores u32 value at u32 where (8 more bytes)
 *
 * Oracles: no crash or sanitizer report; no fd is leaked; a guest is adopted
 * only if the segment fd was a memfd sealed against shrink and grow of the
 * welcome's exact size and both eventfd slots held plain eventfds (not in
 * semaphore mode), and then its IRQ fd is non-blocking; no operation takes
 * a second (none may block: libFuzzer's -timeout catches a hang too).
 * HGSMI_FUZZ_VERBOSE=1 says what each input's adoption gave.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"

#define SEG_SIZE (64u << 10)
#define SEG_ENTRIES 16u
#define SEG_EPOCH 9u
#define PAGE 4096u
#define MAX_OPS 64

enum fd_kind {
	FD_NONE,
	FD_EVENTFD,          /* non-blocking: what hgsmi's host passes */
	FD_EVENTFD_BLOCKING, /* blocking: made non-blocking on adoption */
	FD_EVENTFD_FULL,     /* blocking, at its maximum count */
	FD_EVENTFD_SEM,      /* EFD_SEMAPHORE: stays readable after a read */
	FD_PIPE_READ,
	FD_PIPE_WRITE_FULL,  /* blocking, full */
	FD_FILE,             /* a regular file of the segment's size */
	FD_MEMFD,            /* sealed, the segment's size: the only good segment */
	FD_MEMFD_UNSEALED,
	FD_MEMFD_BIG,        /* sealed, a page larger */
	FD_MEMFD_SMALL,      /* sealed, a page smaller */
	FD_MEMFD_SHRINK_ONLY,
	FD_SOCKET,
	FD_DEVNULL,
	FD_DIR,
	FD_KINDS
};

static uint8_t *pristine; /* a laid-out segment image */
static char tmpdir[64];
static const uint64_t eventfd_max = 0xfffffffffffffffeull;

static uint64_t now_ms(void)
{
	return hgsmi_int_now_ns() / 1000000u;
}

static void cleanup(void)
{
	rmdir(tmpdir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct hgsmi_segment seg;

	(void)argc, (void)argv;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/hgsmi-fuzz-%d-XXXXXX", (int)getpid());
	FUZZ_CHECK(mkdtemp(tmpdir));
	atexit(cleanup);
	FUZZ_CHECK(hgsmi_int_segment_create(&seg, "/hgsmi-fw", SEG_SIZE, SEG_ENTRIES, 50, 3,
					    SEG_EPOCH, HGSMI_F_ALL, true) == 0);
	pristine = malloc(SEG_SIZE);
	FUZZ_CHECK(pristine);
	memcpy(pristine, seg.base, SEG_SIZE);
	hgsmi_int_segment_close(&seg, true);
	return 0;
}

/* A memfd holding the pristine image, `size` bytes, with `seals`. */
static int make_memfd(uint32_t size, int seals)
{
	int fd = memfd_create("hgsmi-fw", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	FUZZ_CHECK(fd >= 0 && ftruncate(fd, size) == 0);
	FUZZ_CHECK(pwrite(fd, pristine, size < SEG_SIZE ? size : SEG_SIZE, 0) > 0);
	if (seals)
		FUZZ_CHECK(fcntl(fd, F_ADD_SEALS, seals) == 0);
	return fd;
}

static void fill(int fd)
{
	static const char zeros[4096];

	while (write(fd, zeros, sizeof(zeros)) > 0)
		;
}

/*
 * The host's fd of `kind` (kept: *mine, closed by the caller, or -1) and the
 * one the guest gets (a dup, as SCM_RIGHTS gives it the same description).
 */
static int make_fd(enum fd_kind kind, int *mine)
{
	int p[2], fd = -1, sealed = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	char path[96];

	*mine = -1;
	switch (kind) {
	case FD_EVENTFD:
		fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		break;
	case FD_EVENTFD_BLOCKING:
		fd = eventfd(0, EFD_CLOEXEC);
		break;
	case FD_EVENTFD_FULL:
		fd = eventfd(0, EFD_CLOEXEC);
		FUZZ_CHECK(fd >= 0 && write(fd, &eventfd_max, 8) == 8);
		break;
	case FD_EVENTFD_SEM:
		fd = eventfd(1000, EFD_SEMAPHORE | EFD_CLOEXEC);
		break;
	case FD_PIPE_READ:
	case FD_PIPE_WRITE_FULL:
		FUZZ_CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
		fill(p[1]);
		fcntl(p[0], F_SETFL, 0);
		fcntl(p[1], F_SETFL, 0);
		fd = p[kind == FD_PIPE_READ ? 0 : 1];
		*mine = p[kind == FD_PIPE_READ ? 1 : 0];
		return fd;
	case FD_FILE:
		snprintf(path, sizeof(path), "%s/file", tmpdir);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		FUZZ_CHECK(fd >= 0 && ftruncate(fd, SEG_SIZE) == 0);
		unlink(path);
		break;
	case FD_MEMFD:
		fd = make_memfd(SEG_SIZE, sealed);
		break;
	case FD_MEMFD_UNSEALED:
		fd = make_memfd(SEG_SIZE, 0);
		break;
	case FD_MEMFD_BIG:
		fd = make_memfd(SEG_SIZE + PAGE, sealed);
		break;
	case FD_MEMFD_SMALL:
		fd = make_memfd(SEG_SIZE - PAGE, sealed);
		break;
	case FD_MEMFD_SHRINK_ONLY:
		fd = make_memfd(SEG_SIZE, F_SEAL_SHRINK);
		break;
	case FD_SOCKET:
		FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) == 0);
		*mine = p[1];
		return p[0];
	case FD_DEVNULL:
		fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		break;
	case FD_DIR:
		fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		break;
	default:
		return -1;
	}
	FUZZ_CHECK(fd >= 0);
	*mine = fd;
	fd = dup(fd);
	FUZZ_CHECK(fd >= 0);
	return fd;
}

static bool is_eventfd_kind(enum fd_kind k)
{
	return k == FD_EVENTFD || k == FD_EVENTFD_BLOCKING || k == FD_EVENTFD_FULL;
}

static void op(struct hgsmi_guest *g, uint8_t what, struct cursor *in, int host_irq,
	       uint8_t *host_map)
{
	static const uint8_t payload[48] = {1, 2, 3};
	const void *datas[1] = {payload};
	uint32_t lens[1] = {sizeof(payload)};
	struct hgsmi_msg m[HGSMI_BATCH];
	uint64_t one = 1;
	int n;

	switch (what % 8) {
	case 0:
		hgsmi_guest_wait(g, 0);
		break;
	case 1:
		hgsmi_guest_send(g, 0x20, 0, datas, lens, 1);
		break;
	case 2:
		if (hgsmi_guest_alloc(g, 16, 0, 0x20, 0, &m[0]) == 0 &&
		    hgsmi_guest_call_buffer(g, m[0].offset, 0, &m[1]) != -ETIMEDOUT)
			hgsmi_guest_free(g, m[0].offset);
		break;
	case 3:
		n = hgsmi_guest_recv_timeout(g, m, HGSMI_BATCH, 0);
		for (int i = 0; i < n; i++)
			m[i].status = 0, m[i].size = 0;
		if (n > 0)
			hgsmi_guest_ack_timeout(g, m, (unsigned)n, 0);
		break;
	case 4:
		hgsmi_guest_disarm(g);
		break;
	case 5:
		hgsmi_guest_arm(g);
		break;
	case 6:
		if (host_irq >= 0) { /* whatever it is: it must not block the guest */
			int fl = fcntl(host_irq, F_GETFL);

			fcntl(host_irq, F_SETFL, fl | O_NONBLOCK);
			if (write(host_irq, &one, sizeof(one)) < 0) {
				/* full or not writable: the host's problem */
			}
			fcntl(host_irq, F_SETFL, fl);
		}
		break;
	default: {
		uint32_t where = take_u32(in), value = take_u32(in);

		if (host_map)
			WRITE_ONCE(*(uint32_t *)(void *)(host_map + ((where % (SEG_SIZE - 3)) & ~3u)),
				   value);
	}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cursor in = {data, size};
	struct hgsmi_welcome w;
	struct hgsmi_guest *g = NULL;
	enum fd_kind kinds[3] = {FD_NONE, FD_NONE, FD_NONE};
	int fds[3], mine[3] = {-1, -1, -1}, nfds = 0, before = fuzz_count_fds(), rc;
	uint8_t fix, plen, *host_map = NULL;

	for (int i = 0; i < 3; i++)
		kinds[i] = (enum fd_kind)(take_u8(&in) % FD_KINDS);
	fix = take_u8(&in);
	plen = take_u8(&in);
	memset(&w, 0, sizeof(w));
	take_bytes(&in, &w, plen < sizeof(w) ? plen : sizeof(w));
	while (nfds < 3 && kinds[nfds] != FD_NONE) {
		fds[nfds] = make_fd(kinds[nfds], &mine[nfds]);
		nfds++;
	}
	if (fix & 1) {
		w.magic = HGSMI_CTL_MAGIC;
		w.abi_major = HGSMI_ABI_MAJOR;
		w.features = HGSMI_F_ALL;
		w.backend = HGSMI_BACKEND_EVENTFD;
		w.nfds = (uint32_t)nfds;
		w.segment_size = SEG_SIZE;
	}
	if (fix & 2)
		w.epoch = SEG_EPOCH;
	if (fix & 4)
		w.segment[sizeof(w.segment) - 1] = 0;
	/* The host's view of the segment, for its stores. */
	if (nfds > 0 && mine[0] >= 0 && kinds[0] >= FD_MEMFD && kinds[0] <= FD_MEMFD_SHRINK_ONLY &&
	    kinds[0] != FD_MEMFD_SMALL) {
		host_map = mmap(NULL, SEG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mine[0], 0);
		FUZZ_CHECK(host_map != MAP_FAILED);
	}

	rc = hgsmi_int_guest_adopt(&w, fds, nfds, &g);
	if (getenv("HGSMI_FUZZ_VERBOSE"))
		fprintf(stderr, "fuzz_welcome: fds %d %d %d: adopt %d (%s)\n", kinds[0], kinds[1],
			kinds[2], rc, hgsmi_strerror(rc));
	FUZZ_CHECK((rc == 0) == (g != NULL));
	if (g) {
		bool segfd = w.features & HGSMI_F_SEGMENT_FD;
		int irq = hgsmi_guest_fileno(g);

		/* Only the one good segment, and only plain eventfds, get in. */
		if (segfd)
			FUZZ_CHECK(kinds[0] == FD_MEMFD);
		if (w.backend == HGSMI_BACKEND_EVENTFD) {
			FUZZ_CHECK(is_eventfd_kind(kinds[segfd]) && is_eventfd_kind(kinds[segfd + 1]));
			FUZZ_CHECK(irq >= 0 && (fcntl(irq, F_GETFL) & O_NONBLOCK));
		}
		for (int i = 0; i < MAX_OPS && in.left; i++) {
			uint64_t t0 = now_ms();

			op(g, take_u8(&in), &in, w.backend == HGSMI_BACKEND_EVENTFD && nfds >= 2
					 ? mine[nfds - 1] : -1, host_map);
			FUZZ_CHECK(now_ms() - t0 < 1000);
		}
		hgsmi_guest_detach(g);
	}
	if (host_map)
		munmap(host_map, SEG_SIZE);
	for (int i = 0; i < 3; i++)
		if (mine[i] >= 0)
			close(mine[i]);
	FUZZ_CHECK(fuzz_count_fds() == before);
	return 0;
}
