/* SPDX-License-Identifier: MIT */
/*
 * inflight.c - which buffers of a heap are in the peer's hands.  A returned
 * offset is honoured only if it is here: an owner never frees or reuses a
 * buffer because the peer named it, which is what the original's host FIFO
 * lists guard against ("ignored invalid write to the host FIFO").
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

int hgsmi_int_inflight_init(struct hgsmi_inflight *f, uint32_t base, uint32_t size)
{
	uint32_t granules = size / HGSMI_HEAP_ALIGN + 1;

	f->words = (granules + 63) / 64;
	f->bits = hgsmi_int_table_alloc(f->words * sizeof(uint64_t));
	f->base = base;
	f->size = size;
	f->count = 0;
	return f->bits ? 0 : -ENOMEM;
}

void hgsmi_int_inflight_free(struct hgsmi_inflight *f)
{
	hgsmi_int_table_free(f->bits, f->words * sizeof(uint64_t));
	f->bits = NULL;
}
