/* SPDX-License-Identifier: MIT */
/*
 * hgsmi.h - the public C API of libhgsmi.
 *
 * A host process and each guest process share one segment (the "VRAM"): by
 * default a sealed memfd the host passes over the control socket, or a named
 * POSIX shared-memory segment.  Buffers live in it; only offsets cross.  The guest rings a
 * doorbell, the host raises an IRQ; both are eventfds (or POSIX semaphores).
 *
 * Conventions, as in liburing:
 *  - every function returns >= 0 on success (a count, an offset, a size or 0)
 *    and -errno on failure.  The meanings are fixed:
 *      -ENOMEM     heap exhausted           -EAGAIN     ring full / nothing yet
 *      -ETIMEDOUT  the wait timed out       -EBADMSG    checksum mismatch
 *      -EPROTO     bad magic, ABI or index  -ERANGE     offset/size outside
 *      -EINVAL     misuse by the caller     -EPIPE      the peer is gone
 *      -ENOENT     channel not registered   -EACCES     uid not allowed
 *  - timeouts are `int timeout_ms`: -1 blocks, 0 only tries, as poll(2).
 *  - "Blocks:" in each comment says whether a call can sleep.
 *  - objects owned by the library are opaque; wire structs are in hgsmi/defs.h.
 *  - no function is thread-safe on the same object unless it says so; each
 *    side of a segment is one single-producer, single-consumer endpoint.
 */
#ifndef HGSMI_H
#define HGSMI_H

#include <stddef.h>
#include <stdint.h>

#include "hgsmi/defs.h"

