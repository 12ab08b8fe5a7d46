/* SPDX-License-Identifier: MIT */
/*
 * conn.c - the host's side of one attached guest: serve its submit ring,
 * complete its buffers, post host commands on the FIFO, take its acks, and
 * raise the IRQ.  Everything read from the segment is hostile.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "internal.h"

static const struct hgsmi_region *area(const struct hgsmi_conn *c, int id)
{
	return &c->seg.regions[id];
}

/*
 * Level-triggered IRQ, as VBVARaiseIrq does it: the reason and IRQ bits go
 * into the host flags; the line is only pulsed (eventfd written) when IRQ
 * was not already raised and the guest said it is going to sleep.  The
 * seq_cst RMW is also the full barrier between publishing the ring index and
 * reading guest_waiting (the guest does the mirror image).
 */
void hgsmi_int_conn_raise_irq(struct hgsmi_conn *c, uint32_t reason)
{
	struct hgsmi_segment_header *h = hgsmi_int_seg_hdr(&c->seg);
	uint32_t old = __atomic_fetch_or(&h->host_flags.value,
					 reason | HGSMI_HOSTFLAGS_IRQ, __ATOMIC_SEQ_CST);

	if (!(old & HGSMI_HOSTFLAGS_IRQ) && READ_ONCE(h->guest_waiting.value)) {
		hgsmi_int_notify_signal(&c->irq);
		c->st.irqs++;
	} else {
		c->st.irqs_suppressed++;
	}
}

/*
 * Work the host should wake for.  A guest at its in-flight limit has nothing
 * we may take (its buffers wait in its ring until we complete some), and a
 * throttled one waits for the timer: neither keeps the host spinning.
 */
bool hgsmi_int_conn_pending(const struct hgsmi_conn *c)
{
	bool room = c->held < c->host->cfg.max_inflight && !c->throttle_until_ns;

	return c->alive && ((room && hgsmi_int_ring_pending(&c->submit)) ||
			    hgsmi_int_ring_pending(&c->hostack));
}

/*
 * The doorbell's rate limit, a GCRA token bucket: each wake-up costs
 * 1e9 / max_doorbells_per_s ns of credit, credit grows with elapsed time up
 * to HGSMI_THROTTLE_TICK_NS (the burst).  Without credit, the caller ignores
 * the doorbell until the next tick.
 */
bool hgsmi_int_conn_doorbell_ok(struct hgsmi_conn *c, uint64_t now)
{
	uint32_t rate = c->host->cfg.max_doorbells_per_s;
	uint64_t cost, burst;

	if (rate == HGSMI_UNLIMITED)
		return true;
	cost = 1000000000ull / rate;
	burst = cost > HGSMI_THROTTLE_TICK_NS ? cost : HGSMI_THROTTLE_TICK_NS;
	c->db_credit_ns += now - c->db_last_ns;
	if (c->db_credit_ns > burst)
		c->db_credit_ns = burst;
	c->db_last_ns = now;
	if (c->db_credit_ns < cost)
		return false;
	c->db_credit_ns -= cost;
	return true;
}

