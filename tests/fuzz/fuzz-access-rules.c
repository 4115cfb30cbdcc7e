/* Fuzzes the access rules parser and matcher.

   Input: the rules text, then optionally a NUL and bytes that describe
   sessions (without a NUL the text's own bytes describe them). Each
   parsed rule set is asked about every session three ways, which must
   agree:
   - access_rules_evaluate(), the indexed lookup a login uses;
   - every rule tried in file order with access_rule_match(), which is
     what the docs promise ("the first matching rule wins");
   - the same rules compiled into FILE.compiled and mapped back.
   A text that doesn't parse must give errors of the "file:line: ..."
   form, at most ACCESS_RULES_MAX_ERRORS of them.

   The session bytes start with a byte that, with its top bit set, asks
   for FILE.compiled to be damaged too (see fuzz_damage_compiled()). */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "net.h"
#include "../../plugins/access_rules/access-rules-private.h"
#include "fuzz-common.h"

#include <ctype.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/stat.h>

/* as in access-rules-file.c */
#define FUZZ_MAX_PARSE_ERRORS 50
#define FUZZ_MAX_SESSIONS 12
#define FUZZ_MAX_WORDS 64
#define FUZZ_MISSING_SET "\001no such set"

struct fuzz_session_source {
	struct fuzz_reader reader;
	/* the rules' own words: sessions built from them reach past the
	   literal keys into the rules' conditions */
	ARRAY_TYPE(const_string) words;
};

static const char *fuzz_rules_path;

static void fuzz_access_rules_cleanup(void)
{
	if (fuzz_rules_path == NULL)
		return;
	(void)unlink(t_strconcat(fuzz_rules_path, ".compiled", NULL));
	(void)unlink(fuzz_rules_path);
}

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	const char *dir = getenv("FUZZ_TMPDIR");
	struct stat st;

	fuzz_init();
	/* compiling writes and fdatasync()s a file per input: memory
	   backed if possible */
	if (dir == NULL)
		dir = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ?
			"/dev/shm" : "/tmp";
	fuzz_rules_path = i_strdup_printf("%s/fuzz-access-rules.%s.conf",
					  dir, dec2str(getpid()));
	atexit(fuzz_access_rules_cleanup);
	return 0;
}

static void fuzz_collect_words(const char *text, ARRAY_TYPE(const_string) *words)
{
	const char *p = text, *start, *word;

	while (*p != '\0' && array_count(words) < FUZZ_MAX_WORDS) {
		if (strchr(" \t\r\n,\"!#\\", *p) != NULL) {
			p++;
			continue;
		}
		start = p;
		while (*p != '\0' && strchr(" \t\r\n,\"!#\\", *p) == NULL)
			p++;
		word = t_strdup_until(start, p);
		array_push_back(words, &word);
	}
}

static const char *fuzz_word(struct fuzz_session_source *src)
{
	unsigned int count = array_count(&src->words);
	uint8_t n = fuzz_u8(&src->reader);

	if (count == 0)
		return "";
	return array_idx_elem(&src->words, n % count);
}

/* Changes the case of some letters: matching ignores ASCII case. */
static const char *fuzz_recase(const char *str, uint8_t how)
{
	char *copy;
	unsigned int i;

	if (how == 0)
		return str;
	copy = t_strdup_noconst(str);
	for (i = 0; copy[i] != '\0'; i++) {
		if (((how >> (i % 8)) & 1) != 0)
			copy[i] = i_toupper(copy[i]);
	}
	return copy;
}

/* NULL (unknown), one of the rules' words, a word with a domain, or
   bytes of the input. */
static const char *fuzz_session_string(struct fuzz_session_source *src)
{
	uint8_t kind = fuzz_u8(&src->reader);
	const uint8_t *bytes;
	const char *str;
	size_t size;

	switch (kind % 5) {
	case 0:
		return NULL;
	case 1:
		str = fuzz_word(src);
		break;
	case 2:
		str = t_strconcat(fuzz_word(src), "@", fuzz_word(src), NULL);
		break;
	case 3:
		str = t_strdup_printf("%s%s", fuzz_word(src), fuzz_word(src));
		break;
	default:
		bytes = fuzz_bytes(&src->reader, 64, &size);
		str = t_strndup(bytes, size);
		break;
	}
	return fuzz_recase(str, (kind >> 3) & ((kind & 0x80) != 0 ? 0xff : 0));
}

