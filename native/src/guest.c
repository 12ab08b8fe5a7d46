/* SPDX-License-Identifier: MIT */
/*
 * guest.c - an attached guest: its heap, submissions and completions, the
 * host FIFO, the doorbell it rings and the IRQ it sleeps on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define ACK_RETRY_MS 2000 /* how long hgsmi_guest_ack waits for room in a full ring */
/*
 * However short the caller's timeout, an ack waits this long for room: an
 * honest host drains acks on its next pass, and dropping an ack strands a
 * host buffer.  Still well inside "a call returns within its timeout plus
 * 100 ms".
 */
#define ACK_GRACE_MS 20
#define ACK_SLICE_MAX_MS 8 /* the longest sleep between looks at a full ring */

struct hgsmi_guest {
	struct hgsmi_segment seg;
	struct hgsmi_heap *heap;
	struct hgsmi_inflight sent;    /* guest buffers the host holds */
	struct hgsmi_inflight orphans; /* of those, ones whose caller gave up */
	struct hgsmi_inflight loaned;  /* loaned (hgsmi_guest_loan), not yet published */
	/*
	 * Slabs: a send batch of small buffers carved from one heap block
	 * (see slab_batch).  Private, one word per guest-heap granule:
	 * slab_of[i] is 1 + the granule of the slab that the buffer at
	 * granule i was carved from (0: not carved), slab_left[s] the
	 * buffers of the slab at granule s not yet back (0: no slab there).
	 */
	uint32_t *slab_of, *slab_left;
	struct hgsmi_ring submit, gcomplete, hostfifo, hostack;
	struct hgsmi_endpoint ep; /* hostfifo in, hostack back, guest heap out */
	struct hgsmi_notify doorbell, irq;
	struct hgsmi_channel channels[HGSMI_NUMBER_OF_CHANNELS];
	struct hgsmi_msg *stash; /* completions reaped by a call, not yet returned */
	uint32_t stash_head, stash_count;
	/* An error of a recv that still returned the messages it had taken
	 * (its own acks failed, or the FIFO index turned hostile): the next
	 * recv or poll returns it (take_recv_err). */
	int recv_err;
	struct hgsmi_region gheap;
	int sock;
	uint32_t epoch;
	struct hgsmi_spin spin; /* the adaptive spin before sleeping on the IRQ */
	bool gone;
	int irq_seen; /* hgsmi_guest_irq_wait (another thread) took a wake-up */
	struct hgsmi_guest_stats st;
};

static int collect(struct hgsmi_guest *g);
static void endpoint_init(struct hgsmi_guest *g);

static bool host_gone(struct hgsmi_guest *g)
{
	/* The host bumps the epoch when it resets us. */
	if (!g->gone && READ_ONCE(hgsmi_int_seg_hdr(&g->seg)->epoch) != g->epoch)
		g->gone = true;
	return g->gone;
}

static int connect_host(const char *name, const struct hgsmi_guest_config *cfg)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char dir[sizeof(sa.sun_path)];
	int fd, rc;

	if (strchr(name, '/')) {
		if (strlen(name) >= sizeof(sa.sun_path))
			return -ENAMETOOLONG;
		strcpy(sa.sun_path, name);
	} else {
		if ((rc = hgsmi_int_check_name(name)) < 0 ||
		    (rc = hgsmi_int_runtime_dir(cfg->runtime_dir, dir,
						hgsmi_int_socket_dir_max(name))) < 0 ||
		    (rc = hgsmi_int_socket_path(dir, name, sa.sun_path, sizeof(sa.sun_path))) < 0)
			return rc;
	}
	/* No socket yet, or nobody listening on it: the host is not there (yet).
	 * With wait_ms, a guest started beside its host retries until it is. */
	for (uint64_t start = hgsmi_int_now_ns();;) {
		const struct timespec tick = {.tv_nsec = 10 * 1000 * 1000};

		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		rc = (errno == ENOENT || errno == ECONNREFUSED) ? -ENOENT : -errno;
		close(fd);
		if (rc != -ENOENT || cfg->wait_ms <= 0 ||
		    hgsmi_int_remaining_ms(cfg->wait_ms, start) == 0)
			return rc;
		nanosleep(&tick, NULL);
	}
}

/*
 * Take the welcome's fds in the order it gives them: the segment (with
 * HGSMI_F_SEGMENT_FD), then doorbell and IRQ (eventfd backend).  Every fd is
 * owned here at once, so each exit path closes it; a count that does not
 * match what the welcome says is -EPROTO.  The segment fd is only borrowed
 * until it is mapped.
 */
static int adopt_fds(struct hgsmi_guest *g, const struct hgsmi_welcome *w,
		     const int *fds, int nfds, int *segfd)
{
	int want = (w->features & HGSMI_F_SEGMENT_FD ? 1 : 0) +
		   (w->backend == HGSMI_BACKEND_EVENTFD ? 2 : 0), i = 0;

	*segfd = -1;
	if (nfds != want || (uint32_t)nfds != w->nfds) {
		while (i < nfds)
			close(fds[i++]);
		return -EPROTO;
	}
	if (w->features & HGSMI_F_SEGMENT_FD)
		*segfd = fds[i++];
	if (w->backend == HGSMI_BACKEND_EVENTFD) {
		g->doorbell = (struct hgsmi_notify){.backend = w->backend, .fd = fds[i++]};
		g->irq = (struct hgsmi_notify){.backend = w->backend, .fd = fds[i++]};
		/* Anything else could block a write or a read for ever (the
		 * segment fd is checked when it is mapped). */
		if (hgsmi_int_eventfd_adopt(g->doorbell.fd) < 0 ||
		    hgsmi_int_eventfd_adopt(g->irq.fd) < 0) {
			if (*segfd >= 0)
				close(*segfd);
			*segfd = -1;
			return -EPROTO; /* detach closes the two */
		}
	}
	return 0;
}

/* Bytes of slab_of and of slab_left: one entry per guest-heap granule. */
static size_t slab_table_bytes(const struct hgsmi_guest *g)
{
	return ((size_t)g->gheap.size / HGSMI_HEAP_ALIGN + 1) * sizeof(uint32_t);
}

