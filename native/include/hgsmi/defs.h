/* SPDX-License-Identifier: MIT */
/*
 * hgsmi/defs.h - everything that crosses a process boundary: the HGSMI buffer
 * wire format, the segment header, the ring layout and the control-socket
 * handshake.  All fields are fixed-width little-endian and packed; shared
 * memory never holds a pointer, only uint32_t offsets from the segment base.
 *
 * Every struct here has its size asserted at the bottom of this file, because
 * a peer built by another compiler must agree byte for byte.
 */
#ifndef HGSMI_DEFS_H
#define HGSMI_DEFS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- ABI version of the segment layout and the handshake ---------------- */
#define HGSMI_ABI_MAJOR 1 /* a different major is refused with -EPROTO */
#define HGSMI_ABI_MINOR 1 /* a newer minor keeps working; 1: HGSMI_F_SEGMENT_FD */

#define HGSMI_OFFSET_VOID 0xffffffffu /* "no buffer", as in the original */

/* ---- The buffer (HGSMIBUFFERHEADER + data + HGSMIBUFFERTAIL) -------------- */
#define HGSMI_BUFFER_HEADER_F_SEQ_MASK 0x03u /* sequences: reserved, must be 0 */
/*
 * Extension: the union carries the reply capacity in u0 (u1 stays 0), so a
 * call can be answered with more bytes than it sent.  Without this flag the
 * union must be zero, as the original writes it.
 */
#define HGSMI_BUFFER_HEADER_F_REPLY_CAP 0x10u
#define HGSMI_BUFFER_HEADER_F_KNOWN (HGSMI_BUFFER_HEADER_F_REPLY_CAP)

struct hgsmi_buffer_header {
	uint32_t data_size;    /* bytes of data that follow the header */
	uint8_t flags;         /* HGSMI_BUFFER_HEADER_F_* */
	uint8_t channel;       /* HGSMI_CH_* */
	uint16_t channel_info; /* command code, opaque to the transport */
	/*
	 * The original's 8-byte union.  Zero on submit (or the reply capacity, see
	 * F_REPLY_CAP).  On completion the receiver overwrites it with the result:
	 * u0 = status (int32_t, 0 or -errno), u1 = reply length.  The checksum is
	 * no longer valid then, which is fine: the buffer is back with its owner.
	 */
	uint32_t u0;
	uint32_t u1;
};

struct hgsmi_buffer_tail {
	uint32_t reserved; /* must be 0 */
	uint32_t checksum; /* one-at-a-time over LE32(offset) | header | reserved */
};

#define HGSMI_BUFFER_OVERHEAD                                                  \
	(sizeof(struct hgsmi_buffer_header) + sizeof(struct hgsmi_buffer_tail))

/* ---- Channels ------------------------------------------------------------ */
#define HGSMI_CH_RESERVED 0x00 /* never valid */
#define HGSMI_CH_SETUP 0x01    /* setup: QUERY_CONF, HOST_FLAGS_LOCATION */
#define HGSMI_CH_ECHO 0x02     /* built-in: reply with the request */
#define HGSMI_CH_SINK 0x03     /* built-in: discard and count */
#define HGSMI_CH_BLOB 0x04     /* built-in: blob store and fetch */
#define HGSMI_CH_BUILTIN_LAST 0x0f
#define HGSMI_CH_USER_FIRST 0x10 /* 0x10..0xff are for users */
#define HGSMI_NUMBER_OF_CHANNELS 256

/* Setup channel command codes (channel_info) */
#define HGSMI_CC_HOST_FLAGS_LOCATION 0 /* reply: struct hgsmi_buffer_location */
#define HGSMI_CC_QUERY_CONF 1          /* payload: struct hgsmi_conf32 */

/* QUERY_CONF indices */
#define HGSMI_CONF_GUEST_HEAP_SIZE 0
#define HGSMI_CONF_HOST_HEAP_SIZE 1
#define HGSMI_CONF_MAX_MESSAGE 2 /* largest data_size a heap can hold */
#define HGSMI_CONF_RING_ENTRIES 3
#define HGSMI_CONF_ABI_VERSION 4 /* major << 16 | minor */
#define HGSMI_CONF_MAX_INFLIGHT 5
#define HGSMI_CONF_ECHO 0xffffffffu /* liveness probe: value = index */

struct hgsmi_conf32 {
	uint32_t index;
	uint32_t value; /* filled in by the host; UINT32_MAX if unknown */
};

struct hgsmi_buffer_location {
	uint32_t offset;
	uint32_t size;
};

/* ---- Host flags: the level-triggered IRQ's reasons ------------------------ */
#define HGSMI_HOSTFLAGS_COMMANDS_PENDING 0x01u   /* host FIFO non-empty */
#define HGSMI_HOSTFLAGS_IRQ 0x02u                /* IRQ raised, not yet acked */
#define HGSMI_HOSTFLAGS_GCOMMAND_COMPLETED 0x04u /* guest completions queued */

