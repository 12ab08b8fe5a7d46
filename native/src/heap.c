/* SPDX-License-Identifier: MIT */
/*
 * heap.c - TLSF (two-level segregated fit) over a range of segment offsets.
 *
 * The heap hands out offsets and never dereferences them: every byte of
 * bookkeeping lives in a private node array, one node per 64-byte granule,
 * so a peer scribbling over the segment cannot reach the allocator's state.
 * calloc'd pages of that array are only touched where blocks start.
 *
 * Sizes are counted in granules.  A size n maps to a first level fl (its bit
 * length, shifted so that all n < SL_COUNT share fl 0) and a second level sl
 * (the next SL_LOG2 bits), giving classes at most 1/16 wide.  alloc first
 * peeks at the head of the request's own class (the warm block of this size
 * freed last), then rounds the request up to the next class boundary, so
 * the head of any non-empty class at or above it fits: two ctz's.  A placed
 * alloc (hgsmi_int_heap_alloc_placed, for the copy paths' 4K aliasing) asks
 * for up to a page more and trims the leading gap back into the lists.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SL_LOG2 4
#define SL_COUNT (1u << SL_LOG2)
/*
 * A uint32_t range holds fewer than 2^26 granules: bit lengths up to 26.  A
 * rounded-up request can reach 27, one level past the end: find_free says no.
 */
#define FL_COUNT (26 - SL_LOG2 + 1)
#define GRAN_SHIFT 6
_Static_assert((1u << GRAN_SHIFT) == HGSMI_HEAP_ALIGN, "granule is the align");

#define NIL UINT32_MAX      /* no block; never a granule index */
#define FREE_BIT (1u << 31) /* in node.size; sizes stay below 2^26 */

struct node {
	uint32_t size;      /* granules | FREE_BIT; 0: not a block start */
	uint32_t prev_phys; /* granule index of the block before, or NIL */
	uint32_t next_free, prev_free; /* class list links, free blocks only */
};

struct hgsmi_heap {
	uint32_t base;
	uint32_t granules;
	struct node *nodes;
	uint32_t fl_map;
	uint32_t sl_map[FL_COUNT];
	uint32_t head[FL_COUNT][SL_COUNT];
	uint32_t used, peak; /* granules */
	uint32_t used_blocks, free_blocks;
	uint64_t allocs, frees, failures;
};

static inline uint32_t blk_size(const struct node *n)
{
	return n->size & ~FREE_BIT;
}

static inline int blk_free(const struct node *n)
{
	return (n->size & FREE_BIT) != 0;
}

static inline unsigned bit_len(uint32_t x)
{
	return 32u - (unsigned)__builtin_clz(x);
}

static void mapping(uint32_t n, unsigned *fl, unsigned *sl)
{
	if (n < SL_COUNT) {
		*fl = 0;
		*sl = n;
	} else {
		unsigned shift = bit_len(n) - 1 - SL_LOG2;
		*fl = shift + 1;
		*sl = (n >> shift) - SL_COUNT;
	}
}

static void insert_free(struct hgsmi_heap *h, uint32_t i, uint32_t size)
{
	struct node *n = &h->nodes[i];
	unsigned fl, sl;

	mapping(size, &fl, &sl);
	n->size = size | FREE_BIT;
	n->prev_free = NIL;
	n->next_free = h->head[fl][sl];
	if (n->next_free != NIL)
		h->nodes[n->next_free].prev_free = i;
	h->head[fl][sl] = i;
	h->sl_map[fl] |= 1u << sl;
	h->fl_map |= 1u << fl;
	h->free_blocks++;
}

static void remove_free(struct hgsmi_heap *h, uint32_t i)
{
	struct node *n = &h->nodes[i];
	unsigned fl, sl;

	mapping(blk_size(n), &fl, &sl);
	if (n->next_free != NIL)
		h->nodes[n->next_free].prev_free = n->prev_free;
	if (n->prev_free != NIL) {
		h->nodes[n->prev_free].next_free = n->next_free;
	} else {
		h->head[fl][sl] = n->next_free;
		if (n->next_free == NIL) {
			h->sl_map[fl] &= ~(1u << sl);
			if (!h->sl_map[fl])
				h->fl_map &= ~(1u << fl);
		}
	}
	n->size &= ~FREE_BIT;
	h->free_blocks--;
}

/* Point the block after [i, i + size) back at i, if there is one. */
static void link_next(struct hgsmi_heap *h, uint32_t i, uint32_t size)
{
	if (i + size < h->granules)
		h->nodes[i + size].prev_phys = i;
}

/*
 * Is i the start of a block?  Absorbed nodes are zeroed, but the physical
 * neighbours must also agree, so a stale node can never pass for a block.
 */