/* Heaps, bookkeeping and rings over the validated regions of g->seg. */
static int layout(struct hgsmi_guest *g)
{
	const struct hgsmi_region *r;
	uint32_t e;
	int rc;

	r = g->seg.regions;
	e = g->seg.ring_entries;
	g->gheap = r[HGSMI_REGION_GUEST_HEAP];
	if ((rc = hgsmi_heap_create(g->gheap.offset, g->gheap.size, &g->heap)) < 0 ||
	    (rc = hgsmi_int_inflight_init(&g->sent, g->gheap.offset, g->gheap.size)) < 0 ||
	    (rc = hgsmi_int_inflight_init(&g->orphans, g->gheap.offset, g->gheap.size)) < 0 ||
	    (rc = hgsmi_int_inflight_init(&g->loaned, g->gheap.offset, g->gheap.size)) < 0)
		return rc;
	/* Mapped: pages are only touched where slabs are carved. */
	if (!(g->slab_of = hgsmi_int_table_alloc(slab_table_bytes(g))) ||
	    !(g->slab_left = hgsmi_int_table_alloc(slab_table_bytes(g))))
		return -ENOMEM;
	if (!(g->stash = calloc(e, sizeof(*g->stash))))
		return -ENOMEM;
	hgsmi_int_ring_init(&g->submit, g->seg.base, &r[HGSMI_REGION_SUBMIT], e, true);
	hgsmi_int_ring_init(&g->gcomplete, g->seg.base, &r[HGSMI_REGION_GCOMPLETE], e, false);
	hgsmi_int_ring_init(&g->hostfifo, g->seg.base, &r[HGSMI_REGION_HOSTFIFO], e, false);
	hgsmi_int_ring_init(&g->hostack, g->seg.base, &r[HGSMI_REGION_HOSTACK], e, true);
	endpoint_init(g);
	return 0;
}

static int setup(struct hgsmi_guest *g, const struct hgsmi_welcome *w,
		 const int *fds, int nfds)
{
	int rc, segfd;

	/* The host's name is used as a C string: it must end in the field. */
	if (!memchr(w->segment, 0, HGSMI_NAME_MAX)) {
		while (nfds > 0)
			close(fds[--nfds]);
		return -EPROTO;
	}
	if ((rc = adopt_fds(g, w, fds, nfds, &segfd)) < 0)
		return rc;
	if (segfd >= 0)
		rc = hgsmi_int_segment_open_fd(&g->seg, segfd, w->segment, w->segment_size);
	else
		rc = hgsmi_int_segment_open(&g->seg, w->segment, w->segment_size);
	if (rc < 0)
		return rc;
	g->epoch = w->epoch;
	if (READ_ONCE(hgsmi_int_seg_hdr(&g->seg)->epoch) != g->epoch)
		return -EPROTO;
	if ((rc = layout(g)) < 0)
		return rc;
	g->st.backend = w->backend;
	if (w->backend == HGSMI_BACKEND_EVENTFD)
		return 0;
	if (w->backend != HGSMI_BACKEND_SEMAPHORE ||
	    !memchr(w->sem_doorbell, 0, HGSMI_NAME_MAX) || !memchr(w->sem_irq, 0, HGSMI_NAME_MAX))
		return -EPROTO;
	if ((rc = hgsmi_int_notify_sem(&g->doorbell, w->sem_doorbell, false, 0)) < 0)
		return rc;
	return hgsmi_int_notify_sem(&g->irq, w->sem_irq, false, 0);
}

int hgsmi_guest_attach(const char *name, const struct hgsmi_guest_config *cfg,
		       struct hgsmi_guest **out)
{
	static const struct hgsmi_guest_config defaults = {.spin_us = HGSMI_SPIN_US_DEFAULT};
	struct hgsmi_hello hello = {.magic = HGSMI_CTL_MAGIC, .abi_major = HGSMI_ABI_MAJOR,
				    .abi_minor = HGSMI_ABI_MINOR, .kind = HGSMI_HELLO_ATTACH,
				    .features = HGSMI_F_ALL};
	struct hgsmi_welcome w;
	struct hgsmi_guest *g;
	int fds[3], nfds = 0, rc;

	if (!name || !out)
		return -EINVAL;
	if (!cfg)
		cfg = &defaults;
	if (!(g = calloc(1, sizeof(*g))))
		return -ENOMEM;
	g->doorbell.fd = g->irq.fd = g->seg.fd = -1;
	hgsmi_int_spin_init(&g->spin, cfg->spin_us);
	g->sock = connect_host(name, cfg);
	if (g->sock < 0) {
		rc = g->sock;
		goto fail;
	}
	/* A host that refuses at accept (uid, too many handshakes) may have
	 * closed before the hello went out: its welcome still says why. */
	rc = hgsmi_int_send_fds(g->sock, &hello, sizeof(hello), NULL, 0);
	if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
		goto fail;
	rc = hgsmi_int_recv_fds(g->sock, &w, sizeof(w), fds, 3, &nfds,
				cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 2000);
	if (rc < 0)
		goto fail;
	if (w.magic != HGSMI_CTL_MAGIC || w.abi_major != HGSMI_ABI_MAJOR)
		rc = -EPROTO;
	else if (w.status < 0)
		rc = w.status;
	else
		rc = setup(g, &w, fds, nfds), nfds = 0; /* setup took the fds */
	while (nfds > 0) /* a refusal's or a stranger's fds */
		close(fds[--nfds]);
	if (rc < 0)
		goto fail;
	g->st.guest_id = w.guest_id;
	g->st.epoch = w.epoch;
	*out = g;
	return 0;
fail:
	hgsmi_guest_detach(g);
	return rc;
}

/*
 * What hgsmi_guest_attach does with an accepted welcome and its fds, without
 * a socket: the guest side of the handshake as a pure function of what the
 * host sent (fuzz/fuzz_welcome.c drives it).  The fds are taken over.
 */
int hgsmi_int_guest_adopt(const struct hgsmi_welcome *w, const int *fds, int nfds,
			  struct hgsmi_guest **out)
{
	struct hgsmi_guest *g = calloc(1, sizeof(*g));
	int rc;

	if (!g) {
		while (nfds > 0)
			close(fds[--nfds]);
		return -ENOMEM;
	}
	g->doorbell.fd = g->irq.fd = g->seg.fd = g->sock = -1;
	if ((rc = setup(g, w, fds, nfds)) < 0) {
		hgsmi_guest_detach(g);
		return rc;
	}
	*out = g;
	return 0;
}

void hgsmi_guest_keep_mapping(struct hgsmi_guest *g)
{
	g->seg.keep_mapping = true;
}

