/* SPDX-License-Identifier: MIT */
/*
 * internal.h - what the core's files share and nobody else sees: barriers,
 * the ring and notifier objects, the segment mapping, and the private
 * structs behind the opaque handles.  Cross-file functions are hgsmi_int_*
 * and hidden by the version script.
 */
#ifndef HGSMI_INTERNAL_H
#define HGSMI_INTERNAL_H

#include <semaphore.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "hgsmi.h"

#define HGSMI_INT __attribute__((visibility("hidden")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
/* The object that embeds member, from a pointer to that member. */
#define hgsmi_container_of(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

/*
 * Shared-memory access.  The peer may change any of these words at any time,
 * so each is read exactly once into a local (READ_ONCE) and checked there.
 * The __atomic builtins on plain uint32_t are what liburing uses; TSan
 * understands them.
 */
#define READ_ONCE(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define WRITE_ONCE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define full_fence() __atomic_thread_fence(__ATOMIC_SEQ_CST)

/*
 * One pass of a spin-wait.  It orders nothing: it only tells the core that
 * this is a spin loop, so a hyperthread sibling (or the vCPU's host) gets the
 * pipeline and the loop's exit costs no memory-order mis-speculation.  The
 * loads that the loop re-checks carry their own ordering.
 */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/* The semaphore backend cannot be polled with a socket: a wait sleeps in
 * slices this long and looks at the sockets between them. */
#define SEM_SLICE_MS 20

/* ---- rings: SPSC, u32 offsets, free-running indices ---------------------- */
struct hgsmi_ring {
	struct hgsmi_ring_header *hdr; /* in the segment */
	uint32_t *slots;               /* in the segment */
	uint32_t mask;  /* private copy: never re-read from the segment */
	uint32_t index; /* private: our tail (producer) or head (consumer) */
};

HGSMI_INT void hgsmi_int_ring_init(struct hgsmi_ring *r, void *base,
				   const struct hgsmi_region *region,
				   uint32_t entries, bool producer);
/* Producer: queue up to n; returns how many, or -EPROTO (hostile head). */
HGSMI_INT int hgsmi_int_ring_push(struct hgsmi_ring *r, const uint32_t *v,
				  unsigned n);
/* Consumer: take up to max; returns how many, or -EPROTO (hostile tail). */
HGSMI_INT int hgsmi_int_ring_pop(struct hgsmi_ring *r, uint32_t *out,
				 unsigned max);
/* Consumer: entries waiting (0 if the producer's index is hostile). */
HGSMI_INT uint32_t hgsmi_int_ring_pending(const struct hgsmi_ring *r);
/* Bytes a ring of `entries` needs in the segment. */
HGSMI_INT uint32_t hgsmi_int_ring_bytes(uint32_t entries);

/* ---- notifiers: the doorbell and the IRQ line ----------------------------- */
struct hgsmi_notify {
	uint32_t backend; /* HGSMI_BACKEND_* or HGSMI_INT_BACKEND_* */
	int fd;           /* eventfd (non-blocking), or -1 */
	sem_t *sem;       /* named semaphore, or NULL */
	char name[HGSMI_NAME_MAX]; /* semaphore name, for the owner's unlink */
	/* ---- a VM guest on an ivshmem device (guest_pci.c) ---- */
	volatile uint32_t *reg; /* MMIO: the Doorbell register; signal stores reg_value */
	uint32_t reg_value;
	void *map;              /* MMIO: the BAR0 mapping, unmapped on close */
	size_t map_len;
	const uint32_t *flags;  /* POLL: the host flags word; IRQ bit = signalled */
	const uint32_t *epoch;  /* POLL: the segment epoch; a change = -EPIPE */
	uint32_t epoch_seen;
	int extra_fds[3];       /* VFIO: container, group, device; closed with it */
	int n_extra;
};
/*
 * Notifiers of a VM guest (never on the wire): MMIO rings by a store to the
 * ivshmem Doorbell register; POLL waits by polling the level-triggered IRQ
 * bit of the host flags, for a guest with no interrupt it can sleep on.
 */
#define HGSMI_INT_BACKEND_MMIO 0x101u
#define HGSMI_INT_BACKEND_POLL 0x102u

HGSMI_INT int hgsmi_int_notify_create_eventfd(struct hgsmi_notify *n);
/* Create (owner: O_EXCL, mode) or open a named semaphore. */
HGSMI_INT int hgsmi_int_notify_sem(struct hgsmi_notify *n, const char *name,
				   bool create, unsigned mode);
