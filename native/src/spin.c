/* SPDX-License-Identifier: MIT */
/*
 * spin.c - the adaptive spin: how long a waiter polls before it sleeps.
 *
 * Spinning pays when the peer answers within microseconds and both sides
 * have a CPU: it saves two wake-ups (tens of µs each) per round trip.  It
 * costs when the peer is asleep, stopped or preempted, and worst of all
 * when the machine is oversubscribed: a spinner looks like a CPU hog to the
 * scheduler, loses the wake-up preference a sleeper gets, and then it and
 * its peer take turns with the other work in whole time slices.
 *
 * So, as an adaptive mutex does (glibc's PTHREAD_MUTEX_ADAPTIVE_NP, the
 * kernel's optimistic spinning), a waiter spins only
 *  - while the peer is observably awake (the caller's poll says so: the
 *    waiting words in the segment, see guest.c and host_loop.c), and
 *  - as long as recent spins paid off: the budget follows twice an average
 *    of the spins that found work (glibc's rule), within [spin_us / 4,
 *    spin_us]; a spin that runs out, and whose wait then lasts longer than
 *    spin_us, halves it, and below SPIN_SLACK_NS it is 0 until a probe at a
 *    later time (SPIN_RETRY_*) tries again, so an idle side soon sleeps at
 *    once and a side whose peer came back recovers; one whose work came
 *    within spin_us after all (a near miss) sets the average to that wait;
 *  - as long as paying spins are quicker than sleeping: each side also
 *    keeps the average wait that slept (and got work soon), and when
 *    SPIN_SLOW_RUN spins in a row take longer than that, it sleeps for a
 *    while (CPUs shared with other work: a woken sleeper is scheduled ahead
 *    of a spinner);
 *  - never while more tasks are runnable than there are CPUs (the running
 *    count in /proc/loadavg, read at most every 10 ms, twice in a row: a
 *    kernel thread runnable for a moment is not a busy machine, and a
 *    verdict holds for 10 ms), and never after it was itself preempted
 *    while spinning (a gap in its own clock, and an involuntary context
 *    switch of its thread since the last gap): the CPUs are busy, and
 *    spinning would steal from the peer.  It stays off for a backoff that
 *    doubles while preemptions keep coming.  A gap without such a switch
 *    is the hypervisor running others on our vCPU (steal time): no task
 *    here wanted the CPU, so the spin goes on.
 * A machine with one CPU never spins: the peer cannot run meanwhile.
 *
 * Private to one side, one thread: nothing here is shared memory.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "internal.h"

#define SPIN_SLACK_NS 4000ull             /* added to 2 x average; below: off */
/* A clock gap this long while spinning: we were preempted.  Not less: on a
 * VM an interrupt or the hypervisor's steal takes tens of microseconds now
 * and then, which turned the spin off for 10 ms at a time and kept it off;
 * a preemption by another task costs a time slice, milliseconds. */
#define SPIN_GAP_NS 200000ull
/* What one wake-up of a sleeping peer can cost (measured here: 50-130 us on a
 * 2-vCPU VM): an answer that comes within it after a spin ends is a near
 * miss, the peer was waking, not slow.  Without it, a ping-pong whose peers
 * each slept never spun again: each spin ended before the other woke. */
#define SPIN_WAKEUP_NS 150000ull
#define SPIN_RETRY_MIN_NS 1000000ull      /* first probe 1 ms after the budget hit 0 */
#define SPIN_RETRY_MAX_NS 100000000ull    /* then doubling, up to 100 ms */
#define SPIN_BACKOFF_MIN_NS 10000000ull   /* preempted: off for 10 ms */
#define SPIN_BACKOFF_MAX_NS 1000000000ull /* doubling while it recurs, up to 1 s */
/* Slow paying spins in a row before backing off.  One is noise on a VM (an
 * interrupt, or the peer just woken): compared as an average, a couple of
 * them turned a quiet machine's spin off for milliseconds, and the peer's
 * spins then waited out our wake-ups and turned off in turn. */