int hgsmi_int_conn_create(struct hgsmi_host *host, int sock, uint32_t features,
			  struct hgsmi_conn **out, struct hgsmi_welcome *w,
			  int *fds, int *nfds)
{
	const struct hgsmi_host_config *cfg = &host->cfg;
	struct hgsmi_conn *c = calloc(1, sizeof(*c));
	const struct hgsmi_region *hh;
	char name[64]; /* checked against HGSMI_NAME_MAX by the segment */
	uint32_t e = cfg->ring_entries;
	int rc = -EEXIST;

	if (!c)
		return -ENOMEM;
	c->host = host;
	c->sock = sock;
	c->doorbell.fd = c->irq.fd = -1;
	/* Ids wrap at 100000 so names stay within 30 bytes; a clash with a
	 * segment still in use is skipped by O_EXCL. */
	for (int tries = 0; tries < 8 && rc == -EEXIST; tries++) {
		c->id = host->next_id;
		host->next_id = host->next_id % 99999 + 1;
		snprintf(name, sizeof(name), "/hgsmi-%s.%u", host->key, c->id);
		c->epoch = ++host->epoch;
		rc = hgsmi_int_segment_create(&c->seg, name, cfg->segment_size, e,
					      cfg->guest_heap_percent, c->id, c->epoch,
					      features, cfg->segment == HGSMI_SEGMENT_MEMFD);
	}
	if (rc < 0)
		goto fail;
	hh = area(c, HGSMI_REGION_HOST_HEAP);
	if ((rc = hgsmi_heap_create(hh->offset, hh->size, &c->host_heap)) < 0 ||
	    (rc = hgsmi_int_inflight_init(&c->posted, hh->offset, hh->size)) < 0)
		goto fail;
	hgsmi_int_conn_rings(c);

	memset(w, 0, sizeof(*w));
	*nfds = 0;
	if (c->seg.memfd)
		fds[(*nfds)++] = c->seg.fd; /* first, as HGSMI_F_SEGMENT_FD says */
	if (cfg->backend == HGSMI_BACKEND_SEMAPHORE) {
		char irq[64];

		snprintf(irq, sizeof(irq), "/hgsmi-%s.%ui", host->key, c->id);
		if ((rc = hgsmi_int_notify_sem(&c->irq, irq, true, 0600)) < 0)
			goto fail;
		c->doorbell = host->sem_doorbell; /* shared: all guests ring one */
		strcpy(w->sem_doorbell, host->sem_doorbell.name);
		strcpy(w->sem_irq, irq);
	} else {
		if ((rc = hgsmi_int_notify_create_eventfd(&c->doorbell)) < 0 ||
		    (rc = hgsmi_int_notify_create_eventfd(&c->irq)) < 0)
			goto fail;
		c->own_doorbell = true;
		fds[(*nfds)++] = c->doorbell.fd;
		fds[(*nfds)++] = c->irq.fd;
	}
	w->features = features;
	w->guest_id = c->id;
	w->epoch = c->epoch;
	w->segment_size = cfg->segment_size;
	w->backend = cfg->backend;
	w->nfds = (uint32_t)*nfds;
	strcpy(w->segment, c->seg.name);
	c->alive = true;
	c->db_last_ns = hgsmi_int_now_ns();
	c->db_credit_ns = HGSMI_THROTTLE_TICK_NS; /* a full burst to start with */
	c->st.guest_id = c->id;
	c->st.epoch = c->epoch;
	*out = c;
	return 0;
fail:
	c->sock = -1; /* the caller still owns the socket */
	hgsmi_int_conn_destroy(c);
	return rc;
}

void hgsmi_int_conn_destroy(struct hgsmi_conn *c)
{
	if (c->seg.base) {
		/* A guest that still maps the segment sees the epoch move. */
		__atomic_add_fetch(&hgsmi_int_seg_hdr(&c->seg)->epoch, 1, __ATOMIC_SEQ_CST);
	}
	if (c->sock >= 0)
		close(c->sock);
	if (c->own_doorbell)
		hgsmi_int_notify_close(&c->doorbell, true);
	hgsmi_int_notify_close(&c->irq, true);
	hgsmi_int_segment_close(&c->seg, true);
	hgsmi_heap_destroy(c->host_heap);
	hgsmi_int_inflight_free(&c->posted);
	free(c);
}

/* A protocol error from the guest: count it, and past the limit cut it off. */
static void guest_error(struct hgsmi_conn *c, uint64_t *counter)
{
	(*counter)++;
	if (++c->errors_since_reset > HGSMI_ERROR_LIMIT)
		c->alive = false;
}

void hgsmi_int_conn_drain_acks(struct hgsmi_conn *c)
{
	uint32_t offs[HGSMI_BATCH];
	/* At most a ring's worth a call: a guest that keeps moving the tail
	 * with junk must not keep the host here (its errors cut it off). */
	uint32_t budget = c->seg.ring_entries;
	int n = 0;

	while (c->alive && budget &&
	       (n = hgsmi_int_ring_pop(&c->hostack, offs,
				       budget < HGSMI_BATCH ? budget : HGSMI_BATCH)) > 0) {
		budget -= (uint32_t)n;
		for (int i = 0; i < n; i++) {
			const struct hgsmi_buffer_header *h;

			/* Only a buffer we posted and that is not yet back may be
			 * freed; anything else the guest names is ignored. */
			if (!hgsmi_int_inflight_take(&c->posted, offs[i])) {
				guest_error(c, &c->st.errors_protocol);
				continue;
			}
			h = (const void *)(c->seg.base + offs[i]);
			if ((int32_t)READ_ONCE(h->u0) < 0)
				c->st.errors_handler++;
			hgsmi_heap_free(c->host_heap, offs[i]);
		}
	}
	if (n < 0) /* a hostile ring index: nothing on this ring is usable */
		guest_error(c, &c->st.errors_protocol), c->alive = false;
}