void hgsmi_guest_detach(struct hgsmi_guest *g)
{
	if (!g)
		return;
	if (g->sock >= 0)
		close(g->sock);
	hgsmi_int_notify_close(&g->doorbell, false);
	hgsmi_int_notify_close(&g->irq, false);
	hgsmi_int_segment_close(&g->seg, false); /* only the host unlinks */
	hgsmi_heap_destroy(g->heap);
	hgsmi_int_inflight_free(&g->sent);
	hgsmi_int_inflight_free(&g->orphans);
	hgsmi_int_inflight_free(&g->loaned);
	hgsmi_int_table_free(g->slab_of, slab_table_bytes(g));
	hgsmi_int_table_free(g->slab_left, slab_table_bytes(g));
	free(g->stash);
	free(g);
}

void *hgsmi_guest_base(const struct hgsmi_guest *g) { return g->seg.base; }
uint32_t hgsmi_guest_size(const struct hgsmi_guest *g) { return g->seg.size; }
int hgsmi_guest_sockfd(const struct hgsmi_guest *g) { return g->sock; }

int hgsmi_guest_fileno(const struct hgsmi_guest *g)
{
	return g->irq.backend == HGSMI_BACKEND_EVENTFD ? g->irq.fd : -EOPNOTSUPP;
}

int hgsmi_guest_register(struct hgsmi_guest *g, uint8_t ch, hgsmi_handler_fn fn, void *ctx)
{
	return hgsmi_int_channel_set(g->channels, ch, fn, ctx);
}

int hgsmi_guest_unregister(struct hgsmi_guest *g, uint8_t ch)
{
	return hgsmi_int_channel_clear(g->channels, ch);
}

/*
 * Ring the doorbell only if the host announced that it sleeps.  The full
 * fence orders our ring-index store before the host_waiting load; the host
 * stores host_waiting, fences, then re-reads our index (Dekker).  The
 * exchange means one ring per sleep, however many guests' pushes see it.
 */
static void doorbell(struct hgsmi_guest *g)
{
	uint32_t *w = &hgsmi_int_seg_hdr(&g->seg)->host_waiting.value;

	full_fence();
	if (READ_ONCE(*w) && __atomic_exchange_n(w, 0, __ATOMIC_SEQ_CST)) {
		hgsmi_int_notify_signal(&g->doorbell);
		g->st.doorbells++;
	} else {
		g->st.doorbells_suppressed++;
	}
}

static int heap_get(struct hgsmi_guest *g, uint32_t bytes, const void *src,
		    uint32_t size, uint32_t *off)
{
	return hgsmi_int_heap_alloc_copy(g->heap, bytes, src, size, off);
}

/*
 * hgsmi_guest_alloc, placed for a copy from src (only its address is read;
 * NULL: no copy, any block).  With hdr, the header
 * is only prepared there, and the caller seals the buffer (in a batch).
 */
static int alloc_for(struct hgsmi_guest *g, uint32_t size, uint32_t reply_cap,
		     uint8_t channel, uint16_t info, const void *src,
		     struct hgsmi_msg *out, struct hgsmi_buffer_header *hdr)
{
	uint32_t need = size > reply_cap ? size : reply_cap, off;
	int rc;

	if (channel == HGSMI_CH_RESERVED)
		return -EINVAL;
	if (need > hgsmi_heap_max_alloc(g->heap) - HGSMI_BUFFER_OVERHEAD)
		return -EMSGSIZE;
	rc = heap_get(g, need + (uint32_t)HGSMI_BUFFER_OVERHEAD, src, size, &off);
	/* Completed fire-and-forget buffers may be waiting to be freed. */
	if (rc == -ENOMEM && collect(g) >= 0)
		rc = heap_get(g, need + (uint32_t)HGSMI_BUFFER_OVERHEAD, src, size, &off);
	if (rc < 0)
		return rc;
	if (hdr)
		hgsmi_int_buffer_header(hdr, size, channel, info, reply_cap);
	else
		hgsmi_buffer_init(g->seg.base, off, size, channel, info, reply_cap);
	*out = (struct hgsmi_msg){.offset = off, .data = hgsmi_int_data_off(off), .size = size,
				  .capacity = need, .channel = channel, .info = info};
	return 0;
}

int hgsmi_guest_alloc(struct hgsmi_guest *g, uint32_t size, uint32_t reply_cap,
		      uint8_t channel, uint16_t info, struct hgsmi_msg *out)
{
	return alloc_for(g, size, reply_cap, channel, info, NULL, out, NULL);
}

/* Granule of a guest-heap offset, or UINT32_MAX outside the heap. */
static inline uint32_t gheap_granule(const struct hgsmi_guest *g, uint32_t off)
{
	if (off < g->gheap.offset || off - g->gheap.offset >= g->gheap.size ||
	    (off - g->gheap.offset) % HGSMI_HEAP_ALIGN)
		return UINT32_MAX;
	return (off - g->gheap.offset) / HGSMI_HEAP_ALIGN;
}

/* Is `off` a buffer or block of a live slab?  Never the caller's to free or
 * submit: the slab goes back to the heap when its last buffer comes back. */
static bool in_slab(const struct hgsmi_guest *g, uint32_t off)
{
	uint32_t i = gheap_granule(g, off);

	return i != UINT32_MAX && (g->slab_of[i] || g->slab_left[i]);
}

/* A send buffer of ours is done with: free it, or its share of its slab. */
static void release(struct hgsmi_guest *g, uint32_t off)
{
	uint32_t i = gheap_granule(g, off), s;

	if (i == UINT32_MAX || !(s = g->slab_of[i])) {
		hgsmi_heap_free(g->heap, off);
		return;
	}
	g->slab_of[i] = 0;
	if (--g->slab_left[s - 1] == 0)
		hgsmi_heap_free(g->heap, g->gheap.offset + (s - 1) * HGSMI_HEAP_ALIGN);
}

/* Is `off` marked in `f`?  (take and set back: no shared-memory access) */
static bool inflight_has(struct hgsmi_inflight *f, uint32_t off)
{
	if (!hgsmi_int_inflight_take(f, off))
		return false;
	hgsmi_int_inflight_set(f, off);
	return true;
}

int hgsmi_guest_free(struct hgsmi_guest *g, uint32_t offset)
{
	if (in_slab(g, offset) || inflight_has(&g->loaned, offset))
		return -EBUSY; /* fire-and-forget or loaned: not for hgsmi_guest_free */
	if (hgsmi_int_inflight_take(&g->sent, offset)) {
		hgsmi_int_inflight_set(&g->sent, offset);
		return -EBUSY; /* the host has it */
	}
	return hgsmi_heap_free(g->heap, offset);
}

