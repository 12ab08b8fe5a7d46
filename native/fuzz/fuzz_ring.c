/* SPDX-License-Identifier: MIT */
/*
 * fuzz_ring.c - a whole segment image as a hostile guest leaves it, and the
 * host serving it: hgsmi_int_segment_validate on the header, then the real
 * hgsmi_conn_recv / hgsmi_conn_complete / hgsmi_conn_post over its rings.
 *
 * Input (little-endian):
 *   u8  flags      bit 0: set the header's size field to the image's length
 *                  bit 1: set magic, endian mark, ABI major and header_size to
 *                         the right values (so mutations explore the layout)
 *   u16 image_len  bytes of segment image that follow (clamped to what is left)
 *   ...            the image: segment header at 0, then whatever the regions
 *                  the header names contain (rings with their head, tail and
 *                  slots, buffers in the guest heap)
 *   ...            ops, 8 bytes each, u32 where + u32 value, at most MAX_OPS:
 *                  where 0xffffffff: one host pass (recv until empty, complete
 *                                    what a handler-less channel returned)
 *                  where 0xfffffffe: the host posts a command (channel value &
 *                                    0xff, info value >> 8 & 0xffff, length
 *                                    value >> 24)
 *                  where 0xfffffffd: the host app submits `value` as a host
 *                                    buffer (must be refused unless it is one)
 *                  otherwise:        the guest stores value at (where %
 *                                    (size - 3)) & ~3, between two passes
 *                  A last pass runs after the ops.
 *
 * The conn is built in memory the way hgsmi_int_conn_create builds it, over
 * a heap block whose bytes after the image are poisoned (64 KiB), so a byte
 * read or written outside the segment is an ASan report.  Oracles, after every
 * pass: the host heap passes its invariant check and holds exactly the
 * buffers still posted; the host wrote only where it may (its rings, the
 * consumer heads, the host flags, the two heaps); every buffer handed to a
 * handler or returned by recv lies, with its reply room and tail, in the
 * guest heap; a dead conn stays dead.
 *
 * Guests cannot lay out the segment; the host does (segment.c layout()).
 * Fuzzing any layout validate accepts also covers a guest mapping a hostile
 * host's segment, which trusts validate for the same layout fields.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "fuzz.h"

#define MAX_OPS 64
#define GUARD (64u << 10) /* poisoned bytes after the image */
#define MAX_PASSES 16
#define CH_HANDLER 0x10  /* served by a C handler in the library */
#define CH_DEFERRED 0x11 /* returned by recv, completed by the "app" */
#define CH_ECHO HGSMI_CH_ECHO /* handler, replies as long as asked */

static struct hgsmi_host host; /* conn.c reads its channels and cfg.max_inflight */
static int irq_fd = -1;
static struct hgsmi_conn *cur; /* for the handlers' oracle */
static bool verbose;           /* HGSMI_FUZZ_VERBOSE=1: stats per input */

/* A verified buffer: header, reply room and tail inside the guest heap. */
static void check_msg(const struct hgsmi_conn *c, const struct hgsmi_msg *m)
{
	const struct hgsmi_region *g = &c->seg.regions[HGSMI_REGION_GUEST_HEAP];
	uint64_t room = m->capacity > m->size ? m->capacity : m->size;

	FUZZ_CHECK(m->capacity >= m->size);
	FUZZ_CHECK(m->offset >= g->offset);
	FUZZ_CHECK(m->offset % HGSMI_HEAP_ALIGN == 0);
	FUZZ_CHECK(m->data == m->offset + sizeof(struct hgsmi_buffer_header));
	FUZZ_CHECK((uint64_t)m->data + room + sizeof(struct hgsmi_buffer_tail) <=
		   (uint64_t)g->offset + g->size);
	FUZZ_CHECK(m->guest == c->id);
}

/* Reads the whole request, writes the whole reply room; reply length from
 * the first data byte, which may ask for more than the capacity. */