HGSMI_INT int hgsmi_int_notify_signal(struct hgsmi_notify *n);
/*
 * Sleep until signalled, the socket `sockfd` hangs up (-EPIPE), or the
 * timeout (0).  Returns 1 when signalled; the notifier is drained.
 */
HGSMI_INT int hgsmi_int_notify_wait(struct hgsmi_notify *n, int sockfd,
				    int timeout_ms);
HGSMI_INT void hgsmi_int_notify_drain(struct hgsmi_notify *n);
/* Close; the owner also unlinks a named semaphore. */
HGSMI_INT void hgsmi_int_notify_close(struct hgsmi_notify *n, bool unlink);
/*
 * A guest's check of an fd the host passed as an eventfd: it must be one
 * (not a pipe, file or socket), not in semaphore mode; it is made
 * non-blocking.  0, or -EPROTO (the caller still owns and closes the fd).
 */
HGSMI_INT int hgsmi_int_eventfd_adopt(int fd);
/*
 * The guest's side of an accepted welcome without a socket (fds taken
 * over): what hgsmi_guest_attach runs after reading it.  For the fuzzers.
 */
HGSMI_INT int hgsmi_int_guest_adopt(const struct hgsmi_welcome *w, const int *fds,
				    int nfds, struct hgsmi_guest **out);

/* ---- per-guest tables -------------------------------------------------------- */
/*
 * Zeroed tables of one entry per heap granule (a heap's nodes, in-flight
 * bitmaps, slab maps): megabytes per guest, of which a guest touches a few
 * pages.  Big ones are a private anonymous mapping, whose pages become
 * resident only when written and go back to the kernel at munmap; calloc
 * would hand out reused heap memory and zero (touch) all of it.  Small ones
 * stay on malloc.  Free with the size they were allocated with.  NULL: ENOMEM.
 */
HGSMI_INT void *hgsmi_int_table_alloc(size_t bytes);
HGSMI_INT void hgsmi_int_table_free(void *p, size_t bytes);

/* ---- the adaptive spin (spin.c) ------------------------------------------- */
struct hgsmi_spin {
	uint64_t cap_ns;         /* spin_us; 0: never spin (also on one CPU) */
	uint64_t avg_ns;         /* average length of the spins that paid off */
	uint64_t budget_ns;      /* the next spin's length; 0: spent, see off_until */
	uint64_t off_until_ns;   /* no spin before this (a probe, or a backoff) */
	uint64_t retry_ns;       /* the next probe's delay once the budget is spent */
	uint64_t backoff_ns;     /* the last backoff after a preemption */
	uint64_t last_preempt_ns;
	uint64_t missed_start_ns; /* a spin ran out: its verdict waits for settle */
	uint64_t slept_start_ns;  /* this wait went to sleep: settle measures it */
	uint64_t sleep_avg_ns;    /* average wait that slept and got work; 0: none yet */
	uint64_t load_checked_ns; /* when /proc/loadavg was last read */
	bool busy;                /* then: more tasks runnable than CPUs, twice in a row */
	bool busy_seen;           /* the last reading said so (true before the first) */
	long nivcsw;              /* this thread's involuntary switches at the last gap */
	int ncpu;
	unsigned slow_run;         /* paying spins in a row slower than sleeping */
	uint64_t spins_paid, spins_missed, spins_failed, spins_preempted, spins_stolen; /* counts */
};
/*
 * Polled while spinning: >0 work is ready, 0 keep spinning, <0 stop (the
 * peer went to sleep: spinning cannot pay off, and says nothing of the next).
 */
typedef int (*hgsmi_spin_poll_fn)(void *ctx);
/* cap_us 0, or one online CPU: never spin. */
HGSMI_INT void hgsmi_int_spin_init(struct hgsmi_spin *s, uint32_t cap_us);
/* Spin for the current budget; 1 if poll found work, 0: go to sleep. */
HGSMI_INT int hgsmi_int_spin(struct hgsmi_spin *s, hgsmi_spin_poll_fn poll, void *ctx);
/* After the wait that spun: did work come (and how soon after the spin
 * began)?  Judges a spin that ran out; nothing otherwise. */
HGSMI_INT void hgsmi_int_spin_settle(struct hgsmi_spin *s, bool work);
/* The rules, for spin() and the unit test: how long the next spin may be,
 * and what a spin's outcome does to that. */