/* Queue already-sealed buffers; the caller rings the doorbell. */
static int queue(struct hgsmi_guest *g, const uint32_t *offs, unsigned n)
{
	unsigned room;
	int pushed;

	if (host_gone(g))
		return -EPIPE;
	/* No more in flight than the completion ring can hold, and no more
	 * in flight plus completed-but-unreaped than the stash can hold:
	 * collect() moves completions from `sent` to the stash. */
	if (g->sent.count + g->stash_count + n > g->seg.ring_entries && collect(g) < 0)
		return -EPROTO;
	room = g->seg.ring_entries - g->sent.count - g->stash_count;
	pushed = hgsmi_int_ring_push(&g->submit, offs, n < room ? n : room);
	if (pushed < 0)
		return -EPROTO;
	for (int i = 0; i < pushed; i++)
		hgsmi_int_inflight_set(&g->sent, offs[i]);
	g->st.msgs_out += (unsigned)pushed;
	return pushed;
}

int hgsmi_guest_submit(struct hgsmi_guest *g, const uint32_t *offs, unsigned n)
{
	int pushed;

	for (unsigned i = 0; i < n; i++) {
		int64_t bs = hgsmi_heap_block_size(g->heap, offs[i]);
		const struct hgsmi_buffer_header *h = (const void *)(g->seg.base + offs[i]);

		if (bs < 0)
			return -EINVAL;
		if (in_slab(g, offs[i]) || inflight_has(&g->loaned, offs[i]))
			return -EBUSY; /* a send's or a loan's buffer: hgsmi_guest_publish's */
		if (hgsmi_int_inflight_take(&g->sent, offs[i])) {
			hgsmi_int_inflight_set(&g->sent, offs[i]); /* it stays in flight */
			return -EBUSY;
		}
		g->st.bytes_out += h->data_size;
	}
	pushed = queue(g, offs, n);
	if (pushed > 0)
		doorbell(g);
	return pushed;
}

/*
 * A send batch of small buffers from one heap block: one alloc for the batch
 * and one free when its last buffer comes back, instead of a TLSF alloc and
 * free per buffer (~250 of the guest's ~510 cycles a message in 64 B g2h,
 * perf).  The buffers are laid out back to back, each on its own cache
 * line, so to the host they are ordinary buffers at aligned offsets.  Fills
 * offs, hdrs (unsealed) and the data (none for a loan: datas NULL); returns how many, or 0 if the batch is
 * too short or too large for a slab, or the heap has no block for it (the
 * caller then takes the per-buffer path, which also collects and retries).
 */
#define SLAB_MIN 4u                    /* fewer buffers: per-buffer blocks */
#define SLAB_BUF_MAX 256u              /* bytes a buffer, overhead included */
static unsigned slab_batch(struct hgsmi_guest *g, uint8_t channel, uint16_t info,
			   const void *const *datas, const uint32_t *lens, unsigned avail,
			   uint32_t *offs, struct hgsmi_buffer_header *hdrs)
{
	uint32_t total = 0, off, s;
	unsigned k = 0;

	if (channel == HGSMI_CH_RESERVED)
		return 0;
	while (k < HGSMI_BATCH && k < avail && lens[k] <= SLAB_BUF_MAX - HGSMI_BUFFER_OVERHEAD)
		total += (lens[k++] + (uint32_t)HGSMI_BUFFER_OVERHEAD + HGSMI_HEAP_ALIGN - 1) &
			 ~(uint32_t)(HGSMI_HEAP_ALIGN - 1);
	if (k < SLAB_MIN || hgsmi_heap_alloc(g->heap, total, &off) < 0)
		return 0;
	s = gheap_granule(g, off);
	g->slab_left[s] = k;
	for (unsigned j = 0; j < k; j++) {
		offs[j] = off;
		g->slab_of[gheap_granule(g, off)] = s + 1;
		hgsmi_int_buffer_header(&hdrs[j], lens[j], channel, info, 0);
		if (datas)
			memcpy(g->seg.base + off + sizeof(hdrs[j]), datas[j], lens[j]);
		off += (lens[j] + (uint32_t)HGSMI_BUFFER_OVERHEAD + HGSMI_HEAP_ALIGN - 1) &
		       ~(uint32_t)(HGSMI_HEAP_ALIGN - 1);
	}
	return k;
}

static struct hgsmi_guest *guest_of(struct hgsmi_endpoint *ep)
{
	return hgsmi_container_of(ep, struct hgsmi_guest, ep);
}

static int send_reclaim(struct hgsmi_endpoint *ep)
{
	int rc = collect(guest_of(ep));

	return rc < 0 ? rc : 0;
}

static unsigned send_slab(struct hgsmi_endpoint *ep, uint8_t channel, uint16_t info,
			  const void *const *datas, const uint32_t *lens, unsigned avail,
			  uint32_t *offs, struct hgsmi_buffer_header *hdrs)
{
	return slab_batch(guest_of(ep), channel, info, datas, lens, avail, offs, hdrs);
}

static int send_push(struct hgsmi_endpoint *ep, const uint32_t *offs, unsigned k)
{
	return queue(guest_of(ep), offs, k);
}

static void send_unsent(struct hgsmi_endpoint *ep, uint32_t off)
{
	release(guest_of(ep), off);
}

/* Fire and forget: each buffer sent is an orphan, freed when it comes back
 * (completed fire-and-forget buffers also make room when the heap is full). */
static const struct hgsmi_ep_sender guest_sender = {
	.reclaim = send_reclaim, .reclaim_when_full = true, .batch = send_slab,
	.push = send_push, .unsent = send_unsent};

int hgsmi_guest_send(struct hgsmi_guest *g, uint8_t channel, uint16_t info,
		     const void *const *datas, const uint32_t *lens, unsigned n)
{
	int rc = hgsmi_int_ep_send(&g->ep, &guest_sender, channel, info, datas, lens, n);

	if (rc > 0)
		doorbell(g);
	return rc;
}

/*
 * Loans: zero copy at the cost of copy mode.  A loan is hgsmi_guest_send
 * without the copy: the same slabs for small buffers (one heap block for the
 * batch), the headers sealed at once, and fire and forget after publish, so
 * collect() frees each buffer when it comes back and the caller never reaps
 * or frees one.  The payload is not under the checksum, so sealing before
 * the caller fills it is sound.
 *
 * The caller fills a loaned buffer, most often by copying from a source we
 * never see, so a large one is placed against 4K aliasing (internal.h) as a
 * copy from a page-aligned source would be: its data then starts 48 bytes
 * below a page boundary, below (never 1..63 above) every source that starts
 * 0..3984 bytes past one (page-aligned, malloc'd and bytes objects sit at
 * 0..64).  Otherwise a block at a page start put the data 16 bytes above a
 * page-aligned source: the 10-15x slow case of internal.h, which send's
 * placement avoids and a loan must not pay more than send.  LOAN_LIKE is
 * that source's address; hgsmi_int_copy_phase only reads its low bits.
 */