/* An address in one of the rules' networks (with random host bits), a
   random one, an IPv4-mapped IPv6 one, or none. */
static void fuzz_session_ip(struct fuzz_session_source *src,
			    struct ip_addr *ip_r)
{
	uint8_t kind = fuzz_u8(&src->reader);
	unsigned int bits, i, max_bits;
	struct ip_addr ip4;

	i_zero(ip_r);
	switch (kind % 6) {
	case 0:
		return;
	case 1:
		ip_r->family = AF_INET;
		ip_r->u.ip4.s_addr = htonl(fuzz_u32(&src->reader));
		return;
	case 2:
		ip_r->family = AF_INET6;
		for (i = 0; i < 16; i++)
			ip_r->u.ip6.s6_addr[i] = fuzz_u8(&src->reader);
		return;
	default:
		break;
	}
	if (net_parse_range(fuzz_word(src), ip_r, &bits) < 0) {
		i_zero(ip_r);
		return;
	}
	/* the host part, bit by bit, from the input */
	max_bits = IPADDR_IS_V4(ip_r) ? 32 : 128;
	for (i = bits; i < max_bits && (kind & 0x80) != 0; i++) {
		unsigned char *bytes = IPADDR_IS_V4(ip_r) ?
			(unsigned char *)&ip_r->u.ip4.s_addr :
			ip_r->u.ip6.s6_addr;

		if ((fuzz_u8(&src->reader) & 1) != 0)
			bytes[i / 8] ^= 0x80 >> (i % 8);
	}
	if (kind % 6 == 5 && IPADDR_IS_V4(ip_r)) {
		/* the same address as a dual-stack socket reports it */
		ip4 = *ip_r;
		i_zero(ip_r);
		ip_r->family = AF_INET6;
		ip_r->u.ip6.s6_addr[10] = 0xff;
		ip_r->u.ip6.s6_addr[11] = 0xff;
		memcpy(&ip_r->u.ip6.s6_addr[12], &ip4.u.ip4.s_addr, 4);
	}
}

static void fuzz_session(struct fuzz_session_source *src,
			 struct access_rules_session *session_r)
{
	uint8_t flags = fuzz_u8(&src->reader);
	const char **groups;
	unsigned int i, count;

	i_zero(session_r);
	session_r->protocol = (flags & 1) != 0 ? ACCESS_RULE_PROTOCOL_POP3 :
		ACCESS_RULE_PROTOCOL_IMAP;
	session_r->tls = (flags & 2) != 0;
	session_r->username = fuzz_session_string(src);
	count = (flags >> 2) & 3;
	if ((flags & 0x10) != 0) {
		groups = t_new(const char *, count + 1);
		for (i = 0; i < count; i++) {
			groups[i] = fuzz_session_string(src);
			if (groups[i] == NULL)
				groups[i] = "";
		}
		session_r->groups = groups;
	}
	fuzz_session_ip(src, &session_r->remote_ip);
	session_r->local_port = fuzz_u16(&src->reader);
	if ((flags & 0x20) != 0) {
		session_r->client_name = fuzz_session_string(src);
		session_r->client_version = fuzz_session_string(src);
	}
	/* any second from 1970 to 2106 */
	session_r->now = (time_t)fuzz_u32(&src->reader);
}

static bool fuzz_strlists_equal(const char *const *l1, const char *const *l2)
{
	unsigned int i;

	if (l1 == NULL || l2 == NULL)
		return l1 == l2;
	for (i = 0; l1[i] != NULL && l2[i] != NULL; i++) {
		if (strcmp(l1[i], l2[i]) != 0)
			return FALSE;
	}
	return l1[i] == NULL && l2[i] == NULL;
}