static void setup_channel(struct hgsmi_conn *c, struct hgsmi_msg *m)
{
	struct hgsmi_host *host = c->host;
	uint8_t *data = c->seg.base + m->data;
	struct hgsmi_conf32 q;

	m->status = 0;
	if (m->info == HGSMI_CC_HOST_FLAGS_LOCATION && m->capacity >= 8) {
		struct hgsmi_buffer_location loc = {
			offsetof(struct hgsmi_segment_header, host_flags), 4};
		memcpy(data, &loc, sizeof(loc));
		m->size = sizeof(loc);
	} else if (m->info == HGSMI_CC_QUERY_CONF && m->size >= sizeof(q)) {
		memcpy(&q, data, sizeof(q)); /* one copy of the guest's bytes */
		switch (q.index) {
		case HGSMI_CONF_GUEST_HEAP_SIZE:
			q.value = area(c, HGSMI_REGION_GUEST_HEAP)->size;
			break;
		case HGSMI_CONF_HOST_HEAP_SIZE:
			q.value = area(c, HGSMI_REGION_HOST_HEAP)->size;
			break;
		case HGSMI_CONF_MAX_MESSAGE:
			q.value = hgsmi_heap_max_alloc(c->host_heap) - (uint32_t)HGSMI_BUFFER_OVERHEAD;
			if (host->cfg.max_message && host->cfg.max_message < q.value)
				q.value = host->cfg.max_message;
			break;
		case HGSMI_CONF_RING_ENTRIES:
			q.value = c->seg.ring_entries;
			break;
		case HGSMI_CONF_ABI_VERSION:
			q.value = HGSMI_ABI_MAJOR << 16 | HGSMI_ABI_MINOR;
			break;
		case HGSMI_CONF_MAX_INFLIGHT:
			q.value = host->cfg.max_inflight;
			break;
		case HGSMI_CONF_ECHO:
			q.value = HGSMI_CONF_ECHO;
			break;
		default:
			q.value = UINT32_MAX;
		}
		memcpy(data, &q, sizeof(q));
		m->size = sizeof(q);
	} else {
		m->status = -EINVAL;
		m->size = 0;
	}
}

/* The host's counters of what a guest sends; its errors count to the cut-off. */
static bool conn_note(struct hgsmi_endpoint *ep, enum hgsmi_ep_event what)
{
	struct hgsmi_conn *c = hgsmi_container_of(ep, struct hgsmi_conn, ep);

	uint64_t *const counter[] = {
		[HGSMI_EP_BAD_CHECKSUM] = &c->st.errors_checksum,
		[HGSMI_EP_BAD_HEADER] = &c->st.errors_protocol,
		[HGSMI_EP_BAD_OFFSET] = &c->st.errors_offset,
		[HGSMI_EP_TOO_LARGE] = &c->st.errors_size,
		[HGSMI_EP_NO_HANDLER] = &c->st.errors_channel,
		[HGSMI_EP_HANDLER_FAILED] = &c->st.errors_handler,
	};

	/* A missing or failing handler is the host's business, not the guest's fault. */
	if (what >= HGSMI_EP_NO_HANDLER)
		(*counter[what])++;
	else
		guest_error(c, counter[what]);
	return c->alive;
}

/*
 * Complete buffers taken by recv; internal ones never counted as held.
 * *went: how many of msgs (a prefix) left our hands, also on an error.
 */
static int complete(struct hgsmi_conn *c, const struct hgsmi_msg *msgs, unsigned n,
		    unsigned *went)
{
	int rc;

	*went = 0;
	if (!c->alive)
		return -EPIPE;
	rc = hgsmi_int_ep_complete(&c->ep, msgs, n, NULL, went);
	if (rc == -EPROTO) { /* a hostile completion ring index */
		guest_error(c, &c->st.errors_protocol);
		c->alive = false;
		return -EPIPE;
	}
	if (rc < 0)
		return rc;
	hgsmi_int_conn_raise_irq(c, HGSMI_HOSTFLAGS_GCOMMAND_COMPLETED);
	return rc;
}