static int is_block(const struct hgsmi_heap *h, uint32_t i)
{
	uint32_t size = blk_size(&h->nodes[i]), p = h->nodes[i].prev_phys;

	if (!size || size > h->granules - i)
		return 0;
	if (p == NIL ? i != 0 : p >= i || blk_size(&h->nodes[p]) != i - p)
		return 0;
	return i + size == h->granules || h->nodes[i + size].prev_phys == i;
}

/* Granule index of the live (allocated) block at offset, or NIL. */
static uint32_t live_block(const struct hgsmi_heap *h, uint32_t offset)
{
	uint32_t i;

	if (offset < h->base || (offset - h->base) % HGSMI_HEAP_ALIGN)
		return NIL;
	i = (offset - h->base) >> GRAN_SHIFT;
	if (i >= h->granules || blk_free(&h->nodes[i]) || !is_block(h, i))
		return NIL;
	return i;
}

static void format(struct hgsmi_heap *h)
{
	memset(h->head, 0xff, sizeof(h->head)); /* all NIL */
	memset(h->sl_map, 0, sizeof(h->sl_map));
	h->fl_map = 0;
	h->used = 0;
	h->used_blocks = 0;
	h->free_blocks = 0;
	h->nodes[0].prev_phys = NIL;
	insert_free(h, 0, h->granules);
}

int hgsmi_heap_create(uint32_t base, uint32_t size, struct hgsmi_heap **out)
{
	struct hgsmi_heap *h;

	if (!out || base % HGSMI_HEAP_ALIGN || size < HGSMI_HEAP_ALIGN ||
	    (uint64_t)base + size > (uint64_t)1 << 32)
		return -EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->base = base;
	h->granules = size >> GRAN_SHIFT;
	h->nodes = hgsmi_int_table_alloc((size_t)h->granules * sizeof(*h->nodes));
	if (!h->nodes) {
		free(h);
		return -ENOMEM;
	}
	format(h);
	*out = h;
	return 0;
}

void hgsmi_heap_destroy(struct hgsmi_heap *h)
{
	if (!h)
		return;
	hgsmi_int_table_free(h->nodes, (size_t)h->granules * sizeof(*h->nodes));
	free(h);
}

/* The last size of n's class: every block of a higher class fits n. */
static uint32_t round_up(uint32_t n)
{
	if (n < SL_COUNT)
		return n;
	return n + (1u << (bit_len(n) - 1 - SL_LOG2)) - 1;
}

/* The first free block of class >= (fl, sl), or NIL. */
static uint32_t find_free(const struct hgsmi_heap *h, unsigned fl, unsigned sl)
{
	uint32_t map;

	if (fl >= FL_COUNT)
		return NIL;
	map = h->sl_map[fl] & (~0u << sl);
	if (!map) {
		map = fl + 1 < FL_COUNT ? h->fl_map & (~0u << (fl + 1)) : 0;
		if (!map)
			return NIL;
		fl = (unsigned)__builtin_ctz(map);
		map = h->sl_map[fl];
	}
	return h->head[fl][__builtin_ctz(map)];
}

/*
 * Take the free block i for n granules, the first `gap` of which go back to
 * the free lists (a placed allocation's leading trim), and the tail past n
 * too.  The block before i is in use (free blocks never adjoin), so the gap
 * is a valid free block of its own; the returned block still starts at its
 * header, so free-by-offset and is_block need nothing new.
 */
static uint32_t take(struct hgsmi_heap *h, uint32_t i, uint32_t gap, uint32_t n)
{
	uint32_t have;

	remove_free(h, i);
	have = blk_size(&h->nodes[i]);
	if (gap) {
		insert_free(h, i, gap);
		h->nodes[i + gap].prev_phys = i;
		i += gap;
		have -= gap;
		link_next(h, i, have); /* the block after now follows i */
	}
	if (have > n) {
		h->nodes[i + n].prev_phys = i;
		link_next(h, i + n, have - n);
		insert_free(h, i + n, have - n);
	}
	h->nodes[i].size = n;
	h->used += n;
	if (h->used > h->peak)
		h->peak = h->used;
	h->used_blocks++;
	h->allocs++;
	return i;
}

/* The head of n's own class: the block freed last there, or NIL. */
static uint32_t own_head(const struct hgsmi_heap *h, uint32_t n)
{
	unsigned fl, sl;

	mapping(n, &fl, &sl);
	return h->head[fl][sl];
}