#ifdef __cplusplus
extern "C" {
#endif

/* major.minor names the newest node of hgsmi.map (tests/test_ffi_build.py). */
#define HGSMI_VERSION_MAJOR 0
#define HGSMI_VERSION_MINOR 5
#define HGSMI_VERSION_PATCH 0

#ifndef HGSMI_API
#define HGSMI_API __attribute__((visibility("default")))
#endif

struct hgsmi_heap;  /* a private-metadata allocator over a range of offsets */
struct hgsmi_host;  /* a listening host: socket, channel table, its guests */
struct hgsmi_conn;  /* the host's view of one attached guest */
struct hgsmi_guest; /* an attached guest */

/*
 * One buffer as the receiver sees it after verification, or one completion as
 * its owner sees it.  Every field is a private copy: nothing is re-read from
 * shared memory after verification.
 */
struct hgsmi_msg {
	uint32_t offset;   /* buffer header offset: the handle */
	uint32_t data;     /* offset of the data from the segment base */
	uint32_t size;     /* request bytes; in a completion, the reply length */
	uint32_t capacity; /* bytes the reply may use, >= size */
	uint8_t channel;
	uint8_t flags;
	uint16_t info;
	int32_t status; /* completions: 0 or -errno */
	uint32_t guest; /* host side: the id of the guest that sent it */
};

/*
 * A channel handler in C.  `data` points at the buffer's data in the segment
 * (msg->size request bytes, room for msg->capacity).  Set *reply_len to the
 * bytes of reply left in place (default: msg->size).  Return 0, or -errno to
 * complete the buffer with that status.  The peer may rewrite `data` while
 * the handler runs: copy a field once before checking it.
 */
typedef int (*hgsmi_handler_fn)(void *ctx, const struct hgsmi_msg *msg,
				void *data, uint32_t *reply_len);

/* ==== Checksum and buffers (no I/O, never block) ========================= */

/* One-at-a-time hash over LE32(offset), the 16 header bytes, tail.reserved. */
HGSMI_API uint32_t hgsmi_checksum(uint32_t offset,
				  const struct hgsmi_buffer_header *header,
				  const struct hgsmi_buffer_tail *tail);

/*
 * Write a single (SEQ_SINGLE) buffer's header and tail at `offset` of `base`
 * and seal it with the checksum.  reply_cap > data_size sets F_REPLY_CAP.
 * The caller guarantees the block [offset, offset + 24 + max(data_size,
 * reply_cap)) lies in its own heap.  Returns 0 or -EINVAL.
 */
HGSMI_API int hgsmi_buffer_init(void *base, uint32_t offset, uint32_t data_size,
				uint8_t channel, uint16_t info, uint32_t reply_cap);

/*
 * Verify the buffer at `offset`, which must lie in the area [area_off,
 * area_off + area_size) of the segment at `base`.  Header and tail are copied
 * out first and only the copies are checked, in this order: alignment,
 * offset in area, data size (no overflow), flags and reserved bytes,
 * checksum.  On success fills *out (status 0) and returns 0.
 * Returns -EINVAL (misaligned), -ERANGE, -EPROTO (reserved/flags), -EBADMSG.
 */
HGSMI_API int hgsmi_buffer_verify(const void *base, uint32_t area_off,
				  uint32_t area_size, uint32_t offset,
				  struct hgsmi_msg *out);

/* ==== Heap: one owner, metadata in private memory ======================== */

#define HGSMI_HEAP_ALIGN 64 /* every block starts on a cache line */

struct hgsmi_heap_stats {
	uint64_t capacity;     /* bytes managed */
	uint64_t used;         /* bytes in allocated blocks */
	uint64_t peak;         /* high-water mark of used */
	uint64_t largest_free; /* largest block an allocation could get */
	uint64_t free_bytes;   /* capacity - used */
	uint64_t allocs;
	uint64_t frees;
	uint64_t failures; /* allocations refused */
	uint32_t used_blocks;
	uint32_t free_blocks;
};

/*
 * Manage offsets [base, base + size) (TLSF: O(1) alloc and free, good fit).
 * The heap never touches the memory it manages.  Blocks: base must be
 * HGSMI_HEAP_ALIGN-aligned.  Returns 0, -EINVAL or -ENOMEM (private memory).
 */
HGSMI_API int hgsmi_heap_create(uint32_t base, uint32_t size,
				struct hgsmi_heap **out);
HGSMI_API void hgsmi_heap_destroy(struct hgsmi_heap *heap);
/* Allocate >= size bytes; *offset gets the block start.  0, -ENOMEM, -EINVAL. */
HGSMI_API int hgsmi_heap_alloc(struct hgsmi_heap *heap, uint32_t size,
			       uint32_t *offset);
/* Free a block returned by alloc.  -EINVAL if it is not a live block. */
HGSMI_API int hgsmi_heap_free(struct hgsmi_heap *heap, uint32_t offset);
/* Usable bytes of the live block at offset, or -EINVAL. */
HGSMI_API int64_t hgsmi_heap_block_size(const struct hgsmi_heap *heap,
					uint32_t offset);
/* Largest size that one allocation can ever get (an empty heap's). */
HGSMI_API uint32_t hgsmi_heap_max_alloc(const struct hgsmi_heap *heap);
HGSMI_API void hgsmi_heap_stats(const struct hgsmi_heap *heap,
				struct hgsmi_heap_stats *out);
/* Walk every structure; 0 if consistent, -EFAULT (and a line on stderr) if not. */
HGSMI_API int hgsmi_heap_check(const struct hgsmi_heap *heap);
/* Free everything at once (reset after the peer died). */
HGSMI_API void hgsmi_heap_reset(struct hgsmi_heap *heap);

/* ==== Host =============================================================== */

struct hgsmi_host_config {
	const char *name;       /* instance: see HGSMI_INSTANCE_NAME_MAX */
	const char *runtime_dir; /* socket directory; NULL: $HGSMI_RUNTIME_DIR,
				    $XDG_RUNTIME_DIR/hgsmi, /tmp/hgsmi-<uid> */
	uint32_t segment_size;  /* bytes per guest segment; 0: 16 MiB (HGSMI_*_DEFAULT) */
	uint32_t ring_entries;  /* power of two; 0: 1024 */
	uint32_t guest_heap_percent; /* share of the heaps for the guest; 0: 50 */
	uint32_t backend;       /* HGSMI_BACKEND_*; 0: eventfd */
	uint32_t max_guests;    /* 0: 64 */
	uint32_t max_inflight;  /* guest buffers taken and not completed, per
				   guest (the rest wait in its ring); 0: ring_entries */
	uint32_t spin_us;       /* cap of the adaptive spin after serving, before
				   sleeping; 0: never spin.  Suggested:
				   HGSMI_SPIN_US_DEFAULT (the Python default) */
	uint32_t socket_mode;   /* 0: 0600 */
	const uint32_t *allowed_uids; /* NULL: only the host's own uid */
	uint32_t n_allowed_uids;
	/* -- 0.3: fields are only ever appended; zero means the default -- */
	uint32_t segment;      /* HGSMI_SEGMENT_*; 0: memfd */
	uint32_t max_message;  /* largest data_size a guest may submit (bigger:
				  completed with -EMSGSIZE); 0: the heap's */
	/*
	 * Doorbell wake-ups per second per guest (eventfd backend; the shared
	 * semaphore cannot tell guests apart).  Over it the host stops
	 * watching that doorbell for a 10 ms tick, then serves the ring.
	 * 0: HGSMI_DOORBELLS_PER_S_DEFAULT, HGSMI_UNLIMITED: no limit.
	 */
	uint32_t max_doorbells_per_s;
	/*
	 * -- 0.5: fair admission, per peer process (the pid SO_PEERCRED gives
	 * at accept).  Handshakes under way at once: over it a new connection
	 * is refused at accept (-ETOOMANYREFS); 0: HGSMI_PENDING_PER_PID_DEFAULT.
	 * Guests attached at once: over it an attach is refused (-EDQUOT);
	 * 0: max(16, max_guests / 4).  HGSMI_UNLIMITED: no cap.
	 */
	uint32_t max_pending_per_pid;
	uint32_t max_guests_per_pid;
	/*
	 * -- 0.5: also serve QEMU virtual machines: listen on this path as an
	 * ivshmem server (-chardev socket,path=...  -device ivshmem-doorbell,
	 * chardev=...,vectors=1).  Each VM that connects is one more guest: its
	 * own sealed memfd segment is the device's BAR2 (segment_size must then
	 * be a power of two), peer 0's vector 0 is its doorbell and its own
	 * vector 0 its IRQ (MSI-X).  Needs the memfd segment and the eventfd
	 * backend.  NULL: none.  See hgsmi_guest_attach_pci.
	 */
	const char *ivshmem_path;
};

/*
 * Where a guest's segment lives.  MEMFD (the default): an anonymous memfd,
 * sealed against shrinking and growing, passed to the guest over the socket;
 * nothing appears in /dev/shm and a guest cannot truncate the host's memory.
 * POSIX: a named segment in /dev/shm (shm_open), as the original; it trusts
 * the guest not to ftruncate it (which would SIGBUS the host), and a guest of
 * another allowed uid gets it fchown'ed.
 */
#define HGSMI_SEGMENT_MEMFD 1
#define HGSMI_SEGMENT_POSIX 2
#define HGSMI_UNLIMITED 0xffffffffu
/*
 * What a zero field of struct hgsmi_host_config means.  The Python binding
 * and its TOML config take their defaults from here (hgsmi/_wire.py), and
 * give 0 the same meaning.
 */
#define HGSMI_SEGMENT_SIZE_DEFAULT (16u << 20)
#define HGSMI_RING_ENTRIES_DEFAULT 1024u
#define HGSMI_GUEST_HEAP_PERCENT_DEFAULT 50u
#define HGSMI_MAX_GUESTS_DEFAULT 64u
#define HGSMI_SOCKET_MODE_DEFAULT 0600u
#define HGSMI_DOORBELLS_PER_S_DEFAULT 100000u
#define HGSMI_PENDING_PER_PID_DEFAULT 8u
/*
 * The adaptive spin's cap (spin_us) that the Python API and a NULL guest
 * config use.  The spin backs off by itself: it stops while the peer sleeps,
 * shrinks while spins do not pay off, and pauses after a preemption (the
 * CPUs are busy), so an idle or loaded machine pays nearly nothing for it.
 * In the config structs 0 means never spin, as it does in Python and TOML.
 */
#define HGSMI_SPIN_US_DEFAULT 200u

/*
 * Instance names: 1 to HGSMI_INSTANCE_NAME_MAX of [A-Za-z0-9_.-], not
 * starting with '.'; a longer one is -ENAMETOOLONG, a bad character -EINVAL.
 * The socket RUNTIME_DIR/NAME.sock must also fit sun_path (107 bytes and a
 * NUL): too long a runtime directory for the name is -ENAMETOOLONG too.
 * (Up to 0.5 the limit was 16 characters without '.'.)
 */
#define HGSMI_INSTANCE_NAME_MAX 64
/* Bytes hgsmi_shm_prefix() needs at most, the NUL included. */
#define HGSMI_SHM_PREFIX_MAX 24

/* Stats structs only ever grow at the end, so older callers stay correct. */
struct hgsmi_conn_stats {
	uint64_t msgs_in, bytes_in;   /* guest buffers served */
	uint64_t msgs_out, bytes_out; /* host buffers posted */
	uint64_t doorbells;       /* wake-ups taken on the doorbell */
	uint64_t irqs;            /* IRQs raised (eventfd writes) */
	uint64_t irqs_suppressed; /* IRQs skipped: the guest was awake */
	uint64_t errors_offset;   /* bad offset, alignment or size */
	uint64_t errors_checksum;
	uint64_t errors_protocol; /* reserved bytes, flags, ring indices */
	uint64_t errors_channel;  /* unregistered channel */
	uint64_t errors_handler;  /* handlers that returned an error */
	uint64_t errors_full;     /* completions that found the ring full */
	uint32_t guest_id;
	uint32_t epoch;
	uint32_t inflight_host; /* host buffers posted and not yet acked */
	uint32_t submit_depth;  /* entries waiting in the submit ring */
	struct hgsmi_heap_stats host_heap;
	/* -- 0.3 -- */
	uint64_t doorbells_throttled; /* doorbells ignored over max_doorbells_per_s */
	uint64_t errors_size;         /* buffers over max_message, failed -EMSGSIZE */
	uint32_t inflight_guest;      /* guest buffers taken and not yet completed */
	uint32_t inflight_guest_peak; /* never above max_inflight */
};

/*
 * The host's admission figures (since HGSMI_0.5): refusals by the limit hit,
 * and the handshakes under way.  Grows only at the end.
 */
struct hgsmi_host_stats {
	uint64_t refused_uid;             /* -EACCES: uid not allowed (at accept) */
	uint64_t refused_protocol;        /* -EPROTO: bad magic, ABI, kind, features */
	uint64_t refused_host_full;       /* -EUSERS: max_guests attached */
	uint64_t refused_guests_per_pid;  /* -EDQUOT: max_guests_per_pid attached */
	uint64_t refused_pending_per_pid; /* -ETOOMANYREFS: max_pending_per_pid, or
					     evicted from a full table */
	uint64_t refused_other;           /* out of memory or fds while attaching */
	uint64_t evicted_pending;         /* of refused_pending_per_pid: table full */
	uint64_t hello_timeouts;          /* no whole hello within 1 s */
	uint32_t pending;                 /* handshakes under way now */
	uint32_t pending_peak;
	uint32_t max_pending_per_pid;     /* the limits in force */
	uint32_t max_guests_per_pid;
	uint32_t max_doorbells_per_s;     /* per guest; HGSMI_UNLIMITED: none */
};

/*
 * Create the listening socket (mode 0600) for `cfg->name`.  A stale socket
 * or segment whose owner is dead is removed; a live host of the same name
 * gives -EADDRINUSE.  -EINVAL for a bad name, backend or ring size, or a
 * segment_size too small for the layout; -ENAMETOOLONG.  Blocks: no.
 */
HGSMI_API int hgsmi_host_create(const struct hgsmi_host_config *cfg,
				struct hgsmi_host **out);
/* Fail every guest (they see -EPIPE), unlink segments and socket, free. */
HGSMI_API void hgsmi_host_destroy(struct hgsmi_host *host);
/* Path of the control socket. */
HGSMI_API const char *hgsmi_host_socket_path(const struct hgsmi_host *host);
/* An fd that becomes readable when hgsmi_host_wait would return (epoll). */
HGSMI_API int hgsmi_host_fileno(const struct hgsmi_host *host);

/*
 * Register a channel.  fn != NULL: the library runs fn inside
 * hgsmi_host_poll/hgsmi_conn_recv for every verified buffer of the channel.
 * fn == NULL: the buffers are returned by hgsmi_conn_recv to the caller, who
 * completes them with hgsmi_conn_complete.  -EINVAL for channel 0 or 1,
 * -EEXIST if registered.  Unregistered channels are completed with -ENOENT.
 */
HGSMI_API int hgsmi_host_register(struct hgsmi_host *host, uint8_t channel,
				  hgsmi_handler_fn fn, void *ctx);
HGSMI_API int hgsmi_host_unregister(struct hgsmi_host *host, uint8_t channel);

#define HGSMI_EV_ACCEPT 0x1 /* a guest is waiting to attach */
#define HGSMI_EV_WORK 0x2   /* some guest may have work: drain them */
#define HGSMI_EV_HANGUP 0x4 /* some guest's socket closed: reap them */
/*
 * Wait for any guest: after a wait that returned work, spin (adaptive, up
 * to cfg spin_us) while some guest is awake; then announce sleep in every
 * guest's segment, re-check the rings, and sleep on the doorbells and
 * sockets.  Returns a mask of HGSMI_EV_*, 0 on timeout, or -errno.
 * Blocks: up to timeout_ms.
 */
HGSMI_API int hgsmi_host_wait(struct hgsmi_host *host, int timeout_ms);
/*
 * For an event loop (asyncio, libuv, epoll) that sleeps on hgsmi_host_fileno
 * itself instead of calling hgsmi_host_wait.  The cycle is: disarm, accept
 * if HGSMI_EV_ACCEPT, serve every guest (hgsmi_conn_recv/complete), arm; if
 * arm returns 1, go round again at once, else wait for the fd.
 *
 * hgsmi_host_arm: announce sleep in every guest's segment, full barrier,
 * re-check the rings.  Returns 1 if some guest already has work (nothing is
 * announced: serve, do not sleep), or 0 when armed: the next doorbell makes
 * the fd readable (semaphore backend: wakes hgsmi_host_doorbell_wait).
 * Blocks: no.
 *
 * hgsmi_host_disarm: withdraw the announcement and collect what woke the
 * loop: drain the doorbells, note attaches and hang-ups.  Returns a mask of
 * HGSMI_EV_* (HGSMI_EV_WORK also whenever a ring has entries), or -errno.
 * Blocks: no.
 */
HGSMI_API int hgsmi_host_arm(struct hgsmi_host *host);
HGSMI_API int hgsmi_host_disarm(struct hgsmi_host *host);
/*
 * Sleep until a doorbell rings: for the semaphore backend, which has no fd
 * to poll, on the shared doorbell semaphore (the fd still reports attaches
 * and hang-ups); for eventfds, until the fd is readable.  Returns 1 (the
 * next hgsmi_host_disarm reports HGSMI_EV_WORK), 0 on timeout or a signal,
 * or -errno.  Unlike every other call, it may run in another thread while
 * this one uses the host: it reads nothing the others change.  Call
 * hgsmi_host_destroy only after it returned.  Blocks: up to timeout_ms.
 */
HGSMI_API int hgsmi_host_doorbell_wait(struct hgsmi_host *host, int timeout_ms);
/*
 * Take one step of the handshakes under way and report its outcome.  New
 * connections are accepted into a table of pending ones (SO_PEERCRED taken
 * then) and wait for their hello in the epoll set, so a client that sends
 * nothing or half a hello delays nobody; each has one second to complete
 * it, else it is closed and reported as -ETIMEDOUT (the next call after its
 * deadline; hgsmi_host_wait wakes for it).  Admission is fair per peer
 * process: a uid off the allow-list is refused at accept (-EACCES), and so
 * is a process with max_pending_per_pid handshakes under way
 * (-ETOOMANYREFS); when all 256 slots are taken, the oldest of the
 * process holding most is refused (-ETOOMANYREFS) to make room.  A complete
 * hello is checked (ABI, features), then the guest limits: max_guests
 * (-EUSERS), max_guests_per_pid (-EDQUOT); the guest's segment, heaps,
 * rings and doorbells are created and passed.  Returns 0 (*out set, or NULL for a served stat
 * request), -EAGAIN when no handshake has an outcome now, -EPIPE for a
 * client that left before its hello, or the refusal.  Call it until -EAGAIN
 * after HGSMI_EV_ACCEPT.  Blocks: no.
 * A refused guest (-EACCES, -EPROTO, -EUSERS, -EDQUOT, -ETOOMANYREFS) is
 * told why in its welcome and closed.
 * A memfd segment needs nothing for an allowed guest of another uid (it gets
 * the fd); a posix one (0600) is fchown'ed to it (needs CAP_CHOWN, else
 * -EACCES).  With the semaphore backend, whose doorbell all guests share,
 * another uid is refused with -EACCES.
 * *out is NULL for a served stat request (see hgsmi_host_set_stat_reply).
 */
HGSMI_API int hgsmi_host_accept(struct hgsmi_host *host, struct hgsmi_conn **out);
/* The admission figures.  Since HGSMI_0.5. */
HGSMI_API void hgsmi_host_stats(const struct hgsmi_host *host, struct hgsmi_host_stats *out);
/* Guests attached now, and the i-th of them (0 <= i < count). */
HGSMI_API int hgsmi_host_conn_count(const struct hgsmi_host *host);
HGSMI_API struct hgsmi_conn *hgsmi_host_conn(const struct hgsmi_host *host, int i);
/*
 * One pass of the whole host: wait, accept, reap dead guests, and serve every
 * guest's buffers through the registered C handlers (buffers of channels
 * registered without one fail with -ENOSYS).  Returns the number of buffers
 * served, 0 on timeout, or -errno.  Blocks: up to timeout_ms.
 */
HGSMI_API int hgsmi_host_poll(struct hgsmi_host *host, int timeout_ms);
/* Stat requests are answered with these bytes (JSON by convention). */
HGSMI_API int hgsmi_host_set_stat_reply(struct hgsmi_host *host,
					const void *data, size_t len);

/* ---- one attached guest -------------------------------------------------- */

/* 1 while the guest's socket is open and the guest in good standing. */
HGSMI_API int hgsmi_conn_alive(const struct hgsmi_conn *conn);
/*
 * 1 once the host has cut the guest off (protocol errors, a hostile ring
 * index, a socket that spoke after its hello, hgsmi_conn_close); 0 while it
 * is alive or after it hung up on its own.
 */
HGSMI_API int hgsmi_conn_cut_off(const struct hgsmi_conn *conn);
HGSMI_API uint32_t hgsmi_conn_id(const struct hgsmi_conn *conn);
/* Base address of the guest's segment in this process, and its size. */
HGSMI_API void *hgsmi_conn_base(const struct hgsmi_conn *conn);
HGSMI_API uint32_t hgsmi_conn_size(const struct hgsmi_conn *conn);
/*
 * Drain and verify up to `max` buffers from the submit ring, and every host
 * ack.  Setup-channel buffers and channels with a C handler are served and
 * completed here; buffers that fail verification are counted and, where it
 * is safe, completed with their error.  Buffers for fn == NULL channels are
 * returned in out[] for the caller to complete.  Returns how many are in
 * out[], or -EPIPE if the guest is gone or was disconnected.  Blocks: no.
 */
HGSMI_API int hgsmi_conn_recv(struct hgsmi_conn *conn, struct hgsmi_msg *out,
			      unsigned max);
/*
 * Complete buffers: for each, write status and reply length (msg.size) into
 * the header and push the offset on the completion ring; one IRQ at the end,
 * unless the guest is awake.  Returns n, or -EINVAL if an offset is not in
 * the guest heap (then none is completed), or -EPIPE.  Only what went back
 * stops counting as held (stats inflight_guest, max_inflight).  Blocks: no.
 */
HGSMI_API int hgsmi_conn_complete(struct hgsmi_conn *conn,
				  const struct hgsmi_msg *msgs, unsigned n);
/*
 * Post a host command: allocate in the host heap, copy, seal, queue on the
 * host FIFO, raise the IRQ.  Returns the buffer offset, -ENOMEM (host heap
 * full; acks free it), -EAGAIN (FIFO full) or -EMSGSIZE.  Blocks: no.
 */
HGSMI_API int64_t hgsmi_conn_post(struct hgsmi_conn *conn, uint8_t channel,
				  uint16_t info, const void *data, uint32_t len);
/* Zero-copy post: alloc (fill the data at base + msg.data), then submit. */
HGSMI_API int hgsmi_conn_alloc(struct hgsmi_conn *conn, uint32_t size,
			       uint8_t channel, uint16_t info,
			       struct hgsmi_msg *out);
HGSMI_API int hgsmi_conn_submit(struct hgsmi_conn *conn, uint32_t offset);
/*
 * Copy mode in one call, fire and forget, as hgsmi_guest_send: alloc + copy
 * + seal + queue on the host FIFO for each of n messages of one channel, one
 * IRQ (skipped while the guest is awake).  Each host buffer goes back to the
 * host heap when the guest acks it (any host call takes the acks).  Returns
 * how many were queued (> 0); stops early on a full heap or FIFO or a
 * message too large, and returns -ENOMEM (host heap full; acks free it),
 * -EAGAIN (FIFO full), -EMSGSIZE, -EINVAL (channel 0) or -EPIPE if none was
 * queued.  Blocks: no.  Since HGSMI_0.4.
 */
HGSMI_API int hgsmi_conn_send(struct hgsmi_conn *conn, uint8_t channel,
			      uint16_t info, const void *const *datas,
			      const uint32_t *lens, unsigned n);
/* Post many buffers with one IRQ.  Returns how many were queued. */
HGSMI_API int hgsmi_conn_submit_many(struct hgsmi_conn *conn,
				     const uint32_t *offsets, unsigned n);
/* Free a host buffer that was allocated and never submitted. */
HGSMI_API int hgsmi_conn_free(struct hgsmi_conn *conn, uint32_t offset);
HGSMI_API void hgsmi_conn_stats(const struct hgsmi_conn *conn,
				struct hgsmi_conn_stats *out);
/*
 * Disconnect a guest (it sees -EPIPE): close its socket and doorbells,
 * unlink its segment, reclaim its host buffers, and free the conn: the
 * pointer is invalid when this returns (hgsmi_host_conn no longer lists it).
 */
HGSMI_API void hgsmi_conn_close(struct hgsmi_conn *conn);
/*
 * For views of the segment that outlive the connection: after this,
 * hgsmi_conn_close (or hgsmi_guest_detach) leaves the segment mapped at
 * its base, and the caller passes that base and size to hgsmi_unmap once
 * nothing uses them.  The memory stays what the peer last wrote; a view
 * never faults.  Returns 0 or -errno (hgsmi_unmap).
 */
HGSMI_API void hgsmi_conn_keep_mapping(struct hgsmi_conn *conn);
HGSMI_API void hgsmi_guest_keep_mapping(struct hgsmi_guest *guest);
HGSMI_API int hgsmi_unmap(void *base, uint32_t size);

/* ==== Guest ============================================================== */

struct hgsmi_guest_config {
	const char *runtime_dir; /* as for the host; NULL: the same defaults */
	uint32_t spin_us;        /* cap of the adaptive spin before sleeping on
				    the IRQ; 0: never spin.  A NULL config (and
				    the Python API) use HGSMI_SPIN_US_DEFAULT */
	int connect_timeout_ms;  /* 0: 2000 */
	/* > 0: wait up to this long for a host that is not there yet (no
	 * socket, or nobody listening on it), retrying every 10 ms; 0: -ENOENT
	 * at once.  Added in 0.1: zero-initialise the struct. */
	int wait_ms;
};

struct hgsmi_guest_stats {
	uint64_t calls, msgs_out, bytes_out; /* guest buffers submitted */
	uint64_t msgs_in, bytes_in;          /* host commands served */
	uint64_t doorbells;                  /* doorbells rung (writes) */
	uint64_t doorbells_suppressed;       /* skipped: the host was awake */
	uint64_t irqs;                       /* wake-ups taken on the IRQ */
	uint64_t errors;        /* host buffers that failed verify, bad completions */
	uint64_t remote_errors; /* sent (fire-and-forget) buffers the host failed */
	uint32_t guest_id;
	uint32_t epoch;
	uint32_t inflight; /* guest buffers submitted and not yet reaped */
	uint32_t backend;
	struct hgsmi_heap_stats guest_heap;
	/* acks that never reached the host's ack ring: it kept it full
	 * (-ETIMEDOUT), it is gone (-EPIPE) or its index is hostile (-EPROTO);
	 * recv's own acks (C handlers, bad buffers) included */
	uint64_t acks_dropped;
};

/*
 * Attach to the host `name` (or a socket path containing '/'): connect,
 * handshake, map the segment, check its header.  Returns 0, -ENOENT (no such
 * host), -EACCES, -EPROTO (ABI major differs), -ETIMEDOUT.  Blocks: up to
 * wait_ms for the host to appear, then up to connect_timeout_ms.
 */
HGSMI_API int hgsmi_guest_attach(const char *name,
				 const struct hgsmi_guest_config *cfg,
				 struct hgsmi_guest **out);
HGSMI_API void hgsmi_guest_detach(struct hgsmi_guest *guest);
/*
 * Inside a QEMU VM whose host serves an ivshmem socket (ivshmem_path):
 * attach through the ivshmem-doorbell PCI device `bdf` ("0000:00:04.0"; NULL
 * or "": the first 1af4:1110 device).  BAR2 (sysfs resource2) is mapped as
 * the segment and checked as a segment passed by fd is, BAR0 (resource0)
 * gives the doorbell: a store of (host peer 0 << 16 | vector 0) to the
 * Doorbell register at 0x0c.  The IRQ is polled: waits watch the host
 * flags' IRQ bit and the epoch (a host that dropped this VM bumps it:
 * -EPIPE), spinning 200 us then napping; hgsmi_guest_fileno gives
 * -EOPNOTSUPP (stats backend HGSMI_BACKEND_PCI_POLL).  Experimental, with
 * HGSMI_PCI_IRQ=vfio in the environment and the device bound to vfio-pci
 * (an IOMMU group: QEMU -M q35 -device intel-iommu, intel_iommu=on), VFIO
 * routes MSI-X vector 0 to an eventfd that waits sleep on and
 * hgsmi_guest_fileno returns (HGSMI_BACKEND_PCI_MSIX); under TCG the VM
 * froze after a few interrupts.  hgsmi_guest_sockfd is -1.
 * Every other guest call works unchanged.  Returns 0, -ENOENT (no such device), -EACCES (not root),
 * -EPROTO (not an hgsmi segment), -EINVAL.  Blocks: no.  Since the vm branch.
 */
#define HGSMI_BACKEND_PCI_POLL 3 /* stats only: an ivshmem VM guest that polls */
#define HGSMI_BACKEND_PCI_MSIX 4 /* stats only: one woken by MSI-X through VFIO */
HGSMI_API int hgsmi_guest_attach_pci(const char *bdf,
				     const struct hgsmi_guest_config *cfg,
				     struct hgsmi_guest **out);
HGSMI_API void *hgsmi_guest_base(const struct hgsmi_guest *guest);
HGSMI_API uint32_t hgsmi_guest_size(const struct hgsmi_guest *guest);
/* The IRQ eventfd (pollable), or -EOPNOTSUPP for the semaphore backend. */
HGSMI_API int hgsmi_guest_fileno(const struct hgsmi_guest *guest);
/* The control socket; readable with EOF when the host is gone. */
HGSMI_API int hgsmi_guest_sockfd(const struct hgsmi_guest *guest);
/* Register a handler for host commands (fn == NULL: returned by recv). */
HGSMI_API int hgsmi_guest_register(struct hgsmi_guest *guest, uint8_t channel,
				   hgsmi_handler_fn fn, void *ctx);
HGSMI_API int hgsmi_guest_unregister(struct hgsmi_guest *guest, uint8_t channel);

/*
 * Allocate a buffer of `size` request bytes with room for a reply of
 * `reply_cap` (0: size) in the guest heap.  Fill base + out->data, then
 * submit or call.  -ENOMEM (heap full), -EMSGSIZE (never fits).  Blocks: no.
 */
HGSMI_API int hgsmi_guest_alloc(struct hgsmi_guest *guest, uint32_t size,
				uint32_t reply_cap, uint8_t channel,
				uint16_t info, struct hgsmi_msg *out);
/* Free a guest buffer that is not in flight. */
HGSMI_API int hgsmi_guest_free(struct hgsmi_guest *guest, uint32_t offset);
/*
 * Seal and queue buffers on the submit ring with one doorbell (skipped when
 * the host is awake).  Returns how many were queued (fewer if the ring is
 * full), or -EPIPE.  Blocks: no.
 */
HGSMI_API int hgsmi_guest_submit(struct hgsmi_guest *guest,
				 const uint32_t *offsets, unsigned n);
/*
 * Copy mode in one call, fire and forget: alloc + copy + seal + queue for
 * each of n messages of one channel, one doorbell.  The library frees each
 * buffer when its completion comes back (reap, wait and alloc collect them;
 * failures count in remote_errors); reap never returns them, and stats
 * `inflight` reaches 0 when all are back.  Returns
 * how many were queued; stops early on a full heap or ring, and returns
 * -ENOMEM or -EAGAIN if none was queued.  Blocks: no.
 */
HGSMI_API int hgsmi_guest_send(struct hgsmi_guest *guest, uint8_t channel,
			       uint16_t info, const void *const *datas,
			       const uint32_t *lens, unsigned n);
/*
 * Pop up to max completions (offset, status, reply length in size).  The
 * buffers are the caller's again: read the reply, then hgsmi_guest_free.
 * Returns the count, or -EPIPE.  Blocks: no.
 */
HGSMI_API int hgsmi_guest_reap(struct hgsmi_guest *guest, struct hgsmi_msg *out,
			       unsigned max);
/*
 * Zero copy as a stream: loan up to n buffers of `size` bytes (one channel
 * and info) and write their header offsets to offs.  Fill each in place at
 * base + offs[i] + 16, then publish them.  Small buffers share one heap
 * block, as hgsmi_guest_send's do.  Returns how many were loaned (fewer
 * while the heap is short), or -ENOMEM (none), -EMSGSIZE, -EINVAL, -EPIPE.
 * Blocks: no.
 */
HGSMI_API int hgsmi_guest_loan(struct hgsmi_guest *guest, uint8_t channel,
			       uint16_t info, uint32_t size, unsigned n,
			       uint32_t *offs);
/*
 * Queue loaned buffers with one doorbell, fire and forget: the library frees
 * each when its completion comes back (as hgsmi_guest_send's; failures count
 * in remote_errors), so the caller neither reaps nor frees them.  Returns how
 * many were queued, a prefix of at most 64 (the rest stay loaned: call again
 * for them), or -EAGAIN (ring full),
 * -EINVAL (an offset that is not loaned), -EPIPE.  Blocks: no.
 */
HGSMI_API int hgsmi_guest_publish(struct hgsmi_guest *guest, const uint32_t *offs,
				  unsigned n);
/* Give back loaned buffers unpublished; -EINVAL if one was not loaned. */
HGSMI_API int hgsmi_guest_unloan(struct hgsmi_guest *guest, const uint32_t *offs,
				 unsigned n);
/*
 * Submit one buffer and wait for its completion (other completions that
 * arrive meanwhile are kept for hgsmi_guest_reap).  Fills *out and returns
 * the reply length, or the handler's -errno, -ETIMEDOUT, -EPIPE.  The buffer
 * is still the caller's to free.  Blocks: up to timeout_ms.
 */
HGSMI_API int hgsmi_guest_call_buffer(struct hgsmi_guest *guest, uint32_t offset,
				      int timeout_ms, struct hgsmi_msg *out);
/*
 * Synchronous call, copy mode: alloc, copy `len` bytes, submit, wait, copy
 * up to reply_cap bytes of reply to `reply`, free.  Returns the reply length
 * or -errno.  On -EIO (the handler failed) `reply` holds the reason the host
 * gave, NUL-terminated ("" if none).  Blocks: up to timeout_ms.
 */
HGSMI_API int hgsmi_guest_call(struct hgsmi_guest *guest, uint8_t channel,
			       uint16_t info, const void *data, uint32_t len,
			       void *reply, uint32_t reply_cap, int timeout_ms);
/*
 * Host commands: drain and verify up to max from the host FIFO.  Channels
 * with a C handler are served and acked here; unregistered channels and bad
 * buffers are acked with an error.  The rest are returned in out[]; ack them
 * with hgsmi_guest_ack.  Returns the count, or -EPIPE, -EPROTO (a hostile
 * FIFO index), or an error of its own acks (as hgsmi_guest_ack: the acks
 * that failed are counted in stats.acks_dropped).  Such an error met after
 * messages were placed in out[] does not lose them: the call returns their
 * count, takes nothing more, and the next recv (or poll) returns the error
 * and takes nothing.  Blocks: no, beyond its acks' wait for ring room.
 */
HGSMI_API int hgsmi_guest_recv(struct hgsmi_guest *guest, struct hgsmi_msg *out,
			       unsigned max);
/*
 * Hand host buffers back (status in msg.status); one doorbell.  Returns n.
 * If the host keeps the ack ring full, it waits (sleeping) up to 2 s, then
 * counts the acks left in stats.acks_dropped and returns -ETIMEDOUT; -EPIPE
 * if the host is gone, -EPROTO if its ack ring index is hostile (the acks
 * not sent counted likewise).  -EINVAL if an offset is not in the host heap:
 * then none is sent and none counted.  The *_timeout forms below wait up to
 * timeout_ms (-1: for ever; never less than 20 ms, so an honest host that
 * is a pass behind loses no ack).
 */
HGSMI_API int hgsmi_guest_ack(struct hgsmi_guest *guest,
			      const struct hgsmi_msg *msgs, unsigned n);
HGSMI_API int hgsmi_guest_ack_timeout(struct hgsmi_guest *guest,
				      const struct hgsmi_msg *msgs, unsigned n,
				      int timeout_ms);
/* hgsmi_guest_recv, whose own acks wait as hgsmi_guest_ack_timeout. */
HGSMI_API int hgsmi_guest_recv_timeout(struct hgsmi_guest *guest,
				       struct hgsmi_msg *out, unsigned max,
				       int timeout_ms);
/*
 * Wait for the IRQ: spin (adaptive, up to spin_us, while the host is
 * awake), then announce sleep, re-check completions and the host FIFO,
 * sleep, and ack the IRQ.  Completions of fire-and-forget sends
 * are collected (freed) here.  Returns 1 if something happened (completions
 * to reap or collected, host commands), 0 on timeout, -EPIPE if the host is
 * gone, -EPROTO if it broke the protocol (a hostile ring index, bytes on the
 * control socket after the welcome).  Blocks: up to timeout_ms.
 */
HGSMI_API int hgsmi_guest_wait(struct hgsmi_guest *guest, int timeout_ms);
/*
 * For an event loop that sleeps on hgsmi_guest_fileno itself instead of
 * calling hgsmi_guest_wait.  The cycle is: disarm, reap completions and
 * recv/ack host commands until none are left, arm; if arm returns 1, go
 * round again at once, else wait for the fd to become readable.
 *
 * hgsmi_guest_arm: announce sleep (guest_waiting), full barrier, ack an IRQ
 * that is still raised and re-check completions and the host FIFO, as
 * hgsmi_guest_wait does before it sleeps.  Returns 1 if work is ready (the
 * announcement is withdrawn: do not sleep), 0 when armed (the host's next IRQ
 * makes the fd readable; semaphore backend: wakes hgsmi_guest_irq_wait), or
 * -EPIPE / -EPROTO.  Completions of fire-and-forget sends are collected here.
 * Blocks: no.
 *
 * hgsmi_guest_disarm: withdraw the announcement, drain the IRQ eventfd and
 * ack the IRQ line.  Returns 1 if the IRQ had fired (counted in stats irqs),
 * 0 if not, -EPIPE if the host reset this guest.  Blocks: no.
 */
HGSMI_API int hgsmi_guest_arm(struct hgsmi_guest *guest);
HGSMI_API int hgsmi_guest_disarm(struct hgsmi_guest *guest);
/*
 * Sleep until the IRQ fires (eventfd or semaphore) or the host hangs up.
 * The rings are not looked at: pair it with hgsmi_guest_arm, for a waiter
 * thread when the semaphore backend leaves nothing to poll.  Returns 1 when
 * signalled, 0 on timeout or a signal, -EPIPE if the host is gone, -EPROTO if
 * it sent bytes on the control socket (the connection is over).  Unlike
 * every other call, it may run in another thread while this one uses the
 * guest: it reads nothing the others change.  Call hgsmi_guest_detach only
 * after it returned.  Blocks: up to timeout_ms.
 */
HGSMI_API int hgsmi_guest_irq_wait(struct hgsmi_guest *guest, int timeout_ms);
/*
 * Serve host commands through the C handlers until timeout; count served.
 * The acks share the deadline: -ETIMEDOUT if the host left no room for them.
 */
HGSMI_API int hgsmi_guest_poll(struct hgsmi_guest *guest, int timeout_ms);
/* Ask the host's setup channel (QUERY_CONF); *value gets the answer. */
HGSMI_API int hgsmi_guest_query_conf(struct hgsmi_guest *guest, uint32_t index,
				     uint32_t *value);
HGSMI_API void hgsmi_guest_stats(const struct hgsmi_guest *guest,
				 struct hgsmi_guest_stats *out);

/* ==== Misc =============================================================== */
/* A static string for an -errno of this API (strerror with our meanings). */
HGSMI_API const char *hgsmi_strerror(int err);
/* "major.minor.patch" of the library. */
HGSMI_API const char *hgsmi_version(void);
/*
 * What instance `name` creates in /dev/shm starts with this: "hgsmi-KEY."
 * for its POSIX segments, "sem.hgsmi-KEY." for its semaphores.  KEY is the
 * name when it has at most 16 characters and no '.', else its first 7
 * characters ('.' as '_'), '~' and 8 hex digits of a hash of the whole name,
 * so that it fits the welcome's HGSMI_NAME_MAX-byte fields.  A host removes
 * what carries its prefix when it starts (after checking that no live host
 * has its socket).  Returns the length written; -EINVAL or -ENAMETOOLONG for
 * a bad name, -ERANGE if `len` is below HGSMI_SHM_PREFIX_MAX and too small.
 * Blocks: no.  Since HGSMI_0.5_names.
 */
HGSMI_API int hgsmi_shm_prefix(const char *name, char *out, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* HGSMI_H */
