/* SPDX-License-Identifier: MIT */
/*
 * conn_send.c - hgsmi_conn_send: the host's batched copy-mode post, the
 * counterpart of hgsmi_guest_send.  Many host commands, one IRQ: per batch
 * of HGSMI_BATCH, alloc + copy each (placed against 4K aliasing), seal them
 * together (the checksums' chains overlap), one push on the host FIFO.
 * Buffers go back to the host heap when the guest acks them (drain_acks).
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

int hgsmi_conn_send(struct hgsmi_conn *c, uint8_t channel, uint16_t info,
		    const void *const *datas, const uint32_t *lens, unsigned n)
{
	struct hgsmi_buffer_header hdrs[HGSMI_BATCH];
	uint32_t offs[HGSMI_BATCH];
	uint32_t max_size = hgsmi_heap_max_alloc(c->host_heap) - (uint32_t)HGSMI_BUFFER_OVERHEAD;
	unsigned done = 0;
	int rc = 0;

	if (!c->alive)
		return -EPIPE;
	if (channel == HGSMI_CH_RESERVED)
		return -EINVAL;
	while (done < n) {
		unsigned k = 0;
		int pushed;

		/* Acks free host buffers: take them before allocating, so the
		 * heap has room and reuses blocks still warm in the cache. */
		hgsmi_int_conn_drain_acks(c);
		if (!c->alive) {
			rc = -EPIPE;
			break;
		}
		for (; k < HGSMI_BATCH && done + k < n; k++) {
			uint32_t len = lens[done + k], off;

			if (len > max_size) {
				rc = -EMSGSIZE;
				break;
			}
			rc = hgsmi_int_heap_alloc_copy(c->host_heap,
						       len + (uint32_t)HGSMI_BUFFER_OVERHEAD,
						       datas[done + k], len, &off);
			if (rc < 0)
				break;
			hgsmi_int_buffer_header(&hdrs[k], len, channel, info, 0);
			memcpy(c->seg.base + off + sizeof(hdrs[k]), datas[done + k], len);
			offs[k] = off;
		}
		/* Nothing is visible to the guest before the push's release
		 * store of the FIFO tail, which publishes headers, data and
		 * tails written here. */
		hgsmi_int_buffer_seal_many(c->seg.base, offs, hdrs, k);
		pushed = k ? hgsmi_int_ring_push(&c->hostfifo, offs, k) : 0;
		if (pushed < 0) { /* a hostile FIFO index: the guest is cut off */
			c->alive = false;
			rc = -EPIPE;
			pushed = 0;
		}
		for (unsigned i = 0; i < k; i++) {
			if (i < (unsigned)pushed) {
				/* Freed by drain_acks when the guest acks it. */
				hgsmi_int_inflight_set(&c->posted, offs[i]);
				c->st.msgs_out++;
				c->st.bytes_out += lens[done + i];
			} else {
				hgsmi_heap_free(c->host_heap, offs[i]); /* not queued */
			}
		}
		done += (unsigned)pushed;
		if ((unsigned)pushed < k || rc < 0)
			break;
	}
	if (done)
		hgsmi_int_conn_raise_irq(c, HGSMI_HOSTFLAGS_COMMANDS_PENDING);
	return done ? (int)done : (rc < 0 ? rc : -EAGAIN);
}