/*
 * A free block of at least n granules, or NIL, in O(1).  First the head of
 * n's own class, if it fits: the lists are LIFO, so that is the block of
 * this size freed last, still warm in the cache.  Plain TLSF skips it
 * (it rounds the request up to the next class), and a stream of equal
 * messages then never reuses a freed block: it marches through the whole
 * heap and copies into cold memory (g2h 1 MiB: heap peak 31 of 32 MiB).
 * Then the head of the first class whose every block fits (two ctz's).
 */
static uint32_t fit(const struct hgsmi_heap *h, uint32_t n)
{
	uint32_t i = own_head(h, n);
	unsigned fl, sl;

	if (i != NIL && blk_size(&h->nodes[i]) >= n)
		return i;
	mapping(round_up(n), &fl, &sl);
	return find_free(h, fl, sl);
}

/* Request bytes to granules; 0 for a request that can never fit. */
static uint32_t granules_for(const struct hgsmi_heap *h, uint32_t size)
{
	uint64_t want = ((uint64_t)size + HGSMI_HEAP_ALIGN - 1) >> GRAN_SHIFT;

	return want > h->granules ? 0 : (uint32_t)want;
}

int hgsmi_heap_alloc(struct hgsmi_heap *h, uint32_t size, uint32_t *offset)
{
	uint32_t n, i;

	if (!h || !offset || !size)
		return -EINVAL;
	if (!(n = granules_for(h, size)) || (i = fit(h, n)) == NIL) {
		h->failures++;
		return -ENOMEM;
	}
	i = take(h, i, 0, n);
	*offset = h->base + (i << GRAN_SHIFT);
	return 0;
}

#define PAGE_GRANULES (HGSMI_PLACE_PAGE >> GRAN_SHIFT)
_Static_assert(HGSMI_PLACE_PAGE % HGSMI_HEAP_ALIGN == 0, "page of granules");

int hgsmi_int_heap_alloc_placed(struct hgsmi_heap *h, uint32_t size,
				uint32_t phase, uint32_t *offset)
{
	uint32_t n, i, at, gap;

	if (!h || !offset || !size || phase >= HGSMI_PLACE_PAGE ||
	    phase % HGSMI_HEAP_ALIGN)
		return -EINVAL;
	if (!(n = granules_for(h, size)))
		goto plain;
	/* The granule index, mod a page, at which offset % page == phase. */
	at = ((phase - h->base) % HGSMI_PLACE_PAGE) >> GRAN_SHIFT;
	/*
	 * The warm head of n's own class if the placed block fits in it with
	 * its leading gap; else room for the worst gap, so the first fitting
	 * block can host it.  Both O(1).
	 */
	i = own_head(h, n);
	if (i != NIL && blk_size(&h->nodes[i]) >= n &&
	    blk_size(&h->nodes[i]) - n >= (at - i) % PAGE_GRANULES)
		goto found;
	if (h->granules < PAGE_GRANULES || n > h->granules - (PAGE_GRANULES - 1) ||
	    (i = fit(h, n + PAGE_GRANULES - 1)) == NIL)
		goto plain;
found:
	gap = (at - i) % PAGE_GRANULES;
	i = take(h, i, gap, n);
	*offset = h->base + (i << GRAN_SHIFT);
	return 1;
plain:
	/* Tight heap: an unplaced block beats waiting for the host. */
	return hgsmi_heap_alloc(h, size, offset);
}

int hgsmi_heap_free(struct hgsmi_heap *h, uint32_t offset)
{
	uint32_t i, size, next;
	struct node *n;

	if (!h || (i = live_block(h, offset)) == NIL)
		return -EINVAL;
	n = &h->nodes[i];
	size = blk_size(n);
	h->used -= size;
	h->used_blocks--;
	h->frees++;

	next = i + size;
	if (next < h->granules && blk_free(&h->nodes[next])) {
		remove_free(h, next);
		size += blk_size(&h->nodes[next]);
		h->nodes[next] = (struct node){0};
	}
	if (n->prev_phys != NIL && blk_free(&h->nodes[n->prev_phys])) {
		uint32_t prev = n->prev_phys;

		remove_free(h, prev);
		size += blk_size(&h->nodes[prev]);
		*n = (struct node){0};
		i = prev;
	}
	link_next(h, i, size);
	insert_free(h, i, size);
	return 0;
}

int64_t hgsmi_heap_block_size(const struct hgsmi_heap *h, uint32_t offset)
{
	uint32_t i;

	if (!h || (i = live_block(h, offset)) == NIL)
		return -EINVAL;
	return (int64_t)blk_size(&h->nodes[i]) << GRAN_SHIFT;
}

uint32_t hgsmi_heap_max_alloc(const struct hgsmi_heap *h)
{
	return h ? h->granules << GRAN_SHIFT : 0;
}

