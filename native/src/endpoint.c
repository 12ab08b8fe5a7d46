/* SPDX-License-Identifier: MIT */
/*
 * endpoint.c - what the host and a guest do alike with a segment: take the
 * peer's buffers from a ring (every slot and header read once, the batch
 * verified at once, what C serves served here), give them back on the other
 * ring, and fill a batch of our own buffers to send.  Which ring, region and
 * heap is the caller's (struct hgsmi_endpoint); so is the policy: counters,
 * cutting a peer off, waiting for room, queueing and waking (the hooks).
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

/* Is `off` a buffer of the peer's heap, where a completion may be written? */
static bool peer_buffer(const struct hgsmi_endpoint *ep, uint32_t off)
{
	const struct hgsmi_region *r = &ep->peer;

	return off % HGSMI_HEAP_ALIGN == 0 && off >= r->offset &&
	       r->size >= HGSMI_BUFFER_OVERHEAD &&
	       off - r->offset <= r->size - HGSMI_BUFFER_OVERHEAD;
}

static enum hgsmi_ep_event verify_event(int rc)
{
	return rc == -EBADMSG ? HGSMI_EP_BAD_CHECKSUM
	       : rc == -EPROTO ? HGSMI_EP_BAD_HEADER
			       : HGSMI_EP_BAD_OFFSET;
}

/*
 * A verified buffer: serve it here if C does (too large, the setup channel,
 * no handler, a C handler), filling status and reply length; false if it is
 * the caller's.  *more goes false if the peer was cut off.
 */
static bool serve_in_c(struct hgsmi_endpoint *ep, struct hgsmi_msg *m, bool *more)
{
	const struct hgsmi_ep_ops *ops = ep->ops;
	const struct hgsmi_channel *ch = &ep->channels[m->channel];

	(*ep->msgs_in)++;
	*ep->bytes_in += m->size;
	m->guest = ep->peer_id;
	if (ep->max_size && m->size > ep->max_size) {
		*more = ops->note(ep, HGSMI_EP_TOO_LARGE) && *more;
		m->status = -EMSGSIZE;
		m->size = 0;
	} else if (m->channel == HGSMI_CH_SETUP && ops->setup) {
		ops->setup(ep, m);
	} else if (!ch->registered) {
		ops->note(ep, HGSMI_EP_NO_HANDLER);
		m->status = -ENOENT;
		m->size = 0;
	} else if (ch->fn) {
		hgsmi_int_channel_run(ch, ep->base, m);
		if (m->status < 0)
			ops->note(ep, HGSMI_EP_HANDLER_FAILED);
	} else {
		return false;
	}
	return true;
}

int hgsmi_int_ep_recv(struct hgsmi_endpoint *ep, struct hgsmi_msg *out, unsigned max,
		      const struct hgsmi_ep_bound *b, void *arg, unsigned *got)
{
	const struct hgsmi_ep_ops *ops = ep->ops;
	/* done[] holds what C served, given back between batches only: a
	 * batch never stops half-way at a failed complete, so every entry
	 * taken off `in` is in out[] or went through ops->complete (which
	 * accounts for what it could not give back).  Up to HGSMI_BATCH - 1
	 * carried over plus one whole batch. */
	struct hgsmi_msg done[2 * HGSMI_BATCH], vms[HGSMI_BATCH];
	uint32_t offs[HGSMI_BATCH];
	int rcs[HGSMI_BATCH];
	/* The budget counts entries served in C too, which never reach out[]:
	 * a peer that keeps sending them must not hold us here. */
	unsigned n_out = 0, n_done = 0, budget = b->budget;
	bool more = true;
	int n, rc = 0;

	while (n_out < max && budget && more) {
		/* Never more taken and not completed than the limit: the rest
		 * stay in the peer's ring, which is its backpressure. */
		unsigned want = max - n_out, busy = b->held + n_out + n_done;

		if (n_done && (n_done >= HGSMI_BATCH || busy >= b->limit)) {
			rc = ops->complete(ep, done, n_done, arg);
			busy -= n_done;
			n_done = 0;
			if (rc < 0)
				break;
		}
		if (busy >= b->limit)
			break;
		if (want > b->limit - busy)
			want = b->limit - busy;
		if (want > budget)
			want = budget;
		n = hgsmi_int_ring_pop(ep->in, offs, want < HGSMI_BATCH ? want : HGSMI_BATCH);
		if (n < 0) {
			/* A hostile index: nothing on this ring is usable (what
			 * done[] holds still goes back, below). */
			rc = -EPROTO;
			break;
		}
		if (n == 0)
			break;
		budget -= (unsigned)n;
		/* All of the batch verified at once, checksums overlapped. */
		hgsmi_int_buffer_verify_many(ep->base, ep->peer.offset, ep->peer.size, offs,
					     (unsigned)n, vms, rcs);
		for (int i = 0; i < n; i++) {
			struct hgsmi_msg m = vms[i];

			if (rcs[i] < 0) {
				more = ops->note(ep, verify_event(rcs[i])) && more;
				if (!peer_buffer(ep, offs[i]))
					continue; /* nowhere to write a status */
				m = (struct hgsmi_msg){.offset = offs[i], .status = rcs[i]};
			} else if (!serve_in_c(ep, &m, &more)) {
				out[n_out++] = m;
				continue;
			}
			done[n_done++] = m;
		}
	}
	if (n_done) {
		int crc = ops->complete(ep, done, n_done, arg);

		if (rc == 0)
			rc = crc;
	}
	*got = n_out;
	return rc < 0 ? rc : 0;
}