HGSMI_INT uint64_t hgsmi_int_spin_budget(const struct hgsmi_spin *s, uint64_t now);
HGSMI_INT void hgsmi_int_spin_paid(struct hgsmi_spin *s, uint64_t spun_ns, uint64_t now);
HGSMI_INT void hgsmi_int_spin_failed(struct hgsmi_spin *s, uint64_t now);
HGSMI_INT void hgsmi_int_spin_preempted(struct hgsmi_spin *s, uint64_t now);
/* This thread's involuntary context switches so far (-1: unknown): a gap in
 * the spinner's clock with none since the last is steal, not preemption. */
HGSMI_INT long hgsmi_int_involuntary_switches(void);

/* ---- sockets and time ------------------------------------------------------ */
/* 1 if the peer closed the socket, 0 if it is open, <0 on error. */
HGSMI_INT int hgsmi_int_sock_closed(int fd);
/*
 * A guest's look at its control socket, on which nothing may arrive after
 * the welcome: 0 if quiet, -EPIPE at EOF or on an error, -EPROTO if the
 * host sent bytes (drained, at most 1 KiB a call, so a caller that sees
 * the socket readable never spins on it).  Never blocks.
 */
HGSMI_INT int hgsmi_int_sock_check(int fd);
HGSMI_INT int hgsmi_int_runtime_dir(const char *given, char *out, size_t len);
HGSMI_INT int hgsmi_int_check_name(const char *name);
/* Characters of the key that stands for an instance in shm names (names.c). */
#define HGSMI_SHM_KEY_MAX 16
HGSMI_INT int hgsmi_int_shm_key(const char *name, char out[HGSMI_SHM_KEY_MAX + 1]);
/* Bytes for the runtime directory (NUL included) that leave room in
 * sun_path for "/NAME.sock": the bound hgsmi_int_runtime_dir() checks
 * before it makes the directory.  `name` has passed hgsmi_int_check_name. */
HGSMI_INT size_t hgsmi_int_socket_dir_max(const char *name);
/* DIR/NAME.sock into out; -ENAMETOOLONG if it does not fit len bytes. */
HGSMI_INT int hgsmi_int_socket_path(const char *dir, const char *name, char *out, size_t len);
HGSMI_INT uint64_t hgsmi_int_now_ns(void);
/* Remaining ms of a deadline (-1 forever); 0 once passed. */
HGSMI_INT int hgsmi_int_remaining_ms(int timeout_ms, uint64_t start_ns);
HGSMI_INT int hgsmi_int_send_fds(int sock, const void *buf, size_t len,
				 const int *fds, int nfds);
HGSMI_INT int hgsmi_int_recv_fds(int sock, void *buf, size_t len, int *fds,
				 int maxfds, int *nfds, int timeout_ms);
/*
 * Non-blocking: read what has arrived, up to len bytes; fds sent along are
 * closed.  Returns the bytes read, 0 at EOF, -EAGAIN or -errno.
 */
HGSMI_INT ssize_t hgsmi_int_recv_some(int sock, void *buf, size_t len);

/* ---- segment -------------------------------------------------------------- */
struct hgsmi_segment {
	uint8_t *base;
	uint32_t size;
	int fd;     /* a memfd until it is passed to the guest, else -1 */
	bool memfd; /* no name in /dev/shm: nothing to unlink or hand over */
	bool keep_mapping; /* close leaves base mapped: the caller unmaps */
	char name[HGSMI_NAME_MAX];
	/* validated private copies of the header's layout fields */
	struct hgsmi_region regions[HGSMI_REGION_COUNT];
	uint32_t ring_entries;
};

/*
 * Create and lay out a segment: a named POSIX one (memfd false), or a memfd
 * sealed against shrinking and growing, whose fd is left in seg->fd for the
 * caller to pass (name is then only its label).
 */
HGSMI_INT int hgsmi_int_segment_create(struct hgsmi_segment *seg,
				       const char *name, uint32_t size,
				       uint32_t ring_entries,
				       uint32_t guest_heap_percent,
				       uint32_t guest_id, uint32_t epoch,
				       uint32_t features, bool memfd);
/* 0 if a segment of these parameters has room for its layout, else -EINVAL. */
HGSMI_INT int hgsmi_int_segment_check_layout(uint32_t size, uint32_t ring_entries,
					     uint32_t guest_heap_percent);
/* Hand the segment (created 0600) to a guest of another uid: fchown. */
HGSMI_INT int hgsmi_int_segment_give(const struct hgsmi_segment *seg, uint32_t uid);
/* Map an existing segment and validate its header against `size`. */
HGSMI_INT int hgsmi_int_segment_open(struct hgsmi_segment *seg,
				     const char *name, uint32_t size);
/*
 * The same for a segment passed as an fd (taken over: closed in any case).
 * It must be sealed against shrinking, or the host could SIGBUS us.
 */