static void fuzz_assert_decisions_equal(const char *what,
					const struct access_rules_decision *d1,
					const struct access_rules_decision *d2)
{
	if (d1->action == d2->action && d1->rule_line == d2->rule_line &&
	    d1->default_line == d2->default_line &&
	    null_strcmp(d1->reason, d2->reason) == 0 &&
	    null_strcmp(d1->ruleset, d2->ruleset) == 0 &&
	    fuzz_strlists_equal(d1->mailboxes, d2->mailboxes) &&
	    fuzz_strlists_equal(d1->hidden_mailboxes, d2->hidden_mailboxes) &&
	    d1->max_sessions == d2->max_sessions &&
	    memcmp(d1->max_protocol_sessions, d2->max_protocol_sessions,
		   sizeof(d1->max_protocol_sessions)) == 0 &&
	    d1->depends_on_client_id == d2->depends_on_client_id)
		return;
	fuzz_fail("%s: decisions differ: %s line %u (default line %u) vs "
		  "%s line %u (default line %u)", what,
		  access_rule_action_to_string(d1->action), d1->rule_line,
		  d1->default_line, access_rule_action_to_string(d2->action),
		  d2->rule_line, d2->default_line);
}

static void fuzz_print_session(const struct access_rules_session *s)
{
	unsigned int i;

	fprintf(stderr, "session: protocol=%s user=%s ip=%s port=%u tls=%d "
		"client=%s/%s now=%ld groups=",
		access_rule_protocol_to_string(s->protocol),
		s->username == NULL ? "(null)" : s->username,
		s->remote_ip.family == 0 ? "(none)" : net_ip2addr(&s->remote_ip),
		s->local_port, s->tls ? 1 : 0,
		s->client_name == NULL ? "(null)" : s->client_name,
		s->client_version == NULL ? "(null)" : s->client_version,
		(long)s->now);
	for (i = 0; s->groups != NULL && s->groups[i] != NULL; i++)
		fprintf(stderr, "%s%s", i == 0 ? "" : ",", s->groups[i]);
	fputc('\n', stderr);
}

/* The promise of the docs: the first rule in file order that matches. */
static void
fuzz_check_linear(const struct access_rule_set *set,
		  const struct access_rules_session *session,
		  const struct access_rules_decision *decision)
{
	struct access_rule *rule;
	const struct access_rule *first = NULL;

	array_foreach_elem(&set->rules, rule) {
		if (access_rule_match(rule, session)) {
			first = rule;
			break;
		}
	}
	if (first == NULL) {
		if (decision->rule_line == 0 &&
		    decision->action == set->default_action &&
		    decision->default_line == set->default_line)
			return;
	} else if (decision->rule_line == first->line &&
		   decision->action == first->action &&
		   decision->reason == first->reason) {
		return;
	}
	fuzz_print_session(session);
	fuzz_fail("rule set \"%s\": indexed lookup gives line %u, "
		  "a scan in file order line %u (%s)", set->name,
		  decision->rule_line, first == NULL ? 0 : first->line,
		  first == NULL ? "default" : first->text);
}

static void fuzz_check_errors(const ARRAY_TYPE(const_string) *errors)
{
	const char *error, *p;
	size_t path_len = strlen(fuzz_rules_path);

	FUZZ_ASSERT(array_count(errors) > 0);
	FUZZ_ASSERT(array_count(errors) <= FUZZ_MAX_PARSE_ERRORS);
	array_foreach_elem(errors, error) {
		/* "file:line: message", with a line number from 1 */
		FUZZ_ASSERT(strncmp(error, fuzz_rules_path, path_len) == 0);
		p = error + path_len;
		FUZZ_ASSERT(*p == ':' && p[1] >= '1' && p[1] <= '9');
		for (p++; i_isdigit(*p); p++) ;
		FUZZ_ASSERT(p[0] == ':' && p[1] == ' ' && p[2] != '\0');
	}
}

/* Writes the text where the compiled file's identity will point. */
static void fuzz_write_rules(const char *text)
{
	FILE *f;

	(void)unlink(fuzz_rules_path);
	f = fopen(fuzz_rules_path, "w");
	if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0)
		i_fatal("can't write %s: %m", fuzz_rules_path);
}

