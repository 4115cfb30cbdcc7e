/* Cost of evaluating one session against rule files of 1, 100 and
   10,000 rules. Prints one line per case: rules, mix, median and p95
   nanoseconds per evaluation over repeated rounds. */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "../plugins/access_rules/access-rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define BENCH_ROUNDS 31
#define BENCH_EVALS_PER_ROUND 20000

/* Typical rule files: mostly per-user and per-network rules with a few
   catch-alls at the end, the shape the index is built for. */
static const char *bench_rules_indexed(unsigned int count)
{
	string_t *str = t_str_new(count * 64);
	unsigned int i;

	for (i = 0; i + 3 < count; i++) {
		switch (i % 4) {
		case 0:
			str_printfa(str, "deny user user%u@example.com from !10.%u.0.0/16\n",
				    i, i % 250);
			break;
		case 1:
			str_printfa(str, "readonly from 172.%u.%u.0/24\n",
				    16 + (i / 256) % 16, i % 256);
			break;
		case 2:
			str_printfa(str, "allow domain d%u.example mailboxes INBOX\n", i);
			break;
		case 3:
			str_printfa(str, "deny group g%u tls no\n", i);
			break;
		}
	}
	if (count >= 3) {
		str_append(str, "deny protocol pop3 from !192.0.2.0/24\n");
		str_append(str, "readonly time 23:00-05:00\n");
	}
	str_append(str, "allow sessions 10\n");
	return str_c(str);
}

/* The worst case: no rule has a key the index can use, so every
   session scans them all. */
static const char *bench_rules_generic(unsigned int count)
{
	string_t *str = t_str_new(count * 48);
	unsigned int i;

	for (i = 0; i + 1 < count; i++)
		str_printfa(str, "deny user *.%u@example.org\n", i);
	str_append(str, "allow\n");
	return str_c(str);
}

static int bench_cmp(const void *p1, const void *p2)
{
	const double *d1 = p1, *d2 = p2;

	return *d1 < *d2 ? -1 : *d1 > *d2 ? 1 : 0;
}

static double bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Times evaluations of sessions[] against rules; returns the median
   nanoseconds per evaluation and fills p95_r. */
static double bench_evaluate(struct access_rules *rules,
			     const struct access_rules_session *sessions,
			     unsigned int session_count, double *p95_r)
{
	struct access_rules_decision decision;
	double samples[BENCH_ROUNDS], start;
	const char *error;
	unsigned int round, i;
	volatile unsigned int sink = 0;

	for (round = 0; round < BENCH_ROUNDS; round++) {
		start = bench_now_ns();
		for (i = 0; i < BENCH_EVALS_PER_ROUND; i++) {
			if (access_rules_evaluate(rules, ACCESS_RULES_DEFAULT_SET,
					&sessions[i % session_count],
					&decision, &error) < 0)
				i_fatal("evaluate: %s", error);
			sink += decision.rule_line;
		}
		samples[round] = (bench_now_ns() - start) / BENCH_EVALS_PER_ROUND;
	}
	qsort(samples, BENCH_ROUNDS, sizeof(samples[0]), bench_cmp);
	*p95_r = samples[BENCH_ROUNDS * 95 / 100];
	return samples[BENCH_ROUNDS / 2];
}

static void bench_compile_file(const char *path)
{
	ARRAY_TYPE(const_string) errors;
	struct access_rules *rules;
	const char *error;

	t_array_init(&errors, 1);
	if (access_rules_load(path, ACCESS_RULES_LOAD_FLAG_TEXT, &rules,
			      &errors) < 0 ||
	    access_rules_compile(rules, &error) < 0)
		i_fatal("can't compile %s", path);
	access_rules_free(&rules);
}

static void bench_case(const char *mix, unsigned int count, const char *text)
{
	ARRAY_TYPE(const_string) errors;
	struct access_rules *rules;
	struct access_rules_session sessions[64];
	struct access_rules *compiled;
	double start, parse_ns, load_ns, median, p95;
	const char *groups[] = { "staff", NULL };
	const char *path;
	unsigned int i;
	FILE *f;

	t_array_init(&errors, 4);
	start = bench_now_ns();
	if (access_rules_parse("bench.conf", text, &rules, &errors) < 0)
		i_fatal("bench rules don't parse: %s",
			array_idx_elem(&errors, 0));
	parse_ns = bench_now_ns() - start;

	/* a spread of sessions: some hit a per-user rule, most don't */
	for (i = 0; i < N_ELEMENTS(sessions); i++) {
		struct access_rules_session *s = &sessions[i];

		i_zero(s);
		s->protocol = i % 3 == 0 ? ACCESS_RULE_PROTOCOL_POP3 :
			ACCESS_RULE_PROTOCOL_IMAP;
		s->username = t_strdup_printf("user%u@example.com",
					      (i * 7919) % (count * 2 + 1));
		s->groups = groups;
		(void)net_addr2ip(t_strdup_printf("10.%u.%u.%u", i % 250,
						  i % 7, i + 1), &s->remote_ip);
		s->local_port = 993;
		s->tls = TRUE;
		s->now = 1700000000 + i * 3600;
	}

	median = bench_evaluate(rules, sessions, N_ELEMENTS(sessions), &p95);
	printf("%-8s %6u rules, text:     median %8.0f ns, p95 %8.0f ns per "
	       "session (parse %.2f ms)\n", mix, count, median, p95,
	       parse_ns / 1e6);

	/* the same rules through FILE.compiled, as a login sees them */
	path = t_strdup_printf("/tmp/bench-access-rules.%s.conf",
			       dec2str(getpid()));
	f = fopen(path, "w");
	if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
		i_fatal("write(%s) failed: %m", path);
	bench_compile_file(path);
	start = bench_now_ns();
	if (access_rules_load(path, 0, &compiled, &errors) < 0 ||
	    !access_rules_is_compiled(compiled))
		i_fatal("compiled rules didn't load");
	load_ns = bench_now_ns() - start;
	median = bench_evaluate(compiled, sessions, N_ELEMENTS(sessions), &p95);
	printf("%-8s %6u rules, compiled: median %8.0f ns, p95 %8.0f ns per "
	       "session (open %.3f ms)\n", mix, count, median, p95,
	       load_ns / 1e6);
	access_rules_free(&compiled);
	i_unlink(t_strconcat(path, ".compiled", NULL));
	i_unlink(path);
	access_rules_free(&rules);
}

int main(void)
{
	static const unsigned int counts[] = { 1, 100, 10000 };
	unsigned int i;

	lib_init();
	for (i = 0; i < N_ELEMENTS(counts); i++) T_BEGIN {
		bench_case("indexed", counts[i], bench_rules_indexed(counts[i]));
	} T_END;
	for (i = 0; i < N_ELEMENTS(counts); i++) T_BEGIN {
		bench_case("generic", counts[i], bench_rules_generic(counts[i]));
	} T_END;
	lib_deinit();
	return 0;
}