HGSMI_INT int hgsmi_int_segment_open_fd(struct hgsmi_segment *seg, int fd,
					const char *label, uint32_t size);
HGSMI_INT void hgsmi_int_segment_close(struct hgsmi_segment *seg, bool unlink);
/* Check a header's layout fields (also the fuzzers' entry point). */
HGSMI_INT int hgsmi_int_segment_validate(const struct hgsmi_segment_header *h,
					 uint32_t size,
					 struct hgsmi_segment *out);
/* Remove stale segments/semaphores of the instance with shm key `key`. */
HGSMI_INT int hgsmi_int_segment_cleanup(const char *key, bool all_stale);

/* Where the data of the buffer at off starts: right after its header. */
static inline uint32_t hgsmi_int_data_off(uint32_t off)
{
	return off + (uint32_t)sizeof(struct hgsmi_buffer_header);
}

static inline struct hgsmi_segment_header *
hgsmi_int_seg_hdr(const struct hgsmi_segment *seg)
{
	return (struct hgsmi_segment_header *)(void *)seg->base;
}

/* ---- offset bookkeeping: which buffers are in flight ---------------------- */
struct hgsmi_inflight {
	uint64_t *bits; /* one bit per HGSMI_HEAP_ALIGN granule of the heap */
	size_t words;   /* of bits, for hgsmi_int_table_free */
	uint32_t base, size;
	uint32_t count;
};
HGSMI_INT int hgsmi_int_inflight_init(struct hgsmi_inflight *f, uint32_t base,
				      uint32_t size);
HGSMI_INT void hgsmi_int_inflight_free(struct hgsmi_inflight *f);
/*
 * Mark / unmark; unmark returns false for an offset that is not in flight.
 * Inline: they run several times per message on both sides.
 */
static inline void hgsmi_int_inflight_set(struct hgsmi_inflight *f, uint32_t off)
{
	uint32_t g = (off - f->base) / HGSMI_HEAP_ALIGN;
	uint64_t bit = 1ull << (g % 64);

	if (!(f->bits[g / 64] & bit)) {
		f->bits[g / 64] |= bit;
		f->count++;
	}
}

static inline bool hgsmi_int_inflight_take(struct hgsmi_inflight *f, uint32_t off)
{
	uint32_t g;
	uint64_t bit;

	if (off < f->base || off - f->base >= f->size || (off - f->base) % HGSMI_HEAP_ALIGN)
		return false;
	g = (off - f->base) / HGSMI_HEAP_ALIGN;
	bit = 1ull << (g % 64);
	if (!(f->bits[g / 64] & bit))
		return false;
	f->bits[g / 64] &= ~bit;
	f->count--;
	return true;
}

/* ---- channel tables -------------------------------------------------------- */
struct hgsmi_channel {
	hgsmi_handler_fn fn;
	void *ctx;
	bool registered;
};
HGSMI_INT int hgsmi_int_channel_set(struct hgsmi_channel *table, uint8_t ch,
				    hgsmi_handler_fn fn, void *ctx);
/* Forget channel ch's handler: 0, or -ENOENT if none was registered. */
HGSMI_INT int hgsmi_int_channel_clear(struct hgsmi_channel *table, uint8_t ch);
/* Run a C handler on a verified buffer; fills status and reply length. */
HGSMI_INT void hgsmi_int_channel_run(const struct hgsmi_channel *c,
				     uint8_t *base, struct hgsmi_msg *m);
/*
 * hgsmi_checksum of n buffers at once: out[i] over offsets[i], headers[i]
 * and the tail word tail_reserved[i] (NULL: all zero).  Inputs are private
 * copies; the result equals the scalar function's for every input.
 */
HGSMI_INT void hgsmi_int_checksum_many(const uint32_t *offsets,
				       const struct hgsmi_buffer_header *headers,
				       const uint32_t *tail_reserved, unsigned n,
				       uint32_t *out);
/* The header hgsmi_buffer_init writes (unsealed: the checksum is the tail's). */
HGSMI_INT void hgsmi_int_buffer_header(struct hgsmi_buffer_header *h, uint32_t data_size,
				       uint8_t channel, uint16_t info, uint32_t reply_cap);
/*
 * Write n headers and sealed tails (as hgsmi_buffer_init) at offs[i]; the
 * caller has checked each block lies in its own heap.
 */
HGSMI_INT void hgsmi_int_buffer_seal_many(uint8_t *base, const uint32_t *offs,
					  const struct hgsmi_buffer_header *hdrs, unsigned n);