#define LOAN_LIKE ((const void *)(uintptr_t)HGSMI_PLACE_PAGE)
int hgsmi_guest_loan(struct hgsmi_guest *g, uint8_t channel, uint16_t info,
		     uint32_t size, unsigned n, uint32_t *offs)
{
	struct hgsmi_buffer_header hdrs[HGSMI_BATCH];
	uint32_t lens[HGSMI_BATCH];
	unsigned done = 0;
	int rc;

	if (channel == HGSMI_CH_RESERVED || n == 0)
		return -EINVAL;
	if (size > hgsmi_heap_max_alloc(g->heap) - HGSMI_BUFFER_OVERHEAD)
		return -EMSGSIZE;
	if (host_gone(g))
		return -EPIPE;
	/* Free what came back first: the blocks reused are still warm. */
	if ((rc = collect(g)) < 0)
		return rc;
	rc = 0;
	while (done < n && rc == 0) {
		unsigned want = n - done < HGSMI_BATCH ? n - done : HGSMI_BATCH, k;

		for (unsigned j = 0; j < want; j++)
			lens[j] = size;
		k = slab_batch(g, channel, info, NULL, lens, want, offs + done, hdrs);
		for (bool slab = k > 0; !slab && k < want; k++) {
			struct hgsmi_msg m;

			if ((rc = alloc_for(g, size, 0, channel, info, LOAN_LIKE, &m, &hdrs[k])) < 0)
				break;
			offs[done + k] = m.offset;
		}
		hgsmi_int_buffer_seal_many(g->seg.base, offs + done, hdrs, k);
		for (unsigned j = 0; j < k; j++)
			hgsmi_int_inflight_set(&g->loaned, offs[done + j]);
		done += k;
	}
	return done ? (int)done : rc;
}

/* Mark back as loaned offs[0..n), which hgsmi_guest_publish had taken. */
static void reloan(struct hgsmi_guest *g, const uint32_t *offs, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		hgsmi_int_inflight_set(&g->loaned, offs[i]);
}

int hgsmi_guest_publish(struct hgsmi_guest *g, const uint32_t *offs, unsigned n)
{
	uint32_t sizes[HGSMI_BATCH];
	int pushed;

	/* At most a batch a call (the return says how many: a prefix).  Taken
	 * as checked, so that an offset twice in one call fails too; sizes
	 * read while the buffers are still ours, not after the host has them. */
	if (n > HGSMI_BATCH)
		n = HGSMI_BATCH;
	for (unsigned i = 0; i < n; i++) {
		if (!hgsmi_int_inflight_take(&g->loaned, offs[i])) {
			reloan(g, offs, i);
			return -EINVAL;
		}
		sizes[i] = ((const struct hgsmi_buffer_header *)(g->seg.base + offs[i]))->data_size;
	}
	pushed = n ? queue(g, offs, n) : 0;
	if (pushed <= 0) {
		reloan(g, offs, n);
		return pushed < 0 ? pushed : -EAGAIN;
	}
	reloan(g, offs + pushed, n - (unsigned)pushed);
	for (int i = 0; i < pushed; i++) {
		hgsmi_int_inflight_set(&g->orphans, offs[i]); /* freed when it comes back */
		g->st.bytes_out += sizes[i];
	}
	doorbell(g);
	return pushed;
}

int hgsmi_guest_unloan(struct hgsmi_guest *g, const uint32_t *offs, unsigned n)
{
	int rc = 0;

	for (unsigned i = 0; i < n; i++) {
		if (hgsmi_int_inflight_take(&g->loaned, offs[i]))
			release(g, offs[i]);
		else
			rc = -EINVAL;
	}
	return rc;
}

/*
 * Pop completions: ours go to the stash, orphans (fire-and-forget) are freed,
 * unknown offsets dropped.  Returns how many were popped: any is progress.
 */
static int collect(struct hgsmi_guest *g)
{
	uint32_t offs[HGSMI_BATCH], cap = g->seg.ring_entries;
	int n, got = 0;

	while ((n = hgsmi_int_ring_pop(&g->gcomplete, offs, HGSMI_BATCH)) > 0) {
		got += n;
		for (int i = 0; i < n; i++) {
			const struct hgsmi_buffer_header *h = (const void *)(g->seg.base + offs[i]);
			struct hgsmi_msg m = {.offset = offs[i],
					      .data = hgsmi_int_data_off(offs[i])};
			int64_t bs;

			/* Only our own buffers, and each once, come back. */
			if (!hgsmi_int_inflight_take(&g->sent, offs[i])) {
				g->st.errors++;
				continue;
			}
			if (hgsmi_int_inflight_take(&g->orphans, offs[i])) {
				if ((int32_t)READ_ONCE(h->u0) < 0)
					g->st.remote_errors++;
				release(g, offs[i]);
				continue;
			}
			bs = hgsmi_heap_block_size(g->heap, offs[i]);
			m.capacity = (uint32_t)bs - (uint32_t)HGSMI_BUFFER_OVERHEAD;
			m.status = (int32_t)READ_ONCE(h->u0);
			m.size = READ_ONCE(h->u1);
			m.channel = READ_ONCE(h->channel);
			m.info = READ_ONCE(h->channel_info);
			if (m.status > 0 || m.size > m.capacity)
				m.status = -EPROTO, m.size = 0;
			g->stash[(g->stash_head + g->stash_count++) % cap] = m;
		}
	}
	return n < 0 ? -EPROTO : got;
}

int hgsmi_guest_reap(struct hgsmi_guest *g, struct hgsmi_msg *out, unsigned max)
{
	unsigned k = 0, cap = g->seg.ring_entries;
	int rc = collect(g);

	if (rc < 0)
		return rc;
	while (k < max && g->stash_count) {
		out[k++] = g->stash[g->stash_head];
		g->stash_head = (g->stash_head + 1) % cap;
		g->stash_count--;
	}
	if (k == 0 && host_gone(g))
		return -EPIPE;
	return (int)k;
}

/* Take the stashed completion of `off`, if it has come. */
static bool take_stashed(struct hgsmi_guest *g, uint32_t off, struct hgsmi_msg *out)
{
	unsigned cap = g->seg.ring_entries;

	for (uint32_t i = 0; i < g->stash_count; i++) {
		uint32_t at = (g->stash_head + i) % cap;

		if (g->stash[at].offset != off)
			continue;
		*out = g->stash[at];
		/* Close the gap: shift the later entries down by one. */
		for (uint32_t j = i; j + 1 < g->stash_count; j++)
			g->stash[(g->stash_head + j) % cap] = g->stash[(g->stash_head + j + 1) % cap];
		g->stash_count--;
		return true;
	}
	return false;
}