/* What recv serves in C goes back at once; a guest cut off meanwhile ends it. */
static int conn_complete(struct hgsmi_endpoint *ep, const struct hgsmi_msg *msgs, unsigned n,
			 void *arg)
{
	struct hgsmi_conn *c = hgsmi_container_of(ep, struct hgsmi_conn, ep);
	unsigned went;

	(void)arg;
	complete(c, msgs, n, &went);
	return c->alive ? 0 : -EPIPE;
}

/*
 * Only a guest that never reaps can fill its completion ring (it may not
 * have more in flight than the ring holds): its own buffers are what it
 * loses.
 */
static int conn_full(struct hgsmi_endpoint *ep, unsigned chunk, unsigned left, void *arg)
{
	struct hgsmi_conn *c = hgsmi_container_of(ep, struct hgsmi_conn, ep);

	(void)left, (void)arg;
	c->st.errors_full += chunk;
	return 1;
}

static void conn_setup(struct hgsmi_endpoint *ep, struct hgsmi_msg *m)
{
	setup_channel(hgsmi_container_of(ep, struct hgsmi_conn, ep), m);
}

static const struct hgsmi_ep_ops conn_ops = {
	.note = conn_note, .complete = conn_complete, .full = conn_full, .setup = conn_setup};

void hgsmi_int_conn_rings(struct hgsmi_conn *c)
{
	uint8_t *base = c->seg.base;
	uint32_t e = c->seg.ring_entries;

	hgsmi_int_ring_init(&c->submit, base, area(c, HGSMI_REGION_SUBMIT), e, false);
	hgsmi_int_ring_init(&c->gcomplete, base, area(c, HGSMI_REGION_GCOMPLETE), e, true);
	hgsmi_int_ring_init(&c->hostfifo, base, area(c, HGSMI_REGION_HOSTFIFO), e, true);
	hgsmi_int_ring_init(&c->hostack, base, area(c, HGSMI_REGION_HOSTACK), e, false);
	c->ep = (struct hgsmi_endpoint){
		.base = base, .in = &c->submit, .back = &c->gcomplete,
		.peer = *area(c, HGSMI_REGION_GUEST_HEAP), .heap = c->host_heap,
		.owed = &c->posted, .channels = c->host->channels,
		.max_size = c->host->cfg.max_message, .peer_id = c->id,
		.msgs_in = &c->st.msgs_in, .bytes_in = &c->st.bytes_in,
		.bytes_out = &c->st.bytes_out, .ops = &conn_ops};
}

int hgsmi_conn_recv(struct hgsmi_conn *c, struct hgsmi_msg *out, unsigned max)
{
	/* Entries taken per call, also those served in C, are bounded: what
	 * is left makes the host's wait return. */
	struct hgsmi_ep_bound b = {.limit = c->host->cfg.max_inflight, .held = c->held,
				   .budget = max > HGSMI_BATCH ? max : HGSMI_BATCH};
	unsigned n;

	if (!c->alive)
		return -EPIPE;
	hgsmi_int_conn_drain_acks(c);
	if (!c->alive)
		return -EPIPE;
	if (hgsmi_int_ep_recv(&c->ep, out, max, &b, NULL, &n) == -EPROTO) {
		guest_error(c, &c->st.errors_protocol);
		c->alive = false;
	}
	c->held += n;
	if (c->held > c->st.inflight_guest_peak)
		c->st.inflight_guest_peak = c->held;
	if (!c->alive && n == 0)
		return -EPIPE;
	return (int)n;
}

int hgsmi_conn_complete(struct hgsmi_conn *c, const struct hgsmi_msg *msgs,
			unsigned n)
{
	unsigned went;
	int rc = complete(c, msgs, n, &went);

	/* These came out of recv: what went back (or was dropped, counted in
	 * errors_full) makes room under max_inflight; what did not is still
	 * held, so held stays what is really in the caller's hands. */
	c->held -= went < c->held ? went : c->held;
	return rc;
}

/* hgsmi_conn_alloc, for a copy from src (NULL: none): a copy of more than
 * HGSMI_PLACE_MIN bytes gets a block placed against 4K aliasing. */