/*
 * hgsmi_buffer_verify of n offsets: rcs[i] and, where rcs[i] == 0, out[i]
 * are what hgsmi_buffer_verify(base, area_off, area_size, offs[i], &out[i])
 * returns, with each header and tail read from shared memory once.
 */
HGSMI_INT void hgsmi_int_buffer_verify_many(const uint8_t *base, uint32_t area_off,
					    uint32_t area_size, const uint32_t *offs,
					    unsigned n, struct hgsmi_msg *out, int *rcs);
/* Write a completion's status and reply length into the buffer header. */
HGSMI_INT void hgsmi_int_buffer_result(uint8_t *base, const struct hgsmi_msg *m);

#define HGSMI_BATCH 64 /* buffers handled per internal batch */

/* ---- endpoint.c: what the host and a guest do alike ---------------------- */
/*
 * One side of a segment, host or guest: the peer's buffers arrive on `in`
 * and go back on `back`; ours come from `heap`.  Rings, region and heap are
 * the side's own (set up once at attach); the endpoint only points at them.
 * What differs between the sides (counters, cutting a peer off, waiting for
 * room, queueing and waking) comes in through the hooks.
 */
enum hgsmi_ep_event { /* the peer's faults first, up to TOO_LARGE */
	HGSMI_EP_BAD_CHECKSUM,   /* verification: -EBADMSG */
	HGSMI_EP_BAD_HEADER,     /* verification: -EPROTO */
	HGSMI_EP_BAD_OFFSET,     /* verification: any other error */
	HGSMI_EP_TOO_LARGE,      /* above max_size: completed with -EMSGSIZE */
	HGSMI_EP_NO_HANDLER,     /* an unregistered channel: -ENOENT */
	HGSMI_EP_HANDLER_FAILED, /* a C handler's error status */
};

struct hgsmi_endpoint;
struct hgsmi_ep_ops {
	/* Count an event of recv's; false: the peer is cut off, take no more. */
	bool (*note)(struct hgsmi_endpoint *ep, enum hgsmi_ep_event what);
	/* Give back buffers recv served itself (hgsmi_int_ep_complete and the
	 * side's wake-up); <0 ends the recv with that error. */
	int (*complete)(struct hgsmi_endpoint *ep, const struct hgsmi_msg *msgs, unsigned n,
			void *arg);
	/* `back` is full with `chunk` of this push (and `left` of the whole
	 * call) not queued: 0 push again, >0 drop the chunk's, <0 give up. */
	int (*full)(struct hgsmi_endpoint *ep, unsigned chunk, unsigned left, void *arg);
	/* The setup channel, served in C (NULL: an ordinary channel). */
	void (*setup)(struct hgsmi_endpoint *ep, struct hgsmi_msg *m);
};

struct hgsmi_endpoint {
	uint8_t *base;
	struct hgsmi_ring *in, *back;
	struct hgsmi_region peer; /* the peer's heap: where its buffers must lie */
	struct hgsmi_heap *heap;  /* ours, which sends allocate from */
	struct hgsmi_inflight *owed; /* sent buffers freed when they come back */
	const struct hgsmi_channel *channels;
	uint32_t max_size; /* larger buffers get -EMSGSIZE; 0: no limit */
	uint32_t peer_id;  /* hgsmi_msg.guest of what recv returns */
	uint64_t *msgs_in, *bytes_in, *bytes_out; /* the side's counters */
	const struct hgsmi_ep_ops *ops;
};

/* Bounds of one recv. */
struct hgsmi_ep_bound {
	unsigned limit;  /* taken and not completed at most, held included */
	unsigned held;   /* taken by earlier calls, not completed yet */
	unsigned budget; /* ring entries taken this call at most */
};
/*
 * Take up to max of the peer's buffers from ep->in: each slot read once, the
 * batch verified at once (every header and tail read once), and what C
 * serves (bad and too large buffers, the setup channel, no handler, C
 * handlers) completed through ops->complete(arg), between batches; the rest
 * go to out, their count to *got.  0, or -EPROTO (a hostile index on `in`),
 * or complete's error; *got is set either way, and out[0..*got) are the
 * caller's also on an error.  Nothing taken is left unaccounted: the first
 * failed complete ends the call before another batch is taken, and what a
 * complete could not give back is its own to count.
 */
HGSMI_INT int hgsmi_int_ep_recv(struct hgsmi_endpoint *ep, struct hgsmi_msg *out, unsigned max,
				const struct hgsmi_ep_bound *b, void *arg, unsigned *got);
