#ifndef ACCESS_RULES_H
#define ACCESS_RULES_H

#include "net.h"

/* The rules file and its compiled form. This part knows nothing about
   mail users or protocols' internals, so that the plugin, the
   access-rules tool and the unit tests share it unchanged. */

#define ACCESS_RULES_DEFAULT_SET "default"

enum access_rule_action {
	ACCESS_RULE_ACTION_ALLOW = 0,
	ACCESS_RULE_ACTION_DENY,
	ACCESS_RULE_ACTION_READONLY,
};

enum access_rule_protocol {
	ACCESS_RULE_PROTOCOL_IMAP = 0,
	ACCESS_RULE_PROTOCOL_POP3,

	ACCESS_RULE_PROTOCOL_COUNT
};

/* What is known of a session when the rules are evaluated. Unknown
   strings are NULL; an unknown remote_ip has family 0. Conditions on an
   unknown value never match (not even negated ones), so that a session
   can't gain access by hiding something. */
struct access_rules_session {
	enum access_rule_protocol protocol;
	const char *username;
	/* NULL-terminated; NULL means no groups */
	const char *const *groups;
	struct ip_addr remote_ip;
	in_port_t local_port;
	bool tls;
	const char *client_name, *client_version;
	time_t now;
};

struct access_rule;
struct access_rules;

/* The outcome of an evaluation. rule_line is 0 when no rule matched and
   the rule set's default applied (default_line is then the line of the
   "default" statement, or 0 if the built-in default was used). */
struct access_rules_decision {
	enum access_rule_action action;
	const char *ruleset;
	unsigned int rule_line;
	unsigned int default_line;
	/* The reason text of the rule, or NULL */
	const char *reason;
	/* NULL-terminated lists of mailbox patterns: a mailbox is visible
	   when it matches one of mailboxes (NULL = any) and none of
	   hidden_mailboxes (NULL = none) */
	const char *const *mailboxes;
	const char *const *hidden_mailboxes;
	/* 0 = no cap; indexed by enum access_rule_protocol */
	unsigned int max_sessions;
	unsigned int max_protocol_sessions[ACCESS_RULE_PROTOCOL_COUNT];
	/* The rule looked at the IMAP client ID, so the decision may change
	   once the client sends one. */
	bool depends_on_client_id;
};

enum access_rules_load_flags {
	/* Parse the text even if a fresh FILE.compiled exists */
	ACCESS_RULES_LOAD_FLAG_TEXT = 0x01,
};

/* Load a rules file: from FILE.compiled if it was compiled from the file
   as it is now, else by parsing the text. Returns 0 on success, -1 if
   the file can't be read or has errors. On failure errors_r holds one
   "file:line: message" string per problem found (at least one). */
int access_rules_load(const char *path, enum access_rules_load_flags flags,
		      struct access_rules **rules_r,
		      ARRAY_TYPE(const_string) *errors_r);
/* Same for text already in memory; path is used only in messages. */
int access_rules_parse(const char *path, const char *text,
		       struct access_rules **rules_r,
		       ARRAY_TYPE(const_string) *errors_r);
void access_rules_free(struct access_rules **rules);

/* Writes FILE.compiled for rules parsed from text. Returns 0, or -1 with
   error_r. */
int access_rules_compile(const struct access_rules *rules, const char **error_r);
/* Returns TRUE if the rules were loaded from FILE.compiled. */
bool access_rules_is_compiled(const struct access_rules *rules);
/* Returns FALSE if the rules came from FILE.compiled and that file was
   replaced or changed since (the text file is the caller's to check). */
bool access_rules_compiled_file_unchanged(const struct access_rules *rules);
/* Returns why a FILE.compiled beside the file was not used although it
   exists (damaged, unreadable), or NULL. */
const char *access_rules_get_warning(const struct access_rules *rules);

const char *access_rules_get_path(const struct access_rules *rules);
unsigned int access_rules_count(const struct access_rules *rules);
unsigned int access_rules_set_count(const struct access_rules *rules);
/* Returns TRUE if the rule set exists. */
bool access_rules_has_set(const struct access_rules *rules,
			  const char *ruleset);
/* Returns TRUE if any rule of the set caps sessions, so that sessions of
   users of that set must be counted. */
bool access_rules_set_has_session_caps(const struct access_rules *rules,
				       const char *ruleset);

/* Evaluate a session against a rule set: the first matching rule wins.
   Returns 0 and fills decision_r, or -1 with error_r if the rule set
   doesn't exist or FILE.compiled turns out to be damaged. The
   decision's strings stay valid until the next evaluation or until the
   rules are freed. */
int access_rules_evaluate(const struct access_rules *rules,
			  const char *ruleset,
			  const struct access_rules_session *session,
			  struct access_rules_decision *decision_r,
			  const char **error_r);

const char *access_rule_action_to_string(enum access_rule_action action);
/* Returns 0 on success, -1 if name isn't a protocol the rules know. */
int access_rule_protocol_parse(const char *name,
			       enum access_rule_protocol *protocol_r);
const char *access_rule_protocol_to_string(enum access_rule_protocol protocol);

#endif
