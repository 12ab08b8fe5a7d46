/* SPDX-License-Identifier: MIT */
/*
 * test_spin.c - the adaptive spin's rules (src/spin.c), white-box and
 * single-threaded: the rule functions are fed outcomes at chosen times, and
 * hgsmi_int_spin runs against polls that answer as a peer would.
 *
 *  - spin_us 0 never spins;
 *  - paying spins pull the budget toward 2 x their average (within
 *    [cap / 4, cap]);
 *  - failures halve it to 0, then only a probe after the retry delay spins;
 *  - a preemption stops spinning for a backoff that doubles while they
 *    recur and starts over once they are rare;
 *  - a spin that ran out is judged after the sleep: work within spin_us is
 *    a near miss (the budget grows to cover it), later or none a failure;
 *  - paying spins slower than the waits that slept, 4 in a row, stop it;
 *  - a poll that reports the peer asleep stops the spin with no verdict;
 *  - a gap in the spinner's clock with no involuntary switch of its thread
 *    (what the hypervisor's steal time looks like from inside) is not a
 *    preemption: the spin goes on and pays.
 *
 * Exit 0 pass, 1 fail, 77 skipped (one CPU: the library never spins there).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "helpers.h"

#define US 1000ull
#define MS 1000000ull

static int polls_left; /* the poll's answer after this many 0s */
static int poll_answer;

static int poll_after(void *ctx)
{
	(void)ctx;
	return polls_left-- > 0 ? 0 : poll_answer;
}

static void rules(void)
{
	struct hgsmi_spin s;
	uint64_t t = 1000 * MS;

	hgsmi_int_spin_init(&s, 0);
	CHECK(hgsmi_int_spin_budget(&s, t) == 0);

	hgsmi_int_spin_init(&s, 50);
	CHECK(hgsmi_int_spin_budget(&s, t) == 50 * US); /* starts at the cap */
	for (int i = 0; i < 64; i++)
		hgsmi_int_spin_paid(&s, 20 * US, t);
	/* 2 x 20 + 4 slack, just under the cap */
	CHECK(hgsmi_int_spin_budget(&s, t) > 40 * US && hgsmi_int_spin_budget(&s, t) <= 44 * US + 100);
	for (int i = 0; i < 64; i++)
		hgsmi_int_spin_paid(&s, 1 * US, t);
	CHECK(hgsmi_int_spin_budget(&s, t) == 12500); /* the floor: cap / 4 */

	/* Failures: 12.5 -> 6.25 -> (3.1 < slack) 0, then a probe at +1 ms. */
	hgsmi_int_spin_failed(&s, t);
	CHECK(hgsmi_int_spin_budget(&s, t) == 6250);
	hgsmi_int_spin_failed(&s, t);
	CHECK(hgsmi_int_spin_budget(&s, t) == 0);
	CHECK(hgsmi_int_spin_budget(&s, t + MS - 1) == 0);
	CHECK(hgsmi_int_spin_budget(&s, t + MS) >= 12500); /* the probe */
	/* A failed probe: the next one twice as late. */
	hgsmi_int_spin_failed(&s, t + MS);
	CHECK(hgsmi_int_spin_budget(&s, t + 3 * MS - 1) == 0);
	CHECK(hgsmi_int_spin_budget(&s, t + 3 * MS) > 0);
	/* A paying probe restores the budget and the first retry delay. */
	hgsmi_int_spin_paid(&s, 10 * US, t + 3 * MS);
	CHECK(hgsmi_int_spin_budget(&s, t + 3 * MS) >= 12500);
	CHECK(s.retry_ns == MS);

	/* Preemptions: off 10 ms; recurring soon: 20 ms; rare again: 10 ms. */
	t += 10 * MS;
	hgsmi_int_spin_preempted(&s, t);
	CHECK(hgsmi_int_spin_budget(&s, t + 10 * MS - 1) == 0);
	CHECK(hgsmi_int_spin_budget(&s, t + 10 * MS) > 0);
	hgsmi_int_spin_preempted(&s, t + 11 * MS);
	CHECK(hgsmi_int_spin_budget(&s, t + 11 * MS + 20 * MS - 1) == 0);
	CHECK(hgsmi_int_spin_budget(&s, t + 11 * MS + 20 * MS) > 0);
	for (int i = 0; i < 20; i++)
		hgsmi_int_spin_preempted(&s, t + 12 * MS + (uint64_t)i * MS);
	CHECK(s.backoff_ns == 1000 * MS); /* capped at 1 s */
	hgsmi_int_spin_preempted(&s, t + 100000 * MS);
	CHECK(s.backoff_ns == 10 * MS);

	/* Paying spins that take longer than sleeping does, SPIN_SLOW_RUN (4)
	 * in a row: off, then a probe.  Fewer, or broken by a quick one: noise. */
	hgsmi_int_spin_init(&s, 50);
	s.sleep_avg_ns = 10 * US, s.avg_ns = 5 * US;
	hgsmi_int_spin_paid(&s, 5 * US, t);
	CHECK(hgsmi_int_spin_budget(&s, t) == 14 * US); /* 2 x 5 + 4 */
	for (int i = 0; i < 3; i++)
		hgsmi_int_spin_paid(&s, 60 * US, t);
	CHECK(hgsmi_int_spin_budget(&s, t) > 0 && s.slow_run == 3);
	hgsmi_int_spin_paid(&s, 2 * US, t); /* a quick one: the run starts over */
	CHECK(s.slow_run == 0);
	for (int i = 0; i < 3; i++)
		hgsmi_int_spin_paid(&s, 11 * US, t);
	CHECK(hgsmi_int_spin_budget(&s, t) > 0);
	hgsmi_int_spin_paid(&s, 11 * US, t);
	CHECK(hgsmi_int_spin_budget(&s, t) == 0);
	CHECK(hgsmi_int_spin_budget(&s, t + MS) > 0);
}

