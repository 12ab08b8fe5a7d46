/* SPDX-License-Identifier: MIT */
/* misc.c - the library's version and its error texts. */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define STR2(x) #x
#define STR(x) STR2(x)

const char *hgsmi_version(void)
{
	return STR(HGSMI_VERSION_MAJOR) "." STR(HGSMI_VERSION_MINOR) "." STR(HGSMI_VERSION_PATCH);
}

const char *hgsmi_strerror(int err)
{
	switch (-err) {
	case ENOMEM: return "heap exhausted";
	case EAGAIN: return "ring full or nothing ready";
	case ETIMEDOUT: return "timed out";
	case EBADMSG: return "buffer checksum mismatch";
	case EPROTO: return "protocol error (magic, ABI version, flags or ring index)";
	case ERANGE: return "offset or size outside the area";
	case EPIPE: return "the peer is gone";
	case ENOENT: return "no such host, or channel not registered";
	case EACCES: return "not allowed (uid not on the host's allow-list)";
	case EMSGSIZE: return "message larger than the heap can ever hold";
	case EUSERS: return "the host serves its maximum number of guests";
	case EDQUOT: return "too many guests attached from this process (max_guests_per_pid)";
	case ETOOMANYREFS: return "too many pending handshakes from this process (max_pending_per_pid)";
	case EADDRINUSE: return "a live host already has that name";
	case ENAMETOOLONG: return "name too long (an instance name: at most 64 characters; its socket path: at most 107 bytes)";
	case EOVERFLOW: return "reply larger than the buffer's capacity";
	default: return strerror(-err);
	}
}