/*
 * Every block of the highest non-empty class is larger than any block
 * below it, so only that one list is scanned.
 */
static uint32_t largest_free(const struct hgsmi_heap *h)
{
	uint32_t best = 0, i;
	unsigned fl;

	if (!h->fl_map)
		return 0;
	fl = bit_len(h->fl_map) - 1;
	for (i = h->head[fl][bit_len(h->sl_map[fl]) - 1]; i != NIL;
	     i = h->nodes[i].next_free)
		if (blk_size(&h->nodes[i]) > best)
			best = blk_size(&h->nodes[i]);
	return best;
}

void hgsmi_heap_stats(const struct hgsmi_heap *h, struct hgsmi_heap_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!h)
		return;
	out->capacity = (uint64_t)h->granules << GRAN_SHIFT;
	out->used = (uint64_t)h->used << GRAN_SHIFT;
	out->peak = (uint64_t)h->peak << GRAN_SHIFT;
	out->largest_free = (uint64_t)largest_free(h) << GRAN_SHIFT;
	out->free_bytes = out->capacity - out->used;
	out->allocs = h->allocs;
	out->frees = h->frees;
	out->failures = h->failures;
	out->used_blocks = h->used_blocks;
	out->free_blocks = h->free_blocks;
}

static int violation(const struct hgsmi_heap *h, uint32_t i, const char *what)
{
	if (i == NIL)
		fprintf(stderr, "hgsmi_heap_check: %s\n", what);
	else
		fprintf(stderr, "hgsmi_heap_check: %s (block at 0x%x)\n", what,
			h->base + (i << GRAN_SHIFT));
	return -EFAULT;
}

int hgsmi_heap_check(const struct hgsmi_heap *h)
{
	uint32_t i, prev = NIL, used = 0, used_blocks = 0, free_blocks = 0;
	uint32_t listed = 0;
	unsigned fl, sl;

	if (!h)
		return -EINVAL;
	for (i = 0; i < h->granules; i += blk_size(&h->nodes[i])) {
		const struct node *n = &h->nodes[i];

		if (!blk_size(n) || blk_size(n) > h->granules - i)
			return violation(h, i, "block size runs off the heap");
		if (n->prev_phys != prev)
			return violation(h, i, "wrong previous-block link");
		if (blk_free(n)) {
			if (prev != NIL && blk_free(&h->nodes[prev]))
				return violation(h, i, "two free blocks adjoin");
			free_blocks++;
		} else {
			used += blk_size(n);
			used_blocks++;
		}
		prev = i;
	}
	if (used != h->used || used_blocks != h->used_blocks ||
	    free_blocks != h->free_blocks)
		return violation(h, NIL, "counters disagree with the blocks");
	if (h->fl_map >> FL_COUNT)
		return violation(h, NIL, "first-level bitmap beyond its classes");

	for (fl = 0; fl < FL_COUNT; fl++) {
		if (!!(h->fl_map & (1u << fl)) != !!h->sl_map[fl])
			return violation(h, NIL, "first-level bitmap is wrong");
		if (h->sl_map[fl] >> SL_COUNT)
			return violation(h, NIL, "second-level bitmap overflow");
		for (sl = 0; sl < SL_COUNT; sl++) {
			uint32_t back = NIL;

			if (!!(h->sl_map[fl] & (1u << sl)) !=
			    (h->head[fl][sl] != NIL))
				return violation(h, NIL,
						 "second-level bitmap is wrong");
			for (i = h->head[fl][sl]; i != NIL;
			     back = i, i = h->nodes[i].next_free) {
				const struct node *n;
				unsigned f, s;

				if (i >= h->granules)
					return violation(h, NIL,
							 "free list leaves heap");
				n = &h->nodes[i];
				if (++listed > free_blocks)
					return violation(h, i,
							 "free lists hold too many");
				if (!blk_free(n) || !is_block(h, i))
					return violation(h, i,
							 "listed block is not free");
				if (n->prev_free != back)
					return violation(h, i,
							 "broken free-list link");
				mapping(blk_size(n), &f, &s);
				if (f != fl || s != sl)
					return violation(h, i,
							 "free block in wrong class");
			}
		}
	}
	if (listed != free_blocks)
		return violation(h, NIL, "free block missing from the lists");
	return 0;
}

void hgsmi_heap_reset(struct hgsmi_heap *h)
{
	uint32_t i, size;

	if (!h)
		return;
	/* Only block starts are non-zero; the whole array may be huge. */
	for (i = 0; i < h->granules; i += size) {
		size = blk_size(&h->nodes[i]);
		h->nodes[i] = (struct node){0};
	}
	format(h);
}
