/* SPDX-License-Identifier: MIT */
/*
 * conn_send.c - hgsmi_conn_send: the host's batched copy-mode post, the
 * counterpart of hgsmi_guest_send (both are hgsmi_int_ep_send).  Many host
 * commands, one IRQ: per batch of HGSMI_BATCH, alloc + copy each (placed
 * against 4K aliasing), seal them together, one push on the host FIFO.
 * Buffers go back to the host heap when the guest acks them (drain_acks).
 */
#include <errno.h>

#include "internal.h"

static struct hgsmi_conn *conn_of(struct hgsmi_endpoint *ep)
{
	return hgsmi_container_of(ep, struct hgsmi_conn, ep);
}

/* Acks free host buffers: take them before allocating, so the heap has
 * room and reuses blocks still warm in the cache. */
static int send_reclaim(struct hgsmi_endpoint *ep)
{
	struct hgsmi_conn *c = conn_of(ep);

	hgsmi_int_conn_drain_acks(c);
	return c->alive ? 0 : -EPIPE;
}

static int send_push(struct hgsmi_endpoint *ep, const uint32_t *offs, unsigned k)
{
	struct hgsmi_conn *c = conn_of(ep);
	int pushed = hgsmi_int_ring_push(&c->hostfifo, offs, k);

	if (pushed < 0) { /* a hostile FIFO index: the guest is cut off */
		c->alive = false;
		return -EPIPE;
	}
	c->st.msgs_out += (unsigned)pushed;
	return pushed;
}

static void send_unsent(struct hgsmi_endpoint *ep, uint32_t off)
{
	hgsmi_heap_free(ep->heap, off);
}

static const struct hgsmi_ep_sender conn_sender = {
	.reclaim = send_reclaim, .push = send_push, .unsent = send_unsent};

int hgsmi_conn_send(struct hgsmi_conn *c, uint8_t channel, uint16_t info,
		    const void *const *datas, const uint32_t *lens, unsigned n)
{
	int rc;

	if (!c->alive)
		return -EPIPE;
	rc = hgsmi_int_ep_send(&c->ep, &conn_sender, channel, info, datas, lens, n);
	if (rc > 0)
		hgsmi_int_conn_raise_irq(c, HGSMI_HOSTFLAGS_COMMANDS_PENDING);
	return rc;
}
