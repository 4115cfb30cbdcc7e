#ifndef ACCESS_RULES_PRIVATE_H
#define ACCESS_RULES_PRIVATE_H

#include "array.h"
#include "access-rules.h"

/* A condition's values. A condition holds when (it has no positive value
   or any positive value matches) and no negated value matches. */
struct access_rule_strings {
	ARRAY_TYPE(const_string) positive, negative;
};

struct access_rule_net {
	struct ip_addr ip;
	unsigned int bits;
};
ARRAY_DEFINE_TYPE(access_rule_net, struct access_rule_net);

struct access_rule_nets {
	ARRAY_TYPE(access_rule_net) positive, negative;
};

struct access_rule_port_range {
	in_port_t first, last;
};
ARRAY_DEFINE_TYPE(access_rule_port_range, struct access_rule_port_range);

struct access_rule_ports {
	ARRAY_TYPE(access_rule_port_range) positive, negative;
};

enum access_rule_tls {
	ACCESS_RULE_TLS_ANY = 0,
	ACCESS_RULE_TLS_YES,
	ACCESS_RULE_TLS_NO,
};

struct access_rule {
	/* position in its rule set: first match wins, so lower wins */
	unsigned int index;
	unsigned int line;
	/* the rule's logical line, which the compiled file stores */
	const char *text;
	enum access_rule_action action;
	const char *reason;

	/* bit (1 << enum access_rule_protocol) set for each protocol the
	   rule applies to */
	unsigned int protocols;
	/* NULL when the rule has no such condition */
	struct access_rule_strings *users, *domains, *groups;
	struct access_rule_strings *client_names, *client_versions;
	struct access_rule_nets *nets;
	struct access_rule_ports *ports;
	enum access_rule_tls tls;
	bool has_time;
	/* minutes since midnight; the window is [start, end) and wraps
	   past midnight when end < start */
	unsigned int time_start, time_end;
	/* bit (1 << tm_wday) for each day; 0 = every day */
	unsigned int days;

	const char *const *mailboxes, *const *hidden_mailboxes;
	unsigned int max_sessions;
	unsigned int max_protocol_sessions[ACCESS_RULE_PROTOCOL_COUNT];
};
ARRAY_DEFINE_TYPE(access_rule, struct access_rule *);

struct access_rules_index;

struct access_rule_set {
	const char *name;
	unsigned int line;

	enum access_rule_action default_action;
	const char *default_reason;
	unsigned int default_line;

	ARRAY_TYPE(access_rule) rules;
	bool has_session_caps;
	bool has_client_id_rules;

	struct access_rules_index *index;
};

struct access_rules_compiled;

struct access_rules {
	pool_t pool;
	const char *path;
	ARRAY(struct access_rule_set *) sets;
	unsigned int rule_count;
	/* set when the rules come from a fresh FILE.compiled; sets is then
	   empty */
	struct access_rules_compiled *compiled;
	/* why a FILE.compiled beside the file was not used, or NULL */
	const char *compiled_warning;
};

enum access_rules_key_type {
	ACCESS_RULES_KEY_USER = 0,
	ACCESS_RULES_KEY_DOMAIN,
	ACCESS_RULES_KEY_GROUP,
	ACCESS_RULES_KEY_NET,
	ACCESS_RULES_KEY_GENERIC,
};

/* A list of rule indexes in ascending order, being walked. */
struct access_rules_cursor {
	const uint32_t *indexes;
	unsigned int count, pos;
};
ARRAY_DEFINE_TYPE(access_rules_cursor, struct access_rules_cursor);

typedef void access_rules_key_callback_t(void *context,
					 enum access_rules_key_type type,
					 const char *key,
					 const struct access_rule_net *net);
/* Returns 1 if the rule matches, 0 if not, -1 on error. */
typedef int access_rules_match_callback_t(void *context, uint32_t rule_index);

struct access_rule_set *
access_rules_find_set(const struct access_rules *rules, const char *name);

/* Parses one rule written at line of path. The rule is allocated from
   pool. Returns 0, or -1 with error_r. */
int access_rules_parse_rule_text(pool_t pool, const char *path,
				 unsigned int line, const char *text,
				 const struct access_rule **rule_r,
				 const char **error_r);

/* access-rules-index.c */
/* Calls callback for each key the rule is filed under: a rule can only
   match sessions that have one of these keys (or any, for GENERIC). */
void access_rules_rule_keys(const struct access_rule *rule,
			    access_rules_key_callback_t *callback,
			    void *context);
bool access_rules_ip_bit(const struct ip_addr *ip, unsigned int bit);
struct access_rules_index *
access_rules_index_build(pool_t pool, const struct access_rule_set *set);
/* The hash tables live outside the pool, so the pool's owner calls this
   before it frees the pool. */
void access_rules_index_free(struct access_rules_index **index);
/* Returns the first rule that matches the session, or NULL. */
const struct access_rule *
access_rules_index_lookup(const struct access_rules_index *index,
			  const struct access_rules_session *session);
void access_rules_cursor_add(ARRAY_TYPE(access_rules_cursor) *cursors,
			     const uint32_t *indexes, unsigned int count);
/* Walks the cursors merged in ascending rule order until match returns
   non-zero. Returns 1 with rule_index_r for a match, 0 if none matched,
   -1 if match failed. */
int access_rules_cursors_first_match(ARRAY_TYPE(access_rules_cursor) *cursors,
				     access_rules_match_callback_t *match,
				     void *context, uint32_t *rule_index_r);
void access_rules_decision_from_rule(struct access_rules_decision *decision,
				     const struct access_rule *rule);

/* access-rules-match.c */
bool access_rule_match(const struct access_rule *rule,
		       const struct access_rules_session *session);
const char *access_rules_user_domain(const char *username);

/* access-rules-compiled.c */
/* Opens path.compiled if it was compiled from path as it is now.
   Returns 1 if opened, 0 if there is none or it is stale, -1 if it is
   unusable (error_r says why). */
int access_rules_compiled_open(const char *path,
			       struct access_rules_compiled **compiled_r,
			       const char **error_r);
void access_rules_compiled_close(struct access_rules_compiled **compiled);
/* Returns TRUE if FILE.compiled is still the file that was mapped. One
   rewritten in place (cp over it) would be read past its new end. */
bool access_rules_compiled_unchanged(const struct access_rules_compiled *compiled);
unsigned int access_rules_compiled_count(const struct access_rules_compiled *compiled);
unsigned int access_rules_compiled_set_count(const struct access_rules_compiled *compiled);
/* Returns -1 if the set doesn't exist, else 1 if it has session caps,
   0 if not. */
int access_rules_compiled_set_has_session_caps(const struct access_rules_compiled *compiled,
					       const char *ruleset);
/* Same as access_rules_evaluate(). Returns -1 with error_r if the set
   doesn't exist or the file is damaged. Decision strings stay valid
   until the next evaluation. */
int access_rules_compiled_evaluate(struct access_rules_compiled *compiled,
				   const char *ruleset,
				   const struct access_rules_session *session,
				   struct access_rules_decision *decision_r,
				   const char **error_r);

#endif