static struct access_rules *
fuzz_compile(const struct access_rules *rules, const char *text)
{
	struct access_rules *compiled;
	ARRAY_TYPE(const_string) errors;
	const char *error;
	struct access_rule_set *set;

	fuzz_write_rules(text);
	if (access_rules_compile(rules, &error) < 0)
		fuzz_fail("access_rules_compile() failed: %s", error);
	t_array_init(&errors, 4);
	if (access_rules_load(fuzz_rules_path, 0, &compiled, &errors) < 0)
		fuzz_fail("loading the compiled rules failed: %s",
			  array_idx_elem(&errors, 0));
	FUZZ_ASSERT(access_rules_is_compiled(compiled));
	FUZZ_ASSERT(access_rules_get_warning(compiled) == NULL);
	FUZZ_ASSERT(access_rules_count(compiled) == access_rules_count(rules));
	FUZZ_ASSERT(access_rules_set_count(compiled) ==
		    access_rules_set_count(rules));
	array_foreach_elem(&rules->sets, set) {
		FUZZ_ASSERT(access_rules_has_set(compiled, set->name));
		FUZZ_ASSERT(access_rules_set_has_session_caps(compiled, set->name) ==
			    access_rules_set_has_session_caps(rules, set->name));
	}
	return compiled;
}

static void fuzz_check_set_caps(const struct access_rules *rules,
				const struct access_rule_set *set)
{
	struct access_rule *rule;
	bool caps = FALSE;

	array_foreach_elem(&set->rules, rule) {
		if (rule->max_sessions != 0 ||
		    rule->max_protocol_sessions[ACCESS_RULE_PROTOCOL_IMAP] != 0 ||
		    rule->max_protocol_sessions[ACCESS_RULE_PROTOCOL_POP3] != 0)
			caps = TRUE;
	}
	FUZZ_ASSERT(access_rules_set_has_session_caps(rules, set->name) == caps);
}

static void fuzz_evaluate(const struct access_rules *rules,
			  const struct access_rules *compiled,
			  const struct access_rules_session *session)
{
	struct access_rules_decision d1, d2;
	struct access_rule_set *set;
	const char *error;

	array_foreach_elem(&rules->sets, set) {
		if (access_rules_evaluate(rules, set->name, session, &d1,
					  &error) < 0)
			fuzz_fail("evaluating set \"%s\" failed: %s",
				  set->name, error);
		FUZZ_ASSERT(strcmp(d1.ruleset, set->name) == 0);
		fuzz_check_linear(set, session, &d1);
		if (compiled == NULL)
			continue;
		if (access_rules_evaluate(compiled, set->name, session, &d2,
					  &error) < 0)
			fuzz_fail("evaluating set \"%s\" compiled failed: %s",
				  set->name, error);
		if (d1.rule_line != d2.rule_line)
			fuzz_print_session(session);
		fuzz_assert_decisions_equal(set->name, &d1, &d2);
	}
	/* a quoted "ruleset" name can be anything, even this */
	if (access_rules_has_set(rules, FUZZ_MISSING_SET))
		return;
	FUZZ_ASSERT(access_rules_evaluate(rules, FUZZ_MISSING_SET, session,
					  &d1, &error) < 0);
	if (compiled != NULL) {
		FUZZ_ASSERT(!access_rules_has_set(compiled, FUZZ_MISSING_SET));
		FUZZ_ASSERT(access_rules_evaluate(compiled, FUZZ_MISSING_SET,
						  session, &d2, &error) < 0);
	}
}

/* Changes bytes of FILE.compiled as the input says (a count byte with
   the top bit set, then offset and XOR mask for each change) and maps
   it again. A damaged file must be detected or at least never followed
   outside the mapping: evaluations may fail, or (for damage in the
   index, which the docs say is not detected) give other answers, but
   must not crash. */