#define SPIN_SLOW_RUN 4
#define SPIN_LOAD_CHECK_NS 10000000ull    /* /proc/loadavg at most every 10 ms */

long hgsmi_int_involuntary_switches(void)
{
	struct rusage ru;

	return getrusage(RUSAGE_THREAD, &ru) ? -1 : ru.ru_nivcsw;
}

void hgsmi_int_spin_init(struct hgsmi_spin *s, uint32_t cap_us)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	*s = (struct hgsmi_spin){0};
	if (cap_us == 0 || ncpu < 2)
		return;
	s->ncpu = (int)ncpu;
	s->nivcsw = hgsmi_int_involuntary_switches();
	/* A new waiter trusts its first reading: one started among hogs must
	 * not spin for 10 ms before the second. */
	s->busy_seen = true;
	s->cap_ns = cap_us * 1000ull;
	s->avg_ns = s->cap_ns / 2;
	s->budget_ns = s->cap_ns;
	s->retry_ns = SPIN_RETRY_MIN_NS;
	s->backoff_ns = SPIN_BACKOFF_MIN_NS;
}

/* 2 x the average of paying spins + slack, within [cap / 4, cap]: a floor,
 * so that a budget just above the usual wait does not fail on every jitter. */
static uint64_t budget_of(const struct hgsmi_spin *s)
{
	uint64_t b = 2 * s->avg_ns + SPIN_SLACK_NS;

	if (b < s->cap_ns / 4)
		b = s->cap_ns / 4;
	return b < s->cap_ns ? b : s->cap_ns;
}

uint64_t hgsmi_int_spin_budget(const struct hgsmi_spin *s, uint64_t now)
{
	if (!s->cap_ns || now < s->off_until_ns)
		return 0;
	/* Budget spent: a probe, once the retry time has come. */
	return s->budget_ns ? s->budget_ns : budget_of(s);
}

/* Signed on purpose: the average moves toward the sample either way. */
static uint64_t ewma(uint64_t avg, uint64_t sample)
{
	return (uint64_t)((int64_t)avg + ((int64_t)sample - (int64_t)avg) / 8);
}

void hgsmi_int_spin_paid(struct hgsmi_spin *s, uint64_t spun_ns, uint64_t now)
{
	s->avg_ns = ewma(s->avg_ns, spun_ns);
	s->slow_run = s->sleep_avg_ns && spun_ns > s->sleep_avg_ns ? s->slow_run + 1 : 0;
	if (s->slow_run >= SPIN_SLOW_RUN) {
		/*
		 * Found work, but later than sleeping does, again and again: the
		 * CPUs are shared with other work, and a sleeper's wake-up beats
		 * a spinner that the scheduler treats as a hog.  Sleep for a
		 * while, then probe.
		 */
		s->avg_ns = s->sleep_avg_ns / 2;
		s->slow_run = 0;
		s->budget_ns = 0;
		s->off_until_ns = now + s->retry_ns;
		s->retry_ns = s->retry_ns * 2 < SPIN_RETRY_MAX_NS ? s->retry_ns * 2 : SPIN_RETRY_MAX_NS;
		return;
	}
	s->budget_ns = budget_of(s);
	s->retry_ns = SPIN_RETRY_MIN_NS;
}

void hgsmi_int_spin_failed(struct hgsmi_spin *s, uint64_t now)
{
	s->avg_ns /= 2;
	s->budget_ns /= 2;
	if (s->budget_ns >= SPIN_SLACK_NS)
		return;
	s->budget_ns = 0;
	s->off_until_ns = now + s->retry_ns;
	s->retry_ns = s->retry_ns * 2 < SPIN_RETRY_MAX_NS ? s->retry_ns * 2 : SPIN_RETRY_MAX_NS;
}

void hgsmi_int_spin_preempted(struct hgsmi_spin *s, uint64_t now)
{
	/* Recurring (within 4 backoffs of the last one): off for longer. */
	if (s->last_preempt_ns && now - s->last_preempt_ns < 4 * s->backoff_ns)
		s->backoff_ns = s->backoff_ns * 2 < SPIN_BACKOFF_MAX_NS ? s->backoff_ns * 2
									: SPIN_BACKOFF_MAX_NS;
	else
		s->backoff_ns = SPIN_BACKOFF_MIN_NS;
	s->last_preempt_ns = now;
	s->budget_ns = 0;
	s->off_until_ns = now + s->backoff_ns;
}

