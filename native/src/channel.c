/* SPDX-License-Identifier: MIT */
/* channel.c - channel tables and running a C handler on a verified buffer. */
#include <errno.h>

#include "internal.h"

int hgsmi_int_channel_set(struct hgsmi_channel *table, uint8_t ch,
			  hgsmi_handler_fn fn, void *ctx)
{
	if (ch == HGSMI_CH_RESERVED || ch == HGSMI_CH_SETUP)
		return -EINVAL;
	if (table[ch].registered)
		return -EEXIST;
	table[ch] = (struct hgsmi_channel){.fn = fn, .ctx = ctx, .registered = true};
	return 0;
}

int hgsmi_int_channel_clear(struct hgsmi_channel *table, uint8_t ch)
{
	if (!table[ch].registered)
		return -ENOENT;
	table[ch] = (struct hgsmi_channel){0};
	return 0;
}

void hgsmi_int_channel_run(const struct hgsmi_channel *c, uint8_t *base,
			   struct hgsmi_msg *m)
{
	uint32_t reply = m->size;
	int rc = c->fn(c->ctx, m, base + m->data, &reply);

	/* A reply longer than the buffer's room would spill into the next
	 * block: refuse it rather than trust the handler. */
	if (rc >= 0 && reply > m->capacity)
		rc = -EOVERFLOW;
	m->status = rc < 0 ? rc : 0;
	m->size = rc < 0 ? 0 : reply;
}