/*
 * Give n of the peer's buffers back on ep->back: status and reply length
 * written into each header, which must lie in the peer's heap (else
 * -EINVAL, checked for all n before any goes back), the offsets pushed a
 * batch at a time; a full ring asks ops->full(arg).  Returns n, -EINVAL,
 * -EPROTO (a hostile index on `back`) or full's error.  *went is set on
 * every return: msgs[0..*went) are no longer the caller's (pushed, or
 * dropped when full said so), the rest never reached `back` (all n on
 * -EINVAL).  Waking the peer is the caller's.
 */
HGSMI_INT int hgsmi_int_ep_complete(struct hgsmi_endpoint *ep, const struct hgsmi_msg *msgs,
				    unsigned n, void *arg, unsigned *went);

/* How a side queues what hgsmi_int_ep_send fills. */
struct hgsmi_ep_sender {
	/* Take back what the peer returned, before each batch: 0, or <0 to stop. */
	int (*reclaim)(struct hgsmi_endpoint *ep);
	bool reclaim_when_full; /* and once more when the heap has no block */
	/* Optional: a batch some cheaper way (offs, unsealed hdrs, data copied);
	 * how many, 0 for none. */
	unsigned (*batch)(struct hgsmi_endpoint *ep, uint8_t channel, uint16_t info,
			  const void *const *datas, const uint32_t *lens, unsigned avail,
			  uint32_t *offs, struct hgsmi_buffer_header *hdrs);
	/* Queue k sealed buffers: how many went, or <0 (nothing went). */
	int (*push)(struct hgsmi_endpoint *ep, const uint32_t *offs, unsigned k);
	/* A buffer that was not queued: ours again. */
	void (*unsent)(struct hgsmi_endpoint *ep, uint32_t off);
};
/*
 * Copy n buffers out, a batch at a time: alloc (placed against 4K aliasing),
 * copy, seal the batch together, push; each queued buffer goes in ep->owed.
 * Returns how many were queued (a prefix), or, if none, -EINVAL (reserved
 * channel), -EMSGSIZE, -ENOMEM, a hook's error, or -EAGAIN (no room).
 * Waking the peer is the caller's.
 */
HGSMI_INT int hgsmi_int_ep_send(struct hgsmi_endpoint *ep, const struct hgsmi_ep_sender *s,
				uint8_t channel, uint16_t info, const void *const *datas,
				const uint32_t *lens, unsigned n);

/* ---- the private structs behind the handles -------------------------------- */
struct hgsmi_conn {
	struct hgsmi_host *host;
	struct hgsmi_segment seg;
	struct hgsmi_heap *host_heap;
	struct hgsmi_inflight posted; /* host buffers on the FIFO, not acked */
	struct hgsmi_ring submit, gcomplete, hostfifo, hostack;
	struct hgsmi_endpoint ep; /* submit in, gcomplete back, host heap out */
	struct hgsmi_notify doorbell, irq;
	bool own_doorbell; /* false when it is the host's shared semaphore */
	int sock;
	bool alive;
	bool left; /* the guest hung up while in good standing: not cut off */
	uint32_t id, epoch;
	uint32_t errors_since_reset;
	uint32_t held; /* guest buffers handed to the caller, not yet completed */
	/* Doorbell rate limit (GCRA): credit in ns, refilled by elapsed time. */
	uint64_t db_credit_ns, db_last_ns;
	uint64_t throttle_until_ns; /* doorbell ignored until then; 0: not */
	int32_t pid; /* the peer process (SO_PEERCRED at accept): its guest cap */
	struct hgsmi_conn_stats st;
	struct hgsmi_conn *next;
};

/* An accepted socket whose hello has not all arrived yet. */
struct hgsmi_pending {
	int fd;
	uint32_t got;         /* bytes of hello so far */
	uint64_t deadline_ns; /* dropped then */
	uint32_t uid;         /* SO_PEERCRED at accept */
	int32_t pid;          /* SO_PEERCRED at accept: whose share it counts in */
	struct hgsmi_hello hello;
};
/*
 * Handshakes under way at once, all peers together: room for 32 processes
 * at their default cap of 8.  Full, the oldest of the process holding the
 * most is refused to make room: a newcomer is never refused for others.
 */
#define HGSMI_PENDING_MAX 256