/*
 * Work: completions to reap, freed fire-and-forget buffers, host commands.
 * A call waits for new completions only: what is stashed or queued on the
 * host FIFO is not what it consumes, and counting it would make the call's
 * wait return at once, forever (a busy loop past the timeout).
 */
static int work_ready(struct hgsmi_guest *g, bool call)
{
	int n = collect(g);

	if (n < 0)
		return n; /* a hostile ring index: an error, not work (or a spin) */
	if (call)
		return n != 0;
	return n || g->stash_count || hgsmi_int_ring_pending(&g->hostfifo);
}

/*
 * Announce the sleep, full barrier, then look again (the host does the
 * mirror image in raise_irq).  Returns 0 with guest_waiting set (the IRQ will
 * fire), 1 if work is ready (announcement withdrawn), or -1 if the IRQ was
 * still raised: the host skipped the eventfd, so it is acked here and the
 * caller must look at the rings again before announcing once more.
 */
static int announce(struct hgsmi_guest *g, bool call)
{
	struct hgsmi_segment_header *h = hgsmi_int_seg_hdr(&g->seg);

	WRITE_ONCE(h->guest_waiting.value, 1);
	full_fence();
	if (READ_ONCE(h->host_flags.value) & HGSMI_HOSTFLAGS_IRQ) {
		WRITE_ONCE(h->guest_waiting.value, 0);
		__atomic_fetch_and(&h->host_flags.value, ~HGSMI_HOSTFLAGS_IRQ, __ATOMIC_SEQ_CST);
		return -1;
	}
	if (work_ready(g, call)) {
		WRITE_ONCE(h->guest_waiting.value, 0);
		return 1;
	}
	return 0;
}

struct spin_ctx {
	struct hgsmi_guest *g;
	bool call;
};

/*
 * The spin's poll: work, or keep spinning while the host is awake.  Once it
 * announced its sleep it has served everything it saw; what we wait for
 * then needs a wake-up on its side first, and spinning would not pay.  A
 * call is the exception: we submitted it and rang the doorbell if the host
 * slept, so the host is awake or waking, and its answer is what we wait
 * for (the budget still ends a spin that does not pay).
 */
static int spin_poll(void *ctx)
{
	struct spin_ctx *sc = ctx;

	if (work_ready(sc->g, sc->call))
		return 1;
	if (sc->call)
		return 0;
	return READ_ONCE(hgsmi_int_seg_hdr(&sc->g->seg)->host_waiting.value) ? -1 : 0;
}

static int wait_irq_once(struct hgsmi_guest *g, int timeout_ms, bool call)
{
	struct spin_ctx sc = {.g = g, .call = call};
	struct hgsmi_segment_header *h = hgsmi_int_seg_hdr(&g->seg);
	uint64_t start = hgsmi_int_now_ns();
	int rc;

	for (bool again = false;; again = true) {
		if (host_gone(g))
			return -EPIPE;
		if ((rc = work_ready(g, call)) != 0)
			return rc;
		/* Back after an ack (a host may keep raising the line, or ring
		 * the eventfd, without any work): the caller's timeout holds. */
		if (again && hgsmi_int_remaining_ms(timeout_ms, start) == 0)
			return 0;
		if (!again && hgsmi_int_spin(&g->spin, spin_poll, &sc) > 0)
			return 1;
		/* An IRQ still raised means the host skipped the eventfd: it
		 * was acked, look again. */
		if ((rc = announce(g, call)) != 0) {
			if (rc > 0 || work_ready(g, call))
				return 1;
			continue;
		}
		rc = hgsmi_int_notify_wait(&g->irq, g->sock, hgsmi_int_remaining_ms(timeout_ms, start));
		WRITE_ONCE(h->guest_waiting.value, 0);
		/* EOF, or bytes on a socket that carries none after the welcome
		 * (-EPROTO): either way this connection is over. */
		if (rc == -EPIPE || rc == -EPROTO)
			g->gone = true;
		if (rc < 0)
			return rc;
		if (rc == 0 && work_ready(g, call))
			return 1;
		/* A polling VM guest's wait returns now and then to look at the
		 * rings again; only the caller's timeout ends this one. */
		if (rc == 0 && (g->irq.backend != HGSMI_INT_BACKEND_POLL ||
				hgsmi_int_remaining_ms(timeout_ms, start) == 0))
			return 0;
		if (rc == 0)
			continue;
		g->st.irqs++;
		/* Ack: lower the line; anything raised after this re-raises. */
		__atomic_fetch_and(&h->host_flags.value, ~HGSMI_HOSTFLAGS_IRQ, __ATOMIC_SEQ_CST);
	}
}

/* A wait, and then the verdict on its spin (see spin.c). */
static int wait_irq(struct hgsmi_guest *g, int timeout_ms, bool call)
{
	int rc = wait_irq_once(g, timeout_ms, call);

	hgsmi_int_spin_settle(&g->spin, rc > 0);
	return rc;
}

int hgsmi_guest_wait(struct hgsmi_guest *g, int timeout_ms)
{
	return wait_irq(g, timeout_ms, false);
}

int hgsmi_guest_arm(struct hgsmi_guest *g)
{
	int rc;

	for (;;) {
		if (host_gone(g))
			return -EPIPE;
		if ((rc = work_ready(g, false)) != 0)
			return rc;
		if ((rc = announce(g, false)) >= 0)
			return rc;
	}
}