static struct access_rules *fuzz_damage_compiled(struct fuzz_reader *reader)
{
	struct access_rules *rules;
	ARRAY_TYPE(const_string) errors;
	const char *cpath = t_strconcat(fuzz_rules_path, ".compiled", NULL);
	const char *temp_path;
	unsigned char *data;
	unsigned int i, count;
	uint8_t count_byte;
	struct stat st;
	FILE *f;

	count_byte = fuzz_u8(reader);
	if ((count_byte & 0x80) == 0)
		return NULL;
	count = 1 + count_byte % 8;
	if (stat(cpath, &st) < 0 || st.st_size == 0)
		i_fatal("stat(%s) failed: %m", cpath);
	data = t_malloc_no0(st.st_size);
	f = fopen(cpath, "r");
	if (f == NULL || fread(data, 1, st.st_size, f) != (size_t)st.st_size ||
	    fclose(f) != 0)
		i_fatal("can't read %s: %m", cpath);
	for (i = 0; i < count; i++) {
		uint16_t offset = fuzz_u16(reader);

		data[offset % st.st_size] ^= fuzz_u8(reader);
	}
	/* a new file renamed over the old one: the undamaged rules still
	   map the old one */
	temp_path = t_strconcat(cpath, ".damaged", NULL);
	f = fopen(temp_path, "w");
	if (f == NULL || fwrite(data, 1, st.st_size, f) != (size_t)st.st_size ||
	    fclose(f) != 0 || rename(temp_path, cpath) < 0)
		i_fatal("can't write %s: %m", cpath);

	t_array_init(&errors, 4);
	if (access_rules_load(fuzz_rules_path, 0, &rules, &errors) < 0)
		fuzz_fail("a damaged compiled file made loading fail: %s",
			  array_idx_elem(&errors, 0));
	return rules;
}

static void fuzz_evaluate_damaged(const struct access_rules *rules,
				  const struct access_rules *damaged,
				  const struct access_rules_session *session)
{
	struct access_rules_decision decision;
	struct access_rule_set *set;
	const char *error;

	array_foreach_elem(&rules->sets, set) {
		(void)access_rules_has_set(damaged, set->name);
		(void)access_rules_set_has_session_caps(damaged, set->name);
		(void)access_rules_evaluate(damaged, set->name, session,
					    &decision, &error);
	}
}

static void fuzz_access_rules(const uint8_t *data, size_t size)
{
	struct access_rules *rules, *compiled = NULL, *damaged;
	struct access_rules_session session;
	struct fuzz_session_source src;
	ARRAY_TYPE(const_string) errors;
	struct access_rule_set *set;
	const uint8_t *rest;
	const char *text;
	size_t rest_size;
	unsigned int i;

	text = fuzz_split_nul(data, size, &rest, &rest_size);
	t_array_init(&errors, 8);
	if (access_rules_parse(fuzz_rules_path, text, &rules, &errors) < 0) {
		fuzz_check_errors(&errors);
		return;
	}
	FUZZ_ASSERT(array_count(&errors) == 0);
	FUZZ_ASSERT(access_rules_has_set(rules, ACCESS_RULES_DEFAULT_SET));
	array_foreach_elem(&rules->sets, set)
		fuzz_check_set_caps(rules, set);

	compiled = fuzz_compile(rules, text);

	i_zero(&src);
	t_array_init(&src.words, 16);
	fuzz_collect_words(text, &src.words);
	if (rest_size > 0)
		fuzz_reader_init(&src.reader, rest, rest_size);
	else
		fuzz_reader_init(&src.reader, data, size);
	damaged = fuzz_damage_compiled(&src.reader);
	for (i = 0; i < FUZZ_MAX_SESSIONS; i++) {
		fuzz_session(&src, &session);
		fuzz_evaluate(rules, compiled, &session);
		if (damaged != NULL)
			fuzz_evaluate_damaged(rules, damaged, &session);
		if (fuzz_reader_eof(&src.reader))
			break;
	}
	access_rules_free(&damaged);
	access_rules_free(&compiled);
	access_rules_free(&rules);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	T_BEGIN {
		fuzz_access_rules(data, size);
	} T_END;
	return 0;
}