/*
 * As hgsmi_int_spin_init, with the machine taken as not busy for the next
 * 10 ms (its load check reads the real /proc/loadavg, which on a shared
 * test machine often says busy: then nothing would spin at all).
 */
static void init_quiet(struct hgsmi_spin *s, uint32_t cap_us)
{
	hgsmi_int_spin_init(s, cap_us);
	s->load_checked_ns = hgsmi_int_now_ns();
	s->busy = false;
}

static void spins(void)
{
	struct hgsmi_spin s;

	/* Work on the 100th poll: paid, counted, no verdict pending. */
	init_quiet(&s, 1000);
	polls_left = 100, poll_answer = 1;
	if (hgsmi_int_spin(&s, poll_after, NULL) == 0) /* preempted: loaded */
		CHECK(s.spins_preempted == 1);
	else
		CHECK(s.spins_paid == 1 && s.missed_start_ns == 0);
	init_quiet(&s, 1000);

	/* The peer goes to sleep: stop, no verdict. */
	polls_left = 10, poll_answer = -1;
	CHECK(hgsmi_int_spin(&s, poll_after, NULL) == 0);
	CHECK(s.missed_start_ns == 0 && s.spins_failed == 0);
	hgsmi_int_spin_settle(&s, true);
	CHECK(s.spins_missed == 0 && s.spins_failed == 0);

	/* Runs out; the work comes right after (within spin_us): near miss. */
	init_quiet(&s, 1000);
	s.budget_ns = 5 * US;
	polls_left = 1 << 30, poll_answer = 1;
	CHECK(hgsmi_int_spin(&s, poll_after, NULL) == 0);
	if (s.spins_preempted == 0) { /* a loaded machine may preempt us here */
		CHECK(s.missed_start_ns != 0);
		hgsmi_int_spin_settle(&s, true);
		CHECK(s.spins_missed == 1 && s.missed_start_ns == 0);
		CHECK(hgsmi_int_spin_budget(&s, hgsmi_int_now_ns()) >= 2 * 5 * US);
	}

	/* Runs out; the wait then times out: a failure, the budget halves. */
	init_quiet(&s, 1000);
	polls_left = 1 << 30;
	CHECK(hgsmi_int_spin(&s, poll_after, NULL) == 0);
	if (s.spins_preempted == 0) {
		hgsmi_int_spin_settle(&s, false);
		CHECK(s.spins_failed == 1);
		CHECK(hgsmi_int_spin_budget(&s, hgsmi_int_now_ns()) == 500 * US);
	}

	/* Runs out; the work comes only after more than spin_us: a failure. */
	init_quiet(&s, 20);
	polls_left = 1 << 30;
	CHECK(hgsmi_int_spin(&s, poll_after, NULL) == 0);
	if (s.spins_preempted == 0) {
		usleep(2000);
		hgsmi_int_spin_settle(&s, true);
		CHECK(s.spins_failed == 1 && s.spins_missed == 0);
	}
}

/* Sleeps 300 us (a voluntary switch: no involuntary one), then has work. */
static int poll_after_a_gap(void *ctx)
{
	struct timespec ts = {0, 300000};

	(void)ctx;
	if (polls_left-- > 0) {
		nanosleep(&ts, NULL);
		return 0;
	}
	return 1;
}

static void steal_is_not_preemption(void)
{
	struct hgsmi_spin s;
	long before;
	int rc;

	/* Up to 5 tries: another task may really preempt us meanwhile.  A
	 * 100 ms cap: the hypervisor's own steal may stretch the 300 us sleep
	 * past a short budget, or add a gap of its own (1 in ~150 runs with a
	 * 1 ms cap and spins_stolen == 1 on this VM). */
	for (int i = 0; i < 5; i++) {
		before = hgsmi_int_involuntary_switches();
		init_quiet(&s, 100000);
		polls_left = 1;
		rc = hgsmi_int_spin(&s, poll_after_a_gap, NULL);
		if (hgsmi_int_involuntary_switches() != before)
			continue;
		CHECK(rc == 1 && s.spins_stolen >= 1 && s.spins_preempted == 0);
		CHECK(s.spins_paid == 1 && hgsmi_int_spin_budget(&s, hgsmi_int_now_ns()) > 0);
		return;
	}
	printf("test_spin: preempted in every try of the steal check: not checked\n");
}

int main(void)
{
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2) {
		struct hgsmi_spin s;

		hgsmi_int_spin_init(&s, 50);
		CHECK(hgsmi_int_spin_budget(&s, 0) == 0);
		printf("test_spin: one CPU, never spins: skipped\n");
		return 77;
	}
	rules();
	spins();
	steal_is_not_preemption();
	printf("test_spin: ok\n");
	return 0;
}