/* ---- Segment layout ------------------------------------------------------ */
#define HGSMI_SEGMENT_MAGIC 0x4d534748u  /* "HGSM" */
#define HGSMI_ENDIAN_MARK 0x01020304u    /* reads 0x04030201 on a BE peer */
#define HGSMI_CACHELINE 64

enum hgsmi_region_id {
	HGSMI_REGION_SUBMIT = 0,    /* ring: guest -> host, guest buffers */
	HGSMI_REGION_GCOMPLETE = 1, /* ring: host -> guest, completed guest buffers */
	HGSMI_REGION_HOSTFIFO = 2,  /* ring: host -> guest, host buffers */
	HGSMI_REGION_HOSTACK = 3,   /* ring: guest -> host, processed host buffers */
	HGSMI_REGION_GUEST_HEAP = 4,
	HGSMI_REGION_HOST_HEAP = 5,
	HGSMI_REGION_COUNT = 8 /* two spare slots for minor versions */
};

struct hgsmi_region {
	uint32_t offset; /* from the segment base */
	uint32_t size;   /* bytes */
};

/*
 * The notify words sit on their own cache lines so that the two sides'
 * stores do not false-share with the header or each other.
 */
struct hgsmi_notify_line {
	uint32_t value;
	uint32_t pad[HGSMI_CACHELINE / 4 - 1];
};

/* At offset 0 of every segment.  Readers find regions only through here. */
struct hgsmi_segment_header {
	uint32_t magic;       /* HGSMI_SEGMENT_MAGIC */
	uint16_t abi_major;   /* HGSMI_ABI_MAJOR */
	uint16_t abi_minor;   /* HGSMI_ABI_MINOR */
	uint32_t endian;      /* HGSMI_ENDIAN_MARK */
	uint32_t header_size; /* sizeof(struct hgsmi_segment_header) */
	uint32_t size;        /* bytes in the whole segment */
	uint32_t features;    /* HGSMI_F_* negotiated at the handshake */
	uint32_t epoch;       /* bumped on every reset or re-attach */
	uint32_t ring_entries; /* entries per ring, a power of two */
	uint32_t host_pid;    /* owner, for stale-segment cleanup */
	uint32_t guest_id;
	uint32_t reserved[6];
	struct hgsmi_region regions[HGSMI_REGION_COUNT];
	/* written by the host only, with atomic OR/AND: HGSMI_HOSTFLAGS_* */
	struct hgsmi_notify_line host_flags;
	/* set by the guest before it sleeps on the IRQ; host skips IRQs while 0 */
	struct hgsmi_notify_line guest_waiting;
	/* set by the host before it sleeps on the doorbell; guest skips doorbells while 0 */
	struct hgsmi_notify_line host_waiting;
};

/*
 * A ring region: the producer's index and the consumer's index on separate
 * cache lines, then `entries` uint32_t offsets.  Indices run free and wrap at
 * 2^32; the slot is index & (entries - 1).
 */
struct hgsmi_ring_header {
	uint32_t tail; /* written by the producer only */
	uint32_t pad0[HGSMI_CACHELINE / 4 - 1];
	uint32_t head; /* written by the consumer only */
	uint32_t pad1[HGSMI_CACHELINE / 4 - 1];
	/* uint32_t slots[entries] follows */
};

/* ---- Feature bits -------------------------------------------------------- */
#define HGSMI_F_NOTIFY_SUPPRESS 0x01u /* waiting words honoured (always on in 1.0) */
#define HGSMI_F_REPLY_CAP 0x02u       /* HGSMI_BUFFER_HEADER_F_REPLY_CAP understood */
/*
 * The segment is not named in /dev/shm: it is a sealed memfd (F_SEAL_SHRINK,
 * F_SEAL_GROW, F_SEAL_SEAL) that rides as the welcome's first fd, before the
 * doorbell and IRQ eventfds.  welcome.segment is then only a label.  The
 * seals are why: a guest cannot truncate the memory the host maps (SIGBUS).
 */
#define HGSMI_F_SEGMENT_FD 0x04u
#define HGSMI_F_ALL (HGSMI_F_NOTIFY_SUPPRESS | HGSMI_F_REPLY_CAP | HGSMI_F_SEGMENT_FD)

/* ---- Control socket handshake -------------------------------------------- */
#define HGSMI_CTL_MAGIC 0x43534748u /* "HGSC" */
#define HGSMI_HELLO_ATTACH 1         /* attach as a guest */
#define HGSMI_HELLO_STAT 2           /* read-only statistics request */

#define HGSMI_BACKEND_EVENTFD 1
#define HGSMI_BACKEND_SEMAPHORE 2

#define HGSMI_NAME_MAX 32 /* bytes for a shm or semaphore name, NUL included */

/* guest -> host, first message on the socket */
struct hgsmi_hello {
	uint32_t magic; /* HGSMI_CTL_MAGIC */
	uint16_t abi_major;
	uint16_t abi_minor;
	uint32_t kind;     /* HGSMI_HELLO_* */
	uint32_t features; /* what the guest understands */
	uint32_t reserved[4];
};

/*
 * host -> guest.  The fds ride along as SCM_RIGHTS, in this order: the
 * segment (if features has HGSMI_F_SEGMENT_FD), then the doorbell and IRQ
 * eventfds (eventfd backend); nfds says how many.
 */