struct hgsmi_host {
	struct hgsmi_host_config cfg;
	char name[HGSMI_INSTANCE_NAME_MAX + 1];
	char key[HGSMI_SHM_KEY_MAX + 1]; /* stands for name in shm names */
	char sock_path[108];
	int listen_fd;
	int epfd;
	struct hgsmi_notify sem_doorbell; /* semaphore backend: one for all */
	struct hgsmi_channel channels[HGSMI_NUMBER_OF_CHANNELS];
	struct hgsmi_conn *conns;
	int n_conns;
	struct hgsmi_pending pending[HGSMI_PENDING_MAX];
	unsigned n_pending;
	struct hgsmi_host_stats adm; /* refusals by reason; pending counts filled on read */
	int timer_fd; /* fires at the next hello deadline, throttle's or pause's end */
	uint64_t accept_paused_until_ns; /* out of fds: listen fd unwatched till then */
	struct hgsmi_spin spin;          /* the post-serve spin (hgsmi_host_wait) */
	bool worked;                     /* the last wait returned work: spin on the next */
	uint32_t next_id, epoch;
	uint32_t *uids;
	uint32_t n_uids;
	void *stat_reply;
	size_t stat_len;
	unsigned busy_passes; /* hgsmi_host_wait returns without epoll while busy */
	int doorbell_seen; /* hgsmi_host_doorbell_wait (another thread) woke */
	int ivshmem_fd;    /* listening ivshmem-server socket, or -1 */
	char ivshmem_path[108];
};

/* ---- ivshmem server (ivshmem.c): QEMU VMs as guests ------------------------ */
/* Listen on cfg.ivshmem_path (checks size, backend, segment kind). */
HGSMI_INT int hgsmi_int_ivshmem_listen(struct hgsmi_host *host);
HGSMI_INT void hgsmi_int_ivshmem_close(struct hgsmi_host *host);
/* Attach one waiting VM: 0 (*out set), -EAGAIN if none waits, or -errno. */
HGSMI_INT int hgsmi_int_ivshmem_accept(struct hgsmi_host *host, struct hgsmi_conn **out);
/* Watch a new conn's doorbell and socket and list it (host.c). */
HGSMI_INT int hgsmi_int_host_add_conn(struct hgsmi_host *host, struct hgsmi_conn *c);
/* Is this uid on the allow-list (host_accept.c)? */
HGSMI_INT bool hgsmi_int_host_uid_allowed(const struct hgsmi_host *host, uint32_t uid);

/* ---- the host's three files: host.c, host_accept.c, host_loop.c ----------- */
/*
 * epoll data: small constants for the host's own fds; a conn pointer (16-byte
 * aligned, never small) for its doorbell, with HGSMI_EP_SOCK set for its socket.
 */
#define HGSMI_EP_LISTEN 0u
#define HGSMI_EP_PENDING 2u /* some connection's hello: look at the table */
#define HGSMI_EP_TIMER 4u
#define HGSMI_EP_SOCK 1u
/* Connections one accept step takes from the backlog, and accepts one poll
 * pass makes: a flood of them cannot hold the loop in accept4 while hellos
 * and guests wait. */
#define HGSMI_ACCEPT_BATCH 64
/* Watch fd for input in the epoll set, with this data: 0 or -errno (host_loop.c). */
HGSMI_INT int hgsmi_int_epoll_add(int epfd, int fd, uint64_t data);
/* Set the timer to the next hello deadline, throttle's or accept pause's end
 * (host_loop.c); the accept table calls it whenever that table changes. */
HGSMI_INT void hgsmi_int_host_rearm_timer(struct hgsmi_host *host);
/* Bind and listen on host->sock_path: -EADDRINUSE while a live host answers
 * there, a dead one's socket and segments removed first (host_accept.c). */
HGSMI_INT int hgsmi_int_host_listen(struct hgsmi_host *host);
/*
 * The IRQ of an ivshmem device bound to vfio-pci (guest_vfio.c): MSI-X
 * vector 0 routed to a new eventfd, which *irq becomes (eventfd backend).
 * -ENODEV if the device is not bound to vfio-pci: the caller polls.
 */
HGSMI_INT int hgsmi_int_vfio_irq(const char *devdir, const char *bdf,
				 struct hgsmi_notify *irq);
/* A guest over a segment already mapped and two notifiers (guest.c). */
HGSMI_INT int hgsmi_int_guest_create_mapped(const struct hgsmi_segment *seg,
					    const struct hgsmi_notify *doorbell,
					    const struct hgsmi_notify *irq,
					    uint32_t spin_us, struct hgsmi_guest **out);

HGSMI_INT int hgsmi_int_conn_create(struct hgsmi_host *host, int sock,
				    uint32_t features, struct hgsmi_conn **out,
				    struct hgsmi_welcome *w, int *fds, int *nfds);
