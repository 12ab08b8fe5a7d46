/* helpers.h - tiny assertion and fixture helpers for the C unit tests. */
#ifndef HGSMI_TEST_HELPERS_H
#define HGSMI_TEST_HELPERS_H
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
			exit(1);                                               \
		}                                                              \
	} while (0)
#define CHECK_RC(expr)                                                         \
	do {                                                                   \
		long long rc_ = (long long)(expr);                             \
		if (rc_ < 0) {                                                 \
			fprintf(stderr, "%s:%d: %s = %lld (%s)\n", __FILE__,   \
				__LINE__, #expr, rc_, hgsmi_strerror((int)rc_)); \
			exit(1);                                               \
		}                                                              \
	} while (0)
#endif