static int handler(void *ctx, const struct hgsmi_msg *m, void *data, uint32_t *reply_len)
{
	uint8_t *d = data, acc = 0;

	(void)ctx;
	check_msg(cur, m);
	FUZZ_CHECK(d == cur->seg.base + m->data);
	for (uint32_t i = 0; i < m->size; i++)
		acc ^= d[i];
	for (uint32_t i = m->size; i < m->capacity; i++)
		d[i] = acc;
	if (m->size && d[0] == 0xee)
		*reply_len = m->capacity + 1; /* must become -EOVERFLOW */
	else if (m->size && d[0] == 0xef)
		return -EIO;
	else
		*reply_len = m->capacity;
	return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	verbose = getenv("HGSMI_FUZZ_VERBOSE") != NULL;
	host.cfg.max_inflight = 16;
	FUZZ_CHECK(hgsmi_host_register(&host, CH_HANDLER, handler, NULL) == 0);
	FUZZ_CHECK(hgsmi_host_register(&host, CH_ECHO, handler, NULL) == 0);
	FUZZ_CHECK(hgsmi_host_register(&host, CH_DEFERRED, NULL, NULL) == 0);
	irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	FUZZ_CHECK(irq_fd >= 0);
	return 0;
}

/*
 * Where the host must not write in a pass: everything but its two rings, the
 * consumer heads of the other two, the host flags line and the two heaps.
 */
struct span {
	uint32_t off, len;
};
#define MAX_SPANS 16

static int forbidden_spans(const struct hgsmi_conn *c, struct span *out)
{
	const struct hgsmi_region *r = c->seg.regions;
	struct span ok[8];
	int n_ok = 0, n = 0;
	uint32_t at = 0;

	ok[n_ok++] = (struct span){offsetof(struct hgsmi_segment_header, host_flags),
				   sizeof(struct hgsmi_notify_line)};
	ok[n_ok++] = (struct span){r[HGSMI_REGION_SUBMIT].offset +
					   offsetof(struct hgsmi_ring_header, head), 4};
	ok[n_ok++] = (struct span){r[HGSMI_REGION_HOSTACK].offset +
					   offsetof(struct hgsmi_ring_header, head), 4};
	ok[n_ok++] = (struct span){r[HGSMI_REGION_GCOMPLETE].offset, r[HGSMI_REGION_GCOMPLETE].size};
	ok[n_ok++] = (struct span){r[HGSMI_REGION_HOSTFIFO].offset, r[HGSMI_REGION_HOSTFIFO].size};
	ok[n_ok++] = (struct span){r[HGSMI_REGION_GUEST_HEAP].offset, r[HGSMI_REGION_GUEST_HEAP].size};
	ok[n_ok++] = (struct span){r[HGSMI_REGION_HOST_HEAP].offset, r[HGSMI_REGION_HOST_HEAP].size};
	/* Sort by offset (validate made them disjoint), then take the gaps. */
	for (int i = 1; i < n_ok; i++)
		for (int j = i; j > 0 && ok[j].off < ok[j - 1].off; j--) {
			struct span t = ok[j];
			ok[j] = ok[j - 1];
			ok[j - 1] = t;
		}
	for (int i = 0; i < n_ok; i++) {
		if (ok[i].off > at)
			out[n++] = (struct span){at, ok[i].off - at};
		at = ok[i].off + ok[i].len;
	}
	if (at < c->seg.size)
		out[n++] = (struct span){at, c->seg.size - at};
	return n;
}

static void check_host_heap(struct hgsmi_conn *c)
{
	struct hgsmi_heap_stats st;

	FUZZ_CHECK(hgsmi_heap_check(c->host_heap) == 0);
	hgsmi_heap_stats(c->host_heap, &st);
	/* Every host buffer is either posted (not acked yet) or free. */
	FUZZ_CHECK(st.used_blocks == c->posted.count);
}