static int alloc_for(struct hgsmi_conn *c, uint32_t size, uint8_t channel,
		     uint16_t info, const void *src, struct hgsmi_msg *out)
{
	uint32_t off;
	int rc;

	if (!c->alive)
		return -EPIPE;
	if (channel == HGSMI_CH_RESERVED)
		return -EINVAL;
	if (size > hgsmi_heap_max_alloc(c->host_heap) - HGSMI_BUFFER_OVERHEAD)
		return -EMSGSIZE;
	rc = hgsmi_int_heap_alloc_copy(c->host_heap, size + (uint32_t)HGSMI_BUFFER_OVERHEAD,
				       src, size, &off);
	if (rc < 0)
		return rc;
	hgsmi_buffer_init(c->seg.base, off, size, channel, info, 0);
	*out = (struct hgsmi_msg){.offset = off, .data = hgsmi_int_data_off(off), .size = size,
				  .capacity = size, .channel = channel, .info = info};
	return 0;
}

int hgsmi_conn_alloc(struct hgsmi_conn *c, uint32_t size, uint8_t channel,
		     uint16_t info, struct hgsmi_msg *out)
{
	return alloc_for(c, size, channel, info, NULL, out);
}

int hgsmi_conn_free(struct hgsmi_conn *c, uint32_t offset)
{
	if (hgsmi_int_inflight_take(&c->posted, offset)) {
		hgsmi_int_inflight_set(&c->posted, offset);
		return -EBUSY; /* the guest has it */
	}
	return hgsmi_heap_free(c->host_heap, offset);
}

int hgsmi_conn_submit_many(struct hgsmi_conn *c, const uint32_t *offsets,
			   unsigned n)
{
	int pushed;

	if (!c->alive)
		return -EPIPE;
	for (unsigned i = 0; i < n; i++)
		if (hgsmi_heap_block_size(c->host_heap, offsets[i]) < 0)
			return -EINVAL;
	pushed = hgsmi_int_ring_push(&c->hostfifo, offsets, n);
	if (pushed < 0) {
		c->alive = false;
		return -EPIPE;
	}
	for (int i = 0; i < pushed; i++) {
		const struct hgsmi_buffer_header *h = (const void *)(c->seg.base + offsets[i]);

		hgsmi_int_inflight_set(&c->posted, offsets[i]);
		c->st.msgs_out++;
		c->st.bytes_out += h->data_size;
	}
	if (pushed > 0)
		hgsmi_int_conn_raise_irq(c, HGSMI_HOSTFLAGS_COMMANDS_PENDING);
	return pushed;
}

int hgsmi_conn_submit(struct hgsmi_conn *c, uint32_t offset)
{
	int rc = hgsmi_conn_submit_many(c, &offset, 1);

	return rc == 0 ? -EAGAIN : rc < 0 ? rc : 0;
}

int64_t hgsmi_conn_post(struct hgsmi_conn *c, uint8_t channel, uint16_t info,
			const void *data, uint32_t len)
{
	struct hgsmi_msg m;
	int rc;

	/* Acks free host buffers: take them first so the heap has room. */
	hgsmi_int_conn_drain_acks(c);
	if ((rc = alloc_for(c, len, channel, info, data, &m)) < 0)
		return rc;
	memcpy(c->seg.base + m.data, data, len);
	if ((rc = hgsmi_conn_submit(c, m.offset)) < 0) {
		hgsmi_heap_free(c->host_heap, m.offset);
		return rc;
	}
	return m.offset;
}

void hgsmi_conn_stats(const struct hgsmi_conn *c, struct hgsmi_conn_stats *out)
{
	*out = c->st;
	out->inflight_host = c->posted.count;
	out->inflight_guest = c->held;
	out->submit_depth = hgsmi_int_ring_pending(&c->submit);
	hgsmi_heap_stats(c->host_heap, &out->host_heap);
}

int hgsmi_conn_alive(const struct hgsmi_conn *c) { return c->alive; }
int hgsmi_conn_cut_off(const struct hgsmi_conn *c) { return !c->alive && !c->left; }
uint32_t hgsmi_conn_id(const struct hgsmi_conn *c) { return c->id; }
void *hgsmi_conn_base(const struct hgsmi_conn *c) { return c->seg.base; }
uint32_t hgsmi_conn_size(const struct hgsmi_conn *c) { return c->seg.size; }