struct hgsmi_welcome {
	uint32_t magic; /* HGSMI_CTL_MAGIC */
	uint16_t abi_major;
	uint16_t abi_minor;
	int32_t status;    /* 0, or -errno: -EACCES, -EPROTO, -EUSERS, ... */
	uint32_t features; /* the intersection the host chose */
	uint32_t guest_id;
	uint32_t epoch;
	uint32_t segment_size;
	uint32_t backend; /* HGSMI_BACKEND_* */
	uint32_t nfds;    /* file descriptors attached to this message */
	uint32_t reserved[3];
	char segment[HGSMI_NAME_MAX];      /* shm name, "/hgsmi-..." (a label for a memfd) */
	char sem_doorbell[HGSMI_NAME_MAX]; /* semaphore backend only */
	char sem_irq[HGSMI_NAME_MAX];      /* semaphore backend only */
};

#if !defined(HGSMI_CFFI)
#if defined(__cplusplus)
#define HGSMI_STATIC_ASSERT static_assert
#else
#define HGSMI_STATIC_ASSERT _Static_assert
#endif
HGSMI_STATIC_ASSERT(sizeof(struct hgsmi_buffer_header) == 16, "wire: header");
HGSMI_STATIC_ASSERT(sizeof(struct hgsmi_buffer_tail) == 8, "wire: tail");
HGSMI_STATIC_ASSERT(sizeof(struct hgsmi_conf32) == 8, "wire: conf32");
HGSMI_STATIC_ASSERT(sizeof(struct hgsmi_buffer_location) == 8, "wire: location");
HGSMI_STATIC_ASSERT(sizeof(struct hgsmi_region) == 8, "wire: region");
HGSMI_STATIC_ASSERT(sizeof(struct hgsmi_notify_line) == 64, "wire: notify line");
HGSMI_STATIC_ASSERT(sizeof(struct hgsmi_segment_header) == 320, "wire: segment header");
HGSMI_STATIC_ASSERT(sizeof(struct hgsmi_ring_header) == 128, "wire: ring header");
HGSMI_STATIC_ASSERT(sizeof(struct hgsmi_hello) == 32, "wire: hello");
HGSMI_STATIC_ASSERT(sizeof(struct hgsmi_welcome) == 144, "wire: welcome");

/*
 * Offsets of the shared fields that peers in other languages (tests, the
 * Python peers, a fuzz harness, another compiler's build) locate by number.
 */
#define HGSMI_ASSERT_OFFSET(type, field, off)                                  \
	HGSMI_STATIC_ASSERT(offsetof(struct type, field) == (off),             \
			    "wire: " #type "." #field)
HGSMI_ASSERT_OFFSET(hgsmi_buffer_header, data_size, 0);
HGSMI_ASSERT_OFFSET(hgsmi_buffer_header, flags, 4);
HGSMI_ASSERT_OFFSET(hgsmi_buffer_header, channel, 5);
HGSMI_ASSERT_OFFSET(hgsmi_buffer_header, channel_info, 6);
HGSMI_ASSERT_OFFSET(hgsmi_buffer_header, u0, 8);
HGSMI_ASSERT_OFFSET(hgsmi_buffer_header, u1, 12);
HGSMI_ASSERT_OFFSET(hgsmi_buffer_tail, checksum, 4);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, abi_major, 4);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, endian, 8);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, size, 16);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, features, 20);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, epoch, 24);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, ring_entries, 28);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, host_pid, 32);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, guest_id, 36);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, regions, 64);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, host_flags, 128);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, guest_waiting, 192);
HGSMI_ASSERT_OFFSET(hgsmi_segment_header, host_waiting, 256);
HGSMI_ASSERT_OFFSET(hgsmi_ring_header, tail, 0);
HGSMI_ASSERT_OFFSET(hgsmi_ring_header, head, 64);
HGSMI_ASSERT_OFFSET(hgsmi_hello, kind, 8);
HGSMI_ASSERT_OFFSET(hgsmi_hello, features, 12);
HGSMI_ASSERT_OFFSET(hgsmi_welcome, status, 8);
HGSMI_ASSERT_OFFSET(hgsmi_welcome, features, 12);
HGSMI_ASSERT_OFFSET(hgsmi_welcome, guest_id, 16);
HGSMI_ASSERT_OFFSET(hgsmi_welcome, epoch, 20);
HGSMI_ASSERT_OFFSET(hgsmi_welcome, segment_size, 24);
HGSMI_ASSERT_OFFSET(hgsmi_welcome, backend, 28);
HGSMI_ASSERT_OFFSET(hgsmi_welcome, nfds, 32);
HGSMI_ASSERT_OFFSET(hgsmi_welcome, segment, 48);
HGSMI_ASSERT_OFFSET(hgsmi_welcome, sem_doorbell, 80);
HGSMI_ASSERT_OFFSET(hgsmi_welcome, sem_irq, 112);
#endif

#ifdef __cplusplus
}
#endif
#endif /* HGSMI_DEFS_H */