HGSMI_INT void hgsmi_int_conn_destroy(struct hgsmi_conn *conn);
/* The four rings and the endpoint over conn->seg, once host, id and host_heap
 * are set (conn_create; the fuzzers build a conn over an image with it). */
HGSMI_INT void hgsmi_int_conn_rings(struct hgsmi_conn *conn);
HGSMI_INT bool hgsmi_int_conn_pending(const struct hgsmi_conn *conn);
/* Is a doorbell of this guest within its rate?  Takes a token if so. */
HGSMI_INT bool hgsmi_int_conn_doorbell_ok(struct hgsmi_conn *conn, uint64_t now_ns);
/* Set reason | IRQ in the host flags; pulse the line if the guest sleeps. */
HGSMI_INT void hgsmi_int_conn_raise_irq(struct hgsmi_conn *conn, uint32_t reason);
/* Take the guest's acks: free the host buffers they name that were posted. */
HGSMI_INT void hgsmi_int_conn_drain_acks(struct hgsmi_conn *conn);

/* ---- heap placement ------------------------------------------------------ */
/*
 * Like hgsmi_heap_alloc, but place the block so that offset % HGSMI_PLACE_PAGE
 * == phase (a multiple of HGSMI_HEAP_ALIGN) when a free block can host it
 * with its leading gap, which goes back to the free lists.  Returns 1 placed,
 * 0 not placed (a plain block: the heap is too tight), -ENOMEM, -EINVAL.
 */
#define HGSMI_PLACE_PAGE 4096u
/*
 * 4K aliasing: on this CPU (AMD EPYC Zen 3, KVM, glibc 2.36) a memcpy whose
 * destination lies 1..31 bytes above its source modulo 4096 runs 10-15x
 * slower from just above 2 KiB to 256 KiB (64 KiB: 2-3 GB/s at +8..+24
 * against 30-44 GB/s anywhere in -64..0; 2049 B: unaffected; 2304 B: 3 against
 * 35 GB/s; 512 KiB and 1 MiB: unaffected).  Copies into a fresh buffer of more
 * than HGSMI_PLACE_MIN bytes therefore place it so that the data (header +
 * 16) lands 0..63 bytes *below* the source modulo a page: a store to dst[i]
 * never aliases the soon-following loads of src[i + k].  Smaller copies take
 * any block and waste nothing.
 *
 * An Intel Xeon (Ice Lake, glibc's evex rep-movsb memmove; issue 13) has a
 * milder form, so placement stays on everywhere: with the data 16 bytes
 * past a block, as here, copies of 3-16 KiB run 2-3x slower (50-73 against
 * 98-200 GB/s, best of 5) when it lands 48..~900 bytes above the source mod
 * a page, and the placed window is among the fastest.  From 64 KiB (L2 and
 * L3 bound) no phase is slow: there placement neither helps nor costs
 * (docs/performance.md, "Bulk copies").
 */
#define HGSMI_PLACE_MIN 2048u

/* The block phase that puts the data 0..63 bytes below src mod a page.  The
 * segment is mapped page-aligned, so an offset's phase is its address's. */
static inline uint32_t hgsmi_int_copy_phase(const void *src)
{
	uintptr_t d = (uintptr_t)src - sizeof(struct hgsmi_buffer_header);

	return (uint32_t)(d & (HGSMI_PLACE_PAGE - 1) & ~(uintptr_t)(HGSMI_HEAP_ALIGN - 1));
}
HGSMI_INT int hgsmi_int_heap_alloc_placed(struct hgsmi_heap *heap, uint32_t size,
					  uint32_t phase, uint32_t *offset);

/*
 * A heap block of `bytes` for a buffer into which the caller copies `size`
 * bytes from src (NULL: no copy): placed against 4K aliasing when the copy
 * is large enough to suffer from it.  0 or hgsmi_heap_alloc's -errno.  One
 * rule for both senders (guest send, host post/send).
 */
static inline int hgsmi_int_heap_alloc_copy(struct hgsmi_heap *heap, uint32_t bytes,
					    const void *src, uint32_t size, uint32_t *off)
{
	if (src && size > HGSMI_PLACE_MIN) {
		int rc = hgsmi_int_heap_alloc_placed(heap, bytes, hgsmi_int_copy_phase(src), off);

		return rc < 0 ? rc : 0;
	}
	return hgsmi_heap_alloc(heap, bytes, off);
}

#define HGSMI_ERROR_LIMIT 1024 /* protocol errors before a guest is cut off */
/* A throttled doorbell is ignored this long; also the rate limit's burst. */
#define HGSMI_THROTTLE_TICK_NS 10000000ull

#endif /* HGSMI_INTERNAL_H */