int hgsmi_int_ep_complete(struct hgsmi_endpoint *ep, const struct hgsmi_msg *msgs,
			  unsigned n, void *arg, unsigned *went)
{
	uint32_t offs[HGSMI_BATCH];
	unsigned done = 0;

	*went = 0;
	/* Every offset checked before any goes back: -EINVAL gives nothing
	 * back, so the caller still holds all n and knows it. */
	for (unsigned i = 0; i < n; i++)
		if (!peer_buffer(ep, msgs[i].offset))
			return -EINVAL;
	while (done < n) {
		unsigned k = 0, sent = 0;

		for (; k < HGSMI_BATCH && done + k < n; k++) {
			hgsmi_int_buffer_result(ep->base, &msgs[done + k]);
			offs[k] = msgs[done + k].offset;
		}
		/* The push's release store of the tail publishes the results
		 * written above before the peer can see the offsets. */
		while (sent < k) {
			int p = hgsmi_int_ring_push(ep->back, offs + sent, k - sent), rc;

			if (p < 0) {
				*went = done + sent;
				return -EPROTO;
			}
			sent += (unsigned)p;
			if (sent == k)
				break;
			rc = ep->ops->full(ep, k - sent, n - done - sent, arg);
			if (rc < 0) {
				*went = done + sent;
				return rc;
			}
			if (rc > 0)
				break; /* the rest of the chunk is dropped */
		}
		done += k;
		*went = done;
	}
	return (int)n;
}

/* One buffer of a send batch: alloc, header (unsealed) and copy. */
static int fill_one(struct hgsmi_endpoint *ep, const struct hgsmi_ep_sender *s,
		    uint8_t channel, uint16_t info, const void *data, uint32_t len,
		    uint32_t max_len, struct hgsmi_buffer_header *hdr, uint32_t *off)
{
	uint32_t bytes = len + (uint32_t)HGSMI_BUFFER_OVERHEAD;
	int rc;

	if (len > max_len)
		return -EMSGSIZE;
	rc = hgsmi_int_heap_alloc_copy(ep->heap, bytes, data, len, off);
	/* What came back since the batch began may make room. */
	if (rc == -ENOMEM && s->reclaim_when_full && s->reclaim(ep) >= 0)
		rc = hgsmi_int_heap_alloc_copy(ep->heap, bytes, data, len, off);
	if (rc < 0)
		return rc;
	hgsmi_int_buffer_header(hdr, len, channel, info, 0);
	memcpy(ep->base + hgsmi_int_data_off(*off), data, len);
	return 0;
}

int hgsmi_int_ep_send(struct hgsmi_endpoint *ep, const struct hgsmi_ep_sender *s,
		      uint8_t channel, uint16_t info, const void *const *datas,
		      const uint32_t *lens, unsigned n)
{
	struct hgsmi_buffer_header hdrs[HGSMI_BATCH];
	uint32_t offs[HGSMI_BATCH];
	uint32_t max_len = hgsmi_heap_max_alloc(ep->heap) - (uint32_t)HGSMI_BUFFER_OVERHEAD;
	unsigned done = 0;
	int rc = 0;

	if (channel == HGSMI_CH_RESERVED)
		return -EINVAL;
	while (done < n) {
		unsigned k = 0;
		int pushed;

		/*
		 * Free what the peer has given back before allocating: TLSF's
		 * good fit then reuses those blocks, still warm in the cache,
		 * instead of marching through the whole heap and copying into
		 * cold memory until it is full (1 MiB g2h: 7.8 -> 13.5 GB/s,
		 * heap peak 32 -> 9 MiB, in one run).
		 */
		if ((rc = s->reclaim(ep)) < 0)
			break;
		if (s->batch)
			k = s->batch(ep, channel, info, datas + done, lens + done, n - done, offs,
				     hdrs);
		for (bool batched = k > 0; !batched && k < HGSMI_BATCH && done + k < n; k++) {
			if ((rc = fill_one(ep, s, channel, info, datas[done + k], lens[done + k],
					   max_len, &hdrs[k], &offs[k])) < 0)
				break;
		}
		/* Seal the batch at once: the checksums' serial chains overlap
		 * (hgsmi_int_checksum_many).  Nothing is visible to the peer
		 * before the push's release store of the ring index, which
		 * publishes headers, data and tails written here. */
		hgsmi_int_buffer_seal_many(ep->base, offs, hdrs, k);
		pushed = k ? s->push(ep, offs, k) : 0;
		if (pushed < 0) {
			rc = pushed;
			pushed = 0;
		}
		for (unsigned i = 0; i < k; i++) {
			if (i < (unsigned)pushed) {
				/* Freed when it comes back. */
				hgsmi_int_inflight_set(ep->owed, offs[i]);
				*ep->bytes_out += lens[done + i];
			} else {
				s->unsent(ep, offs[i]);
			}
		}
		done += (unsigned)pushed;
		if ((unsigned)pushed < k || rc < 0)
			break;
	}
	return done ? (int)done : (rc < 0 ? rc : -EAGAIN);
}