void hgsmi_int_spin_settle(struct hgsmi_spin *s, bool work)
{
	uint64_t now, waited;

	if (!s->missed_start_ns && !s->slept_start_ns)
		return;
	now = hgsmi_int_now_ns();
	/* What sleeping costs, to compare paying spins with (a wait longer
	 * than 4 caps is the peer's own pace, not a wake-up: left out). */
	waited = now - s->slept_start_ns;
	if (s->slept_start_ns && work && waited <= 4 * s->cap_ns)
		s->sleep_avg_ns = s->sleep_avg_ns ? ewma(s->sleep_avg_ns, waited) : waited;
	s->slept_start_ns = 0;
	if (!s->missed_start_ns)
		return;
	waited = now - s->missed_start_ns;
	s->missed_start_ns = 0;
	if (work && waited <= s->cap_ns + SPIN_WAKEUP_NS) {
		/*
		 * A near miss: a longer spin would have paid.  Typically the
		 * peer was asleep too (its own budget spent), so each side's
		 * probe waits out the other's wake-up; learning the real wait
		 * is what lets both come back to spinning.
		 */
		s->spins_missed++;
		s->avg_ns = waited;
		s->budget_ns = budget_of(s);
		s->off_until_ns = 0;
		return;
	}
	s->spins_failed++;
	hgsmi_int_spin_failed(s, now);
}

/*
 * More tasks runnable than CPUs (this one included): another would get the
 * CPU a spin holds (the kernel's optimistic spinning stops on need_resched;
 * this is what user space can see of it).  The 4th field of /proc/loadavg
 * is "running/total" right now.  No /proc: not busy.
 */
static bool machine_busy(struct hgsmi_spin *s, uint64_t now)
{
	char buf[128], *slash;
	ssize_t n;
	int fd;

	if (s->load_checked_ns && now - s->load_checked_ns < SPIN_LOAD_CHECK_NS)
		return s->busy;
	s->load_checked_ns = now;
	s->busy = false;
	if ((fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC)) < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	if ((slash = strchr(buf, '/')) != NULL) {
		char *p = slash;
		bool over;

		while (p > buf && p[-1] != ' ')
			p--;
		over = strtol(p, NULL, 10) > s->ncpu;
		s->busy = over && s->busy_seen;
		s->busy_seen = over;
	}
	return s->busy;
}

int hgsmi_int_spin(struct hgsmi_spin *s, hgsmi_spin_poll_fn poll, void *ctx)
{
	uint64_t start = hgsmi_int_now_ns(), last = start, now = start;
	uint64_t budget = hgsmi_int_spin_budget(s, start);
	int rc;

	if (!budget || machine_busy(s, start)) {
		s->slept_start_ns = s->cap_ns ? start : 0;
		return 0;
	}
	for (;;) {
		if ((rc = poll(ctx)) != 0)
			break;
		cpu_relax();
		now = hgsmi_int_now_ns();
		if (now - last > SPIN_GAP_NS) {
			/* Read only here: a syscall, not for every spin. */
			long n = hgsmi_int_involuntary_switches();

			if (n < 0 || n != s->nivcsw) {
				s->nivcsw = n;
				s->spins_preempted++;
				hgsmi_int_spin_preempted(s, now);
				return 0;
			}
			s->spins_stolen++;
		}
		last = now;
		if (now - start >= budget) {
			/* the verdict: hgsmi_int_spin_settle */
			s->missed_start_ns = s->slept_start_ns = start;
			return 0;
		}
	}
	if (rc > 0) {
		s->spins_paid++;
		hgsmi_int_spin_paid(s, now - start, now);
		return 1;
	}
	s->slept_start_ns = start;
	return 0; /* the peer went to sleep: no verdict on the spin */
}