static void pass(struct hgsmi_conn *c, uint8_t *before, const struct span *no,
		 int n_no)
{
	struct hgsmi_msg out[HGSMI_BATCH];
	struct hgsmi_conn_stats st;
	bool was_alive = c->alive;

	memcpy(before, c->seg.base, c->seg.size);
	/* A consumer never believes more than a ring holds. */
	FUZZ_CHECK(hgsmi_int_ring_pending(&c->submit) <= c->seg.ring_entries);
	FUZZ_CHECK(hgsmi_int_ring_pending(&c->hostack) <= c->seg.ring_entries);
	FUZZ_CHECK(!hgsmi_int_conn_pending(c) || c->alive);
	for (int round = 0; round < 4; round++) {
		int n = hgsmi_conn_recv(c, out, HGSMI_BATCH);

		if (n <= 0) {
			FUZZ_CHECK(n == 0 || n == -EPIPE);
			FUZZ_CHECK(n == 0 || !c->alive);
			break;
		}
		for (int i = 0; i < n; i++) {
			check_msg(c, &out[i]);
			FUZZ_CHECK(out[i].channel == CH_DEFERRED);
			out[i].status = 0;
			out[i].size = out[i].capacity;
		}
		n = hgsmi_conn_complete(c, out, (unsigned)n);
		FUZZ_CHECK(n >= 0 || n == -EPIPE);
	}
	if (!was_alive)
		FUZZ_CHECK(!c->alive);
	for (int s = 0; s < n_no; s++) {
		if (!memcmp(c->seg.base + no[s].off, before + no[s].off, no[s].len))
			continue;
		for (uint32_t i = no[s].off; i < no[s].off + no[s].len; i++)
			if (c->seg.base[i] != before[i])
				fprintf(stderr, "host wrote segment byte %#x (%#x -> %#x)\n",
					i, before[i], c->seg.base[i]);
		FUZZ_CHECK(!"host wrote outside its rings, heads, flags and heaps");
	}
	check_host_heap(c);
	hgsmi_conn_stats(c, &st);
	FUZZ_CHECK(st.inflight_host == c->posted.count);
}