int hgsmi_guest_disarm(struct hgsmi_guest *g)
{
	struct hgsmi_segment_header *h = hgsmi_int_seg_hdr(&g->seg);
	uint64_t v;
	int fired = 0;

	WRITE_ONCE(h->guest_waiting.value, 0);
	if (g->irq.backend == HGSMI_BACKEND_EVENTFD) {
		/* Non-blocking: an eventfd is a counter, one read empties it. */
		while (!fired && read(g->irq.fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
			fired = 1;
	}
	if (__atomic_exchange_n(&g->irq_seen, 0, __ATOMIC_ACQ_REL))
		fired = 1;
	if (fired)
		g->st.irqs++;
	/* Ack: lower the line; anything raised after this re-raises. */
	__atomic_fetch_and(&h->host_flags.value, ~HGSMI_HOSTFLAGS_IRQ, __ATOMIC_SEQ_CST);
	if (host_gone(g))
		return -EPIPE;
	return fired;
}

int hgsmi_guest_irq_wait(struct hgsmi_guest *g, int timeout_ms)
{
	/* Only the notifier and the socket: nothing another thread changes. */
	int rc = hgsmi_int_notify_wait(&g->irq, g->sock, timeout_ms);

	/* g->gone is the loop thread's: it learns of this from rc. */
	if (rc > 0)
		__atomic_store_n(&g->irq_seen, 1, __ATOMIC_RELEASE);
	return rc;
}

int hgsmi_guest_call_buffer(struct hgsmi_guest *g, uint32_t offset, int timeout_ms,
			    struct hgsmi_msg *out)
{
	uint64_t start = hgsmi_int_now_ns();
	int rc = hgsmi_guest_submit(g, &offset, 1);

	if (rc == 0)
		return -EAGAIN; /* as many in flight as the rings hold */
	if (rc < 0)
		return rc;
	g->st.calls++;
	for (;;) {
		if ((rc = collect(g)) < 0)
			return rc;
		if (take_stashed(g, offset, out))
			return out->status < 0 ? out->status : (int)out->size;
		if (hgsmi_int_remaining_ms(timeout_ms, start) == 0)
			return -ETIMEDOUT;
		rc = wait_irq(g, hgsmi_int_remaining_ms(timeout_ms, start), true);
		if (rc < 0)
			return rc;
	}
}

int hgsmi_guest_call(struct hgsmi_guest *g, uint8_t channel, uint16_t info,
		     const void *data, uint32_t len, void *reply, uint32_t reply_cap,
		     int timeout_ms)
{
	struct hgsmi_msg m, r;
	int rc;

	if ((rc = alloc_for(g, len, reply_cap, channel, info, data, &m, NULL)) < 0)
		return rc;
	memcpy(g->seg.base + m.data, data, len);
	rc = hgsmi_guest_call_buffer(g, m.offset, timeout_ms, &r);
	if (rc == -ETIMEDOUT) {
		/* The host still has it: free it when it comes back. */
		hgsmi_int_inflight_set(&g->orphans, m.offset);
		return rc;
	}
	if ((rc > 0 || rc == -EIO) && reply && reply_cap) {
		/* -EIO: the host may have left the handler's reason, NUL-terminated. */
		uint32_t n = r.size < reply_cap ? r.size : reply_cap;

		memcpy(reply, g->seg.base + r.data, n);
		if (rc < 0 && n < reply_cap)
			((char *)reply)[n] = '\0';
	}
	if (hgsmi_guest_free(g, m.offset) == -EBUSY)
		hgsmi_int_inflight_set(&g->orphans, m.offset);
	return rc;
}

/*
 * The ack ring is full: sleep a slice on the control socket (the host says
 * nothing when it drains acks, but its death or stray bytes end the wait).
 * Returns 0 to look again, or -EPIPE / -EPROTO (the connection is over).
 */
static int sleep_for_room(struct hgsmi_guest *g, int slice_ms)
{
	struct pollfd p = {.fd = g->sock, .events = POLLIN};
	int rc = poll(&p, 1, slice_ms);

	if (rc < 0)
		return errno == EINTR ? 0 : -errno;
	if (rc > 0 && (rc = hgsmi_int_sock_check(g->sock)) < 0)
		g->gone = true;
	return rc;
}

/* How long acks may wait for room in the ack ring (ack_within). */
struct ack_wait {
	uint64_t start;
	int timeout_ms;
	int slice_ms;
};

/* The ack ring is full: wake the host (it drains acks on every pass) and
 * give it a slice, until the deadline. */
static int ack_full(struct hgsmi_endpoint *ep, unsigned chunk, unsigned left, void *arg)
{
	struct hgsmi_guest *g = guest_of(ep);
	struct ack_wait *w = arg;
	int ms, rc;

	(void)chunk, (void)left; /* what is left is counted by ack_within */
	doorbell(g);
	if (host_gone(g))
		return -EPIPE;
	if ((ms = hgsmi_int_remaining_ms(w->timeout_ms, w->start)) == 0)
		return -ETIMEDOUT;
	if ((rc = sleep_for_room(g, ms < 0 || ms > w->slice_ms ? w->slice_ms : ms)) < 0)
		return rc;
	w->slice_ms = w->slice_ms < ACK_SLICE_MAX_MS ? w->slice_ms * 2 : w->slice_ms;
	return 0;
}

/*
 * hgsmi_guest_ack within timeout_ms (-1: for ever, and never less than
 * ACK_GRACE_MS).  A host that keeps the ring full costs a sleep, not a spin.
 * Returns n, or -ETIMEDOUT, -EPIPE, -EPROTO (a hostile ack ring index) with
 * every ack that did not reach the ring counted in acks_dropped (those
 * before it went), or -EINVAL (an offset outside the host heap) with none
 * sent and none counted: the caller still holds them all.
 */
static int ack_within(struct hgsmi_guest *g, const struct hgsmi_msg *msgs, unsigned n,
		      int timeout_ms)
{
	struct ack_wait w = {.start = hgsmi_int_now_ns(), .timeout_ms = timeout_ms, .slice_ms = 1};
	unsigned went;
	int rc;

	if (timeout_ms >= 0 && timeout_ms < ACK_GRACE_MS)
		w.timeout_ms = ACK_GRACE_MS;
	rc = hgsmi_int_ep_complete(&g->ep, msgs, n, &w, &went);
	if (rc < 0 && rc != -EINVAL)
		g->st.acks_dropped += n - went;
	if (went)
		doorbell(g);
	return rc;
}

int hgsmi_guest_ack(struct hgsmi_guest *g, const struct hgsmi_msg *msgs, unsigned n)
{
	return ack_within(g, msgs, n, ACK_RETRY_MS);
}

int hgsmi_guest_ack_timeout(struct hgsmi_guest *g, const struct hgsmi_msg *msgs, unsigned n,
			    int timeout_ms)
{
	return ack_within(g, msgs, n, timeout_ms);
}

/* The guest counts a bad host buffer; it never cuts its host off. */
static bool guest_note(struct hgsmi_endpoint *ep, enum hgsmi_ep_event what)
{
	if (what < HGSMI_EP_TOO_LARGE) /* the verification failures */
		guest_of(ep)->st.errors++;
	return true;
}

/* One recv call's deadline: every ack it makes counts against the same one. */
struct recv_deadline {
	uint64_t start;
	int timeout_ms; /* -1: for ever */
};

/* What recv serves in C is acked within what is left of recv's timeout (arg). */
static int guest_complete(struct hgsmi_endpoint *ep, const struct hgsmi_msg *msgs, unsigned n,
			  void *arg)
{
	const struct recv_deadline *d = arg;
	int rc = ack_within(guest_of(ep), msgs, n,
			    hgsmi_int_remaining_ms(d->timeout_ms, d->start));

	return rc < 0 ? rc : 0;
}

static const struct hgsmi_ep_ops guest_ops = {
	.note = guest_note, .complete = guest_complete, .full = ack_full};

/* The endpoint over the host FIFO and its acks, the host heap and ours. */
static void endpoint_init(struct hgsmi_guest *g)
{
	g->ep = (struct hgsmi_endpoint){
		.base = g->seg.base, .in = &g->hostfifo, .back = &g->hostack,
		.peer = g->seg.regions[HGSMI_REGION_HOST_HEAP], .heap = g->heap,
		.owed = &g->orphans, .channels = g->channels, .msgs_in = &g->st.msgs_in,
		.bytes_in = &g->st.bytes_in, .bytes_out = &g->st.bytes_out, .ops = &guest_ops};
}

/* The error a recv held back for this call, cleared. */
static int take_recv_err(struct hgsmi_guest *g)
{
	int rc = g->recv_err;

	g->recv_err = 0;
	return rc;
}

/*
 * hgsmi_guest_recv, whose own acks (C handlers, bad buffers) wait as
 * ack_within.  Nothing taken off the FIFO is lost when one of those acks
 * fails (or the FIFO index turns hostile) part-way: the messages already in
 * out[] are returned, the error is held for the next call, which returns it
 * and takes nothing, and the acks that failed are in acks_dropped.  No more
 * is taken after the failure (hgsmi_int_ep_recv): it stays on the FIFO.
 */
static int recv_within(struct hgsmi_guest *g, struct hgsmi_msg *out, unsigned max,
		       int timeout_ms)
{
	/* A budget, as the host has: a host that refills its FIFO with buffers
	 * C serves (no handler, bad checksum) cannot keep one call here. */
	const struct hgsmi_ep_bound b = {.limit = UINT_MAX,
					 .budget = max > HGSMI_BATCH ? max : HGSMI_BATCH};
	struct recv_deadline d = {.start = hgsmi_int_now_ns(), .timeout_ms = timeout_ms};
	unsigned n;
	int rc;

	if (g->recv_err)
		return take_recv_err(g);
	if (host_gone(g))
		return -EPIPE;
	rc = hgsmi_int_ep_recv(&g->ep, out, max, &b, &d, &n);
	if (rc < 0 && n > 0) {
		g->recv_err = rc; /* out[] first: the caller must ack those */
		rc = 0;
	}
	return rc < 0 ? rc : (int)n;
}

int hgsmi_guest_recv(struct hgsmi_guest *g, struct hgsmi_msg *out, unsigned max)
{
	return recv_within(g, out, max, ACK_RETRY_MS);
}

int hgsmi_guest_recv_timeout(struct hgsmi_guest *g, struct hgsmi_msg *out, unsigned max,
			     int timeout_ms)
{
	return recv_within(g, out, max, timeout_ms);
}

int hgsmi_guest_poll(struct hgsmi_guest *g, int timeout_ms)
{
	struct hgsmi_msg msgs[HGSMI_BATCH];
	uint64_t before = g->st.msgs_in, start = hgsmi_int_now_ns();
	int rc, n;

	/* What the last recv held back comes first, not after a wait. */
	if (g->recv_err)
		return take_recv_err(g);
	if ((rc = hgsmi_guest_wait(g, timeout_ms)) < 0)
		return rc;
	/* The acks share the caller's deadline (a full ack ring must not
	 * stretch it), and their failure is the call's. */
	while ((n = recv_within(g, msgs, HGSMI_BATCH,
				hgsmi_int_remaining_ms(timeout_ms, start))) > 0) {
		for (int i = 0; i < n; i++)
			msgs[i].status = -ENOSYS, msgs[i].size = 0;
		if ((rc = ack_within(g, msgs, (unsigned)n,
				     hgsmi_int_remaining_ms(timeout_ms, start))) < 0)
			return rc;
	}
	return n < 0 ? n : (int)(g->st.msgs_in - before);
}

int hgsmi_guest_query_conf(struct hgsmi_guest *g, uint32_t index, uint32_t *value)
{
	struct hgsmi_conf32 q = {.index = index};
	int rc = hgsmi_guest_call(g, HGSMI_CH_SETUP, HGSMI_CC_QUERY_CONF, &q, sizeof(q),
				  &q, sizeof(q), 5000);

	if (rc < 0)
		return rc;
	if (rc != sizeof(q))
		return -EPROTO;
	*value = q.value;
	return 0;
}

void hgsmi_guest_stats(const struct hgsmi_guest *g, struct hgsmi_guest_stats *out)
{
	*out = g->st;
	out->inflight = g->sent.count;
	hgsmi_heap_stats(g->heap, &out->guest_heap);
}

/*
 * A guest whose segment and notifiers come from elsewhere than the control
 * socket (guest_pci.c: an ivshmem device's BARs).  Takes them over, also on
 * failure.  Identity and epoch are the segment header's, read once.
 */
int hgsmi_int_guest_create_mapped(const struct hgsmi_segment *seg,
				  const struct hgsmi_notify *doorbell,
				  const struct hgsmi_notify *irq, uint32_t spin_us,
				  struct hgsmi_guest **out)
{
	struct hgsmi_guest *g = calloc(1, sizeof(*g));
	int rc;

	if (!g) {
		struct hgsmi_segment s = *seg;
		struct hgsmi_notify d = *doorbell, i = *irq;

		hgsmi_int_segment_close(&s, false);
		hgsmi_int_notify_close(&d, false);
		hgsmi_int_notify_close(&i, false);
		return -ENOMEM;
	}
	g->seg = *seg;
	g->doorbell = *doorbell;
	g->irq = *irq;
	g->sock = -1;
	hgsmi_int_spin_init(&g->spin, spin_us);
	g->epoch = irq->epoch_seen;
	if ((rc = layout(g)) < 0) {
		hgsmi_guest_detach(g);
		return rc;
	}
	g->st.backend = irq->backend == HGSMI_BACKEND_EVENTFD ? HGSMI_BACKEND_PCI_MSIX
							     : HGSMI_BACKEND_PCI_POLL;
	g->st.guest_id = READ_ONCE(hgsmi_int_seg_hdr(&g->seg)->guest_id);
	g->st.epoch = g->epoch;
	*out = g;
	return 0;
}