static void post(struct hgsmi_conn *c, uint32_t value)
{
	uint8_t payload[256];
	uint8_t ch = (uint8_t)value;
	uint32_t len = value >> 24;
	int64_t rc;

	memset(payload, (int)len, sizeof(payload));
	rc = hgsmi_conn_post(c, ch ? ch : 0x20, (uint16_t)(value >> 8), payload, len);
	FUZZ_CHECK(rc >= 0 || rc == -ENOMEM || rc == -EAGAIN || rc == -EMSGSIZE ||
		   rc == -EPIPE);
	if (rc >= 0) {
		const struct hgsmi_region *h = &c->seg.regions[HGSMI_REGION_HOST_HEAP];

		FUZZ_CHECK((uint64_t)rc >= h->offset &&
			   (uint64_t)rc + HGSMI_BUFFER_OVERHEAD + len <=
				   (uint64_t)h->offset + h->size);
	}
	check_host_heap(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cursor in = {data, size};
	uint8_t flags = take_u8(&in);
	uint32_t len = take_u16(&in);
	struct hgsmi_segment_header *h;
	struct hgsmi_conn c;
	const struct hgsmi_region *r;
	uint8_t *img = NULL, *before = NULL;
	struct span no[MAX_SPANS];
	int n_no;
	uint64_t drained;
	int passes = 0;

	if (len > in.left)
		len = (uint32_t)in.left;
	if (len < sizeof(struct hgsmi_segment_header))
		return 0;
	if (posix_memalign((void **)&img, 64, (size_t)len + GUARD))
		return 0;
	take_bytes(&in, img, len);
	/* Past the image, as far as a wild 32-bit offset is likely to land
	 * near: a read or write there is an ASan report, not a silent hit on
	 * some other heap block. */
	ASAN_POISON_MEMORY_REGION(img + len, GUARD);
	h = (struct hgsmi_segment_header *)(void *)img;
	if (flags & 1)
		h->size = len;
	if (flags & 2) {
		h->magic = HGSMI_SEGMENT_MAGIC;
		h->endian = HGSMI_ENDIAN_MARK;
		h->abi_major = HGSMI_ABI_MAJOR;
		h->header_size = sizeof(*h);
	}

	memset(&c, 0, sizeof(c));
	if (hgsmi_int_segment_validate(h, len, &c.seg) < 0)
		goto out;
	/* What validate promised, checked independently. */
	r = c.seg.regions;
	FUZZ_CHECK(c.seg.size == len);
	FUZZ_CHECK(c.seg.ring_entries >= 2 &&
		   (c.seg.ring_entries & (c.seg.ring_entries - 1)) == 0);
	for (int i = 0; i <= HGSMI_REGION_HOST_HEAP; i++) {
		FUZZ_CHECK(r[i].offset >= sizeof(*h));
		FUZZ_CHECK((uint64_t)r[i].offset + r[i].size <= len);
		if (i <= HGSMI_REGION_HOSTACK)
			FUZZ_CHECK(r[i].size >= sizeof(struct hgsmi_ring_header) +
						4ull * c.seg.ring_entries);
		for (int j = 0; j < i; j++)
			FUZZ_CHECK(r[i].offset >= r[j].offset + r[j].size ||
				   r[j].offset >= r[i].offset + r[i].size);
	}

	/* hgsmi_int_conn_create, over this image instead of a new segment. */
	c.host = &host;
	c.seg.base = img;
	c.sock = -1;
	c.alive = true;
	c.id = 7;
	c.epoch = 1;
	c.doorbell = (struct hgsmi_notify){.backend = HGSMI_BACKEND_EVENTFD, .fd = -1};
	c.irq = (struct hgsmi_notify){.backend = HGSMI_BACKEND_EVENTFD, .fd = irq_fd};
	if (hgsmi_heap_create(r[HGSMI_REGION_HOST_HEAP].offset,
			      r[HGSMI_REGION_HOST_HEAP].size, &c.host_heap) < 0)
		goto out;
	if (hgsmi_int_inflight_init(&c.posted, r[HGSMI_REGION_HOST_HEAP].offset,
				    r[HGSMI_REGION_HOST_HEAP].size) < 0)
		goto out;
	hgsmi_int_conn_rings(&c);
	cur = &c;

	before = malloc(len);
	if (!before)
		goto out;
	n_no = forbidden_spans(&c, no);
	for (int ops = 0; ops < MAX_OPS && in.left >= 8 && passes < MAX_PASSES; ops++) {
		uint32_t where = take_u32(&in), value = take_u32(&in);

		if (where == 0xffffffffu) {
			pass(&c, before, no, n_no);
			passes++;
		} else if (where == 0xfffffffeu) {
			post(&c, value);
		} else if (where == 0xfffffffdu) {
			int rc = hgsmi_conn_submit(&c, value);

			FUZZ_CHECK(rc == -EINVAL || rc == -EPIPE || rc == -EAGAIN ||
				   (rc == 0 && hgsmi_heap_block_size(c.host_heap, value) >= 0));
			check_host_heap(&c);
		} else {
			/* len >= 320: the word lies in the image. */
			WRITE_ONCE(*(uint32_t *)(void *)(img + ((where % (len - 3)) & ~3u)),
				   value);
		}
	}
	pass(&c, before, no, n_no);
	if (verbose) {
		struct hgsmi_conn_stats st;

		hgsmi_conn_stats(&c, &st);
		fprintf(stderr, "fuzz_ring: alive %d in %llu out %llu errors offset %llu "
			"checksum %llu protocol %llu channel %llu handler %llu full %llu, "
			"posted %u\n", c.alive, (unsigned long long)st.msgs_in,
			(unsigned long long)st.msgs_out, (unsigned long long)st.errors_offset,
			(unsigned long long)st.errors_checksum,
			(unsigned long long)st.errors_protocol,
			(unsigned long long)st.errors_channel,
			(unsigned long long)st.errors_handler,
			(unsigned long long)st.errors_full, st.inflight_host);
	}

	while (read(irq_fd, &drained, sizeof(drained)) > 0)
		;
out:
	/* hgsmi_int_conn_destroy's frees (the image is not a mapping). */
	cur = NULL;
	hgsmi_heap_destroy(c.host_heap);
	hgsmi_int_inflight_free(&c.posted);
	free(before);
	ASAN_UNPOISON_MEMORY_REGION(img + len, GUARD);
	free(img);
	return 0;
}
